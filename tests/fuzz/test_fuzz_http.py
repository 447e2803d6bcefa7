"""Fuzz target: request line and header fields of the builtin stratum, over a real socket.

Requests are built from parts (method, target, version, fields, framing) where each part is
valid or carries one known defect (NUL, control bytes, bad escapes, overlong lines, bad or
duplicate fields, bodies, bad ranges, ...).  The oracle is the set of statuses the defects
present allow (one defect: exactly its status), else what the request asks for (200, 206,
404, 405, 416 with the exact bytes).  Every case is sent fragmented (a slow sender), followed
on the same connection by a pipelined valid GET that must be answered iff the first request
keeps the connection; after each case a new connection must still get the manifest.
"""

from __future__ import annotations

import select
import shutil
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cvmfs_modelio.sim.builtin_http import (
    MAX_HEADER,
    MAX_LINE,
    BuiltinServer,
    HttpError,
    parse_head,
    parse_range,
)
from cvmfs_modelio.sim.netem import NetemProxy
from cvmfs_modelio.sim.publish import PublishParams, iter_objects, publish
from cvmfs_modelio.sim.store import MANIFEST
from tests.fuzz._budget import fuzz


@dataclass
class Served:
    server: BuiltinServer
    store: Path
    obj: str  # path of a stored object
    body: bytes  # its bytes
    manifest: bytes


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    base = tmp_path_factory.mktemp("fuzzhttp")
    src = base / "src"
    src.mkdir()
    rng = np.random.Generator(np.random.PCG64(14))
    (src / "a.bin").write_bytes(rng.bytes(3000))
    (src / "b.bin").write_bytes(rng.bytes(200_000))
    store = base / "store"
    publish(src, store, PublishParams(64 * 1024, 128 * 1024, 256 * 1024))
    obj = max(iter_objects(store), key=lambda p: p.stat().st_size)
    srv = BuiltinServer(store).start()
    try:
        yield Served(
            srv,
            store,
            "/" + str(obj.relative_to(store)),
            obj.read_bytes(),
            (store / MANIFEST).read_bytes(),
        )
    finally:
        srv.stop()
    shutil.rmtree(base)


# ---------------------------------------------------------------- responses


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes


def read_response(f: BinaryIO, head_only: bool = False) -> Response | None:
    """One response from ``f`` (None at EOF before a status line)."""
    line = f.readline(70000)
    if not line:
        return None
    version, status, _ = line.decode("latin-1").split(" ", 2)
    assert version == "HTTP/1.1", line
    headers: dict[str, str] = {}
    while (h := f.readline(70000)) not in (b"\r\n", b""):
        name, _, value = h.decode("latin-1").partition(":")
        assert name.lower() not in headers, f"duplicate {name} in the answer"
        headers[name.lower()] = value.strip()
    n = 0 if head_only else int(headers["content-length"])
    body = f.read(n)
    assert len(body) == n, f"short body: {len(body)} of {n}"
    return Response(int(status), headers, body)


# ---------------------------------------------------------------- generated requests


@dataclass
class Case:
    parts: list[bytes]  # request line and field lines, without line ends
    eol: bytes
    body: bytes = b""
    defects: set[int] = field(default_factory=set)  # statuses the defects allow
    method: str = "GET"
    kind: str = "object"  # object | missing | manifest
    range_value: str | None = None
    keep: bool = True

    def raw(self) -> bytes:
        return b"".join(p + self.eol for p in self.parts) + self.eol + self.body


VISIBLE = st.binary(min_size=1, max_size=12).map(
    lambda b: bytes(0x21 + c % 94 for c in b).replace(b"%", b"A")
)
TOKEN = st.text(
    "!#$&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
    min_size=1,
    max_size=12,
).map(str.encode)
CONTROL = st.sampled_from([b"\x00", b"\x01", b"\x7f", b"\r", b"\x1b"])


@st.composite
def targets(draw: st.DrawFn, obj: str, hostile: bool) -> tuple[bytes, str, set[int]]:
    """(raw target, what it names, statuses of its defects); defects only if ``hostile``."""
    valid = ["object", "manifest", "missing", "escaped", "absolute", "query", "traversal"]
    valid += ["enc-traversal"]
    bad = ["nul", "ctrl-decoded", "ctrl-raw", "high-byte", "bad-escape", "asterisk"]
    bad += ["relative", "overlong", "empty-authority"]
    kind = draw(st.sampled_from(bad if hostile else valid))
    good = obj.encode()
    if kind == "object":
        return good, "object", set()
    if kind == "manifest":
        return b"/" + MANIFEST.encode(), "manifest", set()
    if kind == "missing":
        return (
            b"/data/00/" + draw(VISIBLE).replace(b"?", b"x").replace(b"#", b"x"),
            "missing",
            set(),
        )
    if kind == "escaped":  # %-escapes of ordinary characters name the same file
        i = draw(st.integers(1, len(good) - 1))
        return good[:i] + b"%%%02X" % good[i] + good[i + 1 :], "object", set()
    if kind == "absolute":
        return b"http://stratum.example" + good, "object", set()
    if kind == "query":
        return good + b"?" + draw(VISIBLE), "object", set()
    if kind == "traversal":
        return (
            b"/data/../../" + draw(st.sampled_from([b"etc/passwd", b"store/.cvmfspublished"])),
            "missing",
            set(),
        )
    if kind == "enc-traversal":
        return (
            draw(st.sampled_from([b"/%2e%2e/etc/passwd", b"/data/..%2f..%2fetc", b"/.%2e/x"])),
            "missing",
            set(),
        )
    if kind == "nul":
        return good[:9] + b"%00" + good[9:], "", {400}
    if kind == "ctrl-decoded":
        return good + b"%" + draw(st.sampled_from([b"0a", b"0D", b"1f", b"7F"])), "", {400}
    if kind == "ctrl-raw":
        return good[:5] + draw(CONTROL) + good[5:], "", {400}
    if kind == "high-byte":
        return good + bytes([draw(st.integers(0x80, 0xFF))]), "", {400}
    if kind == "bad-escape":
        return good + draw(st.sampled_from([b"%", b"%4", b"%zz", b"%%41"])), "", {400}
    if kind == "asterisk":
        return b"*", "", {400}
    if kind == "relative":
        return good.lstrip(b"/"), "", {400}
    if kind == "empty-authority":
        return b"http://" + good, "", {400}
    # overlong: the request line exceeds MAX_LINE
    return good + b"?" + b"a" * draw(st.integers(MAX_LINE, MAX_LINE + 3000)), "", {414}


PARTS = ("target", "method", "version", "sep", "host", "range", "length", "te", "fields")


@st.composite
def cases(draw: st.DrawFn, obj: str, size: int) -> Case:
    """A request where the parts in a drawn set (usually none or one) carry a defect."""
    hostile: frozenset[str] | set[str] = draw(
        st.sampled_from([frozenset(), frozenset()])
        | st.sets(st.sampled_from(PARTS), min_size=1, max_size=1)
        | st.sets(st.sampled_from(PARTS), min_size=2, max_size=3)
    )
    target, kind, defects = draw(targets(obj, "target" in hostile))
    if "method" in hostile:
        method = draw(st.sampled_from(["BAD METHOD", "G\x00T", "", "GET(", "G/T"]))
        defects.add(400)
    else:
        method = draw(st.sampled_from(["GET", "GET", "GET", "HEAD", "POST", "DELETE", "get"]))
    if "version" in hostile:
        version = draw(st.sampled_from(["HTTP/2.0", "HTTP/1.2", "HTTP/1", "http/1.1", "HTTP/1.1x"]))
        defects.add(505 if version in ("HTTP/2.0", "HTTP/1.2") else 400)
    else:
        version = draw(st.sampled_from(["HTTP/1.1", "HTTP/1.1", "HTTP/1.0"]))
    sep = b" "
    if "sep" in hostile:
        sep = draw(st.sampled_from([b"  ", b"\t", b" \t"]))
        defects.add(400)
    line = method.encode("latin-1") + sep + target + sep + version.encode()
    fields: list[bytes] = []
    hosts = draw(st.sampled_from([0, 2])) if "host" in hostile else 1
    if hosts == 0 and version == "HTTP/1.0":
        hosts = 2
    if hosts != 1:
        defects.add(400)
    fields += [b"Host: stratum.example"] * hosts
    keep = version == "HTTP/1.1"
    conn = draw(st.sampled_from([None, None, "close", "keep-alive", "Keep-Alive, TE"]))
    if conn is not None:
        fields.append(b"Connection: " + conn.encode())
        keep = "close" not in conn.lower() and (keep or "keep-alive" in conn.lower())
    range_value = None
    if draw(st.booleans()):
        range_value = draw(ranges(size))
        fields.append(b"Range: " + range_value.encode())
    if "range" in hostile:
        fields += [b"Range: bytes=0-0", b"Range: bytes=1-1"]
        defects.add(400)
    body = b""
    length: str | None
    if "length" in hostile:
        length = draw(st.sampled_from(["5", "abc", "-1", "0, 5", "1" * 30]))
        defects.add(400)
        body = b"x" * 5 if length == "5" else b""
    else:
        length = draw(st.sampled_from([None, None, "0", "0, 0"]))
    if length is not None:
        fields.append(b"Content-Length: " + length.encode())
    if "te" in hostile:
        fields.append(b"Transfer-Encoding: " + draw(st.sampled_from([b"chunked", b"gzip", b""])))
        defects.add(400)
    for _ in range(draw(st.integers(0, 3))):
        fields.append(draw(extra_fields(False))[0])
    if "fields" in hostile:
        f, status = draw(extra_fields(True))
        fields.insert(draw(st.integers(0, len(fields))), f)
        defects |= status
    eol = draw(st.sampled_from([b"\r\n", b"\r\n", b"\n"]))
    return Case([line, *fields], eol, body, defects, method, kind, range_value, keep)


@st.composite
def extra_fields(draw: st.DrawFn, hostile: bool) -> tuple[bytes, set[int]]:
    if not hostile:
        return b"X-" + draw(TOKEN) + b":" + draw(st.sampled_from([b"", b" ", b"\t"])) + draw(
            VISIBLE
        ), set()
    kind = draw(
        st.sampled_from(
            [
                "ok",
                "ok",
                "nul",
                "ctrl",
                "space-name",
                "no-colon",
                "fold",
                "empty-name",
                "long",
                "many",
            ]
        )
    )
    name, value = b"X-" + draw(TOKEN), draw(VISIBLE)
    if kind == "nul":
        return name + b": a\x00b", {400}
    if kind == "ctrl":
        return name + b": a" + draw(st.sampled_from([b"\x01", b"\x7f", b"\r", b"\x1b"])) + b"b", {
            400
        }
    if kind == "space-name":
        return name + b" : " + value, {400}
    if kind == "no-colon":
        return name + b" " + value, {400}
    if kind == "fold":
        return b" folded", {400}
    if kind == "empty-name":
        return b": " + value, {400}
    if kind == "long":  # one field longer than MAX_LINE
        return name + b": " + b"v" * draw(st.integers(MAX_LINE, MAX_LINE + 100)), {431}
    # many fields: the whole head beyond MAX_HEADER
    return b"\n".join([b"X-Pad: " + b"p" * 4000] * (MAX_HEADER // 4000 + 2)), {431}


@st.composite
def ranges(draw: st.DrawFn, size: int) -> str:
    n = st.integers(0, size + 10).map(str) | st.sampled_from(["9" * 30, "00", ""])
    spec = draw(
        st.one_of(
            st.tuples(n, st.just("-"), n).map("".join),
            st.tuples(st.just("-"), n).map("".join),
            st.sampled_from(["abc", "1-2-3", "--", " 1 - 2", "0x10-", "+1-2", "1-+2", "١-٢"]),
        )
    )
    specs = [spec] + [
        draw(st.tuples(n, st.just("-"), n).map("".join)) for _ in range(draw(st.integers(0, 2)))
    ]
    unit = draw(st.sampled_from(["bytes", "bytes", "Bytes", "items", "bytes "]))
    return unit + "=" + ",".join(specs)


def expected_range(value: str, size: int) -> tuple[int, int] | int | None:
    """The oracle for Range (written apart from parse_range): span, None (whole) or 416."""
    unit, _, specs = value.partition("=")
    if unit.strip().lower() != "bytes":
        return None
    spans = []
    for spec in specs.split(","):
        a, dash, b = spec.strip(" \t").partition("-")
        ok = all(x == "" or (x.isascii() and x.isdigit()) for x in (a, b))
        if not dash or not ok or (a == "" and b == ""):
            return 416
        if a == "":
            if int(b) > 0 and size:
                spans.append((max(0, size - int(b)), size))
        elif b != "" and int(b) < int(a):
            return 416
        elif int(a) < size:
            spans.append((int(a), min(size - 1, int(b) if b else size - 1) + 1))
    if not spans:
        return 416
    return spans[0] if len(spans) == 1 else None


# ---------------------------------------------------------------- targets


def _send_slowly(s: socket.socket, raw: bytes, cuts: list[int], pause_s: float) -> None:
    pos = 0
    for c in [*sorted(set(cuts)), len(raw)]:
        if c > pos:
            s.sendall(raw[pos:c])
            pos = c
            time.sleep(pause_s)


def _check_alive(sv: Served) -> None:
    with socket.create_connection(("127.0.0.1", sv.server.port), timeout=10) as s:
        s.sendall(f"GET /{MANIFEST} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        r = read_response(s.makefile("rb"))
    assert r is not None and r.status == 200 and r.body == sv.manifest


@fuzz(120)
@given(data=st.data())
def test_fuzz_builtin_requests_over_a_socket(served: Served, data: st.DataObject) -> None:
    sv = served
    case = data.draw(cases(sv.obj, len(sv.body)), label="case")
    raw = case.raw()
    cuts = data.draw(st.lists(st.integers(0, len(raw)), max_size=4), label="cuts")
    pause = data.draw(st.sampled_from([0.0, 0.0, 0.002]), label="pause_s")
    pipelined = f"GET {sv.obj} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
    with socket.create_connection(("127.0.0.1", sv.server.port), timeout=10) as s:
        _send_slowly(s, raw + pipelined, cuts, pause)
        f = s.makefile("rb")
        first = read_response(f, head_only=case.method == "HEAD" and not case.defects)
        assert first is not None, "connection dropped without an answer"
        if case.defects:
            assert first.status in case.defects, (first.status, case.defects, raw[:300])
            assert first.headers["connection"] == "close"
            assert read_response(f) is None  # an error closes: the pipelined GET is not read
        else:
            _check_semantics(sv, case, first)
            second = read_response(f)
            if case.keep:
                assert second is not None and second.status == 200 and second.body == sv.body
            else:
                assert second is None
    _check_alive(sv)


def _check_semantics(sv: Served, case: Case, r: Response) -> None:
    if case.method not in ("GET", "HEAD"):
        assert r.status == 405 and r.headers["allow"] == "GET, HEAD"
        return
    if case.kind == "missing":
        assert r.status == 404
        return
    body = sv.body if case.kind == "object" else sv.manifest
    if case.method == "HEAD":
        assert (r.status, r.body, r.headers["content-length"]) == (200, b"", str(len(body)))
        return
    want = expected_range(case.range_value, len(body)) if case.range_value else None
    if want == 416:
        assert r.status == 416 and r.headers["content-range"] == f"bytes */{len(body)}"
    elif isinstance(want, tuple):
        a, b = want
        assert r.status == 206 and r.body == body[a:b]
        assert r.headers["content-range"] == f"bytes {a}-{b - 1}/{len(body)}"
    else:
        assert r.status == 200 and r.body == body
    assert r.headers["connection"] == ("keep-alive" if case.keep else "close")


@fuzz(300)
@given(st.binary(max_size=2000) | st.lists(st.binary(max_size=60), max_size=40).map(b"\r\n".join))
def test_fuzz_parse_head_raises_only_http_errors(head: bytes) -> None:
    """Random bytes and random field lists: an HttpError or a request, nothing else."""
    try:
        req = parse_head(head)
    except HttpError as e:
        assert e.status in (400, 414, 431, 505)
        assert e.target.isascii() and e.target.isprintable()
        return
    assert b"\0" not in req.fs_path and req.fs_path.startswith(b"/")


@fuzz(300)
@given(st.integers(0, 1 << 40) | st.integers(0, 20), st.data())
def test_fuzz_parse_range_matches_the_oracle(size: int, data: st.DataObject) -> None:
    value = data.draw(ranges(size) | st.text(max_size=40), label="range")
    try:
        got: tuple[int, int] | int | None = parse_range(value, size)
    except HttpError as e:
        got = e.status
    assert got == expected_range(value, size)
    if isinstance(got, tuple):
        assert 0 <= got[0] < got[1] <= size


# ---------------------------------------------------------------- exact cases, slow senders


def _exchange(port: int, raw: bytes) -> Response | None:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(raw)
        return read_response(s.makefile("rb"))


# each: the request, the status the builtin server answers, and whether nginx answers the same
EXACT = [
    (b"GET /data/00/%00 HTTP/1.1\r\nHost: x\r\n\r\n", 400, True),
    (b"GET /data/00/%00x HTTP/1.0\r\n\r\n", 400, True),
    (b"GET /" + b"a" * (MAX_LINE + 10) + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414, True),
    (b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505, True),
    (b"GET * HTTP/1.1\r\nHost: x\r\n\r\n", 400, True),
    (b"GET /x\x01 HTTP/1.1\r\nHost: x\r\n\r\n", 400, True),
    (b"GET /x HTTP/1.1\r\n\r\n", 400, True),
    (b"GET /%zz HTTP/1.1\r\nHost: x\r\n\r\n", 400, True),
    (b"GET / HTTP/1.1\r\nHost: x\r\nX: a\x00b\r\n\r\n", 400, True),
    (b"GET /x HTTP/1.1\nHost: x\n\n", 404, True),
    # nginx answers 400 (header buffer) where this server says 431 (RFC 6585)
    (b"GET / HTTP/1.1\r\nHost: x\r\nX: " + b"a" * (MAX_LINE + 10) + b"\r\n\r\n", 431, False),
    # nginx reads and drops a request body; this server takes none
    (b"GET /x HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nabcde", 400, False),
]


@pytest.mark.parametrize(("raw", "status", "_nginx"), EXACT, ids=range(len(EXACT)))
def test_malformed_requests_get_their_status_and_the_server_keeps_serving(
    served: Served, raw: bytes, status: int, _nginx: bool
) -> None:
    r = _exchange(served.server.port, raw)
    assert r is not None and r.status == status
    _check_alive(served)


def test_nul_request_is_400_with_no_traceback(
    served: Served, capsys: pytest.CaptureFixture[str]
) -> None:
    r = _exchange(served.server.port, b"GET /data/00/%00 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert r is not None and (r.status, r.body) == (400, b"400 Bad Request\n")
    _check_alive(served)
    err = capsys.readouterr().err
    assert "Traceback" not in err and "null byte" not in err


@pytest.mark.tools("nginx")
def test_builtin_and_nginx_agree_on_malformed_requests(served: Served) -> None:
    from cvmfs_modelio.sim.server import serve

    with serve(served.store, server="nginx") as srv:
        port = int(srv.url.rsplit(":", 1)[1])
        for raw, status, same in EXACT:
            r = _exchange(port, raw)
            assert r is not None
            assert (r.status == status) == same, (raw[:60], r.status, status)


def test_slow_sender_is_dropped_at_the_header_deadline(served: Served) -> None:
    """A client trickling a head (slowloris) loses its connection after header_timeout_s;
    one that stays idle after an answer after idle_timeout_s; others are served meanwhile."""
    srv = served.server
    old = srv.header_timeout_s, srv.idle_timeout_s
    srv.header_timeout_s, srv.idle_timeout_s = 0.5, 0.5
    try:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
            sent = 0
            for c in b"GET / HTTP/1.1\r\nX-" + b"a" * 200:
                if select.select([s], [], [], 0)[0]:
                    break  # readable: the server closed (EOF)
                try:
                    s.sendall(bytes([c]))
                except OSError:
                    break
                sent += 1
                _check_alive(served)
                time.sleep(0.05)
            assert s.recv(100) == b"", "the slow sender got an answer"
            assert 5 <= sent < 100, sent  # dropped after about 0.5 s of trickling
        with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
            s.sendall(f"GET /{MANIFEST} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            f = s.makefile("rb")
            r = read_response(f)
            assert r is not None and r.status == 200
            assert read_response(f) is None  # closed once idle for idle_timeout_s
    finally:
        srv.header_timeout_s, srv.idle_timeout_s = old


def test_connection_flood_beyond_the_limit_gets_503(served: Served) -> None:
    srv = served.server
    old = srv.max_connections
    srv.max_connections = 4
    held: list[socket.socket] = []
    try:
        for _ in range(4):
            held.append(socket.create_connection(("127.0.0.1", srv.port), timeout=10))
        deadline = time.monotonic() + 10
        while len(srv._conns) < 4 and time.monotonic() < deadline:
            time.sleep(0.01)
        with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
            r = read_response(s.makefile("rb"))
            assert r is not None and r.status == 503
    finally:
        for s in held:
            s.close()
        srv.max_connections = old
    deadline = time.monotonic() + 10
    while srv._conns and time.monotonic() < deadline:
        time.sleep(0.01)
    _check_alive(served)


@pytest.mark.parametrize("rtt_ms", [0.0, 2.0], ids=["splice", "paced"])
def test_wan_emulator_relays_malformed_requests_and_keeps_serving(
    served: Served, rtt_ms: float
) -> None:
    """The WAN emulator parses nothing: every malformed request reaches the stratum, whose
    status comes back; abusive connections (garbage, half-open) do not stop others."""
    with NetemProxy("127.0.0.1", served.server.port, rtt_ms=rtt_ms) as wan:
        for raw, status, _ in EXACT:
            r = _exchange(wan.port, raw)
            assert r is not None and r.status == status, raw[:60]
        junk = [socket.create_connection(("127.0.0.1", wan.port), timeout=10) for _ in range(8)]
        try:
            for i, s in enumerate(junk):
                s.sendall(bytes(range(256)) * 4 if i % 2 else b"GET /" + b"x" * 100)
            r = _exchange(wan.port, f"GET {served.obj} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            assert r is not None and r.status == 200 and r.body == served.body
        finally:
            for s in junk:
                s.close()


def test_wan_emulator_with_its_upstream_down_forgets_refused_clients() -> None:
    probe = socket.create_server(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens on port now
    with NetemProxy("127.0.0.1", port) as wan:
        for _ in range(20):
            with socket.create_connection(("127.0.0.1", wan.port), timeout=10) as s:
                assert s.recv(10) == b""  # closed: the upstream refused
        deadline = time.monotonic() + 10
        while wan._conns and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not wan._conns
