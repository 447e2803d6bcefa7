"""The servers under hostile clients: legitimate GETs are still served (bounded load test).

Loopback only, bounded in count (the mix below) and time (the legitimate GETs, each with a
10 s socket timeout).  Served or not is asserted, with the exact bytes; how fast is measured
by bench/bench_hostile.py (medians, ratio to an unloaded run, JSON).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from cvmfs_modelio.sim.builtin_http import BuiltinServer
from cvmfs_modelio.sim.netem import NetemProxy
from cvmfs_modelio.sim.publish import PublishParams, iter_objects, publish
from tests.fuzz.hostile_clients import HostileLoad, legit_get

MIX = {"slowloris": 64, "idle": 32, "garbage": 4, "huge": 2, "slow_reader": 4}
GETS = 30


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str, bytes]]:
    base = tmp_path_factory.mktemp("hostile")
    src = base / "src"
    src.mkdir()
    (src / "big.bin").write_bytes(np.random.Generator(np.random.PCG64(1)).bytes(2 << 20))
    store = base / "store"
    publish(src, store, PublishParams(256 << 10, 512 << 10, 1 << 20, compression="none"))
    obj = max(iter_objects(store), key=lambda p: p.stat().st_size)
    yield store, "/" + str(obj.relative_to(store)), obj.read_bytes()
    shutil.rmtree(base)


@pytest.mark.parametrize("via", ["builtin", "wan-emulator"])
def test_legitimate_gets_are_served_under_abusive_connections(
    store: tuple[Path, str, bytes], via: str
) -> None:
    root, path, body = store
    srv = BuiltinServer(root).start()
    wan = NetemProxy("127.0.0.1", srv.port, rtt_ms=1.0).start() if via != "builtin" else None
    port = wan.port if wan is not None else srv.port
    try:
        with HostileLoad(port, MIX, big_path=path, drip_s=0.2) as attack:
            answers = [legit_get(port, path) for _ in range(GETS)]
        assert attack.counts["slowloris"] >= MIX["slowloris"]
        assert attack.counts["garbage"] > 0 and attack.counts["huge"] > 0
        served = [a for a in answers if a is not None and a[1] == 200 and a[2] == body]
        assert len(served) == GETS, f"{GETS - len(served)} of {GETS} GETs not served"
        again = legit_get(port, path)  # and the attackers gone, still serving
        assert again is not None and again[1:] == (200, body)
    finally:
        if wan is not None:
            wan.stop()
        srv.stop()
