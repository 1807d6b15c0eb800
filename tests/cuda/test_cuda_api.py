"""The public API with device tables: bek.embed / embed_backward dispatch to the GPU kernels.

Runs under numba's CUDA simulator (tests/cuda/conftest.py) on small shapes; the
results equal the CPU's (the sum and the backward bit for bit).
"""

import numpy as np
import pytest

import bert_embedding_kernels as bek
from bert_embedding_kernels.registry import REGISTRY


@pytest.fixture(scope="module")
def host():
    return bek.EmbeddingTables.random(40, 9, max_positions=12, seed=3)


@pytest.fixture(scope="module")
def device(host):
    return host.to_device()


IDS = np.array([[1, 5, 7], [39, 0, 2]])
TYPES = np.array([[0, 1, 1], [1, 0, 0]])


def test_to_device_and_back(host, device):
    assert device.device == "cuda" and host.device == "cpu"
    back = device.to_host()
    assert isinstance(back, bek.EmbeddingTables)
    np.testing.assert_array_equal(back.token, host.token)
    assert back.norm_eps == host.norm_eps


def test_embed_with_device_tables_equals_the_cpu(host, device):
    expected = bek.embed(host, IDS, TYPES)
    got = bek.embed(device, IDS, TYPES)
    assert hasattr(got, "copy_to_host")  # a device array comes back
    np.testing.assert_array_equal(got.copy_to_host(), expected)
    normed = bek.embed(device, IDS, TYPES, layer_norm=True).copy_to_host()
    np.testing.assert_allclose(normed, bek.embed(host, IDS, TYPES, layer_norm=True), atol=1e-5)


def test_embed_backward_with_device_tables_equals_the_cpu(host, device):
    grad = np.random.default_rng(0).standard_normal((2, 3, 9)).astype(np.float32)
    expected = bek.embed_backward(host, grad, IDS, TYPES, padding_idx=5)
    got = bek.embed_backward(device, grad, IDS, TYPES, padding_idx=5)
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_array_equal(g.copy_to_host(), e)


def test_accumulate_into_with_device_tables_equals_the_cpu(host, device):
    from numba import cuda

    rng = np.random.default_rng(1)
    grad = rng.standard_normal((2, 3, 9)).astype(np.float32)
    tables = (host.token, host.segment, host.position)
    start = [rng.standard_normal(t.shape).astype(np.float32) for t in tables]
    expected = bek.embed_backward(host, grad, IDS, TYPES, accumulate_into=[a.copy() for a in start])
    into = [cuda.to_device(a) for a in start]
    got = bek.embed_backward(device, grad, IDS, TYPES, accumulate_into=into)
    for g, given, e in zip(got, into, expected, strict=True):
        assert g is given
        np.testing.assert_array_equal(g.copy_to_host(), e)


@pytest.mark.parametrize("method", [m for m in bek.METHODS if "cuda" not in REGISTRY[m].devices])
def test_methods_without_a_cuda_kernel_name_method_and_device(device, method):
    with pytest.raises(ValueError, match=rf"method is '{method}', which has no CUDA"):
        bek.embed(device, IDS, method=method)


@pytest.mark.parametrize("value", ["int8", np.int64, object, ",", "nonsense"], ids=repr)
def test_a_dtype_that_is_no_float_is_refused_on_the_device(device, value):
    # The CPU's issue 37 hole, checked where device tables take the same arguments.
    with pytest.raises(TypeError, match=r"^out_dtype is .*; device tables return float32"):
        bek.embed(device, IDS, out_dtype=value)
    grad = np.zeros((2, 3, 9), np.float32)
    with pytest.raises(TypeError, match=r"^grad_dtype is .*; device tables return float32"):
        bek.embed_backward(device, grad, IDS, grad_dtype=value)


def test_out_of_range_ids_raise_the_cpu_message(host, device):
    bad = IDS.copy()
    bad[1, 2] = 40
    with pytest.raises(IndexError) as on_cpu:
        bek.embed(host, bad)
    with pytest.raises(IndexError) as on_gpu:
        bek.embed(device, bad)
    assert str(on_gpu.value) == str(on_cpu.value)


def test_tables_of_a_rule_the_gpu_kernels_do_not_apply_stay_on_the_host(host):
    # The rule's record says whether the device kernels number by it (position_rules.py).
    roberta = bek.EmbeddingTables(
        host.token, host.segment, host.position, position_rule="after_padding", padding_idx=1
    )
    with pytest.raises(ValueError, match="do not apply RoBERTa's position rule; keep them"):
        roberta.to_device()
