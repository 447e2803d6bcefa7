"""``kserve-compare`` end to end with KServe's real code, loopback only.

One comparison (download, cvmfs, local; cold and hot; one network) on a small model with
external data, checked exactly: which rows, what was fetched, what was answered (against
numpy), what is left behind (nothing).  The model server alone: it listens on 127.0.0.1
and nowhere else.  Bad input: one line, exit 2.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from cvmfs_modelio.cli import main
from cvmfs_modelio.serving import sockets, v2
from tests.conftest import require_root_fuse
from tests.serving.conftest import OUT, TinyModel, require_kserve

MiB = 1 << 20


def _children() -> set[int]:
    return set(sockets.process_tree(os.getpid())) - {os.getpid()}


def test_compare_end_to_end(
    tiny_model: TinyModel,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    require_kserve()
    require_root_fuse()
    work = tmp_path / "tmp"
    work.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(work))
    out = tmp_path / "kc.json"
    before = _children()  # the session may keep servers of other tests' fixtures
    argv = ["kserve-compare", str(tiny_model.onnx), "--rtt-ms", "5", "--bandwidth", "50MiB/s"]
    argv += ["--reps", "1", "--json", str(out)]
    assert main(argv) == 0
    text = capsys.readouterr().out.splitlines()
    assert text[0].startswith("KServe ") and text[0].endswith(", medians of 1")
    assert f"inference of {tiny_model.onnx} (" in text[0]
    # columns are two or more spaces apart; a cell holds at most single spaces
    cells = [re.split(r"\s{2,}", ln.strip()) for ln in text[1:9]]
    assert cells[0] == [
        "path", "RTT", "bandwidth", "state", "1st inference", "x local", "download",
        "transfer", "imports", "session", "on the wire", "objects",
    ]  # fmt: skip
    assert [(r[0], r[1], r[2], r[3], r[5], r[11]) for r in cells[2:]] == [
        ("download", "5 ms", "50.0 MiB/s", "cold", cells[2][5], "-"),
        ("cvmfs", "5 ms", "50.0 MiB/s", "cold", cells[3][5], "2"),
        ("download", "5 ms", "50.0 MiB/s", "hot", cells[4][5], "-"),
        ("cvmfs", "5 ms", "50.0 MiB/s", "hot", cells[5][5], "0"),
        ("local", "-", "-", "cold", "1.00x", "-"),
        ("local", "-", "-", "hot", "1.00x", "-"),
    ]
    assert [r[10] for r in cells[2:]][-2:] == ["0 B", "0 B"]
    assert [ln.split(":")[0] for ln in text[9:]] == ["note"] * 3

    doc = json.loads(out.read_text())
    assert doc["schema"] == {"name": "cvmfs-modelio.kserve-compare", "version": 1}
    assert doc["complete"] is True
    sizes = [tiny_model.onnx.stat().st_size, tiny_model.data.stat().st_size]
    assert doc["model_bytes"] == sum(sizes)
    assert [f["size_bytes"] for f in doc["files"]] == sizes
    assert doc["params"]["inputs"] == {"x": {"shape": [1, 64], "dtype": "float32"}}
    keys = [(r["path"], r["rtt_ms"], r["bandwidth_bytes_per_s"], r["state"]) for r in doc["rows"]]
    assert keys == [
        ("download", 5.0, 50 * MiB, "cold"),
        ("cvmfs", 5.0, 50 * MiB, "cold"),
        ("download", 5.0, 50 * MiB, "hot"),
        ("cvmfs", 5.0, 50 * MiB, "hot"),
        ("local", None, None, "cold"),
        ("local", None, None, "hot"),
    ]
    runs = {(r["path"], r["state"]): r for r in doc["runs"]}
    assert len(runs) == len(doc["runs"]) == 6
    for (path, state), r in runs.items():
        assert r["flags"] == [], (path, state)
        assert len(r["listen"]) == 1 and r["listen"][0].startswith("127.0.0.1:")
        assert r["total_ns"] >= r["server_ns"] >= r["import_ns"] + r["session_ns"] > 0
        if path == "download":
            # the storage initializer fetched both files whole, then the server started
            assert r["wire_bytes"] == sum(sizes)
            assert r["total_ns"] >= r["download_ns"] + r["server_ns"]
            assert r["download_ns"] > r["transfer_ns"] > 0
            assert r["objects_fetched"] is None
        else:
            assert r["download_ns"] is None and r["transfer_ns"] is None
            assert r["total_ns"] == r["server_ns"]
    # cold CVMFS fetched the two files' objects (one chunk each), hot nothing
    assert runs["cvmfs", "cold"]["objects_fetched"] == 2
    assert runs["cvmfs", "cold"]["wire_bytes"] > 0
    assert (runs["cvmfs", "hot"]["objects_fetched"], runs["cvmfs", "hot"]["wire_bytes"]) == (0, 0)
    assert [runs["local", s]["wire_bytes"] for s in ("cold", "hot")] == [0, 0]
    local = {r["state"]: r["total_ns"] for r in doc["rows"] if r["path"] == "local"}
    for r in doc["rows"]:
        assert r["ratio_to_local"] == pytest.approx(r["total_ns"] / local[r["state"]])

    # The answer is what numpy computes, and every start answered the same bits.
    x = v2.model_inputs(tiny_model.onnx)["x"]
    ans = doc["answer"]
    assert list(ans) == ["y"] and ans["y"]["shape"] == [1, OUT] and ans["y"]["datatype"] == "FP32"
    got = np.asarray(ans["y"]["data"], dtype=np.float32).reshape(1, OUT)
    np.testing.assert_allclose(got, tiny_model.reference(x), rtol=1e-5, atol=1e-5)
    assert {r["outputs_sha256"] for r in doc["runs"]} == {doc["answer_sha256"]}
    assert doc["versions"]["kserve"] and doc["versions"]["kserve-storage"]

    # Nothing left: temporary directory, mount, child processes.
    assert list(work.iterdir()) == []
    assert str(work) not in Path("/proc/self/mounts").read_text()
    assert _children() - before == set()


def _listen_rows(pid: int) -> tuple[list[str], list[str]]:
    """Local addresses (kernel notation) of the LISTEN sockets ``pid`` holds: tcp, tcp6."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    out = []
    for table in ("tcp", "tcp6"):
        rows = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        out.append([f[1] for f in (r.split() for r in rows) if f[3] == "0A" and f[9] in inodes])
    return out[0], out[1]


def test_model_server_listens_on_loopback_only(tiny_model: TinyModel, tmp_path: Path) -> None:
    require_kserve()
    marks = tmp_path / "marks.json"
    spec = {"model": str(tiny_model.onnx), "name": "tiny", "marks": str(marks), "threads": 1}
    proc = subprocess.Popen(
        [sys.executable, "-m", "cvmfs_modelio.serving.kserve_server", json.dumps(spec)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        tcp: list[str] = []
        while not tcp:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "the model server did not listen in 120 s"
            time.sleep(0.05)
            if marks.exists():
                tcp, tcp6 = _listen_rows(proc.pid)
        # One REST port on 127.0.0.1 (0100007F in the kernel's notation), no gRPC, no IPv6.
        assert len(tcp) == 1 and tcp[0].startswith("0100007F:"), tcp
        assert tcp6 == []
        port = int(tcp[0].split(":")[1], 16)
        x = v2.model_inputs(tiny_model.onnx)["x"]
        status, body = 0, b""
        while status != 200 and time.monotonic() < deadline:
            try:
                status, body = v2.post(port, "/v2/models/tiny/infer", v2.request_body({"x": x}), 30)
            except OSError:
                time.sleep(0.05)
        assert status == 200
        y = v2.parse_response(body)["y"]
        np.testing.assert_allclose(y, tiny_model.reference(x), rtol=1e-5, atol=1e-5)
        assert _listen_rows(proc.pid) == (tcp, [])  # serving did not open anything else
        assert [s.port for s in sockets.listeners(proc.pid)] == [port]
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        if proc.stderr is not None:
            proc.stderr.close()


def _cli(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cvmfs_modelio.cli", *argv],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def test_without_kserve_one_line_names_the_extra(tiny_model: TinyModel) -> None:
    # KServe hidden from this one interpreter, as on an install without the extra.
    code = (
        "import sys; sys.modules['kserve'] = None; sys.modules['kserve_storage'] = None; "
        "from cvmfs_modelio.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    r = subprocess.run(
        [sys.executable, "-c", code, "kserve-compare", str(tiny_model.onnx)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (r.returncode, r.stdout) == (2, "")
    assert r.stderr == (
        "cvmfs-modelio: kserve-compare: the kserve package is not installed: "
        "pip install '.[kserve]'\n"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--states", "warm"], "--states: 'warm' is not one of cold, hot"),
        (["--states", "cold,cold"], "--states: cold,cold names one twice"),
        (["--paths", "nfs"], "--paths: 'nfs' is not one of download, cvmfs, local"),
        (["--rtt-ms", "10,-1"], "--rtt-ms: -1 is less than 0"),
        (["--rtt-ms", "10,,25"], "--rtt-ms: '10,,25': empty entry in the list"),
        (["--bandwidth", "100MB/s"], "--bandwidth: '100MB' is ambiguous"),
        (["--reps", "0"], "--reps: 0 is less than 1"),
    ],
)
def test_bad_options_one_line(
    tiny_model: TinyModel, args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["kserve-compare", str(tiny_model.onnx), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"cvmfs-modelio: {message}") and err.count("\n") == 1, err


def test_bad_models_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    require_kserve()
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model\n")
    for path, msg in [
        (junk, f"{junk}: not a readable ONNX model (unsupported wire type 6 (field 13) at byte 1)"),
        (tmp_path, f"{tmp_path}: is a directory (give the .onnx files)"),
        (tmp_path / "none.onnx", f"{tmp_path / 'none.onnx'}: no such file or directory"),
    ]:
        assert main(["kserve-compare", str(path), "--paths", "local"]) == 2
        assert capsys.readouterr().err == f"cvmfs-modelio: {msg}\n"


def test_a_model_onnx_runtime_cannot_load(tmp_path: Path) -> None:
    """ONNX Runtime's own reason, naming the user's file, no temporary path; nothing left."""
    require_kserve()
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("NoSuchOp", ["x"], ["y"])],
        "bad",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    bad = tmp_path / "bad.onnx"
    onnx.save(model, str(bad))
    work = tmp_path / "tmp"
    work.mkdir()
    r = _cli(
        "kserve-compare", str(bad), "--paths", "local", "--states", "cold", "--reps", "1",
        env={**os.environ, "TMPDIR": str(work)},
    )  # fmt: skip
    assert (r.returncode, r.stdout) == (2, "")
    last = r.stderr.splitlines()[-1]
    assert last == (
        f"cvmfs-modelio: {bad}: the KServe model server exited with status 1: INVALID_GRAPH: "
        'This is an invalid model. In Node, ("", NoSuchOp, "", -1) : ("x": tensor(float),) -> '
        '("y": tensor(float),) , Error No Op registered for NoSuchOp with domain_version of 17'
    )
    assert [ln for ln in r.stderr.splitlines() if not ln.startswith("[kserve-compare")] == [last]
    assert list(work.iterdir()) == []


def _procs_mentioning(text: str) -> list[int]:
    out = []
    for e in os.scandir("/proc"):
        if e.name.isdigit():
            try:
                if text in Path(e.path, "cmdline").read_bytes().decode(errors="replace"):
                    out.append(int(e.name))
            except OSError:
                continue
    return out


def test_sigterm_mid_run_leaves_nothing(tiny_model: TinyModel, tmp_path: Path) -> None:
    """SIGTERM while the model server runs from the mount: exit 143, what was measured in
    the JSON (complete: false), no mount, no process, no temporary directory."""
    require_kserve()
    require_root_fuse()
    work = tmp_path / "tmp"
    work.mkdir()
    out = tmp_path / "kc.json"
    args = ["--paths", "local,cvmfs", "--rtt-ms", "0", "--reps", "20", "--json", str(out)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "cvmfs_modelio.cli", "kserve-compare", str(tiny_model.onnx), *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "TMPDIR": str(work)},
    )
    assert proc.stderr is not None
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if "] cvmfs [" in line and " 2/20" in line:
            break
    time.sleep(0.3)  # inside the second cvmfs start
    proc.send_signal(signal.SIGTERM)
    rest = proc.stderr.read()
    assert proc.wait(timeout=120) == 143, "".join(seen) + rest
    doc = json.loads(out.read_text())
    assert doc["complete"] is False and doc["interrupted_by"] == "SIGTERM"
    # cvmfs and local interleaved: cold, cold, hot, hot of the first repetition at least
    assert [(r["path"], r["state"]) for r in doc["runs"]][:4] == [
        ("cvmfs", "cold"),
        ("local", "cold"),
        ("cvmfs", "hot"),
        ("local", "hot"),
    ]
    assert list(work.iterdir()) == []
    assert str(work) not in Path("/proc/self/mounts").read_text()
    assert _procs_mentioning(str(work)) == []


def test_external_data_in_a_subdirectory_cannot_be_downloaded(
    tiny_model: TinyModel, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """KServe's http storage writes every file flat into its directory: refused up front."""
    require_kserve()
    import onnx

    model = onnx.load(str(tiny_model.onnx))  # weights loaded into the protobuf
    (tmp_path / "w").mkdir()
    path = tmp_path / "sub.onnx"
    onnx.save(model, str(path), save_as_external_data=True, location="w/sub.data")
    assert main(["kserve-compare", str(path), "--paths", "download"]) == 2
    assert capsys.readouterr().err == (
        f"cvmfs-modelio: {path}: --paths download: w/sub.data cannot come through KServe's "
        "http storage as it is (one flat directory, plain file names)\n"
    )
