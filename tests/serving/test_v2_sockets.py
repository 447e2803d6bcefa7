"""The v2 REST codec and the /proc socket table reader, without a server."""

from __future__ import annotations

import json
import socket

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cvmfs_modelio.core.errors import UsageError
from cvmfs_modelio.serving import sockets, v2
from tests.serving.conftest import IN, TinyModel

# Rows as /proc/net/tcp and tcp6 print them (the fields after the inode cut off): LISTEN
# (0A) on 127.0.0.1:8080 and 0.0.0.0:8081, an established connection (01), which does not
# listen; on IPv6 [::]:8081 and [::1]:22.
_TAIL = "00000000:00000000 00:00000000 00000000     0        0"
_HEAD = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid"
PROC_NET_TCP = "\n".join(
    [
        _HEAD,
        f"   0: 0100007F:1F90 00000000:0000 0A {_TAIL} 4242 1 0 100 0 0 10 0",
        f"   1: 00000000:1F91 00000000:0000 0A {_TAIL} 4343 1 0 100 0 0 10 0",
        f"   2: 0100007F:1F90 0100007F:D431 01 {_TAIL} 4444 1 0 20 4 30 10 -1",
    ]
)
_ANY6, _LO6 = "0" * 32, "0" * 24 + "01000000"
PROC_NET_TCP6 = "\n".join(
    [
        _HEAD,
        f"   0: {_ANY6}:1F91 {_ANY6}:0000 0A {_TAIL} 5151 1 0 100 0 0 10 0",
        f"   1: {_LO6}:0016 {_ANY6}:0000 0A {_TAIL} 5252 1 0 100 0 0 10 0",
    ]
)


def test_proc_net_tcp_rows_decode_exactly() -> None:
    assert sockets.parse_proc_net_tcp(PROC_NET_TCP) == [
        sockets.Listener("127.0.0.1", 8080, 4242),
        sockets.Listener("0.0.0.0", 8081, 4343),
    ]
    assert sockets.parse_proc_net_tcp(PROC_NET_TCP6) == [
        sockets.Listener("::", 8081, 5151),
        sockets.Listener("::1", 22, 5252),
    ]
    both = sockets.parse_proc_net_tcp(PROC_NET_TCP) + sockets.parse_proc_net_tcp(PROC_NET_TCP6)
    loop = [s.loopback for s in both]
    assert loop == [True, False, False, True]


@given(st.ip_addresses(), st.integers(0, 65535))
def test_addresses_round_trip_through_the_kernel_notation(addr: object, port: int) -> None:
    import ipaddress
    import struct

    a = ipaddress.ip_address(str(addr))
    raw = a.packed
    # the kernel's %08X of each 32-bit word read natively
    words = struct.unpack(f"={len(raw) // 4}I", raw)
    text = "".join(f"{w:08X}" for w in words) + f":{port:04X}"
    got, got_port = sockets.decode_address(text)
    assert ipaddress.ip_address(got) == a and got_port == port


def test_listeners_of_this_process_are_found_by_inode() -> None:
    with socket.create_server(("127.0.0.1", 0)) as s:
        port = s.getsockname()[1]
        mine = [x for x in sockets.listeners(__import__("os").getpid()) if x.port == port]
        assert [(x.address, x.port, x.loopback) for x in mine] == [("127.0.0.1", port, True)]


def test_inputs_come_from_the_graph_and_are_deterministic(tiny_model: TinyModel) -> None:
    a = v2.model_inputs(tiny_model.onnx)
    b = v2.model_inputs(tiny_model.onnx)
    assert list(a) == ["x"] and a["x"].shape == (1, IN) and a["x"].dtype == np.float32
    assert np.array_equal(a["x"], b["x"])
    assert np.array_equal(a["x"], np.random.default_rng(0).standard_normal((1, IN)).astype("f4"))


def test_request_and_response_bodies() -> None:
    feeds = {"ids": np.array([[1, 2, 3]], dtype=np.int64), "x": np.zeros((2, 1), np.float32)}
    assert json.loads(v2.request_body(feeds, "r1")) == {
        "id": "r1",
        "inputs": [
            {"name": "ids", "shape": [1, 3], "datatype": "INT64", "data": [1, 2, 3]},
            {"name": "x", "shape": [2, 1], "datatype": "FP32", "data": [0.0, 0.0]},
        ],
    }
    out = v2.parse_response(
        b'{"model_name":"m","id":"r1","outputs":[{"name":"y","shape":[2,2],'
        b'"datatype":"FP32","data":[1.5,0,0,-2]}]}'
    )
    assert list(out) == ["y"] and out["y"].dtype == np.float32
    assert out["y"].tolist() == [[1.5, 0.0], [0.0, -2.0]]
    with pytest.raises(ValueError, match="not a v2 infer response"):
        v2.parse_response(b'{"error": "model not ready"}')
    with pytest.raises(UsageError, match="input s: no v2 datatype for complex64"):
        v2.request_body({"s": np.zeros(1, np.complex64)})
