"""all-MiniLM-L6-v2 assembled into ONNX: tokenizer, numeric check, bytes shared with safetensors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cvmfs_modelio.models import corpus, minilm
from cvmfs_modelio.models.inspect import inspect_model
from tests.models.conftest import MINILM, need

# Token ids of minilm.DEFAULT_SENTENCE as the model's own tokenizer.json gives them
# (tokenizers 0.23, recorded): the built-in WordPiece must agree exactly.
DEFAULT_IDS = [
    101,
    8292,
    6826,
    2615,
    2213,
    1011,
    1042,
    2015,
    4240,
    3698,
    1011,
    4083,
    4275,
    2000,
    1996,
    4969,
    1048,
    16257,
    8370,
    1012,
    102,
]
SENTENCES = [
    minilm.DEFAULT_SENTENCE,
    "Héllo, wörld! naïve café 東京 don't",
    "ParticleNet AK8 V02: 4.3 MiB @ 10ms RTT...",
    "supercalifragilisticexpialidocious xyzzy\tend\n",
]


def test_wordpiece_matches_the_reference_tokenizer() -> None:
    wp = minilm.WordPiece(need(MINILM / "vocab.txt"))
    assert wp.encode(minilm.DEFAULT_SENTENCE) == DEFAULT_IDS
    try:
        from tokenizers import Tokenizer
    except ImportError:
        return
    tk = Tokenizer.from_file(str(MINILM / "tokenizer.json"))
    tk.no_padding()
    for s in SENTENCES:
        assert wp.encode(s) == tk.encode(s).ids, s


@pytest.mark.parametrize("form", ["onnx", "onnx-ext64k", "ort"])
def test_onnx_graph_matches_the_numpy_forward(tmp_path: Path, form: str) -> None:
    need(MINILM / "model.safetensors")
    out = tmp_path / f"minilm{corpus.SUFFIX.get(form, '.onnx')}"
    g = corpus.make(f"minilm-{form}", out)
    chk = minilm.check(g.files[0])
    assert chk["token_ids"] == DEFAULT_IDS
    assert set(chk["max_abs_diff"]) == {"last_hidden_state", "pooler_output", "sentence_embedding"}
    for name, diff in chk["max_abs_diff"].items():
        assert diff < 1e-5, name  # measured: 1.4e-6 (hidden states), 1.3e-7 (pooler)


def test_numpy_forward_is_a_unit_sentence_embedding() -> None:
    need(MINILM / "model.safetensors")
    ref = minilm.reference_forward(DEFAULT_IDS)
    assert ref["last_hidden_state"].shape == (1, len(DEFAULT_IDS), 384)
    assert abs(float(np.linalg.norm(ref["sentence_embedding"])) - 1.0) < 1e-12
    # Two paraphrases are closer to each other than to an unrelated sentence (the model works).
    wp = minilm.WordPiece(MINILM / "vocab.txt")
    emb = [
        minilm.reference_forward(wp.encode(s))["sentence_embedding"][0]
        for s in ("The cat sits on the mat.", "A cat is sitting on a mat.", "Stock prices fell.")
    ]
    assert emb[0] @ emb[1] > 0.7 > emb[0] @ emb[2] + 0.3


def test_external_data_is_the_safetensors_data_section(tmp_path: Path) -> None:
    src = need(MINILM / "model.safetensors")
    g = corpus.make("minilm-onnx-ext", tmp_path / "m.onnx")
    st = inspect_model(src)
    data_start = min(t.offset_bytes for t in st.tensors)
    assert g.files[1].read_bytes() == src.read_bytes()[data_start:]
    om = inspect_model(g.files[0])
    ext = [t for t in om.tensors if t.file == str(g.files[1])]
    assert [(t.name, t.offset_bytes + data_start) for t in ext] == [
        (t.name, t.offset_bytes) for t in st.tensors
    ]


def test_missing_minilm_directory_is_one_line(tmp_path: Path) -> None:
    from cvmfs_modelio.core.errors import UsageError

    with pytest.raises(UsageError) as e:
        corpus.make("minilm-onnx", tmp_path / "m.onnx", minilm_dir=tmp_path)
    assert str(e.value) == (
        f"{tmp_path / 'config.json'}: no such file (the MiniLM kind needs all-MiniLM-L6-v2's "
        "config.json, model.safetensors and vocab.txt; set CVMFS_MODELIO_MINILM)"
    )
