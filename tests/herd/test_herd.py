"""``herd`` on real mounts, a real squid and the WAN emulator: what reaches the stratum."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from cvmfs_modelio.campaign.experiments import ChunkConfig, model_from_path
from cvmfs_modelio.core.errors import UsageError
from cvmfs_modelio.herd import run as herd_run
from cvmfs_modelio.herd.run import ClientMemory, HerdParams, check_clients, run_herd
from cvmfs_modelio.models.synthetic import make_model
from cvmfs_modelio.sim.mount import mounts
from tests.conftest import require_root_fuse, require_tool

MiB = 1 << 20
CHUNKED = ChunkConfig.chunked(256 * 1024, 512 * 1024, 1 * MiB)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require_root_fuse()
    require_tool("squid")
    d = tmp_path_factory.mktemp("herd-model")
    return make_model(d / "m.onnx", 4 * MiB, external_data=True, width=512).onnx


def _mounts_under(d: Path) -> list[str]:
    root = str(d.resolve()) + "/"
    return [mp for mp, _t, _s in mounts() if (mp + "/").startswith(root)]


def _params(**kw: object) -> HerdParams:
    base: dict[str, object] = {
        "clients": 3,
        "configs": (CHUNKED,),
        "rtt_ms": 2.0,
        "bandwidth": 200 * MiB,
        "timeout_s": 120.0,
    }
    return HerdParams(**{**base, **kw})  # type: ignore[arg-type]


def test_a_warm_squid_leaves_the_stratum_serving_no_data_object(
    model: Path, tmp_path: Path
) -> None:
    rep = run_herd(model_from_path(model), _params(squid_state="warm"), tmp_path)
    (row,) = rep.rows
    n = row.objects_total
    assert n > 4  # the model is several chunks
    assert row.clients_ok == 3, row.errors
    assert row.stratum_requests == 0 and row.stratum_bytes == 0
    assert row.stratum_peak_concurrent_requests == 0
    # every client fetched every object, all from the squid's cache
    assert row.client_objects_fetched == 3 * n
    assert row.proxy_requests == 3 * n and row.proxy_hits == 3 * n
    assert row.proxy_hit_ratio == 1.0
    assert row.proxy_bytes == 3 * row.object_bytes_total
    assert _mounts_under(tmp_path) == [] and list(tmp_path.iterdir()) == []


def test_collapsed_forwarding_makes_a_cold_herd_fetch_each_object_once(
    model: Path, tmp_path: Path
) -> None:
    params = _params(clients=4, collapsed_forwarding=True, configs=(CHUNKED, ChunkConfig.whole()))
    rep = run_herd(model_from_path(model), params, tmp_path)
    for row in rep.rows:
        assert row.clients_ok == 4, row.errors
        assert row.stratum_requests == row.objects_total == row.stratum_objects
        assert row.stratum_max_serves_per_object == 1
        assert row.stratum_bytes == row.object_bytes_total
        assert row.proxy_requests == 4 * row.objects_total
        assert 0 <= row.ttfi_min_ns <= row.ttfi_p50_ns <= row.ttfi_p90_ns <= row.ttfi_max_ns
    assert [r.objects_total for r in rep.rows][1] == 2  # whole: the .onnx and its data file
    assert rep.memory.per_client_bytes > 0 and rep.memory.max_clients >= 4
    assert _mounts_under(tmp_path) == []


def test_more_clients_than_the_measured_memory_holds_are_refused(
    model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the pilot measures a real client; the machine is made to look small
    monkeypatch.setattr(herd_run, "mem_available_bytes", lambda: 100 * MiB)
    with pytest.raises(UsageError) as e:
        run_herd(model_from_path(model), _params(clients=64), tmp_path)
    msg = str(e.value)
    m = re.fullmatch(
        r"--clients 64: one client needs (\S+ \S+) \(measured: ORT load \S+ \S+ \+ "
        r"cmio-simfs \S+ \S+\); 100\.0 MiB available holds at most (\d) \(with 80% of it planned\)",
        msg,
    )
    assert m is not None, msg
    assert _mounts_under(tmp_path) == [] and list(tmp_path.iterdir()) == []


def test_check_clients_names_the_measured_memory() -> None:
    mem = ClientMemory(60 * MiB, 20 * MiB, 1000 * MiB, 10)
    check_clients(10, mem)
    with pytest.raises(UsageError) as e:
        check_clients(11, mem)
    assert str(e.value) == (
        "--clients 11: one client needs 80.0 MiB (measured: ORT load 60.0 MiB + cmio-simfs "
        "20.0 MiB); 1000.0 MiB available holds at most 10 (with 80% of it planned)"
    )


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"clients": 0}, "--clients: 0 is not in [1, 4096]"),
        ({"squid_state": "hot"}, "--squid-state: 'hot' is not one of cold, warm"),
        ({"squid_state": "warm", "proxy": None}, "--squid-state warm: needs --proxy squid"),
        ({"configs": ()}, "--configs: no chunk configuration"),
    ],
)
def test_bad_herd_parameters(kw: dict[str, object], message: str) -> None:
    with pytest.raises(UsageError) as e:
        _params(**kw).validate()
    assert str(e.value) == message
