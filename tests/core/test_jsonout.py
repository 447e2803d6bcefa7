"""The result-file envelope: schema, time, command line, environment (issue 8 item 7)."""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
from pathlib import Path

import pytest

from cvmfs_modelio.core.environment import MountEntry, environment, mount_of, parse_mounts
from cvmfs_modelio.core.jsonout import envelope, write_json
from tests.conftest import SHARED

REAL_MOUNT_LINE = SHARED / "testvectors" / "cvmfs-client" / "proc_mounts_line.txt"


def test_envelope_keys_and_units(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    write_json(
        out,
        {"x_bytes": 3, "schema": "payload must not win"},
        schema="probe",
        version=4,
        measured=[tmp_path],
    )
    doc = json.loads(out.read_text())
    assert doc["schema"] == {"name": "cvmfs-modelio.probe", "version": 4}
    assert doc["x_bytes"] == 3
    assert doc["command_line"] == sys.argv
    created = dt.datetime.fromisoformat(doc["created_utc"])
    assert created.utcoffset() == dt.timedelta(0)
    env = doc["environment"]
    assert env["kernel"] == os.uname().release
    assert env["hostname"] == os.uname().nodename
    assert env["cpus"] == os.cpu_count()
    assert env["page_size_bytes"] == os.sysconf("SC_PAGE_SIZE")
    assert env["memory_bytes"] > 0
    assert env["root"] is (os.geteuid() == 0)
    for lib in ("numpy", "onnxruntime", "libfuse", "libcurl", "zlib"):
        assert lib in env["versions"]
    import numpy

    assert env["versions"]["numpy"] == numpy.__version__
    (fs,) = env["file_systems"]
    m = mount_of(tmp_path)
    assert m is not None
    assert fs == {
        "path": str(tmp_path),
        "mount_point": m.mount_point,
        "fs_type": m.fs_type,
        "source": m.source,
        "mount_options": m.options,
    }


def test_c_library_versions_when_installed() -> None:
    versions = environment()["versions"]
    if Path("/usr/lib/x86_64-linux-gnu/libfuse3.so.3").exists():
        assert versions["libfuse"].startswith("3.")
    assert versions["zlib"][0].isdigit()


def test_real_cvmfs_mount_line_parses() -> None:
    (entry,) = parse_mounts(REAL_MOUNT_LINE.read_text())
    assert entry == MountEntry(
        "cvmfs2",
        "/cvmfs/test.local",
        "fuse",
        "ro,nosuid,nodev,relatime,user_id=0,group_id=0,default_permissions,allow_other",
    )
    root = MountEntry("/dev/vda", "/", "ext4", "rw")
    assert mount_of("/cvmfs/test.local/a/b.onnx", [root, entry]) == entry
    assert mount_of("/cvmfs/test.localx", [root, entry]) == root


def test_mount_points_with_escaped_spaces() -> None:
    (entry,) = parse_mounts("src /mnt/my\\040models fuse ro 0 0\n")
    assert entry.mount_point == "/mnt/my models"
    assert parse_mounts("garbage\n\n") == []


def test_envelope_is_fresh_per_call() -> None:
    a = envelope("x")
    a["environment"]["versions"]["numpy"] = "tampered"
    assert envelope("x")["environment"]["versions"]["numpy"] != "tampered"


def test_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    write_json("-", {"a": 1}, schema="t")
    assert json.loads(capsys.readouterr().out)["schema"]["name"] == "cvmfs-modelio.t"
