"""The emulated store's layout: object paths, path hashes and the manifest (docs/store-format.md).

Shared by the publisher, the HTTP servers and the mount's Python side, so that every part
agrees on names byte for byte.
"""

from __future__ import annotations

import hashlib
import os
import struct
from dataclasses import dataclass
from pathlib import Path

from cvmfs_modelio.core.atomicio import write_atomic_bytes
from cvmfs_modelio.core.errors import UsageError, os_error

MANIFEST = ".cvmfspublished"
DATA = "data"
DEFAULT_REPO = "sim.cvmfs.io"
DEFAULT_TTL_S = 240
ROOT_PATH_HASH = hashlib.md5(b"").hexdigest()

SUFFIX_WHOLE = ""
SUFFIX_CHUNK = "P"
SUFFIX_CATALOG = "C"

# Catalog entry flags (docs/store-format.md).
FLAG_DIR = 1
FLAG_FILE = 4
FLAG_LINK = 8
FLAG_CHUNKED = 64
FLAG_BUNDLE_TRIGGER = 1 << 20  # ours: a .cvmfsbundle-<name> spec is published next to it
FLAG_COMPRESSION_SHIFT = 11
COMPRESSION_CODES = {"zlib": 0, "none": 1}

_MD5PAIR = struct.Struct("<qq")


def object_relpath(hexhash: str, suffix: str = SUFFIX_WHOLE) -> str:
    """``data/XX/<rest of hex><suffix>``: where an object lives in the store and on the server."""
    return f"{DATA}/{hexhash[:2]}/{hexhash[2:]}{suffix}"


def object_path(store: str | os.PathLike[str], hexhash: str, suffix: str = SUFFIX_WHOLE) -> Path:
    """Absolute file of an object in ``store``."""
    return Path(store) / object_relpath(hexhash, suffix)


def md5path(path: str) -> tuple[int, int]:
    """The catalog key of a repository path (``""`` is the root): md5 as two signed LE int64."""
    a, b = _MD5PAIR.unpack(hashlib.md5(path.encode("utf-8", "surrogateescape")).digest())
    return int(a), int(b)


def parent_path(path: str) -> str | None:
    """Repository path of the parent directory; None for the root ``""``."""
    if path == "":
        return None
    return path.rsplit("/", 1)[0]


@dataclass(frozen=True)
class Manifest:
    """The fields of ``.cvmfspublished`` (sizes in bytes, time in seconds since the epoch)."""

    catalog_hash: str
    catalog_size: int
    revision: int
    repository: str = DEFAULT_REPO
    ttl_s: int = DEFAULT_TTL_S
    published_s: int = 0

    def to_bytes(self) -> bytes:
        """The manifest text, ``--`` line and SHA-1 of the body included."""
        body = (
            f"C{self.catalog_hash}\n"
            f"B{self.catalog_size}\n"
            f"R{ROOT_PATH_HASH}\n"
            f"D{self.ttl_s}\n"
            f"S{self.revision}\n"
            f"N{self.repository}\n"
            f"T{self.published_s}\n"
        ).encode()
        return body + b"--\n" + hashlib.sha1(body).hexdigest().encode() + b"\n"


def parse_manifest(data: bytes, name: str = MANIFEST) -> Manifest:
    """Parse manifest bytes; anything malformed raises UsageError naming ``name``."""
    body, sep, tail = data.partition(b"--\n")
    if not sep:
        raise UsageError(f"{name}: manifest has no '--' line")
    if tail.strip() != hashlib.sha1(body).hexdigest().encode():
        raise UsageError(f"{name}: manifest checksum does not match its body")
    fields: dict[str, str] = {}
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"{name}: manifest is not UTF-8 text") from None
    for line in text.splitlines():
        if line:
            fields[line[0]] = line[1:]
    try:
        chash = fields["C"]
        if len(chash) != 40 or any(c not in "0123456789abcdef" for c in chash):
            raise UsageError(f"{name}: catalog hash {chash!r} is not 40 hex digits")
        m = Manifest(
            catalog_hash=chash,
            catalog_size=int(fields["B"]),
            revision=int(fields["S"]),
            repository=fields.get("N", DEFAULT_REPO),
            ttl_s=int(fields.get("D", DEFAULT_TTL_S)),
            published_s=int(fields.get("T", 0)),
        )
    except KeyError as e:
        raise UsageError(f"{name}: manifest lacks field {e.args[0]}") from None
    except ValueError:
        raise UsageError(f"{name}: manifest has a non-numeric field") from None
    for what, v in (("catalog size", m.catalog_size), ("revision", m.revision), ("TTL", m.ttl_s)):
        if v < 0:
            raise UsageError(f"{name}: manifest {what} {v} is negative")
    return m


def read_manifest(store: str | os.PathLike[str]) -> Manifest | None:
    """The store's current manifest, or None if nothing was published yet."""
    p = Path(store) / MANIFEST
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise os_error(p, e) from None
    return parse_manifest(data, str(p))


def write_atomic(path: Path, data: bytes, *, fsync: bool = True) -> None:
    """Write ``data`` to ``path`` whole or not at all (errors propagate to the publisher)."""
    write_atomic_bytes(path, data, fsync=fsync)
