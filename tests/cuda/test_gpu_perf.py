"""``embench perf --device cuda``'s figures: the shared engine's intervals, data then Markdown.

The timing itself needs a GPU (a simulator run takes minutes and reads no GPU clock); what
is checked here is the pure-Python path from the engine's :class:`Timings` to the rows
(``--write``'s JSON) and from them to the Markdown.
"""

import json

import pytest

gpu = pytest.importorskip("bert_embedding_kernels.bench.perf.gpu")
from bert_embedding_kernels.bench.engine.timing import Timings  # noqa: E402

FUSED = ("sum", "bert_embedding_kernels.cuda, plain stores")


def _timings(fused_gpu):
    gpu_clock = Timings({gpu.COPY: [2e-6] * 9, FUSED: [fused_gpu] * 9})
    host_clock = Timings({gpu.COPY: [5e-6] * 9, FUSED: [7e-6] * 9})
    return gpu_clock, host_clock


def test_rows_take_medians_and_the_copys_share_from_the_engine():
    rows = gpu._rows(*_timings(4e-6))
    fused = next(row for row in rows if row["implementation"] == FUSED[1])
    assert fused["gpu_us"] == pytest.approx([4.0, 4.0, 4.0])
    assert fused["copy_share"] == pytest.approx([0.5, 0.5, 0.5])
    assert fused["host_us"] == pytest.approx(7.0)
    json.dumps(rows)  # what --write stores


def test_no_gpu_clock_gives_no_share():
    rows = gpu._rows(*_timings(0.0))
    assert next(r for r in rows if r["implementation"] == FUSED[1])["copy_share"] is None


def test_markdown_is_rendered_from_the_data():
    run = {
        "device": "simulator", "numba": "0", "cuda": "Built-in", "rounds": 9, "inner": 10,
        "cases": [{"case": "tiny", "rows": gpu._rows(*_timings(4e-6)),
                   "checks": [["sum == numpy, bitwise", True]], "note": ""}],
        "wall_s": 1.0,
    }  # fmt: skip
    text = gpu.render(run)
    assert "| tiny | sum | bert_embedding_kernels.cuda, plain stores | 4.0 [4.0, 4.0] | " in text
    assert "0.50 [0.50, 0.50] | 7.0 |" in text
    assert "- tiny: sum == numpy, bitwise: True" in text
