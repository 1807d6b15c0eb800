"""Embedding tables from a Hugging Face BERT-family checkpoint (``model.safetensors``).

Only the embedding layer is read, by a reader of the safetensors format here
(its numpy loader cannot read BF16): no torch, no transformers, no safetensors.
A checkpoint saved from ``BertModel`` names its tensors
``embeddings.word_embeddings.weight`` and so on; one saved from a model with a
head puts the model's prefix in front (``bert.``, ``roberta.``, ``distilbert.``).
Checkpoints converted from the original TensorFlow BERT call the LayerNorm's scale
and shift ``gamma`` and ``beta``; both spellings are accepted. The family
(``config.json``'s ``model_type``, :mod:`bert_embedding_kernels.families`) decides
which tensors exist and the rules the tables carry; ``layer_norm_eps`` comes from
``config.json`` too, else BERT's default, 1e-12.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from .dtypes import FLOAT_DTYPES, parse
from .families import family_of_model_type
from .safetensors_file import SafetensorsFile

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
BERT_LAYER_NORM_EPS = 1e-12  # transformers' BertConfig default
TABLE_KEYS = {
    "token": "embeddings.word_embeddings.weight",
    "segment": "embeddings.token_type_embeddings.weight",
    "position": "embeddings.position_embeddings.weight",
}
# The LayerNorm's parameters: the current names first, then the TensorFlow-era ones.
NORM_KEYS = {
    "norm_weight": ("embeddings.LayerNorm.weight", "embeddings.LayerNorm.gamma"),
    "norm_bias": ("embeddings.LayerNorm.bias", "embeddings.LayerNorm.beta"),
}
# config.json field -> (tables' argument, axis of that table it sizes)
CONFIG_SHAPES = {
    "vocab_size": ("token", 0),
    "type_vocab_size": ("segment", 0),
    "max_position_embeddings": ("position", 0),
}
WIDTH_FIELDS = ("embedding_size", "input_embedding_size", "dim", "hidden_size")


class CheckpointKeyError(KeyError):
    """A tensor the embedding layer needs is not in the checkpoint.

    A ``KeyError`` (so ``except KeyError`` catches it) whose message prints as
    written, not as the quoted repr ``KeyError`` would give it.
    """

    def __str__(self) -> str:
        return str(self.args[0])


def _weights_file(path: Path) -> Path:
    weights = path / WEIGHTS_FILE if path.is_dir() else path
    if not weights.is_file():
        where = (
            f"directory {path} holds no {WEIGHTS_FILE}"
            if path.is_dir()
            else f"{path} does not exist"
        )
        others = sorted(p.name for p in path.glob("*")) if path.is_dir() else []
        unread = [n for n in others if n.endswith((".bin", ".safetensors", ".index.json"))]
        if unread:
            where += (
                f" (it has {', '.join(unread[:4])}: pytorch_model.bin and sharded checkpoints are "
                "not read; save the model in one file with save_pretrained(path, "
                "safe_serialization=True, max_shard_size='100GB'))"
            )
        raise FileNotFoundError(f"no checkpoint found: {where}")
    return weights


def _read_config(weights: Path) -> dict:
    config_path = weights.with_name(CONFIG_FILE)
    if not config_path.is_file():
        return {}
    try:
        config = json.loads(config_path.read_text())
    except ValueError as error:
        raise ValueError(f"{config_path} is not valid JSON: {error}") from error
    if not isinstance(config, dict):
        raise ValueError(f"{config_path} holds {type(config).__name__}, not a JSON object")
    return config


def _find_prefix(keys: set[str], prefix: str | None, weights: Path) -> str:
    token = TABLE_KEYS["token"]
    if prefix is None:  # a bare model's keys, else the one prefix (bert., roberta., ...)
        found = sorted(k[: -len(token)] for k in keys if k.endswith(token))
        candidates = [""] if "" in found else found
        if len(candidates) == 1:
            return candidates[0]
        if len(candidates) > 1:
            raise ValueError(
                f"{weights} has several embedding layers (prefixes {candidates}); name one "
                "with EmbeddingTables.from_safetensors(path, prefix=...)."
            )
    elif prefix + token in keys:
        return prefix
    tried = repr(token) if prefix is None else repr(prefix + token)
    related = sorted(k for k in keys if "embeddings" in k)[:8]
    hint = f" Its embedding-like keys: {related}." if related else ""
    raise CheckpointKeyError(
        f"{weights} has no key ending in {tried}: it is not a BERT-family checkpoint "
        f"with that prefix.{hint} Name the prefix with "
        "EmbeddingTables.from_safetensors(path, prefix=...)."
    )


def _pick_key(keys: set[str], prefix: str, names: tuple[str, ...], weights: Path) -> str:
    for name in names:
        if prefix + name in keys:
            return prefix + name
    wanted = " or ".join(repr(prefix + n) for n in names)
    raise CheckpointKeyError(f"{weights} has no key {wanted}, which the embedding layer needs.")


def _as_float(array: np.ndarray, dtype: np.dtype | None) -> np.ndarray:
    # As stored (byte order made native), or converted to the dtype asked for.
    target = dtype if dtype is not None else array.dtype.newbyteorder("=")
    assert target in FLOAT_DTYPES
    return array.astype(target, copy=False)


def read_embedding_layer(
    path: str | os.PathLike, *, prefix: str | None = None, dtype=None, model_type=None
) -> dict:
    """Read the embedding layer of a Hugging Face BERT-family checkpoint.

    :meth:`bert_embedding_kernels.EmbeddingTables.from_safetensors` builds the tables from
    what this returns (this module knows files, not tables: no import cycle).

    Parameters
    ----------
    path : str or path-like
        A ``model.safetensors`` file, or the directory holding it (a model
        directory as ``save_pretrained`` writes it).
    prefix : str, optional
        What precedes ``embeddings.`` in the tensor names. By default ``""``
        (a saved base model), else the one prefix found (``bert.``, ``roberta.``).
    dtype : float32, float64, float16 or bfloat16, optional
        Convert the tables to this dtype. By default each tensor keeps the
        dtype it is stored in (F64, F32, F16, BF16).

    Returns
    -------
    dict
        The keyword arguments of ``EmbeddingTables``: the tables the family has,
        its LayerNorm (``norm_eps`` is ``config.json``'s ``layer_norm_eps``, else
        1e-12) and its rules (``position_rule``, ``padding_idx``, ...).

    Raises
    ------
    TypeError
        A ``model_type`` the kernels do not reproduce, none known, or settings of
        the family they do not (``embedding_size`` projected in DeBERTa, ERNIE's
        task ids, relative positions). A tensor stored in another dtype (the file,
        the tensor and the choices are named), or a ``dtype`` that is not a table dtype.
    FileNotFoundError
        No such file, or the directory holds no ``model.safetensors``.
    KeyError
        A tensor is missing (:class:`CheckpointKeyError`); the message names it.
    ValueError
        A tensor's shape disagrees with the others or with ``config.json``; the
        message names both shapes.
    """
    weights = _weights_file(Path(path))
    dtype = None if dtype is None else parse(dtype)
    config = _read_config(weights)
    family = _family(config, model_type, weights)
    arrays = {}
    # Only the tensors asked for are read, not the whole model (the encoder
    # layers are most of a checkpoint's bytes).
    handle = SafetensorsFile(weights)
    keys = handle.keys()
    found = _find_prefix(keys, prefix, weights)
    names = {"token": (TABLE_KEYS["token"],)}
    has_segment = family.segment and config.get("type_vocab_size", 1) > 0
    has_position = family.positions is not None and config.get("position_biased_input", True)
    names |= {"segment": (TABLE_KEYS["segment"],)} if has_segment else {}
    names |= {"position": (TABLE_KEYS["position"],)} if has_position else {}
    names |= NORM_KEYS if family.layer_norm else {}
    for argument, candidates in names.items():
        key = _pick_key(keys, found, candidates, weights)
        arrays[argument] = (key, _as_float(handle.get(key), dtype))
    _check_shapes(arrays, config, weights)
    rules = {"family": family.name, "masks_output": family.deberta}
    pad, rule = config.get("pad_token_id"), family.positions
    rules |= {"position_rule": rule.name} if rule is not None else {}
    if rule is not None and rule.padding:
        # MPNet pads with 1 whatever its config says (transformers' MPNetEmbeddings)
        rules["padding_idx"] = 1 if family.name == "MPNet" else pad
    elif isinstance(pad, int) and 0 <= pad < arrays["token"][1].shape[0]:
        rules["padding_idx"] = pad
    if family.layer_norm:
        rules |= {"norm_eps": config.get("layer_norm_eps", BERT_LAYER_NORM_EPS)}
        rules |= {"norm_by_default": True}
    return {argument: array for argument, (_, array) in arrays.items()} | rules


def _family(config: dict, model_type, weights: Path):
    """The checkpoint's family: config.json's model_type (or the caller's), checked."""
    stated = config.get("model_type")
    if model_type is not None and stated is not None and model_type != stated:
        raise ValueError(
            f"model_type={model_type!r} was given, but {weights.with_name(CONFIG_FILE)} says "
            f"{stated!r}."
        )
    model_type = stated if model_type is None else model_type
    if model_type is None:
        where = "no config.json" if not config else "a config.json without model_type"
        raise TypeError(
            f"{weights}: {where}, so its family is unknown, and with it the position rule "
            "and which tables exist; pass model_type= (e.g. 'bert') if you know it."
        )
    family = family_of_model_type(model_type, str(weights))
    refusals = {
        "position_embedding_type": config.get("position_embedding_type", "absolute") != "absolute",
        "use_task_id": bool(config.get("use_task_id")),
        "embedding_size": family.deberta
        and config.get("embedding_size", config.get("hidden_size")) != config.get("hidden_size"),
    }
    refused = [field for field, bad in refusals.items() if bad]
    if refused:
        raise TypeError(
            f"{weights}: {family.name} with config {refused[0]}={config.get(refused[0])!r} "
            "computes something the tables do not (relative positions, task-type "
            "embeddings, or a projection before LayerNorm)."
        )
    return family


def _check_shapes(arrays: dict, config: dict, weights: Path) -> None:
    """Every table 2-D of the word table's width, LayerNorm vectors of that width,
    and every size the config states equal to the tensor's.

    EmbeddingTables checks the same things, but its messages speak of its own
    arguments; here they name the checkpoint's keys.
    """
    for argument, (key, array) in arrays.items():
        expected_ndim, axes = (2, "rows, hidden_size") if argument in TABLE_KEYS else (1, "hidden")
        if array.ndim != expected_ndim:
            raise ValueError(
                f"{weights}: {key!r} has shape {array.shape}; it should be "
                f"{expected_ndim}-D ({axes})."
            )
    word_key, word = arrays["token"]
    hidden = word.shape[1]
    for argument, (key, array) in arrays.items():
        expected = (array.shape[0], hidden) if argument in TABLE_KEYS else (hidden,)
        if array.shape != expected:
            raise ValueError(
                f"{weights}: {key!r} has shape {array.shape} but {word_key!r} has shape "
                f"{word.shape}; {key!r} should be {expected}."
            )
    # The tables' width: ELECTRA, ALBERT and ConvBERT embed at embedding_size, RemBERT
    # at input_embedding_size, DistilBERT names it dim; the others at hidden_size.
    width = next((f for f in WIDTH_FIELDS if f in config), None)
    fields = dict(CONFIG_SHAPES) | ({width: ("token", 1)} if width else {})
    for field, (argument, axis) in fields.items():
        if field not in config or argument not in arrays:
            continue
        key, array = arrays[argument]
        if array.shape[axis] != config[field]:
            raise ValueError(
                f"{weights}: {key!r} has shape {array.shape}, but config.json says "
                f"{field} = {config[field]} (axis {axis} of that shape)."
            )
