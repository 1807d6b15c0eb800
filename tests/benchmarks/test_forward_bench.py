"""pytest-benchmark: every method side by side with its memory roofline.

One benchmark group is one shape; its rows are the four methods, their
LayerNorm variants (``+LN``), the copy reference (the roofline) and, where
installed, the outside peers (``torch-compile`` only with ``--bench-full``:
it compiles anew for every shape, about 20 s each). With
``--benchmark-disable`` (the default in pyproject.toml) each function runs
once as a smoke test; every forward benchmark also checks its output against
the reference, so a benchmark can never time a wrong answer.

    pytest tests/benchmarks --benchmark-enable --benchmark-only --benchmark-json=b.json
    embench bench-table b.json
"""

from functools import lru_cache

import numpy as np
import pytest

import kernels
from kernels.bench import cases, peers
from kernels.bench.perf import LAYER_NORM_CHECK_ATOL
from kernels.bench.reference import Reference
from kernels.bench.roofline import CopyReference
from kernels.methods.layernorm import layer_norm


def _shapes(full: bool) -> list[tuple[str, cases.Shape]]:
    if full:
        vocab = cases.vocab_sweep()
        seq = cases.seq_sweep()
    else:
        vocab = cases.vocab_sweep(cases.CI_BASE, cases.CI_VOCAB_SIZES)
        seq = cases.seq_sweep(cases.CI_BASE, cases.CI_SEQ_LENS)
    # The two sweeps meet at their base shape; measure it once.
    unique = {shape.name: ("vocab", shape) for shape in vocab}
    for shape in seq:
        unique.setdefault(shape.name, ("seq", shape))
    return [(f"{sweep}:{shape.name}", shape) for shape_name, (sweep, shape) in unique.items()]


def pytest_generate_tests(metafunc):
    full = metafunc.config.getoption("--bench-full")
    if "shape" in metafunc.fixturenames:
        points = _shapes(full)
        metafunc.parametrize("shape", [s for _, s in points], ids=[n for n, _ in points])
    if "peer" in metafunc.fixturenames:
        names = [n for n in peers.available_peers() if full or n != "torch-compile"]
        metafunc.parametrize("peer", names)
    if "norm_peer" in metafunc.fixturenames:
        metafunc.parametrize("norm_peer", peers.available_peers(layer_norm=True))


@lru_cache(maxsize=2)
def _reference(shape: cases.Shape) -> Reference:
    tables, input_ids, token_type_ids = cases.make_inputs(shape)
    return Reference(tables, input_ids, token_type_ids)


def _group(benchmark, shape: cases.Shape) -> None:
    benchmark.group = shape.name
    benchmark.extra_info.update(
        shape=shape.name, tokens=shape.tokens, output_nbytes=shape.output_nbytes
    )


@pytest.mark.parametrize("method", kernels.METHODS)
def test_forward(benchmark, method, shape):
    tables, input_ids, token_type_ids = cases.make_inputs(shape)
    out = np.empty((shape.batch, shape.seq, shape.hidden), dtype=tables.dtype)

    def forward():
        return kernels.embed(tables, input_ids, token_type_ids, method=method, out=out)

    forward()  # compile the exact specialisation timed, fault the pages in
    _group(benchmark, shape)
    benchmark.extra_info["method"] = method
    # One-hot calls take up to seconds at the big shapes: a few rounds suffice.
    slow = method in ("onehot", "concat")
    if slow:
        benchmark.pedantic(forward, rounds=3, iterations=1)
    else:
        benchmark(forward)
    agreement = _reference(shape).compare(method, out)
    assert agreement.ok, agreement


@pytest.mark.parametrize("method", kernels.METHODS)
def test_forward_layer_norm(benchmark, method, shape):
    tables, input_ids, token_type_ids = cases.make_inputs(shape)
    out = np.empty((shape.batch, shape.seq, shape.hidden), dtype=tables.dtype)

    def forward():
        return kernels.embed(
            tables, input_ids, token_type_ids, method=method, out=out, layer_norm=True
        )

    forward()
    _group(benchmark, shape)
    benchmark.extra_info["method"] = f"{method}+LN"
    if method in ("onehot", "concat"):
        benchmark.pedantic(forward, rounds=3, iterations=1)
    else:
        benchmark(forward)
    _assert_normalised(tables, shape, out)


def _assert_normalised(tables, shape, y):
    expected = layer_norm(tables, _reference(shape).naive, np.empty_like(y))
    np.testing.assert_allclose(y, expected, rtol=0, atol=LAYER_NORM_CHECK_ATOL)


def test_peer(benchmark, peer, shape):
    tables, input_ids, token_type_ids = cases.make_inputs(shape)
    call = peers.make_peer(peer, tables)
    call(input_ids, token_type_ids)  # compile / warm up outside the timing
    _group(benchmark, shape)
    benchmark.extra_info["method"] = peer
    result = peers.as_numpy(benchmark(call, input_ids, token_type_ids))
    agreement = _reference(shape).compare(peer, result)
    assert agreement.ok, agreement


def test_layer_norm_peer(benchmark, norm_peer, shape):
    tables, input_ids, token_type_ids = cases.make_inputs(shape)
    call = peers.make_peer(norm_peer, tables)
    call(input_ids, token_type_ids)
    _group(benchmark, shape)
    benchmark.extra_info["method"] = norm_peer
    result = peers.as_numpy(benchmark(call, input_ids, token_type_ids))
    _assert_normalised(tables, shape, result)


def test_copy_reference(benchmark, shape):
    copy = CopyReference((shape.batch, shape.seq, shape.hidden), shape.dtype)
    _group(benchmark, shape)
    benchmark.extra_info["method"] = "copy"
    result = benchmark(copy)
    np.testing.assert_array_equal(result, copy.source)
