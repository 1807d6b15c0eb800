"""float16 and bfloat16 device tables: bit for bit the CPU's 16-bit results.

On the simulator (tests/cuda/conftest.py), on tables holding NaNs (both signs),
infinities, subnormals, the largest finite value and sums that round at ties.
"""

import ml_dtypes
import numpy as np
import pytest
from numba import njit

import bert_embedding_kernels as bek
from bert_embedding_kernels.methods.fused import halfbits as cpu_bits

kc = pytest.importorskip("bert_embedding_kernels.cuda")
# The simulator computes NaNs and infinities with numpy scalars, which warn.
pytestmark = pytest.mark.filterwarnings(
    "ignore:(invalid value|overflow) encountered:RuntimeWarning"
)
hb = pytest.importorskip("bert_embedding_kernels.cuda.halfbits")

# The conversions are device functions; only the simulator lets the host call them.
ON_SIMULATOR = pytest.mark.skipif(not kc.SIMULATOR, reason="calls device functions from the host")
F16, BF16 = np.dtype(np.float16), np.dtype(ml_dtypes.bfloat16)
HALVES = pytest.mark.parametrize("dtype", [F16, BF16], ids=["float16", "bfloat16"])
HIDDEN = 16
IDS = np.array([[1, 2, 3, 4, 5, 6, 0, 1], [2, 2, 7, 3, 4, 5, 6, 7]])
TYPES = np.array([[0, 0, 0, 1, 1, 1, 0, 1], [1, 0, 1, 0, 1, 0, 1, 0]])


def bits(array):
    return np.asarray(array).view(np.uint16)


def special_tables(dtype, norm=True):
    """Rows 0-2 hold the special values, row 3+ random ones; segment 1 makes ties with row 3."""
    rng = np.random.default_rng(7)
    finfo = ml_dtypes.finfo(dtype)
    eps, tiny, big = float(finfo.eps), float(finfo.smallest_normal), float(finfo.max)
    token = rng.standard_normal((8, HIDDEN)).astype(np.float32)
    segment = rng.standard_normal((2, HIDDEN)).astype(np.float32)
    position = rng.standard_normal((8, HIDDEN)).astype(np.float32)
    token[1, :8] = [np.nan, np.inf, -np.inf, tiny / 4, -tiny / 2, big, -big, tiny / 8]
    segment[0, :8] = [1.0, -np.inf, 1.0, tiny / 4, -tiny / 4, big, -big, tiny / 8]
    token[2, :4] = [-np.nan, 0.0, -0.0, np.inf]  # -nan: a NaN with its sign bit set
    token[3, :] = 1.0 + eps * np.arange(HIDDEN) % 4  # 1, 1 + eps, ... : odd and even
    segment[1, :] = eps / 2  # with token row 3 and position 0: sums at ties
    position[0, :] = 0.0
    position[1, : HIDDEN // 2] = tiny / 2  # subnormals
    arrays = {"token": token, "segment": segment, "position": position}
    arrays = {name: value.astype(dtype) for name, value in arrays.items()}
    if norm:
        arrays["norm_weight"] = rng.standard_normal(HIDDEN).astype(dtype)
        arrays["norm_bias"] = rng.standard_normal(HIDDEN).astype(dtype)
    return bek.EmbeddingTables(**arrays)


def special_ids():
    ids, types = IDS.copy(), TYPES.copy()
    ids[0, 0], types[0, 0] = 3, 1  # a row of ties at position 0 (a zero row)
    ids[1, 0], types[1, 0] = 1, 0  # the special values, plus segment 0's, plus zeros
    return ids, types


@ON_SIMULATOR
def test_float16_widening_is_exact_for_every_pattern():
    patterns = np.arange(1 << 16, dtype=np.uint16)
    want = patterns.view(np.float16).astype(np.float32).view(np.uint32)
    got = np.array([hb.widen(p, hb.F16) for p in patterns], np.uint32)
    np.testing.assert_array_equal(got, want)
    assert all(hb.widen(p, hb.BF16) == np.uint32(p) << 16 for p in patterns[::97])


@njit
def _cpu_narrow(values, kind):
    out = np.empty(values.size, np.uint16)
    for n in range(values.size):
        out[n] = cpu_bits.narrow(values[n], kind)
    return out


@ON_SIMULATOR
@pytest.mark.parametrize("kind", ["float16", "bfloat16"])
def test_narrowing_rounds_as_the_cpu_at_ties_overflow_subnormals_and_nans(kind):
    dtype = F16 if kind == "float16" else BF16
    gap = 13 if kind == "float16" else 16  # float32 bits below a 16-bit ulp
    exact = np.arange(0, 1 << 16, 5, dtype=np.uint16).view(dtype).astype(np.float32)
    base = exact.view(np.uint32).astype(np.int64)
    rng = np.random.default_rng(0)
    offsets = [0, 1, (1 << (gap - 1)) - 1, 1 << (gap - 1), (1 << (gap - 1)) + 1]
    candidates = np.concatenate(
        [base + o for o in offsets] + [rng.integers(0, 1 << 32, 4000)]
    ).astype(np.uint32)
    values = candidates.view(np.float32)
    cpu_kind = cpu_bits.F16 if kind == "float16" else cpu_bits.BF16
    want = _cpu_narrow(values, cpu_kind)
    device_kind = hb.F16 if kind == "float16" else hb.BF16
    got = np.array([hb.narrow(c, device_kind) for c in candidates], np.uint16)
    np.testing.assert_array_equal(got, want)


@HALVES
def test_sum_is_bitwise_the_cpus_on_special_values(dtype):
    host = special_tables(dtype, norm=False)
    device = host.to_device()
    assert device.dtype == dtype and device.grad_dtype == np.float32
    ids, types = special_ids()
    want = bek.embed(host, ids, types, layer_norm=False)
    got = bek.embed(device, ids, types, layer_norm=False).copy_to_host()
    assert got.dtype == device.array_dtype
    np.testing.assert_array_equal(bits(got), bits(want))
    values = want.astype(np.float32)
    assert np.isnan(values).any() and np.isinf(values).any()
    assert (np.abs(values[values != 0]) < ml_dtypes.finfo(dtype).smallest_normal).any()
    assert len({int(b) for b in bits(want)[np.isnan(values)]}) >= 2  # NaN bits differ


@HALVES
def test_sum_and_layer_norm_are_bitwise_the_cpus(dtype):
    host = special_tables(dtype)
    device = host.to_device()
    ids, types = special_ids()
    want, want_sum = bek.embed(host, ids, types, layer_norm=True, return_sum=True)
    got, got_sum = bek.embed(device, ids, types, layer_norm=True, return_sum=True)
    np.testing.assert_array_equal(bits(got_sum.copy_to_host()), bits(want_sum))
    assert_normalised_bits_equal(got.copy_to_host(), want)
    rows_nan = np.isnan(want.astype(np.float32)).all(axis=-1)
    assert rows_nan.any() and not rows_nan.all()  # NaN rows, and finite ones, compared
    alone = bek.embed(device, ids, types, layer_norm=True).copy_to_host()
    assert_normalised_bits_equal(alone, want)


def assert_normalised_bits_equal(got, want):
    """LayerNorm's output bit for bit, except the sign and payload of a NaN: a row holding a
    NaN normalises to NaNs, and which NaN each element keeps follows the CPU's compiled
    operand order (its serial and parallel builds differ; seen in CI), not a rule."""
    nan = np.isnan(want.astype(np.float32))
    got_values = bits(got).view(want.dtype)  # device bfloat16 arrives as its uint16 patterns
    np.testing.assert_array_equal(np.isnan(got_values.astype(np.float32)), nan)
    np.testing.assert_array_equal(bits(got)[~nan], bits(want)[~nan])


@HALVES
def test_backward_is_bitwise_the_cpus_float32_gradients(dtype):
    host = special_tables(dtype, norm=False)
    device = host.to_device()
    ids, types = special_ids()
    rng = np.random.default_rng(3)
    grad = (rng.standard_normal((2, 8, HIDDEN)) * 1e3).astype(dtype)
    grad[0, 1, :3] = [np.inf, np.nan, ml_dtypes.finfo(dtype).smallest_normal / 2]
    want = bek.embed_backward(host, grad, ids, types, padding_idx=7)
    assert all(w.dtype == np.float32 for w in want)
    got = bek.embed_backward(device, grad, ids, types, padding_idx=7)  # the public API
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g.copy_to_host().view(np.uint32), w.view(np.uint32))
    # The same from a device grad_output of the tables' device dtype, and of float32.
    for on_device in (kc.cuda.to_device(bits(grad).view(device.array_dtype)),
                      kc.cuda.to_device(grad.astype(np.float32))):  # fmt: skip
        got = kc.embed_backward(device, on_device, ids, types, padding_idx=7)
        for g, w in zip(got, want, strict=True):
            np.testing.assert_array_equal(g.copy_to_host().view(np.uint32), w.view(np.uint32))


@HALVES
def test_backward_accumulates_in_float32_as_the_cpu(dtype):
    host = special_tables(dtype, norm=False)
    device = host.to_device()
    grad = np.random.default_rng(4).standard_normal((2, 8, HIDDEN)).astype(dtype)
    start = [np.random.default_rng(5).standard_normal(t.shape).astype(np.float32)
             for t in (host.token, host.segment, host.position)]  # fmt: skip
    want = bek.embed_backward(host, grad, IDS, TYPES, accumulate_into=[s.copy() for s in start])
    into = [kc.cuda.to_device(s) for s in start]
    kc.embed_backward(device, grad, IDS, TYPES, accumulate_into=into)
    for g, w in zip(into, want, strict=True):
        np.testing.assert_array_equal(g.copy_to_host(), w)


@HALVES
def test_round_trip_and_errors(dtype):
    host = special_tables(dtype)
    device = host.to_device()
    back = device.to_host()
    assert back.dtype == dtype
    np.testing.assert_array_equal(bits(back.token), bits(host.token))
    np.testing.assert_array_equal(bits(back.norm_bias), bits(host.norm_bias))
    with pytest.raises(TypeError, match="grad_output has dtype float64"):
        kc.embed_backward(device, np.zeros((2, 8, HIDDEN)), IDS)
    with pytest.raises(TypeError, match="grad_output has dtype int16"):
        kc.embed_backward(device, kc.cuda.to_device(np.zeros((2, 8, HIDDEN), np.int16)), IDS)
    with pytest.raises(ValueError, match="grad_output has shape"):
        kc.embed_backward(
            device, kc.cuda.to_device(np.zeros((2, 7, HIDDEN), device.array_dtype)), IDS
        )
    wrong = kc.cuda.device_array((2, 8, HIDDEN), np.float32)
    with pytest.raises(TypeError, match="out has dtype float32"):
        kc.embed(device, IDS, out=wrong)
    with pytest.raises(TypeError, match="float32, float64, float16 or bfloat16"):
        kc.DeviceTables(*(np.zeros((2, 4), np.int16) for _ in range(3)))
