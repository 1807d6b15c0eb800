"""Embedding tables from a Hugging Face BERT-family checkpoint (``model.safetensors``).

Only the embedding layer is read, through ``safetensors``' numpy loader: no
torch, no transformers. A checkpoint saved from ``BertModel`` names its tensors
``embeddings.word_embeddings.weight`` and so on; one saved from a model with a
head (``BertForMaskedLM``, ...) puts ``bert.`` in front. Checkpoints converted
from the original TensorFlow BERT call the LayerNorm's scale and shift
``gamma`` and ``beta``; both spellings are accepted. ``layer_norm_eps`` comes
from the ``config.json`` beside the weights when there is one, else BERT's
default, 1e-12.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from .dtypes import FLOAT_DTYPES

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
BERT_LAYER_NORM_EPS = 1e-12  # transformers' BertConfig default
# Tried in this order when the caller names no prefix: a bare BertModel, then
# a model with a head around it.
PREFIXES = ("", "bert.")
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
    "hidden_size": ("token", 1),
}


class CheckpointKeyError(KeyError):
    """A tensor the embedding layer needs is not in the checkpoint.

    A ``KeyError`` (so ``except KeyError`` catches it) whose message prints as
    written, not as the quoted repr ``KeyError`` would give it.
    """

    def __str__(self) -> str:
        return str(self.args[0])


def _safe_open():
    try:
        from safetensors import safe_open
    except ImportError as error:
        raise ImportError(
            "reading a checkpoint needs the safetensors package: "
            "pip install 'bert-embedding-kernels[real]' (or pip install safetensors)"
        ) from error
    return safe_open


def _weights_file(path: Path) -> Path:
    weights = path / WEIGHTS_FILE if path.is_dir() else path
    if not weights.is_file():
        where = (
            f"directory {path} holds no {WEIGHTS_FILE}"
            if path.is_dir()
            else f"{path} does not exist"
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
    candidates = PREFIXES if prefix is None else (prefix,)
    for candidate in candidates:
        if candidate + TABLE_KEYS["token"] in keys:
            return candidate
    tried = " or ".join(repr(c + TABLE_KEYS["token"]) for c in candidates)
    related = sorted(k for k in keys if "embeddings" in k)[:8]
    hint = f" Its embedding-like keys: {related}." if related else ""
    raise CheckpointKeyError(
        f"{weights} has no key {tried}: it is not a BERT-family checkpoint with the "
        f"prefixes tried.{hint} Name the prefix with "
        "EmbeddingTables.from_safetensors(path, prefix=...)."
    )


def _pick_key(keys: set[str], prefix: str, names: tuple[str, ...], weights: Path) -> str:
    for name in names:
        if prefix + name in keys:
            return prefix + name
    wanted = " or ".join(repr(prefix + n) for n in names)
    raise CheckpointKeyError(f"{weights} has no key {wanted}, which the embedding layer needs.")


def _as_float(key: str, array: np.ndarray, dtype: np.dtype | None) -> np.ndarray:
    if array.dtype.kind != "f":
        raise TypeError(f"checkpoint tensor {key!r} has dtype {array.dtype}; expected floats.")
    if dtype is not None:
        return array.astype(dtype, copy=False)
    # float16 tables are widened to float32, the narrowest dtype the kernels take.
    return array if array.dtype in FLOAT_DTYPES else array.astype(np.float32)


def read_embedding_layer(path: str | os.PathLike, *, prefix: str | None = None, dtype=None) -> dict:
    """Read the embedding layer of a Hugging Face BERT-family checkpoint.

    :meth:`kernels.EmbeddingTables.from_safetensors` builds the tables from
    what this returns (this module knows files, not tables: no import cycle).

    Parameters
    ----------
    path : str or path-like
        A ``model.safetensors`` file, or the directory holding it (a model
        directory as ``save_pretrained`` writes it).
    prefix : str, optional
        What precedes ``embeddings.`` in the tensor names. By default ``""``
        (a saved ``BertModel``) and then ``"bert."`` (a model with a head) are
        tried.
    dtype : float32 or float64, optional
        Convert the tables to this dtype. By default float32 and float64 are
        kept and float16 is widened to float32.

    Returns
    -------
    dict
        The keyword arguments of ``EmbeddingTables``: ``token``, ``segment``,
        ``position``, ``norm_weight``, ``norm_bias`` and ``norm_eps`` (the
        ``layer_norm_eps`` of a ``config.json`` beside the weights, else 1e-12).

    Raises
    ------
    ImportError
        ``safetensors`` is not installed (the ``real`` extra installs it).
    FileNotFoundError
        No such file, or the directory holds no ``model.safetensors``.
    KeyError
        A tensor is missing (:class:`CheckpointKeyError`); the message names it.
    ValueError
        A tensor's shape disagrees with the others or with ``config.json``; the
        message names both shapes.
    """
    safe_open = _safe_open()
    weights = _weights_file(Path(path))
    if dtype is not None and np.dtype(dtype) not in FLOAT_DTYPES:
        raise TypeError(f"dtype is {np.dtype(dtype)}; tables must be float32 or float64")
    dtype = None if dtype is None else np.dtype(dtype)
    config = _read_config(weights)
    arrays = {}
    # safe_open maps the file and reads only the five tensors asked for, not
    # the whole model (the encoder layers are most of a checkpoint's bytes).
    with safe_open(weights, framework="numpy") as handle:
        keys = set(handle.keys())
        found = _find_prefix(keys, prefix, weights)
        names = {argument: (key,) for argument, key in TABLE_KEYS.items()} | NORM_KEYS
        for argument, candidates in names.items():
            key = _pick_key(keys, found, candidates, weights)
            arrays[argument] = (key, _as_float(key, handle.get_tensor(key), dtype))
    _check_shapes(arrays, config, weights)
    eps = config.get("layer_norm_eps", BERT_LAYER_NORM_EPS)
    return {argument: array for argument, (_, array) in arrays.items()} | {"norm_eps": eps}


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
    for field, (argument, axis) in CONFIG_SHAPES.items():
        if field not in config:
            continue
        key, array = arrays[argument]
        if array.shape[axis] != config[field]:
            raise ValueError(
                f"{weights}: {key!r} has shape {array.shape}, but config.json says "
                f"{field} = {config[field]} (axis {axis} of that shape)."
            )
