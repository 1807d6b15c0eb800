"""LayerNorm's backward on the device, against float64 formulas and the CPU kernel."""

import numpy as np
import pytest

from bert_embedding_kernels.bench.engine.reference import (
    naive_layer_norm_backward as naive_backward,
)
from bert_embedding_kernels.methods.fused.norm_backward import layer_norm_backward as cpu_backward

kc = pytest.importorskip("bert_embedding_kernels.cuda")
cuda = kc.cuda

EPS = 1e-12


def inputs(rows, hidden, dtype, seed=0):
    rng = np.random.default_rng(seed)
    sums = (rng.standard_normal((rows, hidden)) * 3 + 1).astype(dtype)  # mean far from 0
    grad = rng.standard_normal((rows, hidden)).astype(dtype)
    weight = rng.uniform(0.5, 1.5, hidden).astype(dtype)
    return sums, grad, weight


def on_device(*arrays):
    return [cuda.to_device(a) for a in arrays]


def assert_close_to(got, want, dtype):
    # float64 references; float32 results are rounded once, after float64 sums.
    tolerance = 2e-6 if dtype == np.float32 else 1e-12
    scale = max(np.abs(want).max(), 1.0)
    np.testing.assert_allclose(got, want, rtol=0, atol=tolerance * scale)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("rows, hidden", [(27, 33), (5, 64), (3, 1)])
def test_gradients_match_the_float64_formulas_and_the_cpu(dtype, rows, hidden):
    # 27 rows: a partly idle last block of the row kernel and an empty last row chunk;
    # 33 columns: a ragged last lane; 1 column: xhat is 0, so d sums is 0.
    sums, grad, weight = inputs(rows, hidden, dtype)
    got = [a.copy_to_host() for a in kc.layer_norm_backward(*on_device(sums, grad, weight), EPS)]
    for name, result, want, cpu in zip(
        ("sums", "weight", "bias"),
        got,
        naive_backward(sums, grad, weight, EPS),
        cpu_backward(sums, grad, weight, EPS),
        strict=True,
    ):
        assert result.dtype == dtype, name
        assert_close_to(result, want, dtype)
        assert_close_to(result, cpu.astype(np.float64), dtype)


def test_same_bits_from_call_to_call():
    device = on_device(*inputs(27, 33, np.float32, seed=4))
    first = [a.copy_to_host() for a in kc.layer_norm_backward(*device, EPS)]
    second = [a.copy_to_host() for a in kc.layer_norm_backward(*device, EPS)]
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a, b)


def test_given_out_is_filled_and_work_arrays_come_from_the_allocator():
    sums, grad, weight = on_device(*inputs(6, 33, np.float32, seed=5))
    out = tuple(cuda.to_device(np.full(shape, np.nan, np.float32)) for shape in ((6, 33), 33, 33))
    requests = []

    def allocate(shape, dtype):
        requests.append((shape, np.dtype(dtype)))
        return cuda.device_array(shape, dtype)

    result = kc.layer_norm_backward(sums, grad, weight, EPS, out=out, allocate=allocate)
    assert all(r is o for r, o in zip(result, out, strict=True))
    expected = kc.layer_norm_backward(sums, grad, weight, EPS)
    for got, want in zip(out, expected, strict=True):
        np.testing.assert_array_equal(got.copy_to_host(), want.copy_to_host())
    assert requests and all(dtype == np.float64 for _, dtype in requests)


def test_no_rows_gives_zero_weight_and_bias_gradients():
    sums, grad, weight = on_device(*inputs(0, 7, np.float32))
    grad_sums, grad_weight, grad_bias = kc.layer_norm_backward(sums, grad, weight, EPS)
    assert grad_sums.shape == (0, 7)
    assert not grad_weight.copy_to_host().any() and not grad_bias.copy_to_host().any()


def test_bad_arguments_are_named():
    sums, grad, weight = inputs(4, 8, np.float32)
    device = on_device(sums, grad, weight)
    with pytest.raises(TypeError, match="sums is ndarray; it must be a CUDA array"):
        kc.layer_norm_backward(sums, *device[1:], EPS)
    with pytest.raises(ValueError, match=r"grad is 2-D of float64; it must be .* of float32"):
        kc.layer_norm_backward(device[0], cuda.to_device(grad.astype(np.float64)), device[2], EPS)
    with pytest.raises(ValueError, match=r"must be \(rows, hidden\)"):
        kc.layer_norm_backward(device[0], cuda.to_device(grad[:3]), device[2], EPS)
    with pytest.raises(ValueError, match=r"out.grad_bias has shape \(7,\)"):
        out = (cuda.device_array((4, 8), np.float32), *on_device(weight, weight[:7]))
        kc.layer_norm_backward(*device, EPS, out=out)
