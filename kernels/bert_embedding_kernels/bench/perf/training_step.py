"""The training step of the embeddings layer at BERT-base, the drop-in against transformers'.

A step is what a training loop does to the layer: ``zero_grad(set_to_none=True)``, the
forward, and ``out.backward(g)`` with a fixed random ``g`` (dense gradients of all five
parameters). Zipf(1.1) token ids, token types half 0 and half 1, dropout 0 (its random
mask is the same cost for every contender and would hide nothing). Contenders:

- ``drop-in step``: :class:`bert_embedding_kernels.nn.BertEmbeddings` (the registered
  operators); ``drop-in step (word table frozen)`` and ``drop-in step (no LayerNorm)``,
  the variants issue 39 names;
- ``transformers eager step``, and under ``torch.compile`` both (``--no-compile`` leaves
  them out: each compiles for a while);
- ``copy``: a parallel copy of the output's bytes, the unit of the bound;
- the drop-in and transformers eager at the short batches of :data:`SHORT_BATCHES`
  (``drop-in step, 1 x 128``), where the fixed costs of a step show.

**The bound** (docs/BACKWARD.md derives it): a step must read the gathered rows and
write the output (one copy of the output's bytes), read the incoming gradient and what
LayerNorm's backward needs, write its result and read it into the scatter, and zero the
word-table gradient and add the rows into it: about :data:`BOUND_COPIES` copies of the
output. Every contender's gradients are checked against transformers' before timing.
"""

from __future__ import annotations

import copy
from dataclasses import replace

import numpy as np

from ..engine.cases import BERT_BASE, zipf_ids
from ..engine.roofline import CopyReference

# The step's bytes in copies of the output (docs/BACKWARD.md has the count).
BOUND_COPIES = 4.3
STEP_FIGURES_TARGETS = {"bound": f"<= {2 * BOUND_COPIES:.1f}", "eager": ">= 5"}
# (batch, seq): the short batches issue 39 names beside BERT-base's 32 x 512.
SHORT_BATCHES = ((1, 128), (8, 128))


def short_name(contender: str, batch: int, seq: int) -> str:
    """A short batch's contender: ``drop-in step, 1 x 128``."""
    return f"{contender}, {batch} x {seq}"


def _inputs(torch, shape):
    ids = torch.as_tensor(zipf_ids(shape.vocab, (shape.batch, shape.seq), seed=0))
    half = shape.seq // 2
    types = torch.tensor([[0] * half + [1] * (shape.seq - half)]).expand(shape.batch, -1)
    generator = torch.Generator().manual_seed(1)
    grad = torch.randn(shape.batch, shape.seq, shape.hidden, generator=generator)
    return ids, types.contiguous(), grad


def _reference(transformers, shape, family="bert"):
    """transformers' module: BERT's, or Megatron-BERT's (the same sum, no LayerNorm)."""
    settings = {
        "vocab_size": shape.vocab,
        "hidden_size": shape.hidden,
        "max_position_embeddings": shape.max_positions,
        "type_vocab_size": shape.type_vocab,
        "hidden_dropout_prob": 0.0,
    }
    if family == "megatron-bert":
        config = transformers.MegatronBertConfig(**settings)
        module = transformers.models.megatron_bert.modeling_megatron_bert
        return module.MegatronBertEmbeddings(config).train()
    config = transformers.BertConfig(**settings)
    return transformers.models.bert.modeling_bert.BertEmbeddings(config).train()


def _stepper(module, ids, types, grad):
    parameters = list(module.parameters())

    def step():
        for parameter in parameters:
            parameter.grad = None
        out = module(input_ids=ids, token_type_ids=types)
        out.backward(grad)
        return {n: p.grad for n, p in module.named_parameters() if p.grad is not None}

    return step


def _check(name, step, expected: dict) -> None:
    got = step()
    for key, value in expected.items():
        if key not in got:
            continue  # a frozen table has no gradient
        scale = float(value.abs().max()) or 1.0
        difference = float((got[key] - value).abs().max())
        if difference > 1e-5 * scale:
            raise AssertionError(f"{name}: {key}.grad differs by {difference:.3g}; not timed")


def calls(include_compile: bool = True, shape=BERT_BASE) -> dict:
    """The step contenders (each checked against transformers') and the copy; the copy
    alone where torch or transformers is not installed (the figures read "not measured")."""
    copy_of_output = CopyReference((shape.batch, shape.seq, shape.hidden), np.float32)
    try:
        import torch
        import transformers

        from ...nn import BertEmbeddings
    except ImportError:
        return {"copy": copy_of_output}

    torch.manual_seed(0)
    inputs = _inputs(torch, shape)
    bert = _reference(transformers, shape)
    no_norm = _reference(transformers, shape, "megatron-bert")
    frozen = BertEmbeddings.from_hf(copy.deepcopy(bert))
    frozen.word_embeddings.weight.requires_grad_(False)
    pairs = {  # name: (module, the transformers module whose gradients it must give, inputs)
        "transformers eager step": (bert, bert, inputs),
        "drop-in step": (BertEmbeddings.from_hf(copy.deepcopy(bert)), bert, inputs),
        "drop-in step (word table frozen)": (frozen, bert, inputs),
        "drop-in step (no LayerNorm)": (
            BertEmbeddings.from_hf(copy.deepcopy(no_norm)),
            no_norm,
            inputs,
        ),
    }
    for batch, seq in SHORT_BATCHES:
        short = replace(shape, batch=batch, seq=seq)
        reference, short_inputs = _reference(transformers, short), _inputs(torch, short)
        drop_in = BertEmbeddings.from_hf(copy.deepcopy(reference))
        pairs[short_name("transformers eager step", batch, seq)] = (
            reference,
            reference,
            short_inputs,
        )
        pairs[short_name("drop-in step", batch, seq)] = (drop_in, reference, short_inputs)
    if include_compile:
        compiled = torch.compile(copy.deepcopy(bert))
        pairs["transformers eager step, compiled"] = (compiled, bert, inputs)
        drop_in = torch.compile(BertEmbeddings.from_hf(copy.deepcopy(bert)))
        pairs["drop-in step, compiled"] = (drop_in, bert, inputs)
    expected = {}
    steps = {}
    for name, (module, reference, given) in pairs.items():
        if id(reference) not in expected:
            gradients = _stepper(reference, *given)()
            expected[id(reference)] = {k: v.clone() for k, v in gradients.items()}
        steps[name] = _stepper(module, *given)
        _check(name, steps[name], expected[id(reference)])  # the warm-up (and compile) too
    steps["copy"] = copy_of_output
    return steps
