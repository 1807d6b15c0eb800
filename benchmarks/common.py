"""What the suites share: the parameter grid, shapes, warmed-up calls, old-commit guards.

asv runs this checkout's suite against every commit it benchmarks, and files each
result under its parameter's position in the grid it discovered (the product of
the parameter lists). The grid must therefore be the same at every commit: it is
read from this checkout's sources (the method names registered in
``kernels/bert_embedding_kernels/registry.py``, the sizes in
``kernels/bert_embedding_kernels/bench/engine/cases.py``, the peers in
``kernels/bert_embedding_kernels/bench/engine/peers.py``), not from the package installed for
the commit under test, whose lists may differ (a list that differs in any way, even by one
appended value, would file that commit's results under the wrong values). A
method a commit lacks is skipped there.

Everything else comes from the installed commit, under guards for what it may
lack: the package was imported as ``kernels`` before the rename to
``bert_embedding_kernels`` (issue 28), and ``bek`` below is whichever the commit
installed; the bench modules moved into ``bek.bench`` (shapes, inputs, copy
reference, reference) with the registry; before that they were ``kernels.cases``,
``kernels.roofline`` and ``kernels.equivalence``, which landed in c9a97b2. Before it, shapes and
inputs fall back to a copy of c9a97b2's (the same values and the same random
inputs, so results line up across that commit); the copy reference and the
equivalence numbers are skipped there. ``embed(..., layer_norm=True)`` arrived in
db46217, ``kernels.peers`` in 19a1fc4 and its layer-norm peers
(``LAYER_NORM_PEERS``) in ec2a385: before them, those rows are skipped.

No benchmark times a wrong answer. Every call is checked once, before anything
is timed, against a naive reference kept here (a Python loop over tokens, float64
and extended precision; independent of the methods and of the commit under test,
so it reads the same at every commit), with the rules pinned here too:
``BITWISE_METHODS`` must equal ``(token + segment) + position`` bit for bit, every
other method and every peer must lie within ``eps (|a| + |b| + |c|)`` of the exact
sum; LayerNorm outputs within the bound derived in tests/rules.py. A call that
disagrees raises AssertionError in setup, which asv records as a failure.
"""

from __future__ import annotations

import ast
import functools
import importlib
import inspect
import math
from pathlib import Path

import numpy as np


def _package_under_test():
    """``bert_embedding_kernels``, or ``kernels`` at a commit before the rename (issue 28).

    A name counts only as a regular package with ``embed``: numba's cache files outlive
    ``pip uninstall``, so the other name's old folder imports as an empty namespace package
    (seen in asv's environment, going back over the rename), and Hugging Face's ``kernels``
    is another package.
    """
    for name in ("bert_embedding_kernels", "kernels"):
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        if getattr(module, "__file__", None) and hasattr(module, "embed"):
            return module
    raise ImportError("neither bert_embedding_kernels nor kernels (before the rename) is installed")


bek = _package_under_test()


def package_module(*names: str):
    """The first of ``names``, the package's modules (newest layout first), this commit has."""
    for name in names:
        try:
            return importlib.import_module(f"{bek.__name__}.{name}")
        except ImportError:
            continue
    return None


def _checkout_tree(module: str) -> ast.Module:
    """The syntax tree of this checkout's ``<module>.py`` (module may contain '/')."""
    source = (
        Path(__file__).resolve().parents[1] / "kernels" / "bert_embedding_kernels" / f"{module}.py"
    )
    return ast.parse(source.read_text())


def _checkout_literals(module: str, names: tuple[str, ...]) -> tuple:
    """The literal values of ``names`` in this checkout's ``<module>.py``."""
    found = {
        target.id: ast.literal_eval(node.value)
        for node in _checkout_tree(module).body
        if isinstance(node, ast.Assign)
        for target in node.targets
        if isinstance(target, ast.Name) and target.id in names
    }
    return tuple(found[name] for name in names)


def _registered_records(module: str, assignment: str, factory: str) -> dict[str, dict]:
    """The records ``factory(...)`` builds inside ``assignment`` in ``module``: name -> the
    keyword arguments' syntax trees. A record's name is its ``name=`` keyword or, failing
    that, its first argument."""
    for node in _checkout_tree(module).body:
        targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
        if not any(isinstance(t, ast.Name) and t.id == assignment for t in targets):
            continue
        records = {}
        for call in ast.walk(node):
            if not (isinstance(call, ast.Call) and getattr(call.func, "id", None) == factory):
                continue
            keywords = {k.arg: k.value for k in call.keywords}
            name = keywords.get("name", call.args[0] if call.args else None)
            records[ast.literal_eval(name)] = keywords
        return records
    raise LookupError(f"{module}.py has no {assignment}")


def _registered_names(module: str, assignment: str, factory: str) -> tuple[str, ...]:
    return tuple(_registered_records(module, assignment, factory))


METHODS = _registered_names("registry", "REGISTRY", "Implementation")
# The methods whose cost grows with the vocabulary (the one-hot products): the registry's
# vocab_growth > 0, read from this checkout as the names are.
ONE_HOT_METHODS = tuple(
    name
    for name, keywords in _registered_records("registry", "REGISTRY", "Implementation").items()
    if "vocab_growth" in keywords and ast.literal_eval(keywords["vocab_growth"]) > 0
)
VOCAB_SIZES, SEQ_LENS, DTYPES = _checkout_literals(
    "bench/engine/cases", ("VOCAB_SIZES", "SEQ_LENS", "BENCH_DTYPES")
)

_cases = package_module("bench.engine.cases", "bench.cases", "cases")  # None before c9a97b2
SWEEP_BASE, make_inputs = (_cases.SWEEP_BASE, _cases.make_inputs) if _cases else (None, None)
if make_inputs is None:
    from dataclasses import dataclass, replace

    @dataclass(frozen=True)
    class _Shape:
        batch: int
        seq: int
        hidden: int
        vocab: int
        max_positions: int = 512
        type_vocab: int = 2
        dtype: str = "float32"

        def with_seq(self, seq):
            return replace(self, seq=seq, max_positions=max(self.max_positions, seq))

        def with_vocab(self, vocab):
            return replace(self, vocab=vocab)

    SWEEP_BASE = _Shape(batch=8, seq=128, hidden=768, vocab=30522)

    def make_inputs(shape, seed=0):
        tables = bek.EmbeddingTables.random(
            shape.vocab,
            shape.hidden,
            max_positions=shape.max_positions,
            type_vocab_size=shape.type_vocab,
            dtype=shape.dtype,
        )
        rng = np.random.default_rng(seed)
        input_ids = rng.integers(0, shape.vocab, size=(shape.batch, shape.seq), dtype=np.int64)
        token_type_ids = np.zeros((shape.batch, shape.seq), dtype=np.int64)
        token_type_ids[:, shape.seq // 2 :] = min(1, shape.type_vocab - 1)
        return tables, input_ids, token_type_ids


# None before c9a97b2
_roofline = package_module("bench.engine.roofline", "bench.roofline", "roofline")
CopyReference = _roofline.CopyReference if _roofline else None

# The forward classes time the memory roofline as one more "method": asv then draws
# it in the same graph as the four methods, at every parameter value.
COPY = "copy"
FORWARD_METHODS = (*METHODS, COPY)

# onehot and concat cost tokens x vocab x hidden multiply-adds. Measured here (2
# cores, hidden 768, float32, a full asv run): 0.4 s per call at 1024 tokens x vocab
# 30522, 3 to 4.5 s at 1024 x 100k, 1.7 to 2.2 s at 4096 x 30522. A combination
# costs three calls or more per round (setup's warm-up, at least two samples), so
# above this many one-hot cells (tokens x vocab) they are skipped: vocab 250k in
# the vocab sweep (about 10 s a call), seq 1024 and 2048 in the sequence sweep
# (about 4 and 9 s a call).
ONE_HOT_MAX_CELLS = 2**27

# The outside peers, plain-sum then layer-norm ones, as this checkout's
# bench/engine/peers.py names them (the grid, like the methods', must not depend on
# the commit under test or on what is installed: a peer whose libraries are
# missing, or that the commit lacks, is skipped). torch-compile is left out: it
# compiles anew for every shape, about 20 s each, in every setup process.
_PLAIN_PEERS = _registered_names("bench/engine/peers", "PEERS", "_peer")
_NORM_PEERS = _registered_names("bench/engine/peers", "LAYER_NORM_PEERS", "_peer")
PEER_NAMES = tuple(name for name in _PLAIN_PEERS if name != "torch-compile") + _NORM_PEERS

# Pinned here, not read from the package under test (tests/test_rules.py checks the
# tests pin the same): the methods that add (token + segment) + position in the
# tables' dtype, as the naive loop does, and so must equal it bit for bit.
BITWISE_METHODS = ("gather", "fused")


def require_method(method: str) -> None:
    """Skip (asv: n/a) a method of the grid that the commit under test lacks."""
    if method not in bek.METHODS:
        raise NotImplementedError(f"method {method!r} is not in this commit's METHODS")


def output_shape(shape) -> tuple[int, int, int]:
    return (shape.batch, shape.seq, shape.hidden)


def require_layer_norm() -> None:
    """Skip (asv: n/a) a LayerNorm row at a commit whose ``embed`` has no ``layer_norm``."""
    if "layer_norm" not in inspect.signature(bek.embed).parameters:
        raise NotImplementedError("embed(..., layer_norm=True) is missing (before db46217)")


def _naive_rows(tables, input_ids, token_type_ids):
    """(batch, position, token row, segment row, position row) of every token, by plain indexing."""
    batch, seq = input_ids.shape
    for b in range(batch):
        for s in range(seq):
            yield (
                b,
                s,
                tables.token[int(input_ids[b, s])],
                tables.segment[int(token_type_ids[b, s])],
                tables.position[s],  # default positions: 0 .. seq - 1
            )


def _refuse(what: str, b: int, s: int) -> None:
    raise AssertionError(
        f"{what} disagrees with the naive reference at (batch {b}, position {s}); "
        "refusing to time it"
    )


def _verify_half(result, tables, input_ids, token_type_ids, what: str) -> None:
    """Every method promises the same bits for 16-bit tables: widen, add, round once."""
    dtype = tables.token.dtype
    for b, s, t, g, p in _naive_rows(tables, input_ids, token_type_ids):
        wide = (t.astype(np.float32) + g.astype(np.float32)) + p.astype(np.float32)
        if not np.array_equal(result[b, s].view(np.uint16), wide.astype(dtype).view(np.uint16)):
            _refuse(what, b, s)


def verify_sum(result, tables, input_ids, token_type_ids, bitwise: bool, what: str) -> None:
    """``result`` is the summed embedding: bit for bit, or within eps (|a| + |b| + |c|).

    Any order of adding three terms lies within 2u (|a| + |b| + |c|) of the exact
    sum (u = eps / 2), so that is the bound for BLAS and for the peers; the exact
    sum is taken in extended precision, row by row.
    """
    result = np.asarray(result)
    dtype = tables.token.dtype
    if dtype.itemsize == 2:  # float16 / bfloat16: widened, added in float32, rounded once
        _verify_half(result, tables, input_ids, token_type_ids, what)
        return
    eps = np.finfo(dtype).eps
    for b, s, t, g, p in _naive_rows(tables, input_ids, token_type_ids):
        if bitwise:
            ok = np.array_equal(result[b, s], (t + g) + p)
        else:
            a, c, d = (row.astype(np.longdouble) for row in (t, g, p))
            error = np.abs(result[b, s].astype(np.longdouble) - (a + c + d))
            ok = bool(np.all(error <= eps * (np.abs(a) + np.abs(c) + np.abs(d))))
        if not ok:
            _refuse(what, b, s)


def verify_layer_norm(
    result, tables, input_ids, token_type_ids, bitwise: bool, what: str, statistics=np.float64
):
    """``result`` is LayerNorm of the sum, within the per-element bound of tests/rules.py.

    The reference normalises the naive sum with exactly rounded float64
    statistics (math.fsum). With z the normalised value, w and b the norm's
    weight and bias, sigma the row's standard deviation, the bound is

        4 (eps (|w| |z| + |b|) + |w| D (2 + |z|) / sigma)

    the final rounding to the tables' dtype, plus the effect of moving every sum
    by up to D: the statistics' own error (n eps_s max|x|, eps_s of the dtype they
    are computed in: float64 for ours, the tables' dtype for the peers) and, for
    a method whose sum is only bounded, eps (|a| + |b| + |c|). The factor 4 is
    slack for the roundings in between. A fixed tolerance would be too loose at
    small sigma or too tight at large weights; this one follows the row.
    """
    result = np.asarray(result)
    eps, eps_s = np.finfo(tables.token.dtype).eps, np.finfo(statistics).eps
    weight = tables.norm_weight.astype(np.float64)
    bias = tables.norm_bias.astype(np.float64)
    for b, s, t, g, p in _naive_rows(tables, input_ids, token_type_ids):
        x = ((t + g) + p).astype(np.float64)
        mean = math.fsum(x) / x.size
        centred = x - mean
        sigma = math.sqrt(math.fsum(centred * centred) / x.size + tables.norm_eps)
        z = centred / sigma
        distance = x.size * eps_s * float(np.max(np.abs(x)))
        if not bitwise:
            rows = (np.abs(row.astype(np.float64)) for row in (t, g, p))
            distance += eps * float(np.max(sum(rows)))
        bound = 4 * (
            eps * (np.abs(weight) * np.abs(z) + np.abs(bias))
            + np.abs(weight) * distance * (2 + np.abs(z)) / sigma
        )
        error = np.abs(result[b, s].astype(np.float64) - (z * weight + bias))
        if not np.all(error <= bound):
            _refuse(what, b, s)


def verify(
    result, tables, input_ids, token_type_ids, layer_norm, bitwise, what, statistics=np.float64
):
    """Refuse (asv: failed) to time a call whose output is wrong.

    ``statistics``: the dtype LayerNorm's mean and variance are computed in,
    float64 for ours (documented), the tables' dtype for the peers.
    """
    if layer_norm:
        args = (bitwise, what, statistics)
        verify_layer_norm(result, tables, input_ids, token_type_ids, *args)
    else:
        verify_sum(result, tables, input_ids, token_type_ids, bitwise, what)


@functools.lru_cache(maxsize=1)
def forward_call(method: str, shape, layer_norm: bool = False):
    """A zero-argument call of ``method`` at ``shape``, already run once.

    With ``layer_norm=True`` the call is ``embed(..., layer_norm=True, out=out)``.
    Either way its output is checked against the naive reference (:func:`verify`)
    before anything is timed (the copy reference is the same either way).

    The first run compiles every numba kernel it needs for exactly these dtypes
    and layouts and faults in ``out``'s pages, so neither lands in a timing.
    asv re-runs ``setup`` before every timed sample; the cache hands back the
    same warmed-up call (its inputs are never modified and ``out`` is rewritten
    whole), so setup stays cheap.

    Raises NotImplementedError (asv: skipped) for a combination the suite does
    not run at this commit.
    """
    if method == COPY:
        if CopyReference is None:
            raise NotImplementedError("roofline.CopyReference is missing (before c9a97b2)")
        return CopyReference(output_shape(shape), shape.dtype)  # runs itself once
    require_method(method)
    if layer_norm:
        require_layer_norm()
    if method in ONE_HOT_METHODS and shape.batch * shape.seq * shape.vocab > ONE_HOT_MAX_CELLS:
        raise NotImplementedError(f"{method} at {shape} takes longer than the suite allows")
    try:
        tables, input_ids, token_type_ids = make_inputs(shape)
    except TypeError as error:  # bfloat16 tables arrived with the registry's dtype axis
        raise NotImplementedError(f"{shape.dtype} tables: {error}") from None
    # NaN first: an element the call does not write fails the check below.
    out = np.full(output_shape(shape), np.nan, dtype=tables.token.dtype)
    options = {"layer_norm": True} if layer_norm else {}
    call = functools.partial(
        bek.embed, tables, input_ids, token_type_ids, method=method, out=out, **options
    )
    try:
        call()
    except ValueError as error:
        # Since the one-hot copies of the tables count against memory_budget (the
        # registry commit), concat cannot run at vocab 100k within the default 256 MiB.
        if str(error).startswith("memory_budget"):
            raise NotImplementedError(f"{method} at {shape}: {error}") from None
        raise
    what = f"{method}{' with layer_norm=True' if layer_norm else ''}"
    verify(out, tables, input_ids, token_type_ids, layer_norm, method in BITWISE_METHODS, what)
    return call


@functools.lru_cache(maxsize=1)
def peer_call(name: str, shape):
    """A zero-argument call of outside peer ``name`` at ``shape``, already run once.

    The peer is built once (weights converted, sessions made) and its first call,
    outside any timing, compiles and warms it up; its output is checked against
    the naive reference (:func:`verify`, within the bound of a sum in any order).
    The peer allocates its output, as these libraries do.

    Raises NotImplementedError (asv: skipped) for a peer the commit under test
    lacks or whose libraries are not installed.
    """
    peers = package_module("bench.engine.peers", "bench.peers", "peers")
    if peers is None:
        raise NotImplementedError("kernels.peers is missing (before 19a1fc4)")
    norm_peers = getattr(peers, "LAYER_NORM_PEERS", {})  # since ec2a385
    if name not in peers.PEERS and name not in norm_peers:
        raise NotImplementedError(f"peer {name!r} is not in this commit's peers")
    layer_norm = name in norm_peers
    installed = peers.available_peers(layer_norm=True) if layer_norm else peers.available_peers()
    if name not in installed:
        raise NotImplementedError(f"peer {name!r}: its libraries are not installed here")
    tables, input_ids, token_type_ids = make_inputs(shape)
    call = functools.partial(peers.make_peer(name, tables), input_ids, token_type_ids)
    result = peers.as_numpy(call())
    what, dtype = f"peer {name!r}", tables.token.dtype
    verify(result, tables, input_ids, token_type_ids, layer_norm, False, what, statistics=dtype)
    return call
