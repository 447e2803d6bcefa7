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

import email.utils
import os
import socket
import stat
import struct
import threading
import time
from pathlib import Path
from urllib.parse import unquote

from cvmfs_modelio.sim.faults import FaultRule, FaultSet
from cvmfs_modelio.sim.listener import LoopbackListener
from cvmfs_modelio.sim.reqlog import RequestLog
from cvmfs_modelio.sim.store import MANIFEST

MAX_HEADER = 64 * 1024
SMALL_BODY = 64 * 1024  # bodies up to this size go out in one send() with the headers
SMALL_CACHE_BYTES = 256 * 1024 * 1024  # small bodies kept in memory, at most this much
DATA_MAX_AGE_S = 259200  # 3 days, as recommended for a stratum's data/ objects
MANIFEST_MAX_AGE_S = 61
_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
}


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
            buf = b""
            while not self._stop.is_set():
                while b"\r\n\r\n" not in buf:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buf += data
                    if len(buf) > MAX_HEADER and b"\r\n\r\n" not in buf:
                        self._simple(conn, 431, keep=False)
                        return
                head, buf = buf.split(b"\r\n\r\n", 1)
                t0 = time.monotonic_ns()
                path, status, nbytes, aux, keep = self._handle(conn, head)
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
                if not keep:
                    return
        except OSError:
            return  # client went away, or shutdown woke us
        finally:
            with self._lock:
                self._conns.discard(conn)
                self._threads.discard(threading.current_thread())
            conn.close()

    def _simple(self, conn: socket.socket, status: int, keep: bool, extra: str = "") -> int:
        body = f"{status} {_REASONS[status]}\n".encode()
        conn.sendall(self._head(status, len(body), keep, extra) + body)
        return len(body)

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

    def _handle(self, conn: socket.socket, head: bytes) -> tuple[str, int, int, int, bool]:
        """Answer one request; returns (path, status, body bytes, fault code, keep alive)."""
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ")
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
            return "", 400, self._simple(conn, 400, keep=False), 0, False
        method, target, version = (p.decode("latin-1") for p in parts)
        keep = version == "HTTP/1.1"
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            lname = name.strip().lower()
            if lname == b"connection":
                v = value.strip().lower()
                keep = v != b"close" if version == "HTTP/1.1" else v == b"keep-alive"
            elif lname in (b"content-length", b"transfer-encoding") and value.strip() != b"0":
                return target, 400, self._simple(conn, 400, keep=False), 0, False
        path = request_path(target)
        if method not in ("GET", "HEAD"):
            return path, 405, self._simple(conn, 405, keep, "Allow: GET, HEAD\r\n"), 0, keep
        fault = self.faults.pick(path)
        if fault is not None:
            if fault.kind in ("404", "500"):
                status = int(fault.kind)
                return path, status, self._simple(conn, status, keep), fault.code, keep
            if fault.kind == "slow" and self._stop.wait(fault.delay_s):
                return path, 0, 0, fault.code, False
        elif method == "GET":
            hit = self._cached(path)
            if hit is not None:
                extra, body = hit
                conn.sendall(self._head(200, len(body), keep, extra) + body)
                return path, 200, len(body), 0, keep
        f = self._open(path)
        if f is None:
            return path, 404, self._simple(conn, 404, keep), 0, keep
        with f:
            size = os.fstat(f.fileno()).st_size
            extra = self._cache_headers(path, os.fstat(f.fileno()).st_mtime)
            code = fault.code if fault is not None else 0
            if method == "HEAD":
                conn.sendall(self._head(200, size, keep, extra))
                return path, 200, 0, code, keep
            if fault is not None and fault.kind == "corrupt":
                bad = bytearray(f.read())
                for i in {0, len(bad) // 2, len(bad) - 1} if bad else set():
                    bad[i] ^= 0xFF
                conn.sendall(self._head(200, size, keep, extra) + bad)
                return path, 200, len(bad), code, keep
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

    def _open(self, path: str) -> _File | None:
        rel = path.lstrip("/")
        segs = rel.split("/")
        if not rel or any(s in ("", ".", "..") for s in segs):
            return None
        try:
            fd = os.open(self._root_s + "/" + rel, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
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


def _sendfile(conn: socket.socket, fd: int, count: int) -> int:
    sent = 0
    out = conn.fileno()
    while sent < count:
        n = os.sendfile(out, fd, sent, count - sent)
        if n == 0:
            break
        sent += n
    return sent


def _reset(conn: socket.socket) -> None:
    """Abort the connection with a TCP RST (SO_LINGER on, timeout 0) instead of a FIN."""
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()
