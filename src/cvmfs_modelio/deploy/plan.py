"""``publish-plan``: what publishing a directory of models on CVMFS will do, and what to fix first.

For every file: its size, whether CVMFS chunks it with the given parameters, the objects it
becomes (the CVMFS-exact xor32 chunker of ``chunks.layouts``) and their zlib-compressed sizes
(what the web server and a squid hold).  Model files are recognised by content
(``models.inspect``); their companions (ONNX external data) are grouped with them.  Each
warning names its threshold and why it matters (cvmfs-facts.md §1, §2, §6).  The plan ends
with a suggested ``.cvmfsdirtab``, the bundle specs each model should have, and the
``server.conf`` (and client / squid) lines.
"""

from __future__ import annotations

import math
import os
import posixpath
import stat
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cvmfs_modelio.chunks.layouts import ChunkSpec, compute_layout, whole_layout
from cvmfs_modelio.core.errors import UsageError
from cvmfs_modelio.deploy.bundlespec import BundleSpec, parse_spec, spec_name, trigger_of
from cvmfs_modelio.models.formats.onnx import external_files
from cvmfs_modelio.models.inspect import ModelMap, inspect_model

MIB = 1 << 20
FILE_MBYTE_LIMIT_BYTES = 1024 * MIB  # CVMFS_FILE_MBYTE_LIMIT default (1024 MB): warns above
DISCOURAGED_BYTES = 2 << 30  # the CVMFS maintainers discourage files above 2 GB (issue 4042)
DEFAULT_QUOTA_MB = 4000  # CVMFS_QUOTA_LIMIT default
SQUID_DEFAULT_MAX_OBJECT = 4 * MIB  # squid's default maximum_object_size (4 MB)
PAGE = 4096
ZLIB_LEVEL = 6
BLOCK = 1 << 20

# warning codes (stable: tests and --json readers key on them)
W_MBYTE_LIMIT = "file-mbyte-limit"
W_DISCOURAGED = "above-2gb"
W_QUOTA = "uncacheable-object"
W_SQUID = "squid-max-object"
W_UNALIGNED = "unaligned-external-data"
W_EMBEDDED = "embedded-weights"
W_NO_BUNDLE = "no-bundle-spec"
W_BAD_BUNDLE = "bad-bundle-spec"


@dataclass(frozen=True)
class PlanParams:
    """Publisher and site settings (bytes).  ``chunking=False`` is CVMFS_USE_FILE_CHUNKING=false."""

    min_size: int = 4 * MIB
    avg_size: int = 8 * MIB
    max_size: int = 16 * MIB
    chunking: bool = True
    quota_mb: int = DEFAULT_QUOTA_MB
    squid_max_object: int = SQUID_DEFAULT_MAX_OBJECT
    compressed_sizes: bool = True
    repo_prefix: str = ""  # repository path of DIR ("" = DIR is the repository root)

    @property
    def quota_bytes(self) -> int:
        return self.quota_mb * MIB

    def validate(self) -> None:
        if self.chunking:
            ChunkSpec(
                min_size=self.min_size, avg_size=self.avg_size, max_size=self.max_size
            ).validate()
        if self.quota_mb < 1:
            raise UsageError(f"--quota-mb: {self.quota_mb} is not a positive number of MB")
        if self.squid_max_object < 1:
            raise UsageError(f"--squid-max-object: {self.squid_max_object} is not positive")
        if self.repo_prefix and not self.repo_prefix.startswith("/"):
            raise UsageError(f"--repo-prefix: {self.repo_prefix!r} does not start with '/'")


@dataclass(frozen=True)
class PlanWarning:
    code: str
    path: str  # repository path of the file concerned
    message: str  # what, the threshold, and why it matters

    def to_json(self) -> dict[str, str]:
        return {"code": self.code, "path": self.path, "message": self.message}


@dataclass
class FilePlan:
    """One file: ``kind`` is model, companion (of ``model``), bundle-spec or other (skipped)."""

    path: str  # repository path
    abspath: str
    size_bytes: int
    kind: str
    format: str | None = None
    model: str | None = None  # the model a companion belongs to (repository path)
    chunked: bool = False
    object_sizes: list[int] = field(default_factory=list)
    compressed_sizes: list[int] | None = None
    warnings: list[PlanWarning] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "size_bytes": self.size_bytes,
            "kind": self.kind,
            "format": self.format,
            "model": self.model,
            "chunked": self.chunked,
            "n_objects": len(self.object_sizes),
            "object_sizes_bytes": self.object_sizes,
            "compressed_sizes_bytes": self.compressed_sizes,
            "compressed_bytes": sum(self.compressed_sizes) if self.compressed_sizes else None,
            "warnings": [w.to_json() for w in self.warnings],
        }


@dataclass
class Plan:
    root: str
    params: PlanParams
    files: list[FilePlan]
    dirtab: list[str]
    bundles: dict[str, BundleSpec]  # repository path of the spec -> spec
    server_conf: list[str]
    client_conf: list[str]
    squid_conf: list[str]

    @property
    def warnings(self) -> list[PlanWarning]:
        return [w for f in self.files for w in f.warnings]

    def to_json(self) -> dict[str, Any]:
        p = self.params
        return {
            "root": self.root,
            "params": {
                "min_chunk_bytes": p.min_size,
                "avg_chunk_bytes": p.avg_size,
                "max_chunk_bytes": p.max_size,
                "chunking": p.chunking,
                "quota_mb": p.quota_mb,
                "squid_max_object_bytes": p.squid_max_object,
                "repo_prefix": p.repo_prefix,
            },
            "files": [f.to_json() for f in self.files],
            "warnings": [w.to_json() for w in self.warnings],
            "cvmfsdirtab": self.dirtab,
            "bundles": {k: list(v.dependencies) for k, v in self.bundles.items()},
            "server_conf": self.server_conf,
            "client_conf": self.client_conf,
            "squid_conf": self.squid_conf,
        }


# ------------------------------------------------------------------ scanning


def _files(root: Path) -> list[tuple[str, str, int]]:
    """(relative path with leading '/', absolute path, size) of every regular file, sorted."""
    out: list[tuple[str, str, int]] = []
    for dirpath, dirnames, filenames in os.walk(root, onerror=_walk_error):
        dirnames.sort()
        for n in sorted(filenames):
            ap = os.path.join(dirpath, n)
            try:
                st = os.stat(ap)
            except OSError as e:
                raise UsageError(f"{ap}: cannot stat: {e.strerror}") from None
            if not stat.S_ISREG(st.st_mode):
                continue
            rel = "/" + os.path.relpath(ap, root).replace(os.sep, "/")
            out.append((rel, ap, st.st_size))
    return out


def _walk_error(e: OSError) -> None:
    raise UsageError(f"{e.filename}: cannot list directory: {e.strerror}")


def _compressed_size(path: str, offset: int, size: int) -> int:
    """Bytes of ``zlib.compress(data[offset:offset+size], 6)``, streamed (zlib drops the GIL)."""
    comp = zlib.compressobj(ZLIB_LEVEL)
    total = 0
    with open(path, "rb") as f:
        f.seek(offset)
        left = size
        while left > 0:
            block = f.read(min(BLOCK, left))
            if not block:
                raise UsageError(f"{path}: file shrank while planning")
            left -= len(block)
            total += len(comp.compress(block))
    return total + len(comp.flush())


def _layout_sizes(ap: str, size: int, params: PlanParams) -> tuple[list[int], list[int]]:
    """(offsets, sizes) of the objects CVMFS makes of the file."""
    if params.chunking and size > params.min_size:
        lay = compute_layout(
            ap,
            ChunkSpec(min_size=params.min_size, avg_size=params.avg_size, max_size=params.max_size),
        )
    else:
        lay = whole_layout(size)
    return [int(o) for o in lay.offsets], [int(s) for s in lay.sizes]


# ------------------------------------------------------------------ warnings


def size_warnings(fp: FilePlan, params: PlanParams) -> list[PlanWarning]:
    """The size thresholds of one file's objects (exact: each fires one byte above)."""
    out: list[PlanWarning] = []
    s = fp.size_bytes
    if s > FILE_MBYTE_LIMIT_BYTES:
        out.append(
            PlanWarning(
                W_MBYTE_LIMIT,
                fp.path,
                f"{s} bytes is above CVMFS_FILE_MBYTE_LIMIT (1024 MB = {FILE_MBYTE_LIMIT_BYTES} "
                "bytes): cvmfs_server warns at publish; raise the limit in server.conf",
            )
        )
    if s > DISCOURAGED_BYTES:
        out.append(
            PlanWarning(
                W_DISCOURAGED,
                fp.path,
                f"{s} bytes is above 2 GB ({DISCOURAGED_BYTES} bytes): the CVMFS maintainers "
                "discourage such files (issue 4042); split the weights into shards",
            )
        )
    if not fp.chunked and s > params.quota_bytes // 2:
        out.append(
            PlanWarning(
                W_QUOTA,
                fp.path,
                f"unchunked object of {s} bytes is above half the client cache quota "
                f"({params.quota_mb} MB / 2 = {params.quota_bytes // 2} bytes): a client with "
                "this CVMFS_QUOTA_LIMIT cannot cache it, so open() fails; enable chunking",
            )
        )
    sizes = fp.compressed_sizes if fp.compressed_sizes is not None else fp.object_sizes
    what = "compressed" if fp.compressed_sizes is not None else "uncompressed"
    big = [i for i, b in enumerate(sizes) if b > params.squid_max_object]
    if big:
        out.append(
            PlanWarning(
                W_SQUID,
                fp.path,
                f"{len(big)} of {len(sizes)} objects are larger ({what}, largest {max(sizes)} "
                f"bytes) than the squid maximum_object_size {params.squid_max_object} bytes: "
                "the site squid will not cache them and every client fetches them from the "
                "stratum 1 (squid's default 4 MB is below the default 8 MiB average chunk)",
            )
        )
    return out


def model_warnings(
    m: ModelMap,
    model_fp: FilePlan,
    by_abspath: dict[str, FilePlan],
    params: PlanParams,
    spec: BundleSpec | None,
    spec_path: str,
) -> list[PlanWarning]:
    out: list[PlanWarning] = []
    companions = [by_abspath[f.path] for f in m.files if f.path != m.path and f.path in by_abspath]
    if m.format == "onnx":
        for comp in companions:
            ts = [t for t in m.tensors if t.file == comp.abspath and t.length_bytes > 0]
            bad = [t for t in ts if t.offset_bytes % PAGE]
            if bad:
                out.append(
                    PlanWarning(
                        W_UNALIGNED,
                        model_fp.path,
                        f"{len(bad)} of {len(ts)} tensors in {comp.path} start off a 4096-byte "
                        f"page (first: {bad[0].name!r} at offset {bad[0].offset_bytes}): ONNX "
                        "Runtime mmaps each initializer from the page below it, so unaligned "
                        "tensors share pages and chunks with their neighbours; "
                        "`cvmfs-modelio prepare --external-data --align 4KiB`",
                    )
                )
        own = next((f for f in m.files if f.path == m.path), None)
        embedded = own.weight_bytes if own is not None else 0
        threshold = params.min_size if params.chunking else 4 * MIB
        if embedded > threshold:
            out.append(
                PlanWarning(
                    W_EMBEDDED,
                    model_fp.path,
                    f"{embedded} bytes of weights are embedded in the .onnx (above {threshold} "
                    "bytes, where CVMFS chunks a file): ONNX Runtime read()s the whole file "
                    "at session creation; as external data it mmaps the weights and fetches "
                    "only the chunks it touches; `cvmfs-modelio prepare --external-data`",
                )
            )
    if companions:
        want = {c.path for c in companions}
        if spec is None:
            out.append(
                PlanWarning(
                    W_NO_BUNDLE,
                    model_fp.path,
                    f"no bundle spec {spec_path} for its {len(want)} companion file(s): a "
                    "client with CVMFS_PREFETCH_FILEBUNDLES=yes would prefetch them in "
                    "parallel when the model is opened, instead of one chunk at a time on "
                    "demand (the suggested spec is below)",
                )
            )
        else:
            missing = sorted(want - set(spec.dependencies))
            if missing:
                out.append(
                    PlanWarning(
                        W_NO_BUNDLE,
                        model_fp.path,
                        f"bundle spec {spec_path} does not list {', '.join(missing)}",
                    )
                )
    return out


# ------------------------------------------------------------------ the plan


def make_plan(
    root_dir: str | os.PathLike[str],
    params: PlanParams | None = None,
    progress: Callable[[str], None] | None = None,
) -> Plan:
    """The publication plan of the tree ``root_dir``; UsageError (one line) on bad input."""
    params = params or PlanParams()
    params.validate()
    root = Path(root_dir)
    if not root.exists():
        raise UsageError(f"{root}: no such file or directory")
    if not root.is_dir():
        raise UsageError(f"{root}: not a directory")
    prefix = params.repo_prefix.rstrip("/")
    entries = _files(root)
    plans: list[FilePlan] = []
    by_abspath: dict[str, FilePlan] = {}
    for rel, ap, size in entries:
        fp = FilePlan(prefix + rel, os.path.abspath(ap), size, "other")
        plans.append(fp)
        by_abspath[fp.abspath] = fp

    # models by content; a weights-only file maps through its model
    maps: dict[str, ModelMap] = {}
    for fp in plans:
        name = posixpath.basename(fp.path)
        if trigger_of(name) is not None:
            fp.kind = "bundle-spec"
            continue
        if fp.kind != "other":
            continue
        try:
            m = inspect_model(fp.abspath)
        except UsageError:
            # Not a model: listed and skipped.  But an ONNX model whose external data lies
            # outside its directory is refused naming the location, not skipped silently
            # (publishing the tree would publish a model that cannot load).
            external_files(Path(fp.abspath), strict=False)
            continue
        if m.path not in by_abspath:
            continue
        maps.setdefault(m.path, m)
        for f in m.files:
            other = by_abspath.get(f.path)
            if other is None:
                continue
            if f.path == m.path:
                other.kind, other.format = "model", m.format
            elif other.kind == "other":
                other.kind, other.format = "companion", m.format
                other.model = by_abspath[m.path].path

    analysed = [f for f in plans if f.kind in ("model", "companion", "bundle-spec")]
    for fp in analysed:
        if progress is not None:
            progress(f"chunking {fp.path}")
        offs, sizes = _layout_sizes(fp.abspath, fp.size_bytes, params)
        fp.object_sizes = sizes
        fp.chunked = len(sizes) > 1
        if params.compressed_sizes:
            with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
                fp.compressed_sizes = list(
                    pool.map(_compressed_size, [fp.abspath] * len(offs), offs, sizes)
                )
        fp.warnings.extend(size_warnings(fp, params))

    # bundle specs present in the tree
    specs: dict[str, BundleSpec] = {}
    for fp in plans:
        if fp.kind != "bundle-spec":
            continue
        try:
            text = Path(fp.abspath).read_bytes()
            specs[fp.path] = parse_spec(text, fp.abspath, posixpath.dirname(fp.path) or "/")
        except UsageError as e:
            fp.warnings.append(PlanWarning(W_BAD_BUNDLE, fp.path, str(e)))
        except OSError as e:
            raise UsageError(f"{fp.abspath}: cannot read: {e.strerror}") from None

    suggested: dict[str, BundleSpec] = {}
    for mpath, m in sorted(maps.items()):
        mfp = by_abspath[mpath]
        spec_path = posixpath.join(
            posixpath.dirname(mfp.path), spec_name(posixpath.basename(mfp.path))
        )
        mfp.warnings.extend(
            model_warnings(m, mfp, by_abspath, params, specs.get(spec_path), spec_path)
        )
        deps = tuple(
            by_abspath[f.path].path for f in m.files if f.path != m.path and f.path in by_abspath
        )
        if deps:
            suggested[spec_path] = BundleSpec(deps)

    all_files = [f for f in plans if f.kind != "other"]
    return Plan(
        root=str(root),
        params=params,
        files=plans,
        dirtab=suggest_dirtab([by_abspath[p].path for p in maps]),
        bundles=suggested,
        server_conf=server_conf(params, all_files),
        client_conf=client_conf(params, all_files, bool(suggested)),
        squid_conf=squid_conf(params, all_files),
    )


def suggest_dirtab(model_paths: list[str]) -> list[str]:
    """``.cvmfsdirtab`` lines: one nested catalog per model directory, so that a client
    loading one model downloads the catalog of that model only; sibling model directories
    are one wildcard line (``/parent/*``) as upstream dirtabs write them."""
    dirs = sorted({posixpath.dirname(p) for p in model_paths} - {"", "/"})
    by_parent: dict[str, list[str]] = {}
    for d in dirs:
        by_parent.setdefault(posixpath.dirname(d), []).append(d)
    out: list[str] = []
    for parent, kids in sorted(by_parent.items()):
        if len(kids) > 1:
            out.append(posixpath.join(parent, "*"))
        else:
            out.extend(kids)
    return out


def server_conf(params: PlanParams, files: list[FilePlan]) -> list[str]:
    lines = [f"CVMFS_USE_FILE_CHUNKING={'true' if params.chunking else 'false'}"]
    if params.chunking:
        lines += [
            f"CVMFS_MIN_CHUNK_SIZE={params.min_size}",
            f"CVMFS_AVG_CHUNK_SIZE={params.avg_size}",
            f"CVMFS_MAX_CHUNK_SIZE={params.max_size}",
        ]
    largest = max((f.size_bytes for f in files), default=0)
    if largest > FILE_MBYTE_LIMIT_BYTES:
        lines.append(f"CVMFS_FILE_MBYTE_LIMIT={math.ceil(largest / MIB)}")
    return lines


def client_conf(params: PlanParams, files: list[FilePlan], bundles: bool) -> list[str]:
    lines = []
    if bundles:
        lines.append("CVMFS_PREFETCH_FILEBUNDLES=yes")
    whole = [f.size_bytes for f in files if not f.chunked]
    biggest = max(whole, default=0)
    if biggest > params.quota_bytes // 2:
        lines.append(f"CVMFS_QUOTA_LIMIT={math.ceil(2 * biggest / MIB) + 1}")
    return lines


def squid_conf(params: PlanParams, files: list[FilePlan]) -> list[str]:
    sizes = [
        b
        for f in files
        for b in (f.compressed_sizes if f.compressed_sizes is not None else f.object_sizes)
    ]
    biggest = max(sizes, default=0)
    if biggest > params.squid_max_object:
        return [f"maximum_object_size {math.ceil(biggest / MIB)} MB"]
    return []
