"""float16 and bfloat16 tables: exact conversions, float32 accumulation, one rounding.

The rules (README, "Half precision"): every method widens 16-bit tables to
float32, adds ``(token + segment) + position`` there and rounds once to the
output dtype. So every method equals the naive loop "widen, add in float32,
round" bit for bit (the one-hot products add exact zeros, which changes nothing
in float32), and every output is within 1 ulp of the exact (float64) sum.
"""

import json
import struct

import ml_dtypes
import numpy as np
import pytest
from numba import njit

import bert_embedding_kernels as bek
from bert_embedding_kernels.bench.engine.reference import naive_layer_norm
from bert_embedding_kernels.methods.fused import forward as fused
from bert_embedding_kernels.methods.fused import halfbits
from bert_embedding_kernels.registry import BITWISE, REGISTRY

# The methods whose records promise the naive loop's bits (token order, one rounding).
BITWISE_METHODS = tuple(n for n, r in REGISTRY.items() if r.agreement == BITWISE)

BF16 = np.dtype(ml_dtypes.bfloat16)
F16 = np.dtype(np.float16)
HALF = (BF16, F16)


@njit
def _widen_all(bits, kind, out):
    for i in range(bits.size):
        out[i] = halfbits.widen(bits[i], kind)


@njit
def _narrow_all(values, kind, out):
    for i in range(values.size):
        out[i] = halfbits.narrow(values[i], kind)


@pytest.mark.parametrize("dtype", HALF)
def test_widening_is_exact_for_every_pattern(dtype):
    patterns = np.arange(2**16, dtype=np.uint16)
    widened = np.empty(patterns.size, np.float32)
    _widen_all(patterns, halfbits.KIND[dtype], widened)
    expected = patterns.view(dtype).astype(np.float32)
    np.testing.assert_array_equal(widened, expected)  # NaN == NaN here
    finite = np.isfinite(expected)
    np.testing.assert_array_equal(widened.view(np.uint32)[finite], expected.view(np.uint32)[finite])


def _float32_cases():
    rng = np.random.default_rng(0)
    scales = [1e-45, 1e-40, 1e-38, 6e-8, 3e-5, 1.0, 6.5e4, 3e38]
    random = [(rng.standard_normal(20000) * s).astype(np.float32) for s in scales]
    # Ties: exactly half an ulp between two bfloat16 / float16 neighbours.
    ties = np.arange(0x3F800000, 0x3F800000 + 2**18, 2**15, dtype=np.uint32).view(np.float32)
    special = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, -np.nan, 65504, 65520, 3.4e38], "f4")
    signalling = np.array([0x7F800001, 0xFFA00000], np.uint32).view(np.float32)
    return np.concatenate([*random, ties, ties + np.float32(1e-7), special, signalling])


@pytest.mark.parametrize("dtype", HALF)
def test_rounding_matches_numpy_and_ml_dtypes(dtype):
    values = _float32_cases()
    narrowed = np.empty(values.size, np.uint16)
    with np.errstate(over="ignore"):
        expected = values.astype(dtype)
    _narrow_all(values, halfbits.KIND[dtype], narrowed)
    nan = np.isnan(values)
    np.testing.assert_array_equal(narrowed[~nan], expected.view(np.uint16)[~nan])
    assert np.isnan(narrowed[nan].view(dtype).astype(np.float32)).all()  # a NaN stays NaN


def _tables(dtype, vocab=60, hidden=33, seed=0):
    return bek.EmbeddingTables.random(vocab, hidden, max_positions=40, dtype=dtype, seed=seed)


def _naive(tables, ids, types, out_dtype=None):
    """Widen, add (token + segment) + position in float32, round once: one token at a time."""
    batch, seq = ids.shape
    out = np.empty((batch, seq, tables.hidden_size), np.float32)
    for b in range(batch):
        for s in range(seq):
            t = tables.token[ids[b, s]].astype(np.float32)
            g = tables.segment[types[b, s]].astype(np.float32)
            out[b, s] = (t + g) + tables.position[s].astype(np.float32)
    return out if out_dtype == np.float32 else out.astype(tables.dtype)


def _ulps(y, exact, dtype):
    """|y - exact| in units in the last place of ``dtype`` at |y| (subnormals included)."""
    y64 = np.asarray(y, np.float64)
    info = ml_dtypes.finfo(dtype)  # numpy's finfo does not know bfloat16
    mantissa_bits, smallest_normal = info.nmant, float(info.smallest_normal)
    exponent = np.floor(np.log2(np.maximum(np.abs(y64), smallest_normal)))
    return np.abs(y64 - exact) / 2.0 ** (exponent - mantissa_bits)


def _half_methods(names):
    """The registered methods that take 16-bit tables (all four shipped ones do)."""
    return [n for n in names if {"float16", "bfloat16"} <= set(REGISTRY[n].dtypes)]


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("method", _half_methods(bek.METHODS))
@pytest.mark.parametrize("batch", [1, 3, 65])
def test_every_method_rounds_once(dtype, method, batch):
    tables = _tables(dtype, hidden=257 if batch == 65 else 33)  # 65 x 7 x 257: parallel path
    rng = np.random.default_rng(batch)
    ids = rng.integers(0, 60, (batch, 7))
    types = rng.integers(0, 2, (batch, 7))
    out = np.full((batch, 7, tables.hidden_size), np.nan, dtype)  # poisoned
    y = bek.embed(tables, ids, types, method=method, out=out)
    expected = _naive(tables, ids, types)
    np.testing.assert_array_equal(y.view(np.uint16), expected.view(np.uint16))
    exact = (
        tables.token[ids].astype(np.float64)
        + tables.segment[types].astype(np.float64)
        + tables.position[np.arange(7)].astype(np.float64)
    )
    assert _ulps(y, exact, dtype).max() <= 1.0
    wide = bek.embed(tables, ids, types, method=method, out_dtype=np.float32)
    assert wide.dtype == np.float32
    np.testing.assert_array_equal(wide, _naive(tables, ids, types, np.float32))


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("method", _half_methods(bek.METHODS))
def test_allocated_outputs_keep_the_dtype(dtype, method):
    """An allocating call large enough for the output pool (1 MiB and up) returns an
    array of the tables' dtype with the rounded sums in it, like a small one."""
    tables = bek.EmbeddingTables.random(60, 512, max_positions=256, dtype=dtype, seed=2)
    rng = np.random.default_rng(3)
    ids, types = rng.integers(0, 60, (4, 256)), rng.integers(0, 2, (4, 256))
    y = bek.embed(tables, ids, types, method=method)
    assert y.nbytes >= bek.pool.MIN_BYTES  # the pooled path is the one tested
    assert y.dtype == dtype
    np.testing.assert_array_equal(y.view(np.uint16), _naive(tables, ids, types).view(np.uint16))


@pytest.mark.parametrize("dtype", HALF)
def test_nan_inf_and_subnormals_pass_through(dtype):
    tables = _tables(dtype, vocab=6, hidden=5)
    token = tables.token.copy()
    tiny = ml_dtypes.finfo(dtype).smallest_subnormal
    token[1] = [np.nan, np.inf, -np.inf, tiny, -tiny]
    special = bek.EmbeddingTables(token, np.zeros_like(tables.segment), tables.position * 0)
    ids = np.array([[1, 2]])
    for method in BITWISE_METHODS:
        y = bek.embed(special, ids, method=method).astype(np.float32)
        assert np.isnan(y[0, 0, 0]) and y[0, 0, 1] == np.inf and y[0, 0, 2] == -np.inf
        assert y[0, 0, 3] == np.float32(tiny) and y[0, 0, 4] == -np.float32(tiny)
        assert np.isfinite(y[0, 1]).all()  # a gather touches only the rows it reads


@pytest.mark.parametrize("parallel", [False, True], ids=["serial", "parallel"])
@pytest.mark.parametrize("dtype", HALF)
def test_whole_vectors_match_the_naive_loop_on_every_pattern(dtype, parallel, monkeypatch):
    # The fused kernel adds four rows at once in whole 16-lane vectors
    # (kernels/bert_embedding_kernels/methods/fused/vectors.py)
    # and the columns after them one by one. Every 16-bit pattern (NaN, infinities,
    # subnormals, the largest finite values) is a token-table element here, added to
    # segment and position rows of random values and of the largest finite values, so
    # that sums overflow, round and tie; 35 columns: two whole vectors and a tail of three.
    # Same bits as the naive loop, stored 16-bit and as float32; a NaN stays a NaN of its sign
    # (the payload: the kernels keep it, ml_dtypes' bfloat16 rounding makes it 0x7FC0).
    if parallel:  # a small output through the parallel kernel: the same loop, threaded
        monkeypatch.setattr(fused, "SERIAL_MAX_BYTES", 0)
    hidden, seq = 35, 8
    vocab = -(-65536 // hidden)
    patterns = np.resize(np.arange(65536, dtype=np.uint32).astype(np.uint16), vocab * hidden)
    rng = np.random.default_rng(7)
    largest = ml_dtypes.finfo(dtype).max
    segment = np.stack([rng.standard_normal(hidden), np.full(hidden, largest)]).astype(dtype)
    position = rng.standard_normal((seq, hidden)) * np.logspace(-6, 6, hidden)
    position[seq // 2] = largest
    tables = bek.EmbeddingTables(
        patterns.reshape(vocab, hidden).view(dtype), segment, position.astype(dtype)
    )
    batch = -(-vocab // seq) + 1  # every token row, in four-row groups and a last few
    ids = np.arange(batch * seq).reshape(batch, seq) % vocab
    types = rng.integers(0, 2, (batch, seq))
    with np.errstate(over="ignore", invalid="ignore"):
        y = bek.embed(tables, ids, types)
        wide = bek.embed(tables, ids, types, out_dtype=np.float32)
        expected = _naive(tables, ids, types)
        expected_wide = _naive(tables, ids, types, np.float32)
    nan = np.isnan(expected.astype(np.float32))
    assert np.array_equal(np.isnan(y.astype(np.float32)), nan)
    assert np.array_equal(np.signbit(y.astype(np.float32)), np.signbit(expected.astype(np.float32)))
    np.testing.assert_array_equal(y.view(np.uint16)[~nan], expected.view(np.uint16)[~nan])
    np.testing.assert_array_equal(wide.view(np.uint32), expected_wide.view(np.uint32))


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("method", _half_methods(bek.METHODS))
@pytest.mark.parametrize("hidden", [64, 37])  # whole 16-lane vectors; and a tail after them
def test_layer_norm_rounds_once(dtype, method, hidden):
    tables = _tables(dtype, hidden=hidden)
    rng = np.random.default_rng(2)
    ids, types = rng.integers(0, 60, (70, 5)), rng.integers(0, 2, (70, 5))
    y, sums = bek.embed(tables, ids, types, method=method, layer_norm=True, return_sum=True)
    assert y.dtype == sums.dtype == dtype
    np.testing.assert_array_equal(sums.view(np.uint16), _naive(tables, ids, types).view(np.uint16))
    exact = naive_layer_norm(
        _naive(tables, ids, types, np.float32),
        tables.norm_weight.astype(np.float64),
        tables.norm_bias.astype(np.float64),
        tables.norm_eps,
    )
    # Statistics in float64 over the float32 sum, one rounding at the end; the
    # fused kernel's affine step is float32, so allow one ulp more than rounding.
    assert _ulps(y, exact, dtype).max() <= 1.0


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("method", _half_methods(bek.METHODS))
def test_layer_norm_into_float32(dtype, method):
    # out_dtype=float32: the normalised value before any 16-bit rounding, within a few
    # float32 roundings of the exact LayerNorm (statistics in float64: their error is
    # far below these), and the 16-bit result is within one ulp of the same exact value.
    tables = _tables(dtype, hidden=37)
    rng = np.random.default_rng(4)
    ids, types = rng.integers(0, 60, (9, 7)), rng.integers(0, 2, (9, 7))
    wide = bek.embed(tables, ids, types, method=method, layer_norm=True, out_dtype=np.float32)
    narrow = bek.embed(tables, ids, types, method=method, layer_norm=True)
    assert wide.dtype == np.float32 and narrow.dtype == dtype
    sums = _naive(tables, ids, types, np.float32).astype(np.float64)
    weight = tables.norm_weight.astype(np.float64)
    bias = tables.norm_bias.astype(np.float64)
    exact = naive_layer_norm(sums, weight, bias, tables.norm_eps)
    centred = sums - sums.mean(-1, keepdims=True)
    z = centred / np.sqrt(np.mean(centred**2, -1, keepdims=True) + tables.norm_eps)
    bound = 4 * np.finfo(np.float32).eps * (np.abs(weight * z) + np.abs(bias))
    assert (np.abs(wide - exact) <= bound).all()
    assert _ulps(narrow, exact, dtype).max() <= 1.0


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("method", _half_methods(bek.BACKWARD_METHODS))
def test_backward_accumulates_in_float32(dtype, method):
    tables = _tables(dtype)
    rng = np.random.default_rng(3)
    ids, types = rng.integers(0, 8, (4, 7)), rng.integers(0, 2, (4, 7))  # repeated rows
    grad = rng.standard_normal((4, 7, 33)).astype(dtype)
    gradients = bek.embed_backward(tables, grad, ids, types, method=method, padding_idx=3)
    expected = np.zeros((60, 33), np.float32)
    for b in range(4):
        for s in range(7):
            if ids[b, s] != 3:
                expected[ids[b, s]] += grad[b, s].astype(np.float32)
    assert gradients.token.dtype == np.float32  # the default for 16-bit tables
    if method in BITWISE_METHODS:  # token order, float32: the naive loop's bits
        np.testing.assert_array_equal(gradients.token, expected)
    else:
        np.testing.assert_allclose(gradients.token, expected, rtol=1e-6, atol=1e-6)
    rounded = bek.embed_backward(
        tables, grad, ids, types, method=method, padding_idx=3, grad_dtype=dtype
    )
    assert rounded.token.dtype == dtype
    np.testing.assert_array_equal(rounded.token, gradients.token.astype(dtype))
    wide_grad = bek.embed_backward(tables, grad.astype(np.float32), ids, types, method=method)
    np.testing.assert_array_equal(wide_grad.position, gradients.position)


def test_out_dtype_and_grad_dtype_errors_name_the_choices():
    half = _tables(BF16)
    single = _tables(np.float32)
    ids = np.array([[1, 2]])
    with pytest.raises(TypeError, match=r"out_dtype is .*float64.* bfloat16 or float32"):
        bek.embed(half, ids, out_dtype=np.float64)
    with pytest.raises(TypeError, match=r"out_dtype is .*float16.* it must be float32"):
        bek.embed(single, ids, out_dtype=np.float16)
    with pytest.raises(TypeError, match=r"out has dtype float32; it must have the output dtype"):
        bek.embed(half, ids, out=np.empty((1, 2, 33), np.float32))
    with pytest.raises(TypeError, match=r"grad_output has dtype float64; with bfloat16"):
        bek.embed_backward(half, np.zeros((1, 2, 33)), ids)
    with pytest.raises(TypeError, match="grad_dtype"):
        bek.embed_backward(half, np.zeros((1, 2, 33), BF16), ids, grad_dtype=np.float16)


def _write_safetensors(path, tensors: dict[str, tuple[str, np.ndarray]]) -> None:
    """A minimal writer of the format (header size, JSON header, raw bytes): BF16 included."""
    header, blobs, offset = {}, [], 0
    for name, (stored, array) in tensors.items():
        data = np.ascontiguousarray(array).tobytes()
        header[name] = {
            "dtype": stored,
            "shape": list(array.shape),
            "data_offsets": [offset, offset + len(data)],
        }
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def _checkpoint(tmp_path, stored: str, dtype) -> dict:
    rng = np.random.default_rng(5)
    shapes = {
        "embeddings.word_embeddings.weight": (30, 8),
        "embeddings.token_type_embeddings.weight": (2, 8),
        "embeddings.position_embeddings.weight": (12, 8),
        "embeddings.LayerNorm.weight": (8,),
        "embeddings.LayerNorm.bias": (8,),
    }
    tensors = {k: (stored, rng.standard_normal(s).astype(dtype)) for k, s in shapes.items()}
    _write_safetensors(tmp_path / "model.safetensors", tensors)
    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    return tensors


@pytest.mark.parametrize(("stored", "dtype"), [("BF16", BF16), ("F16", F16), ("F32", np.float32)])
def test_checkpoints_load_as_stored(tmp_path, stored, dtype):
    tensors = _checkpoint(tmp_path, stored, dtype)
    tables = bek.EmbeddingTables.from_safetensors(tmp_path)
    assert tables.dtype == np.dtype(dtype)
    word = tensors["embeddings.word_embeddings.weight"][1]
    np.testing.assert_array_equal(tables.token.view(np.uint8), word.view(np.uint8))
    converted = bek.EmbeddingTables.from_safetensors(tmp_path, dtype=np.float32)
    np.testing.assert_array_equal(converted.token, word.astype(np.float32))
    assert bek.EmbeddingTables.from_safetensors(tmp_path, dtype="bfloat16").dtype == BF16


def test_an_unsupported_tensor_dtype_names_file_tensor_and_choices(tmp_path):
    tensors = _checkpoint(tmp_path, "F32", np.float32)
    tensors["embeddings.position_embeddings.weight"] = ("I64", np.zeros((12, 8), np.int64))
    _write_safetensors(tmp_path / "model.safetensors", tensors)
    with pytest.raises(
        TypeError, match=r"model\.safetensors: tensor 'embeddings\.position.*I64.*BF16"
    ):
        bek.EmbeddingTables.from_safetensors(tmp_path)


def test_every_shipped_method_takes_half_tables():
    assert _half_methods(bek.METHODS) == list(bek.METHODS)


def test_tables_accept_half_arrays_and_name_the_dtypes():
    token = np.zeros((4, 3), F16)
    tables = bek.EmbeddingTables(token, np.zeros((2, 3), F16), np.zeros((5, 3), F16))
    assert tables.dtype == F16
    with pytest.raises(TypeError, match="bfloat16"):
        bek.EmbeddingTables(np.zeros((4, 3), np.int8), token[:2], token)
