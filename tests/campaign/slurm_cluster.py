"""A real one-node Slurm cluster (Debian slurm-wlm + munge) in a temporary directory.

:func:`one_node_slurm` writes a munge key, ``slurm.conf`` and the daemons' state and
spool directories under a fresh directory, starts ``munged``, ``slurmctld`` and
``slurmd`` in the foreground (children of this process) on 127.0.0.1 with free ports,
waits until the node is idle, and yields the environment (``SLURM_CONF``) the client
commands need.  On exit every job is cancelled, the three daemons are stopped (SIGTERM,
then SIGKILL) and the directory is removed: no daemon outlives the block.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

NODE = "cmio-node"


@dataclass
class SlurmCluster:
    root: Path
    conf: Path
    env: dict[str, str]
    cpus: int

    def run(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(argv, env=self.env, capture_output=True, text=True, timeout=60)


def _free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _conf(root: Path, ports: list[int], cpus: int, munge_socket: Path) -> str:
    return "\n".join(
        [
            "ClusterName=cmio",
            # slurmctld only runs on the host its name says: this one, reached on loopback
            f"SlurmctldHost={socket.gethostname().split('.')[0]}(127.0.0.1)",
            "MailProg=/bin/true",
            f"SlurmctldPort={ports[0]}",
            f"SlurmdPort={ports[1]}",
            "SlurmUser=root",
            "SlurmdUser=root",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            f"AuthInfo=socket={munge_socket}",
            f"StateSaveLocation={root}/state",
            f"SlurmdSpoolDir={root}/spool",
            f"SlurmctldPidFile={root}/slurmctld.pid",
            f"SlurmdPidFile={root}/slurmd.pid",
            f"SlurmctldLogFile={root}/slurmctld.log",
            f"SlurmdLogFile={root}/slurmd.log",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "MpiDefault=none",
            "SwitchType=switch/none",
            "SchedulerType=sched/builtin",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_CPU",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            "JobCompType=jobcomp/none",
            "ReturnToService=2",
            "MinJobAge=600",
            "KillWait=5",
            "SlurmctldTimeout=30",
            "SlurmdTimeout=30",
            "SchedulerParameters=sched_interval=1",
            f"NodeName={NODE} NodeAddr=127.0.0.1 NodeHostname={NODE} CPUs={cpus} State=UNKNOWN",
            f"PartitionName=debug Nodes={NODE} Default=YES MaxTime=INFINITE State=UP",
            "",
        ]
    )


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in reversed(procs):
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 15
    for p in reversed(procs):
        try:
            p.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def _log_tail(path: Path) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").splitlines()[-5:])
    except OSError:
        return "(no log)"


@contextlib.contextmanager
def one_node_slurm(cpus: int = 0) -> Iterator[SlurmCluster]:
    """The cluster (module docstring); ``cpus`` slots on the node (0: this machine's)."""
    cpus = cpus or os.cpu_count() or 1
    root = Path(tempfile.mkdtemp(prefix="cmio-slurm-")).resolve()
    os.chmod(root, 0o755)  # munged refuses a socket directory writable by others
    procs: list[subprocess.Popen[bytes]] = []
    env = dict(os.environ)
    try:
        for d in ("state", "spool", "munge"):
            (root / d).mkdir(mode=0o700)
        key = root / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        sock = root / "munge" / "munge.socket"
        conf = root / "slurm.conf"
        conf.write_text(_conf(root, _free_ports(2), cpus, sock))
        env["SLURM_CONF"] = str(conf)
        procs.append(
            subprocess.Popen(
                [
                    "munged",
                    "--foreground",
                    "--force",
                    f"--socket={sock}",
                    f"--key-file={key}",
                    f"--pid-file={root}/munge/munged.pid",
                    f"--log-file={root}/munge/munged.log",
                    f"--seed-file={root}/munge/munged.seed",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        _wait(lambda: sock.exists(), procs, root / "munge" / "munged.log", "munged")
        for daemon in (
            ["slurmctld", "-D", "-f", str(conf)],
            ["slurmd", "-D", "-N", NODE, "-f", str(conf)],
        ):
            procs.append(
                subprocess.Popen(
                    daemon, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
                )
            )
        cluster = SlurmCluster(root, conf, env, cpus)

        def idle() -> bool:
            p = cluster.run("sinfo", "-h", "-N", "-o", "%T")
            return p.returncode == 0 and p.stdout.strip() == "idle"

        _wait(idle, procs, root / "slurmd.log", "slurmd", timeout_s=60)
        yield cluster
    finally:
        if len(procs) == 3 and procs[1].poll() is None:
            # jobs end before the daemons: a slurmstepd left running would outlive them
            subprocess.run(
                ["scancel", "--full", "--user=root"], env=env, capture_output=True, timeout=30
            )
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                q = subprocess.run(
                    ["squeue", "-h"], env=env, capture_output=True, text=True, timeout=30
                )
                if q.returncode != 0 or not q.stdout.strip():
                    break
                time.sleep(0.3)
        _stop(procs)
        shutil.rmtree(root, ignore_errors=True)


def _wait(
    ready: object, procs: list[subprocess.Popen[bytes]], log: Path, what: str, timeout_s: float = 20
) -> None:
    assert callable(ready)
    deadline = time.monotonic() + timeout_s
    while not ready():
        dead = [p for p in procs if p.poll() is not None]
        if dead or time.monotonic() > deadline:
            if dead:
                argv = dead[0].args
                name = str(argv[0] if isinstance(argv, (list, tuple)) else argv)
                log = log.parent / f"{name}.log" if name.startswith("slurm") else log
                why = f"{name} exited {dead[0].returncode}"
            else:
                why = "timed out"
            raise RuntimeError(f"one-node Slurm: {what} not ready ({why}): {_log_tail(log)}")
        time.sleep(0.2)
