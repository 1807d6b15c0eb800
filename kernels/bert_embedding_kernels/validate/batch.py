"""The normal form of a call's ids that every method takes (:class:`Batch`), and the ids as
the compiled kernels take them."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

# Id dtypes the compiled kernel takes as they are; any other integer dtype is
# converted once (after the range check, so the conversion cannot wrap).
KERNEL_ID_DTYPES = (np.dtype(np.int32), np.dtype(np.int64))


class Batch(NamedTuple):
    """Validated ids in one normal form shared by all methods.

    ``token_type_ids`` and ``position_ids`` are 2-D with a first axis of 1
    (shared by every sequence of the batch) or ``batch``.
    """

    input_ids: np.ndarray  # (batch, seq)
    token_type_ids: np.ndarray  # (1 | batch, seq)
    position_ids: np.ndarray  # (1 | batch, seq)
    out: np.ndarray | None  # (batch, seq, hidden) or None to allocate

    @property
    def shape(self) -> tuple[int, int]:
        return self.input_ids.shape

    @property
    def num_tokens(self) -> int:
        return self.input_ids.size


def kernel_ids(ids: np.ndarray) -> np.ndarray:
    """Ids as a compiled kernel takes them: int32/int64 untouched, other dtypes once to int64.

    Only for ids :func:`prepare` has range-checked, so the conversion cannot wrap.
    """
    return ids if ids.dtype in KERNEL_ID_DTYPES else ids.astype(np.int64)


def flat_ids(batch: Batch) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The three id arrays as flat (tokens,) vectors, broadcasting shared rows."""
    return tuple(
        np.broadcast_to(ids, batch.shape).reshape(-1)
        for ids in (batch.input_ids, batch.token_type_ids, batch.position_ids)
    )
