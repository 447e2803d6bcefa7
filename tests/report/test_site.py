"""The report's Site section from herd result files (both schemas), and bad files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from matplotlib.figure import Figure

from cvmfs_modelio.core.errors import UsageError
from cvmfs_modelio.core.jsonout import write_json
from cvmfs_modelio.report.site import herd_figure, herd_table, load_herd, site_findings

MiB = 1 << 20


def _row(
    clients: int, chunks: str, stratum: int, objects: int, p50_s: float, **kw: Any
) -> dict[str, Any]:
    return {
        "chunk_label": chunks,
        "clients": clients,
        "ttfi_p50_ns": int(p50_s * 1e9),
        "ttfi_p90_ns": int(p50_s * 1.1e9),
        "ttfi_max_ns": int(p50_s * 1.2e9),
        "cpu_per_client_p50_ns": 1_000_000_000,
        "stratum_requests": stratum,
        "stratum_bytes": 80 * MiB,
        "stratum_peak_concurrent_requests": kw.pop("peak", 1),
        "proxy_requests": clients * objects,
        "proxy_hits": kw.pop("hits", 0),
        "objects_total": objects,
        "object_bytes_total": 80 * MiB,
        **kw,
    }


def _bench_file(tmp_path: Path) -> Path:
    base = {"model": "minilm", "model_bytes": 87 * MiB}
    runs = [
        {**base, "variant": "N=16 cold, collapsed on", **_row(16, "4/8/16 MiB", 12, 12, 20.0)},
        {**base, "variant": "N=16 cold, collapsed on", **_row(16, "unchunked", 1, 1, 25.0)},
        {**base, "variant": "N=4 cold, collapsed on", **_row(4, "4/8/16 MiB", 12, 12, 5.0)},
        {
            **base,
            "variant": "N=16 cold, collapsed off",
            **_row(16, "4/8/16 MiB", 30, 12, 22.0, peak=5),
        },
        {**base, "variant": "N=16 warm squid", **_row(16, "4/8/16 MiB", 0, 12, 15.0, hits=192)},
    ]
    p = tmp_path / "herd.json"
    write_json(p, {"runs": runs, "refused": []}, schema="bench.herd")
    return p


def test_findings_state_what_the_rows_show(tmp_path: Path) -> None:
    df = load_herd([_bench_file(tmp_path)])
    assert len(df) == 5
    text = site_findings(df)
    assert any(
        t.startswith(
            "**maximum_object_size vs chunk size.** Unchunked, an object is a whole "
            "file (up to 87.0 MiB here), above squid's default maximum_object_size (4.0 MiB)"
        )
        for t in text
    )
    assert (
        "**collapsed_forwarding.** minilm [4/8/16 MiB], 16 cold clients: the stratum served "
        "2.50 requests per object with it off, 1.00 with it on (peak concurrent stratum requests "
        "5 vs 1; p50 time to first inference 22.00 s vs 20.00 s)."
    ) in text
    assert (
        "**warm squid.** minilm [4/8/16 MiB], 16 clients: the stratum served 0 data objects; "
        "the squid answered 192 of 192 requests from its cache."
    ) in text
    assert (
        "**chunk size with many clients.** minilm, cold squid with collapsing on, p50 time to "
        "first inference at 4 clients: 4/8/16 MiB 5.00 s | 16 clients: 4/8/16 MiB 20.00 s; "
        "unchunked 25.00 s. In every one of these herds the stratum served each object exactly "
        "once: behind one proxy the WAN cost does not grow with the number of clients, so what "
        "changes the ranking of chunk sizes as N grows is on the site's side of the WAN."
    ) in text
    table = herd_table(df)
    assert list(table["clients"]) == [4, 16, 16, 16, 16]
    assert set(table["squid"]) == {
        "squid cold, collapsed on",
        "squid cold, collapsed off",
        "squid warm, collapsed on",
    }
    assert isinstance(herd_figure(df), Figure)


def test_a_herd_cli_file_reads_as_rows(tmp_path: Path) -> None:
    p = tmp_path / "h.json"
    payload = {
        "model": {"name": "m", "bytes": 8 * MiB},
        "params": {"proxy": None, "collapsed_forwarding": None, "squid_state": "cold"},
        "rows": [_row(4, "unchunked", 8, 2, 1.0)],
    }
    write_json(p, payload, schema="herd")
    df = load_herd([p])
    assert df.iloc[0]["model"] == "m" and df.iloc[0]["clients"] == 4
    assert herd_table(df).iloc[0]["squid"] == "no proxy"


def test_bad_herd_files_are_one_line(tmp_path: Path) -> None:
    other = tmp_path / "o.json"
    other.write_text(json.dumps({"schema": {"name": "cvmfs-modelio.probe"}}))
    junk = tmp_path / "j.json"
    junk.write_text("[1")
    for path, msg in (
        (other, f"--herd {other}: schema 'cvmfs-modelio.probe' is not a herd result"),
        (junk, f"--herd {junk}: not a herd result (no schema)"),
        (
            tmp_path / "none.json",
            f"--herd {tmp_path / 'none.json'}: cannot read: No such file or directory",
        ),
    ):
        with pytest.raises(UsageError) as e:
            load_herd([path])
        assert str(e.value) == msg
