"""``cvmfs-modelio models make|list|survey``: the model corpus and the format survey."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

from cvmfs_modelio.core.errors import UsageError
from cvmfs_modelio.core.jsonout import check_dest, write_atomic, write_json
from cvmfs_modelio.core.tables import format_table
from cvmfs_modelio.core.units import fmt_bytes, parse_size
from cvmfs_modelio.models import corpus


def register(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser("models", help="generate corpus models; survey model formats")
    verbs = p.add_subparsers(dest="models_command", metavar="VERB", parser_class=type(p))
    verbs.required = True
    mk = verbs.add_parser(
        "make",
        help="write one corpus model (deterministic by seed)",
        description="KIND is ARCH-FORM: ARCH mlp, decoder or minilm; FORM onnx (embedded), "
        "onnx-ext (external .data, packed), onnx-ext4k / onnx-ext64k (tensors 4 KiB / 64 KiB "
        "aligned), ort, safetensors.  `models list` shows them all.",
    )
    mk.add_argument("kind", metavar="KIND")
    mk.add_argument("out", metavar="OUT", help="model file to write (external data: OUT.data)")
    mk.add_argument(
        "--size",
        default="64MiB",
        help="weight bytes, rounded to whole layers (default: 64MiB; minilm: fixed)",
    )
    mk.add_argument("--seed", type=int, default=0, help="weight seed (default: 0)")
    mk.add_argument(
        "--minilm-dir",
        metavar="DIR",
        help="all-MiniLM-L6-v2 files (default: $CVMFS_MODELIO_MINILM or ../shared/models/minilm)",
    )
    mk.add_argument("--json", metavar="PATH", help="write what was made as JSON ('-': stdout)")
    mk.set_defaults(func=run_make)
    ls = verbs.add_parser("list", help="the model kinds")
    ls.set_defaults(func=run_list)
    sv = verbs.add_parser(
        "survey",
        help="inspect every file under PATHs: format, size, weight share, alignment",
    )
    sv.add_argument("paths", nargs="*", metavar="PATH", help="model files or directories")
    sv.add_argument(
        "--corpus-size",
        metavar="SIZE",
        help="also generate every corpus kind at this size in a temporary directory "
        "(default: none)",
    )
    sv.add_argument("--seed", type=int, default=0, help="corpus seed (default: 0)")
    sv.add_argument("--markdown", metavar="PATH", help="write the table as Markdown")
    sv.add_argument("--json", metavar="PATH", help="write the survey as JSON ('-': stdout)")
    sv.set_defaults(func=run_survey)


def run_list(args: argparse.Namespace) -> int:
    del args
    for k in corpus.KINDS:
        print(k)
    return 0


def run_make(args: argparse.Namespace) -> int:
    check_dest(args.json)
    size = parse_size(args.size, "--size")
    arch, form = corpus.parse_kind(args.kind)
    if arch == "minilm" and args.size != "64MiB":
        raise UsageError("--size: the minilm kind has fixed weights (all-MiniLM-L6-v2)")
    g = corpus.make(
        args.kind, args.out, size_bytes=size, seed=args.seed, minilm_dir=args.minilm_dir
    )
    rows = [[str(p), str(p.stat().st_size)] for p in g.files]
    print(f"{g.kind}: {fmt_bytes(g.weight_bytes)} of weights ({g.weight_bytes} bytes)")
    print(format_table(["file", "size (bytes)"], rows))
    print(", ".join(f"{k}={v}" for k, v in g.params.items()))
    doc: dict[str, Any] = {
        "kind": g.kind,
        "files": [{"path": str(p), "size_bytes": p.stat().st_size} for p in g.files],
        "weight_bytes": g.weight_bytes,
        "params": g.params,
    }
    if arch == "minilm" and form != "safetensors":
        from cvmfs_modelio.models import minilm

        chk = minilm.check(g.files[0], path=args.minilm_dir)
        diffs = chk["max_abs_diff"]
        print(
            f"numeric check vs numpy forward on {len(chk['token_ids'])} tokens "
            f"({chk['sentence']!r}): max abs difference "
            + ", ".join(f"{k} {v:.2e}" for k, v in diffs.items())
        )
        doc["numeric_check"] = chk
    if args.json:
        write_json(
            args.json,
            {
                "command": "models make",
                **doc,
            },
            schema="models-make",
            measured=[args.out],
        )
    return 0


def run_survey(args: argparse.Namespace) -> int:
    from cvmfs_modelio.models.survey import markdown, survey

    check_dest(args.json)
    check_dest(args.markdown)
    if not args.paths and not args.corpus_size:
        raise UsageError("survey: give PATHs, --corpus-size, or both")
    roots = [(Path(p).name or p, Path(p)) for p in args.paths]
    with tempfile.TemporaryDirectory(prefix="cmio-corpus-") as tmp:
        if args.corpus_size:
            size = parse_size(args.corpus_size, "--corpus-size")
            for k in corpus.KINDS:
                _arch, form = corpus.parse_kind(k)
                out = Path(tmp) / (k + corpus.SUFFIX.get(form, ".onnx"))
                corpus.make(k, out, size_bytes=size, seed=args.seed)
            roots.append((f"corpus-{fmt_bytes(size).replace(' ', '')}", Path(tmp)))
        s = survey(roots)
    table = markdown(s)
    print(table, end="")
    if args.markdown:
        write_atomic(args.markdown, table)
    if args.json:
        write_json(
            args.json,
            {
                "command": "models survey",
                **s.to_json(),
            },
            schema="survey",
            measured=args.paths,
        )
    return 0
