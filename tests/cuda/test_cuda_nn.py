"""The PyTorch drop-in on CUDA tensors: forward and backward through the device kernels.

These need torch with CUDA and a GPU (numba's simulator cannot read torch's GPU
memory), so they are skipped elsewhere and run by ``scripts/device_run.sh``
(step ``tests``) on the lent GPU machine; docs/GPU.md has the last run.

- ``torch.autograd.gradcheck`` in float64 on CUDA, with shared and per-sequence positions;
- a small BERT with its embeddings replaced by the drop-in: the same outputs as
  transformers and the same gradients of all five parameters over two SGD steps;
- the same results as the CPU path, on torch's current stream (a side stream too);
- in-place parameter updates are seen; padding_idx; the errors a user meets;
- every family of tests/test_families.py: the CUDA layouts equal transformers on CUDA over
  two SGD steps, the others are refused with NotImplementedError.
"""

import copy

import numpy as np
import pytest

torch = pytest.importorskip("torch")
if not torch.cuda.is_available():
    pytest.skip("torch has no CUDA device here (runs on the GPU machine)", allow_module_level=True)
kc = pytest.importorskip("bert_embedding_kernels.cuda")
if kc.SIMULATOR:
    pytest.skip("numba's CUDA simulator cannot read torch's GPU memory", allow_module_level=True)

from bert_embedding_kernels.nn import BertEmbeddings  # noqa: E402
from bert_embedding_kernels.nn.cuda import FusedEmbeddings  # noqa: E402

PARAMETERS = (
    "word_embeddings.weight",
    "token_type_embeddings.weight",
    "position_embeddings.weight",
    "LayerNorm.weight",
    "LayerNorm.bias",
)
CUDA = torch.device("cuda")


def small_module(dtype=torch.float64, pad=0, device=CUDA):
    torch.manual_seed(0)
    module = BertEmbeddings(50, 9, 16, 3, hidden_dropout_prob=0.0, pad_token_id=pad, dtype=dtype)
    with torch.no_grad():  # a LayerNorm that is not the identity, so its gradients matter
        module.LayerNorm.weight.uniform_(0.5, 1.5)
        module.LayerNorm.bias.uniform_(-0.5, 0.5)
    return module.to(device)


@pytest.mark.parametrize("shared_positions", [True, False])
def test_gradcheck_float64_on_cuda(shared_positions):
    module = small_module()
    ids = torch.randint(1, 50, (3, 5), device=CUDA)
    types = torch.randint(0, 3, (3, 5), device=CUDA)
    positions = (
        torch.arange(5, device=CUDA)[None]
        if shared_positions
        else torch.randint(0, 16, (3, 5), device=CUDA)
    )
    named = dict(module.named_parameters())
    order = [named[name].detach().clone().requires_grad_() for name in PARAMETERS]

    def function(word, segment, position, weight, bias):
        return FusedEmbeddings.apply(
            ids, types, positions, None, {}, word, segment, position, weight, bias, 1e-12, None
        )

    assert torch.autograd.gradcheck(function, order)


def test_padding_row_gets_no_gradient():
    module = small_module(torch.float32, pad=7)
    ids = torch.randint(1, 50, (2, 6), device=CUDA)
    ids[0, :2] = 7
    module(ids).sum().backward()
    grad = module.word_embeddings.weight.grad
    assert torch.all(grad[7] == 0) and grad.abs().sum() > 0


def step(module, ids, types, weights):
    module.zero_grad(set_to_none=True)
    out = module(input_ids=ids, token_type_ids=types)
    (out * weights).sum().backward()
    return out.detach(), {n: p.grad.detach().clone() for n, p in module.named_parameters()}


def test_cuda_matches_the_cpu_path():
    cpu, gpu = small_module(torch.float64, device="cpu"), small_module(torch.float64)
    ids, types = torch.randint(1, 50, (3, 7)), torch.randint(0, 3, (3, 7))
    weights = torch.randn(3, 7, 9, dtype=torch.float64)
    out_cpu, grads_cpu = step(cpu, ids, types, weights)
    out_gpu, grads_gpu = step(gpu, ids.to(CUDA), types.to(CUDA), weights.to(CUDA))
    torch.testing.assert_close(out_gpu.cpu(), out_cpu, rtol=0, atol=1e-12)
    for name in PARAMETERS:
        torch.testing.assert_close(grads_gpu[name].cpu(), grads_cpu[name], rtol=0, atol=1e-12)


def test_a_side_stream_gives_the_default_streams_results():
    module = small_module(torch.float32)
    ids, types = torch.randint(1, 50, (4, 8), device=CUDA), torch.randint(0, 3, (4, 8), device=CUDA)
    weights = torch.randn(4, 8, 9, device=CUDA)
    expected = step(module, ids, types, weights)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        got = step(module, ids, types, weights)
    torch.cuda.current_stream().wait_stream(side)
    torch.testing.assert_close(got[0], expected[0], rtol=0, atol=0)
    for name in PARAMETERS:
        torch.testing.assert_close(got[1][name], expected[1][name], rtol=0, atol=0)


def test_an_in_place_update_is_seen():
    module = small_module(torch.float32)
    ids = torch.randint(1, 50, (2, 5), device=CUDA)
    before = module(ids)  # warms the module's cached device views
    with torch.no_grad():
        module.word_embeddings.weight[ids[0, 0]] += 100.0
        module.LayerNorm.bias += 1.0
    after = module(ids)
    reference = copy.deepcopy(module).cpu()
    torch.testing.assert_close(after.cpu(), reference(ids.cpu()), rtol=0, atol=1e-5)
    assert not torch.allclose(before, after)


def test_errors_on_cuda_read_as_on_the_cpu():
    module = small_module(torch.float32)
    with pytest.raises(IndexError, match="input_ids"):
        module(torch.tensor([[1, 2, 50]], device=CUDA))
    with pytest.raises(TypeError, match="float32 or float64"):
        small_module(torch.bfloat16)(torch.tensor([[1, 2]], device=CUDA))


def test_small_bert_with_the_drop_in_over_two_sgd_steps():
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(
        vocab_size=300,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        pad_token_id=0,
    )
    torch.manual_seed(0)
    reference = transformers.BertModel(config).to(CUDA).eval()
    swapped = copy.deepcopy(reference)
    swapped.embeddings = BertEmbeddings.from_hf(swapped.embeddings).to(CUDA)
    generator = torch.Generator().manual_seed(3)
    ids = torch.randint(0, 300, (3, 24), generator=generator).to(CUDA)
    ids[:, -4:] = 0  # padding
    types = torch.randint(0, 2, (3, 24), generator=generator).to(CUDA)
    target = torch.randn(3, 24, 64, generator=generator).to(CUDA)
    optimizers = [torch.optim.SGD(m.parameters(), lr=0.5) for m in (reference, swapped)]
    for _ in range(2):
        results = []
        for model, optimizer in zip((reference, swapped), optimizers, strict=True):
            optimizer.zero_grad()
            out = model(input_ids=ids, token_type_ids=types).last_hidden_state
            ((out - target) ** 2).mean().backward()
            grads = {n: p.grad.clone() for n, p in model.embeddings.named_parameters()}
            results.append((out.detach(), grads))
            optimizer.step()
        torch.testing.assert_close(results[1][0], results[0][0], rtol=0, atol=1e-4)
        for name in PARAMETERS:
            expected, got = results[0][1][name], results[1][1][name]
            scale = expected.abs().max().item()
            torch.testing.assert_close(got, expected, rtol=0, atol=1e-4 * scale + 1e-9)
    assert np.isfinite(results[1][0].cpu().numpy()).all()


def _runs_on_cuda(module) -> bool:
    """The layouts the CUDA kernels compute (nn.BertEmbeddings._sum_ids): token types,
    positions and LayerNorm right after the sum; the others are refused on CUDA."""
    return (
        all(
            getattr(module, name, None) is not None
            for name in ("token_type_embeddings", "position_embeddings", "LayerNorm")
        )
        and getattr(module, "embed_proj", None) is None
    )


def _family_names():
    from test_families import SUPPORTED  # tests/: the tiny models of every family

    return list(SUPPORTED)


@pytest.mark.parametrize("name", _family_names())
def test_every_family_on_cuda_equals_transformers_or_is_refused(name):
    from test_families import _calls, _close, tiny_model

    reference = tiny_model(name, torch.float64).embeddings
    drop_in = BertEmbeddings.from_hf(copy.deepcopy(reference))  # trained side by side
    calls = [
        (label, {k: v.to(CUDA) if torch.is_tensor(v) else v for k, v in kwargs.items()})
        for label, kwargs in _calls(reference, name)
    ]
    reference.to(CUDA)
    drop_in.to(CUDA)
    if not _runs_on_cuda(reference):
        with pytest.raises(NotImplementedError, match=r"drop-in runs on CPU tensors"):
            drop_in(**calls[0][1])
        return
    optimizers = [torch.optim.SGD(m.parameters(), lr=0.5) for m in (reference, drop_in)]
    weights = None
    for label, kwargs in calls[:2]:
        grads = []
        for module, optimizer in zip((reference, drop_in), optimizers, strict=True):
            optimizer.zero_grad()
            out = module(**kwargs)
            if weights is None:
                weights = torch.randn(out.shape, dtype=out.dtype, device=CUDA)
            (out * weights).sum().backward()
            grads.append({n: p.grad for n, p in module.named_parameters() if p.grad is not None})
            optimizer.step()
        assert grads[1].keys() == grads[0].keys(), name
        for parameter, expected in grads[0].items():
            _close(grads[1][parameter], expected, torch.float64, f"{name} {label}: {parameter}")
