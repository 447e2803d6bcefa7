"""all-MiniLM-L6-v2 as an ONNX graph of standard ops, from its real safetensors weights.

The BERT encoder (6 layers, hidden 384, 12 heads, GELU, LayerNorm eps 1e-12) is assembled
node by node from ``config.json`` and ``model.safetensors`` in the model directory (default
``../shared/models/minilm`` beside the checkout, or ``$CVMFS_MODELIO_MINILM``).  Every
tensor keeps the bytes and the order it has in the safetensors file (linear weights stay
``[out, in]`` and are transposed by a Transpose node), so the external-data form's ``.data``
file holds exactly the safetensors data section.  Outputs: ``last_hidden_state``,
``pooler_output`` and the sentence-transformers ``sentence_embedding`` (mean pooling over
the attention mask, then L2 normalisation).

:func:`reference_forward` is the same network in plain numpy, and :class:`WordPiece` the
BERT uncased tokenizer (basic tokenization + greedy longest-match WordPiece over
``vocab.txt``), so the graph can be checked numerically without any ML framework.
"""

from __future__ import annotations

import json
import os
import unicodedata
from pathlib import Path
from typing import Any

import numpy as np

from cvmfs_modelio.core.errors import UsageError
from cvmfs_modelio.models.writers import Weight, constant, fixed

DEFAULT_SENTENCE = "CernVM-FS serves machine-learning models to the worldwide LHC grid."
_NEG = float(np.finfo(np.float32).min)


def model_dir(path: str | os.PathLike[str] | None = None) -> Path:
    """The MiniLM directory: ``path``, ``$CVMFS_MODELIO_MINILM``, or ../shared/models/minilm."""
    if path is None:
        env = os.environ.get("CVMFS_MODELIO_MINILM")
        if env:
            path = env
        else:
            here = Path(__file__).resolve()
            cands = [p / "shared" / "models" / "minilm" for p in here.parents]
            cands.insert(0, Path.cwd().parent / "shared" / "models" / "minilm")
            path = next((c for c in cands if (c / "model.safetensors").is_file()), cands[0])
    d = Path(path)
    for name in ("config.json", "model.safetensors", "vocab.txt"):
        if not (d / name).is_file():
            raise UsageError(
                f"{d / name}: no such file (the MiniLM kind needs all-MiniLM-L6-v2's "
                "config.json, model.safetensors and vocab.txt; set CVMFS_MODELIO_MINILM)"
            )
    return d


def load_config(d: Path) -> dict[str, Any]:
    try:
        cfg: dict[str, Any] = json.loads((d / "config.json").read_text())
    except (OSError, ValueError) as e:
        raise UsageError(f"{d / 'config.json'}: not readable JSON ({e})") from None
    for key in ("hidden_size", "num_attention_heads", "num_hidden_layers", "layer_norm_eps"):
        if key not in cfg:
            raise UsageError(f"{d / 'config.json'}: no {key!r}")
    if cfg.get("hidden_act", "gelu") != "gelu":
        raise UsageError(f"{d / 'config.json'}: hidden_act {cfg['hidden_act']!r} (gelu only)")
    return cfg


def load_weights(d: Path) -> dict[str, np.ndarray]:
    """The safetensors tensors as read-only memory maps, in file order."""
    from cvmfs_modelio.models.inspect import inspect_model

    path = d / "model.safetensors"
    m = inspect_model(path)
    if m.format != "safetensors":
        raise UsageError(f"{path}: expected safetensors, found {m.format}")
    raw = np.memmap(path, dtype=np.uint8, mode="r")
    out = {}
    for t in m.tensors:
        out[t.name] = raw[t.offset_bytes : t.end_bytes].view(t.dtype).reshape(t.shape)
    return out


class WordPiece:
    """BERT uncased tokenization (what ``BertTokenizer(do_lower_case=True)`` does)."""

    def __init__(self, vocab_file: Path, max_chars_per_word: int = 100) -> None:
        tokens = vocab_file.read_text(encoding="utf-8").splitlines()
        self.vocab = {t: i for i, t in enumerate(tokens)}
        self.max_chars = max_chars_per_word
        for special in ("[CLS]", "[SEP]", "[UNK]"):
            if special not in self.vocab:
                raise UsageError(f"{vocab_file}: no {special} token")

    @staticmethod
    def _is_punct(ch: str) -> bool:
        cp = ord(ch)
        if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
            return True
        return unicodedata.category(ch).startswith("P")

    @staticmethod
    def _is_cjk(cp: int) -> bool:
        return (
            0x4E00 <= cp <= 0x9FFF
            or 0x3400 <= cp <= 0x4DBF
            or 0x20000 <= cp <= 0x2A6DF
            or 0x2A700 <= cp <= 0x2B73F
            or 0x2B740 <= cp <= 0x2B81F
            or 0x2B820 <= cp <= 0x2CEAF
            or 0xF900 <= cp <= 0xFAFF
            or 0x2F800 <= cp <= 0x2FA1F
        )

    def basic(self, text: str) -> list[str]:
        chars = []
        for ch in text:
            cp = ord(ch)
            if (
                cp == 0
                or cp == 0xFFFD
                or (unicodedata.category(ch).startswith("C") and ch not in "\t\n\r")
            ):
                continue
            if self._is_cjk(cp):
                chars.append(f" {ch} ")
            elif ch in "\t\n\r" or unicodedata.category(ch) == "Zs":
                chars.append(" ")
            else:
                chars.append(ch)
        words = []
        for word in "".join(chars).split():
            word = unicodedata.normalize("NFD", word.lower())
            word = "".join(c for c in word if unicodedata.category(c) != "Mn")
            cur = ""
            for c in word:
                if self._is_punct(c):
                    if cur:
                        words.append(cur)
                    words.append(c)
                    cur = ""
                else:
                    cur += c
            if cur:
                words.append(cur)
        return words

    def wordpiece(self, word: str) -> list[str]:
        if len(word) > self.max_chars:
            return ["[UNK]"]
        out = []
        start = 0
        while start < len(word):
            end = len(word)
            piece = None
            while start < end:
                sub = word[start:end] if start == 0 else "##" + word[start:end]
                if sub in self.vocab:
                    piece = sub
                    break
                end -= 1
            if piece is None:
                return ["[UNK]"]
            out.append(piece)
            start = end
        return out

    def encode(self, text: str) -> list[int]:
        """``[CLS] tokens [SEP]`` ids of ``text`` (no truncation, no padding)."""
        pieces = [p for w in self.basic(text) for p in self.wordpiece(w)]
        return [self.vocab["[CLS]"], *(self.vocab[p] for p in pieces), self.vocab["[SEP]"]]


def _layers(cfg: dict[str, Any]) -> int:
    return int(cfg["num_hidden_layers"])


def onnx_model(
    path: str | os.PathLike[str] | None = None,
) -> tuple[Any, list[Weight], dict[str, Any]]:
    """(ModelProto without initializers, the weights in safetensors order, parameters)."""
    from onnx import TensorProto, helper

    d = model_dir(path)
    cfg = load_config(d)
    weights = load_weights(d)
    hidden = int(cfg["hidden_size"])
    heads = int(cfg["num_attention_heads"])
    dh = hidden // heads
    eps = float(cfg["layer_norm_eps"])
    consts: dict[str, np.ndarray] = {
        "c_heads_shape": np.array([0, 0, heads, dh], dtype=np.int64),
        "c_merge_shape": np.array([0, 0, hidden], dtype=np.int64),
        "c_attn_scale": np.array(1 / np.sqrt(dh), dtype=np.float32),
        "c_inv_sqrt2": np.array(1 / np.sqrt(2.0), dtype=np.float32),
        "c_half": np.array(0.5, dtype=np.float32),
        "c_one": np.array(1.0, dtype=np.float32),
        "c_neg": np.array(_NEG, dtype=np.float32),
        "c_eps_pool": np.array(1e-9, dtype=np.float32),
        "c_eps_norm": np.array(1e-12, dtype=np.float32),
        "c_axes_1": np.array([1], dtype=np.int64),
        "c_axes_12": np.array([1, 2], dtype=np.int64),
        "c_axes_m1": np.array([-1], dtype=np.int64),
        "c_zeros2": np.array([0, 0], dtype=np.int64),
        "c_idx1": np.array([1], dtype=np.int64),
        "c_idx2": np.array([2], dtype=np.int64),
        "c_one_i": np.array([1], dtype=np.int64),
    }
    n = helper.make_node
    nodes = [
        n("Shape", ["input_ids"], ["ids_shape"], name="ids_shape"),
        n("Slice", ["ids_shape", "c_idx1", "c_idx2"], ["seq_1"], name="seq_len"),
        n("Concat", ["c_one_i", "seq_1"], ["pos_end"], name="pos_end", axis=0),
        n("Slice", ["embeddings.position_ids", "c_zeros2", "pos_end"], ["pos_ids"], name="pos_ids"),
        n("Gather", ["embeddings.word_embeddings.weight", "input_ids"], ["e_word"], name="e_word"),
        n("Gather", ["embeddings.position_embeddings.weight", "pos_ids"], ["e_pos"], name="e_pos"),
        n(
            "Gather",
            ["embeddings.token_type_embeddings.weight", "token_type_ids"],
            ["e_type"],
            name="e_type",
        ),
        n("Add", ["e_word", "e_pos"], ["e_wp"], name="e_add1"),
        n("Add", ["e_wp", "e_type"], ["e_sum"], name="e_add2"),
        n(
            "LayerNormalization",
            ["e_sum", "embeddings.LayerNorm.weight", "embeddings.LayerNorm.bias"],
            ["h_emb"],
            name="e_ln",
            axis=-1,
            epsilon=eps,
        ),
        # Extended attention mask: (1 - mask) * float32 min, shape [B, 1, 1, T].
        n("Cast", ["attention_mask"], ["mask_f"], name="mask_cast", to=TensorProto.FLOAT),
        n("Unsqueeze", ["mask_f", "c_axes_12"], ["mask_4d"], name="mask_unsq"),
        n("Sub", ["c_one", "mask_4d"], ["mask_inv"], name="mask_inv"),
        n("Mul", ["mask_inv", "c_neg"], ["mask_add"], name="mask_scale"),
    ]

    def linear(prefix: str, x: str, out: str) -> None:
        nodes.append(
            n(
                "Transpose",
                [f"{prefix}.weight"],
                [f"{prefix}.weight_t"],
                name=f"{prefix}.t",
                perm=[1, 0],
            )
        )
        nodes.append(n("MatMul", [x, f"{prefix}.weight_t"], [f"{out}_mm"], name=f"{prefix}.mm"))
        nodes.append(n("Add", [f"{out}_mm", f"{prefix}.bias"], [out], name=f"{prefix}.add"))

    def layernorm(prefix: str, x: str, out: str) -> None:
        nodes.append(
            n(
                "LayerNormalization",
                [x, f"{prefix}.weight", f"{prefix}.bias"],
                [out],
                name=prefix,
                axis=-1,
                epsilon=eps,
            )
        )

    h = "h_emb"
    for i in range(_layers(cfg)):
        p = f"encoder.layer.{i}"
        a = f"{p}.attention.self"
        for part, perm in (("query", [0, 2, 1, 3]), ("key", [0, 2, 3, 1]), ("value", [0, 2, 1, 3])):
            linear(f"{a}.{part}", h, f"{a}.{part}_o")
            nodes.append(
                n(
                    "Reshape",
                    [f"{a}.{part}_o", "c_heads_shape"],
                    [f"{a}.{part}_r"],
                    name=f"{a}.{part}_r",
                )
            )
            nodes.append(
                n(
                    "Transpose",
                    [f"{a}.{part}_r"],
                    [f"{a}.{part}_h"],
                    name=f"{a}.{part}_h",
                    perm=perm,
                )
            )
        nodes += [
            n("MatMul", [f"{a}.query_h", f"{a}.key_h"], [f"{a}.s0"], name=f"{a}.scores"),
            n("Mul", [f"{a}.s0", "c_attn_scale"], [f"{a}.s1"], name=f"{a}.scale"),
            n("Add", [f"{a}.s1", "mask_add"], [f"{a}.s2"], name=f"{a}.mask"),
            n("Softmax", [f"{a}.s2"], [f"{a}.pr"], name=f"{a}.softmax", axis=-1),
            n("MatMul", [f"{a}.pr", f"{a}.value_h"], [f"{a}.ctx"], name=f"{a}.context"),
            n("Transpose", [f"{a}.ctx"], [f"{a}.ctx_t"], name=f"{a}.ctx_t", perm=[0, 2, 1, 3]),
            n("Reshape", [f"{a}.ctx_t", "c_merge_shape"], [f"{a}.ctx_m"], name=f"{a}.merge"),
        ]
        o = f"{p}.attention.output"
        linear(f"{o}.dense", f"{a}.ctx_m", f"{o}.d")
        nodes.append(n("Add", [f"{o}.d", h], [f"{o}.res"], name=f"{o}.res"))
        layernorm(f"{o}.LayerNorm", f"{o}.res", f"{o}.h")
        it = f"{p}.intermediate"
        linear(f"{it}.dense", f"{o}.h", f"{it}.f")
        nodes += [  # exact GELU, as BERT's "gelu": x * 0.5 * (1 + erf(x / sqrt 2))
            n("Mul", [f"{it}.f", "c_inv_sqrt2"], [f"{it}.g0"], name=f"{it}.gelu_div"),
            n("Erf", [f"{it}.g0"], [f"{it}.g1"], name=f"{it}.gelu_erf"),
            n("Add", [f"{it}.g1", "c_one"], [f"{it}.g2"], name=f"{it}.gelu_add"),
            n("Mul", [f"{it}.g2", "c_half"], [f"{it}.g3"], name=f"{it}.gelu_half"),
            n("Mul", [f"{it}.f", f"{it}.g3"], [f"{it}.g"], name=f"{it}.gelu"),
        ]
        out = f"{p}.output"
        linear(f"{out}.dense", f"{it}.g", f"{out}.d")
        nodes.append(n("Add", [f"{out}.d", f"{o}.h"], [f"{out}.res"], name=f"{out}.res"))
        layernorm(f"{out}.LayerNorm", f"{out}.res", f"{out}.h")
        h = f"{out}.h"
    nodes += [
        n("Identity", [h], ["last_hidden_state"], name="last_hidden_state"),
        n("Gather", [h, "c_zero_scalar"], ["cls"], name="cls", axis=1),
    ]
    consts["c_zero_scalar"] = np.array(0, dtype=np.int64)
    linear("pooler.dense", "cls", "pool_d")
    nodes += [
        n("Tanh", ["pool_d"], ["pooler_output"], name="pooler_tanh"),
        # sentence-transformers: mean over the tokens the mask keeps, then L2 normalisation.
        n("Unsqueeze", ["mask_f", "c_axes_m1"], ["mask_3d"], name="pool_mask"),
        n("Mul", [h, "mask_3d"], ["masked"], name="pool_mul"),
        n("ReduceSum", ["masked", "c_axes_1"], ["pool_sum"], name="pool_sum", keepdims=0),
        n("ReduceSum", ["mask_3d", "c_axes_1"], ["pool_cnt0"], name="pool_cnt", keepdims=0),
        n("Max", ["pool_cnt0", "c_eps_pool"], ["pool_cnt"], name="pool_clip"),
        n("Div", ["pool_sum", "pool_cnt"], ["pool_mean"], name="pool_mean"),
        n("ReduceL2", ["pool_mean"], ["norm0"], name="norm", axes=[1], keepdims=1),
        n("Max", ["norm0", "c_eps_norm"], ["norm1"], name="norm_clip"),
        n("Div", ["pool_mean", "norm1"], ["sentence_embedding"], name="normalize"),
    ]
    ids = ["input_ids", "attention_mask", "token_type_ids"]
    graph = helper.make_graph(
        nodes,
        "all_MiniLM_L6_v2",
        [helper.make_tensor_value_info(x, TensorProto.INT64, ["batch", "seq"]) for x in ids],
        [
            helper.make_tensor_value_info(
                "last_hidden_state", TensorProto.FLOAT, ["batch", "seq", hidden]
            ),
            helper.make_tensor_value_info("pooler_output", TensorProto.FLOAT, ["batch", hidden]),
            helper.make_tensor_value_info(
                "sentence_embedding", TensorProto.FLOAT, ["batch", hidden]
            ),
        ],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="cvmfs-modelio"
    )
    model.ir_version = 8
    ws = [
        Weight(name, tuple(arr.shape), fixed(np.asarray(arr)), str(arr.dtype))
        for name, arr in weights.items()
    ]
    ws += [constant(name, arr) for name, arr in consts.items()]
    params = {
        "arch": "minilm",
        "source": str(d / "model.safetensors"),
        "hidden": hidden,
        "layers": _layers(cfg),
        "heads": heads,
    }
    return model, ws, params


def _ln(x: np.ndarray, g: np.ndarray, b: np.ndarray, eps: float) -> np.ndarray:
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    out: np.ndarray = (x - mu) / np.sqrt(var + eps) * g + b
    return out


def _gelu(x: np.ndarray) -> np.ndarray:
    from scipy.special import erf

    out: np.ndarray = 0.5 * x * (1.0 + erf(x / np.sqrt(2.0)))
    return out


def reference_forward(
    ids: list[int], path: str | os.PathLike[str] | None = None, dtype: type = np.float64
) -> dict[str, np.ndarray]:
    """The encoder on one sentence (batch 1, mask all ones) in plain numpy, in ``dtype``."""
    d = model_dir(path)
    cfg = load_config(d)
    w = {
        k: np.asarray(v, dtype=dtype) if v.dtype.kind == "f" else v
        for k, v in load_weights(d).items()
    }
    eps = float(cfg["layer_norm_eps"])
    heads = int(cfg["num_attention_heads"])
    t = len(ids)
    ids_a = np.asarray(ids, dtype=np.int64)
    x = (
        w["embeddings.word_embeddings.weight"][ids_a]
        + w["embeddings.position_embeddings.weight"][w["embeddings.position_ids"][0, :t]]
        + w["embeddings.token_type_embeddings.weight"][np.zeros(t, dtype=np.int64)]
    )
    x = _ln(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], eps)

    def lin(name: str, v: np.ndarray) -> np.ndarray:
        out: np.ndarray = v @ w[f"{name}.weight"].T + w[f"{name}.bias"]
        return out

    hidden = x.shape[-1]
    dh = hidden // heads
    for i in range(_layers(cfg)):
        p = f"encoder.layer.{i}"
        q, k, v = (
            lin(f"{p}.attention.self.{n}", x).reshape(t, heads, dh).transpose(1, 0, 2)
            for n in ("query", "key", "value")
        )
        s = q @ k.transpose(0, 2, 1) / np.sqrt(dh)
        s = np.exp(s - s.max(-1, keepdims=True))
        s /= s.sum(-1, keepdims=True)
        ctx = (s @ v).transpose(1, 0, 2).reshape(t, hidden)
        x = _ln(
            lin(f"{p}.attention.output.dense", ctx) + x,
            w[f"{p}.attention.output.LayerNorm.weight"],
            w[f"{p}.attention.output.LayerNorm.bias"],
            eps,
        )
        f: np.ndarray = _gelu(lin(f"{p}.intermediate.dense", x)).astype(dtype)
        x = _ln(
            lin(f"{p}.output.dense", f) + x,
            w[f"{p}.output.LayerNorm.weight"],
            w[f"{p}.output.LayerNorm.bias"],
            eps,
        )
    pooled = np.tanh(lin("pooler.dense", x[0]))
    mean = x.mean(0)
    return {
        "last_hidden_state": x[None],
        "pooler_output": pooled[None],
        "sentence_embedding": (mean / max(np.linalg.norm(mean), 1e-12))[None],
    }


def check(
    onnx_path: str | os.PathLike[str],
    sentence: str = DEFAULT_SENTENCE,
    path: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Run the ONNX model in ONNX Runtime on ``sentence`` and compare with the numpy forward.

    Returns the token ids and, per output, the max absolute difference.
    """
    import onnxruntime as ort

    d = model_dir(path)
    ids = WordPiece(d / "vocab.txt").encode(sentence)
    feeds = {
        "input_ids": np.asarray([ids], dtype=np.int64),
        "attention_mask": np.ones((1, len(ids)), dtype=np.int64),
        "token_type_ids": np.zeros((1, len(ids)), dtype=np.int64),
    }
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    got = dict(zip(names, sess.run(names, feeds), strict=True))
    ref = reference_forward(ids, d)
    diffs = {k: float(np.max(np.abs(got[k].astype(np.float64) - ref[k]))) for k in ref}
    return {"sentence": sentence, "token_ids": ids, "max_abs_diff": diffs}
