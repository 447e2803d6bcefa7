"""Every subcommand's parser (``sim`` verbs included): defaults in help, one parser per unit.

Walks the real argparse tree that ``cvmfs-modelio`` builds, so a new command or option is
checked without being listed here.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator

import pytest

from cvmfs_modelio.cli import PROG, build_parser, main
from cvmfs_modelio.cli._types import Converter
from cvmfs_modelio.core.errors import UsageError
from cvmfs_modelio.core.units import parse_bandwidth, parse_size

Option = tuple[str, argparse.ArgumentParser, argparse.Action]


def walk(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    yield path, parser
    for a in parser._actions:
        if isinstance(a, argparse._SubParsersAction):
            for name, sub in a.choices.items():
                yield from walk(sub, (*path, name))


def options() -> list[tuple[tuple[str, ...], argparse.ArgumentParser, argparse.Action]]:
    skip = (argparse._HelpAction, argparse._VersionAction)
    return [
        (path, p, a)
        for path, p in walk(build_parser())
        for a in p._actions
        if a.option_strings and not isinstance(a, skip) and a.help != argparse.SUPPRESS
    ]


OPTIONS = options()
IDS = [f"{' '.join(p)} {a.option_strings[-1]}" for p, _, a in OPTIONS]


def help_text(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    fmt = parser._get_formatter()
    return fmt._expand_help(action) if action.help else ""


def test_every_command_is_walked() -> None:
    commands = {" ".join(p) for p, _ in walk(build_parser()) if p}
    assert {"probe", "demo", "experiment", "sweep", "sim", "sim publish", "sim serve"} <= commands
    assert {"sim mount", "sim umount", "sim wipe-cache", "trace", "export", "dedup"} <= commands


@pytest.mark.parametrize(("path", "parser", "action"), OPTIONS, ids=IDS)
def test_option_help_says_its_default(
    path: tuple[str, ...], parser: argparse.ArgumentParser, action: argparse.Action
) -> None:
    text = help_text(parser, action)
    assert text, f"{' '.join(path)} {action.option_strings}: no help"
    d = action.default
    if not any(d is x for x in (None, False, True, argparse.SUPPRESS)) and d != []:
        assert "default" in text, text
        assert str(action.default) in text or "default:" in text or "default " in text


PARSERS = list(walk(build_parser()))


@pytest.mark.parametrize(
    ("path", "parser"), PARSERS, ids=[" ".join(p) or "cvmfs-modelio" for p, _ in PARSERS]
)
def test_no_rest_markup_in_help(path: tuple[str, ...], parser: argparse.ArgumentParser) -> None:
    text = parser.format_help()
    assert "``" not in text, text
    assert ":func:" not in text and ":class:" not in text


def _kind(action: argparse.Action) -> str | None:
    return action.type.kind if isinstance(action.type, Converter) else None


SIZE_OPTIONS = [(p, a) for p, _, a in OPTIONS if _kind(a) == "size"]
BANDWIDTH_OPTIONS = [(p, a) for p, _, a in OPTIONS if _kind(a) == "bandwidth"]
BANDWIDTH_LIST_OPTIONS = [(p, a) for p, _, a in OPTIONS if _kind(a) == "bandwidth list"]


def test_size_and_bandwidth_options_are_found() -> None:
    sizes = {(" ".join(p), a.option_strings[-1]) for p, a in SIZE_OPTIONS}
    assert {("probe", "--block"), ("demo", "--size"), ("sim publish", "--min")} <= sizes
    assert {("chunks", "--fixed"), ("experiment", "--size")} <= sizes
    bws = {(" ".join(p), a.option_strings[-1]) for p, a in BANDWIDTH_OPTIONS}
    # Every option named like a bandwidth parses through the one bandwidth parser.
    named = {(" ".join(p), a.option_strings[-1]) for p, _, a in OPTIONS if "bandwidth" in a.dest}
    lists = {(" ".join(p), a.option_strings[-1]) for p, a in BANDWIDTH_LIST_OPTIONS}
    assert named == bws | lists
    assert bws >= {
        ("analyze", "--bandwidth"),
        ("sweep", "--bandwidth"),
        ("demo", "--bandwidth"),
        ("experiment", "--bandwidth"),
        ("sim serve", "--bandwidth"),
        ("sim mount", "--bandwidth"),
    }


@pytest.mark.parametrize(
    ("path", "action"), SIZE_OPTIONS, ids=[f"{' '.join(p)} {a.dest}" for p, a in SIZE_OPTIONS]
)
def test_sizes_parse_identically_everywhere(path: tuple[str, ...], action: argparse.Action) -> None:
    conv = action.type
    assert callable(conv)
    for text, value in [
        ("4MiB", 4 << 20),
        ("4M", 4 << 20),
        ("4m", 4 << 20),
        ("4 MiB", 4 << 20),
        ("4194304", 4 << 20),
        ("4096B", 4096),
        ("1.5KiB", 1536),
        ("2G", 2 << 30),
    ]:
        assert conv(text) == value == parse_size(text), text
    for bad in ("4MB", "4 kB", "4GB", "4Mb", "four", "4XB", "-1"):
        with pytest.raises(argparse.ArgumentTypeError):
            conv(bad)


@pytest.mark.parametrize(
    ("path", "action"),
    BANDWIDTH_OPTIONS,
    ids=[" ".join(p) for p, a in BANDWIDTH_OPTIONS],
)
def test_bandwidths_parse_identically_everywhere(
    path: tuple[str, ...], action: argparse.Action
) -> None:
    conv = action.type
    assert callable(conv)
    for text in ("100MiB", "100MiB/s", "100M", "100M/s", "104857600", "104857600/s"):
        assert conv(text) == 100 << 20 == parse_bandwidth(text), text
    assert conv("0") == 0
    for bad in ("100MB/s", "100MB", "fast", "100MiB/h", "1/2/3"):
        with pytest.raises(argparse.ArgumentTypeError):
            conv(bad)


@pytest.mark.parametrize(
    ("path", "action"),
    BANDWIDTH_LIST_OPTIONS,
    ids=[" ".join(p) for p, a in BANDWIDTH_LIST_OPTIONS],
)
def test_bandwidth_lists_parse_each_entry_as_one_bandwidth(
    path: tuple[str, ...], action: argparse.Action
) -> None:
    conv = action.type
    assert callable(conv)
    assert conv("100MiB/s, 0,104857600") == (100 << 20, 0, 100 << 20)
    for bad in ("100MB/s", "100MiB/s,", "fast,0", "1/2/3"):
        with pytest.raises(argparse.ArgumentTypeError):
            conv(bad)


def test_mb_is_refused_with_the_way_out() -> None:
    with pytest.raises(UsageError) as e:
        parse_size("4MB", "--block")
    assert str(e.value) == (
        "--block: '4MB' is ambiguous (10^6 or 2^20?): write 4MiB for powers of 1024, "
        "or the number of bytes"
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["probe", "--block", "4MB"], "--block: '4MB' is ambiguous (10^6 or 2^20?)"),
        (["demo", "--size", "big"], "--size: cannot parse size 'big'"),
        (["demo", "--bandwidth", "100MB/s"], "--bandwidth: '100MB' is ambiguous"),
        (["sim", "serve", "--bandwidth", "x/s"], "--bandwidth: cannot parse bandwidth 'x/s'"),
        (["sim", "serve", "--port", "70000"], "--port: 70000 is not a TCP port"),
        (["sim", "publish", "--min", "1MB"], "--min: '1MB' is ambiguous"),
        (["sweep", "--rtt-ms", "inf"], "--rtt-ms: 'inf' is not a finite number"),
        (["experiment", "--reps", "0"], "--reps: 0 is less than 1"),
        (["chunks", "--fastcdc", "1M,2M,4M"], "--fastcdc: expected MIN/AVG/MAX, got '1M,2M,4M'"),
        (["dedup", "--config", "zstd:1"], "--config: chunk config 'zstd:1': unknown chunker"),
        (["trace", "--sample-us", "-5"], "--sample-us: -5 is less than 0"),
    ],
)
def test_an_option_error_names_the_option(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"{PROG}: {message}"), err
    assert err.count("\n") == 1


def test_chunk_specs_one_spelling() -> None:
    from cvmfs_modelio.campaign.experiments import parse_configs
    from cvmfs_modelio.chunks.layouts import parse_chunk_spec

    for text in ("1MiB/2MiB/4MiB", "xor32:1M/2M/4M"):
        s = parse_chunk_spec(text)
        assert (s.kind, s.min_size, s.avg_size, s.max_size) == ("xor32", 1 << 20, 2 << 20, 4 << 20)
    assert parse_chunk_spec("whole").kind == parse_chunk_spec("unchunked").kind == "whole"
    configs = parse_configs("1MiB/2MiB/4MiB,xor32:4M/8M/16M,unchunked,whole".replace(",whole", ""))
    assert [c.label for c in configs] == ["1/2/4 MiB", "4/8/16 MiB", "unchunked"]
    with pytest.raises(UsageError, match=r"--configs: 'fixed:1M': CVMFS publishes with"):
        parse_configs("fixed:1M")
    with pytest.raises(UsageError, match=r"expected MIN/AVG/MAX, got '1M,2M,4M' \(1M/2M/4M\?\)"):
        parse_chunk_spec("1M,2M,4M")
