"""The report's family axis: what a BERT-family layout costs the fused sum, beside BERT's.

At the report's base batch, sequence length and hidden size, for each vocabulary of
:data:`VOCAB_SIZES` (BERT's, RoBERTa's and XLM-R's), the fused sum into ``out=`` with:

- ``bert``: token, segment and position tables, positions ``0 .. seq-1``;
- ``roberta``: positions numbered from the ids after the padding tokens (the tables'
  ``position_rule="after_padding"``, padding id 1), three sequences of eight padded;
- ``distilbert``: no segment table;

and a parallel copy of the output (the roofline), timed in the same interleaved rounds.
Each layout is checked first, bit for bit, against plain indexing with positions
numbered here by transformers' formula. The figures are paired ratios to ``bert`` at
the same vocabulary, with their 95% intervals.
"""

from __future__ import annotations

import functools

import numpy as np

from ... import embed
from ...families import family_of_model_type
from ...tables import EmbeddingTables
from ..engine.cases import Shape
from ..engine.roofline import CopyReference
from ..engine.timing import interleave

LAYOUTS = ("bert", "roberta", "distilbert")
VOCAB_SIZES = (30522, 50265, 250002)  # BERT, RoBERTa, XLM-R
QUICK_VOCAB_SIZES = (30522, 50265)
ROBERTA = family_of_model_type("roberta", "the family axis")  # its record: its rules
PAD = 1  # RoBERTa's padding id
PADDED = ((1, 0.8), (4, 0.5), (6, 0.05))  # (sequence, fraction of it before the padding)


def _transformers_positions(input_ids: np.ndarray) -> np.ndarray:
    """``create_position_ids_from_input_ids``: (cumsum(ids != pad) * (ids != pad)) + pad."""
    kept = (input_ids != PAD).astype(np.int64)
    return np.cumsum(kept, axis=1) * kept + PAD


def layout_inputs(layout: str, shape: Shape, token: np.ndarray, seed: int = 1):
    """(tables, input_ids, expected output) of ``layout`` at ``shape``."""
    rng = np.random.default_rng(seed)
    segment = rng.standard_normal((2, shape.hidden), np.float32)
    position = rng.standard_normal((shape.seq + PAD + 1, shape.hidden), np.float32)
    input_ids = rng.integers(PAD + 1, token.shape[0], (shape.batch, shape.seq))
    for b, kept in PADDED:
        if b < shape.batch:
            input_ids[b, max(1, int(kept * shape.seq)) :] = PAD
    positions = np.broadcast_to(np.arange(shape.seq), input_ids.shape)
    if layout == "roberta":
        positions = _transformers_positions(input_ids)
    segment_row = np.float32(0) if layout == "distilbert" else segment[0]
    expected = (token[input_ids] + segment_row) + position[positions]
    rules = {"position_rule": ROBERTA.positions.name, "padding_idx": PAD}
    rules = rules if layout == "roberta" else {}
    tables = EmbeddingTables(token, None if layout == "distilbert" else segment, position, **rules)
    return tables, input_ids, expected


def measure(shape: Shape, vocab_sizes, budget: float) -> list[dict]:
    """One point per vocabulary: medians, ratios to ``bert`` and fractions of the copy."""
    points = []
    for vocab in vocab_sizes:
        token = np.random.default_rng(0).standard_normal((vocab, shape.hidden), np.float32)
        calls = {"copy": CopyReference((shape.batch, shape.seq, shape.hidden), np.float32)}
        for layout in LAYOUTS:
            tables, input_ids, expected = layout_inputs(layout, shape, token)
            out = np.full(expected.shape, np.nan, np.float32)
            calls[layout] = functools.partial(embed, tables, input_ids, out=out, layer_norm=False)
            calls[layout]()
            if not np.array_equal(out, expected):
                raise AssertionError(f"fused disagrees with plain indexing for {layout} tables")
        timings = interleave(calls, budget=budget)
        point = {"vocab": vocab, "rounds": timings.rounds, "medians_s": {}, "over_bert": {}}
        for name in calls:
            estimate = timings.estimate(name)
            point["medians_s"][name] = [estimate.median, estimate.low, estimate.high]
        for layout in LAYOUTS[1:]:
            ratio = timings.ratio(layout, "bert")
            point["over_bert"][layout] = [ratio.median, ratio.low, ratio.high]
        copy = timings.ratio("copy", "bert")
        point["bert_fraction_of_copy"] = [copy.median, copy.low, copy.high]
        points.append(point)
    return points


def render(points: list[dict], shape: dict) -> list[str]:
    """The report's section: one row per vocabulary."""
    if not points:
        return []

    def interval(values) -> str:
        median, low, high = values
        return f"{median:.3f} [{low:.3f}, {high:.3f}]"

    lines = [
        "## The BERT family's layouts (fused, into out=)",
        "",
        f"Batch {shape['batch']} x seq {shape['seq']}, hidden {shape['hidden']}, float32; "
        "`roberta`: positions numbered from the ids after the padding tokens (three sequences "
        "of eight padded), `distilbert`: no segment table; each checked bit for bit against "
        "plain indexing, then timed in the same interleaved rounds as BERT's layout and a "
        "copy of the output. Ratios are the layout's time over BERT's (1.000 = the same "
        "cost), medians of per-round ratios with 95% intervals "
        "(kernels/bert_embedding_kernels/bench/report/family_axis.py).",
        "",
        "| vocab | bert | roberta / bert | distilbert / bert | bert, fraction of the copy |",
        "|---:|---:|---:|---:|---:|",
    ]
    for point in points:
        bert_ms = point["medians_s"]["bert"][0] * 1e3
        lines.append(
            f"| {point['vocab']} | {bert_ms:.3f} ms | {interval(point['over_bert']['roberta'])} "
            f"| {interval(point['over_bert']['distilbert'])} "
            f"| {interval(point['bert_fraction_of_copy'])} |"
        )
    return lines
