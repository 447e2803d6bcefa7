"""Campaign files: parsing, defaults, and a one-line error for every kind of bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cvmfs_modelio.campaign.cells import expand
from cvmfs_modelio.campaign.modelsrc import default_family
from cvmfs_modelio.campaign.spec import CACHE_STATES, load_campaign, parse_campaign
from cvmfs_modelio.cli import main
from cvmfs_modelio.core.errors import UsageError
from cvmfs_modelio.models.corpus import KINDS as CORPUS_KINDS
from tests.conftest import CMS_MODELS

REPO = Path(__file__).resolve().parents[2]
MINIMAL = """
[campaign]
name = "t"

[[models]]
kind = "synthetic"
size = "4MiB"
width = 512
"""


def write(tmp_path: Path, text: str, name: str = "c.toml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def error_of(tmp_path: Path, text: str) -> str:
    p = write(tmp_path, text)
    with pytest.raises(UsageError) as e:
        load_campaign(p)
    return str(e.value).replace(str(p), "C")


def test_minimal_campaign_gets_the_documented_defaults(tmp_path: Path) -> None:
    spec = load_campaign(write(tmp_path, MINIMAL))
    assert spec.name == "t" and spec.reps == 3 and spec.executor == "local"
    assert spec.target.kind == "emulated" and spec.target.server == "builtin"
    m = spec.matrix
    assert [c.label for c in m.chunking] == ["4/8/16 MiB"]
    assert m.rtt_ms == (10.0,) and m.bandwidth == (100 << 20,)
    assert m.prefetch == (0,) and m.parallel == (16,)
    assert m.client_profile == ("cvmfs-2.12",)
    assert m.cache == CACHE_STATES and m.loader == ("ort",)
    (model,) = spec.models
    assert model.name == "synthetic-embedded-4MiB" and model.kind == "synthetic"
    assert dict(model.params) == {"size": 4 << 20, "external_data": False, "width": 512, "seed": 0}


def test_shipped_campaigns_parse(tmp_path: Path) -> None:
    quick = load_campaign(REPO / "bench" / "campaigns" / "quick.toml")
    assert len(expand(quick)) * quick.reps == 6
    if CMS_MODELS.is_dir():
        small = load_campaign(REPO / "bench" / "campaigns" / "small.toml")
        assert [m.family for m in small.models] == [None, None, "hep-tagger", "hep-tagger"]
        assert (
            default_family("synthetic", 1) == "mlp" and default_family("file", 3 << 30) == "large"
        )
        assert small.reps == 3 and set(small.matrix.cache) == set(CACHE_STATES)


def test_scalars_stand_for_one_element_lists(tmp_path: Path) -> None:
    spec = load_campaign(
        write(tmp_path, MINIMAL + '[matrix]\nrtt_ms = 25\nbandwidth = 0\nchunking = "whole"\n')
    )
    assert spec.matrix.rtt_ms == (25.0,) and spec.matrix.bandwidth == (0,)
    assert [c.label for c in spec.matrix.chunking] == ["unchunked"]


def test_file_models_are_relative_to_the_campaign_and_stems_are_disambiguated(
    tmp_path: Path,
) -> None:
    for v in ("V00", "V01"):
        d = tmp_path / "models" / v
        d.mkdir(parents=True)
        (d / "net.onnx").write_bytes(b"x")
    (tmp_path / "models" / "other.onnx").write_bytes(b"y")
    text = """
[campaign]
name = "t"
[[models]]
path = "models/V00/net.onnx"
[[models]]
path = "models/V01/net.onnx"
family = "hep-tagger"
[[models]]
path = "models/other.onnx"
"""
    spec = load_campaign(write(tmp_path, text))
    assert [m.name for m in spec.models] == ["V00-net", "V01-net", "other"]
    assert spec.models[0].path == (tmp_path / "models/V00/net.onnx").resolve()
    assert [m.family for m in spec.models] == [None, "hep-tagger", None]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "[campaign\nname='x'",
            "C: malformed TOML: Expected ']' at the end of a table declaration "
            "(at line 1, column 10)",
        ),
        (
            MINIMAL + "[matrx]\n",
            "C: unknown key 'matrx' (did you mean 'matrix'?); valid keys: campaign, models, "
            "target, matrix, batch",
        ),
        (
            MINIMAL.replace('name = "t"', 'name = "t"\nrep = 2'),
            "C: [campaign]: unknown key 'rep' (did you mean 'reps'?); valid keys: name, "
            "description, reps, executor, timeout_s",
        ),
        (
            MINIMAL + "[matrix]\nchunkng = ['whole']\n",
            "C: [matrix]: unknown key 'chunkng' (did you mean 'chunking'?); valid keys: "
            "chunking, rtt_ms, bandwidth, prefetch, parallel, client_profile, cache, loader",
        ),
        (
            MINIMAL.replace('size = "4MiB"', 'sise = "4MiB"'),
            "C: [[models]] #1 (kind synthetic): unknown key 'sise' (did you mean 'size'?); "
            "valid keys: size, external_data, width, seed",
        ),
        (
            MINIMAL + "[target]\nknd = 'local'\n",
            "C: [target]: unknown key 'knd' (did you mean 'kind'?); valid keys: kind, path, server",
        ),
        (
            MINIMAL + "[matrix]\nloader = ['ort-noprepak']\n",
            "C: [matrix]: loader: unknown value 'ort-noprepak' (did you mean 'ort-noprepack'?); "
            "valid: ort, ort-noprepack, probe-mmap-seq, probe-rand, probe-seq, "
            "safetensors-eager, safetensors-lazy, streamer",
        ),
        (
            MINIMAL + "[matrix]\ncache = ['cool']\n",
            "C: [matrix]: cache: unknown value 'cool' (did you mean 'cold'?); "
            "valid: cold, warm, hot",
        ),
        (
            MINIMAL.replace('kind = "synthetic"', 'kind = "synthtic"'),
            "C: [[models]] #1: unknown model kind 'synthtic' (did you mean 'synthetic'?); "
            "known kinds: " + ", ".join(sorted([*CORPUS_KINDS, "synthetic"])),
        ),
        (
            MINIMAL + "[matrix]\nchunking = ['4MiB/2MiB/16MiB']\n",
            "C: [matrix]: chunking: chunk sizes must satisfy min < avg < max, got 4194304, "
            "2097152, 16777216",
        ),
        (
            MINIMAL + "[matrix]\nrtt_ms = ['ten']\n",
            "C: [matrix]: rtt_ms: each entry must be a number, got 'ten'",
        ),
        (
            MINIMAL + "[matrix]\nrtt_ms = [true]\n",
            "C: [matrix]: rtt_ms: each entry must be a number, got True",
        ),
        (
            MINIMAL + "[matrix]\nrtt_ms = [1, 1]\n",
            "C: [matrix]: rtt_ms names a value twice ([1, 1])",
        ),
        (
            MINIMAL + "[matrix]\nprefetch = []\n",
            "C: [matrix]: prefetch is an empty list (leave it out for the default)",
        ),
        (
            MINIMAL + "[matrix]\nbandwidth = ['fast']\n",
            "C: [matrix]: bandwidth: cannot parse size 'fast' (use e.g. 4KiB, 4M, 4194304)",
        ),
        ('[campaign]\nname = "t"\n', "C: no [[models]] (declare at least one model)"),
        ("[[models]]\npath = 'x'\n", "C: no [campaign] table"),
        (
            "[campaign]\nreps = 2\n",
            "C: [campaign]: name is missing (it names the campaign in its results)",
        ),
        (
            '[campaign]\nname = "t"\n[[models]]\nkind = "synthetic"\npath = "a.onnx"\n',
            "C: [[models]] #1: give either path (a model file) or kind (generated)",
        ),
        (
            '[campaign]\nname = "t"\n[[models]]\npath = "missing.onnx"\n',
            "C: [[models]] #1: path {dir}/missing.onnx is not a file",
        ),
        (
            MINIMAL + "[target]\nkind = 'local'\n[matrix]\nrtt_ms = [5]\n",
            "C: [matrix]: rtt_ms applies to the emulated target only "
            "(target kind local is measured as it is)",
        ),
        (
            MINIMAL + "[target]\nkind = 'cvmfs'\n",
            "C: [target]: kind cvmfs needs path (a directory on a /cvmfs mount)",
        ),
        (
            MINIMAL + '[[models]]\nkind = "synthetic"\nsize = "4MiB"\nwidth = 512\nseed = 1\n',
            "C: two models are named 'synthetic-embedded-4MiB' (set name = ... on one)",
        ),
    ],
)
def test_bad_campaigns_get_one_exact_line(tmp_path: Path, text: str, message: str) -> None:
    got = error_of(tmp_path, text)
    assert got == message.format(dir=tmp_path)
    assert "\n" not in got


def test_cli_reports_a_bad_campaign_in_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    p = write(tmp_path, MINIMAL + "[matrix]\nchunkng = ['whole']\n")
    assert main(["run", str(p), "-o", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"cvmfs-modelio: {p}: [matrix]: unknown key 'chunkng' (did you mean")
    assert err.count("\n") == 1
    assert not (tmp_path / "r").exists()
    assert main(["run", str(tmp_path / "nope.toml")]) == 2
    assert (
        capsys.readouterr().err
        == f"cvmfs-modelio: {tmp_path / 'nope.toml'}: no such campaign file\n"
    )
    (tmp_path / "bin.toml").write_bytes(b"\xff\xfe")
    assert main(["run", str(tmp_path / "bin.toml")]) == 2
    assert capsys.readouterr().err.endswith("bin.toml: not UTF-8 text (byte 0)\n")


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_any_text_is_parsed_or_refused_with_usage_error(text: str) -> None:
    try:
        parse_campaign(text)
    except UsageError as e:
        assert "\n" not in str(e).strip()


_keys = st.sampled_from(
    ["campaign", "models", "target", "matrix", "name", "reps", "kind", "rtt_ms"]
)
_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-5, 5)
    | st.floats(allow_nan=True)
    | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_keys, inner, max_size=3),
    max_leaves=10,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(_keys, _values, max_size=4))
def test_hostile_documents_are_refused_with_usage_error(doc: dict[str, object]) -> None:
    import json

    # TOML has no null: render the document with JSON-ish inline values where TOML allows
    def toml(v: object) -> str:
        if v is None:
            return '""'
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return "nan" if v != v else repr(v).replace("inf", "inf")
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, list):
            return "[" + ", ".join(toml(x) for x in v) + "]"
        assert isinstance(v, dict)
        return "{" + ", ".join(f"{k} = {toml(x)}" for k, x in v.items()) + "}"

    text = "\n".join(f"{k} = {toml(v)}" for k, v in doc.items())
    try:
        parse_campaign(text)
    except UsageError as e:
        assert "\n" not in str(e).strip()
