"""pytest-benchmark: every method side by side with its memory roofline.

One benchmark group is one shape; its rows are the four methods, their
LayerNorm variants (``+LN``), the copy reference (the roofline) and, where
installed, the outside peers (``torch-compile`` only with ``--bench-full``:
it compiles anew for every shape, about 20 s each). A plain ``pytest`` runs each
function once as a smoke test (tests/conftest.py). Every benchmark checks its output
against the naive reference *before* anything is timed (tests/rules.py: bit for bit or within the
pinned bound; LayerNorm against the naive float64 LayerNorm of the naive sum,
within the per-element bound derived there), so a wrong answer fails the test
and no timing of it reaches the JSON. Outputs are NaN-filled first, so an
element a method never writes cannot pass.

    pytest tests/benchmarks --benchmark-only --benchmark-json=b.json
    embench bench-table b.json
"""

import dataclasses
from functools import lru_cache

import numpy as np
import pytest
from poison import nan_array
from rules import SumReference

import bert_embedding_kernels as bek
from bert_embedding_kernels.bench.engine import cases, peers
from bert_embedding_kernels.bench.engine.roofline import CopyReference
from bert_embedding_kernels.registry import REGISTRY


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
def _reference(shape: cases.Shape) -> SumReference:
    tables, input_ids, token_type_ids = cases.make_inputs(shape)
    return SumReference(tables, input_ids, token_type_ids)


def _group(benchmark, shape: cases.Shape) -> None:
    benchmark.group = shape.name
    benchmark.extra_info.update(
        shape=shape.name, tokens=shape.tokens, output_nbytes=shape.output_nbytes
    )


@pytest.mark.parametrize("method", bek.METHODS)
def test_forward(benchmark, method, shape):
    tables, input_ids, token_type_ids = cases.make_inputs(shape)
    out = nan_array((shape.batch, shape.seq, shape.hidden), tables.dtype)

    def forward():
        return bek.embed(tables, input_ids, token_type_ids, method=method, out=out)

    forward()  # compile the exact specialisation timed, fault the pages in
    _reference(shape).check(method, out)  # before any timing
    _group(benchmark, shape)
    benchmark.extra_info["method"] = method
    # One-hot calls take up to seconds at the big shapes: a few rounds suffice.
    slow = REGISTRY[method].one_hot
    if slow:
        benchmark.pedantic(forward, rounds=3, iterations=1)
    else:
        benchmark(forward)


@pytest.mark.parametrize("method", bek.METHODS)
def test_forward_layer_norm(benchmark, method, shape):
    tables, input_ids, token_type_ids = cases.make_inputs(shape)
    out = nan_array((shape.batch, shape.seq, shape.hidden), tables.dtype)

    def forward():
        return bek.embed(tables, input_ids, token_type_ids, method=method, out=out, layer_norm=True)

    forward()
    _reference(shape).check_layer_norm(method, out)  # before any timing
    _group(benchmark, shape)
    benchmark.extra_info["method"] = f"{method}+LN"
    if REGISTRY[method].one_hot:
        benchmark.pedantic(forward, rounds=3, iterations=1)
    else:
        benchmark(forward)


def test_peer(benchmark, peer, shape):
    tables, input_ids, token_type_ids = cases.make_inputs(shape)
    call = peers.make_peer(peer, tables)
    # The first call compiles and warms the peer up; its output is checked before timing.
    _reference(shape).check(peer, peers.as_numpy(call(input_ids, token_type_ids)))
    _group(benchmark, shape)
    benchmark.extra_info["method"] = peer
    benchmark(call, input_ids, token_type_ids)


def test_layer_norm_peer(benchmark, norm_peer, shape):
    tables, input_ids, token_type_ids = cases.make_inputs(shape)
    call = peers.make_peer(norm_peer, tables)
    # torch and onnxruntime compute the statistics in the tables' dtype, not float64.
    result = peers.as_numpy(call(input_ids, token_type_ids))
    _reference(shape).check_layer_norm(norm_peer, result, statistics=tables.dtype)
    _group(benchmark, shape)
    benchmark.extra_info["method"] = norm_peer
    benchmark(call, input_ids, token_type_ids)


def test_copy_reference(benchmark, shape):
    copy = CopyReference((shape.batch, shape.seq, shape.hidden), shape.dtype)  # runs once
    np.testing.assert_array_equal(copy.destination, copy.source)  # before any timing
    _group(benchmark, shape)
    benchmark.extra_info["method"] = "copy"
    benchmark(copy)


def _half_methods():
    return [m for m in bek.METHODS if "bfloat16" in REGISTRY[m].dtypes]


@pytest.mark.parametrize("dtype", cases.BENCH_DTYPES)
@pytest.mark.parametrize("method", _half_methods())
def test_forward_dtype(benchmark, method, dtype):
    """The dtype axis: each method at the CI base shape per table dtype, checked first.

    16-bit tables: widened, added in float32, rounded once, the same bits for every
    method (the rule is restated here, not taken from the package).
    """
    shape = dataclasses.replace(cases.CI_BASE, dtype=dtype)
    tables, input_ids, token_type_ids = cases.make_inputs(shape)
    out = nan_array((shape.batch, shape.seq, shape.hidden), tables.dtype)

    def forward():
        return bek.embed(tables, input_ids, token_type_ids, method=method, out=out)

    forward()
    if tables.dtype.itemsize == 2:
        wide = [t.astype(np.float32) for t in (tables.token, tables.segment, tables.position)]
        summed = (wide[0][input_ids] + wide[1][token_type_ids]) + wide[2][np.arange(shape.seq)]
        assert np.array_equal(out.view(np.uint16), summed.astype(tables.dtype).view(np.uint16))
    else:
        _reference(shape).check(method, out)
    benchmark.group = f"dtypes {cases.CI_BASE.name.rsplit('-', 1)[0]}"
    benchmark.extra_info.update(method=f"{method} {dtype}", shape=shape.name)
    if REGISTRY[method].one_hot:
        benchmark.pedantic(forward, rounds=3, iterations=1)
    else:
        benchmark(forward)
