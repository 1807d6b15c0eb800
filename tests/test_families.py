"""The drop-in across the BERT family: every supported class reproduces transformers', every
other is refused (issue 29).

For each supported family a tiny random model is built offline from its config; its
embeddings module is swapped for ``BertEmbeddings.from_hf(module)`` and both are called
the family's own way: padding in the batch, token types where the family has them, given
``position_ids``, ``inputs_embeds``, a past length where the family's call takes one,
DeBERTa's mask. Outputs and the parameter gradients over two SGD steps must equal
transformers' (float32 within 1e-5, float64 within 1e-12: the kernels add in another
order than some families, so the two differ in rounding only). ``EmbeddingTables``
from the module and from a saved checkpoint must reproduce the module with the default
``embed``. Every refused class, and every accepted class holding something it does not
compute, gets a ``TypeError`` naming it.
"""

import copy
import inspect

import numpy as np
import pytest
from optional import require

import bert_embedding_kernels as bek
from bert_embedding_kernels.families import FAMILIES

torch = require("torch")
transformers = require("transformers")

from bert_embedding_kernels.nn import BertEmbeddings  # noqa: E402  (needs torch)

VOCAB, HIDDEN, POSITIONS, PAD = 99, 32, 64, 1
TINY = {
    "vocab_size": VOCAB,
    "hidden_size": HIDDEN,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "intermediate_size": 37,
    "max_position_embeddings": POSITIONS,
    "pad_token_id": PAD,
}
# model_type -> the config's own settings for a tiny model (sizes it names otherwise).
SUPPORTED = {
    "bert": {"type_vocab_size": 3},
    "roberta": {"type_vocab_size": 2},
    "xlm-roberta": {"type_vocab_size": 2},
    "camembert": {},
    "data2vec-text": {"type_vocab_size": 2},
    "roberta-prelayernorm": {},
    "xmod": {"languages": ["en_XX"], "default_language": "en_XX"},
    "xlm-roberta-xl": {},
    "distilbert": {"dim": HIDDEN, "n_layers": 1, "n_heads": 2, "hidden_dim": 37},
    "electra": {"embedding_size": 16},
    "albert": {"embedding_size": 16},
    "convbert": {"embedding_size": 16},
    "rembert": {"input_embedding_size": 16, "output_embedding_size": 16},
    "ernie": {"use_task_id": False},
    "mpnet": {},
    "megatron-bert": {},
    "deberta-v2": {"type_vocab_size": 2},
    "deberta-v3-like": {"position_biased_input": False, "type_vocab_size": 0},
    "deberta-v2-projected": {"embedding_size": 16, "type_vocab_size": 2},
}
MODEL_TYPE = {"deberta-v3-like": "deberta-v2", "deberta-v2-projected": "deberta-v2"}


def tiny_config(name: str, **settings):
    """A tiny config of the family ``name`` (a key of SUPPORTED), ``settings`` on top."""
    model_type = MODEL_TYPE.get(name, name)
    settings = {**TINY, **SUPPORTED.get(name, {}), **settings}
    config = transformers.AutoConfig.for_model(model_type)
    for key, value in settings.items():
        if key in type(config).attribute_map or hasattr(config, key):
            setattr(config, key, value)
    return config


def tiny_model(name: str, dtype=torch.float32):
    torch.manual_seed(0)
    model = transformers.AutoModel.from_config(tiny_config(name)).to(dtype)
    return model.eval()  # dropout off: outputs and gradients are deterministic


def _inputs(module, seed=0):
    rng = np.random.default_rng(seed)
    ids = torch.tensor(rng.integers(3, VOCAB, (3, 9)))
    ids[1, 6:] = PAD  # padding at the end of one sequence
    ids[2, 0] = PAD  # and a padding token inside another
    return ids


def _calls(reference, name):
    """The family's own calls: (label, kwargs) in the parameters its forward names."""
    params = inspect.signature(type(reference).forward).parameters
    ids = _inputs(reference)
    types_rows = getattr(getattr(reference, "token_type_embeddings", None), "num_embeddings", 0)
    calls = [("ids", {"input_ids": ids})]
    if "token_type_ids" in params and types_rows > 1:
        types = torch.tensor(np.random.default_rng(1).integers(0, types_rows, ids.shape))
        calls.append(("token types", {"input_ids": ids, "token_type_ids": types}))
    if "position_ids" in params and getattr(reference, "position_embeddings", None) is not None:
        positions = torch.tensor(np.random.default_rng(2).integers(2, POSITIONS, ids.shape))
        calls.append(("position ids", {"input_ids": ids, "position_ids": positions}))
    past = next((p for p in ("cache_length", "past_key_values_length") if p in params), None)
    if past:
        calls.append(("past length", {"input_ids": ids, past: 5}))
    if "mask" in params:
        mask = (ids != PAD).long()
        calls.append(("mask", {"input_ids": ids, "mask": mask}))
    return calls


def _embeds_call(reference):
    ids = _inputs(reference)
    with torch.no_grad():
        embeds = reference.word_embeddings(ids) * 1.5
    return {"input_ids": None, "inputs_embeds": embeds}


TOLERANCE = {torch.float32: 1e-5, torch.float64: 1e-12}


def _close(a, b, dtype, what):
    """Within the dtype's tolerance, relative to 1 + |expected|: gradients sum many
    tokens' terms in another order than torch (up to tens here), so a fixed absolute
    bound would ask float32 for more digits than it has (one ulp at 64 is 7.6e-6)."""
    excess = ((a - b).abs() / (1 + b.abs())).max().item()
    assert excess <= TOLERANCE[dtype], f"{what}: largest relative difference {excess}"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("name", SUPPORTED)
def test_outputs_equal_transformers(name, dtype):
    reference = tiny_model(name, dtype).embeddings
    drop_in = BertEmbeddings.from_hf(copy.deepcopy(reference))  # trained side by side
    with torch.no_grad():
        for label, kwargs in [*_calls(reference, name), ("inputs_embeds", _embeds_call(reference))]:
            _close(drop_in(**kwargs), reference(**kwargs), dtype, f"{name}, {label}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("name", SUPPORTED)
def test_gradients_over_two_sgd_steps_equal_transformers(name, dtype):
    reference = tiny_model(name, dtype).embeddings
    drop_in = BertEmbeddings.from_hf(copy.deepcopy(reference))  # trained side by side
    modules = {"transformers": reference, "drop-in": drop_in}
    optimizers = {k: torch.optim.SGD(m.parameters(), lr=0.5) for k, m in modules.items()}
    calls = _calls(reference, name)
    width = reference.word_embeddings.embedding_dim
    if getattr(reference, "embed_proj", None) is not None:
        width = reference.embed_proj.out_features
    weights = torch.randn(3, 9, width, dtype=dtype, generator=torch.Generator().manual_seed(3))
    for step in range(2):
        label, kwargs = calls[-1 if step else min(1, len(calls) - 1)]
        grads = {}
        for key, module in modules.items():
            optimizers[key].zero_grad()
            (module(**kwargs) * weights).sum().backward()
            grads[key] = {n: p.grad for n, p in module.named_parameters() if p.grad is not None}
            optimizers[key].step()
        assert grads["drop-in"].keys() == grads["transformers"].keys(), name
        for parameter, expected in grads["transformers"].items():
            got = grads["drop-in"][parameter]
            _close(got, expected, dtype, f"{name} step {step} ({label}): {parameter}.grad")
    state = drop_in.state_dict()
    for parameter, expected in reference.state_dict().items():
        if parameter in state:
            _close(state[parameter], expected, dtype, f"{name}: {parameter} after two steps")


@pytest.mark.parametrize("name", [n for n in SUPPORTED if n != "deberta-v2-projected"])
def test_tables_from_the_module_reproduce_it_by_default(name):
    reference = tiny_model(name).embeddings
    tables = bek.EmbeddingTables.from_torch(reference)
    for label, kwargs in _calls(reference, name):
        if "cache_length" in kwargs or "past_key_values_length" in kwargs:
            continue
        arrays = {k: v.numpy() for k, v in kwargs.items()}
        arrays["attention_mask"] = arrays.pop("mask", None)
        with torch.no_grad():
            expected = reference(**kwargs).numpy()
        got = bek.embed(tables, **arrays)  # default layer_norm: the module's
        assert np.abs(got - expected).max() <= 1e-5, f"{name}, {label}"


@pytest.mark.parametrize("name", [n for n in SUPPORTED if n != "deberta-v2-projected"])
def test_tables_from_a_saved_checkpoint_reproduce_the_model(name, tmp_path):
    model = tiny_model(name)
    model.save_pretrained(tmp_path, safe_serialization=True)
    tables = bek.EmbeddingTables.from_safetensors(tmp_path)
    ids = _inputs(model.embeddings)
    with torch.no_grad():
        expected = model.embeddings(input_ids=ids).numpy()
    assert np.abs(bek.embed(tables, ids.numpy()) - expected).max() <= 1e-5, name
    assert tables.family == next(
        f.name for f in FAMILIES if MODEL_TYPE.get(name, name) in f.model_types
    )


def test_a_swapped_roberta_encoder_gives_the_same_last_hidden_state():
    model = tiny_model("roberta", torch.float64)
    swapped = copy.deepcopy(model)
    swapped.embeddings = BertEmbeddings.from_hf(swapped.embeddings)
    ids = _inputs(model.embeddings)
    mask = (ids != PAD).long()
    with torch.no_grad():
        expected = model(input_ids=ids, attention_mask=mask).last_hidden_state
        got = swapped(input_ids=ids, attention_mask=mask).last_hidden_state
    _close(got, expected, torch.float64, "RoBERTa last_hidden_state")


def test_roberta_positions_count_non_padding_tokens():
    # Computed independently of transformers: pad = 1, positions start at 2.
    tables = bek.EmbeddingTables(
        np.zeros((10, 1), np.float32),
        None,
        np.arange(12, dtype=np.float32)[:, None],
        position_rule="after_padding",
        padding_idx=1,
    )
    ids = np.array([[5, 6, 1, 7], [1, 1, 4, 4]])
    assert bek.embed(tables, ids)[..., 0].tolist() == [[2, 3, 1, 4], [1, 1, 2, 3]]
    assert bek.embed(tables, ids, past_length=3)[..., 0].tolist() == [[5, 6, 1, 7], [1, 1, 5, 6]]


def test_positions_past_the_table_are_an_index_error():
    tables = bek.EmbeddingTables(
        np.zeros((10, 1), np.float32),
        None,
        np.zeros((5, 1), np.float32),
        position_rule="after_padding",
        padding_idx=1,
    )
    bek.embed(tables, np.array([[5, 6, 7, 1]]))  # positions 2, 3, 4, 1: the last row is 4
    with pytest.raises(IndexError, match=r"position_ids\[0, 3\] .* is 5, out of range"):
        bek.embed(tables, np.array([[5, 6, 7, 8]]))


@pytest.mark.parametrize(
    ("dtype", "bad"),
    [
        (np.int64, 10),
        (np.int64, -1),
        (np.int32, 10),
        (np.int32, -1),
        (np.uint16, 10),
        (np.int8, -1),
    ],
)
def test_roberta_ids_are_range_checked_while_positions_are_numbered(dtype, bad):
    # the rule's pass over the ids is also their range check: the same IndexError
    tables = bek.EmbeddingTables(
        np.zeros((10, 1), np.float32),
        None,
        np.zeros((12, 1), np.float32),
        position_rule="after_padding",
        padding_idx=1,
    )
    ids = np.array([[5, 6, 1, 7], [1, 1, 4, bad]], dtype=dtype)
    with pytest.raises(IndexError, match=rf"input_ids\[1, 3\] .* is {bad}, out of range"):
        bek.embed(tables, ids)
    ids[1, 3] = 9  # the last valid row
    assert bek.embed(tables, ids).shape == (2, 4, 1)


# ---- refused ---------------------------------------------------------------------------

REFUSED = {
    "layoutlm": {},
    "mobilebert": {"embedding_size": 16},
    "roformer": {},
    "nystromformer": {},
    "yoso": {},
    "deberta": {},
    "big_bird": {},
    "bert-generation": {},
    "luke": {"entity_vocab_size": 10, "entity_emb_size": 8},
    "splinter": {},
    "markuplm": {},
    "roc_bert": {},
    "lilt": {},
}


@pytest.mark.parametrize("name", REFUSED)
def test_other_families_are_refused_naming_the_class(name):
    config = transformers.AutoConfig.for_model(name)
    for key, value in {**TINY, **REFUSED[name]}.items():
        if hasattr(config, key):
            setattr(config, key, value)
    module = transformers.AutoModel.from_config(config).embeddings
    cls = type(module).__name__
    with pytest.raises(TypeError, match=rf"^{cls} is not supported"):
        BertEmbeddings.from_hf(module)
    with pytest.raises(TypeError, match=rf"^{cls} is not supported"):
        bek.EmbeddingTables.from_torch(module)


def _bert_embeddings():
    return tiny_model("bert").embeddings


def test_an_extra_table_is_refused():
    module = _bert_embeddings()
    module.task_type_embeddings = torch.nn.Embedding(3, HIDDEN)
    with pytest.raises(TypeError, match=r"BertEmbeddings \(BERT\).*extra submodules "):
        BertEmbeddings.from_hf(module)


def test_a_subclass_is_refused():
    class Scaled(transformers.models.bert.modeling_bert.BertEmbeddings):
        def forward(self, *args, **kwargs):
            return 2 * super().forward(*args, **kwargs)

    module = Scaled(tiny_model("bert").config)
    with pytest.raises(TypeError, match=r"^Scaled is not supported"):
        BertEmbeddings.from_hf(module)


def test_ernie_with_task_types_is_refused():
    config = transformers.AutoConfig.for_model("ernie", **TINY, use_task_id=True)
    module = transformers.AutoModel.from_config(config).embeddings
    with pytest.raises(TypeError, match=r"task-type embeddings"):
        BertEmbeddings.from_hf(module)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda m: setattr(m.word_embeddings, "max_norm", 1.0), "max_norm"),
        (lambda m: m.position_ids.add_(1), "position_ids buffer"),
        (lambda m: m.token_type_ids.fill_(1), "token_type_ids buffer"),
        (lambda m: setattr(m, "LayerNorm", torch.nn.LayerNorm(HIDDEN, bias=False)), "LayerNorm"),
        (lambda m: setattr(m, "LayerNorm", torch.nn.RMSNorm(HIDDEN)), "LayerNorm is"),
        (lambda m: m.register_buffer("scale", torch.ones(1)), "buffers"),
    ],
)
def test_a_module_holding_what_the_kernels_do_not_compute_is_refused(change, message):
    module = _bert_embeddings()
    change(module)
    with pytest.raises(TypeError, match=message):
        BertEmbeddings.from_hf(module)


def test_an_unknown_checkpoint_family_is_refused_naming_model_type(tmp_path):
    config = transformers.AutoConfig.for_model("roformer", **TINY)
    transformers.AutoModel.from_config(config).save_pretrained(tmp_path)
    with pytest.raises(TypeError, match=r"model_type 'roformer' is not supported"):
        bek.EmbeddingTables.from_safetensors(tmp_path)


def test_every_supported_family_has_a_test():
    tested = {MODEL_TYPE.get(n, n) for n in SUPPORTED}
    assert tested == {t for f in FAMILIES for t in f.model_types}
