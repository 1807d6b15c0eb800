"""method="auto" and `embench choose` follow the calibration, point by point.

The shipped calibration has fused winning at all of its points, so tests on it
cannot tell the cost model from a constant. Here a synthetic calibration, written
to a temporary file and named by EMBENCH_CALIBRATION, makes each method the
winner somewhere; at every point the method chosen is asserted, for
``auto.choose``, for what ``bert_embedding_kernels.embed(method="auto")`` really runs (recorded
by wrapping each registry record's forward) and for ``embench choose``.
"""

import json
from dataclasses import replace

import numpy as np
import pytest
from poison import embed
from rules import assert_forward_matches

import bert_embedding_kernels as bek
from bert_embedding_kernels import auto, registry
from bert_embedding_kernels.bench import cli

# The shipped calibration has fused winning at every measured point, so it cannot
# tell the cost model from a constant. This one, with the model
# seconds = a + b * bytes + c * bytes * rows, rows = vocab + 2 + 512:
#   onehot [1e-6, 0, 1e-13], concat [0, 0, 6e-13], gather [0, 1e-9, 0], fused [1e-5, 1e-11, 0]
# gives, by hand (milliseconds at bytes B and rows r, winner in capitals):
#   B=32 (1 x 2 tokens x 4 wide), vocab 6 (r=520):
#       onehot 1.0e-3  CONCAT 1.0e-5  gather 3.2e-5  fused 1.0e-2
#   B=65536 (4 x 64 tokens x 64 wide), vocab 6:
#       ONEHOT 4.4e-3  concat 2.0e-2  gather 6.6e-2  fused 1.07e-2
#   B=32, vocab 5000 (r=5514):
#       onehot 1.02e-3 concat 1.06e-4 GATHER 3.2e-5  fused 1.0e-2
#   B=65536, vocab 5000:
#       onehot 3.7e-2  concat 2.2e-1  gather 6.6e-2  FUSED 1.07e-2
#   B=32, vocab 1400 (r=1914): concat 3.67e-5 GATHER 3.2e-5: all three tables count in
#       the rows (with the vocabulary alone, r=1400, concat would win at 2.69e-5)
# every other winner ahead of the runner-up by a factor of 2.4 or more. "retired" is a
# method this version lacks (cheapest of all): a calibration may name one, and
# choose must ignore it.
SYNTHETIC = {
    "onehot": [1e-6, 0.0, 1e-13],
    "concat": [0.0, 0.0, 6e-13],
    "gather": [0.0, 1e-9, 0.0],
    "fused": [1e-5, 1e-11, 0.0],
    "retired": [0.0, 0.0, 0.0],
}
# (batch, seq, hidden, vocab) -> the method the synthetic model must pick.
EXPECTED_CHOICE = {
    (1, 2, 4, 6): "concat",
    (4, 64, 64, 6): "onehot",
    (1, 2, 4, 5000): "gather",
    (4, 64, 64, 5000): "fused",
    (1, 2, 4, 1400): "gather",
}


@pytest.fixture
def synthetic_calibration(tmp_path, monkeypatch):
    path = tmp_path / "calibration.json"
    path.write_text(json.dumps({"model": auto.MODEL, "coefficients": SYNTHETIC}))
    monkeypatch.setenv("EMBENCH_CALIBRATION", str(path))
    auto.calibration.cache_clear()
    auto.choose.cache_clear()
    yield path
    auto.calibration.cache_clear()  # the next test reads the shipped calibration again
    auto.choose.cache_clear()


def test_the_synthetic_points_have_every_method_as_a_winner():
    assert set(EXPECTED_CHOICE.values()) == set(bek.METHODS)
    assert set(SYNTHETIC) - {"retired"} == set(bek.METHODS)


@pytest.mark.parametrize(("point", "expected"), EXPECTED_CHOICE.items(), ids=str)
def test_choose_follows_the_calibration(synthetic_calibration, point, expected):
    batch, seq, hidden, vocab = point
    assert auto.choose(batch * seq, hidden, 4, vocab, 2, 512) == expected


@pytest.mark.parametrize(("point", "expected"), EXPECTED_CHOICE.items(), ids=str)
def test_embed_auto_runs_the_chosen_method(synthetic_calibration, monkeypatch, point, expected):
    ran = []
    for name, record in registry.REGISTRY.items():

        def recording(*arguments, name=name, forward=record.forward, **options):
            ran.append(name)
            return forward(*arguments, **options)

        monkeypatch.setitem(registry.REGISTRY, name, replace(record, forward=recording))
    batch, seq, hidden, vocab = point
    tables = bek.EmbeddingTables.random(vocab, hidden, max_positions=512)
    rng = np.random.default_rng(vocab)
    ids = rng.integers(0, vocab, (batch, seq))
    types = rng.integers(0, 2, (batch, seq))
    y = embed(tables, ids, types, method="auto")
    assert ran == [expected]
    assert_forward_matches(y, tables, expected, ids, types)


@pytest.mark.parametrize(("point", "expected"), EXPECTED_CHOICE.items(), ids=str)
def test_embench_choose_prints_the_calibrated_choice(
    synthetic_calibration, capsys, point, expected
):
    batch, seq, hidden, vocab = point
    arguments = ["--batch-size", batch, "--seq-len", seq, "--hidden-size", hidden]
    assert cli.main(["choose", *map(str, arguments), "--vocab-size", str(vocab)]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == expected
    assert "retired" not in printed[1]
