"""The builtin stratum: a small threaded HTTP/1.1 file server for an emulated store.

Why not ``http.server``: its per-request header parsing (email.parser) costs more than a
whole small-object round trip through nginx.  This server parses only the request line
and the ``Connection`` header, answers ``GET``/``HEAD`` with ``Content-Length`` and
``application/octet-stream``, keeps connections alive (HTTP/1.1), sends bodies with
``os.sendfile`` (no copy through Python, GIL released), and logs every request.
Cache headers follow the CVMFS stratum recommendations (data objects long-lived, the
manifest 61 s) so that a squid in front caches as at a real site.
"""

from __future__ import annotations

import contextlib
import dataclasses
import email.utils
import os
import re
import socket
import stat
import struct
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, unquote_to_bytes

from cvmfs_modelio.sim.faults import FaultRule, FaultSet
from cvmfs_modelio.sim.listener import LoopbackListener
from cvmfs_modelio.sim.reqlog import RequestLog
from cvmfs_modelio.sim.store import MANIFEST

MAX_HEADER = 64 * 1024  # a request head (line and fields) longer than this: 431
MAX_LINE = 8 * 1024  # a request line longer than this: 414 (nginx's large_client_header_buffers)
HEADER_TIMEOUT_S = 30.0  # a started request head must be complete within this (slowloris)
IDLE_TIMEOUT_S = 75.0  # a keep-alive connection idle this long is closed (nginx's default)
SEND_TIMEOUT_S = 60.0  # a client that reads nothing of an answer this long is dropped
MAX_CONNECTIONS = 1024  # more open connections than this: 503 and close (bounded threads)
LINGER_S = 1.0  # after an error answer, read (and drop) what the client still sends this long
SMALL_BODY = 64 * 1024  # bodies up to this size go out in one send() with the headers
SMALL_CACHE_BYTES = 256 * 1024 * 1024  # small bodies kept in memory, at most this much
DATA_MAX_AGE_S = 259200  # 3 days, as recommended for a stratum's data/ objects
MANIFEST_MAX_AGE_S = 61
_REASONS = {
    200: "OK",
    206: "Partial Content",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    414: "URI Too Long",
    416: "Range Not Satisfiable",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
    505: "HTTP Version Not Supported",
}
_TCHAR = frozenset(b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")


class _Date:
    """The ``Date`` header value, formatted at most once per second."""

    def __init__(self) -> None:
        self._sec = -1
        self._text = ""

    def now(self) -> str:
        sec = int(time.time())
        if sec != self._sec:
            self._text = email.utils.formatdate(sec, usegmt=True)
            self._sec = sec
        return self._text


class BuiltinServer(LoopbackListener):
    """Serve the files under ``root`` on 127.0.0.1:``port`` (0: any free port)."""

    def __init__(
        self,
        root: str | os.PathLike[str],
        port: int = 0,
        faults: FaultSet | None = None,
        log: RequestLog | None = None,
    ) -> None:
        self.root = Path(root).resolve()
        self._root_s = str(self.root)
        self._small: dict[str, tuple[tuple[int, int, int], str, bytes]] = {}
        self._small_bytes = 0
        self.faults = faults or FaultSet()
        self.log = log or RequestLog({"server": "builtin"})
        super().__init__(port, name="http-accept")
        self._date = _Date()
        # instance attributes so that a test can shorten them
        self.header_timeout_s = HEADER_TIMEOUT_S
        self.idle_timeout_s = IDLE_TIMEOUT_S
        self.send_timeout_s = SEND_TIMEOUT_S
        self.max_connections = MAX_CONNECTIONS

    def start(self) -> BuiltinServer:
        self._start_accepting()
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop accepting, wake every connection (including slow faults) and join all threads."""
        self._shutdown(timeout_s, close_conns=False)

    # ------------------------------------------------------------------ plumbing

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                full = len(self._conns) >= self.max_connections
            if full:
                # Bounded threads and memory under a connection flood: refuse at once,
                # without blocking the accept loop on a client that does not read.
                with contextlib.suppress(OSError):
                    conn.send(self._head(503, 0, keep=False), socket.MSG_DONTWAIT)
                conn.close()
                continue
            t = threading.Thread(target=self._serve_conn, args=(conn,), daemon=True)
            with self._lock:
                if self._stop.is_set():
                    conn.close()
                    return
                self._conns.add(conn)
                self._threads.add(t)
            t.start()

    def _serve_conn(self, conn: socket.socket) -> None:
        try:
            # A client that stops reading an answer is dropped after SEND_TIMEOUT_S
            # (kernel timeout: the socket stays blocking, as os.sendfile needs).
            _set_timeout(conn, socket.SO_SNDTIMEO, self.send_timeout_s)
            buf = bytearray()
            while not self._stop.is_set():
                t0 = time.monotonic_ns()
                try:
                    got = self._read_head(conn, buf)
                    if got is None:
                        return
                    t0 = time.monotonic_ns()
                    req = parse_head(got)
                except HttpError as e:
                    self._simple(conn, e.status, keep=False)
                    self._log(e.target, t0, 0, e.status)
                    _linger(conn)
                    return
                path, status, nbytes, aux, keep = self._handle(conn, req)
                self._log(path, t0, nbytes, status, aux)
                if not keep:
                    return
        except OSError:
            return  # client went away, timed out, or shutdown woke us
        finally:
            with self._lock:
                self._conns.discard(conn)
                self._threads.discard(threading.current_thread())
            conn.close()

    def _log(self, path: str, t0: int, nbytes: int, status: int, aux: int = 0) -> None:
        self.log.add(
            path,
            t0,
            time.monotonic_ns() - t0,
            nbytes,
            status,
            aux,
            os.getpid(),
            threading.get_native_id(),
        )

    def _read_head(self, conn: socket.socket, buf: bytearray) -> bytes | None:
        """The next request head from ``buf`` and the connection (consumed from ``buf``).

        None: the client closed, stayed idle IDLE_TIMEOUT_S, or did not finish a started
        head within HEADER_TIMEOUT_S (a slow sender).  Raises HttpError(414/431) as soon as
        the request line or the head is too long, without waiting for its end.
        """
        scan = 0
        deadline: float | None = None
        while True:
            # blank lines before a request line are ignored (RFC 9112, 2.2)
            skip = 0
            while skip < len(buf) and buf[skip] in b"\r\n":
                skip += 1
            if skip:
                del buf[:skip]
                scan = 0
            end, sep = _head_end(buf, scan)
            if end >= 0:
                head = bytes(buf[:end])
                del buf[: end + sep]
                return head
            nl = buf.find(b"\n")
            line = len(buf) if nl < 0 else nl
            if line > MAX_LINE + 1:
                raise HttpError(414, _shown(bytes(buf[:200])))
            if len(buf) > MAX_HEADER:
                raise HttpError(431, _shown(bytes(buf[:200])))
            # only the new bytes (and 2 before them) can complete the blank line: a slow
            # sender must not make every received byte rescan the whole head
            scan = max(0, len(buf) - 2)
            now = time.monotonic()
            if deadline is None and buf:
                deadline = now + self.header_timeout_s
            wait = self.idle_timeout_s if deadline is None else deadline - now
            if wait <= 0:
                return None
            _set_timeout(conn, socket.SO_RCVTIMEO, wait)
            data = conn.recv(65536)
            if not data:
                return None
            if deadline is None:
                deadline = time.monotonic() + self.header_timeout_s
            buf += data

    def _simple(
        self, conn: socket.socket, status: int, keep: bool, extra: str = "", head: bool = False
    ) -> int:
        """A status answer with a one-line body; ``head``: the answer to a HEAD, which has
        the body's Content-Length but no body (else a pipelined answer would be misread)."""
        body = f"{status} {_REASONS[status]}\n".encode()
        conn.sendall(self._head(status, len(body), keep, extra) + (b"" if head else body))
        return 0 if head else len(body)

    def _head(self, status: int, length: int, keep: bool, extra: str = "") -> bytes:
        return (
            f"HTTP/1.1 {status} {_REASONS[status]}\r\n"
            f"Server: cvmfs-modelio\r\n"
            f"Date: {self._date.now()}\r\n"
            f"Content-Type: application/octet-stream\r\n"
            f"Content-Length: {length}\r\n"
            f"{extra}"
            f"Connection: {'keep-alive' if keep else 'close'}\r\n\r\n"
        ).encode()

    # ------------------------------------------------------------------ requests

    def _handle(self, conn: socket.socket, req: Request) -> tuple[str, int, int, int, bool]:
        """Answer one request; returns (path, status, body bytes, fault code, keep alive)."""
        method, path, keep = req.method, req.path, req.keep
        head = method == "HEAD"
        if method not in ("GET", "HEAD"):
            return path, 405, self._simple(conn, 405, keep, "Allow: GET, HEAD\r\n"), 0, keep
        fault = self.faults.pick(path)
        if fault is not None:
            if fault.kind in ("404", "500"):
                status = int(fault.kind)
                answer = self._simple(conn, status, keep, head=head)
                return path, status, answer, fault.code, keep
            if fault.kind == "slow" and self._stop.wait(fault.delay_s):
                return path, 0, 0, fault.code, False
            if fault.kind == "silent" and not head:
                self._hold_silent(conn)
                return path, 0, 0, fault.code, False
            if fault.kind == "endless" and not head:
                return path, 200, self._send_endless(conn, req.fs_path), fault.code, False
            if fault.kind == "other":
                swapped = self._other_object(req.fs_path)
                if swapped is not None:
                    req = dataclasses.replace(req, fs_path=swapped)
        elif method == "GET" and req.range is None:
            hit = self._cached(path)
            if hit is not None:
                extra, body = hit
                conn.sendall(self._head(200, len(body), keep, extra) + body)
                return path, 200, len(body), 0, keep
        f = self._open(req.fs_path)
        if f is None:
            return path, 404, self._simple(conn, 404, keep, head=head), 0, keep
        with f:
            size = os.fstat(f.fileno()).st_size
            extra = self._cache_headers(path, os.fstat(f.fileno()).st_mtime)
            code = fault.code if fault is not None else 0
            if method == "HEAD":
                conn.sendall(self._head(200, size, keep, extra))
                return path, 200, 0, code, keep
            if fault is None and req.range is not None:
                try:
                    span = parse_range(req.range, size)
                except HttpError as e:
                    cr = f"Content-Range: bytes */{size}\r\n"
                    return path, e.status, self._simple(conn, e.status, keep, cr), 0, keep
                if span is not None:
                    first, stop = span
                    extra += f"Content-Range: bytes {first}-{stop - 1}/{size}\r\n"
                    conn.sendall(self._head(206, stop - first, keep, extra), socket.MSG_MORE)
                    sent = _sendfile(conn, f.fileno(), stop - first, first)
                    return path, 206, sent, 0, keep and sent == stop - first
            if fault is not None and fault.kind == "corrupt":
                bad = bytearray(f.read())
                for i in {0, len(bad) // 2, len(bad) - 1} if bad else set():
                    bad[i] ^= 0xFF
                conn.sendall(self._head(200, size, keep, extra) + bad)
                return path, 200, len(bad), code, keep
            if fault is not None and fault.kind in ("long", "short"):
                body = f.read()
                told = size + 4096 if fault.kind == "long" else size // 2
                conn.sendall(self._head(200, told, keep, extra) + body)
                if fault.kind == "long":
                    self._hold_silent(conn)
                    return path, 200, len(body), code, False
                return path, 200, len(body), code, keep
            if fault is not None and fault.kind == "reset":
                conn.sendall(self._head(200, size, keep, extra))
                _reset(conn)
                return path, 200, 0, code, False
            count = size // 2 if fault is not None and fault.kind == "truncate" else size
            if count <= SMALL_BODY:
                # one send for headers and body: cheaper than sendfile for small objects
                body = f.read(count)
                conn.sendall(self._head(200, size, keep, extra) + body)
                if fault is None:
                    self._remember(path, f.fileno(), extra, body)
                if count < size:
                    conn.shutdown(socket.SHUT_WR)
                    return path, 200, len(body), code, False
                return path, 200, len(body), code, keep
            # MSG_MORE: the kernel sends the headers together with the first body bytes
            conn.sendall(self._head(200, size, keep, extra), socket.MSG_MORE)
            sent = _sendfile(conn, f.fileno(), count)
            if count < size:
                conn.shutdown(socket.SHUT_WR)
                return path, 200, sent, code, False
            return path, 200, sent, code, keep

    def _cached(self, path: str) -> tuple[str, bytes] | None:
        """A small object's (headers, body) if it is cached and unchanged on disk."""
        hit = self._small.get(path)
        if hit is None:
            return None
        key, extra, body = hit
        try:
            st = os.stat(self._root_s + path, follow_symlinks=False)
        except OSError:
            return None
        if (st.st_ino, st.st_size, st.st_mtime_ns) != key:
            return None
        return extra, body

    def _remember(self, path: str, fd: int, extra: str, body: bytes) -> None:
        # Objects are content-addressed and never rewritten, but a test may damage one on
        # disk: the entry is keyed by inode, size and mtime and checked on every hit.
        st = os.fstat(fd)
        if st.st_size != len(body) or self._small_bytes + len(body) > SMALL_CACHE_BYTES:
            return
        with self._lock:
            old = self._small.get(path)
            self._small_bytes += len(body) - (len(old[2]) if old else 0)
            self._small[path] = ((st.st_ino, st.st_size, st.st_mtime_ns), extra, body)

    def _open(self, path: bytes) -> _File | None:
        rel = path.lstrip(b"/")
        segs = rel.split(b"/")
        if not rel or b"\0" in rel or any(s in (b"", b".", b"..") for s in segs):
            return None
        try:
            fd = os.open(
                os.fsencode(self._root_s) + b"/" + rel, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW
            )
        except OSError:
            return None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            return None
        return _File(fd)

    def _cache_headers(self, path: str, mtime: float) -> str:
        age = MANIFEST_MAX_AGE_S if path.endswith(MANIFEST) else DATA_MAX_AGE_S
        lm = email.utils.formatdate(mtime, usegmt=True)
        return f"Cache-Control: max-age={age}\r\nLast-Modified: {lm}\r\n"

    # ------------------------------------------------------------------ faults

    def _hold_silent(self, conn: socket.socket) -> None:
        """Send nothing more; return when the client closes, or the server stops."""
        with contextlib.suppress(OSError):
            while not self._stop.is_set():
                _set_timeout(conn, socket.SO_RCVTIMEO, 0.2)
                try:
                    if not conn.recv(65536):
                        return
                except (TimeoutError, BlockingIOError):  # SO_RCVTIMEO: EAGAIN
                    continue

    def _send_endless(self, conn: socket.socket, fs_path: bytes) -> int:
        """A read-until-close answer whose body never ends (until the client gives up)."""
        f = self._open(fs_path)
        if f is None:
            return self._simple(conn, 404, keep=False)
        with f:
            start = f.read(2)
        head = self._head(200, 0, keep=False).replace(b"Content-Length: 0\r\n", b"")
        block = b"\x00\x00\x00\xff\xff" * 13107  # empty stored deflate blocks, 64 KiB
        sent = 0
        with contextlib.suppress(OSError):
            conn.sendall(head + start)
            sent = len(start)
            while not self._stop.is_set():
                conn.sendall(block)
                sent += len(block)
        return sent

    def _other_object(self, fs_path: bytes) -> bytes | None:
        """The first other object of the store (name order) with the same suffix."""
        name = os.fsdecode(fs_path).lstrip("/")
        if not name.startswith("data/"):
            return None
        hexname = name[5:].replace("/", "")
        suffix = hexname[40:]
        data = self.root / "data"
        for d in sorted(p for p in data.iterdir() if p.is_dir()):
            for obj in sorted(d.iterdir()):
                cand = d.name + obj.name
                if cand != hexname and cand[40:] == suffix and obj.is_file():
                    return os.fsencode(f"/data/{d.name}/{obj.name}")
        return None

    def set_faults(self, rules: list[FaultRule]) -> None:
        self.faults.set(rules)


class _File:
    """An owned file descriptor (closed on exit) with a whole-file read."""

    def __init__(self, fd: int) -> None:
        self._fd = fd

    def fileno(self) -> int:
        return self._fd

    def read(self, size: int = -1) -> bytes:
        """The first ``size`` bytes (all if negative)."""
        if size < 0:
            size = os.fstat(self._fd).st_size
        parts, pos = [], 0
        while pos < size:
            b = os.pread(self._fd, size - pos, pos)
            if not b:
                break
            parts.append(b)
            pos += len(b)
        return b"".join(parts)

    def __enter__(self) -> _File:
        return self

    def __exit__(self, *exc: object) -> None:
        os.close(self._fd)


def request_path(target: str) -> str:
    """The decoded path of an origin-form or absolute-form (proxy) request target."""
    if target.startswith(("http://", "https://")):
        rest = target.split("://", 1)[1]
        slash = rest.find("/")
        target = rest[slash:] if slash >= 0 else "/"
    target = target.split("?", 1)[0]
    return unquote(target) if "%" in target else target


class HttpError(Exception):
    """A request answered with ``status`` and then closed; ``target`` is what is logged."""

    def __init__(self, status: int, target: str = "") -> None:
        super().__init__(f"{status} {_REASONS[status]}: {target}")
        self.status = status
        self.target = target


@dataclass(frozen=True)
class Request:
    """One parsed request head.  ``path``: the decoded path as logged and matched by faults
    (non-UTF-8 bytes shown as ``\\xNN``); ``fs_path``: the same path as bytes, to open."""

    method: str
    path: str
    fs_path: bytes
    keep: bool
    range: str | None


def parse_head(head: bytes) -> Request:
    """Parse a request head (request line and header fields, without the blank line).

    Strict where a lax parser would act on a misunderstanding (RFC 9112): a malformed
    request line, target, field or framing is HttpError(400); a request line longer than
    MAX_LINE 414, a field longer than MAX_LINE or a head longer than MAX_HEADER 431, an HTTP
    version other than 1.0/1.1 505.  Bodies are not accepted (nothing here takes one): a
    non-zero Content-Length or any Transfer-Encoding is 400.
    """
    lines = [ln[:-1] if ln.endswith(b"\r") else ln for ln in head.split(b"\n")]
    line = lines[0]
    shown = _shown(line[:200])
    if len(line) > MAX_LINE:
        raise HttpError(414, shown)
    if len(head) > MAX_HEADER:
        raise HttpError(431, shown)
    parts = line.split(b" ")
    if len(parts) != 3:
        raise HttpError(400, shown)
    method_b, target, version = parts
    if not method_b or not _TCHAR.issuperset(method_b):
        raise HttpError(400, shown)
    if re.fullmatch(rb"HTTP/[0-9]\.[0-9]", version) is None:
        raise HttpError(400, shown)
    if version not in (b"HTTP/1.0", b"HTTP/1.1"):
        raise HttpError(505, shown)
    fs_path = _target_path(target, shown)
    path = fs_path.decode("utf-8", "backslashreplace")
    http11 = version == b"HTTP/1.1"
    keep = http11
    hosts = 0
    lengths: set[bytes] = set()
    rng: str | None = None
    for field in lines[1:]:
        if len(field) > MAX_LINE:
            raise HttpError(431, path)
        if field[:1] in (b" ", b"\t"):
            raise HttpError(400, path)  # obsolete line folding
        name, colon, raw = field.partition(b":")
        if not colon or not name or not _TCHAR.issuperset(name):
            raise HttpError(400, path)
        value = raw.strip(b" \t")
        if any((c < 0x20 and c != 0x09) or c == 0x7F for c in value):
            raise HttpError(400, path)  # NUL, CR or another control byte in a field value
        lname = name.lower()
        if lname == b"host":
            hosts += 1
        elif lname == b"connection":
            tokens = {t.strip(b" \t").lower() for t in value.split(b",")}
            if b"close" in tokens:
                keep = False
            elif b"keep-alive" in tokens:
                keep = True
        elif lname == b"content-length":
            lengths.update(v.strip(b" \t") for v in value.split(b","))
        elif lname == b"transfer-encoding":
            raise HttpError(400, path)
        elif lname == b"range":
            if rng is not None:
                raise HttpError(400, path)  # two Range fields: which one was meant?
            rng = value.decode("latin-1")
    if hosts > 1 or (http11 and hosts == 0):
        raise HttpError(400, path)  # RFC 9112 3.2: exactly one Host in HTTP/1.1
    if lengths and lengths != {b"0"}:
        raise HttpError(400, path)
    return Request(method_b.decode("ascii"), path, fs_path, keep, rng)


def parse_range(value: str, size: int) -> tuple[int, int] | None:
    """The byte span [first, stop) a ``Range`` field value asks of a ``size``-byte body.

    None: serve the whole body with 200 (a unit other than ``bytes``, or several ranges:
    RFC 9110 lets a server ignore Range, and CVMFS clients never send one).  HttpError(416)
    when the value is malformed or no range overlaps the body, as nginx answers.
    """
    unit, eq, specs = value.partition("=")
    if not eq or unit.strip().lower() != "bytes":
        return None
    spans: list[tuple[int, int]] = []
    for spec in specs.split(","):
        first_s, dash, last_s = spec.strip(" \t").partition("-")
        if not dash or not _digits(first_s, empty=True) or not _digits(last_s, empty=True):
            raise HttpError(416)
        if not first_s:  # suffix: the last N bytes
            if not last_s:
                raise HttpError(416)
            n = _bounded_int(last_s)
            if n > 0 and size > 0:
                spans.append((max(0, size - n), size))
            continue
        first = _bounded_int(first_s)
        last = _bounded_int(last_s) if last_s else size - 1
        if last_s and last < first:
            raise HttpError(416)
        if first < size:
            spans.append((first, min(last, size - 1) + 1))
    if not spans:
        raise HttpError(416)
    return spans[0] if len(spans) == 1 else None


def _digits(s: str, *, empty: bool) -> bool:
    return (empty and not s) or (s.isascii() and s.isdigit())


def _bounded_int(digits: str) -> int:
    # int() of thousands of digits is slow (and refused above 4300): any number this long
    # is beyond every file, so it is clipped
    return int(digits) if len(digits) <= 18 else 1 << 62


def _target_path(target: bytes, shown: str) -> bytes:
    """The decoded path (bytes) of an origin-form or absolute-form target; 400 if malformed.

    Refused: bytes outside visible ASCII, a malformed %-escape, and a NUL or control byte
    once decoded (``/data/00/%00`` must not reach open(2)).  The query is dropped."""
    if any(c <= 0x20 or c >= 0x7F for c in target):
        raise HttpError(400, shown)
    low = target[:8].lower()
    if low.startswith((b"http://", b"https://")):
        rest = target.split(b"://", 1)[1]
        slash = rest.find(b"/")
        authority = rest if slash < 0 else rest[:slash]
        if not authority:
            raise HttpError(400, shown)
        target = rest[slash:] if slash >= 0 else b"/"
    elif not target.startswith(b"/"):
        raise HttpError(400, shown)  # "*", authority-form, relative: not for a file server
    target = target.split(b"?", 1)[0].split(b"#", 1)[0]
    if b"%" not in target:
        return target
    if re.search(rb"%(?![0-9A-Fa-f]{2})", target):
        raise HttpError(400, shown)
    path = unquote_to_bytes(target)
    if any(c < 0x20 or c == 0x7F for c in path):
        raise HttpError(400, shown)
    return path


def _shown(raw: bytes) -> str:
    """Bytes of a request as logged: printable ASCII as is, anything else escaped."""
    return raw.decode("latin-1").encode("unicode_escape").decode("ascii")


def _head_end(buf: bytearray, scan: int) -> tuple[int, int]:
    """(index where the head ends, length of the blank-line separator), or (-1, 0).

    A bare LF ends a line as CRLF does (RFC 9112 2.2 allows it; nginx accepts it)."""
    lf = buf.find(b"\n\n", scan)
    crlf = buf.find(b"\n\r\n", scan)
    if lf < 0 and crlf < 0:
        return -1, 0
    if crlf < 0 or 0 <= lf < crlf:
        return lf, 2
    return crlf, 3


def _set_timeout(conn: socket.socket, opt: int, seconds: float) -> None:
    """SO_RCVTIMEO / SO_SNDTIMEO: a blocking recv/send fails with EAGAIN after ``seconds``."""
    sec = max(seconds, 0.001)
    whole = int(sec)
    conn.setsockopt(socket.SOL_SOCKET, opt, struct.pack("ll", whole, int((sec - whole) * 1e6)))


def _linger(conn: socket.socket) -> None:
    """Close after an error answer without a reset: stop sending, then read and drop what
    the client still sends for LINGER_S (at most 1 MiB), so that the answer is not lost to
    an RST the kernel would send on closing with unread data."""
    with contextlib.suppress(OSError):
        conn.shutdown(socket.SHUT_WR)
        deadline = time.monotonic() + LINGER_S
        left = 1 << 20
        while left > 0:
            wait = deadline - time.monotonic()
            if wait <= 0:
                break
            _set_timeout(conn, socket.SO_RCVTIMEO, wait)
            data = conn.recv(65536)
            if not data:
                break
            left -= len(data)


def _sendfile(conn: socket.socket, fd: int, count: int, offset: int = 0) -> int:
    sent = 0
    out = conn.fileno()
    while sent < count:
        n = os.sendfile(out, fd, offset + sent, count - sent)
        if n == 0:
            break
        sent += n
    return sent


def _reset(conn: socket.socket) -> None:
    """Abort the connection with a TCP RST (SO_LINGER on, timeout 0) instead of a FIN."""
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()
