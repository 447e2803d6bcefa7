"""warm on a real FUSE mount of the emulated client: the cache ends up holding every object."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cvmfs_modelio.core.errors import UsageError
from cvmfs_modelio.deploy.warm import warm
from cvmfs_modelio.sim.catalog import open_store_catalog
from cvmfs_modelio.sim.mount import MountOptions, SimMount
from tests.conftest import require_root_fuse
from tests.sim.simfs_support import P2, publish_tree, served

MiB = 1 << 20


def _rand(seed: int, n: int) -> bytes:
    return np.random.Generator(np.random.PCG64(seed)).integers(0, 256, n, dtype=np.uint8).tobytes()


def _cached(cache: Path, hexhash: str, suffix: str) -> Path:
    return cache / hexhash[:2] / (hexhash[2:] + suffix)


@pytest.mark.parametrize("parallel", [1, 4])
def test_warm_leaves_every_object_in_the_client_cache(tmp_path: Path, parallel: int) -> None:
    require_root_fuse()
    files = {"m/model.onnx": _rand(1, 5000), "m/model.onnx.data": _rand(2, 9 * MiB + 7)}
    store = publish_tree(files, tmp_path / "src", tmp_path / "store", P2)
    with open_store_catalog(store) as cat:
        chunks = cat.chunks("/m/model.onnx.data")
        whole = cat.lookup("/m/model.onnx")
    assert len(chunks) >= 3 and whole is not None and whole.hash is not None
    cache = tmp_path / "cache"
    (tmp_path / "mnt").mkdir()
    with served(store) as srv, SimMount(srv.url, tmp_path / "mnt", MountOptions(cache=cache)) as m:
        assert not any(_cached(cache, c.hash, "P").exists() for c in chunks)
        res = warm([m.path / "m"], parallel=parallel)
        assert [(Path(f.path).name, f.chunks) for f in res.files] == [
            ("model.onnx", 1),
            ("model.onnx.data", len(chunks)),
        ]
        for c in chunks:
            assert _cached(cache, c.hash, "P").stat().st_size == c.size
        assert _cached(cache, whole.hash, "").stat().st_size == len(files["m/model.onnx"])
        delta = res.counters_delta
        assert delta is not None and delta["fetch.n_downloads"] == len(chunks) + 1
        # the job's load afterwards is served from the cache: no download at all
        before = m.counters()["fetch.n_downloads"]
        assert (m.path / "m" / "model.onnx.data").read_bytes() == files["m/model.onnx.data"]
        assert m.counters()["fetch.n_downloads"] == before


def test_cli_json_and_bad_input(tmp_path: Path) -> None:
    (tmp_path / "a.bin").write_bytes(b"x" * 10000)
    out = tmp_path / "w.json"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "cvmfs_modelio.cli",
            "warm",
            str(tmp_path / "a.bin"),
            "--json",
            str(out),
        ],
        check=True,
        capture_output=True,
    )
    doc = json.loads(out.read_text())
    assert doc["files"][0]["on_cvmfs"] is False and doc["counters_delta"] is None
    assert doc["notes"] == [
        "no file is on a CVMFS mount: files were opened and read, nothing fetched"
    ]
    with pytest.raises(UsageError, match=r"nope: no such file or directory$"):
        warm([tmp_path / "nope"])
    r = subprocess.run(
        [sys.executable, "-m", "cvmfs_modelio.cli", "warm", str(tmp_path), "--parallel", "0"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and r.stderr.startswith("cvmfs-modelio: --parallel: ")
