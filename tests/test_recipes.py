"""CONTRIBUTING.md's recipes, each done in a copy of the package (issue 38).

A method, a family, a family with a new position rule and a perf figure are each added
exactly as the recipe says, in a throwaway copy of ``bert_embedding_kernels``; the test then
checks that the addition works from the outside (the public API, the drop-in, a checkpoint,
the rendered Markdown) and that the recipe touched the files it names and no others.
"""

import hashlib
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import bert_embedding_kernels as bek

SOURCE = Path(bek.__file__).resolve().parent


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "src"
    shutil.copytree(SOURCE, root / "bert_embedding_kernels", ignore=shutil.ignore_patterns(
        "__pycache__", "*.nbi", "*.nbc"))  # fmt: skip
    return root


def _digests(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*.py"))
    }


def _edit(path: Path, anchor: str, addition: str) -> None:
    """Insert ``addition`` before ``anchor`` (which must occur once)."""
    text = path.read_text()
    assert text.count(anchor) == 1, anchor
    path.write_text(text.replace(anchor, addition + anchor))


def _run(root: Path, code: str, *arguments) -> str:
    environment = {**os.environ, "PYTHONPATH": str(root), "NUMBA_CACHE_DIR": str(root / ".nb")}
    done = subprocess.run(
        [sys.executable, *arguments] if arguments else [sys.executable, "-c", code],
        capture_output=True, text=True, env=environment, cwd=root, timeout=600,
    )  # fmt: skip
    failures = [line for line in done.stdout.splitlines() if line.startswith(("FAILED", "E "))]
    assert done.returncode == 0, "\n".join(failures[:40]) + done.stderr[-3000:]
    return done.stdout


def _changed(before: dict, after: dict) -> set[str]:
    return {name for name in before.keys() | after.keys() if before.get(name) != after.get(name)}


# -- a method ---------------------------------------------------------------------------
TAKE = '''"""``take``: numpy's ``np.take`` per table, summed (a recipe's example method)."""

import numpy as np

from ..validate.batch import kernel_ids


def take_sum(tables, batch, out):
    # Ids come checked but of any integer dtype; np.take (numpy < 2) refuses uint64.
    ids, types, positions = (kernel_ids(a) for a in batch[:3])
    np.add(np.take(tables.token, ids, axis=0), np.take(tables.segment, types, axis=0), out=out)
    return np.add(out, np.take(tables.position, positions, axis=0), out=out)
'''
TAKE_RECORD = """        Implementation(
            name="take",
            summary="np.take per table, summed",
            forward=take.take_sum,
            dtypes=("float32", "float64"),
        ),
"""


def test_a_method_is_its_module_and_one_registry_record(tree):
    package = tree / "bert_embedding_kernels"
    before = _digests(tree)
    (package / "methods" / "take.py").write_text(TAKE)
    _edit(package / "registry.py", "from .methods import concat", "from .methods import take\n")
    _edit(package / "registry.py", "    )\n}\n\nMETHODS", TAKE_RECORD)
    assert _changed(before, _digests(tree)) == {
        "bert_embedding_kernels/methods/take.py",
        "bert_embedding_kernels/registry.py",
    }
    out = _run(
        tree,
        textwrap.dedent("""
        import numpy as np, bert_embedding_kernels as bek
        assert "take" in bek.METHODS, bek.METHODS
        tables = bek.EmbeddingTables.random(50, 16, max_positions=8)
        ids = np.random.default_rng(0).integers(0, 50, (3, 8))
        got = bek.embed(tables, ids, method="take")
        assert np.array_equal(got, bek.embed(tables, ids, method="gather"))
        try:
            bek.embed(tables, [[50]], method="take")
        except IndexError as error:
            print("refused:", error)
    """),
    )
    assert "refused: input_ids[0, 0]" in out  # validation ran before the new method
    # The registry-driven tests pick it up with no edit to them.
    tests = Path(__file__).parent
    # (with the suite's own configuration: its warning filters)
    out = _run(tree, "", "-m", "pytest", "-q", "-p", "no:cacheprovider",
               "--rootdir", str(tests.parent), "-c", str(tests.parent / "pyproject.toml"),
               str(tests / "test_equivalence.py"), "-k", "take")  # fmt: skip
    assert " passed" in out and "failed" not in out, out[-2000:]


# -- a family -----------------------------------------------------------------------------
FAMILY_RECORD = (
    '    Family("FakeBERT", "fakebert.modeling_fakebert", "FakeBertEmbeddings", ("fakebert",)),\n'
)
FAKE_FAMILY = textwrap.dedent("""
    import sys, types, torch, transformers
    from transformers.models.bert import modeling_bert
    name = "transformers.models.fakebert.modeling_fakebert"
    module = types.ModuleType(name)
    FakeBertEmbeddings = type("FakeBertEmbeddings", (modeling_bert.BertEmbeddings,),
                              {"__module__": name, "__qualname__": "FakeBertEmbeddings"})
    module.FakeBertEmbeddings = FakeBertEmbeddings
    sys.modules[name] = module
    from bert_embedding_kernels.families import family_of_model_type
    from bert_embedding_kernels.nn import BertEmbeddings
    config = transformers.BertConfig(vocab_size=40, hidden_size=16, num_attention_heads=2,
                                     max_position_embeddings=12)
    torch.manual_seed(0)
    theirs = FakeBertEmbeddings(config).eval()
    ours = BertEmbeddings.from_hf(theirs)
    ids = torch.randint(0, 40, (2, 7))
    with torch.no_grad():
        torch.testing.assert_close(ours(input_ids=ids), theirs(input_ids=ids))
    print(ours.family.name, family_of_model_type("fakebert", "test").name)
""")


def test_a_family_with_known_rules_is_one_record(tree):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    package = tree / "bert_embedding_kernels"
    before = _digests(tree)
    _edit(package / "families.py", ")  # fmt: skip\n\n# Embeddings classes", FAMILY_RECORD)
    assert _changed(before, _digests(tree)) == {"bert_embedding_kernels/families.py"}
    assert _run(tree, FAKE_FAMILY).split() == ["FakeBERT", "FakeBERT"]


# -- a family with a new position rule -----------------------------------------------------
# Nystromformer numbers positions from 2 (as OPT does): one rule record, one family record.
RULE_RECORD = 'FROM_TWO = PositionRule("from_two", "positions from 2", offset=2)\n'
RULE_FAMILY = (
    '    Family("Nystromformer", "nystromformer.modeling_nystromformer",\n'
    '           "NystromformerEmbeddings", ("nystromformer",), positions=FROM_TWO),\n'
)
NEW_RULE = textwrap.dedent("""
    import json, sys
    import numpy as np, safetensors.numpy, torch, transformers, bert_embedding_kernels as bek
    from transformers.models.nystromformer import modeling_nystromformer
    config = transformers.NystromformerConfig(vocab_size=30, hidden_size=8, num_attention_heads=2,
                                              max_position_embeddings=10)
    torch.manual_seed(0)
    theirs = modeling_nystromformer.NystromformerEmbeddings(config).eval()
    tables = bek.EmbeddingTables.from_torch(theirs)
    assert (tables.family, tables.position_rule) == ("Nystromformer", "from_two")
    ids = np.random.default_rng(0).integers(0, 30, (3, 5))
    with torch.no_grad():
        expected = theirs(input_ids=torch.from_numpy(ids)).numpy()
    np.testing.assert_allclose(bek.embed(tables, ids), expected, rtol=1e-5, atol=1e-5)
    # The drop-in takes the family too: numbered by the core, or in torch from inputs_embeds.
    from bert_embedding_kernels.nn import BertEmbeddings
    ours = BertEmbeddings.from_hf(theirs).eval()
    embeds = theirs.word_embeddings(torch.from_numpy(ids))
    with torch.no_grad():
        got = ours(input_ids=torch.from_numpy(ids)).numpy()
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(ours(inputs_embeds=embeds), theirs(inputs_embeds=embeds),
                                   rtol=1e-5, atol=1e-5)
    # A checkpoint of the family (by model_type); past lengths; the backward.
    directory = sys.argv[1]
    state = {f"embeddings.{k}": v.numpy() for k, v in theirs.state_dict().items()
             if k.endswith(("weight", "bias"))}
    safetensors.numpy.save_file(state, directory + "/model.safetensors")
    with open(directory + "/config.json", "w") as f:
        json.dump({"model_type": "nystromformer"}, f)
    tables = bek.EmbeddingTables.from_safetensors(directory)
    assert (tables.family, tables.position_rule) == ("Nystromformer", "from_two")
    for past in (0, 3):
        got = bek.embed(tables, ids, past_length=past)
        positions = np.arange(2 + past, 7 + past)
        assert np.array_equal(got, bek.embed(tables, ids, position_ids=positions))
        grad = np.random.default_rng(past).standard_normal(got.shape, np.float32)
        ours = bek.embed_backward(tables, grad, ids, past_length=past)
        given = bek.embed_backward(tables, grad, ids, position_ids=positions)
        assert all(np.array_equal(a, b) for a, b in zip(ours, given))
    try:
        bek.embed(tables, ids, past_length=6)
    except IndexError as error:
        print("refused:", error)
    try:
        bek.EmbeddingTables(tables.token, position=tables.position[:2], position_rule="from_two")
    except ValueError as error:
        print("refused:", error)
""")


def test_a_family_with_a_new_position_rule_is_two_records(tree, tmp_path):
    for package in ("torch", "transformers", "safetensors"):
        pytest.importorskip(package)
    package = tree / "bert_embedding_kernels"
    before = _digests(tree)
    _edit(package / "position_rules.py", "\nRULES = {", RULE_RECORD)
    _edit(package / "position_rules.py", ")}\nPOSITION_RULES", ", FROM_TWO")
    _edit(package / "families.py", ", PositionRule\n", ", FROM_TWO")
    _edit(package / "families.py", ")  # fmt: skip\n\n# Embeddings classes", RULE_FAMILY)
    assert _changed(before, _digests(tree)) == {
        "bert_embedding_kernels/position_rules.py",
        "bert_embedding_kernels/families.py",
    }
    out = _run(tree, "", "-c", NEW_RULE, str(tmp_path)).splitlines()
    assert out == [
        "refused: position_ids (default, past_length=6, position_rule='from_two') run to "
        "position 12, out of range: valid ids satisfy 0 <= id < 12 (max_positions).",
        "refused: position_rule='from_two' numbers from 2; it needs a position table of more "
        "than 2 rows (max_positions is 2).",
    ], out


# -- a perf figure ------------------------------------------------------------------------
FIGURE = (
    '    Figure("gather / fused (out=)", "gather", "fused (out=)", ">= 2", "a recipe figure"),\n'
)
RENDER = textwrap.dedent("""
    from bert_embedding_kernels.bench.perf import figures as perf, markdown as perf_markdown
    from bert_embedding_kernels.bench.engine.timing import Estimate, Timings
    names = {n for f in perf.FORWARD_FIGURES for n in (f.numerator, f.denominator)}
    forward = Timings({n: [1e-3 * (3 if n == "gather" else 1)] * 9 for n in names})
    empty = Timings({"copy": [1e-3] * 9})
    small = Estimate(1e-5, 0.9e-5, 1.1e-5, 9)
    run = perf.summary(forward, empty, empty, small, (0.1, 0.2), (0.0, 0.0), "embench perf")
    print(perf_markdown.render(run))
""")


def test_a_figure_is_one_record_from_json_to_markdown(tree):
    package = tree / "bert_embedding_kernels"
    before = _digests(tree)
    _edit(package / "bench" / "perf" / "figures.py", ")\nBACKWARD_FIGURES = (", FIGURE)
    assert _changed(before, _digests(tree)) == {"bert_embedding_kernels/bench/perf/figures.py"}
    rows = [line for line in _run(tree, RENDER).splitlines() if line.startswith("| gather /")]
    assert len(rows) == 1, rows
    assert re.search(r"\| 3\.0+ \[3\.00, 3\.00\] \| >= 2: met", rows[0]), rows
