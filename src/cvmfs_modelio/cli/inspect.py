"""``cvmfs-modelio inspect MODEL``: every tensor's file, offset, length and alignment."""

from __future__ import annotations

import argparse
from typing import Any

from cvmfs_modelio.core.jsonout import check_dest, write_json
from cvmfs_modelio.core.tables import format_table
from cvmfs_modelio.core.units import fmt_bytes
from cvmfs_modelio.models.inspect import alignment_profile, inspect_model


def register(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser(
        "inspect",
        help="tensor map of a model: name, dtype, shape, file, offset, length, alignment",
        description="Formats: ONNX (embedded or external data), ORT, safetensors, GGUF, "
        "PyTorch/TorchScript zip, Keras HDF5, TensorFlow checkpoint and frozen graph, MXNet "
        "params; detected from the content.",
    )
    p.add_argument("model", metavar="MODEL", help="model file (or a weights file beside one)")
    p.add_argument(
        "--tensors",
        type=int,
        default=20,
        metavar="N",
        help="list the N largest tensors, 0 for all (default: 20)",
    )
    p.add_argument("--json", metavar="PATH", help="write the full map as JSON ('-': stdout)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    check_dest(args.json)
    m = inspect_model(args.model)
    prof = alignment_profile(m)
    if args.json:
        write_json(
            args.json,
            {
                "command": "inspect",
                "model": m.to_json(),
                "alignment": prof,
            },
            schema="inspect",
            measured=[args.model],
        )
        if args.json == "-":
            return 0
    print(
        f"{m.path}: {m.format}, {len(m.tensors)} tensors, {fmt_bytes(m.weight_bytes)} of "
        f"weights in {fmt_bytes(m.size_bytes)} ({_share(m.weight_bytes, m.size_bytes)})"
    )
    rows = [
        [
            f.path,
            str(f.size_bytes),
            str(f.weight_bytes),
            str(f.metadata_bytes),
            _share(f.weight_bytes, f.size_bytes),
        ]
        for f in m.files
    ]
    print(format_table(["file", "size (bytes)", "weights", "metadata", "weight share"], rows))
    min_al = prof["min_alignment_bytes"]
    print(
        f"alignment: tensors >= 4 KiB start at multiples of {fmt_bytes(min_al) if min_al else '-'}"
        f" at least; weight bytes 4 KiB-aligned {prof['aligned_4k_share']:.1%}, "
        f"64 KiB-aligned {prof['aligned_64k_share']:.1%}"
    )
    shown = sorted(m.tensors, key=lambda t: (-t.length_bytes, t.file, t.offset_bytes))
    if args.tensors > 0:
        shown = shown[: args.tensors]
    shown.sort(key=lambda t: (t.file, t.offset_bytes))
    multi = len(m.files) > 1
    trows = [
        [
            t.name,
            t.dtype,
            "x".join(map(str, t.shape)) or "scalar",
            *([t.file.rsplit("/", 1)[-1]] if multi else []),
            str(t.offset_bytes),
            str(t.length_bytes),
            fmt_bytes(t.alignment),
        ]
        for t in shown
    ]
    head = ["tensor", "dtype", "shape", *(["file"] if multi else []), "offset", "length"]
    what = "all" if len(shown) == len(m.tensors) else f"{len(shown)} largest"
    print(f"tensors ({what} of {len(m.tensors)}, in file order; offsets and lengths in bytes):")
    print(format_table([*head, "alignment"], trows))
    for n in m.notes[:10]:
        print(f"note: {n}")
    if len(m.notes) > 10:
        print(f"note: ... {len(m.notes) - 10} more (see --json)")
    return 0


def _share(part: int, whole: int) -> str:
    return f"{part / whole:.1%}" if whole else "-"
