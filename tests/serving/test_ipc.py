"""Frames between the gateway and its workers: what goes in comes out, dtype, shape and all."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from modelplane.serving.ipc import PREFIX, SHM_MIN, Arena, decode, encode
from modelplane.serving.worker import _read_exact, _send

NUMERIC = [
    "bool",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "float16",
    "float32",
    "float64",
    "complex64",
    "complex128",
    ">i4",  # non-native byte orders travel as they are
    ">f8",
]


def wire(
    arrays: dict[str, np.ndarray] | None,
    header: dict[str, Any] | None = None,
    arena: Arena | None = None,
) -> tuple[bytes, bytes]:
    """Encode to the buffers a writer would send, join them as the wire would: (head, payload)."""
    frame = b"".join(
        bytes(b) for b in encode({"op": "predict"} if header is None else header, arrays, arena)
    )
    hlen, plen = PREFIX.unpack_from(frame)
    assert len(frame) == PREFIX.size + hlen + plen
    return frame[PREFIX.size : PREFIX.size + hlen], frame[PREFIX.size + hlen :]


def roundtrip(
    arrays: dict[str, np.ndarray],
    header: dict[str, Any] | None = None,
    arena: Arena | None = None,
    copy_shared: bool = True,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    head, payload = wire(arrays, header, arena)
    return decode(head, payload, arena, copy_shared=copy_shared)


@pytest.fixture
def arena() -> Iterator[Arena]:
    a = Arena.create(4 * SHM_MIN)
    yield a
    a.close()


def assert_same(got: np.ndarray, want: np.ndarray) -> None:
    assert got.dtype == want.dtype
    assert got.shape == want.shape
    if want.dtype == object:
        assert [type(v) for v in got.ravel()] == [type(v) for v in want.ravel()]
        assert got.ravel().tolist() == want.ravel().tolist()
    else:
        np.testing.assert_array_equal(got, want)  # NaN == NaN here, -0.0 == 0.0


# -- numeric arrays ---------------------------------------------------------------
@pytest.mark.parametrize("dtype", NUMERIC)
def test_every_numeric_dtype_round_trips(dtype: str) -> None:
    arr = (np.arange(24) % 7).astype(dtype).reshape(2, 3, 4)
    _, out = roundtrip({"a": arr})
    assert_same(out["a"], arr)


@pytest.mark.parametrize("dtype", NUMERIC)
@pytest.mark.parametrize("shape", [(0,), (0, 4), (3, 0), (2, 0, 5)])
def test_empty_arrays_keep_shape_and_dtype(dtype: str, shape: tuple[int, ...]) -> None:
    arr = np.zeros(shape, dtype=dtype)
    _, out = roundtrip({"empty": arr, "after": np.arange(3, dtype=np.int64)})
    assert_same(out["empty"], arr)
    assert_same(out["after"], np.arange(3, dtype=np.int64))


@pytest.mark.parametrize("dtype", ["float32", "int64", "bool"])
def test_zero_d_numeric_array_stays_zero_d(dtype: str) -> None:
    arr = np.array(3, dtype=dtype)
    _, out = roundtrip({"scalar": arr})
    assert_same(out["scalar"], arr)


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda a: a[:, ::2], id="strided-columns"),
        pytest.param(lambda a: a[::-1], id="reversed"),
        pytest.param(lambda a: a.T, id="transposed"),
        pytest.param(lambda a: np.asfortranarray(a), id="fortran-order"),
        pytest.param(lambda a: a[1:, 1:3], id="slice"),
        pytest.param(lambda a: np.broadcast_to(a[:1], (5, 6)), id="broadcast-zero-stride"),
    ],
)
def test_non_contiguous_arrays_round_trip_by_value(make: Any) -> None:
    arr = make(np.arange(30, dtype=np.float32).reshape(5, 6))
    assert not arr.flags.c_contiguous
    _, out = roundtrip({"a": arr})
    assert_same(out["a"], np.ascontiguousarray(arr))


def test_several_arrays_keep_their_names_order_and_values() -> None:
    arrays = {
        "ids": np.array([[1], [2]], dtype=np.int64),
        "mask": np.array([[True, False, True]] * 2),
        "pixels": np.arange(2 * 3 * 5, dtype=np.uint8).reshape(2, 3, 5),
        "scores": np.array([0.5, -1.25], dtype=np.float64),
    }
    header, out = roundtrip(arrays, {"id": 7, "op": "predict", "note": "ünïcode"})
    assert header == {"id": 7, "op": "predict", "note": "ünïcode"}
    assert list(out) == list(arrays)
    for name, arr in arrays.items():
        assert_same(out[name], arr)


def test_header_only_frame() -> None:
    header, out = roundtrip({}, {"id": 1, "ok": True, "load_seconds": 0.25})
    assert header == {"id": 1, "ok": True, "load_seconds": 0.25}
    assert out == {}


def test_numeric_data_is_not_copied_on_encode() -> None:
    arr = np.arange(1000, dtype=np.float64)
    buffers = encode({}, {"a": arr})
    views = [b for b in buffers if isinstance(b, memoryview)]
    assert len(views) == 1
    assert np.shares_memory(np.frombuffer(views[0], dtype=np.float64), arr)


def test_special_float_values_round_trip() -> None:
    arr = np.array([np.nan, np.inf, -np.inf, -0.0, np.finfo(np.float32).tiny], dtype=np.float32)
    _, out = roundtrip({"a": arr})
    assert out["a"].tobytes() == arr.tobytes()  # bit for bit, sign of zero included


# -- object arrays (strings and bytes) ----------------------------------------------
@pytest.mark.parametrize(
    "items",
    [
        pytest.param(["hello", "", "ünï©ødé ✓", "a\x00b", "x" * 5000], id="str"),
        pytest.param([b"hello", b"", b"\x00\xff\xfe", b"y" * 5000, "é".encode()], id="bytes"),
    ],
)
def test_object_arrays_round_trip(items: list[Any]) -> None:
    arr = np.empty(len(items), dtype=object)
    arr[:] = items
    _, out = roundtrip({"before": np.ones(2, np.int32), "s": arr, "after": np.zeros(1, np.int8)})
    assert_same(out["s"], arr)
    assert_same(out["before"], np.ones(2, np.int32))
    assert_same(out["after"], np.zeros(1, np.int8))


def test_an_object_array_mixing_str_and_bytes_travels_as_bytes() -> None:
    arr = np.array(["é", b"\xff", "", b"x"], dtype=object)
    _, out = roundtrip({"s": arr})
    assert out["s"].tolist() == ["é".encode(), b"\xff", b"", b"x"]


@pytest.mark.parametrize("value", ["one", b"one"], ids=["str", "bytes"])
def test_zero_d_object_array_round_trips(value: Any) -> None:
    arr = np.empty((), dtype=object)
    arr[()] = value
    _, out = roundtrip({"s": arr})
    assert_same(out["s"], arr)


@pytest.mark.parametrize("shape", [(0,), (0, 3), (2, 0)])
def test_empty_object_arrays_keep_their_shape(shape: tuple[int, ...]) -> None:
    arr = np.empty(shape, dtype=object)
    _, out = roundtrip({"s": arr})
    assert out["s"].dtype == object
    assert out["s"].shape == shape


def test_multi_dimensional_and_non_contiguous_object_arrays() -> None:
    arr = np.array([["a", "bb", "ccc"], ["d", "ee", "fff"]], dtype=object)
    for view in (arr, arr.T, arr[:, ::2]):
        _, out = roundtrip({"s": view})
        assert_same(out["s"], np.array(view.tolist(), dtype=object).reshape(view.shape))


# -- large arrays through a shared-memory arena ------------------------------------------
def big(dtype: Any = np.float32, rows: int = SHM_MIN // 16) -> np.ndarray:
    """An array of at least SHM_MIN bytes, with values that tell rows apart."""
    return (np.arange(rows * 4) % 251).astype(dtype).reshape(rows, 4)


def test_large_arrays_go_through_the_arena_not_the_socket(arena: Arena) -> None:
    arr = big()
    assert arr.nbytes >= SHM_MIN
    head, payload = wire({"x": arr, "small": np.ones(3, np.int8)}, arena=arena)
    assert len(payload) == 3  # only the small array travels inline
    _, out = decode(head, payload, arena, copy_shared=True)
    assert_same(out["x"], arr)
    assert_same(out["small"], np.ones(3, np.int8))


def test_shared_arrays_are_views_unless_copied(arena: Arena) -> None:
    arr = big()
    head, payload = wire({"x": arr}, arena=arena)
    view = decode(head, payload, arena, copy_shared=False)[1]["x"]
    copy = decode(head, payload, arena, copy_shared=True)[1]["x"]
    assert np.shares_memory(view, np.frombuffer(arena.buf, dtype=np.uint8))
    assert not np.shares_memory(copy, np.frombuffer(arena.buf, dtype=np.uint8))
    wire({"x": np.zeros_like(arr)}, arena=arena)  # the next frame reuses the region
    assert_same(copy, arr)  # a copy is safe from that
    assert not view.any()  # a view sees the new contents
    del view


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda: big()[::2], id="strided"),
        pytest.param(lambda: big().T, id="transposed"),
        pytest.param(lambda: big(">f8"), id="big-endian"),
        pytest.param(lambda: big(np.float16, SHM_MIN // 8), id="float16"),
        pytest.param(lambda: big(np.bool_, SHM_MIN // 4), id="bool"),
        pytest.param(lambda: big(np.uint64), id="uint64"),
    ],
)
def test_arrays_through_the_arena_round_trip(arena: Arena, make: Any) -> None:
    arr = make()
    if arr.nbytes < SHM_MIN:
        arr = np.concatenate([arr, arr])
    head, payload = wire({"x": arr}, arena=arena)
    assert len(payload) == 0
    _, out = decode(head, payload, arena, copy_shared=True)
    assert_same(out["x"], np.ascontiguousarray(arr))


def test_arrays_that_do_not_fit_the_arena_go_inline(arena: Arena) -> None:
    first, second, third = big(rows=arena.size // 32), big(np.int32), big(np.float64)
    assert first.nbytes + second.nbytes <= arena.size < first.nbytes + second.nbytes + third.nbytes
    arrays = {"a": first, "b": second, "c": third}
    head, payload = wire(arrays, arena=arena)
    assert len(payload) == third.nbytes
    _, out = decode(head, payload, arena, copy_shared=True)
    for name, arr in arrays.items():
        assert_same(out[name], arr)


def test_object_arrays_never_use_the_arena(arena: Arena) -> None:
    arr = np.array(["x" * 1000] * (SHM_MIN // 500), dtype=object)
    head, payload = wire({"s": arr}, arena=arena)
    assert len(payload) > SHM_MIN
    assert_same(decode(head, payload, arena)[1]["s"], arr)


def test_a_shared_array_without_its_arena_is_an_error(arena: Arena) -> None:
    head, payload = wire({"x": big()}, arena=arena)
    with pytest.raises(ValueError, match="shared memory"):
        decode(head, payload)


# -- property-based ---------------------------------------------------------------
numeric_dtypes = st.sampled_from([np.dtype(d) for d in NUMERIC])
shapes = hnp.array_shapes(min_dims=1, max_dims=4, min_side=0, max_side=5)


@st.composite
def numeric_arrays(draw: st.DrawFn) -> np.ndarray:
    arr = draw(hnp.arrays(draw(numeric_dtypes), draw(shapes)))
    if arr.ndim and arr.shape[0] > 1 and draw(st.booleans()):
        arr = arr[::2]  # a strided view
    return arr


@st.composite
def object_arrays(draw: st.DrawFn) -> np.ndarray:
    shape = draw(shapes)
    size = int(np.prod(shape))
    items: list[Any] = draw(
        st.one_of(
            st.lists(st.text(max_size=20), min_size=size, max_size=size),
            st.lists(st.binary(max_size=20), min_size=size, max_size=size),
        )
    )
    arr = np.empty(size, dtype=object)
    arr[:] = items
    return arr.reshape(shape)


names = st.text(st.characters(codec="utf-8"), min_size=1, max_size=12)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(names, st.one_of(numeric_arrays(), object_arrays()), max_size=5))
def test_any_set_of_arrays_round_trips(arrays: dict[str, np.ndarray]) -> None:
    _, out = roundtrip(arrays)
    assert list(out) == list(arrays)
    for name, arr in arrays.items():
        if arr.dtype == object and arr.size == 0:
            assert out[name].shape == arr.shape  # no items: str and bytes look alike
            continue
        assert_same(out[name], arr)


@settings(max_examples=50, deadline=None)
@given(
    st.dictionaries(
        st.text(max_size=10),
        st.one_of(st.integers(-(2**53), 2**53), st.text(max_size=10), st.booleans(), st.none()),
        max_size=5,
    ).filter(lambda d: "arrays" not in d)
)
def test_any_json_header_round_trips(header: dict[str, Any]) -> None:
    got, out = roundtrip({}, header)
    assert got == header
    assert out == {}


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(numeric_dtypes, st.integers(0, 3 * SHM_MIN // 8), st.booleans()), max_size=4
    ),
    st.integers(0, 3),
)
def test_any_mix_of_inline_and_shared_arrays_round_trips(
    specs: list[tuple[np.dtype[Any], int, bool]], arena_blocks: int
) -> None:
    arrays = {}
    for i, (dtype, count, strided) in enumerate(specs):
        arr = (np.arange(count * 2) % 97).astype(dtype)
        arrays[f"a{i}"] = arr[::2] if strided else arr[:count]
    arena = Arena.create(arena_blocks * SHM_MIN) if arena_blocks else None
    try:
        _, out = roundtrip(arrays, arena=arena)
        for name, arr in arrays.items():
            assert_same(out[name], np.ascontiguousarray(arr))
    finally:
        if arena is not None:
            arena.close()


# -- over a real socket, as the worker and the gateway use it -----------------------
def test_frames_cross_a_socket_pair_back_to_back() -> None:
    """Several frames written in a row are read back one by one, intact and in order."""
    a, b = socket.socketpair()
    frames = [
        ({"id": 1, "op": "predict"}, {"x": np.arange(200_000, dtype=np.float32).reshape(-1, 4)}),
        ({"id": 2, "op": "predict"}, {"s": np.array(["a", "bé"], dtype=object)}),
        ({"id": 3, "op": "stop"}, None),
    ]

    def write() -> None:
        for header, arrays in frames:
            _send(a, header, arrays)

    writer = threading.Thread(target=write)
    writer.start()
    try:
        b.settimeout(30)
        for header, arrays in frames:
            hlen, plen = PREFIX.unpack(_read_exact(b, PREFIX.size))
            got_header, got = decode(_read_exact(b, hlen), _read_exact(b, plen))
            assert got_header == header
            assert list(got) == list(arrays or {})
            for name, arr in (arrays or {}).items():
                assert_same(got[name], arr)
    finally:
        writer.join(timeout=30)
        a.close()
        b.close()


def test_reading_from_a_closed_peer_ends_with_eof() -> None:
    a, b = socket.socketpair()
    a.sendall(b"\x01\x00")  # half a prefix, then the peer is gone
    a.close()
    with pytest.raises(EOFError):
        _read_exact(b, PREFIX.size)
    b.close()
