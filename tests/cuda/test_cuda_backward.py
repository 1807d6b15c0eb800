"""The deterministic backward kernel: bitwise equal to a naive token-order sum."""

import numpy as np
import pytest
from cuda_naive import gradients, tables

kc = pytest.importorskip("bert_embedding_kernels.cuda")
cuda = kc.cuda


def setup(dtype=np.float32, hidden=33, vocab=50, positions=16, seed=0):
    token, segment, position, _, _ = tables(vocab, hidden, positions, dtype=dtype, seed=seed)
    shapes = [token.shape, segment.shape, position.shape]
    return kc.DeviceTables(token, segment, position), shapes


def grad(shape, hidden, dtype=np.float32, seed=0):
    return np.random.default_rng(seed).standard_normal((*shape, hidden)).astype(dtype)


def host(grads):
    return [g.copy_to_host() for g in grads]


def assert_bitwise(result, expected):
    for name, got, want in zip(("token", "segment", "position"), result, expected, strict=True):
        np.testing.assert_array_equal(got, want, err_msg=f"{name} gradient")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_repeated_ids_and_padding_are_bitwise_the_token_order_sum(dtype):
    device, shapes = setup(dtype)
    rng = np.random.default_rng(1)
    input_ids = rng.integers(0, 6, (3, 9))  # few distinct ids: every row repeats
    input_ids[0, :5] = 4  # the padding row, used several times
    types = rng.integers(0, 2, (3, 9))
    g = grad((3, 9), 33, dtype, seed=2)
    result = host(kc.embed_backward(device, g, input_ids, types, padding_idx=4))
    expected = gradients(shapes, g, input_ids, types, np.arange(9)[None], 4, dtype)
    assert not result[0][4].any()
    assert_bitwise(result, expected)


def test_a_row_used_by_most_tokens_exercises_the_unrolled_chain():
    # 25 of 27 tokens read token row 7: a chain longer than several unroll groups, with a tail.
    device, shapes = setup()
    input_ids = np.full((3, 9), 7)
    input_ids[1, 3], input_ids[2, 8] = 0, 49
    g = grad((3, 9), 33, seed=3) * np.float32(1e3)  # large terms: the order shows in the bits
    result = host(kc.embed_backward(device, g, input_ids))
    assert_bitwise(
        result,
        gradients(
            shapes, g, input_ids, np.zeros((1, 9), int), np.arange(9)[None], None, np.float32
        ),
    )


def test_per_sequence_types_and_positions():
    device, shapes = setup()
    rng = np.random.default_rng(4)
    input_ids, types, positions = (
        rng.integers(0, 50, (2, 8)),
        rng.integers(0, 2, (2, 8)),
        rng.integers(0, 16, (2, 8)),
    )
    g = grad((2, 8), 33, seed=5)
    result = host(kc.embed_backward(device, g, input_ids, types, positions))
    assert_bitwise(result, gradients(shapes, g, input_ids, types, positions, None, np.float32))


@pytest.mark.parametrize("hidden", [1, 17])
def test_batch_of_one_at_narrow_widths(hidden):
    device, shapes = setup(hidden=hidden)
    input_ids = np.array([[3, 3, 9, 3, 0]])
    g = grad((1, 5), hidden, seed=6)
    result = host(kc.embed_backward(device, g, input_ids, padding_idx=0))
    assert_bitwise(
        result,
        gradients(shapes, g, input_ids, np.zeros((1, 5), int), np.arange(5)[None], 0, np.float32),
    )


def test_grad_output_and_ids_as_device_arrays():
    device, shapes = setup()
    rng = np.random.default_rng(7)
    input_ids, types = (
        rng.integers(0, 50, (2, 6)).astype(np.int32),
        rng.integers(0, 2, (2, 6)).astype(np.int32),
    )
    g = grad((2, 6), 33, seed=8)
    result = kc.embed_backward(
        device, cuda.to_device(g), cuda.to_device(input_ids), cuda.to_device(types)
    )
    assert [tuple(r.shape) for r in result] == [(50, 33), (2, 33), (16, 33)]
    assert_bitwise(
        host(result), gradients(shapes, g, input_ids, types, np.arange(6)[None], None, np.float32)
    )


def test_a_strided_device_grad_output_is_read_in_its_own_layout():
    # Every other sequence of a larger array: not C-contiguous, compacted once on the device.
    device, shapes = setup()
    input_ids = np.random.default_rng(9).integers(0, 50, (2, 6))
    whole = grad((4, 6), 33, seed=10)
    strided = cuda.to_device(whole)[::2]
    assert not strided.is_c_contiguous()
    result = host(kc.embed_backward(device, strided, input_ids))
    expected = gradients(
        shapes, whole[::2], input_ids, np.zeros((1, 6), int), np.arange(6)[None], None, np.float32
    )
    assert_bitwise(result, expected)


def test_empty_batch_gives_zero_gradients():
    device, shapes = setup()
    result = host(
        kc.embed_backward(device, np.empty((0, 4, 33), np.float32), np.empty((0, 4), np.int64))
    )
    assert_bitwise(result, [np.zeros(shape, np.float32) for shape in shapes])


def test_bad_grad_output_and_padding_idx_are_refused_with_the_cpu_messages():
    device, _ = setup()
    input_ids = np.zeros((2, 3), np.int64)
    with pytest.raises(
        TypeError, match=r"grad_output has dtype float64; it must have the tables' dtype float32"
    ):
        kc.embed_backward(device, np.zeros((2, 3, 33)), input_ids)
    with pytest.raises(
        ValueError, match=r"grad_output has shape \(2, 3, 32\); it must have shape \(2, 3, 33\)"
    ):
        kc.embed_backward(device, np.zeros((2, 3, 32), np.float32), input_ids)
    with pytest.raises(
        ValueError, match=r"padding_idx is 50, out of range: it must satisfy 0 <= padding_idx < 50"
    ):
        kc.embed_backward(device, np.zeros((2, 3, 33), np.float32), input_ids, padding_idx=50)
    with pytest.raises(TypeError, match="padding_idx is float"):
        kc.embed_backward(device, np.zeros((2, 3, 33), np.float32), input_ids, padding_idx=1.0)


def test_accumulate_into_adds_in_token_order_after_the_value_there_and_keeps_padding():
    device, shapes = setup()
    rng = np.random.default_rng(5)
    input_ids = rng.integers(0, 6, (3, 9))
    input_ids[0, :3] = 2  # the padding row
    types = rng.integers(0, 2, (3, 9))
    g = grad((3, 9), 33, seed=6)
    start = [rng.standard_normal(shape).astype(np.float32) for shape in shapes]
    into = kc.DeviceGradients(*(cuda.to_device(a) for a in start))
    result = kc.embed_backward(device, g, input_ids, types, padding_idx=2, accumulate_into=into)
    assert all(got is given for got, given in zip(result, into, strict=True))
    # The CPU's rule: each element starts from the value already there, then adds in token order.
    expected = gradients(
        shapes, g, input_ids, types, np.arange(9)[None], 2, np.float32, start=start
    )
    assert_bitwise(host(result), expected)
    np.testing.assert_array_equal(host(result)[0][2], start[0][2])  # padding row untouched


def test_accumulate_into_of_the_wrong_kind_is_refused():
    device, shapes = setup()
    input_ids, g = np.zeros((1, 4), int), grad((1, 4), 33)
    good = [cuda.device_array(shape, np.float32) for shape in shapes]
    with pytest.raises(TypeError, match="accumulate_into is ndarray"):
        kc.embed_backward(device, g, input_ids, accumulate_into=np.zeros(3))
    with pytest.raises(TypeError, match=r"accumulate_into.segment is ndarray; it must be a CUDA"):
        kc.embed_backward(
            device, g, input_ids, accumulate_into=(good[0], np.zeros(shapes[1]), good[2])
        )
    wrong = cuda.device_array((shapes[2][0] + 1, 33), np.float32)
    with pytest.raises(ValueError, match=r"accumulate_into.position has shape"):
        kc.embed_backward(device, g, input_ids, accumulate_into=(*good[:2], wrong))
    with pytest.raises(ValueError, match=r"accumulate_into\.token overlaps grad_output"):
        big = cuda.to_device(np.zeros((50 * 33,), np.float32))
        kc.embed_backward(
            device, big[: 4 * 33].reshape(1, 4, 33), input_ids,
            accumulate_into=(big.reshape(50, 33), *good[1:]),
        )  # fmt: skip


def _inside(token):
    """What the backward reads, laid inside ``token`` (a (50, 33) float32 device array of
    zeros: valid ids), by the argument it is passed as."""
    words = token.reshape(-1).view(np.int32)
    weight = kc.DeviceTables(*tables()[:3], norm_weight=token[0], norm_bias=token[1])
    return {
        "input_ids": {"input_ids": words[:8].reshape(2, 4)},
        "token_type_ids": {"token_type_ids": words[40:48].reshape(2, 4)},
        "position_ids": {"position_ids": words[100:104]},
        "grad_output": {"grad_output": token.reshape(-1)[: 8 * 33].reshape(2, 4, 33)},
        "tables.token": {"tables": kc.DeviceTables(token, *tables()[1:3])},
        "tables.norm_weight": {"tables": weight},
    }


@pytest.mark.parametrize("target", ["accumulate_into", "out"])
@pytest.mark.parametrize(
    "argument",
    [
        "input_ids",
        "token_type_ids",
        "position_ids",
        "grad_output",
        "tables.token",
        "tables.norm_weight",
    ],
)
def test_targets_sharing_memory_with_an_input_are_refused(target, argument):
    # The CPU's rule (issue 37: a CPU accumulator over input_ids crashed the backward):
    # no gradient array may share memory with anything the call reads.
    device, shapes = setup()
    token = cuda.to_device(np.zeros(shapes[0], np.float32))
    call = {"tables": device, "grad_output": grad((2, 4), 33), "input_ids": np.zeros((2, 4), int)}
    call |= _inside(token)[argument]
    targets = [token, *(cuda.to_device(np.zeros(shape, np.float32)) for shape in shapes[1:])]
    with pytest.raises(ValueError, match=rf"^{target}\.token overlaps {argument}; pass an"):
        kc.embed_backward(**call, **{target: targets})


def test_targets_sharing_memory_with_a_strided_grad_output_are_refused():
    # Compacted into a copy before the sums read it: the caller's array is still read.
    device, shapes = setup()
    token = cuda.to_device(np.zeros(shapes[0], np.float32))
    strided = token[:16].reshape(2, 8, 33)[:, ::2]  # (2, 4, 33), not C-contiguous
    targets = [token, *(cuda.to_device(np.zeros(shape, np.float32)) for shape in shapes[1:])]
    with pytest.raises(ValueError, match=r"^accumulate_into\.token overlaps grad_output"):
        kc.embed_backward(device, strided, np.zeros((2, 4), int), accumulate_into=targets)


def test_out_is_overwritten_with_the_gradients_padding_row_zero():
    device, shapes = setup()
    rng = np.random.default_rng(8)
    input_ids = rng.integers(0, 6, (3, 9))
    input_ids[1, :2] = 3  # the padding row
    g = grad((3, 9), 33, seed=9)
    poisoned = [np.full(shape, np.nan, np.float32) for shape in shapes]  # every element written
    out = kc.DeviceGradients(*(cuda.to_device(a) for a in poisoned))
    result = kc.embed_backward(device, g, input_ids, padding_idx=3, out=out)
    assert all(got is given for got, given in zip(result, out, strict=True))
    expected = gradients(
        shapes, g, input_ids, np.zeros((1, 9), int), np.arange(9)[None], 3, np.float32
    )
    assert_bitwise(host(result), expected)
    assert not host(result)[0][3].any()
    with pytest.raises(ValueError, match="give out or accumulate_into, not both"):
        kc.embed_backward(device, g, input_ids, out=out, accumulate_into=out)
    with pytest.raises(TypeError, match="out is list; it must be a DeviceGradients"):
        kc.embed_backward(device, g, input_ids, out=list(out)[:2])


def test_reused_work_arrays_carry_nothing_from_call_to_call():
    # The sort buffers are cached per shape: a second batch of the same shape, and one of
    # another shape in between, must each give their own gradients.
    device, shapes = setup()
    rng = np.random.default_rng(7)
    batches = [rng.integers(0, 50, (2, 6)), rng.integers(0, 50, (3, 9)), rng.integers(0, 5, (2, 6))]
    for step, input_ids in enumerate(batches):
        g = grad(input_ids.shape, 33, seed=10 + step)
        seq = input_ids.shape[1]
        expected = gradients(
            shapes, g, input_ids, np.zeros((1, seq), int), np.arange(seq)[None], None, np.float32
        )
        assert_bitwise(host(kc.embed_backward(device, g, input_ids)), expected)
