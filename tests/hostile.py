"""What the hostile-input tests share: small tables, valid ids, and the contract they check.

The contract (README, "Errors"): whatever is passed, a call raises TypeError,
ValueError or IndexError whose message names the offending argument, or returns
the same result as the naive reference. Nothing else escapes (no numba typing
error, no numpy message that names no argument), nothing crashes, and no kernel
reads outside a table (run these tests with ``NUMBA_BOUNDSCHECK=1`` and an empty
``NUMBA_CACHE_DIR`` to have numba check every index; see docs/THREADING.md).
"""

from __future__ import annotations

import numpy as np
from poison import embed
from rules import assert_forward_matches

import bert_embedding_kernels as bek

VOCAB, HIDDEN, MAX_POSITIONS, TYPE_VOCAB = 10, 4, 8, 2
TABLES = bek.EmbeddingTables.random(
    VOCAB, HIDDEN, max_positions=MAX_POSITIONS, type_vocab_size=TYPE_VOCAB
)
IDS = np.array([[1, 2, 3], [4, 5, 6]])
ACCEPTED_ERRORS = (TypeError, ValueError, IndexError)
GOOD_TABLES = {"token": TABLES.token, "segment": TABLES.segment, "position": TABLES.position}
# out_dtype / grad_dtype values that name no float dtype (numpy's parser raises TypeError,
# ValueError or SyntaxError for them, by input), or no float any method returns.
NOT_FLOAT_DTYPES = [
    "int8",
    np.int8,
    np.int64,
    np.uint16,
    bool,
    object,
    np.complex128,
    "U3",
    "datetime64[s]",
    ">f8",  # float64 in the other byte order: not what any method returns
    "nonsense",
    ",",  # numpy's parser raises SyntaxError here, ValueError for others
    1.5,
]


def check_contract(method, argument, **arguments):
    """Call ``embed``; it must refuse naming ``argument`` or match the reference.

    The output is poisoned first (tests/poison.py): a writable float ``out`` is
    NaN-filled, an allocated one gets NaN-filled memory where the allocator
    reuses any, so an accepted call must really write every element.
    """
    arguments.setdefault("input_ids", IDS)
    try:
        y = embed(TABLES, method=method, **arguments)
    except ACCEPTED_ERRORS as error:
        assert argument in str(error), f"{type(error).__name__} does not name {argument}: {error}"
        return None
    # Accepted: then it must be right.
    assert_forward_matches(
        y,
        TABLES,
        method,
        np.asarray(arguments["input_ids"]),
        arguments.get("token_type_ids"),
        arguments.get("position_ids"),
        arguments.get("past_length", 0),
    )
    if arguments.get("out") is not None:
        assert y is arguments["out"]
    return y


def tables_with(**rows):
    """TABLES with some rows replaced: ``token=(row, value)``."""
    arrays = {name: np.array(table) for name, table in GOOD_TABLES.items()}
    for name, (row, value) in rows.items():
        arrays[name][row] = value
    return bek.EmbeddingTables(**arrays)
