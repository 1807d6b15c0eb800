"""The rule each ``embench`` option's value follows, checked while the command line is parsed.

Every function here is an argparse ``type=``: a value that breaks its rule ends the command
before any work, as argparse ends it, with the usage and one line that names the option
and the rule (``embench report: error: argument --batch-size: must be an integer >= 1,
not '0'``) and exit status 2. Unchecked, such values were replaced without a word
(``report --batch-size 0`` ran at batch 4, ``--budget 0`` at the default budget), ended in
a traceback (``--batch-size -3``: numpy's "negative dimensions") or printed nonsense
(``check --budget -1``: "over the -142857.1 us that --budget -1 leaves").
"""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path


def _refuse(text: str, rule: str) -> argparse.ArgumentTypeError:
    return argparse.ArgumentTypeError(f"must be {rule}, not {text!r}")


def positive_int(text: str) -> int:
    """A count or a size: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise _refuse(text, "an integer >= 1") from None
    if value < 1:
        raise _refuse(text, "an integer >= 1")
    return value


def _finite(text: str, rule: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise _refuse(text, rule) from None
    if not math.isfinite(value):
        raise _refuse(text, rule)
    return value


def positive_seconds(text: str) -> float:
    """A time budget: a finite number of seconds > 0."""
    rule = "a number of seconds > 0"
    value = _finite(text, rule)
    if value <= 0:
        raise _refuse(text, rule)
    return value


def nonnegative_fraction(text: str) -> float:
    """A relative change (0.2 = 20%): a finite number >= 0."""
    rule = "a fraction >= 0 (0.2 = 20%)"
    value = _finite(text, rule)
    if value < 0:
        raise _refuse(text, rule)
    return value


def positive_ints(text: str) -> tuple[int, ...]:
    """A list of sizes, ``1000,8000`` or ``1000 8000``: integers >= 1, at least one."""
    rule = "comma-separated integers >= 1"
    try:
        values = tuple(int(v) for v in text.replace(",", " ").split())
    except ValueError:
        raise _refuse(text, rule) from None
    if not values or min(values) < 1:
        raise _refuse(text, rule)
    return values


def positive_ints_or_none(text: str) -> tuple[int, ...]:
    """:func:`positive_ints`, or ``none`` for no sizes at all (a sweep left out)."""
    if text.strip().lower() == "none":
        return ()
    try:
        return positive_ints(text)
    except argparse.ArgumentTypeError:
        raise _refuse(text, "comma-separated integers >= 1, or 'none'") from None


def peer_name(text: str) -> str:
    """An outside implementation that is known (sum or LayerNorm) and installed here."""
    from . import peers  # the registries of peers; their libraries are only looked up

    known = (*peers.PEERS, *peers.LAYER_NORM_PEERS)
    if text not in known:
        raise argparse.ArgumentTypeError(f"unknown peer {text!r}; known: {', '.join(known)}")
    installed = peers.available_peers() + peers.available_peers(layer_norm=True)
    if text not in installed:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not installed here; installed: {', '.join(installed) or 'none'} "
            "(pip install 'bert-embedding-kernels[peers]')"
        )
    return text


def model_type(text: str) -> str:
    """A BERT-family ``model_type`` (config.json's) whose layout the kernels reproduce:
    one of :data:`bert_embedding_kernels.families.FAMILIES`."""
    from ...families import FAMILIES

    known = sorted(t for family in FAMILIES for t in family.model_types)
    if text not in known:
        raise argparse.ArgumentTypeError(
            f"unknown or unsupported model_type {text!r}; supported: {', '.join(known)}"
        )
    return text


def _writable_directory(directory: Path) -> bool:
    return directory.is_dir() and os.access(directory, os.W_OK)


def output_directory(text: str) -> str:
    """A directory to write into: an existing one, or one that can be made where it is named
    (its nearest existing ancestor is a writable directory)."""
    path = Path(text)
    if path.exists():
        if not _writable_directory(path):
            raise _refuse(text, "a directory this user can write into")
        return text
    ancestor = path.absolute().parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not _writable_directory(ancestor):
        raise _refuse(
            text, f"a directory that can be made ({ancestor} is not a writable directory)"
        )
    return text


def markdown_path(text: str) -> str:
    """A Markdown file to write, whose files beside it (``.json``, ``.png``) are other files:
    in an existing writable directory, not a directory itself, not ending in .json or .png."""
    path = Path(text)
    if path.suffix.lower() in (".json", ".png"):
        rule = "a Markdown file name such as my-perf.md (its .json and .png go beside it)"
        raise _refuse(text, rule)
    if path.is_dir():
        raise _refuse(text, "a file name, not a directory")
    if not _writable_directory(path.absolute().parent):
        raise _refuse(text, "a file in an existing directory this user can write into")
    return text
