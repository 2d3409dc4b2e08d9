"""The transformers runtime: MiniLM sentence embeddings on torch and on ONNX, classification."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modelplane.errors import InvalidInput
from modelplane.runtimes import RuntimeOptions, runtime_class
from modelplane.runtimes.text import encode, load_tokenizer
from modelplane.runtimes.transformers import OnnxBackend, TorchBackend
from tests.runtimes.minilm import exported_onnx, model_path

SENTENCES = [
    "A man is playing a guitar on stage.",
    "Someone performs music with a guitar.",
    "The stock market fell sharply today.",
    "hi",
    "A very long document about nothing in particular. " * 60,  # past the 256-token limit
]
EMBED = RuntimeOptions(task="feature-extraction", intra_op_threads=2)


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    """sentence-transformers' own embeddings of SENTENCES."""
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(model_path()), device="cpu")
    return np.asarray(st.encode(SENTENCES, convert_to_numpy=True))


@pytest.fixture(scope="module")
def onnx_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return exported_onnx(tmp_path_factory)


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.asarray((a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)))


def check_embeddings(rt: Any, reference: np.ndarray) -> None:
    rt.warmup()
    sig = rt.metadata()
    assert [(s.name, s.dtype, s.shape) for s in sig.inputs] == [("text", "string", [-1])]
    assert [(s.name, s.dtype, s.shape) for s in sig.outputs] == [
        ("embedding", "float32", [-1, 384]),
        ("tokens", "int64", [-1]),
    ]
    out = rt.predict({"text": np.array(SENTENCES, dtype=object)})
    emb = out["embedding"]
    assert emb.dtype == np.float32
    assert emb.shape == (len(SENTENCES), 384)
    assert (cosine(emb, reference) > 0.99).all()
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    sims = emb @ emb.T
    assert sims[0, 1] > sims[0, 2] + 0.3  # paraphrases score far above unrelated sentences
    assert sims[0, 1] > sims[1, 2] + 0.3
    assert out["tokens"].tolist()[3] == 3  # [CLS] hi [SEP]
    assert out["tokens"].tolist()[4] == 256  # truncated like sentence-transformers does


@pytest.mark.slow
def test_minilm_on_torch_matches_sentence_transformers(reference: np.ndarray) -> None:
    rt = runtime_class("transformers").load(model_path(), EMBED)
    assert isinstance(rt.backend, TorchBackend)  # type: ignore[attr-defined]
    check_embeddings(rt, reference)


@pytest.mark.slow
def test_minilm_exported_to_onnx_matches_sentence_transformers(
    onnx_folder: Path, reference: np.ndarray
) -> None:
    assert (onnx_folder / "model.onnx").is_file()
    assert (onnx_folder / "tokenizer.json").is_file()
    assert not list(onnx_folder.glob("*.safetensors"))
    rt = runtime_class("transformers").load(onnx_folder, EMBED)
    assert isinstance(rt.backend, OnnxBackend)  # type: ignore[attr-defined]
    check_embeddings(rt, reference)


@pytest.mark.slow
def test_strings_arrive_as_bytes_or_str_and_empty_batches_work(onnx_folder: Path) -> None:
    rt = runtime_class("transformers").load(onnx_folder, EMBED)
    as_str = rt.predict({"text": np.array(["hello world"], dtype=object)})["embedding"]
    as_bytes = rt.predict({"text": np.array([b"hello world"], dtype=object)})["embedding"]
    np.testing.assert_array_equal(as_str, as_bytes)
    empty = rt.predict({"text": np.zeros(0, dtype=object)})
    assert empty["embedding"].shape == (0, 384)
    assert empty["tokens"].shape == (0,)
    with pytest.raises(InvalidInput):
        rt.predict({"text": np.array([["a", "b"]], dtype=object)})


def test_each_batch_is_padded_to_its_own_longest_sequence() -> None:
    tok = load_tokenizer(model_path(), 256)  # tokenizer.json itself pads to 128
    feed = encode(tok, ["short", "a slightly longer sentence"])
    assert feed["input_ids"].shape == (2, 6)
    assert feed["attention_mask"].tolist() == [[1, 1, 1, 0, 0, 0], [1] * 6]


def test_unknown_task_is_refused() -> None:
    with pytest.raises(InvalidInput, match="tasks"):
        runtime_class("transformers").load(model_path(), RuntimeOptions(task="translation"))


# -- sequence classification --------------------------------------------------
@pytest.fixture(scope="module")
def classifier(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random BERT classifier with MiniLM's tokenizer, saved as a HF folder."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, num_labels=3,
        id2label={0: "negative", 1: "neutral", 2: "positive"},
        label2id={"negative": 0, "neutral": 1, "positive": 2},
    )  # fmt: skip
    folder = tmp_path_factory.mktemp("classifier")
    BertForSequenceClassification(config).eval().save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copyfile(model_path() / name, folder / name)
    return folder


def reference_probabilities(folder: Path, texts: list[str]) -> np.ndarray:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    enc = AutoTokenizer.from_pretrained(folder)(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        return np.asarray(torch.softmax(model(**enc).logits, dim=-1).numpy())


@pytest.mark.slow
def test_text_classification_on_torch_and_onnx(classifier: Path, tmp_path: Path) -> None:
    from modelplane.runtimes.export import export_transformers_onnx

    texts = ["I love this.", "This is terrible, I want my money back.", "ok"]
    want = reference_probabilities(classifier, texts)
    names = json.loads((classifier / "config.json").read_text())["id2label"]
    onnx_folder = export_transformers_onnx(
        classifier, tmp_path / "onnx", task="text-classification"
    )
    options = RuntimeOptions(task="text-classification")
    for folder in (classifier, onnx_folder):
        rt = runtime_class("transformers").load(folder, options)
        rt.warmup()
        sig = rt.metadata()
        assert [(s.name, s.dtype, s.shape) for s in sig.outputs] == [
            ("label", "string", [-1]),
            ("probabilities", "float32", [-1, 3]),
        ]
        out = rt.predict({"text": np.array(texts, dtype=object)})
        np.testing.assert_allclose(out["probabilities"], want, atol=1e-4)
        assert out["label"].tolist() == [names[str(i)] for i in want.argmax(axis=1)]
