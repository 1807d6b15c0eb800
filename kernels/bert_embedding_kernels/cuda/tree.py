"""The tree-order backward: each gradient element reduced in a fixed binary tree.

``embed_backward(..., order="tree")``. The rows' token lists are the ones the
CPU-order backward sorts (:mod:`bert_embedding_kernels.cuda.backward`: each
row's tokens in token order); what differs is how a list ``g_0 .. g_{n-1}`` is
added. The tree depends on ``n`` alone: adjacent partial sums are paired level
by level, an odd one out carried to the next level, so

    n = 5:  ((g0 + g1) + (g2 + g3)) + g4

The bits therefore depend only on the inputs: the same on every run, for any
block size and grid (``launch`` below; the tests vary it), but not always the
CPU's sequential sum (a tree rounds differently). Its error bound is
``ceil(log2 n)`` roundings of ``sum |g|`` instead of ``n - 1``.

A thread computes one (row, column) element's tree with a binary counter: the
partial sums waiting to be paired sit on a stack of at most 32 (one per bit of
``n``), and each new term pairs with the stack's top as many times as the
count of terms so far has trailing zero bits; the stack is summed from its top
at the end. That is the level-by-level tree above (tested against it for
every ``n`` below 200). The aligned power-of-two subtrees are independent, so
a later kernel can split a long row between threads and still give these bits.
A row with no tokens is zero; an empty tree's sum starts from zero as the CPU's
(a row of one ``-0.0`` gives ``+0.0``); with ``accumulate``, the tree's sum is
added after the value already there.
"""

from __future__ import annotations

from functools import cache

import numpy as np

from ._runtime import SIMULATOR, cuda

ORDERS = ("cpu", "tree")
_DEPTH = 32  # one partial sum per bit of the row's token count (an int32)
THREADS = 32 if SIMULATOR else 256
_SIM_BLOCKS = 3


def check_order(order, tree_launch=None) -> str:
    """``order`` checked ("cpu" or "tree"); ``tree_launch`` goes only with "tree"."""
    if not isinstance(order, str) or order not in ORDERS:
        raise ValueError(
            f"order is {order!r}; it must be 'cpu' (each element summed in token order, "
            "bit-identical to the CPU) or 'tree' (a fixed binary tree, the same bits for "
            "any launch shape)."
        )
    if tree_launch is not None and order != "tree":
        raise ValueError(
            "tree_launch is the tree kernel's launch shape; give it with order='tree'."
        )
    return order


@cuda.jit(device=True)
def _finish(existing, total, have, accumulate, zero):
    """The element written: the tree's sum from zero, or after ``existing`` (kept if no terms)."""
    if accumulate:
        return existing + total if have else existing
    return zero + total


@cache
def tree_sums_kernel(dtype: np.dtype):
    zero = dtype.type(0)

    @cuda.jit
    def tree_sums(grad, order, row_starts, row_counts, accumulate, token, segment, position):
        """Element (r, h) of the concatenated gradients: its tokens' ``grad[t, h]`` in a tree."""
        hidden = token.shape[1]
        vocab = token.shape[0]
        first_position = vocab + segment.shape[0]
        rows = first_position + position.shape[0]
        stack = cuda.local.array(_DEPTH, dtype.type)
        for n in range(cuda.grid(1), rows * hidden, cuda.gridsize(1)):
            r = n // hidden
            h = n - r * hidden
            start = row_starts[r]
            count = row_counts[r]
            depth = 0
            for m in range(count):
                stack[depth] = grad[order[start + m], h]
                depth += 1
                pairs = m + 1
                while pairs % 2 == 0:  # pair the two newest partial sums, left + right
                    depth -= 1
                    stack[depth - 1] = stack[depth - 1] + stack[depth]
                    pairs //= 2
            total = zero
            if depth > 0:
                total = stack[depth - 1]
                for d in range(depth - 2, -1, -1):
                    total = stack[d] + total
            if r < vocab:
                token[r, h] = _finish(token[r, h], total, depth > 0, accumulate, zero)
            elif r < first_position:
                segment[r - vocab, h] = _finish(
                    segment[r - vocab, h], total, depth > 0, accumulate, zero
                )
            else:
                p = r - first_position
                position[p, h] = _finish(position[p, h], total, depth > 0, accumulate, zero)

    return tree_sums


def launch(rows: int, hidden: int, blocks=None, threads=None) -> tuple[int, int]:
    """``(blocks, threads)`` of the tree kernel; any values give the same bits."""
    threads = threads or THREADS
    if blocks is None:
        blocks = _SIM_BLOCKS if SIMULATOR else max(1, min(65535, -(-rows * hidden // threads)))
    return blocks, threads
