"""``sim serve``: every object byte-identical through builtin, nginx and squid; logs; faults."""

from __future__ import annotations

import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cvmfs_modelio.core.errors import UsageError
from cvmfs_modelio.core.events import Op, Source, read_event_file
from cvmfs_modelio.sim import nginx as nginx_mod
from cvmfs_modelio.sim import squid as squid_mod
from cvmfs_modelio.sim.faults import FaultRule, parse_fault
from cvmfs_modelio.sim.publish import PublishParams, iter_objects, publish
from cvmfs_modelio.sim.reqlog import RequestLog
from cvmfs_modelio.sim.server import ServerStack, serve
from cvmfs_modelio.sim.store import MANIFEST
from tests.conftest import CMS_MODELS

needs_nginx = pytest.mark.tools("nginx")
needs_squid = pytest.mark.tools("squid")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store with whole-file objects (CMS models), chunks and a catalog."""
    base = tmp_path_factory.mktemp("serve")
    src = base / "src"
    shutil.copytree(CMS_MODELS / "HLT", src / "HLT")
    rng = np.random.Generator(np.random.PCG64(3))
    (src / "big.bin").write_bytes(rng.bytes(3 << 20))
    (src / "empty").write_bytes(b"")
    store = base / "store"
    publish(src, store, PublishParams(256 * 1024, 512 * 1024, 1024 * 1024))
    return store


def _paths(store: Path) -> list[str]:
    return ["/" + MANIFEST] + ["/" + str(p.relative_to(store)) for p in iter_objects(store)]


def _get(
    url: str, path: str, proxy: str | None = None, conn: http.client.HTTPConnection | None = None
) -> tuple[int, dict[str, str], bytes]:
    """GET with http.client (through ``proxy`` as a forward proxy if given)."""
    own = conn is None
    target = path
    if conn is None:
        hostport = (proxy or url).split("//", 1)[1]
        conn = http.client.HTTPConnection(hostport, timeout=30)
    if proxy is not None:
        target = url + path
    try:
        conn.request("GET", target)
        r = conn.getresponse()
        body = r.read()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, body
    finally:
        if own:
            conn.close()


STACKS = [
    pytest.param("builtin", None, id="builtin"),
    pytest.param("nginx", None, id="nginx", marks=needs_nginx),
    pytest.param("nginx", "squid", id="nginx+squid", marks=[needs_nginx, needs_squid]),
    pytest.param("builtin", "squid", id="builtin+squid", marks=needs_squid),
]


@pytest.mark.parametrize(("server", "proxy"), STACKS)
def test_every_object_byte_identical_and_logged(
    store: Path, server: str, proxy: str | None, tmp_path: Path
) -> None:
    paths = _paths(store)
    assert len(paths) > 20 and any(p.endswith("P") for p in paths)
    log_file = tmp_path / "origin.evt"
    with serve(store, server=server, proxy=proxy, log=log_file) as srv:
        assert srv.url.startswith("http://127.0.0.1:")
        conn = http.client.HTTPConnection((srv.proxy or srv.url).split("//")[1], timeout=30)
        for p in paths:
            status, headers, body = _get(srv.url, p, srv.proxy, conn)
            expected = (store / p[1:]).read_bytes()
            assert status == 200, p
            assert body == expected, p
            assert headers["content-length"] == str(len(expected))
            assert headers["content-type"] == "application/octet-stream"
        conn.close()
        log = srv.requests(min_count=len(paths))
        ev = log.events
        assert len(ev) == len(paths)
        assert set(ev["source"]) == {Source.HTTP_SERVER} and set(ev["op"]) == {Op.HTTP_REQUEST}
        got = sorted(
            (log.files[int(f)].path, int(n), int(s))
            for f, n, s in ev[["file_id", "length", "result"]]
        )
        want = sorted((p, (store / p[1:]).stat().st_size, 200) for p in paths)
        assert got == want
        assert (ev["t_start_ns"] > 0).all() and (ev["duration_ns"] >= 0).all()
        assert {e.path: e.size for e in log.files.values()} == {
            p: (store / p[1:]).stat().st_size for p in paths
        }
        if proxy is not None:
            plog = srv.proxy_requests(min_count=len(paths))
            assert len(plog.events) == len(paths)
            assert set(plog.events["aux"]) == {0}  # every first request a miss
            # A repeated request is answered from squid's cache: the stratum sees nothing new.
            chunk = next(p for p in paths if p.endswith("P"))
            status, _, body = _get(srv.url, chunk, srv.proxy)
            assert status == 200 and body == (store / chunk[1:]).read_bytes()
            plog = srv.proxy_requests(min_count=len(paths) + 1)
            tags = squid_mod.access_log_tags(srv.proxy_access_log())
            assert tags[-1] in (("TCP_MEM_HIT", srv.url + chunk), ("TCP_HIT", srv.url + chunk))
            assert plog.events["aux"][-1] == 1
            assert len(srv.requests().events) == len(paths)
    saved = read_event_file(log_file)
    assert len(saved.events) == len(paths)


@pytest.mark.parametrize(("server", "proxy"), STACKS)
def test_missing_object_is_404(store: Path, server: str, proxy: str | None) -> None:
    with serve(store, server=server, proxy=proxy) as srv:
        status, _, _ = _get(srv.url, "/data/00/" + "0" * 38, srv.proxy)
        assert status == 404
        log = srv.requests(min_count=1)
        assert [int(r) for r in log.events["result"]] == [404]
        assert log.files[int(log.events["file_id"][0])].path == "/data/00/" + "0" * 38


def test_builtin_refuses_traversal_and_methods(store: Path) -> None:
    secret = store.parent / "secret"
    secret.write_bytes(b"x")
    with serve(store) as srv:
        host, port = srv.url.split("//")[1].split(":")
        for target in ("/../secret", "/data/../../secret", "/data//00", "/", "/data"):
            with socket.create_connection((host, int(port))) as s:
                s.sendall(f"GET {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
                assert s.recv(100).startswith(b"HTTP/1.1 404 "), target
        conn = http.client.HTTPConnection(f"{host}:{port}")
        conn.request("POST", "/.cvmfspublished", body=b"")
        r = conn.getresponse()
        r.read()
        assert r.status == 405 and r.getheader("Allow") == "GET, HEAD"
        conn.request("HEAD", "/" + MANIFEST)
        r = conn.getresponse()
        assert r.status == 200 and r.read() == b""
        assert r.getheader("Content-Length") == str((store / MANIFEST).stat().st_size)
        assert r.getheader("Cache-Control") == "max-age=61"
        conn.close()


def test_builtin_keep_alive_and_connection_close(store: Path) -> None:
    paths = _paths(store)[:5]
    with serve(store) as srv:
        conn = http.client.HTTPConnection(srv.url.split("//")[1])
        for p in paths:
            assert _get(srv.url, p, conn=conn)[0] == 200
        conn.close()
        log = srv.requests(min_count=5)
        # one connection, one server thread: keep-alive held
        assert len(set(log.events["tid"].tolist())) == 1
        host, port = srv.url.split("//")[1].split(":")
        with socket.create_connection((host, int(port))) as s:
            s.sendall(b"GET /.cvmfspublished HTTP/1.0\r\n\r\n")
            data = b""
            while chunk := s.recv(65536):  # HTTP/1.0: the server closes after the answer
                data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        assert b"Connection: close" in head and body == (store / MANIFEST).read_bytes()


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.binary(max_size=300))
def test_builtin_survives_hostile_requests(store: Path, junk: bytes) -> None:
    with serve(store) as srv:
        host, port = srv.url.split("//")[1].split(":")
        with socket.create_connection((host, int(port)), timeout=10) as s:
            try:
                s.sendall(junk + b"\r\n\r\n")
                s.shutdown(socket.SHUT_WR)
                reply = s.recv(100)
            except ConnectionResetError:
                reply = b""  # closing on a request with a body may reset: allowed
            assert reply == b"" or reply.startswith(b"HTTP/1.1 ")
        status, _, body = _get(srv.url, "/" + MANIFEST)
        assert status == 200 and body == (store / MANIFEST).read_bytes()


def test_stack_rejects_bad_arguments(store: Path, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="not a published store"):
        serve(tmp_path)
    with pytest.raises(UsageError, match="--server: 'apache'"):
        serve(store, server="apache")
    with pytest.raises(UsageError, match="--proxy: 'varnish'"):
        serve(store, proxy="varnish")
    with pytest.raises(UsageError, match="needs the builtin server"):
        serve(store, server="nginx", faults=[FaultRule("P$", "500")])
    with serve(store) as srv:
        port = int(srv.url.rsplit(":", 1)[1])
        with (
            pytest.raises(UsageError, match=f"--port {port}: cannot listen"),
            serve(store, port=port),
        ):
            pass


def test_stack_stops_everything_on_exception(store: Path) -> None:
    seen: list[ServerStack] = []
    with pytest.raises(ZeroDivisionError), serve(store, server="nginx") as srv:
        seen.append(srv)
        assert _get(srv.url, "/" + MANIFEST)[0] == 200
        _ = 1 / 0
    host, port = seen[0].url.split("//")[1].split(":")
    with pytest.raises(OSError):
        socket.create_connection((host, int(port)), timeout=2).close()


# ------------------------------------------------------------------ faults


@pytest.fixture
def chunk_path(store: Path) -> str:
    return next(p for p in _paths(store) if p.endswith("P"))


def _fault_stack(store: Path, *rules: FaultRule) -> ServerStack:
    return serve(store, faults=list(rules))


@pytest.mark.parametrize("kind", ["404", "500"])
def test_fault_status(store: Path, chunk_path: str, kind: str) -> None:
    with _fault_stack(store, FaultRule(r"P$", kind, times=2)) as srv:
        assert _get(srv.url, chunk_path)[0] == int(kind)
        assert _get(srv.url, chunk_path)[0] == int(kind)
        status, _, body = _get(srv.url, chunk_path)
        assert status == 200 and body == (store / chunk_path[1:]).read_bytes()
        assert _get(srv.url, "/" + MANIFEST)[0] == 200  # does not match the rule
        assert srv.faults_fired() == [2]
        ev = srv.requests(min_count=4).events
        assert ev["result"].tolist() == [int(kind), int(kind), 200, 200]
        assert ev["aux"].tolist() == [FaultRule("x", kind).code] * 2 + [0, 0]


def test_fault_slow(store: Path, chunk_path: str) -> None:
    with _fault_stack(store, FaultRule(r"P$", "slow", delay_s=0.3)) as srv:
        t0 = time.monotonic()
        status, _, body = _get(srv.url, chunk_path)
        assert time.monotonic() - t0 >= 0.3  # lower bound: the server waited
        assert status == 200 and body == (store / chunk_path[1:]).read_bytes()
        assert srv.requests(min_count=1).events["duration_ns"][0] >= 300_000_000


def test_fault_slow_is_interrupted_by_shutdown(store: Path, chunk_path: str) -> None:
    outcome: list[BaseException | int] = []
    srv = _fault_stack(store, FaultRule(r"P$", "slow", delay_s=3600)).start()

    def client() -> None:
        try:
            outcome.append(_get(srv.url, chunk_path)[0])
        except BaseException as e:
            outcome.append(e)

    t = threading.Thread(target=client)
    t.start()
    deadline = time.monotonic() + 10
    while srv.faults_fired() != [1] and time.monotonic() < deadline:
        time.sleep(0.01)
    srv.close()  # must not wait for the hour
    t.join(10)
    assert not t.is_alive()
    assert len(outcome) == 1 and isinstance(outcome[0], http.client.RemoteDisconnected)


def test_fault_reset(store: Path, chunk_path: str) -> None:
    with _fault_stack(store, FaultRule(r"P$", "reset", times=1)) as srv:
        with pytest.raises(
            (ConnectionResetError, http.client.IncompleteRead, http.client.RemoteDisconnected)
        ) as ei:
            _get(srv.url, chunk_path)
        if isinstance(ei.value, http.client.IncompleteRead):
            assert ei.value.partial == b""
        assert _get(srv.url, chunk_path)[0] == 200  # times=1: the next one is served
        ev = srv.requests(min_count=2).events
        assert (int(ev["length"][0]), int(ev["aux"][0])) == (0, FaultRule("x", "reset").code)
    # the RST itself, seen by a raw socket: recv fails instead of returning EOF
    with _fault_stack(store, FaultRule(r"P$", "reset")) as srv:
        host, port = srv.url.split("//")[1].split(":")
        with socket.create_connection((host, int(port)), timeout=10) as s:
            s.sendall(f"GET {chunk_path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            with pytest.raises(ConnectionResetError):
                while s.recv(65536):
                    pass


def test_fault_truncate(store: Path, chunk_path: str) -> None:
    size = (store / chunk_path[1:]).stat().st_size
    with _fault_stack(store, FaultRule(r"P$", "truncate")) as srv:
        with pytest.raises(http.client.IncompleteRead) as ei:
            _get(srv.url, chunk_path)
        assert ei.value.partial == (store / chunk_path[1:]).read_bytes()[: size // 2]
        assert ei.value.expected == size - size // 2
        ev = srv.requests(min_count=1).events
        assert (int(ev["length"][0]), int(ev["result"][0])) == (size // 2, 200)


def test_fault_corrupt(store: Path, chunk_path: str) -> None:
    good = (store / chunk_path[1:]).read_bytes()
    with _fault_stack(store, FaultRule(r"P$", "corrupt")) as srv:
        status, headers, body = _get(srv.url, chunk_path)
    assert status == 200 and len(body) == len(good) == int(headers["content-length"])
    diff = [i for i in range(len(good)) if good[i] != body[i]]
    assert diff == [0, len(good) // 2, len(good) - 1]
    assert all(body[i] == good[i] ^ 0xFF for i in diff)


def test_fault_rules_order_and_replacement(store: Path, chunk_path: str) -> None:
    with _fault_stack(store, FaultRule(r"P$", "404", times=1), FaultRule(r"/data/", "500")) as srv:
        assert _get(srv.url, chunk_path)[0] == 404
        assert _get(srv.url, chunk_path)[0] == 500
        assert _get(srv.url, "/" + MANIFEST)[0] == 200
        srv.set_faults([])
        assert _get(srv.url, chunk_path)[0] == 200
        assert srv.faults_fired() == []


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("teapot:x", "fault kind 'teapot'"),
        ("500:(", "is not a regex"),
        ("500", "use KIND:REGEX"),
        ("500:x:two", "must be numbers"),
        ("slow:x::99999", "outside 0..3600"),
    ],
)
def test_fault_spec_errors(spec: str, message: str) -> None:
    with pytest.raises(UsageError, match=message.replace("(", r"\(")):
        parse_fault(spec)


def test_fault_spec() -> None:
    assert parse_fault("slow:P$:3:1.5") == FaultRule("P$", "slow", 3, 1.5)
    assert parse_fault("reset:^/data/") == FaultRule("^/data/", "reset", None, 0.0)


# ------------------------------------------------------------------ log parsers


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=400))
def test_access_log_parsers_never_crash(text: str) -> None:
    log = RequestLog()
    nginx_mod.parse_access_log(text, log)
    squid_mod.parse_access_log(text, log)
    assert len(log.snapshot().events) == len(log)


def test_nginx_log_line() -> None:
    log = RequestLog()
    nginx_mod.parse_access_log('1795685534.497 0.012 200 4096 77 "/data/ab/c\\x22d"\n', log)
    ev = log.snapshot()
    assert ev.events[["length", "result", "duration_ns", "pid"]].tolist() == [
        (4096, 200, 12_000_000, 77)
    ]
    assert ev.files[0].path == '/data/ab/c"d'


def test_squid_log_line() -> None:
    log = RequestLog()
    line = "1795685534.550 3 200 90346 379 TCP_MEM_HIT GET http://127.0.0.1:1/data/02/81P\n"
    squid_mod.parse_access_log(line + "1795685534.497 0 0 0 0 NONE_NONE - error:x\n", log)
    ev = log.snapshot()
    assert ev.events[["length", "result", "duration_ns", "aux"]].tolist() == [
        (90346 - 379, 200, 3_000_000, 1)
    ]
    assert ev.files[0].path == "/data/02/81P"


# ------------------------------------------------------------------ command line


def _start_cli(*args: str) -> tuple[subprocess.Popen[str], str]:
    p = subprocess.Popen(
        [sys.executable, "-m", "cvmfs_modelio.cli", "sim", "serve", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert p.stdout is not None
    line = p.stdout.readline()
    assert line.startswith("stratum  http://127.0.0.1:"), line + (
        p.stderr.read() if p.stderr else ""
    )
    return p, line.split()[1]


def test_cli_serve_logs_and_stops_on_sigterm(store: Path, tmp_path: Path) -> None:
    log = tmp_path / "log.evt"
    p, url = _start_cli(str(store), "--log", str(log))
    try:
        assert _get(url, "/" + MANIFEST)[0] == 200
        assert _get(url, "/data/00/missing")[0] == 404
    finally:
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=20)
    assert p.returncode == 0, err
    assert "stopped after 2 requests" in out
    ev = read_event_file(log)
    assert ev.events["result"].tolist() == [200, 404]
    assert [ev.files[int(f)].path for f in ev.events["file_id"]] == [
        "/" + MANIFEST,
        "/data/00/missing",
    ]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _get_seconds(url: str, path: str) -> float:
    """Wall time of one GET on a new connection (what a fresh client pays)."""
    t0 = time.monotonic()
    status = _get(url, path)[0]
    assert status == 200
    return time.monotonic() - t0


def test_cli_port_is_what_clients_use_and_pays_the_rtt(store: Path) -> None:
    """``--port`` with ``--rtt-ms`` is the WAN emulator's port: a GET there pays the RTT;
    the origin gets its own port and the startup lines name both (issue 8)."""
    port = _free_port()
    p, url = _start_cli(str(store), "--port", str(port), "--rtt-ms", "100")
    try:
        assert url == f"http://127.0.0.1:{port}"
        assert p.stdout is not None
        origin_line = p.stdout.readline()
        assert origin_line.startswith("origin   http://127.0.0.1:"), origin_line
        origin = origin_line.split()[1]
        assert origin != url
        through = [_get_seconds(url, "/" + MANIFEST) for _ in range(3)]
        direct = [_get_seconds(origin, "/" + MANIFEST) for _ in range(3)]
    finally:
        p.send_signal(signal.SIGTERM)
        _out, err = p.communicate(timeout=20)
    assert p.returncode == 0, err
    # A request and its answer pay one full RTT through the emulator, never less.
    assert min(through) >= 0.100, through
    assert min(direct) < 0.050, direct


def test_cli_origin_port_is_the_stratum_behind_the_wan(store: Path) -> None:
    port, oport = _free_port(), _free_port()
    p, url = _start_cli(str(store), "--port", str(port), "--origin-port", str(oport), "--netem")
    try:
        assert p.stdout is not None
        origin = p.stdout.readline().split()[1]
        assert (url, origin) == (f"http://127.0.0.1:{port}", f"http://127.0.0.1:{oport}")
        assert _get(origin, "/" + MANIFEST)[0] == 200
    finally:
        p.send_signal(signal.SIGTERM)
        p.communicate(timeout=20)


@needs_nginx
def test_cli_nginx_dies_with_killed_cli(store: Path) -> None:
    """SIGKILL of the command cannot leave an nginx behind (PR_SET_PDEATHSIG + process group)."""
    p, url = _start_cli(str(store), "--server", "nginx")
    try:
        assert _get(url, "/" + MANIFEST)[0] == 200
        children = Path(f"/proc/{p.pid}/task/{p.pid}/children").read_text().split()
        assert children, "nginx master should be a child of the command"
        # A SIGKILLed command cannot remove its nginx directory (-p DIR/): the test does.
        # (nginx rewrites its title: "nginx: master process nginx -c CONF -p DIR/ ...")
        cmdline = Path(f"/proc/{children[0]}/cmdline").read_bytes()
        argv = os.fsdecode(cmdline).replace("\0", " ").split()
        prefix = Path(argv[argv.index("-p") + 1])
        assert prefix.name.startswith("cmio-nginx-"), argv
    finally:
        p.kill()  # also when a check above failed: never leave the command running
        p.wait()
    host, port = url.split("//")[1].split(":")
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        alive = [c for c in children if Path(f"/proc/{c}").exists()]
        try:
            socket.create_connection((host, int(port)), timeout=1).close()
        except OSError:
            if not alive:
                break
        time.sleep(0.05)
    else:
        pytest.fail(f"nginx still running after its parent was killed: {children}")
    shutil.rmtree(prefix)


def test_cli_serve_bad_input(store: Path, tmp_path: Path) -> None:
    for args, message in [
        ([str(tmp_path)], "not a published store"),
        ([str(store), "--port", "70000"], "--port: 70000 is not a TCP port"),
        ([str(store), "--origin-port", "-1"], "--origin-port: -1 is not a TCP port"),
        (
            [str(store), "--origin-port", "8000"],
            "--origin-port: only with the WAN emulator (--rtt-ms, --bandwidth or --netem)",
        ),
        ([str(store), "--bandwidth", "fast"], "--bandwidth: cannot parse bandwidth 'fast'"),
        ([str(store), "--fault", "boom:x"], "fault kind 'boom'"),
        ([str(store), "--rtt-ms", "nan"], "--rtt-ms: 'nan' is not a finite number"),
        ([str(store), "--log", str(tmp_path)], f"{tmp_path}: is a directory"),
        (
            [str(store), "--proxy-log", str(tmp_path / "no" / "p.cmtr")],
            f"directory {tmp_path / 'no'} does not exist",
        ),
    ]:
        r = subprocess.run(
            [sys.executable, "-m", "cvmfs_modelio.cli", "sim", "serve", *args],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert r.returncode == 2, r.stderr
        assert r.stderr.count("\n") == 1 and message in r.stderr, r.stderr


def _children_of_self() -> set[str]:
    pid = os.getpid()
    return set(Path(f"/proc/{pid}/task/{pid}/children").read_text().split())


@needs_squid
def test_no_orphans_after_stacks(store: Path) -> None:
    before = _children_of_self()
    with serve(store, server="nginx", proxy="squid") as srv:
        assert _get(srv.url, "/" + MANIFEST, srv.proxy)[0] == 200
        assert len(_children_of_self() - before) == 2
    assert _children_of_self() == before


def test_builtin_serves_a_damaged_object_as_it_is_on_disk(tmp_path: Path) -> None:
    """Small objects are cached in memory, but a change on disk is always seen."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(b"hello world")
    store = tmp_path / "store"
    publish(src, store)
    obj = next(p for p in iter_objects(store) if not p.name.endswith("C"))
    path = "/" + str(obj.relative_to(store))
    good = obj.read_bytes()
    with serve(store) as srv:
        assert _get(srv.url, path)[2] == good
        assert _get(srv.url, path)[2] == good
        bad = bytes([good[0] ^ 1]) + good[1:]
        obj.write_bytes(bad)  # same size, new content (a test damaging the store)
        assert _get(srv.url, path)[2] == bad
        obj.unlink()
        assert _get(srv.url, path)[0] == 404
