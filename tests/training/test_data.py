"""Preparing data: column checks, task inference, seeded stratified splits, encodings."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from modelplane.training import check_columns, prepare, prepare_federated, tokenize
from tests.training.helpers import iris_frame, spec_of

SCHEMA = {"a": "float64", "b": "int64", "name": "object", "label": "string"}


def test_check_columns_names_the_missing_column() -> None:
    check_columns(spec_of(data={"target": "label"}), SCHEMA)
    with pytest.raises(ValueError, match=r"data\.target: column 'price'"):
        check_columns(spec_of(data={"target": "price"}), SCHEMA)
    with pytest.raises(ValueError, match=r"data\.features: column 'c'"):
        check_columns(spec_of(data={"target": "label", "features": ["a", "c"]}), SCHEMA)
    text = spec_of(
        model={"architecture": "transformer"}, data={"target": "label", "text_field": "t"}
    )
    with pytest.raises(ValueError, match=r"data\.text_field: column 't'"):
        check_columns(text, SCHEMA)


def test_check_columns_refuses_non_numeric_features() -> None:
    with pytest.raises(ValueError, match="'name' is not numeric"):
        check_columns(spec_of(data={"target": "label", "features": ["a", "name"]}), SCHEMA)
    with pytest.raises(ValueError, match="no numeric feature columns"):
        check_columns(spec_of(data={"target": "label"}), {"label": "int64", "n": "object"})


def test_frame_and_arrays_prepare_alike() -> None:
    frame = iris_frame()
    spec = spec_of(data={"target": "target"})
    a = prepare(spec, frame)
    b = prepare(spec, {c: frame[c].to_numpy() for c in frame.columns})
    np.testing.assert_array_equal(a.x_train, b.x_train)
    np.testing.assert_array_equal(a.y_val, b.y_val)
    assert a.encoding == b.encoding
    assert a.encoding.feature_names == list(frame.columns[:4])
    assert a.x_train.dtype == np.float32 and a.y_train.dtype == np.int64


def test_split_is_seeded_and_stratified() -> None:
    frame = iris_frame()
    one = prepare(spec_of(data={"target": "target"}, hyper={"seed": 1}), frame)
    again = prepare(spec_of(data={"target": "target"}, hyper={"seed": 1}), frame)
    other = prepare(spec_of(data={"target": "target"}, hyper={"seed": 2}), frame)
    np.testing.assert_array_equal(one.x_val, again.x_val)
    assert not np.array_equal(one.x_val, other.x_val)
    assert len(one.x_val) == 30 and np.bincount(one.y_val).tolist() == [10, 10, 10]
    half = prepare(spec_of(data={"target": "target", "validation_split": 0.5}), frame)
    assert len(half.x_val) == 75


def test_task_is_inferred_from_the_target() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=200)
    cases = {
        "classification": np.array(["cat", "dog"] * 100),
        "regression": rng.normal(size=200),
    }
    for task, y in cases.items():
        assert prepare(spec_of(data={"target": "y"}), {"x": x, "y": y}).encoding.task == task
    many = np.arange(200)  # integers, but too many distinct values to be classes
    assert prepare(spec_of(data={"target": "y"}), {"x": x, "y": many}).encoding.task == "regression"
    forced = spec_of(data={"target": "y", "task": "classification", "max_classes": 2})
    assert len(prepare(forced, {"x": x, "y": many % 3}).encoding.classes) == 3


def test_string_classes_and_missing_values() -> None:
    frame = pd.DataFrame({
        "a": [1.0, np.nan, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0],
        "b": list(range(10)),
        "label": ["no", "yes", None, "no", "yes", "no", "yes", "no", "yes", "no"],
    })  # fmt: skip
    data = prepare(spec_of(data={"target": "label", "validation_split": 0.3}), frame)
    assert data.encoding.classes == ["no", "yes"]
    assert data.n_train + len(data.x_val) == 9  # the row without a label is dropped
    assert np.isnan(data.encoding.mean).sum() == 0  # NaN features are left to the model


def test_one_class_is_refused() -> None:
    with pytest.raises(ValueError, match="2 or more classes"):
        prepare(spec_of(data={"target": "y"}), {"x": np.arange(10.0), "y": np.zeros(10, int)})


def test_images_in_either_layout() -> None:
    spec = spec_of(model={"architecture": "cnn"}, data={"target": "y", "image_field": "img"})
    y = np.arange(20) % 2
    hw = prepare(spec, {"img": np.zeros((20, 8, 8)), "y": y})
    hwc = prepare(spec, {"img": np.zeros((20, 8, 8, 3)), "y": y})
    assert hw.encoding.input_shape == [1, 8, 8] and hwc.encoding.input_shape == [3, 8, 8]
    flat = prepare(
        spec_of(data={"target": "y", "image_field": "img"}), {"img": np.zeros((20, 8, 8)), "y": y}
    )
    assert flat.encoding.kind == "tabular" and flat.encoding.input_shape == [64]
    sized = spec_of(model={"architecture": "cnn", "image_size": 28}, data=spec.data.model_dump())
    with pytest.raises(ValueError, match=r"model\.image_size is 28, images are \[8, 8\]"):
        prepare(sized, {"img": np.zeros((20, 8, 8)), "y": y})


def test_tokenize_lowercases_truncates_and_pads() -> None:
    vocab = ["<pad>", "<unk>", "the", "movie", "good"]
    ids = tokenize(["The movie, GOOD!", "the unknown movie was good and long"], vocab, 5)
    assert ids.tolist() == [[2, 3, 4, 0, 0], [2, 1, 3, 1, 4]]


def test_text_vocabulary_is_capped_by_frequency() -> None:
    texts = np.array(["a a a b b c", "a b d", "e"] * 4, dtype=object)
    spec = spec_of(
        model={"architecture": "transformer", "vocab_size": 4, "max_len": 3},
        data={"target": "y", "text_field": "t", "validation_split": 0.25},
    )
    data = prepare(spec, {"t": texts, "y": np.array([0, 1, 0] * 4)})
    assert data.encoding.vocab == ["<pad>", "<unk>", "a", "b"]
    assert data.x_train.shape == (9, 3) and data.x_train.dtype == np.int64


def test_federated_encoding_equals_pooled_statistics() -> None:
    frame = iris_frame().sample(frac=1.0, random_state=0)
    spec = spec_of(data={"target": "target"})
    parts = prepare_federated(spec, [frame.iloc[:50], frame.iloc[50:110], frame.iloc[110:]])
    assert all(p.encoding == parts[0].encoding for p in parts)
    pooled = np.concatenate([p.x_train for p in parts])
    np.testing.assert_allclose(parts[0].encoding.mean, pooled.mean(0), rtol=1e-5)
    np.testing.assert_allclose(parts[0].encoding.std, pooled.std(0), rtol=1e-4)
    only_two = prepare_federated(spec, [frame[frame.target < 2], frame[frame.target == 2]])
    assert only_two[0].encoding.classes == ["0", "1", "2"]  # the union of labels
