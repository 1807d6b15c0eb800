"""One call puts the drop-in into a model, or into every model transformers builds afterwards.

As Liger-Kernel does for its kernels, by ``model_type``:

>>> from bert_embedding_kernels.nn import patch                          # doctest: +SKIP
>>> patch(model)      # a built model, any head (sentence-transformers too)  # doctest: +SKIP
>>> with patch("roberta"):        # models built meanwhile get the drop-in    # doctest: +SKIP
...     model = AutoModelForMaskedLM.from_pretrained("roberta-base")

A model is patched in place: each embeddings module of its family is replaced by
the drop-in made of that module's own objects (:meth:`BertEmbeddings.from_hf`).
A family is patched by replacing its embeddings class in transformers' modeling
module (the name the model classes build it by) with a subclass of the drop-in
that takes the class's own arguments: ``from_pretrained``, ``from_config``, meta-
device and low-memory loading then build the drop-in directly, and transformers'
weight initialisation (``isinstance`` of that name) still applies to it.
:meth:`Patch.undo` restores both.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field

from torch import nn

from ..families import FAMILIES, Family, _qualified, family_of_model_type
from .module import BertEmbeddings as DropIn

_BY_NAME = {f.name.lower(): f for f in FAMILIES}


def _transformers_module(family: Family):
    return importlib.import_module(f"transformers.models.{family.module}")


# transformers' classes replaced by patch(family), keyed by family name: what undo restores
# and what the patched classes build before adopting.
_ORIGINALS: dict[str, type] = {}


def _original_class(family: Family) -> type:
    original = _ORIGINALS.get(family.name)
    return original if original is not None else getattr(_transformers_module(family), family.cls)


def _patched_init(self, *args, **kwargs):
    nn.Module.__init__(self)
    self._adopt(_original_class(self.family)(*args, **kwargs))


# One drop-in class per family, named as transformers' class (accelerate's
# ``_no_split_modules`` and transformers' own messages match classes by name) and defined
# here at import, so instances pickle by reference to it.
# (The module's names are those classes; the drop-in itself is DropIn here.)
PATCHED = {}
for _family in FAMILIES:
    PATCHED[_family.name] = globals()[_family.cls] = type(
        _family.cls,
        (DropIn,),
        {
            "__init__": _patched_init,
            "__module__": __name__,
            "__qualname__": _family.cls,
            "__doc__": f"The drop-in built by transformers' {_family.cls}'s arguments "
            f"({_family.name}); see :func:`patch`.",
            "family": _family,
        },
    )
del _family


@dataclass
class Patch:
    """What :func:`patch` changed; :meth:`undo` puts it back. A context manager too.

    ``swapped``: the dotted names of the embeddings modules replaced in a model;
    ``families``: the families whose transformers class was replaced.
    """

    swapped: list[str] = field(default_factory=list)
    families: list[str] = field(default_factory=list)
    _undo: list = field(default_factory=list, repr=False)

    def undo(self) -> None:
        """Restore transformers' classes and the models' own embeddings modules.

        A restored module holds the drop-in's current submodules (a word table that
        ``resize_token_embeddings`` replaced meanwhile included): ties still hold.
        """
        while self._undo:
            self._undo.pop()()

    def __enter__(self) -> Patch:
        return self

    def __exit__(self, *exc) -> None:
        self.undo()


def patch(target=None) -> Patch:
    """Put the drop-in into a model, or into every model of a family built from now on.

    Parameters
    ----------
    target : nn.Module, str or None
        A transformers model (any head) or a module holding them (a
        sentence-transformers model): each embeddings module of its ``model_type``'s
        family is replaced in place. A family's ``model_type`` (``"bert"``,
        ``"xlm-roberta"``...) or name (``"RoBERTa"``): transformers' class of that
        family is replaced, so models built afterwards (``from_pretrained``,
        ``from_config``, under ``torch.device("meta")``) have the drop-in. None:
        every supported family's class.

    Returns
    -------
    Patch
        What was swapped or patched; ``.undo()`` (or leaving a ``with`` block)
        restores it.

    Raises
    ------
    TypeError
        An unsupported ``model_type`` or family (named, with the supported ones), a
        model with no transformers model inside, or an embeddings module the
        drop-in cannot reproduce (``from_hf``'s error).
    """
    done = Patch()
    if target is None:
        for family in FAMILIES:
            _patch_family(family, done)
    elif isinstance(target, str):
        family = _BY_NAME.get(target.lower()) or family_of_model_type(target, "patch")
        _patch_family(family, done)
    elif isinstance(target, nn.Module):
        _patch_model(target, done)
    else:
        raise TypeError(
            f"patch takes a model (torch.nn.Module), a model_type or family name, or None; "
            f"got {type(target).__name__}"
        )
    return done


def _patch_family(family: Family, done: Patch) -> None:
    module = _transformers_module(family)
    if family.name in _ORIGINALS:
        return  # patched already (by an earlier patch, which undoes it)
    original = getattr(module, family.cls)
    _ORIGINALS[family.name] = original
    setattr(module, family.cls, PATCHED[family.name])

    def undo():
        setattr(module, family.cls, original)
        del _ORIGINALS[family.name]

    done.families.append(family.name)
    done._undo.append(undo)


def _patch_model(model: nn.Module, done: Patch) -> None:
    families = _families_inside(model)
    classes = {f"transformers.models.{f.module}.{f.cls}" for f in families}
    for name, parent in list(model.named_modules()):
        for child_name, child in list(parent.named_children()):
            if _qualified(child) not in classes:
                continue
            drop_in = DropIn.from_hf(child)
            setattr(parent, child_name, drop_in)
            done.swapped.append(f"{name}.{child_name}" if name else child_name)
            done._undo.append(_restorer(parent, child_name, child, drop_in))


def _families_inside(model: nn.Module) -> list[Family]:
    """The families of the transformers models in ``model`` (itself or nested), by model_type."""
    model_types = []
    for module in model.modules():
        model_type = getattr(getattr(module, "config", None), "model_type", None)
        if isinstance(model_type, str) and model_type not in model_types:
            model_types.append(model_type)
    if not model_types:
        raise TypeError(
            f"{type(model).__name__} holds no transformers model (no submodule has a config "
            "with a model_type); pass a transformers model, or swap an embeddings module "
            "with bert_embedding_kernels.nn.BertEmbeddings.from_hf(module)"
        )
    return [family_of_model_type(t, f"patch({type(model).__name__})") for t in model_types]


def _restorer(parent: nn.Module, name: str, original: nn.Module, drop_in: DropIn):
    def undo():
        for child_name, child in drop_in.named_children():
            setattr(original, child_name, child)
        setattr(parent, name, original)

    return undo
