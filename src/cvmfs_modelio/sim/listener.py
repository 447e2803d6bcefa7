"""A threaded TCP listener on 127.0.0.1 that stops cleanly: the base of the builtin HTTP
server and of the WAN emulator (both accept connections and serve each on threads)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time


class LoopbackListener:
    """Listen on 127.0.0.1:``port`` (0: any free port); subclasses define ``_accept_loop``.

    Subclasses register every live socket in ``_conns`` and every worker thread in
    ``_threads`` (under ``_lock``), so that :meth:`stop` can wake and join them all.
    """

    def __init__(self, port: int, name: str | None = None) -> None:
        # name: the accept thread's name is "<name>-<port>"
        self._sock = socket.create_server(("127.0.0.1", port), backlog=512)
        self.port: int = self._sock.getsockname()[1]
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        self._threads: set[threading.Thread] = set()
        label = f"{name}-{self.port}" if name else None
        self._acceptor = threading.Thread(target=self._accept_loop, name=label, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept_loop(self) -> None:
        raise NotImplementedError

    def _start_accepting(self) -> None:
        self._acceptor.start()

    def _shutdown(self, timeout_s: float, close_conns: bool) -> None:
        """Stop accepting, shut every connection down (waking blocked threads), join the
        threads within ``timeout_s`` seconds in all; ``close_conns``: close them too."""
        self._stop.set()
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        if self._acceptor.is_alive():
            self._acceptor.join(timeout_s)
        with self._lock:
            conns, threads = list(self._conns), list(self._threads)
        for c in conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
        deadline = time.monotonic() + timeout_s
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
        if close_conns:
            for c in conns:
                c.close()
