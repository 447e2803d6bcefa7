"""The model corpus: synthetic MLP and decoder-transformer models in every storage form.

``make(kind, out, size_bytes=..., seed=...)`` writes one model.  A kind is ``ARCH-FORM``:

- ARCH ``mlp``: input normalisation, then ``MatMul + Add + Relu`` layers of ``width`` square
  float32 weights (the widest of 4096 ... 256 giving at least 8 layers), then a 10-way
  output layer (the shape of the CMS taggers, scaled up);
- ARCH ``decoder``: a GPT-shaped decoder (token and position embeddings, pre-LayerNorm
  blocks with causal self-attention and a GELU MLP, untied LM head), width and depth chosen
  from the size;
- ARCH ``minilm``: the real all-MiniLM-L6-v2 encoder (:mod:`cvmfs_modelio.models.minilm`);
- FORM ``onnx`` (weights embedded; below the 2 GiB protobuf limit), ``onnx-ext`` (one
  external ``.data`` file, tensors packed back to back), ``onnx-ext4k`` / ``onnx-ext64k``
  (each tensor 4 KiB / 64 KiB aligned), ``ort`` (ONNX Runtime's flatbuffer, converted by
  ONNX Runtime itself; below its 2 GiB flatbuffer limit) and ``safetensors`` (the same
  weights, same order, as a safetensors file).

Same kind, size and seed give byte-identical files.  Weights are streamed: each tensor is
cut into blocks, each block a window of a seeded pool of normal deviates at a seeded offset
times a seeded scale, so values are never constant and compress like random float32 (no
block repeats, so chunk-level deduplication finds nothing, as for trained weights), while
generation runs at memory speed: a model above 2 GiB is written in seconds.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cvmfs_modelio.core.errors import UsageError
from cvmfs_modelio.models import writers
from cvmfs_modelio.models.writers import Weight

ARCHS = ("mlp", "decoder", "minilm")
FORMS = ("onnx", "onnx-ext", "onnx-ext4k", "onnx-ext64k", "ort", "safetensors")
ALIGN = {"onnx-ext": 0, "onnx-ext4k": 4096, "onnx-ext64k": 65536}
SUFFIX = {"ort": ".ort", "safetensors": ".safetensors"}
KINDS = tuple(f"{a}-{f}" for a in ARCHS for f in FORMS)
DEFAULT_SIZE = 64 << 20
POOL = 1 << 22  # normal deviates in the pool (16 MiB of float32)
BLOCK = 1 << 22  # elements per generated block
MLP_INPUTS = 300  # 1200-byte normalisation vectors: external, so packed data is unaligned
MLP_CLASSES = 10
OPSET = 17
IR_VERSION = 8


@dataclass(frozen=True)
class Generated:
    """What :func:`make` wrote: the files (model first), the weight bytes and a description."""

    kind: str
    files: tuple[Path, ...]
    weight_bytes: int
    params: dict[str, Any]


def parse_kind(kind: str) -> tuple[str, str]:
    arch, _, form = kind.partition("-")
    if arch not in ARCHS or form not in FORMS:
        raise UsageError(f"unknown model kind {kind!r} (kinds: {', '.join(KINDS)})")
    return arch, form


class SeededWeights:
    """Deterministic, streamable, non-constant float32 values (see the module docstring)."""

    def __init__(self, seed: int) -> None:
        rng = np.random.Generator(np.random.PCG64([seed, 0x5EED]))
        pool = rng.standard_normal(POOL, dtype=np.float32)
        self._pool = np.concatenate([pool, pool])  # any window of <= POOL values is a slice
        self.seed = seed

    def weight(
        self, index: int, name: str, shape: tuple[int, ...], scale: float, center: float = 0.0
    ) -> Weight:
        n = int(np.prod(shape, dtype=np.int64))

        def blocks() -> Iterator[np.ndarray]:
            rng = np.random.Generator(np.random.PCG64([self.seed, 1 + index]))
            done = 0
            while done < n:
                k = min(BLOCK, n - done)
                off = int(rng.integers(0, POOL))
                mult = np.float32(scale * (0.75 + 0.5 * rng.random()))
                out = self._pool[off : off + k] * mult
                if center:
                    out += np.float32(center)
                yield out
                done += k

        return Weight(name, shape, blocks)


def _helper() -> Any:
    from onnx import helper

    return helper


def _model(nodes: list[Any], inputs: list[Any], outputs: list[Any], name: str) -> Any:
    helper = _helper()
    graph = helper.make_graph(nodes, name, inputs, outputs)
    m = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="cvmfs-modelio",
    )
    m.ir_version = IR_VERSION
    return m


def _const_weights(values: dict[str, np.ndarray]) -> list[Weight]:
    """Small fixed tensors (shapes, scalars): graph constants, not parameters."""
    return [writers.constant(name, arr) for name, arr in values.items()]


def mlp(
    size_bytes: int, seed: int, width: int | None = None
) -> tuple[Any, list[Weight], dict[str, Any]]:
    """An MLP of about ``size_bytes`` of float32 weights (whole layers)."""
    helper = _helper()
    from onnx import TensorProto

    if width is None:  # the widest layers that still give at least 8 of them
        width = next((w for w in (4096, 2048, 1024, 512, 256) if 32 * w * w <= size_bytes), 128)
    per_layer = 4 * (width * width + width)
    fixed = 4 * (2 * MLP_INPUTS + MLP_INPUTS * width + width + width * MLP_CLASSES + MLP_CLASSES)
    layers = max(0, (size_bytes - fixed) // per_layer)
    gen = SeededWeights(seed)
    ws: list[Weight] = [
        gen.weight(0, "input_mean", (MLP_INPUTS,), 1.0),
        gen.weight(1, "input_std", (MLP_INPUTS,), 0.05, center=1.0),
        gen.weight(2, "fc_in.weight", (MLP_INPUTS, width), 1 / math.sqrt(MLP_INPUTS)),
        gen.weight(3, "fc_in.bias", (width,), 0.01),
    ]
    nodes = [
        helper.make_node("Sub", ["x", "input_mean"], ["x_c"], name="norm_sub"),
        helper.make_node("Div", ["x_c", "input_std"], ["x_n"], name="norm_div"),
        helper.make_node("MatMul", ["x_n", "fc_in.weight"], ["h_in_mm"], name="fc_in_mm"),
        helper.make_node("Add", ["h_in_mm", "fc_in.bias"], ["h_in_pre"], name="fc_in_add"),
        helper.make_node("Relu", ["h_in_pre"], ["h_in"], name="fc_in_relu"),
    ]
    prev = "h_in"
    for i in range(layers):
        w, b = f"fc{i}.weight", f"fc{i}.bias"
        ws.append(gen.weight(4 + 2 * i, w, (width, width), 1 / math.sqrt(width)))
        ws.append(gen.weight(5 + 2 * i, b, (width,), 0.01))
        nodes += [
            helper.make_node("MatMul", [prev, w], [f"h{i}_mm"], name=f"fc{i}_mm"),
            helper.make_node("Add", [f"h{i}_mm", b], [f"h{i}_pre"], name=f"fc{i}_add"),
            helper.make_node("Relu", [f"h{i}_pre"], [f"h{i}"], name=f"fc{i}_relu"),
        ]
        prev = f"h{i}"
    k = 4 + 2 * layers
    ws.append(gen.weight(k, "fc_out.weight", (width, MLP_CLASSES), 1 / math.sqrt(width)))
    ws.append(gen.weight(k + 1, "fc_out.bias", (MLP_CLASSES,), 0.01))
    nodes += [
        helper.make_node("MatMul", [prev, "fc_out.weight"], ["logits_mm"], name="fc_out_mm"),
        helper.make_node("Add", ["logits_mm", "fc_out.bias"], ["logits"], name="fc_out_add"),
        helper.make_node("Softmax", ["logits"], ["y"], name="softmax", axis=-1),
    ]
    model = _model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", MLP_INPUTS])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", MLP_CLASSES])],
        "synthetic_mlp",
    )
    params = {"arch": "mlp", "width": width, "hidden_layers": layers, "inputs": MLP_INPUTS}
    return model, ws, params


def decoder_shape(size_bytes: int) -> tuple[int, int, int, int]:
    """(d_model, layers, vocab, context) of a decoder of about ``size_bytes`` of weights."""
    # GPT-2 widths (768 ... 1600): packed tensors then fall on 256 B-1 KiB, not 4 KiB, bounds.
    for d in (1600, 1280, 768, 384, 192, 128):
        vocab = 32000 if size_bytes >= (256 << 20) else 8000
        ctx = 512
        emb = 4 * (2 * vocab * d + ctx * d + 2 * d)
        per_layer = 4 * (12 * d * d + 13 * d)
        if size_bytes >= emb + 4 * per_layer:
            return d, (size_bytes - emb) // per_layer, vocab, ctx
    return 64, 2, 1000, 128


def decoder(size_bytes: int, seed: int) -> tuple[Any, list[Weight], dict[str, Any]]:
    """A GPT-shaped decoder of about ``size_bytes`` of float32 weights."""
    helper = _helper()
    from onnx import TensorProto

    d, layers, vocab, ctx = decoder_shape(size_bytes)
    heads = max(1, d // 64)
    dh = d // heads
    gen = SeededWeights(seed)
    idx = iter(range(1 << 30))
    ws: list[Weight] = [
        gen.weight(next(idx), "wte", (vocab, d), 0.02),
        gen.weight(next(idx), "wpe", (ctx, d), 0.01),
    ]
    ws += _const_weights(
        {
            "split_qkv": np.array([d, d, d], dtype=np.int64),
            "heads_shape": np.array([0, 0, heads, dh], dtype=np.int64),
            "merge_shape": np.array([0, 0, d], dtype=np.int64),
            "attn_scale": np.array(1 / math.sqrt(dh), dtype=np.float32),
            "inv_sqrt2": np.array(1 / math.sqrt(2), dtype=np.float32),
            "half": np.array(0.5, dtype=np.float32),
            "one": np.array(1.0, dtype=np.float32),
            "zero_i": np.array(0, dtype=np.int64),
            "one_i": np.array(1, dtype=np.int64),
            "axes0": np.array([0], dtype=np.int64),
        },
    )
    n = helper.make_node
    nodes = [
        n("Shape", ["input_ids"], ["ids_shape"], name="ids_shape"),
        n("Gather", ["ids_shape", "one_i"], ["seq"], name="seq_len", axis=0),
        n("Unsqueeze", ["seq", "axes0"], ["seq_1"], name="seq_1d"),
        n("Range", ["zero_i", "seq", "one_i"], ["pos_ids"], name="pos_ids"),
        n("Gather", ["wte", "input_ids"], ["tok_emb"], name="tok_emb"),
        n("Gather", ["wpe", "pos_ids"], ["pos_emb"], name="pos_emb"),
        n("Add", ["tok_emb", "pos_emb"], ["h_emb"], name="emb_add"),
        # Causal mask [T, T]: -1e9 above the diagonal, 0 elsewhere.
        n("Concat", ["seq_1", "seq_1"], ["mask_shape"], name="mask_shape", axis=0),
        n(
            "ConstantOfShape",
            ["mask_shape"],
            ["mask_full"],
            name="mask_full",
            value=helper.make_tensor("v", TensorProto.FLOAT, [1], [-1e9]),
        ),
        n("Trilu", ["mask_full", "one_i"], ["mask"], name="mask", upper=1),
    ]
    h = "h_emb"

    def lin(prefix: str, x: str, din: int, dout: int, out: str, i: int) -> None:
        ws.append(gen.weight(next(idx), f"{prefix}.weight", (din, dout), 1 / math.sqrt(din)))
        ws.append(gen.weight(next(idx), f"{prefix}.bias", (dout,), 0.01))
        nodes.append(n("MatMul", [x, f"{prefix}.weight"], [f"{out}_mm"], name=f"{prefix}_mm"))
        nodes.append(n("Add", [f"{out}_mm", f"{prefix}.bias"], [out], name=f"{prefix}_add"))
        del i

    def ln(prefix: str, x: str, out: str) -> None:
        ws.append(gen.weight(next(idx), f"{prefix}.weight", (d,), 0.02, center=1.0))
        ws.append(gen.weight(next(idx), f"{prefix}.bias", (d,), 0.02))
        nodes.append(
            n(
                "LayerNormalization",
                [x, f"{prefix}.weight", f"{prefix}.bias"],
                [out],
                name=prefix,
                axis=-1,
                epsilon=1e-5,
            )
        )

    for i in range(layers):
        p = f"blocks.{i}"
        ln(f"{p}.ln1", h, f"{p}.a")
        lin(f"{p}.attn.qkv", f"{p}.a", d, 3 * d, f"{p}.qkv", i)
        q, k, v = f"{p}.q", f"{p}.k", f"{p}.v"
        nodes.append(n("Split", [f"{p}.qkv", "split_qkv"], [q, k, v], name=f"{p}.split", axis=2))
        for t, perm in ((q, [0, 2, 1, 3]), (k, [0, 2, 3, 1]), (v, [0, 2, 1, 3])):
            nodes.append(n("Reshape", [t, "heads_shape"], [f"{t}_r"], name=f"{t}_reshape"))
            nodes.append(n("Transpose", [f"{t}_r"], [f"{t}_t"], name=f"{t}_transpose", perm=perm))
        nodes += [
            n("MatMul", [f"{q}_t", f"{k}_t"], [f"{p}.s0"], name=f"{p}.scores"),
            n("Mul", [f"{p}.s0", "attn_scale"], [f"{p}.s1"], name=f"{p}.scale"),
            n("Add", [f"{p}.s1", "mask"], [f"{p}.s2"], name=f"{p}.mask"),
            n("Softmax", [f"{p}.s2"], [f"{p}.pr"], name=f"{p}.softmax", axis=-1),
            n("MatMul", [f"{p}.pr", f"{v}_t"], [f"{p}.ctx"], name=f"{p}.context"),
            n("Transpose", [f"{p}.ctx"], [f"{p}.ctx_t"], name=f"{p}.ctx_t", perm=[0, 2, 1, 3]),
            n("Reshape", [f"{p}.ctx_t", "merge_shape"], [f"{p}.ctx_m"], name=f"{p}.merge"),
        ]
        lin(f"{p}.attn.proj", f"{p}.ctx_m", d, d, f"{p}.o", i)
        nodes.append(n("Add", [h, f"{p}.o"], [f"{p}.h1"], name=f"{p}.res1"))
        ln(f"{p}.ln2", f"{p}.h1", f"{p}.m")
        lin(f"{p}.mlp.fc", f"{p}.m", d, 4 * d, f"{p}.f", i)
        nodes += [  # exact GELU: x * 0.5 * (1 + erf(x / sqrt 2))
            n("Mul", [f"{p}.f", "inv_sqrt2"], [f"{p}.g0"], name=f"{p}.gelu_div"),
            n("Erf", [f"{p}.g0"], [f"{p}.g1"], name=f"{p}.gelu_erf"),
            n("Add", [f"{p}.g1", "one"], [f"{p}.g2"], name=f"{p}.gelu_add"),
            n("Mul", [f"{p}.g2", "half"], [f"{p}.g3"], name=f"{p}.gelu_half"),
            n("Mul", [f"{p}.f", f"{p}.g3"], [f"{p}.g"], name=f"{p}.gelu"),
        ]
        lin(f"{p}.mlp.proj", f"{p}.g", 4 * d, d, f"{p}.y", i)
        nodes.append(n("Add", [f"{p}.h1", f"{p}.y"], [f"{p}.out"], name=f"{p}.res2"))
        h = f"{p}.out"
    ln("ln_f", h, "h_final")
    ws.append(gen.weight(next(idx), "lm_head.weight", (d, vocab), 1 / math.sqrt(d)))
    nodes.append(n("MatMul", ["h_final", "lm_head.weight"], ["logits"], name="lm_head"))
    model = _model(
        nodes,
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", "seq", vocab])],
        "synthetic_decoder",
    )
    params = {
        "arch": "decoder",
        "d_model": d,
        "layers": layers,
        "heads": heads,
        "vocab": vocab,
        "context": ctx,
    }
    return model, ws, params


def output_paths(kind: str, out: Path) -> tuple[Path, ...]:
    """The files :func:`make` writes for ``kind`` at ``out``."""
    _arch, form = parse_kind(kind)
    if form in ALIGN:
        return (out, out.with_name(out.name + ".data"))
    return (out,)


def make(
    kind: str,
    out: str | Path,
    *,
    size_bytes: int = DEFAULT_SIZE,
    seed: int = 0,
    minilm_dir: str | Path | None = None,
) -> Generated:
    """Write the model ``kind`` (``ARCH-FORM``) at ``out`` (see the module docstring)."""
    arch, form = parse_kind(kind)
    dest = Path(out)
    if dest.is_dir():
        raise UsageError(f"{dest}: is a directory (give the model file to write)")
    if not dest.parent.is_dir():
        raise UsageError(f"{dest}: directory {dest.parent} does not exist")
    if size_bytes <= 0:
        raise UsageError(f"--size: must be positive, got {size_bytes}")
    if arch == "minilm":
        from cvmfs_modelio.models import minilm

        model, ws, params = minilm.onnx_model(minilm_dir)
    elif arch == "mlp":
        model, ws, params = mlp(size_bytes, seed)
    else:
        model, ws, params = decoder(size_bytes, seed)
    params = {**params, "seed": seed, "form": form}
    total = sum(w.nbytes for w in ws if form != "safetensors" or not w.constant)
    if form == "onnx":
        writers.write_onnx_embedded(dest, model, ws)
    elif form in ALIGN:
        writers.write_onnx_external(dest, model, ws, align=ALIGN[form])
    elif form == "safetensors":
        writers.write_safetensors(dest, ws, {"format": "pt", "generator": f"cvmfs-modelio {kind}"})
    else:
        _make_ort(dest, model, ws, total)
    return Generated(kind, output_paths(kind, dest), total, params)


def _make_ort(dest: Path, model: Any, ws: list[Weight], total: int) -> None:
    import tempfile

    if total >= writers.PROTOBUF_LIMIT:
        raise UsageError(
            f"{dest}: {total} bytes of weights: ONNX Runtime cannot write an .ort model above "
            "the 2 GiB flatbuffer limit"
        )
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=f".{dest.name}.") as tmp:
        src = Path(tmp) / "model.onnx"
        writers.write_onnx_embedded(src, model, ws)
        writers.convert_to_ort(src, dest)


# ------------------------------------------------------------------ campaign kinds

FAMILIES = {"mlp": "mlp", "decoder": "transformer", "minilm": "transformer"}


def campaign_model_kinds() -> list[Any]:
    """Every corpus kind as a campaign model kind (``campaign.modelsrc`` picks this up):
    ``kind = "decoder-onnx-ext"`` with ``size`` and ``seed`` (the MiniLM kinds take neither:
    their bytes are the real model's, found as :func:`models.minilm.model_dir` finds it)."""
    from cvmfs_modelio.campaign.modelsrc import ModelKind
    from cvmfs_modelio.core import units

    def kind(name: str) -> Any:
        arch, form = parse_kind(name)
        keys: dict[str, Any] = {} if arch == "minilm" else {"size": "64MiB", "seed": 0}

        def check(params: Any, where: str) -> dict[str, Any]:
            out: dict[str, Any] = {}
            if "size" in keys:
                size = params.get("size", keys["size"])
                if isinstance(size, bool) or not isinstance(size, (str, int)):
                    raise UsageError(f'{where}: size must be a size such as "64MiB", got {size!r}')
                n = units.parse_size(size, f"{where}: size") if isinstance(size, str) else size
                if n <= 0:
                    raise UsageError(f"{where}: size must be positive, got {size!r}")
                seed = params.get("seed", 0)
                if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
                    raise UsageError(f"{where}: seed must be a non-negative integer, got {seed!r}")
                out = {"size": int(n), "seed": int(seed)}
            return out

        def make_in(directory: Path, params: Any) -> Path:
            out = directory / f"{arch}{SUFFIX.get(form, '.onnx')}"
            make(
                name,
                out,
                size_bytes=int(params.get("size", DEFAULT_SIZE)),
                seed=int(params.get("seed", 0)),
            )
            return out

        def describe(params: Any) -> str:
            if "size" not in params:
                return name
            size = int(params["size"])
            label = f"{size >> 20}MiB" if size % (1 << 20) == 0 else f"{size}B"
            return f"{name}-{label}"

        return ModelKind(name, keys, check, make_in, FAMILIES[arch], describe)

    return [kind(k) for k in KINDS]
