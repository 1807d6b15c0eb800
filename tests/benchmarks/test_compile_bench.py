"""pytest-benchmark: inference of the embedding layer under ``torch.compile``, the drop-in
against transformers'.

Rows: transformers' ``BertEmbeddings`` compiled (inductor fuses the three gathers, the sum
and LayerNorm into one loop) and ``bert_embedding_kernels.nn.BertEmbeddings`` compiled (its
registered operator, bert_embedding_kernels.nn.ops, called from the compiled graph).
Eval mode, no grad. Timed at BERT-base (batch 32 x seq 512, hidden 768, vocab 30522); a
plain ``pytest`` runs each once, untimed, at the CI shape (tests/conftest.py), which still
compiles both. Each output is checked against transformers' eager module before anything
is timed, so a wrong answer is never timed.

    pytest tests/benchmarks/test_compile_bench.py --benchmark-only
"""

import copy

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from bert_embedding_kernels.bench.engine import cases  # noqa: E402
from bert_embedding_kernels.nn import BertEmbeddings  # noqa: E402

CONTENDERS = ["transformers-compile", "bert_embedding_kernels.nn-compile"]


def _hf_module(shape: cases.Shape):
    config = transformers.BertConfig(
        vocab_size=shape.vocab,
        hidden_size=shape.hidden,
        max_position_embeddings=shape.max_positions,
        type_vocab_size=shape.type_vocab,
    )
    torch.manual_seed(0)
    return transformers.models.bert.modeling_bert.BertEmbeddings(config).eval()


def _inputs(shape: cases.Shape):
    """Ids and token types as bench.engine.cases.make_inputs draws them (without its tables)."""
    rng = np.random.default_rng(0)
    input_ids = rng.integers(0, shape.vocab, size=(shape.batch, shape.seq), dtype=np.int64)
    token_type_ids = np.zeros((shape.batch, shape.seq), dtype=np.int64)
    token_type_ids[:, shape.seq // 2 :] = min(1, shape.type_vocab - 1)
    return {
        "input_ids": torch.from_numpy(input_ids),
        "token_type_ids": torch.from_numpy(token_type_ids),
    }


@pytest.mark.parametrize("name", CONTENDERS)
def test_compiled_inference(benchmark, name):
    shape = cases.CI_BASE if benchmark.disabled else cases.BERT_BASE
    reference = _hf_module(shape)
    module = (
        reference
        if name == "transformers-compile"
        else BertEmbeddings.from_hf(copy.deepcopy(reference))
    )
    inputs = _inputs(shape)
    torch._dynamo.reset()
    compiled = torch.compile(module)

    def forward():
        with torch.no_grad():
            return compiled(**inputs)

    with torch.no_grad():
        expected = reference(**inputs)
    got = forward()  # compiles; also the warm-up
    # LayerNorm statistics in float32 (torch, inductor) or float64 (the kernels).
    torch.testing.assert_close(
        got, expected, rtol=0, atol=1e-5 * max(1.0, expected.abs().max().item())
    )
    benchmark.group = f"compiled inference {shape.name}"
    benchmark.extra_info["method"] = name
    benchmark(forward)
    torch._dynamo.reset()
