"""pytest-benchmark: one training step of the embedding layer, the drop-in against transformers'.

A step is forward, a loss, backward (gradients of all five parameters). Rows:
``bert_embedding_kernels.nn.BertEmbeddings`` (fused kernels), transformers' ``BertEmbeddings``
in eager mode and under ``torch.compile`` (``--bench-full`` only: it compiles
for a while). The drop-in's gradients are checked against transformers' before
anything is timed, so a wrong answer is never timed.

    pytest tests/benchmarks/test_nn_bench.py --benchmark-enable --benchmark-only
"""

import copy

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from bert_embedding_kernels.bench.engine import cases  # noqa: E402
from bert_embedding_kernels.nn import BertEmbeddings  # noqa: E402

SHAPE = cases.CI_BASE  # batch 4 x seq 128, hidden 256, vocab 8000


def _hf_module():
    config = transformers.BertConfig(
        vocab_size=SHAPE.vocab,
        hidden_size=SHAPE.hidden,
        max_position_embeddings=SHAPE.max_positions,
        type_vocab_size=SHAPE.type_vocab,
        hidden_dropout_prob=0.0,
    )
    torch.manual_seed(0)
    return transformers.models.bert.modeling_bert.BertEmbeddings(config).eval()


# A loss whose gradient is not mostly cancellation: a fixed random projection.
WEIGHTS = torch.randn(
    SHAPE.batch, SHAPE.seq, SHAPE.hidden, generator=torch.Generator().manual_seed(1)
)


def _step(module, input_ids, token_type_ids):
    module.zero_grad(set_to_none=False)
    out = module(input_ids=input_ids, token_type_ids=token_type_ids)
    (out * WEIGHTS).sum().backward()
    return {name: p.grad for name, p in module.named_parameters()}


def _inputs():
    _, input_ids, token_type_ids = cases.make_inputs(SHAPE)
    return torch.from_numpy(input_ids), torch.from_numpy(token_type_ids)


def _contenders(full: bool):
    reference = _hf_module()
    contenders = {
        "bert_embedding_kernels.nn": BertEmbeddings.from_hf(copy.deepcopy(reference)),
        "transformers-eager": reference,
    }
    if full:
        contenders["transformers-compile"] = torch.compile(copy.deepcopy(reference))
    return reference, contenders


@pytest.mark.parametrize(
    "name", ["bert_embedding_kernels.nn", "transformers-eager", "transformers-compile"]
)
def test_training_step(benchmark, request, name):
    full = request.config.getoption("--bench-full")
    if name == "transformers-compile" and not full:
        pytest.skip("torch.compile of the module: only with --bench-full (slow to compile)")
    reference, contenders = _contenders(full)
    input_ids, token_type_ids = _inputs()
    expected = {k: g.clone() for k, g in _step(reference, input_ids, token_type_ids).items()}
    got = _step(contenders[name], input_ids, token_type_ids)  # also the warm-up
    for key, value in expected.items():
        # float32 both sides; orders of summation and LayerNorm precision differ.
        torch.testing.assert_close(got[key], value, rtol=0, atol=1e-5 * value.abs().max().item())
    benchmark.group = f"training step {SHAPE.name}"
    benchmark.extra_info["method"] = name
    benchmark(_step, contenders[name], input_ids, token_type_ids)
