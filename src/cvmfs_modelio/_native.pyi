# Type stubs for the compiled extension (csrc/bindings).  Keep in step with register_*.cpp.
import numpy as np
import numpy.typing as npt
from typing_extensions import Buffer

EVENT_VERSION: int
EVENT_SIZE: int
EVENT_FIELDS: list[tuple[str, int, int]]

def monotonic_ns() -> int: ...

# chunking
def xor32_offsets_file(
    path: str, min_size: int, avg_size: int, max_size: int
) -> tuple[npt.NDArray[np.int64], int]: ...
def xor32_offsets(
    data: Buffer, min_size: int, avg_size: int, max_size: int, simd: bool = ...
) -> npt.NDArray[np.int64]: ...
def chunk_offsets(
    data: Buffer,
    kind: str,
    min_size: int = ...,
    avg_size: int = ...,
    max_size: int = ...,
    fixed_size: int = ...,
    preferred: list[int] = ...,
) -> npt.NDArray[np.int64]: ...
def chunk_offsets_file(
    path: str,
    kind: str,
    min_size: int = ...,
    avg_size: int = ...,
    max_size: int = ...,
    fixed_size: int = ...,
    preferred: list[int] = ...,
) -> tuple[npt.NDArray[np.int64], int]: ...

class Chunker:
    def __init__(
        self,
        kind: str,
        min_size: int = ...,
        avg_size: int = ...,
        max_size: int = ...,
        fixed_size: int = ...,
        preferred: list[int] = ...,
    ) -> None: ...
    def feed(self, data: Buffer) -> None: ...
    def finish(self) -> tuple[npt.NDArray[np.int64], int]: ...

def xor32_scan(
    data: Buffer, avg_size: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.uint32], int]: ...
def xor32_scan_file(
    path: str, avg_size: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.uint32], int]: ...
def xor32_threshold(avg_size: int) -> int: ...
def xor32_cuts(
    candidates: npt.NDArray[np.int64], file_size: int, min_size: int, max_size: int
) -> npt.NDArray[np.int64]: ...
