"""pytest-benchmark: the four backward methods side by side, with torch as a peer.

One benchmark group is one shape and one id distribution (uniform, or Zipf-like
skew as in natural language); its rows are the four methods and, where torch is
installed, ``torch.ops.aten.embedding_dense_backward`` for the three tables.
With ``--benchmark-disable`` (the default in pyproject.toml) each function runs
once as a smoke test. Every benchmark checks its result against the naive
float64 loop *before* anything is timed, with the rules pinned in tests/rules.py
(the bit-identical methods bit for bit, the others within ``n * eps * sum(|g|)``
per element), so a wrong answer fails the test and no timing of it reaches the JSON.

    pytest tests/benchmarks/test_backward_bench.py --benchmark-enable --benchmark-only
    pytest ... --bench-full    # the full sweeps instead of the CI sizes
"""

from functools import lru_cache

import numpy as np
import pytest
from poison import embed_backward as poisoned_backward
from rules import gradient_bound, is_bitwise

from bert_embedding_kernels import BACKWARD_METHODS, EmbeddingGradients, embed_backward
from bert_embedding_kernels.bench.engine import cases
from bert_embedding_kernels.bench.engine.cases import zipf_ids
from bert_embedding_kernels.bench.engine.reference import naive_embed_backward
from bert_embedding_kernels.registry import REGISTRY

try:
    import torch
except ImportError:  # the `peers` extra is not installed
    torch = None

DISTRIBUTIONS = ("uniform", "zipf")


def _shapes(full: bool) -> list[cases.Shape]:
    if full:
        points = cases.vocab_sweep() + cases.seq_sweep()
    else:
        points = cases.vocab_sweep(cases.CI_BASE, cases.CI_VOCAB_SIZES) + cases.seq_sweep(
            cases.CI_BASE, cases.CI_SEQ_LENS
        )
    unique = {shape.name: shape for shape in points}  # the two sweeps meet at their base
    return list(unique.values())


def pytest_generate_tests(metafunc):
    if "backward_case" in metafunc.fixturenames:
        shapes = _shapes(metafunc.config.getoption("--bench-full", default=False))
        points = [(shape, ids) for shape in shapes for ids in DISTRIBUTIONS]
        metafunc.parametrize(
            "backward_case", points, ids=[f"{shape.name}-{ids}" for shape, ids in points]
        )


@lru_cache(maxsize=2)
def _inputs(shape: cases.Shape, distribution: str):
    """Tables, output gradient and ids: the shared cases, with Zipf ids swapped in."""
    tables, input_ids, token_type_ids = cases.make_inputs(shape)
    if distribution == "zipf":
        input_ids = zipf_ids(shape.vocab, (shape.batch, shape.seq), seed=0)
    rng = np.random.default_rng(1)
    grad = rng.standard_normal((shape.batch, shape.seq, shape.hidden)).astype(shape.dtype)
    return tables, grad, input_ids, token_type_ids


@lru_cache(maxsize=2)
def _reference(shape: cases.Shape, distribution: str):
    tables, grad, input_ids, token_type_ids = _inputs(shape, distribution)
    reference, magnitudes, counts = naive_embed_backward(tables, grad, input_ids, token_type_ids)
    same_dtype, _, _ = naive_embed_backward(
        tables, grad, input_ids, token_type_ids, dtype=tables.dtype
    )
    return reference, magnitudes, counts, same_dtype


def _assert_matches(gradients, shape, distribution, bitwise):
    reference, magnitudes, counts, same_dtype = _reference(shape, distribution)
    for name in EmbeddingGradients._fields:
        ours = np.asarray(getattr(gradients, name))
        if bitwise:
            np.testing.assert_array_equal(ours, getattr(same_dtype, name))
        else:
            # n terms summed in any order: within (n - 1) u sum|g| of the exact sum.
            bound = gradient_bound(getattr(counts, name), getattr(magnitudes, name), ours.dtype)
            assert np.all(np.abs(ours - getattr(reference, name)) <= bound), name


def _group(benchmark, shape: cases.Shape, distribution: str, method: str) -> None:
    benchmark.group = f"backward:{shape.name}:{distribution}"
    benchmark.extra_info.update(
        shape=shape.name,
        ids=distribution,
        tokens=shape.tokens,
        method=method,
        grad_nbytes=shape.output_nbytes,
    )


@pytest.mark.parametrize("method", BACKWARD_METHODS)
def test_backward(benchmark, method, backward_case):
    shape, distribution = backward_case
    tables, grad, input_ids, token_type_ids = _inputs(shape, distribution)

    def backward():
        return embed_backward(tables, grad, input_ids, token_type_ids, method=method)

    # Compile the exact specialisation timed, and check the result before any timing
    # (allocations poisoned: a row a one-hot path never writes is NaN).
    gradients = poisoned_backward(tables, grad, input_ids, token_type_ids, method=method)
    _assert_matches(gradients, shape, distribution, bitwise=is_bitwise(method))
    _group(benchmark, shape, distribution, method)
    if REGISTRY[method].one_hot:  # up to seconds at the big shapes
        benchmark.pedantic(backward, rounds=3, iterations=1)
    else:
        benchmark(backward)


def test_backward_torch(benchmark, backward_case):
    if torch is None:
        pytest.skip("peer torch is not installed (pip install -e '.[peers]')")
    shape, distribution = backward_case
    tables, grad, input_ids, token_type_ids = _inputs(shape, distribution)
    grad_t = torch.from_numpy(grad)
    positions = torch.arange(shape.seq).expand(shape.batch, shape.seq).contiguous()
    per_table = [
        (torch.from_numpy(input_ids), tables.vocab_size),
        (torch.from_numpy(token_type_ids), tables.type_vocab_size),
        (positions, tables.max_positions),
    ]

    def backward():
        return EmbeddingGradients(
            *(
                torch.ops.aten.embedding_dense_backward(grad_t, ids, rows, -1, False)
                for ids, rows in per_table
            )
        )

    gradients = backward()  # warm up, and check before any timing
    _assert_matches(
        EmbeddingGradients(*(g.numpy() for g in gradients)), shape, distribution, bitwise=False
    )
    _group(benchmark, shape, distribution, "torch")
    benchmark(backward)
