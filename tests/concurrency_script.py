"""The script every scenario of tests/test_concurrency.py runs in a fresh interpreter.

Kept apart as text: each scenario appends its own body and runs it with a
timeout, because the failures it guards against (an aborted interpreter, a
hung fork pool) cannot be caught inside the test process.
"""

COMMON = """
import json, multiprocessing, os, sys, threading, warnings
import numpy as np
import bert_embedding_kernels as bek
from bert_embedding_kernels import _threading
try:  # bek.bench since the package was split into core and bench
    from bert_embedding_kernels.bench.engine.reference import Reference
except ImportError:
    from bert_embedding_kernels.equivalence import Reference
try:
    from bert_embedding_kernels.bench.engine.roofline import CopyReference
except ImportError:
    from bert_embedding_kernels.roofline import CopyReference

# 8 x 64 x 128 float32 = 256 KiB, at the fused kernels' parallel threshold (and
# above the backward one): the parallel kernels run.
SHAPE = (8, 64, 128)
TABLES = bek.EmbeddingTables.random(1000, SHAPE[2], max_positions=64, seed=1)
RNG = np.random.default_rng(2)
IDS = RNG.integers(0, 1000, SHAPE[:2])
TYPES = RNG.integers(0, 2, SHAPE[:2])
GRAD = RNG.standard_normal(SHAPE).astype(np.float32)
REFERENCE = Reference(TABLES, IDS, TYPES)


def _layer_norm(x, weight, bias, eps):
    x = x.astype(np.float64)
    mean = x.mean(-1, keepdims=True)
    variance = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(variance + eps) * weight + bias


def _backward_reference():
    token = np.zeros(TABLES.token.shape)
    segment = np.zeros(TABLES.segment.shape)
    position = np.zeros(TABLES.position.shape)
    flat = GRAD.reshape(-1, SHAPE[2]).astype(np.float64)
    np.add.at(token, IDS.ravel(), flat)
    np.add.at(segment, TYPES.ravel(), flat)
    np.add.at(position, np.tile(np.arange(SHAPE[1]), SHAPE[0]), flat)
    return token, segment, position


NORMED = _layer_norm(REFERENCE.naive, TABLES.norm_weight, TABLES.norm_bias, TABLES.norm_eps)
GRADS = _backward_reference()

# Hostile tables: inf and NaN in rows the batch reads. Each method's answer is
# computed once, by prepare(), in a process's main thread before any concurrency;
# every concurrent call must return the same.
_token, _position = TABLES.token.copy(), TABLES.position.copy()
_token[IDS[0, 0], 3] = np.inf
_position[5, 7] = np.nan
HOSTILE = bek.EmbeddingTables(token=_token, segment=TABLES.segment, position=_position)
HOSTILE_EXPECTED = {}
_prepared = threading.Lock()


def prepare():
    # Without the lock once done: a fork while another thread held it would leave
    # the child waiting for ever.
    if len(HOSTILE_EXPECTED) == len(bek.METHODS):
        return
    with _prepared:
        if not HOSTILE_EXPECTED:
            answers = {m: bek.embed(HOSTILE, IDS, TYPES, method=m) for m in bek.METHODS}
            HOSTILE_EXPECTED.update(answers)


def check(method, preallocated):
    out = np.empty(SHAPE, np.float32) if preallocated else None
    y = bek.embed(TABLES, IDS, TYPES, method=method, out=out)
    agreement = REFERENCE.compare(method, y)
    assert agreement.ok, agreement
    copy = CopyReference(SHAPE, np.float32)  # runs the parallel copy once
    assert np.array_equal(copy.destination, copy.source)


def check_more(method):
    # LayerNorm (the fused method's second parallel kernel).
    y = bek.embed(TABLES, IDS, TYPES, method=method, layer_norm=True)
    np.testing.assert_allclose(y, NORMED, rtol=1e-4, atol=1e-4, err_msg=method)
    # Backward (the fused method's two parallel kernels).
    if method in bek.BACKWARD_METHODS:
        grads = bek.embed_backward(TABLES, GRAD, IDS, TYPES, method=method)
        for got, want in zip(grads, GRADS):
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4, err_msg=method)
    # Hostile input: refused by name before any kernel runs, or the same answer.
    bad = IDS.copy()
    bad[1, 2] = 1000
    try:
        bek.embed(TABLES, bad, TYPES, method=method)
    except (IndexError, ValueError) as error:
        assert "input_ids" in str(error), error
    else:
        raise AssertionError(f"{method}: an out-of-range id was accepted")
    y = bek.embed(HOSTILE, IDS, TYPES, method=method)
    np.testing.assert_array_equal(y, HOSTILE_EXPECTED[method], err_msg=method)


def check_all(round=0):
    prepare()
    for method in bek.METHODS:
        check(method, preallocated=round % 2 == 1)
        check_more(method)
    return os.getpid(), _threading.active_layer(), _threading.launch_mode().split(":")[0]


def run_threads(count=8, rounds=3):
    barrier = threading.Barrier(count)
    errors = []

    def work(index):
        barrier.wait()  # all threads enter the kernels together
        try:
            for round in range(rounds):
                check_all(round + index)
        except BaseException as error:
            errors.append(repr(error))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors


def threads_task(round):
    # A pool task that itself calls every method from four threads at once.
    run_threads(count=4, rounds=1)
    return check_all(round)


def run_pool(context, workers=2, tasks=4, task=check_all):
    with multiprocessing.get_context(context).Pool(workers) as pool:
        results = pool.map_async(task, range(tasks)).get(timeout=180)
    assert len(results) == tasks
    return sorted({(layer, mode) for _, layer, mode in results})


def in_background_threads(function, count=4):
    # Threads that run the parallel kernels without pause while function() runs.
    # Only those, into preallocated outputs: a fork while another thread is inside
    # OpenBLAS (the onehot and concat methods' matmul) leaves the child stuck in
    # OpenBLAS, and one while a thread holds the output pool's lock (allocating
    # calls) would leave it waiting on that lock, whatever numba does.
    stop = threading.Event()
    errors = []

    def work(index):
        try:
            while not stop.is_set():
                check("fused", preallocated=True)
        except BaseException as error:
            errors.append(repr(error))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    try:
        return function()
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        assert not errors, errors


def report(**fields):
    print("RESULT " + json.dumps({
        "layer": _threading.active_layer(),
        "mode": _threading.launch_mode().split(":")[0],
        "fork_safe": _threading.policy()["layer fork-safe"],
        **fields,
    }))
"""
