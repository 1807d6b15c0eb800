"""What the layer's speed is worth in a whole model (issue 39, item 6).

A user deciding whether to adopt the drop-in reads this first: the embeddings are one
layer of many, so a layer several times faster may buy little end to end. Two workloads,
each run plain and with the drop-in (:func:`bert_embedding_kernels.nn.patch` of a copy of
the same model), and each model's embeddings layer alone at the same inputs, all timed in
the same interleaved rounds, so that a speedup and the layer's share of the whole are
ratios from one run:

- the shipped all-MiniLM-L6-v2 (the ``real`` extra) through sentence-transformers'
  ``encode``, tokenizing included, as an application calls it: 24 short sentences (the
  corpus's lines), and 32 texts of 200 tokens each;
- a BERT-base masked-LM training step (``BertForMaskedLM``, random weights, dropout 0, its
  decoder tied to the word embeddings, 15% of the tokens masked): ``zero_grad``, forward,
  ``loss.backward()``, AdamW's step, at batch 2 x 128 (a whole BERT-base step takes about a
  second on a 2-core machine; a larger batch grows the rest of the model and the layer
  alike, except the word gradient's fixed 94 MB).

Each pair is checked before it is timed (encodings within 1e-5, the step's loss and word
gradient within 1e-5 of the plain model's). Where sentence-transformers, the MiniLM
package, torch or transformers is missing, those figures read "not measured".
"""

from __future__ import annotations

import copy

import numpy as np

from ..engine.cases import zipf_ids
from .figure import Figure

MLM_BATCH, MLM_SEQ = 2, 128
LONG_TEXTS, LONG_TOKENS = 32, 200
SHORT_SENTENCES = 24

PLAIN, DROP_IN = "transformers", "drop-in"
SHORT = "MiniLM encode, 24 short sentences"
LONG = f"MiniLM encode, {LONG_TEXTS} x {LONG_TOKENS} tokens"
LONG_LAYER = f"MiniLM embeddings alone, {LONG_TEXTS} x {LONG_TOKENS} tokens"
STEP = f"BERT-base MLM training step, {MLM_BATCH} x {MLM_SEQ}"
STEP_LAYER = f"BERT-base embeddings step alone, {MLM_BATCH} x {MLM_SEQ}"


def name(workload: str, variant: str) -> str:
    return f"{workload} ({variant})"


_SPEEDUP = "without / with the drop-in, the same model and inputs"
_SHARE = "the embeddings layer alone / the whole, same inputs: what the layer can buy"
FIGURES = (
    *(
        Figure(f"{work}: {PLAIN} / {DROP_IN}", name(work, PLAIN), name(work, DROP_IN), "", note)
        for work, note in (
            (SHORT, _SPEEDUP + " (sentence-transformers' encode, tokenizing included)"),
            (LONG, _SPEEDUP),
            (STEP, _SPEEDUP + " (zero_grad, forward, backward, AdamW)"),
        )
    ),
    *(
        Figure(f"{whole}: the embeddings' share ({v})", name(part, v), name(whole, v), "", _SHARE)
        for whole, part in ((LONG, LONG_LAYER), (STEP, STEP_LAYER))
        for v in (PLAIN, DROP_IN)
    ),
)


def _minilm_calls(torch) -> dict:
    """encode, plain and patched, at both sizes; and the embeddings layer alone."""
    try:
        import sentence_transformers

        from ...nn import patch
        from ..engine.realdata import corpus_lines, minilm_path

        path = str(minilm_path())
    except ImportError:
        return {}
    plain = sentence_transformers.SentenceTransformer(path, device="cpu")
    swapped = copy.deepcopy(plain)
    patch(swapped)
    lines = list(corpus_lines())
    short = lines[:SHORT_SENTENCES]
    # Texts long enough to fill LONG_TOKENS once truncated there: every row the same length.
    words = " ".join(lines).split()
    long = [" ".join(words[i * 40 : i * 40 + 400]) for i in range(LONG_TEXTS)]
    calls = {}
    for model, variant in ((plain, PLAIN), (swapped, DROP_IN)):
        model.max_seq_length = LONG_TOKENS
        model.eval()
        for workload, texts in ((SHORT, short), (LONG, long)):
            calls[name(workload, variant)] = _encoder(model, texts)
        # sentence-transformers 5.x calls it tokenize; 6.x preprocess (tokenize deprecated)
        features = getattr(model, "preprocess", model.tokenize)(long)
        shape = tuple(features["input_ids"].shape)
        assert shape == (LONG_TEXTS, LONG_TOKENS), f"{LONG}: tokenized to {shape}"
        layer = model[0].auto_model.embeddings
        calls[name(LONG_LAYER, variant)] = _layer_call(torch, layer, features)
    for workload in (SHORT, LONG):
        expected = calls[name(workload, PLAIN)]()
        got = calls[name(workload, DROP_IN)]()
        difference = float(np.max(np.abs(got - expected)))
        if difference > 1e-5:
            raise AssertionError(f"{workload}: the drop-in differs by {difference:.3g}; not timed")
    return calls


def _encoder(model, texts):
    def encode():
        return model.encode(texts, batch_size=len(texts), convert_to_numpy=True)

    return encode


def _layer_call(torch, layer, features):
    ids, types = features["input_ids"], features["token_type_ids"]

    def embeddings():
        with torch.inference_mode():
            return layer(input_ids=ids, token_type_ids=types)

    return embeddings


def _mlm_batch(torch, vocab: int):
    ids = torch.as_tensor(zipf_ids(vocab, (MLM_BATCH, MLM_SEQ), seed=2))
    masked = torch.as_tensor(np.random.default_rng(3).random(ids.shape) < 0.15)
    labels = torch.where(masked, ids, torch.full_like(ids, -100))
    return {"input_ids": ids, "labels": labels}


def _step_calls(torch, transformers, **sizes) -> dict:
    """The whole model's step and the embeddings layer's own step, plain and patched;
    BERT-base unless ``sizes`` (BertConfig's) say otherwise."""
    from ...nn import patch

    torch.manual_seed(0)
    config = transformers.BertConfig(
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, **sizes
    )
    plain = transformers.BertForMaskedLM(config).train()
    swapped = copy.deepcopy(plain)
    patch(swapped)
    batch = _mlm_batch(torch, config.vocab_size)
    grad = torch.randn(MLM_BATCH, MLM_SEQ, config.hidden_size, generator=torch.Generator())
    _check_step(plain, swapped, batch)
    calls = {}
    for model, variant in ((plain, PLAIN), (swapped, DROP_IN)):
        calls[name(STEP, variant)] = _model_step(torch, model, batch)
        calls[name(STEP_LAYER, variant)] = _layer_step(model.bert.embeddings, batch, grad)
    return calls


def _check_step(plain, swapped, batch) -> None:
    results = []
    for model in (plain, swapped):
        model.zero_grad(set_to_none=True)
        loss = model(**batch).loss
        loss.backward()
        results.append((loss.item(), model.bert.embeddings.word_embeddings.weight.grad.clone()))
        model.zero_grad(set_to_none=True)
    (loss, word), (got_loss, got_word) = results
    difference = max(abs(got_loss - loss), float((got_word - word).abs().max()))
    if difference > 1e-5:
        raise AssertionError(f"{STEP}: the drop-in differs by {difference:.3g}; not timed")


def _model_step(torch, model, batch):
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6)

    def step():
        optimizer.zero_grad(set_to_none=True)
        model(**batch).loss.backward()
        optimizer.step()

    return step


def _layer_step(layer, batch, grad):
    parameters = list(layer.parameters())

    def step():
        for parameter in parameters:
            parameter.grad = None
        layer(input_ids=batch["input_ids"]).backward(grad)

    return step


def calls() -> dict:
    """Every whole-model contender, checked; empty where torch or transformers is missing."""
    try:
        import torch
        import transformers
    except ImportError:
        return {}
    return {**_minilm_calls(torch), **_step_calls(torch, transformers)}
