"""Abusive HTTP clients for the loopback load test and bench/bench_hostile.py.

:class:`HostileLoad` keeps, until stopped, a mix of abusive connections open against
127.0.0.1:PORT (loopback only; bounded in count by the mix and in time by the caller):

* ``slowloris``: a started request head, one more byte every ``drip_s`` (reconnects when
  dropped), all driven by one thread;
* ``idle``: connections that send nothing;
* ``garbage``: a loop of connect, random bytes (NUL, CR/LF, high bytes), read, close;
* ``huge``: a loop of requests with a head beyond 64 KiB (431 expected);
* ``slow_reader``: a GET of a large object whose answer is never read.

:func:`legit_get` is the well-behaved client: one GET on a new connection, the answer read
whole; returns (latency in ns, status, body) or None when not served within the timeout.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections import Counter
from types import TracebackType

MIX_KINDS = ("slowloris", "idle", "garbage", "huge", "slow_reader")


class HostileLoad:
    def __init__(
        self, port: int, mix: dict[str, int], *, big_path: str = "/", drip_s: float = 0.5
    ) -> None:
        unknown = set(mix) - set(MIX_KINDS)
        if unknown:
            raise ValueError(f"unknown attack kinds {sorted(unknown)}")
        self.port, self.mix, self.big_path, self.drip_s = port, mix, big_path, drip_s
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._held: list[socket.socket] = []
        self.counts: Counter[str] = Counter()  # attack requests / bytes sent, by kind
        self._lock = threading.Lock()

    def _connect(self) -> socket.socket | None:
        try:
            return socket.create_connection(("127.0.0.1", self.port), timeout=5)
        except OSError:
            return None

    def _count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self.counts[key] += n

    def __enter__(self) -> HostileLoad:
        for _ in range(self.mix.get("idle", 0)):
            s = self._connect()
            if s is not None:
                self._held.append(s)
                self._count("idle")
        for _ in range(self.mix.get("slow_reader", 0)):
            s = self._connect()
            if s is not None:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                s.sendall(f"GET {self.big_path} HTTP/1.1\r\nHost: x\r\n\r\n".encode() * 4)
                self._held.append(s)
                self._count("slow_reader")
        if self.mix.get("slowloris", 0):
            self._spawn(self._slowloris, self.mix["slowloris"])
        for _ in range(self.mix.get("garbage", 0)):
            self._spawn(self._garbage)
        for _ in range(self.mix.get("huge", 0)):
            self._spawn(self._huge)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(30)
        for s in self._held:
            s.close()

    def _spawn(self, fn: object, *args: object) -> None:
        t = threading.Thread(target=fn, args=args, daemon=True)  # type: ignore[arg-type]
        t.start()
        self._threads.append(t)

    def _slowloris(self, n: int) -> None:
        socks: list[socket.socket | None] = [None] * n
        try:
            while not self._stop.is_set():
                for i in range(n):
                    s = socks[i]
                    try:
                        if s is None:
                            s = self._connect()
                            if s is None:
                                continue
                            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-a: ")
                            socks[i] = s
                            self._count("slowloris")
                        s.sendall(b"a")
                        self._count("slowloris_bytes")
                    except OSError:
                        if s is not None:
                            s.close()
                        socks[i] = None
                        self._count("slowloris_dropped")
                self._stop.wait(self.drip_s)
        finally:
            for s in socks:
                if s is not None:
                    s.close()

    def _garbage(self) -> None:
        while not self._stop.is_set():
            s = self._connect()
            if s is None:
                continue
            with s, contextlib.suppress(OSError):
                junk = os.urandom(int.from_bytes(os.urandom(2), "little") % 4096 + 1)
                s.sendall(junk + b"\r\n\x00\r\n\r\n")
                s.shutdown(socket.SHUT_WR)
                while s.recv(65536):
                    pass
            self._count("garbage")

    def _huge(self) -> None:
        head = b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X-Pad: " + b"p" * 4000 + b"\r\n"
        while not self._stop.is_set():
            s = self._connect()
            if s is None:
                continue
            with s, contextlib.suppress(OSError):
                s.sendall(head * 20 + b"\r\n")
                while s.recv(65536):
                    pass
            self._count("huge")


def legit_get(port: int, path: str, timeout_s: float = 10.0) -> tuple[int, int, bytes] | None:
    """One GET on a new connection: (latency ns, status, body), None if not served."""
    t0 = time.monotonic_ns()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as s:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            f = s.makefile("rb")
            status = int(f.readline().split(b" ")[1])
            length = 0
            while (h := f.readline()) not in (b"\r\n", b""):
                name, _, value = h.partition(b":")
                if name.lower() == b"content-length":
                    length = int(value)
            body = f.read(length)
    except (OSError, ValueError, IndexError):
        return None
    return time.monotonic_ns() - t0, status, body
