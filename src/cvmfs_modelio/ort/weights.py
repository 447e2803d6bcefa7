"""The same weights in another container: an ONNX model's initializers as a safetensors file.

Writes ``<name>.safetensors`` from any ONNX model (embedded or external data, a real one
such as a CMS tagger included) so that the safetensors loaders can be compared with ONNX
Runtime on identical bytes; the ``.onnx`` (with external data) serves as their graph, its
initializers supplied from the safetensors file.  The corpus' ``*-safetensors`` kinds
(``models make``) are not a replacement: they exist only for the corpus' own generated
architectures, and they leave out the graph constants (shapes, scalars) that this file
keeps, so the two do not hold the same tensor set for one model.
"""

from __future__ import annotations

import os
from pathlib import Path

from cvmfs_modelio.core.errors import UsageError


def onnx_to_safetensors(onnx_path: str | os.PathLike[str], out: str | os.PathLike[str]) -> Path:
    """Write every initializer of ``onnx_path`` to the safetensors file ``out`` (atomic)."""
    import onnx
    import safetensors.numpy
    from onnx import numpy_helper

    from cvmfs_modelio.models.formats.onnx import external_files

    src = Path(onnx_path)
    external_files(src, strict=False)  # refuses locations outside the model's directory
    try:
        model = onnx.load(str(src), load_external_data=True)
    except Exception as e:  # onnx raises many types on a bad file
        raise UsageError(f"{src}: not a readable ONNX model ({type(e).__name__})") from None
    tensors = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    if not tensors:
        raise UsageError(f"{src}: has no initializers to write")
    dest = Path(out)
    tmp = dest.with_name(f".{dest.name}.tmp{os.getpid()}")
    try:
        safetensors.numpy.save_file(tensors, str(tmp))
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return dest
