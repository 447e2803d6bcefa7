"""Parsers of the mount control code on hostile input (no FUSE needed)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cvmfs_modelio.core.errors import UsageError
from cvmfs_modelio.sim.mount import MountOptions, _unescape, parse_counters


def _mountinfo_escape(s: str) -> str:
    # What the kernel does to paths in /proc/self/mountinfo.
    return "".join(f"\\{ord(c):03o}" if c in " \t\n\\" else c for c in s)


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=80))
def test_mountinfo_unescape_inverts_the_kernel_escape(s: str) -> None:
    assert _unescape(_mountinfo_escape(s)) == s


@given(st.text(max_size=400))
def test_parse_counters_never_raises(text: str) -> None:
    out = parse_counters(text)
    assert all(isinstance(v, int) for v in out.values())


@settings(max_examples=60, deadline=None)
@given(
    st.dictionaries(
        st.from_regex(r"[a-z]+\.[a-z_]+", fullmatch=True),
        st.integers(min_value=-(2**63), max_value=2**63 - 1),
        max_size=20,
    )
)
def test_parse_counters_reads_what_the_client_writes(counters: dict[str, int]) -> None:
    text = "Raw Counters:\n" + "".join(f"{k}|{v}|some description\n" for k, v in counters.items())
    assert parse_counters(text) == counters


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"parallel": 0}, "--parallel"),
        ({"prefetch": -1}, "--prefetch"),
        ({"timeout_s": 0.0}, "--timeout"),
        ({"retries": 101}, "--retries"),
        ({"rtt_ms": -1.0}, "--rtt-ms"),
        ({"bandwidth": -5}, "--bandwidth"),
    ],
)
def test_mount_options_out_of_range_are_usage_errors(kw: dict[str, float], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        MountOptions(**kw).validate()  # type: ignore[arg-type]
