"""Pieces the forward kernels share: output stores, warp sums, and the output's checks.

The store and the warp sum are device functions chosen on the host and closed
over by a kernel factory, so each variant compiles to its own kernel (no branch
per element): see ``forward._sum_kernel`` and ``norm._norm_kernel``.
"""

from __future__ import annotations

from ._runtime import HAS_SHUFFLE, HAS_STREAMING_STORE, WARP, cuda
from .validate import check_out, inputs  # noqa: F401 (inputs: the forward modules take it here)


@cuda.jit(device=True)
def token_rows(input_ids, token_type_ids, position_ids, t):
    """(token row, segment row, position row) that flat token ``t`` reads."""
    seq = input_ids.shape[1]
    b = t // seq
    s = t - b * seq
    i = input_ids[b, s]
    j = token_type_ids[0 if token_type_ids.shape[0] == 1 else b, s]
    k = position_ids[0 if position_ids.shape[0] == 1 else b, s]
    return i, j, k


@cuda.jit(device=True)
def plain_store(array, index, value):
    array[index] = value


@cuda.jit(device=True)
def streaming_store(array, index, value):
    # st.global.cs: evict-first; compiled only where numba-cuda provides it.
    cuda.stcs(array, index, value)


@cuda.jit(device=True)
def warp_sum_shared(value, lane, scratch):
    """Sum of ``value`` over the 32 lanes of a warp through ``scratch`` (32 shared floats).

    Every lane adds the 32 values in lane order, so all lanes get the same
    result. ``syncthreads`` (the simulator has no ``syncwarp``) makes this a
    block-wide barrier: every thread of the block must call it, active or not.
    """
    scratch[lane] = value
    cuda.syncthreads()
    total = 0.0
    for other in range(WARP):
        total += scratch[other]
    cuda.syncthreads()  # all lanes have read before the next call overwrites
    return total


@cuda.jit(device=True)
def warp_sum_shuffle(value, lane, scratch):
    """Butterfly sum over a warp with shuffles (hardware only; ``scratch`` unused).

    Each step adds two partial sums that the partner lane adds in the other
    order; addition is commutative, so every lane ends with the same bits.
    """
    offset = WARP // 2
    while offset > 0:
        value += cuda.shfl_xor_sync(0xFFFFFFFF, value, offset)
        offset //= 2
    return value


def store_function(store: str):
    if store == "auto":
        store = "streaming" if HAS_STREAMING_STORE else "plain"
    if store == "streaming" and not HAS_STREAMING_STORE:
        raise ValueError(
            "store='streaming' needs numba-cuda's cuda.stcs on a GPU; this numba.cuda "
            "(or the simulator) has none. Use store='plain' or 'auto'."
        )
    if store not in ("plain", "streaming"):
        raise ValueError(f"store is {store!r}; it must be 'auto', 'plain' or 'streaming'.")
    return streaming_store if store == "streaming" else plain_store


def warp_sum_function(reduction: str):
    if reduction == "auto":
        reduction = "shuffle" if HAS_SHUFFLE else "shared"
    if reduction == "shuffle" and not HAS_SHUFFLE:
        raise ValueError(
            "reduction='shuffle' needs warp shuffles on a GPU; numba's CUDA simulator has "
            "none. Use reduction='shared' or 'auto'."
        )
    if reduction not in ("shared", "shuffle"):
        raise ValueError(f"reduction is {reduction!r}; it must be 'auto', 'shared' or 'shuffle'.")
    return warp_sum_shuffle if reduction == "shuffle" else warp_sum_shared


def output(name, given, tables, batch, stream, named_inputs):
    shape = (*batch.shape, tables.hidden_size)
    if given is None:
        return cuda.device_array(shape, tables.array_dtype, stream=stream)
    return check_out(name, given, shape, tables.array_dtype, named_inputs)
