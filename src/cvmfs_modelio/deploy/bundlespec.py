"""The CVMFS 2.14 file bundle specification (``.cvmfsbundle-<trigger>``).

Format as the upstream client reads it (``cvmfs/file_bundle.h``, ``cvmfs/bundle_mgr.cc``):
a JSON object ``{"name": "CVMFS_BUNDLE", "version": "1.0.0", "encoding": "UTF-8",
"dependencies": [...]}`` stored next to its trigger file.  Leading lines starting with ``#``
(a ``#%CVMFS_BUNDLE`` header) are skipped before the JSON.  A dependency is an absolute path
from the repository root; one without a leading ``/`` (optionally ``./``) is relative to the
directory holding the spec.  The trigger itself need not be listed.
"""

from __future__ import annotations

import json
import posixpath
from dataclasses import dataclass

from cvmfs_modelio.core.errors import UsageError

PREFIX = ".cvmfsbundle-"
NAME = "CVMFS_BUNDLE"
VERSION = "1.0.0"
ENCODING = "UTF-8"


def spec_name(trigger_name: str) -> str:
    """File name of the spec that makes opening ``trigger_name`` prefetch a bundle."""
    return PREFIX + trigger_name


def trigger_of(spec_file_name: str) -> str | None:
    """The trigger file name a spec file name belongs to, or None if it is not a spec."""
    if spec_file_name.startswith(PREFIX) and len(spec_file_name) > len(PREFIX):
        return spec_file_name[len(PREFIX) :]
    return None


@dataclass(frozen=True)
class BundleSpec:
    """A bundle: repository paths (absolute, from the repository root) to prefetch."""

    dependencies: tuple[str, ...]

    def to_json_text(self) -> str:
        doc = {
            "name": NAME,
            "version": VERSION,
            "encoding": ENCODING,
            "dependencies": list(self.dependencies),
        }
        return json.dumps(doc, indent=2) + "\n"


def normalize_dependency(dep: str, spec_dir: str) -> str:
    """The repository path a dependency entry names (upstream's rule, see module doc)."""
    if dep.startswith("/"):
        return dep
    rel = dep[2:] if dep.startswith("./") else dep
    return posixpath.join(spec_dir or "/", rel)


def parse_spec(text: str | bytes, where: str, spec_dir: str = "/") -> BundleSpec:
    """Parse a spec file's content; UsageError (one line naming ``where``) if malformed.

    ``spec_dir`` is the repository directory holding the spec (for relative entries).
    """
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise UsageError(f"{where}: bundle spec is not UTF-8") from None
    lines = text.split("\n")
    while lines and lines[0].startswith("#"):
        lines.pop(0)
    try:
        doc = json.loads("\n".join(lines))
    except json.JSONDecodeError as e:
        raise UsageError(f"{where}: bundle spec is not JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(doc, dict):
        raise UsageError(f"{where}: bundle spec is not a JSON object")
    deps = doc.get("dependencies")
    if not isinstance(deps, list) or not all(isinstance(d, str) and d for d in deps):
        raise UsageError(f"{where}: bundle spec has no 'dependencies' list of paths")
    if doc.get("name", NAME) != NAME:
        raise UsageError(f"{where}: bundle spec name is {doc.get('name')!r}, not {NAME!r}")
    return BundleSpec(tuple(normalize_dependency(d, spec_dir) for d in deps))
