"""``serve()``: an emulated stratum (builtin or nginx), optionally a squid site proxy in front.

    with serve(store, server="builtin", proxy="squid", faults=[FaultRule("P$", "500", 1)]) as srv:
        srv.url            # what clients use, http://127.0.0.1:PORT: the WAN emulator if
                           # one is asked for (rtt_ms/bandwidth/netem), else the stratum
        srv.origin_url     # the stratum itself (== srv.url without a WAN emulator)
        srv.proxy          # the site proxy, http://127.0.0.1:PORT, or None
        srv.requests()     # the stratum's request log (EventLog, HTTP_SERVER / HTTP_REQUEST)
        srv.proxy_requests()

A client fetches ``srv.url + "/data/..."``, through ``srv.proxy`` as an HTTP proxy if there
is one (as a CVMFS client with CVMFS_HTTP_PROXY does).  With ``rtt_ms``/``bandwidth`` a
user-space WAN emulator (:class:`NetemProxy`) sits in front of the stratum, so the squid
(if any) is on the client's side of the WAN, as at a real site.  Everything started here
is stopped on exit, also on exceptions.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from types import TracebackType

from cvmfs_modelio.core.errors import UsageError
from cvmfs_modelio.core.events import EventLog, write_event_file
from cvmfs_modelio.sim.builtin_http import BuiltinServer
from cvmfs_modelio.sim.faults import FaultRule, FaultSet
from cvmfs_modelio.sim.netem import NetemProxy
from cvmfs_modelio.sim.nginx import NginxServer
from cvmfs_modelio.sim.squid import SquidProxy
from cvmfs_modelio.sim.store import DATA, MANIFEST

SERVERS = ("builtin", "nginx")
PROXIES = ("squid",)


def largest_object(store: Path) -> int:
    """Size in bytes of the largest object file in the store (0 if none)."""
    biggest = 0
    data = store / DATA
    if data.is_dir():
        for sub in os.scandir(data):
            if sub.is_dir():
                for f in os.scandir(sub.path):
                    biggest = max(biggest, f.stat().st_size)
    return biggest


class ServerStack:
    """A running stratum (+ proxy, + WAN emulator); ``serve(...)`` is this class's public name.

    Use as a context manager (it starts on enter).  ``bandwidth`` in bytes per second
    (0: unlimited), ``rtt_ms`` in milliseconds (0: none); ``log``/``proxy_log``: event files
    written when the stack stops; ``netem``: put the WAN emulator in front even without
    limits (to measure its own cost).

    ``collapsed_forwarding``, ``proxy_max_object`` (bytes; None: twice the largest object,
    at least 64 MiB) and ``proxy_mem_mb`` configure the squid.

    ``port`` is the port clients use (``url``): the WAN emulator's when there is one, so a
    client given that port always pays the emulated WAN; the stratum behind it then listens
    on ``origin_port`` (0: any free port).  Without a WAN emulator the stratum listens on
    ``port`` and ``origin_port`` must be 0.
    """

    def __init__(
        self,
        store: str | os.PathLike[str],
        port: int = 0,
        server: str = "builtin",
        proxy: str | None = None,
        log: str | os.PathLike[str] | None = None,
        faults: Iterable[FaultRule] = (),
        rtt_ms: float = 0.0,
        bandwidth: int = 0,
        proxy_port: int = 0,
        proxy_log: str | os.PathLike[str] | None = None,
        netem: bool = False,
        origin_port: int = 0,
        collapsed_forwarding: bool | None = None,
        proxy_max_object: int | None = None,
        proxy_mem_mb: int = 256,
    ) -> None:
        self.store = Path(store)
        if not self.store.exists():
            raise UsageError(f"{self.store}: no such file or directory")
        if not (self.store / MANIFEST).is_file():
            raise UsageError(f"{self.store}: not a published store (no {MANIFEST})")
        if server not in SERVERS:
            raise UsageError(f"--server: {server!r} is not one of {', '.join(SERVERS)}")
        if proxy is not None and proxy not in PROXIES:
            raise UsageError(f"--proxy: {proxy!r} is not one of {', '.join(PROXIES)}")
        faults = list(faults)
        if faults and server != "builtin":
            raise UsageError("fault injection needs the builtin server")
        if rtt_ms < 0 or bandwidth < 0:
            raise UsageError("--rtt-ms and --bandwidth must not be negative")
        if not (math.isfinite(rtt_ms) and math.isfinite(bandwidth)):
            # NaN compares false to everything: it would silently mean "no WAN emulation"
            raise UsageError(f"--rtt-ms and --bandwidth must be finite, got {rtt_ms}, {bandwidth}")
        wan = bool(rtt_ms or bandwidth or netem)
        if origin_port and not wan:
            raise UsageError(
                "--origin-port: only with the WAN emulator (--rtt-ms, --bandwidth or --netem); "
                "without it the stratum listens on --port"
            )
        if origin_port and origin_port == port:
            raise UsageError(f"--origin-port {origin_port}: the same port as --port")
        self._wan = wan
        self.server_kind = server
        self.proxy_kind = proxy
        self._port = port
        self._origin_port = origin_port if wan else port
        self._proxy_port = proxy_port
        self._log_path = log
        self._proxy_log_path = proxy_log
        self._rtt_ms = rtt_ms
        self._bandwidth = bandwidth
        self._force_netem = netem
        self._collapsed = collapsed_forwarding
        self._proxy_max_object = proxy_max_object
        self._proxy_mem_mb = proxy_mem_mb
        self._faults = FaultSet()
        self._faults.set(faults)
        self._builtin: BuiltinServer | None = None
        self._nginx: NginxServer | None = None
        self._squid: SquidProxy | None = None
        self._netem: NetemProxy | None = None
        self._final: dict[str, EventLog] = {}  # logs kept when the stack stops
        self.url = ""
        self.proxy: str | None = None
        self.origin_url = ""

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> ServerStack:
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def _start(self) -> None:
        # Which option named the stratum's port, for the error message.
        oopt = "--origin-port" if self._wan else "--port"
        if self.server_kind == "builtin":
            try:
                self._builtin = BuiltinServer(self.store, self._origin_port, self._faults).start()
            except OSError as e:
                msg = f"{oopt} {self._origin_port}: cannot listen: {e.strerror}"
                raise UsageError(msg) from None
            self.origin_url = self._builtin.url
        else:
            self._nginx = NginxServer(self.store, self._origin_port)
            try:
                self._nginx.start()
            except RuntimeError as e:
                raise UsageError(f"--server nginx: {e}") from None
            self.origin_url = self._nginx.url
        self.url = self.origin_url
        if self._wan:
            host, port = self.origin_url.rsplit("/", 1)[-1].split(":")
            try:
                netem = NetemProxy(host, int(port), self._rtt_ms, self._bandwidth, port=self._port)
            except OSError as e:
                raise UsageError(f"--port {self._port}: cannot listen: {e.strerror}") from None
            self._netem = netem
            netem.start()
            self.url = netem.url
        if self.proxy_kind == "squid":
            max_obj = self._proxy_max_object or max(
                2 * largest_object(self.store), 64 * 1024 * 1024
            )
            self._squid = SquidProxy(
                max_obj,
                self._proxy_port,
                mem_mb=self._proxy_mem_mb,
                collapsed_forwarding=self._collapsed,
            )
            try:
                self._squid.start()
            except RuntimeError as e:
                raise UsageError(f"--proxy squid: {e}") from None
            self.proxy = self._squid.url

    def close(self) -> None:
        """Stop everything (proxy, WAN emulator, stratum), then write the logs if asked."""
        errors: list[BaseException] = []
        for stop in (self._stop_squid, self._stop_netem, self._stop_origin):
            try:
                stop()
            except Exception as e:
                errors.append(e)
        if errors:
            raise errors[0]

    def _stop_squid(self) -> None:
        if self._squid is not None:
            self._squid.stop()
            try:
                self._final["proxy"] = self._squid.requests()
                if self._proxy_log_path is not None:
                    write_event_file(self._proxy_log_path, self._final["proxy"])
            finally:
                self._squid.cleanup()
                self._squid = None

    def _stop_netem(self) -> None:
        if self._netem is not None:
            self._netem.stop()
            self._netem = None

    def _stop_origin(self) -> None:
        if self._builtin is not None:
            self._builtin.stop()
            self._final["origin"] = self._builtin.log.snapshot()
            self._builtin = None
            if self._log_path is not None:
                write_event_file(self._log_path, self._final["origin"])
        if self._nginx is not None:
            self._nginx.stop()
            try:
                self._final["origin"] = self._nginx.requests()
                if self._log_path is not None:
                    write_event_file(self._log_path, self._final["origin"])
            finally:
                self._nginx.cleanup()
                self._nginx = None

    def __enter__(self) -> ServerStack:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ------------------------------------------------------------------ logs, faults

    def requests(self, min_count: int = 0, timeout_s: float = 5.0) -> EventLog:
        """The stratum's request log; waits up to ``timeout_s`` for ``min_count`` records.

        Servers log a request after its last byte is sent, so a client that has just read
        a response may be a moment ahead of the log.  After the stack stopped: the final log.
        """
        return _wait(self._origin_log, min_count, timeout_s)

    def _origin_log(self) -> EventLog:
        if self._builtin is not None:
            return self._builtin.log.snapshot()
        if self._nginx is not None:
            return self._nginx.requests()
        if "origin" in self._final:
            return self._final["origin"]
        raise RuntimeError("server was never started")

    def proxy_requests(self, min_count: int = 0, timeout_s: float = 5.0) -> EventLog:
        """The squid's request log (``aux`` 1 for a cache hit); RuntimeError without a proxy."""
        squid = self._squid
        if squid is None:
            if "proxy" in self._final:
                return self._final["proxy"]
            raise RuntimeError("no proxy is running")
        return _wait(squid.requests, min_count, timeout_s)

    def proxy_access_log(self) -> str:
        """squid's raw access log text (status tags such as TCP_MEM_HIT)."""
        if self._squid is None:
            raise RuntimeError("no proxy is running")
        return self._squid.access_log()

    def set_faults(self, rules: Sequence[FaultRule]) -> None:
        """Replace the builtin server's fault rules (counters restart)."""
        if self.server_kind != "builtin":
            raise UsageError("fault injection needs the builtin server")
        self._faults.set(rules)

    def faults_fired(self) -> list[int]:
        """How often each fault rule has fired so far."""
        return self._faults.fired()


def _wait(get: Callable[[], EventLog], min_count: int, timeout_s: float) -> EventLog:
    deadline = time.monotonic() + timeout_s
    while True:
        log: EventLog = get()
        if len(log.events) >= min_count or time.monotonic() > deadline:
            return log
        time.sleep(0.01)


# One constructor serves both names: ``serve(...)`` is the public spelling.
serve = ServerStack
