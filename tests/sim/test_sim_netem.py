"""The user-space WAN emulator holds its RTT and bandwidth (lower bounds only) and is exact."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from cvmfs_modelio.core.errors import UsageError
from cvmfs_modelio.sim import squid as squid_mod
from cvmfs_modelio.sim.netem import NetemProxy
from cvmfs_modelio.sim.publish import PublishParams, iter_objects, publish
from cvmfs_modelio.sim.server import serve
from cvmfs_modelio.sim.store import MANIFEST


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("netem")
    src = base / "src"
    src.mkdir()
    (src / "big").write_bytes(np.random.Generator(np.random.PCG64(9)).bytes(4 << 20))
    (src / "small").write_bytes(b"x" * 100)
    store = base / "store"
    publish(src, store, PublishParams(chunking=False, compression="none"))
    return store


def _objects(store: Path) -> tuple[str, str]:
    objs = sorted(iter_objects(store), key=lambda p: p.stat().st_size)
    small = next(p for p in objs if not p.name.endswith("C"))
    return "/" + str(small.relative_to(store)), "/" + str(objs[-1].relative_to(store))


def _get(url: str, path: str) -> bytes:
    """GET over a fresh connection with a raw socket; the whole body."""
    host, port = url.split("//")[1].split(":")
    with socket.create_connection((host, int(port)), timeout=60) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        data = bytearray()
        while chunk := s.recv(1 << 20):
            data += chunk
    head, _, body = bytes(data).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), head
    return body


def _origin(srv_url: str) -> tuple[str, int]:
    host, port = srv_url.split("//")[1].split(":")
    return host, int(port)


def test_unlimited_and_limited_are_byte_exact(store: Path) -> None:
    small, big = _objects(store)
    with serve(store) as srv:
        for rtt, bw in [(0, 0), (2, 0), (0, 200 << 20), (2, 200 << 20)]:
            with NetemProxy(*_origin(srv.url), rtt_ms=rtt, bandwidth_bytes_per_s=bw) as net:
                assert _get(net.url, big) == (store / big[1:]).read_bytes()
                assert _get(net.url, small) == (store / small[1:]).read_bytes()
                assert net.connections == 2


def test_small_get_takes_at_least_one_rtt(store: Path) -> None:
    small, _ = _objects(store)
    with serve(store) as srv, NetemProxy(*_origin(srv.url), rtt_ms=80) as net:
        for _ in range(3):
            t0 = time.monotonic()
            _get(net.url, small)
            assert time.monotonic() - t0 >= 0.080


def test_large_get_takes_at_least_size_over_bandwidth(store: Path) -> None:
    _, big = _objects(store)
    size = (store / big[1:]).stat().st_size
    bw = 8 << 20  # 4 MiB at 8 MiB/s: >= 0.5 s
    with serve(store) as srv, NetemProxy(*_origin(srv.url), bandwidth_bytes_per_s=bw) as net:
        t0 = time.monotonic()
        body = _get(net.url, big)
        assert time.monotonic() - t0 >= size / bw
        assert len(body) == size


def test_link_is_shared_between_connections(store: Path) -> None:
    _, big = _objects(store)
    size = (store / big[1:]).stat().st_size
    bw = 16 << 20
    with serve(store) as srv, NetemProxy(*_origin(srv.url), bandwidth_bytes_per_s=bw) as net:
        t0 = time.monotonic()
        threads = [threading.Thread(target=_get, args=(net.url, big)) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert time.monotonic() - t0 >= 3 * size / bw


def test_stop_interrupts_a_slow_transfer(store: Path) -> None:
    _, big = _objects(store)
    errors: list[BaseException] = []
    with serve(store) as srv:
        net = NetemProxy(*_origin(srv.url), bandwidth_bytes_per_s=64 * 1024).start()

        def client() -> None:
            try:
                _get(net.url, big)  # would take a minute
            except BaseException as e:
                errors.append(e)

        t = threading.Thread(target=client)
        t.start()
        while net.connections == 0:
            time.sleep(0.01)
        net.stop()
        t.join(15)
        assert not t.is_alive()
    assert len(errors) == 1  # the body was cut short


def test_serve_puts_emulator_in_front_of_stratum(store: Path) -> None:
    small, _ = _objects(store)
    with serve(store, rtt_ms=40, bandwidth=50 << 20) as srv:
        assert srv.url != srv.origin_url
        t0 = time.monotonic()
        assert _get(srv.url, "/" + MANIFEST) == (store / MANIFEST).read_bytes()
        assert time.monotonic() - t0 >= 0.040
        assert _get(srv.url, small) == (store / small[1:]).read_bytes()
        assert len(srv.requests(min_count=2).events) == 2


def test_bad_parameters() -> None:
    with pytest.raises(UsageError, match="must not be negative"):
        NetemProxy("127.0.0.1", 1, rtt_ms=-1)


@pytest.mark.tools("squid")
def test_squid_sits_on_the_client_side_of_the_wan(store: Path) -> None:
    """A cache hit in the site squid does not cross the emulated WAN (no RTT paid)."""
    small, _ = _objects(store)
    with serve(store, rtt_ms=200, proxy="squid") as srv:
        assert srv.proxy is not None
        host, port = srv.proxy.split("//")[1].split(":")

        def via_proxy() -> bytes:
            with socket.create_connection((host, int(port)), timeout=30) as s:
                req = f"GET {srv.url}{small} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                s.sendall(req.encode())
                data = bytearray()
                while chunk := s.recv(1 << 20):
                    data += chunk
            return bytes(data).partition(b"\r\n\r\n")[2]

        t0 = time.monotonic()
        assert via_proxy() == (store / small[1:]).read_bytes()
        assert time.monotonic() - t0 >= 0.2  # the miss crossed the WAN
        assert via_proxy() == (store / small[1:]).read_bytes()
        tags = [t for t, _ in squid_mod.access_log_tags(srv.proxy_access_log())]
        assert tags[-2:] in (["TCP_MISS", "TCP_MEM_HIT"], ["TCP_MISS", "TCP_HIT"])
        assert len(srv.requests(min_count=1).events) == 1  # the stratum saw only the miss
