"""The real-mount code paths of ``cvmfs_modelio.mounts`` against a real cvmfs2 client's answers.

../shared/testvectors/cvmfs-client holds what a real client printed and returned: the
``/proc/mounts`` line, ``cvmfs_talk internal affairs`` and ``cleanup 0``, and the root's
magic xattrs.  The parsers must read them exactly; the ``cvmfs_talk`` path is run for real
through a ``cvmfs_talk`` on PATH that answers with the recorded output.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from cvmfs_modelio.core.errors import UsageError
from cvmfs_modelio.mounts import (
    REAL,
    ClientInfo,
    CvmfsMount,
    MountInfo,
    check_cleanup_answer,
    find_mount,
    parse_client_xattrs,
    parse_csv_counters,
    parse_internal_affairs,
    parse_proc_mounts,
)
from tests.conftest import CLIENT_VECTORS

AFFAIRS = (CLIENT_VECTORS / "cvmfs_talk_internal_affairs.txt").read_text()


def test_proc_mounts_line_of_a_real_client_is_a_real_cvmfs_mount() -> None:
    line = (CLIENT_VECTORS / "proc_mounts_line.txt").read_text()
    table = parse_proc_mounts(line)
    assert table == [("/cvmfs/test.local", "fuse", "cvmfs2")]
    info = find_mount("/cvmfs/test.local/big/P1/r64.bin", table)
    assert info == MountInfo(Path("/cvmfs/test.local"), "fuse", "cvmfs2", REAL)
    assert find_mount("/cvmfs/test.local", table).kind == REAL
    with pytest.raises(UsageError, match="not on a CVMFS mount"):
        find_mount("/cvmfs/test.localx/f", table)
    # Another FUSE file system is not CVMFS; the deepest mount wins.
    other = [*table, ("/cvmfs/test.local/sub", "fuse.sshfs", "me@host:/x")]
    with pytest.raises(UsageError, match="not on a CVMFS mount"):
        find_mount("/cvmfs/test.local/sub/f", other)
    escaped = parse_proc_mounts("cvmfs2 /mnt/with\\040space fuse ro 0 0\n")
    assert escaped == [("/mnt/with space", "fuse", "cvmfs2")]


def _raw_counter_lines() -> list[tuple[str, int]]:
    section = AFFAIRS.split("Raw Counters:\n", 1)[1].splitlines()
    assert section[0] == "Name|Value|Description"
    return [(ln.split("|")[0], int(ln.split("|")[1])) for ln in section[1:] if ln]


def test_internal_affairs_counters_read_exactly() -> None:
    got = parse_internal_affairs(AFFAIRS)
    want = dict(_raw_counter_lines())
    assert got == want
    assert len(got) == 120
    # The counters the project compares (cvmfs-facts.md §3), as the real client printed them.
    assert got["download.n_requests"] == 4
    assert got["download.sz_transferred_bytes"] == 2364
    assert got["fetch.n_invocations"] == 1 and got["fetch.n_downloads"] == 0
    assert (got["cvmfs.n_fs_open"], got["cvmfs.n_fs_read"], got["cvmfs.n_fs_lookup"]) == (0, 0, 10)
    assert got["catalog_revision"] == 5 and got["inode_cache.n_hit"] == 237
    # Nothing of the latency histograms before the section (their lines hold '|' too).
    assert "|" in AFFAIRS.split("Raw Counters:", 1)[0]
    assert not any("->" in k or "nsec" in k or k.strip() != k for k in got)
    with pytest.raises(UsageError, match="no 'Raw Counters:'"):
        parse_internal_affairs(AFFAIRS.split("Raw Counters:", 1)[0])


def test_cleanup_answer_of_a_real_client() -> None:
    recorded = (CLIENT_VECTORS / "cvmfs_talk_cleanup_0.txt").read_text().splitlines()
    assert recorded[1] == "exit=0"  # the recording's note of the exit status
    assert check_cleanup_answer(recorded[0] + "\n") is False  # the pinned catalog stays
    assert check_cleanup_answer("OK\n") is True
    with pytest.raises(UsageError, match="unexpected answer 'Failed to clean'"):
        check_cleanup_answer("Failed to clean\n")


def test_root_xattrs_of_a_real_client_parse_exactly() -> None:
    values = json.loads((CLIENT_VECTORS / "root_xattrs.json").read_text())["values"]
    info = parse_client_xattrs(REAL, values)
    assert info == ClientInfo(
        kind=REAL,
        version="2.12.0.0",
        pid=8579,
        fqrn="test.local",
        revision=5,
        root_hash="25e2c720c1ce822a9fc3274cf0e5d851f81b73e1",
        host="http://127.0.0.1/cvmfs/test.local",
        proxy="DIRECT",
        timeout_s=5,
        timeout_direct_s=10,
        uptime_s=540,
        catalogs=1,
        repo_counters={
            "chunked": 4,
            "chunked_size": 234882022,
            "chunks": 101,
            "dir": 26,
            "external": 0,
            "external_file_size": 0,
            "file_size": 252114760,
            "nested": 0,
            "regular": 16,
            "special": 0,
            "symlink": 0,
            "xattr": 0,
        },
        client_profile="cvmfs2",
    )
    cat = values["user.catalog_counters"].split("\n", 2)
    assert cat[0] == f"catalog_hash: {info.root_hash}" and cat[1] == "catalog_mountpoint: "
    assert parse_csv_counters(cat[2]) == info.repo_counters
    with pytest.raises(UsageError, match=r"user\.pid: 'x' is not a number"):
        parse_client_xattrs(REAL, {**values, "user.pid": "x"})
    with pytest.raises(UsageError, match=r"does not answer user\.version"):
        parse_client_xattrs(REAL, {k: v for k, v in values.items() if k != "user.version"})
    with pytest.raises(UsageError, match="not name,value"):
        parse_csv_counters("chunked 4\n")


@pytest.fixture
def fake_talk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A ``cvmfs_talk`` on PATH that answers as the recorded real client (and logs its argv)."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    log = tmp_path / "talk.log"
    script = bindir / "cvmfs_talk"
    script.write_text(
        "#!/bin/sh\n"
        f'echo "$@" >> {log}\n'
        'if [ "$1 $2 $3 $4" = "-i test.local internal affairs" ]; then\n'
        f"  cat {CLIENT_VECTORS / 'cvmfs_talk_internal_affairs.txt'}; exit 0; fi\n"
        'if [ "$1 $2 $3 $4" = "-i test.local cleanup 0" ]; then\n'
        f"  head -n 1 {CLIENT_VECTORS / 'cvmfs_talk_cleanup_0.txt'}; exit 0; fi\n"
        "echo 'unknown command' >&2; exit 1\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    return log


def test_real_mount_counters_and_cleanup_go_through_cvmfs_talk(
    tmp_path: Path, fake_talk: Path
) -> None:
    root = tmp_path / "cvmfs" / "test.local"
    root.mkdir(parents=True)
    try:
        os.setxattr(root, "user.fqrn", b"test.local")
    except OSError as e:
        pytest.skip(f"{tmp_path}: user xattrs unsupported here ({e.strerror})")
    (root / "f.bin").write_bytes(b"x" * 4096)
    m = CvmfsMount(MountInfo(root, "fuse", "cvmfs2", REAL))
    assert m.repository() == "test.local"
    assert m.counters() == dict(_raw_counter_lines())
    m.clear_caches([root / "f.bin"])  # the real answer (pinned catalog stays) is accepted
    assert fake_talk.read_text().splitlines() == [
        "-i test.local internal affairs",
        "-i test.local cleanup 0",
    ]
