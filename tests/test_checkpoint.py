"""EmbeddingTables.from_safetensors on small checkpoints written here.

Each test writes a tiny BERT-style ``model.safetensors`` (and sometimes a
``config.json``) with ``safetensors.numpy.save_file`` and reads it back, so
nothing is downloaded. ``safetensors`` comes with the ``real`` extra, which CI
installs: under CI (``CI`` set) a missing package fails the module instead of
skipping it.
"""

import json
import os

import numpy as np
import pytest

import bert_embedding_kernels as bek

if os.environ.get("CI"):
    import safetensors.numpy as safetensors_numpy  # CI installs the `real` extra
else:
    safetensors_numpy = pytest.importorskip("safetensors.numpy")

VOCAB, TYPES, POSITIONS, HIDDEN = 11, 2, 7, 5


def _tensors(prefix="", norm_names=("weight", "bias"), dtype=np.float32, seed=0) -> dict:
    rng = np.random.default_rng(seed)

    def draw(*shape):
        return rng.standard_normal(shape).astype(dtype)

    weight, bias = norm_names
    return {
        f"{prefix}embeddings.word_embeddings.weight": draw(VOCAB, HIDDEN),
        f"{prefix}embeddings.token_type_embeddings.weight": draw(TYPES, HIDDEN),
        f"{prefix}embeddings.position_embeddings.weight": draw(POSITIONS, HIDDEN),
        f"{prefix}embeddings.LayerNorm.{weight}": draw(HIDDEN),
        f"{prefix}embeddings.LayerNorm.{bias}": draw(HIDDEN),
        # What a real checkpoint holds besides the embeddings: must be ignored.
        f"{prefix}embeddings.position_ids": np.arange(POSITIONS, dtype=np.int64)[None],
        f"{prefix}encoder.layer.0.attention.self.query.weight": draw(HIDDEN, HIDDEN),
    }


def _save(directory, tensors, config=None):
    """The checkpoint and a config.json naming its family (BERT) and ``config``; none
    with ``config=False``."""
    directory.mkdir(parents=True, exist_ok=True)
    safetensors_numpy.save_file(tensors, str(directory / "model.safetensors"))
    if config is not False:
        config = {"model_type": "bert"} | (config or {})
        (directory / "config.json").write_text(json.dumps(config))
    return directory


def _assert_loaded(tables, tensors, prefix="", norm_names=("weight", "bias")):
    assert isinstance(tables, bek.EmbeddingTables)
    np.testing.assert_array_equal(
        tables.token, tensors[f"{prefix}embeddings.word_embeddings.weight"]
    )
    np.testing.assert_array_equal(
        tables.segment, tensors[f"{prefix}embeddings.token_type_embeddings.weight"]
    )
    np.testing.assert_array_equal(
        tables.position, tensors[f"{prefix}embeddings.position_embeddings.weight"]
    )
    weight, bias = norm_names
    np.testing.assert_array_equal(
        tables.norm_weight, tensors[f"{prefix}embeddings.LayerNorm.{weight}"]
    )
    np.testing.assert_array_equal(tables.norm_bias, tensors[f"{prefix}embeddings.LayerNorm.{bias}"])


@pytest.mark.parametrize("prefix", ["", "bert."])
@pytest.mark.parametrize("as_directory", [True, False], ids=["directory", "file"])
def test_loads_with_and_without_the_bert_prefix_from_a_file_or_its_directory(
    tmp_path, prefix, as_directory
):
    tensors = _tensors(prefix)
    directory = _save(tmp_path / "model", tensors)
    path = directory if as_directory else directory / "model.safetensors"
    tables = bek.EmbeddingTables.from_safetensors(path)
    _assert_loaded(tables, tensors, prefix)
    assert tables.norm_eps == 1e-12  # no layer_norm_eps in config.json: BERT's default
    assert (tables.vocab_size, tables.type_vocab_size) == (VOCAB, TYPES)
    assert (tables.max_positions, tables.hidden_size) == (POSITIONS, HIDDEN)


def test_a_str_path_works_too(tmp_path):
    directory = _save(tmp_path, _tensors())
    assert bek.EmbeddingTables.from_safetensors(str(directory)).vocab_size == VOCAB


def test_layer_norm_eps_comes_from_config_json(tmp_path):
    config = {
        "model_type": "bert",
        "vocab_size": VOCAB,
        "type_vocab_size": TYPES,
        "max_position_embeddings": POSITIONS,
        "hidden_size": HIDDEN,
        "layer_norm_eps": 1e-5,
    }
    directory = _save(tmp_path, _tensors(), config)
    for path in (directory, directory / "model.safetensors"):
        assert bek.EmbeddingTables.from_safetensors(path).norm_eps == 1e-5


def test_config_without_eps_keeps_berts_default(tmp_path):
    directory = _save(tmp_path, _tensors(), {"model_type": "bert"})
    assert bek.EmbeddingTables.from_safetensors(directory).norm_eps == 1e-12


@pytest.mark.parametrize("prefix", ["", "bert."])
def test_old_gamma_beta_names_are_read(tmp_path, prefix):
    tensors = _tensors(prefix, norm_names=("gamma", "beta"))
    tables = bek.EmbeddingTables.from_safetensors(_save(tmp_path, tensors))
    _assert_loaded(tables, tensors, prefix, norm_names=("gamma", "beta"))


def test_the_loaded_tables_embed_and_normalise(tmp_path):
    tensors = _tensors()
    tables = bek.EmbeddingTables.from_safetensors(_save(tmp_path, tensors))
    ids = np.array([[1, 4, 10], [0, 2, 3]])
    types = np.array([[0, 0, 1], [0, 1, 1]])
    summed = (
        tensors["embeddings.word_embeddings.weight"][ids]
        + tensors["embeddings.token_type_embeddings.weight"][types]
        + tensors["embeddings.position_embeddings.weight"][np.arange(3)]
    )
    for method in bek.METHODS:
        plain = bek.embed(tables, ids, types, method=method, layer_norm=False)
        np.testing.assert_allclose(plain, summed, 1e-6)
        # a BERT checkpoint's tables normalise by default, as the model's embeddings do
        np.testing.assert_array_equal(
            bek.embed(tables, ids, types, method=method),
            bek.embed(tables, ids, types, method=method, layer_norm=True),
        )
        assert bek.embed(tables, ids, types, method=method, layer_norm=True).shape == (
            2,
            3,
            HIDDEN,
        )


def test_float16_is_kept_as_stored_and_dtype_converts(tmp_path):
    directory = _save(tmp_path, _tensors(dtype=np.float16))
    assert bek.EmbeddingTables.from_safetensors(directory).dtype == np.float16
    assert bek.EmbeddingTables.from_safetensors(directory, dtype=np.float64).dtype == np.float64


def test_float64_checkpoint_stays_float64(tmp_path):
    directory = _save(tmp_path, _tensors(dtype=np.float64))
    assert bek.EmbeddingTables.from_safetensors(directory).dtype == np.float64


def test_the_one_prefix_is_found_and_an_explicit_one_is_used(tmp_path):
    tensors = _tensors("electra.")
    directory = _save(tmp_path, tensors)
    _assert_loaded(bek.EmbeddingTables.from_safetensors(directory), tensors, "electra.")
    _assert_loaded(
        bek.EmbeddingTables.from_safetensors(directory, prefix="electra."), tensors, "electra."
    )
    with pytest.raises(KeyError, match=r"'bert\.embeddings\.word_embeddings\.weight'.*electra"):
        bek.EmbeddingTables.from_safetensors(directory, prefix="bert.")


def test_two_embedding_layers_need_a_prefix(tmp_path):
    directory = _save(tmp_path, _tensors("bert.") | _tensors("electra."))
    with pytest.raises(ValueError, match=r"several embedding layers .*prefix="):
        bek.EmbeddingTables.from_safetensors(directory)


@pytest.mark.parametrize(
    "missing",
    [
        "embeddings.word_embeddings.weight",
        "embeddings.token_type_embeddings.weight",
        "embeddings.position_embeddings.weight",
        "embeddings.LayerNorm.weight",
        "embeddings.LayerNorm.bias",
    ],
)
@pytest.mark.parametrize("prefix", ["", "bert."])
def test_a_missing_key_is_a_key_error_naming_it(tmp_path, missing, prefix):
    tensors = _tensors(prefix)
    del tensors[prefix + missing]
    directory = _save(tmp_path, tensors)
    with pytest.raises(KeyError) as error:
        bek.EmbeddingTables.from_safetensors(directory)
    message = str(error.value)
    # Without the word table there is no prefix to find: the key is named without one.
    named = missing if missing == "embeddings.word_embeddings.weight" else prefix + missing
    assert repr(named) in message, message
    assert not message.startswith('"'), "the message prints as written, not as a repr"


def test_a_missing_layer_norm_names_both_spellings(tmp_path):
    tensors = _tensors()
    del tensors["embeddings.LayerNorm.bias"]
    with pytest.raises(KeyError) as error:
        bek.EmbeddingTables.from_safetensors(_save(tmp_path, tensors))
    assert "'embeddings.LayerNorm.bias' or 'embeddings.LayerNorm.beta'" in str(error.value)


@pytest.mark.parametrize(
    ("key", "shape", "expected"),
    [
        ("embeddings.token_type_embeddings.weight", (TYPES, HIDDEN + 1), (TYPES, HIDDEN)),
        ("embeddings.position_embeddings.weight", (POSITIONS, HIDDEN - 1), (POSITIONS, HIDDEN)),
        ("embeddings.LayerNorm.weight", (HIDDEN + 2,), (HIDDEN,)),
        ("embeddings.LayerNorm.bias", (HIDDEN - 1,), (HIDDEN,)),
    ],
)
def test_a_shape_mismatch_names_both_shapes(tmp_path, key, shape, expected):
    tensors = _tensors()
    tensors[key] = np.zeros(shape, np.float32)
    with pytest.raises(ValueError) as error:
        bek.EmbeddingTables.from_safetensors(_save(tmp_path, tensors))
    message = str(error.value)
    assert key in message and str(shape) in message, message
    assert str((VOCAB, HIDDEN)) in message, message  # the word table's shape it disagrees with
    assert str(expected) in message, message


def test_a_table_of_the_wrong_rank_is_named(tmp_path):
    tensors = _tensors()
    tensors["embeddings.position_embeddings.weight"] = np.zeros(POSITIONS * HIDDEN, np.float32)
    with pytest.raises(ValueError, match=r"position_embeddings.*\(35,\).*2-D"):
        bek.EmbeddingTables.from_safetensors(_save(tmp_path, tensors))


@pytest.mark.parametrize(
    ("field", "value", "key"),
    [
        ("vocab_size", VOCAB + 1, "word_embeddings"),
        ("hidden_size", HIDDEN * 2, "word_embeddings"),
        ("max_position_embeddings", 512, "position_embeddings"),
        ("type_vocab_size", 1, "token_type_embeddings"),
    ],
)
def test_a_shape_that_disagrees_with_config_names_both(tmp_path, field, value, key):
    directory = _save(tmp_path, _tensors(), {field: value})
    with pytest.raises(ValueError) as error:
        bek.EmbeddingTables.from_safetensors(directory)
    message = str(error.value)
    assert key in message and field in message and str(value) in message, message


def test_no_checkpoint_there(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"model\.safetensors"):
        bek.EmbeddingTables.from_safetensors(tmp_path)
    with pytest.raises(FileNotFoundError, match="nope"):
        bek.EmbeddingTables.from_safetensors(tmp_path / "nope.safetensors")


def test_not_a_bert_checkpoint(tmp_path):
    safetensors_numpy.save_file({"weight": np.zeros((2, 2), np.float32)}, str(tmp_path / "m.st"))
    with pytest.raises(KeyError, match="not a BERT-family checkpoint"):
        bek.EmbeddingTables.from_safetensors(tmp_path / "m.st", model_type="bert")


def test_without_config_json_the_family_must_be_named(tmp_path):
    """A bare RoBERTa checkpoint has BERT's key names: without the family, the position
    rule would be a guess, so the load is refused until model_type names it."""
    directory = _save(tmp_path, _tensors(), config=False)
    with pytest.raises(TypeError, match=r"no config\.json, so its family is unknown"):
        bek.EmbeddingTables.from_safetensors(directory)
    tables = bek.EmbeddingTables.from_safetensors(directory, model_type="bert")
    assert tables.family == "BERT" and tables.position_rule == "absolute"
    with pytest.raises(ValueError, match=r"model_type='roberta' was given, but .* says 'bert'"):
        bek.EmbeddingTables.from_safetensors(
            _save(tmp_path / "b", _tensors()), model_type="roberta"
        )


def test_integer_tables_are_refused(tmp_path):
    tensors = _tensors()
    tensors["embeddings.word_embeddings.weight"] = np.zeros((VOCAB, HIDDEN), np.int32)
    with pytest.raises(TypeError, match=r"model\.safetensors: tensor '.*word_embeddings.*I32"):
        bek.EmbeddingTables.from_safetensors(_save(tmp_path, tensors))


def test_a_broken_config_is_named(tmp_path):
    directory = _save(tmp_path, _tensors())
    (directory / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"config\.json"):
        bek.EmbeddingTables.from_safetensors(directory)


def test_reading_needs_no_safetensors_package(tmp_path, monkeypatch):
    """The format is read here (BF16 too), so the loader works without safetensors."""
    import builtins

    directory = _save(tmp_path, _tensors())  # written with safetensors, before it vanishes
    real_import = builtins.__import__

    def no_safetensors(name, *args, **kwargs):
        if name == "safetensors" or name.startswith("safetensors."):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_safetensors)
    assert bek.EmbeddingTables.from_safetensors(directory).vocab_size == VOCAB
