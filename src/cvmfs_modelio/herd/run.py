"""Run a herd: N worker nodes start the same ORT load at once behind one site squid.

Per chunk configuration the model is published (``sim.publish``) and served by one
stratum (the builtin server) behind the WAN emulator (``rtt_ms``, ``bandwidth``: the
stratum's uplink, shared by every connection), with one squid in front of it on the
site's side (``sim.server.serve``; or no proxy: every client goes to the stratum).
Each client is one ``cmio-simfs`` mount with its own cache directory (its own process)
and one load process (``herd.client``) that has imported ONNX Runtime and waits; when
all N are ready one signal starts them together, and each one's time to first inference
is measured from that signal (so a client that waits for the squid or the WAN pays it).

Before the first herd one *pilot* client loads the model straight from the stratum
(no squid, no WAN): its peak memory (the load process's maximum RSS plus the client's
``VmHWM``) is the measured per-client memory, and N above what ``MemAvailable`` holds
(with a margin) is refused before any herd starts.  ``squid_state="warm"`` loads the
model once through the squid before the herd (unmeasured), so the herd finds it cached.
Everything started is stopped and every scratch directory removed, also on errors and
Ctrl-C.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cvmfs_modelio.campaign.childproc import _die_with_parent
from cvmfs_modelio.campaign.experiments import ChunkConfig, ModelFiles, stage_sources
from cvmfs_modelio.core.errors import UsageError
from cvmfs_modelio.core.units import fmt_bytes
from cvmfs_modelio.herd.analysis import data_requests, peak_concurrency, percentile

MiB = 1 << 20
MEMORY_MARGIN = 0.8  # share of MemAvailable a herd may plan to use
SQUID_STATES = ("cold", "warm")


@dataclass(frozen=True)
class HerdParams:
    """A herd's settings (sizes in bytes, bandwidth in bytes/s, 0: unlimited)."""

    clients: int
    configs: tuple[ChunkConfig, ...]
    proxy: str | None = "squid"
    collapsed_forwarding: bool = True
    squid_state: str = "cold"
    rtt_ms: float = 10.0
    bandwidth: int = 100 * MiB
    parallel: int = 16
    client_profile: str = "cvmfs-2.12"
    timeout_s: float = 900.0
    squid_max_object: int | None = None
    squid_mem_mb: int = 256

    def validate(self) -> None:
        if not 1 <= self.clients <= 4096:
            raise UsageError(f"--clients: {self.clients} is not in [1, 4096]")
        if self.squid_state not in SQUID_STATES:
            raise UsageError(f"--squid-state: {self.squid_state!r} is not one of cold, warm")
        if self.squid_state == "warm" and self.proxy is None:
            raise UsageError("--squid-state warm: needs --proxy squid")
        if not self.configs:
            raise UsageError("--configs: no chunk configuration")


@dataclass(frozen=True)
class ClientMemory:
    """What one client needed at its peak (the pilot), and what that allows here."""

    load_rss_bytes: int  # the ORT load process's maximum RSS
    client_hwm_bytes: int  # the cmio-simfs process's VmHWM
    available_bytes: int  # MemAvailable when measured
    max_clients: int

    @property
    def per_client_bytes(self) -> int:
        return self.load_rss_bytes + self.client_hwm_bytes


@dataclass
class ClientOutcome:
    index: int
    ok: bool
    error: str = ""
    ttfi_ns: int = -1  # herd start signal -> first inference done
    session_ns: int = -1
    first_inference_ns: int = -1
    start_lag_ns: int = -1  # signal -> the client's clock started
    max_rss_bytes: int = -1
    cpu_ns: int = -1  # user + system time of the load process
    objects_fetched: int = -1
    bytes_fetched: int = -1


@dataclass
class HerdRow:
    """One chunk configuration's herd (times in ns, sizes in bytes)."""

    chunk_label: str
    clients: int
    clients_ok: int
    ttfi_p50_ns: int
    ttfi_p90_ns: int
    ttfi_max_ns: int
    ttfi_min_ns: int
    cpu_per_client_p50_ns: int  # the load's CPU time: N of them share this machine's cores
    stratum_requests: int
    stratum_bytes: int
    stratum_objects: int  # distinct objects the stratum served
    stratum_max_serves_per_object: int
    stratum_peak_concurrent_requests: int
    proxy_requests: int  # -1 without a proxy
    proxy_hits: int
    proxy_bytes: int
    proxy_hit_ratio: float
    objects_total: int  # data objects of the model in this configuration
    object_bytes_total: int  # their stored (compressed) bytes
    client_objects_fetched: int  # sum over clients
    load_average_1m_before: float
    load_average_1m_after: float
    errors: list[str] = field(default_factory=list)
    client_rows: list[ClientOutcome] = field(default_factory=list)


def mem_available_bytes() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("/proc/meminfo has no MemAvailable")


def vm_hwm_bytes(pid: int) -> int:
    """Peak resident set of a running process (``VmHWM``), -1 if it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return -1


def max_clients(per_client: int, available: int) -> int:
    return max(int(available * MEMORY_MARGIN) // max(per_client, 1), 0)


def check_clients(n: int, mem: ClientMemory) -> None:
    """Refuse ``n`` clients when the measured per-client memory says they do not fit."""
    if n > mem.max_clients:
        raise UsageError(
            f"--clients {n}: one client needs {fmt_bytes(mem.per_client_bytes)} (measured: "
            f"ORT load {fmt_bytes(mem.load_rss_bytes)} + cmio-simfs "
            f"{fmt_bytes(mem.client_hwm_bytes)}); {fmt_bytes(mem.available_bytes)} available "
            f"holds at most {mem.max_clients} (with {MEMORY_MARGIN:.0%} of it planned)"
        )


# ------------------------------------------------------------------ clients


class _Client:
    """One worker node: its mount (own cache, own process) and its waiting load process."""

    def __init__(self, index: int, url: str, proxy: str | None, wd: Path, params: HerdParams):
        from cvmfs_modelio.sim.mount import MountOptions, SimMount

        self.index = index
        self.dirs = [wd / f"mnt-{index}", wd / f"cache-{index}"]
        self.dirs[0].mkdir()
        opts = MountOptions(
            cache=self.dirs[1],
            proxy=proxy,
            parallel=params.parallel,
            client_profile=params.client_profile,
        )
        self.mount = SimMount(url, self.dirs[0], opts)
        self.proc: subprocess.Popen[str] | None = None
        self.before: dict[str, int] = {}

    def start_mount(self) -> None:
        self.mount.start()

    def spawn(self, repo_entry: str) -> None:
        model = str(self.mount.path) + repo_entry
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cvmfs_modelio.herd.client", model],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=_die_with_parent,
        )

    def wait_ready(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if line.strip() != "ready":
            _out, err = self.proc.communicate(timeout=30)
            lines = [ln for ln in err.splitlines() if ln.strip()]
            raise UsageError(
                f"herd client {self.index}: the load process did not start: "
                f"{lines[-1] if lines else f'exit status {self.proc.returncode}'}"
            )

    def go(self) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        self.before = self.mount.counters()
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def result(self, go_ns: int, deadline: float) -> ClientOutcome:
        assert self.proc is not None
        try:
            out, err = self.proc.communicate(timeout=max(deadline - time.monotonic(), 1.0))
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.communicate()
            return ClientOutcome(self.index, False, "timed out")
        after = self.mount.counters()
        row = ClientOutcome(self.index, False)
        row.objects_fetched = after.get("fetch.n_downloads", 0) - self.before.get(
            "fetch.n_downloads", 0
        )
        row.bytes_fetched = after.get("download.sz_transferred_bytes", 0) - self.before.get(
            "download.sz_transferred_bytes", 0
        )
        lines = [ln for ln in out.splitlines() if ln.strip()]
        try:
            doc = json.loads(lines[-1]) if lines else {}
        except json.JSONDecodeError:
            doc = {}
        if "error" in doc or "end_ns" not in doc:
            why = doc.get("error") or (err.strip().splitlines() or ["no result"])[-1]
            row.error = f"exit {self.proc.returncode}: {why}"
            return row
        row.ok = True
        row.ttfi_ns = int(doc["end_ns"]) - go_ns
        row.session_ns = int(doc["session_end_ns"]) - int(doc["go_ns"])
        row.first_inference_ns = int(doc["end_ns"]) - int(doc["session_end_ns"])
        row.start_lag_ns = int(doc["go_ns"]) - go_ns
        row.max_rss_bytes = int(doc["max_rss_bytes"])
        row.cpu_ns = int(doc["user_ns"]) + int(doc["system_ns"])
        return row

    def stop(self) -> None:
        try:
            if self.proc is not None and self.proc.poll() is None:
                self.proc.kill()
                self.proc.communicate()
        finally:
            try:
                self.mount.stop()
            finally:
                for d in self.dirs:
                    shutil.rmtree(d, ignore_errors=True)


@contextlib.contextmanager
def _clients(
    n: int, url: str, proxy: str | None, wd: Path, params: HerdParams, first: int = 0
) -> Iterator[list[_Client]]:
    made: list[_Client] = []
    try:
        for i in range(first, first + n):
            c = _Client(i, url, proxy, wd, params)
            made.append(c)
            c.start_mount()
        yield made
    finally:
        for c in made:
            with contextlib.suppress(Exception):
                c.stop()


def _load_once(
    clients: Sequence[_Client], repo_entry: str, timeout_s: float
) -> tuple[int, list[ClientOutcome]]:
    """Spawn the loads, wait until every one is ready, start them together; (go_ns, rows)."""
    for c in clients:
        c.spawn(repo_entry)
    for c in clients:
        c.wait_ready()
    go_ns = time.monotonic_ns()
    for c in clients:
        c.go()
    deadline = time.monotonic() + timeout_s
    return go_ns, [c.result(go_ns, deadline) for c in clients]


# ------------------------------------------------------------------ one configuration


def _settled(get: Callable[[], Any], timeout_s: float = 10.0) -> Any:
    """A request log once its length stopped growing (servers log after the last byte)."""
    log = get()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        time.sleep(0.3)
        nxt = get()
        if len(nxt.events) == len(log.events):
            return nxt
        log = nxt
    return log


def _objects(store: Path) -> tuple[int, int]:
    """(data objects, their bytes) in a published store (catalogs excluded)."""
    n = total = 0
    for p in (store / "data").glob("*/*"):
        if not p.name.endswith("C"):
            n += 1
            total += p.stat().st_size
    return n, total


def run_config(
    model: ModelFiles,
    config: ChunkConfig,
    params: HerdParams,
    wd: Path,
    memory: ClientMemory | None,
    progress: Callable[[str], None],
) -> tuple[HerdRow, ClientMemory]:
    """One herd for one chunk configuration (see the module docstring)."""
    from cvmfs_modelio.sim.publish import PublishParams, publish
    from cvmfs_modelio.sim.server import serve

    src, store = wd / "src", wd / f"store-{config.label.replace('/', '_').replace(' ', '')}"
    shutil.rmtree(src, ignore_errors=True)
    entry = stage_sources([model], src)[model.name]
    progress(f"[{config.label}] publishing {model.name}")
    pp = (
        PublishParams(config.min_size, config.avg_size, config.max_size)
        if config.chunking
        else PublishParams(chunking=False)
    )
    publish(src, store, pp)
    n_objects, object_bytes = _objects(store)
    try:
        with serve(
            store,
            proxy=params.proxy,
            rtt_ms=params.rtt_ms,
            bandwidth=params.bandwidth,
            collapsed_forwarding=params.collapsed_forwarding if params.proxy else None,
            proxy_max_object=params.squid_max_object,
            proxy_mem_mb=params.squid_mem_mb,
        ) as srv:
            if memory is None:
                progress(f"[{config.label}] pilot client (memory per client)")
                memory = _pilot(srv.origin_url, entry, wd, params)
                check_clients(params.clients, memory)
            if params.squid_state == "warm":
                progress(f"[{config.label}] warming the squid with one load")
                with _clients(1, srv.url, srv.proxy, wd, params, first=params.clients) as w:
                    _go, rows = _load_once(w, entry, params.timeout_s)
                if not rows[0].ok:
                    raise UsageError(f"herd: the load that warms the squid failed: {rows[0].error}")
            progress(f"[{config.label}] mounting {params.clients} clients")
            load_before = os.getloadavg()[0]
            with _clients(params.clients, srv.url, srv.proxy, wd, params) as cs:
                progress(f"[{config.label}] {params.clients} clients loading at once")
                go_ns, rows = _load_once(cs, entry, params.timeout_s)
            load_after = os.getloadavg()[0]
            stratum = data_requests(_settled(srv.requests), go_ns)
            proxy = data_requests(_settled(srv.proxy_requests), go_ns) if srv.proxy else None
    finally:
        shutil.rmtree(store, ignore_errors=True)
        shutil.rmtree(src, ignore_errors=True)
    ok = [r for r in rows if r.ok]
    ttfi = [r.ttfi_ns for r in ok]
    per_obj = stratum.per_object()
    row = HerdRow(
        chunk_label=config.label,
        clients=params.clients,
        clients_ok=len(ok),
        ttfi_p50_ns=percentile(ttfi, 0.5),
        ttfi_p90_ns=percentile(ttfi, 0.9),
        ttfi_max_ns=max(ttfi, default=-1),
        ttfi_min_ns=min(ttfi, default=-1),
        cpu_per_client_p50_ns=percentile([r.cpu_ns for r in ok], 0.5),
        stratum_requests=stratum.n,
        stratum_bytes=stratum.total_bytes,
        stratum_objects=len(per_obj),
        stratum_max_serves_per_object=max(per_obj.values(), default=0),
        stratum_peak_concurrent_requests=peak_concurrency(stratum.starts_ns, stratum.ends_ns),
        proxy_requests=proxy.n if proxy else -1,
        proxy_hits=proxy.hits if proxy else -1,
        proxy_bytes=proxy.total_bytes if proxy else -1,
        proxy_hit_ratio=(proxy.hits / proxy.n if proxy and proxy.n else 0.0) if proxy else -1.0,
        objects_total=n_objects,
        object_bytes_total=object_bytes,
        client_objects_fetched=sum(max(r.objects_fetched, 0) for r in rows),
        load_average_1m_before=load_before,
        load_average_1m_after=load_after,
        errors=sorted({r.error for r in rows if not r.ok}),
        client_rows=rows,
    )
    return row, memory


def _pilot(url: str, entry: str, wd: Path, params: HerdParams) -> ClientMemory:
    with _clients(1, url, None, wd, params, first=params.clients + 1) as cs:
        _go, rows = _load_once(cs, entry, params.timeout_s)
        hwm = vm_hwm_bytes(cs[0].mount.pid)
    if not rows[0].ok:
        raise UsageError(f"herd: the pilot load failed: {rows[0].error}")
    avail = mem_available_bytes()
    per = rows[0].max_rss_bytes + max(hwm, 0)
    return ClientMemory(rows[0].max_rss_bytes, max(hwm, 0), avail, max_clients(per, avail))


@dataclass
class HerdReport:
    params: HerdParams
    model: ModelFiles
    model_bytes: int
    memory: ClientMemory
    rows: list[HerdRow]


def run_herd(
    model: ModelFiles,
    params: HerdParams,
    workdir: Path,
    progress: Callable[[str], None] = lambda _s: None,
    memory: ClientMemory | None = None,
) -> HerdReport:
    """Every configuration's herd, in order; ``workdir`` is scratch (emptied after)."""
    from cvmfs_modelio.campaign.experiments import fuse_unavailable_reason

    params.validate()
    reason = fuse_unavailable_reason()
    if reason is not None:
        raise UsageError(f"herd: cannot mount the emulated CVMFS: {reason}")
    if params.proxy is not None and shutil.which("squid") is None:
        raise UsageError("--proxy squid: squid is not installed (apt-get install squid)")
    if memory is not None:
        check_clients(params.clients, memory)
    rows: list[HerdRow] = []
    for config in params.configs:
        row, memory = run_config(model, config, params, workdir, memory, progress)
        rows.append(row)
    assert memory is not None
    nbytes = sum(os.stat(f).st_size for f in model.files)
    return HerdReport(params, model, nbytes, memory, rows)
