"""The drop-in's registered PyTorch operators (bert_embedding_kernels.nn.ops) under the
compilers: ``torch.library.opcheck`` of both operators, ``torch.autograd.gradcheck`` of the
forward's registered gradient, ``torch.compile`` (``fullgraph=True`` included) of the drop-in
in tiny BERT, RoBERTa and DistilBERT models (forward and one training step equal to eager)
and ``torch.export`` of the drop-in (equal to eager).

Tiny random models are built offline from configs (tests/test_families.py). Needs torch and
transformers; under CI a missing package fails the module instead of skipping it.
"""

import copy

import numpy as np
import pytest
from optional import require

torch = require("torch")
transformers = require("transformers")

from test_families import PAD, VOCAB, tiny_model  # noqa: E402  (needs torch)

from bert_embedding_kernels import pool  # noqa: E402
from bert_embedding_kernels.nn import BertEmbeddings  # noqa: E402

OPS = torch.ops.bert_embedding_kernels
HIDDEN, TYPES, POSITIONS = 8, 3, 16
# Table layouts of the families: which tables exist and how positions are numbered.
LAYOUTS = {
    "bert": {"segment": True, "position": True, "rule": None},
    "roberta": {"segment": True, "position": True, "rule": PAD},  # positions from the ids
    "distilbert": {"segment": False, "position": True, "rule": None},
    "deberta-v3": {"segment": False, "position": False, "rule": None},
}


def _arguments(layout, dtype, norm, *, batch=2, seq=5, hidden=HIDDEN, requires_grad=True):
    """The forward operator's arguments for a layout (the eager call's order)."""
    spec = LAYOUTS[layout]
    generator = torch.Generator().manual_seed(0)

    def table(rows):
        values = torch.randn(rows, hidden, generator=generator, dtype=torch.float64)
        return values.to(dtype).requires_grad_(requires_grad)

    ids = torch.randint(0, 20, (batch, seq), generator=generator)
    ids[0, -2:] = PAD  # padding at the end of one sequence
    ids[1, 0] = 7  # the word padding row below, used
    types = torch.randint(0, TYPES, (batch, seq), generator=generator)
    positions = torch.randint(0, POSITIONS, (batch, seq), generator=generator)
    weight = (torch.rand(hidden, generator=generator, dtype=torch.float64) + 0.5).to(dtype)
    return (
        ids,
        types if spec["segment"] else None,
        positions if spec["position"] and spec["rule"] is None else None,
        table(20),
        table(TYPES) if spec["segment"] else None,
        table(POSITIONS) if spec["position"] else None,
        weight.requires_grad_(requires_grad) if norm else None,
        table(1)[0].detach().requires_grad_(requires_grad) if norm else None,
        1e-5,
        "absolute" if spec["rule"] is None else "after_padding",
        spec["rule"],
        7,  # the word table's padding_idx
        True,  # keep the sums for the backward
    )


def _detached(arguments):
    return tuple(a.detach() if isinstance(a, torch.Tensor) else a for a in arguments)


DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16}


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("norm", [True, False], ids=["layernorm", "sum"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_opcheck_forward(dtype, norm, layout):
    torch.library.opcheck(OPS.embed.default, _arguments(layout, DTYPES[dtype], norm))


def test_opcheck_forward_without_sums():
    arguments = _detached(_arguments("bert", torch.float32, True))
    torch.library.opcheck(OPS.embed.default, (*arguments[:-1], False))
    out, sums = OPS.embed(*arguments[:-1], False)
    torch.testing.assert_close(out, OPS.embed(*arguments)[0], rtol=0, atol=0)
    assert sums.numel() == 0


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("norm", [True, False], ids=["layernorm", "sum"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_opcheck_backward(dtype, norm, layout):
    arguments = _detached(_arguments(layout, DTYPES[dtype], norm))
    out, sums = OPS.embed(*arguments)
    grad_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(1)).to(out.dtype)
    backward = (grad_out, sums, *arguments[:7], *arguments[8:12])
    torch.library.opcheck(OPS.embed_backward.default, backward)
    grads = OPS.embed_backward(*backward)
    for grad, table in zip(grads, [*arguments[3:7], arguments[6]], strict=True):
        assert grad.shape == ((0,) if table is None else table.shape)
        assert grad.dtype == arguments[3].dtype
    assert torch.all(grads[0][7] == 0) and grads[0].abs().sum() > 0  # the word padding row
    if LAYOUTS[layout]["rule"] is not None:  # RoBERTa's padding position row
        assert torch.all(grads[2][PAD] == 0) and grads[2].abs().sum() > 0


@pytest.mark.parametrize("layout", ["bert", "roberta", "distilbert"])
def test_gradcheck_float64(layout):
    arguments = _arguments(layout, torch.float64, True)
    tables = [a for a in arguments[3:8] if a is not None]

    def function(*given):
        values = iter(given)
        replaced = [None if a is None else next(values) for a in arguments[3:8]]
        return OPS.embed(*arguments[:3], *replaced, *arguments[8:])[0]

    # The padding rows' gradients are zero by definition (the word table's padding_idx, as
    # torch.nn.Embedding's; RoBERTa's padding position) while the numerical Jacobian sees
    # them used: here no id is a padding id (test_opcheck_backward checks those rows).
    ids = arguments[0]
    ids[(ids == 7) | (ids == PAD)] = 3
    assert torch.autograd.gradcheck(function, tables)


def test_pooled_outputs_stay_with_their_tensor():
    """Outputs of the output pool's size (bert_embedding_kernels.pool) are tensors on the
    pool's buffers, never handed out again while torch holds them."""
    batch, seq, hidden = 2, 256, 512  # the output and the sums: 1 MiB each, from the pool
    assert batch * seq * hidden * 4 >= pool.MIN_BYTES
    arguments = _detached(
        _arguments("bert", torch.float32, True, batch=batch, seq=seq, hidden=hidden)
    )
    torch.library.opcheck(OPS.embed.default, arguments)
    held = OPS.embed(*arguments)
    kept = tuple(t.clone() for t in held)
    for _ in range(3):
        again = OPS.embed(*arguments)
        pointers = {t.data_ptr() for t in again}
        assert not pointers & {t.data_ptr() for t in held}
        torch.testing.assert_close(again, kept, rtol=0, atol=0)
        again[0].fill_(float("nan"))
        again[1].fill_(float("nan"))
        del again
    torch.testing.assert_close(held, kept, rtol=0, atol=0)
    reused = pool.OUTPUTS.reused
    OPS.embed(*arguments)
    assert pool.OUTPUTS.reused == reused + 2  # the pool's buffers indeed (freed by `again`)


def test_tables_are_checked_once_per_tensor_and_follow_what_the_module_holds(monkeypatch):
    """The operators keep the checked tables of the tensors they saw (nn/ops.py's
    ``_tables``): a loop builds them once, yet an in-place update is read at the next call,
    a parameter given new memory gets new tables, and the kept tables hold no tensor (a
    replaced parameter's memory is not kept alive by them)."""
    from bert_embedding_kernels.nn import ops

    arrays = ("token", "segment", "position", "norm_weight", "norm_bias")

    built = []
    new_tables = ops._new_tables
    monkeypatch.setattr(ops, "_new_tables", lambda *a: built.append(1) or new_tables(*a))
    ops._TABLES.clear()
    arguments = list(_detached(_arguments("bert", torch.float32, True)))
    word = arguments[3]

    def check():
        out, _ = OPS.embed(*arguments)
        ids, types, positions = arguments[:3]
        total = word[ids] + arguments[4][types] + arguments[5][positions]
        expected = torch.nn.functional.layer_norm(
            total, (HIDDEN,), arguments[6], arguments[7], arguments[8]
        )
        torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)

    for _ in range(3):
        check()
    assert len(built) == 1  # checked once for three calls
    word.add_(1.0)  # an optimizer step: same memory, read anew
    check()
    assert len(built) == 1
    word.data = word.data.clone() * 2  # new memory for the same tensor object
    check()
    assert len(built) == 2
    arguments[3] = word = word.detach().clone()  # a new tensor (resize_token_embeddings)
    check()
    assert len(built) == 3

    def holds_a_tensor(array):  # along numpy's chain of bases, to the tensor's memory
        while array is not None:
            if getattr(array, "tensor", None) is not None:
                return True
            array = getattr(array, "base", None)
        return False

    kept = [getattr(t, name) for t in ops._TABLES.values() for name in arrays]
    assert len(kept) == 3 * len(arrays) and not any(map(holds_a_tensor, kept))
    arguments[3] = word = torch.randn(HIDDEN, 20).t()  # not contiguous: copied, never kept
    with pytest.warns(UserWarning, match="not C-contiguous"):
        check()
    assert not any(key[0][0] == word.data_ptr() for key in ops._TABLES)


# torch.compile: the drop-in in tiny models of three families, against eager.


@pytest.fixture
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _ids(seed=0, seq=9):
    rng = np.random.default_rng(seed)
    ids = torch.tensor(rng.integers(3, VOCAB, (3, seq)))
    ids[1, 6:] = PAD  # padding at the end of one sequence
    ids[2, 0] = PAD  # and a padding token inside another
    return ids


def _call(name, module, ids):
    if name == "distilbert":
        return module(ids)  # DistilBERT's positional call
    types = torch.tensor(np.random.default_rng(1).integers(0, 2, ids.shape))
    return module(input_ids=ids, token_type_ids=types)


def _training_step(name, module, ids, compiled=None):
    """Forward (through ``compiled`` where given) and backward of a loss: the output and
    every parameter's gradient, by name."""
    module.zero_grad(set_to_none=True)
    out = _call(name, module if compiled is None else compiled, ids)
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(3))
    (out * weights).sum().backward()
    return out.detach(), {n: p.grad for n, p in module.named_parameters() if p.grad is not None}


def _assert_same_step(got, expected):
    torch.testing.assert_close(got[0], expected[0], rtol=0, atol=1e-5)
    assert got[1].keys() == expected[1].keys()
    for parameter, grad in expected[1].items():
        torch.testing.assert_close(got[1][parameter], grad, rtol=0, atol=1e-5, msg=parameter)


@pytest.mark.usefixtures("fresh_dynamo")
@pytest.mark.parametrize("fullgraph", [False, True], ids=["graph-breaks-allowed", "fullgraph"])
@pytest.mark.parametrize("name", ["bert", "roberta", "distilbert"])
def test_compiled_drop_in_equals_eager(name, fullgraph):
    eager = BertEmbeddings.from_hf(tiny_model(name).embeddings)
    copied = copy.deepcopy(eager)
    compiled = torch.compile(copied, fullgraph=fullgraph)
    ids = _ids()
    got = _training_step(name, copied, ids, compiled)
    expected = _training_step(name, eager, ids)
    assert len(expected[1]) == (4 if name == "distilbert" else 5)  # every parameter
    _assert_same_step(got, expected)
    with torch.no_grad():  # inference, another length
        ids = _ids(seed=2, seq=7)
        torch.testing.assert_close(
            _call(name, compiled, ids), _call(name, eager, ids), rtol=0, atol=1e-5
        )


@pytest.mark.usefixtures("fresh_dynamo")
def test_a_whole_bert_model_compiles_in_one_graph():
    eager = tiny_model("bert")
    eager.embeddings = BertEmbeddings.from_hf(eager.embeddings)
    copied = copy.deepcopy(eager)
    compiled = torch.compile(copied, fullgraph=True)
    ids = _ids()
    mask = (ids != PAD).long()

    def step(model, call):
        model.zero_grad(set_to_none=True)
        hidden = call(input_ids=ids, attention_mask=mask).last_hidden_state
        weights = torch.randn(hidden.shape, generator=torch.Generator().manual_seed(3))
        (hidden * weights).sum().backward()
        grads = {n: p.grad for n, p in model.embeddings.named_parameters()}
        return hidden.detach(), grads

    got, expected = step(copied, compiled), step(eager, eager)
    torch.testing.assert_close(got[0], expected[0], rtol=0, atol=1e-5)
    assert set(got[1]) == set(expected[1]) and all(g is not None for g in expected[1].values())
    for parameter, grad in expected[1].items():
        # Through the encoder the gradients reach the hundreds, and the compiled encoder
        # rounds its float32 matmuls differently (by ulps): 1e-5 relative to 1 + |eager|,
        # as tests/test_families.py compares gradients.
        excess = ((got[1][parameter] - grad).abs() / (1 + grad.abs())).max().item()
        assert excess <= 1e-5, f"{parameter}.grad: largest relative difference {excess}"


# torch.export: the drop-in for inference.


@pytest.mark.parametrize("grad", [True, False], ids=["grad-enabled", "no-grad"])
@pytest.mark.parametrize("name", ["bert", "roberta", "distilbert"])
def test_exported_drop_in_equals_eager(name, grad):
    drop_in = BertEmbeddings.from_hf(tiny_model(name).embeddings).eval()
    ids = _ids()
    with torch.set_grad_enabled(grad):
        exported = torch.export.export(drop_in, (ids,))
    assert "bert_embedding_kernels.embed" in exported.graph_module.code
    with torch.no_grad():
        for seed in (0, 4):  # the traced call and other ids of its shape
            ids = _ids(seed)
            expected = drop_in(ids)
            torch.testing.assert_close(exported.module()(ids), expected, rtol=0, atol=0)


@pytest.mark.parametrize("name", ["bert", "roberta"])
def test_exported_with_dynamic_batch_and_length(name):
    drop_in = BertEmbeddings.from_hf(tiny_model(name).embeddings).eval()
    batch, seq = torch.export.Dim("batch", min=2), torch.export.Dim("seq", min=2, max=60)
    exported = torch.export.export(drop_in, (_ids(),), dynamic_shapes=(({0: batch, 1: seq},),))
    with torch.no_grad():
        for ids in (_ids(seed=5)[:2, :7], torch.cat([_ids(seed=6, seq=20)] * 3)):
            torch.testing.assert_close(exported.module()(ids), drop_in(ids), rtol=0, atol=0)
