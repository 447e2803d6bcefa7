"""Chunk layouts: read from a CVMFS mount's extended attributes, or computed by a chunker.

A :class:`Layout` is where a file's chunks start and how long they are, plus where the
layout came from.  On a CVMFS mount the real layout is in the ``user.chunk_list``
extended attribute (``shared/cvmfs-facts.md`` §3); anywhere else (or to ask "what if")
it is computed by one of the chunkers (CVMFS xor32, fixed size, FastCDC, layout-aware).

The xattr parsers are pure functions on text so they can be tested on captured real
outputs and fuzzed; on bad input they raise :class:`UsageError` with one line naming
the file, the attribute and the problem, never any other exception.
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from cvmfs_modelio.core.errors import UsageError, os_error

# CVMFS server.conf defaults (cvmfs-facts.md §1) and `cvmfs_swissknife graft`'s fixed size.
CVMFS_MIN_CHUNK_SIZE = 4 * 1024 * 1024
CVMFS_AVG_CHUNK_SIZE = 8 * 1024 * 1024
CVMFS_MAX_CHUNK_SIZE = 16 * 1024 * 1024
GRAFT_CHUNK_SIZE = 24 * 1024 * 1024

SOURCES = ("cvmfs-xattr", "xor32", "fixed", "fastcdc", "layout-aware", "whole")
INT64_MAX = (1 << 63) - 1

I64Array = npt.NDArray[np.int64]


class NotOnCvmfsError(UsageError):
    """The file has no ``user.chunk_list`` attribute: it is not on a CVMFS mount."""


@dataclass(frozen=True, eq=False)
class Layout:
    """A file cut into chunks.

    ``offsets[i]`` is where chunk ``i`` starts (bytes, int64, ``offsets[0] == 0``),
    ``sizes[i]`` its length in bytes; the chunks tile ``[0, file_size)``.  A layout with
    one chunk is an unchunked file (CVMFS stores it as one object, fetched whole at
    ``open()``).  ``hashes`` are the object names (hex) when known, ``source`` is one of
    :data:`SOURCES`, ``params`` the chunker parameters in bytes (``min``, ``avg``,
    ``max``, ``size``) and ``compression`` the CVMFS compression (``zlib``/``none``)
    when read from a mount.
    """

    offsets: I64Array
    sizes: I64Array
    file_size: int
    hashes: tuple[str, ...] | None
    source: str
    params: dict[str, int] = field(default_factory=dict)
    compression: str | None = None

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"unknown layout source {self.source!r}")
        offs = np.ascontiguousarray(self.offsets, dtype=np.int64)
        sizes = np.ascontiguousarray(self.sizes, dtype=np.int64)
        offs.setflags(write=False)
        sizes.setflags(write=False)
        object.__setattr__(self, "offsets", offs)
        object.__setattr__(self, "sizes", sizes)
        if offs.ndim != 1 or offs.shape != sizes.shape or len(offs) == 0:
            raise ValueError("a layout needs matching 1-d offsets and sizes, at least one chunk")
        if offs[0] != 0 or int(offs[-1]) + int(sizes[-1]) != self.file_size:
            raise ValueError("chunks must start at 0 and end at file_size")
        if len(offs) > 1 and (np.any(offs[1:] != offs[:-1] + sizes[:-1]) or np.any(sizes <= 0)):
            raise ValueError("chunks must tile the file without gaps, overlaps or empty chunks")
        if self.hashes is not None and len(self.hashes) != len(offs):
            raise ValueError("one hash per chunk")

    @classmethod
    def from_offsets(
        cls,
        offsets: npt.ArrayLike,
        file_size: int,
        source: str,
        params: Mapping[str, int] | None = None,
        hashes: Sequence[str] | None = None,
    ) -> Layout:
        """Build a layout from chunk start offsets (bytes) and the file size (bytes)."""
        offs = np.asarray(offsets, dtype=np.int64)
        sizes = np.diff(np.append(offs, np.int64(file_size))).astype(np.int64)
        return cls(
            offsets=offs,
            sizes=sizes,
            file_size=int(file_size),
            hashes=tuple(hashes) if hashes is not None else None,
            source=source,
            params=dict(params or {}),
        )

    @property
    def n_chunks(self) -> int:
        """Number of chunks (1 for an unchunked file)."""
        return len(self.offsets)

    @property
    def chunked(self) -> bool:
        """True when CVMFS would store the file as several chunk objects."""
        return len(self.offsets) > 1

    @property
    def ends(self) -> I64Array:
        """Exclusive end offset of each chunk (bytes)."""
        return self.offsets + self.sizes

    def chunk_of(self, offset: npt.ArrayLike) -> npt.NDArray[np.intp]:
        """Index of the chunk holding each byte offset."""
        return np.searchsorted(self.offsets, np.asarray(offset, dtype=np.int64), side="right") - 1

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Layout):
            return NotImplemented
        return (
            self.file_size == other.file_size
            and np.array_equal(self.offsets, other.offsets)
            and np.array_equal(self.sizes, other.sizes)
            and self.hashes == other.hashes
            and self.source == other.source
            and self.params == other.params
            and self.compression == other.compression
        )

    __hash__ = None  # type: ignore[assignment]

    def to_dict(self, with_chunks: bool = True) -> dict[str, Any]:
        """JSON-ready description; keys carry units (sizes in bytes)."""
        d: dict[str, Any] = {
            "source": self.source,
            "params": params_with_units(self.params),
            "file_size_bytes": self.file_size,
            "n_chunks": self.n_chunks,
            "chunked": self.chunked,
            "compression": self.compression,
        }
        if with_chunks:
            d["chunks"] = [
                {"offset_bytes": int(o), "size_bytes": int(s)}
                | ({"hash": self.hashes[i]} if self.hashes is not None else {})
                for i, (o, s) in enumerate(zip(self.offsets, self.sizes, strict=True))
            ]
        return d


def params_with_units(params: dict[str, Any]) -> dict[str, Any]:
    """Chunker parameters for JSON: the sizes (``min``/``avg``/``max``/``size``) as
    ``min_bytes``..., other keys as they are."""
    sizes = ("min", "avg", "max", "size")
    return {(f"{k}_bytes" if k in sizes else k): v for k, v in params.items()}


def whole_layout(file_size: int) -> Layout:
    """The layout of an unchunked file: one object of ``file_size`` bytes."""
    return Layout.from_offsets([0], file_size, "whole")


# ------------------------------------------------------------------ chunker specs


@dataclass(frozen=True)
class ChunkSpec:
    """Which chunker to run and its parameters (bytes).

    ``kind`` is ``xor32`` (CVMFS, min/avg/max), ``fastcdc`` (min/avg/max), ``fixed``
    (``size``), ``layout-aware`` (min/avg/max plus preferred cut offsets),
    ``tensor-aware`` (layout-aware at the file's ONNX tensor boundaries) or ``whole``.
    """

    kind: str = "xor32"
    min_size: int = CVMFS_MIN_CHUNK_SIZE
    avg_size: int = CVMFS_AVG_CHUNK_SIZE
    max_size: int = CVMFS_MAX_CHUNK_SIZE
    size: int = GRAFT_CHUNK_SIZE
    preferred: tuple[int, ...] = ()

    def validate(self) -> None:
        """Raise UsageError unless the parameters are usable by this chunker."""
        if self.kind not in ("xor32", "fastcdc", "fixed", "layout-aware", "tensor-aware", "whole"):
            raise UsageError(f"unknown chunker {self.kind!r}")
        if self.kind == "fixed":
            if not 1 <= self.size <= INT64_MAX // 2:
                raise UsageError(
                    f"fixed chunk size must be at least 1 byte and at most 2^62, got {self.size}"
                )
            return
        if self.kind == "whole":
            return
        validate_min_avg_max(self.min_size, self.avg_size, self.max_size)
        if self.kind == "fastcdc" and self.min_size < 64:
            raise UsageError(
                f"FastCDC min chunk size must be at least 64 bytes, got {self.min_size}"
            )

    @property
    def params(self) -> dict[str, int]:
        """The parameters this chunker uses, for :attr:`Layout.params`."""
        if self.kind == "fixed":
            return {"size": self.size}
        if self.kind == "whole":
            return {}
        return {"min": self.min_size, "avg": self.avg_size, "max": self.max_size}

    def label(self) -> str:
        """Short human description, e.g. ``xor32 4.0 MiB/8.0 MiB/16.0 MiB``."""
        from cvmfs_modelio.core.units import fmt_bytes

        if self.kind == "fixed":
            return f"fixed {fmt_bytes(self.size)}"
        if self.kind == "whole":
            return "whole"
        return (
            f"{self.kind} {fmt_bytes(self.min_size)}/{fmt_bytes(self.avg_size)}"
            f"/{fmt_bytes(self.max_size)}"
        )


def validate_min_avg_max(min_size: int, avg_size: int, max_size: int) -> None:
    """CVMFS's rule: ``32 <= min < avg < max`` (bytes); UsageError otherwise."""
    if min_size < 32:
        raise UsageError(f"min chunk size must be at least 32 bytes, got {min_size}")
    if not (min_size < avg_size < max_size):
        raise UsageError(
            f"chunk sizes must satisfy min < avg < max, got {min_size}, {avg_size}, {max_size}"
        )
    if max_size > INT64_MAX // 2:
        raise UsageError(f"max chunk size {max_size} is too large")


def _fixed_offsets(file_size: int, size: int) -> I64Array:
    if file_size <= size:
        return np.zeros(1, dtype=np.int64)
    return np.arange(0, file_size, size, dtype=np.int64)


def compute_layout(path: str | os.PathLike[str], spec: ChunkSpec | None = None) -> Layout:
    """Chunk the file at ``path`` with ``spec`` (default: CVMFS xor32 4/8/16 MiB)."""
    spec = spec or ChunkSpec()
    spec.validate()
    name = os.fspath(path)
    try:
        st = os.stat(name)
    except OSError as e:
        raise os_error(name, e) from None
    if not _is_regular(st.st_mode):
        raise UsageError(f"{name}: not a regular file")
    if spec.kind == "whole":
        return whole_layout(st.st_size)
    if spec.kind == "fixed":
        return Layout.from_offsets(
            _fixed_offsets(st.st_size, spec.size), st.st_size, "fixed", spec.params
        )
    if spec.kind == "tensor-aware":
        from cvmfs_modelio.models.tensor_bounds import tensor_boundaries

        spec = ChunkSpec(
            kind="layout-aware",
            min_size=spec.min_size,
            avg_size=spec.avg_size,
            max_size=spec.max_size,
            preferred=tuple(tensor_boundaries(name)),
        )
    native = _native_file_chunker(spec)
    try:
        offsets, size = native(name)
    except OSError as e:
        raise os_error(name, e) from None
    return Layout.from_offsets(offsets, size, spec.kind, spec.params)


def _native_file_chunker(spec: ChunkSpec) -> Callable[[str], tuple[I64Array, int]]:
    from cvmfs_modelio import _native

    return lambda p: _native.chunk_offsets_file(
        p,
        spec.kind,
        spec.min_size,
        spec.avg_size,
        spec.max_size,
        spec.size,
        list(spec.preferred),
    )


def _is_regular(mode: int) -> bool:
    import stat

    return stat.S_ISREG(mode)


# ------------------------------------------------------------------ CVMFS xattrs

CHUNK_LIST = "user.chunk_list"
_HEADER = "hash,offset,size"
# SHA-1 (default), RIPEMD-160 and SHAKE-128 object names are 160 bits; the latter two
# carry a suffix (cvmfs-facts.md §1).
_HASH_RE = re.compile(r"[0-9a-f]{40}(?:-rmd160|-shake128)?")
_UINT_RE = re.compile(r"(?:0|[1-9][0-9]{0,18})")
_NUM_PAGES_RE = re.compile(r"num_pages, ([0-9]{1,9})")
_HUMAN_PAGES_RE = re.compile(r"Pages available: ([0-9]{1,9})")
_MAX_PAGES = 1_000_000


def _text(value: str | bytes, where: str) -> str:
    if isinstance(value, bytes):
        try:
            return value.decode("ascii")
        except UnicodeDecodeError:
            raise UsageError(f"{where}: not ASCII text") from None
    return value


def parse_num_pages(value: str | bytes, where: str = "user.chunk_list~?") -> int:
    """Page count from ``user.chunk_list~?`` (``num_pages, N``) or ``@?`` (human form)."""
    text = _text(value, where).strip()
    m = _NUM_PAGES_RE.fullmatch(text)
    if m is None:
        lines = text.splitlines()
        if len(lines) == 2 and lines[0].startswith("Access xattr"):
            m = _HUMAN_PAGES_RE.fullmatch(lines[1].strip())
    if m is None:
        raise UsageError(f"{where}: expected 'num_pages, N', got {_shorten(text)}")
    n = int(m[1])
    if not 1 <= n <= _MAX_PAGES:
        raise UsageError(f"{where}: page count {n} out of range")
    return n


def parse_chunk_list_page(
    value: str | bytes, where: str = CHUNK_LIST
) -> list[tuple[str, int, int]]:
    """Rows ``(hash, offset, size)`` of one ``user.chunk_list`` page (``~N`` or ``@N`` form).

    The page is a header line ``hash,offset,size`` then one ``<hex>,<offset>,<size>``
    line per chunk; the human-readable ``@N`` form has a ``#`` comment line first.
    """
    text = _text(value, where)
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if lines and lines[0].startswith("#"):
        lines.pop(0)
    if not lines or lines[0] != _HEADER:
        first = lines[0] if lines else ""
        raise UsageError(f"{where}: expected header line {_HEADER!r}, got {_shorten(first)}")
    rows: list[tuple[str, int, int]] = []
    for lineno, line in enumerate(lines[1:], start=2):
        parts = line.split(",")
        if (
            len(parts) != 3
            or _HASH_RE.fullmatch(parts[0]) is None
            or _UINT_RE.fullmatch(parts[1]) is None
            or _UINT_RE.fullmatch(parts[2]) is None
        ):
            raise UsageError(
                f"{where}: line {lineno}: expected '<hex>,<offset>,<size>', got {_shorten(line)}"
            )
        rows.append((parts[0], int(parts[1]), int(parts[2])))
    return rows


def parse_chunk_list(
    pages: Sequence[str | bytes], where: str = CHUNK_LIST
) -> tuple[I64Array, I64Array, tuple[str, ...]]:
    """Offsets, sizes (bytes) and object names from all pages of ``user.chunk_list``.

    Checks that the chunks tile the file from offset 0 without gaps or overlaps.
    """
    if not pages:
        raise UsageError(f"{where}: no pages")
    rows: list[tuple[str, int, int]] = []
    for i, page in enumerate(pages):
        page_rows = parse_chunk_list_page(page, f"{where}~{i}" if len(pages) > 1 else where)
        if not page_rows:
            raise UsageError(f"{where}~{i}: page has no chunks")
        rows.extend(page_rows)
    end = 0
    for i, (_h, off, size) in enumerate(rows):
        if off != end:
            raise UsageError(
                f"{where}: chunk {i} starts at {off}, expected {end} (chunks must tile the file)"
            )
        if size == 0 and len(rows) > 1:
            raise UsageError(f"{where}: chunk {i} is empty")
        end = off + size
        if end > INT64_MAX:
            raise UsageError(f"{where}: chunk {i} ends beyond 2^63 bytes")
    offsets = np.fromiter((r[1] for r in rows), dtype=np.int64, count=len(rows))
    sizes = np.fromiter((r[2] for r in rows), dtype=np.int64, count=len(rows))
    return offsets, sizes, tuple(r[0] for r in rows)


def layout_from_xattrs(attrs: Mapping[str, str | bytes], path: str = "<xattrs>") -> Layout:
    """Build the real layout from a file's CVMFS extended attribute values.

    ``attrs`` maps attribute names to values: ``user.chunk_list~?`` with
    ``user.chunk_list~0`` .. ``~N-1`` (or only ``user.chunk_list`` for a single page;
    ``@?``/``@N`` human-readable forms are accepted too), and optionally ``user.chunks``,
    ``user.hash`` and ``user.compression``, which are cross-checked.
    """
    where = f"{path}: {CHUNK_LIST}"
    pages: list[str | bytes]
    if f"{CHUNK_LIST}~?" in attrs or f"{CHUNK_LIST}@?" in attrs:
        sep = "~" if f"{CHUNK_LIST}~?" in attrs else "@"
        n = parse_num_pages(attrs[f"{CHUNK_LIST}{sep}?"], f"{path}: {CHUNK_LIST}{sep}?")
        pages = []
        for i in range(n):
            key = f"{CHUNK_LIST}{sep}{i}"
            if key not in attrs:
                if i == 0 and n == 1 and CHUNK_LIST in attrs:
                    key = CHUNK_LIST
                else:
                    raise UsageError(f"{path}: {key} missing ({CHUNK_LIST}{sep}? says {n} pages)")
            pages.append(attrs[key])
    elif CHUNK_LIST in attrs:
        pages = [attrs[CHUNK_LIST]]
    else:
        raise NotOnCvmfsError(f"{path}: not on CVMFS (no {CHUNK_LIST} attribute)")
    offsets, sizes, hashes = parse_chunk_list(pages, where)
    n_chunks = len(offsets)
    if "user.chunks" in attrs:
        text = _text(attrs["user.chunks"], f"{path}: user.chunks").strip()
        if _UINT_RE.fullmatch(text) is None:
            raise UsageError(f"{path}: user.chunks: expected a number, got {_shorten(text)}")
        if int(text) != n_chunks:
            raise UsageError(
                f"{path}: user.chunks says {int(text)} chunks, {CHUNK_LIST} lists {n_chunks}"
            )
    if "user.hash" in attrs:
        h = _text(attrs["user.hash"], f"{path}: user.hash").strip()
        if n_chunks != 1 or h != hashes[0]:
            raise UsageError(f"{path}: user.hash {_shorten(h)} disagrees with {CHUNK_LIST}")
    compression: str | None = None
    if "user.compression" in attrs:
        compression = _text(attrs["user.compression"], f"{path}: user.compression").strip()
        if compression not in ("zlib", "none"):
            raise UsageError(f"{path}: user.compression: unknown value {_shorten(compression)}")
    file_size = int(offsets[-1] + sizes[-1])
    return Layout(
        offsets=offsets,
        sizes=sizes,
        file_size=file_size,
        hashes=hashes,
        source="cvmfs-xattr",
        params={},
        compression=compression,
    )


def _shorten(text: str, limit: int = 60) -> str:
    r = repr(text)
    return r if len(r) <= limit else r[: limit - 3] + "..."


_NOT_THERE = (errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS)


def _getxattr(path: str, name: str) -> bytes | None:
    try:
        return os.getxattr(path, name)
    except OSError as e:
        if e.errno in _NOT_THERE:
            return None
        raise UsageError(f"{path}: cannot read attribute {name}: {e.strerror}") from None


def read_cvmfs_xattrs(path: str | os.PathLike[str]) -> dict[str, bytes]:
    """The raw CVMFS attribute values of ``path`` (only those the file system answers)."""
    name = os.fspath(path)
    if not os.path.exists(name):
        raise UsageError(f"{name}: no such file or directory")
    attrs: dict[str, bytes] = {}
    pages = _getxattr(name, f"{CHUNK_LIST}~?")
    if pages is not None:
        attrs[f"{CHUNK_LIST}~?"] = pages
        n = parse_num_pages(pages, f"{name}: {CHUNK_LIST}~?")
        for i in range(n):
            v = _getxattr(name, f"{CHUNK_LIST}~{i}")
            if v is None:
                raise UsageError(f"{name}: {CHUNK_LIST}~{i} missing ({CHUNK_LIST}~? says {n})")
            attrs[f"{CHUNK_LIST}~{i}"] = v
    else:
        v = _getxattr(name, CHUNK_LIST)
        if v is not None:
            attrs[CHUNK_LIST] = v
    for extra in ("user.chunks", "user.hash", "user.compression"):
        v = _getxattr(name, extra)
        if v is not None:
            attrs[extra] = v
    return attrs


def read_cvmfs_layout(path: str | os.PathLike[str]) -> Layout:
    """The real layout of a file on a CVMFS mount, from its extended attributes.

    Raises UsageError ``<path>: not on CVMFS (no user.chunk_list attribute)`` on any other
    file system, and a one-line UsageError if the attributes are malformed or disagree
    with the file's size.
    """
    name = os.fspath(path)
    layout = layout_from_xattrs(read_cvmfs_xattrs(name), name)
    try:
        size = os.stat(name).st_size
    except OSError as e:
        raise UsageError(f"{name}: cannot stat: {e.strerror}") from None
    if size != layout.file_size:
        raise UsageError(
            f"{name}: {CHUNK_LIST} covers {layout.file_size} bytes, the file has {size}"
        )
    return layout


def layout_for(
    path: str | os.PathLike[str],
    spec: ChunkSpec | None = None,
    *,
    source: str = "auto",
) -> Layout:
    """The layout of ``path``: real if it is on CVMFS, else computed.

    ``source="auto"``: the CVMFS xattrs when present, else ``spec`` (default: xor32 with
    CVMFS's 4/8/16 MiB).  ``source="cvmfs"``: xattrs only (UsageError when absent).
    ``source="compute"``: always run the chunker (what-if on a CVMFS file too).
    The result's :attr:`Layout.source` says which it is.
    """
    if source not in ("auto", "cvmfs", "compute"):
        raise ValueError(f"source must be auto, cvmfs or compute, not {source!r}")
    if source != "compute":
        try:
            return read_cvmfs_layout(path)
        except NotOnCvmfsError:
            if source == "cvmfs":
                raise
    return compute_layout(path, spec)


def parse_min_avg_max(text: str, what: str = "chunk sizes") -> tuple[int, int, int]:
    """``4MiB/8MiB/16MiB`` into validated (min, avg, max) bytes.

    The one spelling of a chunk-size triple in every command (``/``: a comma separates
    configurations in lists such as ``--configs``).
    """
    from cvmfs_modelio.core.units import parse_size

    parts = text.split("/")
    if len(parts) != 3:
        hint = f" ({text.replace(',', '/')}?)" if text.count(",") == 2 else ""
        raise UsageError(f"{what}: expected MIN/AVG/MAX, got {text!r}{hint}")
    mn, avg, mx = (parse_size(p, what) for p in parts)
    validate_min_avg_max(mn, avg, mx)
    return mn, avg, mx


def parse_chunk_spec(text: str) -> ChunkSpec:
    """A chunker on the command line.

    ``MIN/AVG/MAX`` or ``xor32:MIN/AVG/MAX`` (CVMFS), ``fastcdc:MIN/AVG/MAX``,
    ``tensor-aware:MIN/AVG/MAX`` (cut at ONNX tensor boundaries),
    ``fixed:SIZE`` (``fixed`` alone: 24 MiB as ``cvmfs_swissknife graft``), ``whole``
    (or ``unchunked``: one object per file).
    """
    from cvmfs_modelio.core.units import parse_size

    kind, sep, rest = text.partition(":")
    if not sep:
        if text in ("whole", "unchunked", "fixed"):
            kind, rest = ("fixed" if text == "fixed" else "whole"), ""
        else:
            kind, rest = "xor32", text
    if kind == "unchunked":
        kind = "whole"
    if kind == "whole":
        if rest:
            raise UsageError(f"chunk config {text!r}: 'whole' takes no sizes")
        return ChunkSpec(kind="whole")
    if kind == "fixed":
        spec = ChunkSpec(
            kind="fixed", size=parse_size(rest, "fixed chunk size") if rest else GRAFT_CHUNK_SIZE
        )
    elif kind in ("xor32", "fastcdc", "tensor-aware"):
        mn, avg, mx = parse_min_avg_max(rest, f"{kind} chunk sizes")
        spec = ChunkSpec(kind=kind, min_size=mn, avg_size=avg, max_size=mx)
    else:
        raise UsageError(
            f"chunk config {text!r}: unknown chunker {kind!r} "
            "(xor32, fastcdc, tensor-aware, fixed, whole)"
        )
    spec.validate()
    return spec
