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
    data: Buffer, min_size: int, avg_size: int, max_size: int
) -> npt.NDArray[np.int64]: ...
