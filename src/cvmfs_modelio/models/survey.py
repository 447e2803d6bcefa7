"""The format survey: for many model files, format, size, weight share and tensor alignment.

:func:`survey` inspects every file under the given paths (a file holding only weights is
folded into the model that names it), and :func:`markdown` renders the table that
``docs/formats.md`` carries.  Files no reader takes are listed with the reason.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cvmfs_modelio.core.errors import UsageError
from cvmfs_modelio.core.units import fmt_bytes
from cvmfs_modelio.models.inspect import ModelMap, alignment_profile, inspect_model


@dataclass(frozen=True)
class SurveyRow:
    label: str
    model: ModelMap

    def to_json(self) -> dict[str, Any]:
        m = self.model
        return {
            "label": self.label,
            "format": m.format,
            "files": len(m.files),
            "size_bytes": m.size_bytes,
            "weight_bytes": m.weight_bytes,
            **alignment_profile(m),
            "notes": len(m.notes),
        }


@dataclass(frozen=True)
class Survey:
    rows: tuple[SurveyRow, ...]
    unread: tuple[tuple[str, str], ...]  # (label, reason)

    def to_json(self) -> dict[str, Any]:
        return {
            "rows": [r.to_json() for r in self.rows],
            "unread": [{"label": a, "reason": b} for a, b in self.unread],
        }


def _files(roots: Iterable[tuple[str, Path]]) -> list[tuple[str, Path, Path]]:
    """(label, path, root) of every file under the roots, sorted within each root."""
    out = []
    for label, root in roots:
        if root.is_dir():
            for dirpath, dirs, names in os.walk(root):
                dirs.sort()
                for n in sorted(names):
                    p = Path(dirpath) / n
                    out.append((f"{label}/{p.relative_to(root)}" if label else str(p), p, root))
        elif root.exists():
            out.append((label or str(root), root, root.parent))
        else:
            raise UsageError(f"{root}: no such file or directory")
    return out


def survey(roots: Iterable[tuple[str, Path]]) -> Survey:
    """Inspect every file under ``roots`` (pairs of a display label and a path)."""
    rows: list[SurveyRow] = []
    unread: list[tuple[str, str]] = []
    covered: set[str] = set()
    for label, p, root in _files(roots):
        if str(p.resolve()) in covered:
            continue
        try:
            m = inspect_model(p)
        except UsageError as e:
            reason = str(e)
            prefix = f"{p}: "
            unread.append((label, reason[len(prefix) :] if reason.startswith(prefix) else reason))
            continue
        key = [str(Path(f.path).resolve()) for f in m.files]
        if any(k in covered for k in key):
            continue
        covered.update(key)
        model, rroot = Path(m.path).resolve(), root.resolve()
        if model != p.resolve() and rroot in model.parents:  # a weights file: name the model
            label = label[: len(label) - len(str(p.relative_to(root)))] + str(
                model.relative_to(rroot)
            )
        rows.append(SurveyRow(label, m))
    return Survey(tuple(rows), tuple(unread))


def _share(x: float) -> str:
    return f"{x:.0%}" if x >= 0.995 or x <= 0.005 else f"{x:.1%}"


def markdown(s: Survey) -> str:
    """The survey as Markdown: one row per model, then the files that were not read."""
    lines = [
        "| model | format | files | size | weight share | tensors | min align (>= 4 KiB tensors)"
        " | 4 KiB-aligned weights | 64 KiB-aligned weights |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in s.rows:
        m = r.model
        prof = alignment_profile(m)
        al = prof["min_alignment_bytes"]
        lines.append(
            f"| `{r.label}` | {m.format} | {len(m.files)} | {fmt_bytes(m.size_bytes)} | "
            f"{_share(m.weight_bytes / m.size_bytes if m.size_bytes else 0.0)} | "
            f"{prof['tensors']} | {fmt_bytes(al) if al else '-'} | "
            f"{_share(prof['aligned_4k_share'])} | {_share(prof['aligned_64k_share'])} |"
        )
    if s.unread:
        lines += ["", "Not read:", "", "| file | reason |", "|---|---|"]
        lines += [f"| `{a}` | {b.replace('|', '/')} |" for a, b in s.unread]
    return "\n".join(lines) + "\n"
