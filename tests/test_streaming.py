"""The fused kernel's streaming-store path: the same bits as the plain one, at every alignment.

Streaming stores need 32-byte-aligned destinations, so each row is written as a
plain head up to the first boundary, 32-byte streaming stores, and a plain tail.
Outputs that big are rare in tests, so the size threshold is lowered here.
"""

import numpy as np
import pytest

import kernels
from kernels.bench.reference import naive_embed
from kernels.methods import fused


@pytest.fixture
def always_streaming(monkeypatch):
    monkeypatch.setattr(fused, "STREAM_MIN_BYTES", 0)


@pytest.mark.parametrize("hidden", [16, 24, 40, 64, 768])
@pytest.mark.parametrize("batch", [1, 65])
@pytest.mark.parametrize("shift", range(8))  # the output's start, in float32 elements off 32 bytes
def test_every_alignment_gives_the_reference(always_streaming, hidden, batch, shift):
    tables = kernels.EmbeddingTables.random(200, hidden, max_positions=16, seed=hidden)
    rng = np.random.default_rng(batch * 10 + shift)
    ids, types = rng.integers(0, 200, (batch, 9)), rng.integers(0, 2, (batch, 9))
    size = batch * 9 * hidden
    raw = np.full(size + 16, np.nan, np.float32)  # poisoned: every element must be written
    start = (-raw.ctypes.data // 4 + shift) % 8
    out = raw[start : start + size].reshape(batch, 9, hidden)
    assert fused._streaming_head(out, hidden) is not None  # the streaming path runs
    kernels.embed(tables, ids, types, out=out)
    np.testing.assert_array_equal(out, naive_embed(tables, ids, types))
    assert np.isnan(raw[:start]).all() and np.isnan(raw[start + size :]).all()  # nothing outside


def test_rows_that_cannot_stream_take_the_plain_kernel(always_streaming):
    out = np.empty((2, 3, 20), np.float32)  # 80-byte rows: not whole 32-byte stores
    assert fused._streaming_head(out, 20) is None
    small = np.empty((1, 1, 8), np.float32)  # one store a row: not worth it
    assert fused._streaming_head(small, 8) is None
