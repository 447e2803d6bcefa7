"""Which TCP addresses a process tree listens on, read from ``/proc`` (no ``ss`` needed).

A socket belongs to a process when one of its ``/proc/PID/fd`` links reads
``socket:[INODE]``; ``/proc/PID/net/tcp`` and ``tcp6`` list every socket of the process's
network namespace with its inode, local address and state (``0A`` is LISTEN).  Addresses
there are hexadecimal in host byte order per 32-bit word, as the kernel prints them.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import socket
import struct
from dataclasses import dataclass
from pathlib import Path

TCP_LISTEN = 0x0A


@dataclass(frozen=True)
class Listener:
    """One listening TCP socket: its address (``127.0.0.1``, ``::``), port and inode."""

    address: str
    port: int
    inode: int

    @property
    def loopback(self) -> bool:
        return ipaddress.ip_address(self.address).is_loopback


def decode_address(text: str) -> tuple[str, int]:
    """``0100007F:1F90`` -> ``("127.0.0.1", 8080)``; IPv6 (32 hex digits) likewise."""
    addr_hex, port_hex = text.split(":")
    if len(addr_hex) not in (8, 32):
        raise ValueError(f"{text!r}: not a /proc/net/tcp address")
    # The kernel prints each 32-bit word of the (network-order) address as a native
    # integer (%08X): packing the words natively gives the address bytes back.
    raw = b"".join(
        struct.pack("=I", int(addr_hex[i : i + 8], 16)) for i in range(0, len(addr_hex), 8)
    )
    family = socket.AF_INET if len(raw) == 4 else socket.AF_INET6
    return socket.inet_ntop(family, raw), int(port_hex, 16)


def parse_proc_net_tcp(text: str) -> list[Listener]:
    """The LISTEN sockets of a ``/proc/net/tcp`` or ``tcp6`` table."""
    out = []
    for line in text.splitlines()[1:]:
        f = line.split()
        if len(f) < 10 or int(f[3], 16) != TCP_LISTEN:
            continue
        addr, port = decode_address(f[1])
        out.append(Listener(addr, port, int(f[9])))
    return out


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants that are alive (from ``/proc/*/stat``)."""
    children: dict[int, list[int]] = {}
    for e in os.scandir("/proc"):
        if not e.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            stat = Path(e.path, "stat").read_text()
            # the command name (2nd field) may hold spaces and parentheses
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(e.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def socket_inodes(pid: int) -> set[int]:
    """Inodes of the sockets ``pid`` has open (empty once it is gone)."""
    out = set()
    with contextlib.suppress(OSError):
        for e in os.scandir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(e.path)
                if target.startswith("socket:["):
                    out.add(int(target[8:-1]))
    return out


def listeners(pid: int) -> list[Listener]:
    """Every TCP socket that ``pid`` or a descendant listens on, sorted by port."""
    pids = process_tree(pid)
    inodes: set[int] = set()
    for p in pids:
        inodes |= socket_inodes(p)
    table: list[Listener] = []
    for name in ("tcp", "tcp6"):
        with contextlib.suppress(OSError):
            table.extend(parse_proc_net_tcp(Path(f"/proc/{pid}/net/{name}").read_text()))
    return sorted((s for s in table if s.inode in inodes), key=lambda s: (s.port, s.address))
