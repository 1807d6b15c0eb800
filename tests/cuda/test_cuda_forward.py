"""Forward kernels against the naive host reference (bitwise for the sum)."""

import numpy as np
import pytest
from cuda_naive import layer_norm, summed, tables

kc = pytest.importorskip("bert_embedding_kernels.cuda")
norm = pytest.importorskip("bert_embedding_kernels.cuda.norm")
cuda = kc.cuda
requires_gpu = pytest.mark.skipif(kc.SIMULATOR, reason="hardware-only variant: needs a GPU")

EPS = 1e-12


def device_tables(dtype=np.float32, **shape):
    token, segment, position, weight, bias = tables(dtype=dtype, **shape)
    host = (token, segment, position, weight, bias)
    return kc.DeviceTables(token, segment, position, norm_weight=weight, norm_bias=bias), host


def ids(high, shape, seed, dtype=np.int64):
    return np.random.default_rng(seed).integers(0, high, shape).astype(dtype)


def arange_positions(seq, start=0):
    return np.arange(start, start + seq)[None, :]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sum_is_bitwise_the_reference_with_shared_defaults(dtype):
    device, (token, segment, position, _, _) = device_tables(dtype)
    input_ids = ids(50, (3, 9), seed=1)
    result = kc.embed(device, input_ids).copy_to_host()
    expected = summed(
        token, segment, position, input_ids, np.zeros((1, 9), int), arange_positions(9)
    )
    assert result.dtype == dtype
    np.testing.assert_array_equal(result, expected)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sum_with_per_sequence_types_and_positions(dtype):
    device, (token, segment, position, _, _) = device_tables(dtype)
    input_ids, types, positions = ids(50, (3, 7), 2), ids(2, (3, 7), 3), ids(16, (3, 7), 4)
    result = kc.embed(device, input_ids, types, positions).copy_to_host()
    np.testing.assert_array_equal(
        result, summed(token, segment, position, input_ids, types, positions)
    )


@pytest.mark.parametrize("shape", [(7,), (1, 7)], ids=["1-D", "(1, seq)"])
def test_sum_with_positions_shared_by_the_batch(shape):
    device, (token, segment, position, _, _) = device_tables()
    input_ids, types = ids(50, (2, 7), 5), ids(2, (2, 7), 6)
    positions = ids(16, shape, 7)
    result = kc.embed(device, input_ids, types, positions).copy_to_host()
    expected = summed(token, segment, position, input_ids, types, positions.reshape(1, 7))
    np.testing.assert_array_equal(result, expected)


def test_sum_with_past_length_shifts_default_positions():
    device, (token, segment, position, _, _) = device_tables()
    input_ids = ids(50, (2, 5), 8)
    result = kc.embed(device, input_ids, past_length=11).copy_to_host()
    expected = summed(
        token, segment, position, input_ids, np.zeros((1, 5), int), arange_positions(5, 11)
    )
    np.testing.assert_array_equal(result, expected)


# 8 threads per token in the simulator, 4 strides a pass: 17 ends inside the first
# pass, 40 takes a second one.
@pytest.mark.parametrize("hidden", [1, 2, 17, 40])
def test_sum_at_narrow_and_odd_widths(hidden):
    device, (token, segment, position, _, _) = device_tables(hidden=hidden)
    input_ids, types = ids(50, (2, 5), 9), ids(2, (2, 5), 10)
    result = kc.embed(device, input_ids, types).copy_to_host()
    np.testing.assert_array_equal(
        result, summed(token, segment, position, input_ids, types, arange_positions(5))
    )


def test_sum_batch_of_one():
    device, (token, segment, position, _, _) = device_tables()
    input_ids = ids(50, (1, 9), 11)
    result = kc.embed(device, input_ids).copy_to_host()
    expected = summed(
        token, segment, position, input_ids, np.zeros((1, 9), int), arange_positions(9)
    )
    np.testing.assert_array_equal(result, expected)


@pytest.mark.parametrize("id_dtype", [np.int32, np.uint8, np.int16])
def test_ids_given_as_device_arrays_of_any_integer_dtype(id_dtype):
    device, (token, segment, position, _, _) = device_tables()
    input_ids, types, positions = (
        ids(50, (2, 6), 12, id_dtype),
        ids(2, (2, 6), 13, id_dtype),
        ids(16, (2, 6), 14, id_dtype),
    )
    result = kc.embed(
        device, cuda.to_device(input_ids), cuda.to_device(types), cuda.to_device(positions)
    ).copy_to_host()
    np.testing.assert_array_equal(
        result, summed(token, segment, position, input_ids, types, positions)
    )


def test_out_given_as_a_device_array_is_filled_and_returned():
    device, (token, segment, position, _, _) = device_tables()
    input_ids = ids(50, (2, 4), 15)
    out = cuda.to_device(np.full((2, 4, 33), np.nan, np.float32))
    assert kc.embed(device, input_ids, out=out) is out
    expected = summed(
        token, segment, position, input_ids, np.zeros((1, 4), int), arange_positions(4)
    )
    np.testing.assert_array_equal(out.copy_to_host(), expected)


def test_empty_batch_gives_an_empty_result():
    device, _ = device_tables()
    for shape in [(0, 5), (2, 0)]:
        result = kc.embed(device, np.zeros(shape, np.int64))
        assert tuple(result.shape) == (*shape, 33)
        result = kc.embed(device, np.zeros(shape, np.int64), layer_norm=True, return_sum=True)
        assert [tuple(r.shape) for r in result] == [(*shape, 33)] * 2


def test_out_of_the_wrong_kind_is_refused_with_the_cpu_messages():
    device, _ = device_tables()
    input_ids = ids(50, (2, 4), 16)
    with pytest.raises(TypeError, match=r"out is ndarray; it must be a CUDA array"):
        kc.embed(device, input_ids, out=np.empty((2, 4, 33), np.float32))
    with pytest.raises(TypeError, match=r"out has dtype float64; it must have the tables' dtype"):
        kc.embed(device, input_ids, out=cuda.device_array((2, 4, 33), np.float64))
    with pytest.raises(
        ValueError, match=r"out has shape \(2, 4, 32\); it must have shape \(2, 4, 33\)"
    ):
        kc.embed(device, input_ids, out=cuda.device_array((2, 4, 32), np.float32))
    overlapping = device.token[:8].reshape(2, 4, 33)
    with pytest.raises(ValueError, match=r"out overlaps tables\.token"):
        kc.embed(device, input_ids, out=overlapping)


@pytest.mark.parametrize("name", ["norm_weight", "norm_bias"])
def test_out_over_the_layer_norm_parameters_is_refused(name):
    # The CPU's issue 37 hole (out over norm_weight: wrong rows, silently) on the device.
    token, segment, position, weight, bias = tables()
    out = cuda.to_device(np.zeros((2, 4, 33), np.float32))
    norm = {"norm_weight": weight, "norm_bias": bias, name: out[1, 3]}
    device = kc.DeviceTables(token, segment, position, **norm)
    with pytest.raises(ValueError, match=rf"^out overlaps tables\.{name}; pass an array"):
        kc.embed(device, ids(50, (2, 4), 16), out=out, layer_norm=True)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_layer_norm_matches_the_reference(dtype):
    device, (token, segment, position, weight, bias) = device_tables(dtype)
    input_ids, types = ids(50, (3, 9), 17), ids(2, (3, 9), 18)
    result = kc.embed(device, input_ids, types, layer_norm=True).copy_to_host()
    expected = layer_norm(
        summed(token, segment, position, input_ids, types, arange_positions(9)), weight, bias, EPS
    )
    # Float64 statistics agree to a few float64 ulps whatever the summation order;
    # rounding the normalised value to the dtype can then differ by one ulp, and
    # the affine step (weight, bias ~ N(0, 1)) by one more rounding each.
    tolerance = 1e-6 if dtype == np.float32 else 1e-13
    np.testing.assert_allclose(result, expected, rtol=tolerance, atol=tolerance)


def test_layer_norm_past_the_register_limit_matches_the_reference():
    # Rows wider than 32 x MAX_PER_LANE go through the kernel that re-reads `out`.
    hidden = 32 * norm.MAX_PER_LANE + 3  # 32 lanes a warp
    device, (token, segment, position, weight, bias) = device_tables(hidden=hidden, vocab=20)
    input_ids, types = ids(20, (2, 3), 21), ids(2, (2, 3), 22)
    normed, sums = kc.embed(device, input_ids, types, layer_norm=True, return_sum=True)
    expected_sum = summed(token, segment, position, input_ids, types, arange_positions(3))
    np.testing.assert_array_equal(sums.copy_to_host(), expected_sum)
    np.testing.assert_allclose(
        normed.copy_to_host(), layer_norm(expected_sum, weight, bias, EPS), rtol=1e-6, atol=1e-6
    )


def test_both_layer_norm_kernels_give_the_same_bits(monkeypatch):
    # Same float64 terms in the same order: the register kernel and the re-reading one agree.
    device, _ = device_tables(hidden=70)
    input_ids, types = ids(50, (2, 5), 23), ids(2, (2, 5), 24)
    in_registers = kc.embed(device, input_ids, types, layer_norm=True).copy_to_host()
    monkeypatch.setattr(norm, "MAX_PER_LANE", 0)
    reread = kc.embed(device, input_ids, types, layer_norm=True).copy_to_host()
    np.testing.assert_array_equal(in_registers, reread)


def test_layer_norm_keeps_the_bitwise_sum_on_request():
    device, (token, segment, position, weight, bias) = device_tables()
    input_ids, positions = ids(50, (2, 5), 19), ids(16, (2, 5), 20)
    normed, sums = kc.embed(device, input_ids, None, positions, layer_norm=True, return_sum=True)
    expected_sum = summed(token, segment, position, input_ids, np.zeros((1, 5), int), positions)
    np.testing.assert_array_equal(sums.copy_to_host(), expected_sum)
    np.testing.assert_allclose(
        normed.copy_to_host(), layer_norm(expected_sum, weight, bias, EPS), rtol=1e-6, atol=1e-6
    )


def test_layer_norm_of_width_one_is_the_bias():
    # A one-element row has zero variance: (x - mean) is exactly 0 and eps keeps it finite.
    device, (_, _, _, _, bias) = device_tables(hidden=1)
    result = kc.embed(device, ids(50, (2, 3), 21), layer_norm=True).copy_to_host()
    np.testing.assert_array_equal(result, np.broadcast_to(bias, (2, 3, 1)))


def test_layer_norm_into_given_out_and_sums():
    device, (token, segment, position, weight, bias) = device_tables(hidden=5)
    input_ids = ids(50, (1, 3), 22)
    batch = kc.prepare(device, cuda.to_device(input_ids))
    out, sums = cuda.device_array((1, 3, 5), np.float32), cuda.device_array((1, 3, 5), np.float32)
    result = kc.fused_sum_norm(device, batch, out, keep_sum=True, sums=sums)
    assert result[0] is out and result[1] is sums
    expected_sum = summed(
        token, segment, position, input_ids, np.zeros((1, 3), int), arange_positions(3)
    )
    np.testing.assert_array_equal(sums.copy_to_host(), expected_sum)
    np.testing.assert_allclose(
        out.copy_to_host(), layer_norm(expected_sum, weight, bias, EPS), rtol=1e-6, atol=1e-6
    )
    with pytest.raises(ValueError, match="sums overlaps out"):
        kc.fused_sum_norm(device, batch, out, keep_sum=True, sums=out)


def test_layer_norm_options_are_checked():
    token, segment, position, _, _ = tables()
    bare = kc.DeviceTables(token, segment, position)
    with pytest.raises(ValueError, match="needs the LayerNorm parameters"):
        kc.embed(bare, ids(50, (1, 2), 23), layer_norm=True)
    with pytest.raises(ValueError, match="return_sum=True needs layer_norm=True"):
        kc.embed(bare, ids(50, (1, 2), 23), return_sum=True)
    with pytest.raises(TypeError, match="layer_norm is str"):
        kc.embed(bare, ids(50, (1, 2), 23), layer_norm="yes")


@pytest.mark.skipif(not kc.SIMULATOR, reason="checks the simulator's refusal")
def test_hardware_only_variants_are_refused_in_the_simulator():
    device, _ = device_tables()
    batch = kc.prepare(device, ids(50, (1, 2), 24))
    with pytest.raises(ValueError, match="reduction='shuffle' needs warp shuffles"):
        kc.fused_sum_norm(device, batch, reduction="shuffle")
    with pytest.raises(ValueError, match="store='streaming' needs"):
        kc.fused_sum(device, batch, store="streaming")


@requires_gpu
def test_shuffle_reduction_matches_the_shared_memory_one():
    device, _ = device_tables(hidden=768, vocab=500, positions=512)
    batch = kc.prepare(device, ids(500, (4, 128), 25))
    shared = kc.fused_sum_norm(device, batch, reduction="shared", store="plain").copy_to_host()
    shuffled = kc.fused_sum_norm(device, batch, reduction="shuffle").copy_to_host()
    np.testing.assert_allclose(shuffled, shared, rtol=1e-6, atol=1e-6)


@requires_gpu
def test_streaming_stores_give_the_same_bits():
    if not kc.HAS_STREAMING_STORE:
        pytest.skip("this numba.cuda has no cache-hint stores (numba-cuda has)")
    device, _ = device_tables(hidden=768, vocab=500, positions=512)
    batch = kc.prepare(device, ids(500, (4, 128), 26))
    plain = kc.fused_sum(device, batch, store="plain").copy_to_host()
    np.testing.assert_array_equal(
        kc.fused_sum(device, batch, store="streaming").copy_to_host(), plain
    )


@requires_gpu
def test_float32_pairs_give_the_bits_of_one_element_at_a_time(monkeypatch):
    from bert_embedding_kernels.cuda import forward

    device, _ = device_tables(hidden=768, vocab=500, positions=512)
    input_ids, types = ids(500, (4, 64), 31), ids(2, (4, 64), 32)
    batch = kc.prepare(device, input_ids, types)
    assert forward._as_pairs(device, cuda.device_array((4, 64, 768), np.float32)) is not None
    pairs = kc.fused_sum(device, batch).copy_to_host()
    monkeypatch.setattr(forward, "_as_pairs", lambda tables, result: None)
    np.testing.assert_array_equal(pairs, kc.fused_sum(device, batch).copy_to_host())
