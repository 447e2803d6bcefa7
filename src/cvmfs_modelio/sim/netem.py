"""A user-space WAN emulator: a loopback TCP proxy adding latency and a bandwidth limit.

The kernel's netem qdisc is not available here, so this proxy stands in for it.  Model,
per direction (client->server and server->client are separate links, full duplex):

* the link serialises bytes at ``bandwidth`` bytes/s: a block of n bytes that arrives at
  time a starts when the link is free, ``s = max(a, link_free)``, and occupies it for
  ``n / bandwidth`` seconds;
* it is then delivered ``rtt/2`` later (propagation), so a request and its answer pay one
  full RTT between them, and a GET of S bytes takes at least ``rtt + S / bandwidth``.

The link is **shared by all connections** through the proxy by default (``shared=True``),
as a site's WAN link is shared by all of a client's parallel downloads; ``shared=False``
gives every connection its own link.  Each direction of a connection holds at most
``WINDOW`` bytes in flight (like a TCP window), so a fast sender is held back as on a real
slow link, and a long RTT limits one connection to about ``WINDOW / rtt`` as real TCP does.

With no limits (``rtt_ms=0, bandwidth=0``) bytes are moved with ``splice(2)`` through a
pipe, never copied into Python, so the proxy costs next to nothing.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from cvmfs_modelio.core.errors import UsageError
from cvmfs_modelio.sim.listener import LoopbackListener

WINDOW = 4 * 1024 * 1024
_BLOCK_LIMITED = 64 * 1024  # pacing granularity under a bandwidth limit
_BLOCK_FAST = 1024 * 1024
_PIPE_SIZE = 1024 * 1024


@dataclass
class _Link:
    """One direction of the emulated WAN: when is it free next (monotonic seconds)."""

    bandwidth: float
    free_at: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def transmit(self, now: float, n: int) -> float:
        """Serialise ``n`` bytes arriving at ``now``; returns when the last one is sent."""
        if self.bandwidth <= 0:
            return now
        with self.lock:
            start = max(now, self.free_at)
            self.free_at = start + n / self.bandwidth
            return self.free_at


class NetemProxy(LoopbackListener):
    """Listen on 127.0.0.1 (``port`` 0: any free port), forward to the upstream host:port.

    ``rtt_ms``: added round-trip time in milliseconds; ``bandwidth_bytes_per_s``: link rate
    per direction in bytes per second (0: unlimited); ``shared``: one link for all
    connections (default) or one per connection.  Use as a context manager.
    """

    def __init__(
        self,
        upstream_host: str,
        upstream_port: int,
        rtt_ms: float = 0.0,
        bandwidth_bytes_per_s: float = 0.0,
        *,
        shared: bool = True,
        port: int = 0,
    ) -> None:
        if rtt_ms < 0 or bandwidth_bytes_per_s < 0:
            raise UsageError("netem: rtt and bandwidth must not be negative")
        self.upstream = (upstream_host, upstream_port)
        self.rtt_ms = rtt_ms
        self.bandwidth = float(bandwidth_bytes_per_s)
        self.shared = shared
        self._down = _Link(self.bandwidth)
        self._up = _Link(self.bandwidth)
        super().__init__(port)
        self.connections = 0

    @property
    def limited(self) -> bool:
        return self.rtt_ms > 0 or self.bandwidth > 0

    def start(self) -> NetemProxy:
        self._start_accepting()
        return self

    def __enter__(self) -> NetemProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Close the listener and every connection, and join all threads."""
        self._shutdown(timeout_s, close_conns=True)

    # ------------------------------------------------------------------ plumbing

    def _spawn(self, target: Callable[..., None], *args: object) -> None:
        t = threading.Thread(target=self._run, args=(target, *args), daemon=True)
        with self._lock:
            self._threads.add(t)
        t.start()

    def _run(self, target: Callable[..., None], *args: object) -> None:
        try:
            target(*args)
        except OSError:
            pass
        finally:
            with self._lock:
                self._threads.discard(threading.current_thread())

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._sock.accept()
            except OSError:
                return
            self._spawn(self._connect, client)

    def _connect(self, client: socket.socket) -> None:
        with self._lock:
            self._conns.add(client)
        try:
            upstream = socket.create_connection(self.upstream, timeout=10)
        except OSError:
            # forget the client too: under a flood while the upstream is down, closed
            # sockets must not pile up in the set
            with self._lock:
                self._conns.discard(client)
            client.close()
            return
        upstream.settimeout(None)
        with self._lock:
            if self._stop.is_set():
                client.close()
                upstream.close()
                return
            self._conns.add(upstream)
            self.connections += 1
        for s in (client, upstream):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.shared:
            up, down = self._up, self._down
        else:
            up, down = _Link(self.bandwidth), _Link(self.bandwidth)
        done = threading.Barrier(2, action=lambda: self._close_pair(client, upstream))
        pump = self._pump_limited if self.limited else self._pump_splice
        self._spawn(pump, client, upstream, up, done)
        self._spawn(pump, upstream, client, down, done)

    def _close_pair(self, a: socket.socket, b: socket.socket) -> None:
        with self._lock:
            self._conns.discard(a)
            self._conns.discard(b)
        a.close()
        b.close()

    def _finish(self, dst: socket.socket, done: threading.Barrier) -> None:
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)
        with contextlib.suppress(threading.BrokenBarrierError):
            done.wait()

    def _pump_splice(
        self, src: socket.socket, dst: socket.socket, _link: _Link, done: threading.Barrier
    ) -> None:
        """Unlimited: move bytes socket -> pipe -> socket in the kernel."""
        r, w = os.pipe()
        try:
            with contextlib.suppress(OSError):
                fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, _PIPE_SIZE)
            sfd, dfd = src.fileno(), dst.fileno()
            while True:
                try:
                    n = os.splice(sfd, w, _BLOCK_FAST, flags=os.SPLICE_F_MOVE)
                except OSError:
                    n = 0
                if n == 0:
                    break
                while n:
                    m = os.splice(r, dfd, n, flags=os.SPLICE_F_MOVE)
                    n -= m
        except OSError:
            with contextlib.suppress(OSError):
                src.shutdown(socket.SHUT_RDWR)
        finally:
            os.close(r)
            os.close(w)
            self._finish(dst, done)

    def _pump_limited(
        self, src: socket.socket, dst: socket.socket, link: _Link, done: threading.Barrier
    ) -> None:
        """Delay and pace: a reader queues (deliver_at, bytes); this thread's writer sends."""
        q: deque[tuple[float, bytes]] = deque()
        cv = threading.Condition()
        queued = 0
        eof = False
        writer_gone = False
        half_rtt = self.rtt_ms / 2000.0
        # pace in blocks of about 1 ms of link time (64 KiB .. 1 MiB)
        block = (
            int(min(_BLOCK_FAST, max(_BLOCK_LIMITED, self.bandwidth / 1000)))
            if self.bandwidth > 0
            else _BLOCK_FAST
        )

        def reader() -> None:
            nonlocal queued, eof
            try:
                while True:
                    with cv:
                        while queued > WINDOW and not writer_gone:
                            cv.wait()
                    data = src.recv(block)
                    if not data:
                        break
                    at = link.transmit(time.monotonic(), len(data)) + half_rtt
                    with cv:
                        q.append((at, data))
                        queued += len(data)
                        cv.notify_all()
            except OSError:
                pass
            finally:
                with cv:
                    eof = True
                    cv.notify_all()

        t = threading.Thread(target=reader, daemon=True)
        t.start()
        try:
            while True:
                with cv:
                    while not q and not eof:
                        cv.wait()
                    if not q:
                        break
                    at, data = q[0]
                delay = at - time.monotonic()
                if delay > 0 and self._stop.wait(delay):
                    break
                dst.sendall(data)
                with cv:
                    q.popleft()
                    queued -= len(data)
                    cv.notify_all()
        except OSError:
            with contextlib.suppress(OSError):
                src.shutdown(socket.SHUT_RDWR)
        finally:
            with cv:
                writer_gone = True
                cv.notify_all()
            with contextlib.suppress(OSError):
                src.shutdown(socket.SHUT_RD)
            t.join()
            self._finish(dst, done)
