"""The BERT family: which embeddings modules the kernels reproduce exactly, and how.

transformers' BERT-family embeddings differ in small, result-changing ways: RoBERTa
numbers positions from ``padding_idx + 1`` and gives padding tokens the padding
position; DistilBERT has no token types; Megatron-BERT no LayerNorm; DeBERTa-v2 may
have no positions, projects before its LayerNorm and multiplies by the mask. A module
accepted here computes exactly what the drop-in computes; any other is refused with a
``TypeError`` naming its class and the reason, never guessed at: a swapped module that
computed something else would train on wrong inputs without a word.

Acceptance is decided from what the module is and holds, not from attribute names
alone: its class (one of :data:`FAMILIES`, by module path and name: a subclass may
override anything), then its exact submodules (each of the expected torch class, no
others), its parameters (those of the submodules, no others), its buffers (the id
buffers transformers keeps, holding what they should) and the settings it was built
with (padding indices, LayerNorm's affine parameters, ERNIE's task ids, DeBERTa's
position flag). torch is never imported here: classes are compared by name.
"""

from __future__ import annotations

from dataclasses import dataclass

from .position_rules import ABSOLUTE, AFTER_PADDING, PositionRule

# The past-length arguments of transformers' forwards: ``cache_length`` (5.x) and
# ``past_key_values_length`` (4.x).
PAST_NAMES = ("cache_length", "past_key_values_length")


@dataclass(frozen=True)
class Family:
    """One embeddings class of transformers and the computation it performs.

    ``positions``: the family's position rule, a record of :mod:`.position_rules`:
    ``ABSOLUTE`` (``past .. past + seq - 1``), ``AFTER_PADDING`` (RoBERTa's rule:
    ``padding_idx + 1 + count of non-padding tokens so far``, padding tokens at
    ``padding_idx``; with ``inputs_embeds`` sequential from ``padding_idx + 1``), or
    ``None`` (no position table in the sum).
    ``sum_order``: the order transformers adds the rows in (``"tsp"``: token, segment,
    position; DeBERTa-v2 adds the position before the segment). The kernels add
    ``(token + segment) + position``; the other order differs in rounding only.
    """

    name: str  # the model family, as the README's table names it
    module: str  # where transformers defines the class, under transformers.models
    cls: str
    model_types: tuple[str, ...]  # config.json's model_type of its checkpoints
    segment: bool = True
    positions: PositionRule | None = ABSOLUTE
    layer_norm: bool = True
    sum_order: str = "tsp"
    deberta: bool = False  # DeBERTa-v2's optional tables, embed_proj and mask


FAMILIES = (
    Family("BERT", "bert.modeling_bert", "BertEmbeddings", ("bert",)),
    Family("RoBERTa", "roberta.modeling_roberta", "RobertaEmbeddings", ("roberta",),
           positions=AFTER_PADDING),
    Family("XLM-RoBERTa", "xlm_roberta.modeling_xlm_roberta", "XLMRobertaEmbeddings",
           ("xlm-roberta",), positions=AFTER_PADDING),
    Family("CamemBERT", "camembert.modeling_camembert", "CamembertEmbeddings", ("camembert",),
           positions=AFTER_PADDING),
    Family("Data2Vec-Text", "data2vec.modeling_data2vec_text", "Data2VecTextEmbeddings",
           ("data2vec-text",), positions=AFTER_PADDING),
    Family("RoBERTa-PreLayerNorm", "roberta_prelayernorm.modeling_roberta_prelayernorm",
           "RobertaPreLayerNormEmbeddings", ("roberta-prelayernorm",),
           positions=AFTER_PADDING),
    Family("X-MOD", "xmod.modeling_xmod", "XmodEmbeddings", ("xmod",),
           positions=AFTER_PADDING),
    Family("XLM-RoBERTa-XL", "xlm_roberta_xl.modeling_xlm_roberta_xl", "XLMRobertaXLEmbeddings",
           ("xlm-roberta-xl",), positions=AFTER_PADDING, layer_norm=False),
    Family("DistilBERT", "distilbert.modeling_distilbert", "Embeddings", ("distilbert",),
           segment=False),
    Family("ELECTRA", "electra.modeling_electra", "ElectraEmbeddings", ("electra",)),
    Family("ALBERT", "albert.modeling_albert", "AlbertEmbeddings", ("albert",)),
    Family("ConvBERT", "convbert.modeling_convbert", "ConvBertEmbeddings", ("convbert",)),
    Family("RemBERT", "rembert.modeling_rembert", "RemBertEmbeddings", ("rembert",)),
    Family("ERNIE", "ernie.modeling_ernie", "ErnieEmbeddings", ("ernie",)),
    Family("MPNet", "mpnet.modeling_mpnet", "MPNetEmbeddings", ("mpnet",), segment=False,
           positions=AFTER_PADDING),
    Family("Megatron-BERT", "megatron_bert.modeling_megatron_bert", "MegatronBertEmbeddings",
           ("megatron-bert",), layer_norm=False),
    Family("DeBERTa-v2", "deberta_v2.modeling_deberta_v2", "DebertaV2Embeddings",
           ("deberta-v2",), sum_order="tps", deberta=True),
)  # fmt: skip

# Embeddings classes of transformers that are refused, with the reason (any class not
# in FAMILIES is refused; these get a specific word).
REFUSED = {
    "BigBirdEmbeddings": "it may rescale the word embeddings by sqrt(hidden_size)",
    "BertGenerationEmbeddings": "its position rule and call differ from BERT's (not verified)",
    "DebertaEmbeddings": "its LayerNorm is DebertaLayerNorm (DeBERTa v1), not torch's",
    "LayoutLMEmbeddings": "it adds 2-D layout position tables (x, y, h, w)",
    "LayoutLMv2Embeddings": "it adds 2-D layout position tables",
    "LayoutLMv3TextEmbeddings": "it adds 2-D layout position tables",
    "LiltTextEmbeddings": "it numbers positions as RoBERTa does and adds layout embeddings",
    "MarkupLMEmbeddings": "it adds XPath embeddings",
    "MobileBertEmbeddings": "it embeds trigrams, projects them and normalises with NoNorm",
    "NystromformerEmbeddings": "its positions start at 2",
    "YosoEmbeddings": "its positions start at 2",
    "MraEmbeddings": "its positions start at 2",
    "RoFormerEmbeddings": "it has no position table (rotary positions live in attention)",
    "RoCBertEmbeddings": "it adds pronunciation and shape embeddings",
    "LukeEmbeddings": "its position rule is RoBERTa's on a table without a padding row "
    "(not verified)",
    "TapasEmbeddings": "it adds table-structure embeddings",
    "SplinterEmbeddings": "not verified",
    "FNetEmbeddings": "it projects the sum after its LayerNorm",
    "FunnelEmbeddings": "it has no position or token-type table",
    "SqueezeBertEmbeddings": "not verified",
    "EsmEmbeddings": "it scales token dropout and masks tokens",
    "CanineEmbeddings": "it hashes characters into several tables",
    "NezhaEmbeddings": "its positions are relative",
}

_BY_CLASS = {f"transformers.models.{f.module}.{f.cls}": f for f in FAMILIES}
_BY_MODEL_TYPE = {t: f for f in FAMILIES for t in f.model_types}

EMBEDDING = "torch.nn.modules.sparse.Embedding"
LAYER_NORM = "torch.nn.modules.normalization.LayerNorm"
DROPOUT = "torch.nn.modules.dropout.Dropout"
LINEAR = "torch.nn.modules.linear.Linear"


def _qualified(obj) -> str:
    cls = type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


def supported_names() -> str:
    return ", ".join(f.name for f in FAMILIES)


def family_of_model_type(model_type, where: str) -> Family:
    """The family of a checkpoint's ``config.json`` ``model_type``, or TypeError naming it."""
    family = _BY_MODEL_TYPE.get(model_type)
    if family is None:
        raise TypeError(
            f"{where}: model_type {model_type!r} is not supported: its embeddings may compute "
            f"something else than the kernels. Supported: "
            f"{', '.join(sorted(_BY_MODEL_TYPE))}."
        )
    return family


@dataclass(frozen=True)
class Inspected:
    """What an accepted module holds: its family and the submodules the sum reads."""

    family: Family
    word: object
    segment: object | None
    position: object | None
    layer_norm: object | None
    dropout: object
    embed_proj: object | None  # DeBERTa-v2's Linear after the sum, or None
    padding_idx: int | None  # the position rule's padding index (a rule with padding)
    # False where the id buffers are on the meta device (a model built before its weights
    # are loaded): their values are checked by check_buffers once they exist.
    buffers_checked: bool = True

    @property
    def fused_layer_norm(self) -> bool:
        """LayerNorm directly follows the sum (DeBERTa's projection would come between)."""
        return self.layer_norm is not None and self.embed_proj is None


class _Refusal(TypeError):
    pass


def inspect_module(module) -> Inspected:
    """Accept ``module`` if its computation is one the kernels reproduce exactly.

    Raises
    ------
    TypeError
        Naming the module's class and what is not supported.
    """
    name = type(module).__name__
    family = _BY_CLASS.get(_qualified(module))
    if family is None:
        reason = REFUSED.get(name)
        if reason is None and _qualified(module).startswith("bert_embedding_kernels.nn."):
            family = getattr(module, "family", None)
        if family is None:
            because = (
                reason or "it is not one of the embeddings classes whose computation is verified"
            )
            raise TypeError(
                f"{name} is not supported: {because}. Supported: the embeddings of "
                f"{supported_names()} (transformers' own classes, not subclasses)."
            )
    try:
        return _check_holdings(module, family)
    except _Refusal as refusal:
        raise TypeError(f"{name} ({family.name}) is not supported here: {refusal}") from None


def check_buffers(module, family: Family) -> None:
    """The deferred check of a meta-device module's id buffers, once they hold values.

    Raises
    ------
    TypeError
        A buffer holds what transformers' forward would not compute with (named).
    """
    try:
        _check_buffers(module, family)
    except _Refusal as refusal:
        name = type(module).__name__
        raise TypeError(f"{name} ({family.name}) is not supported here: {refusal}") from None


def _check_embedding(attribute: str, embedding, padding_idx=None, check_padding=True) -> None:
    if embedding.max_norm is not None or embedding.scale_grad_by_freq or embedding.sparse:
        raise _Refusal(
            f"{attribute} has max_norm, scale_grad_by_freq or sparse set; the kernels "
            "compute a plain lookup"
        )
    if check_padding and embedding.padding_idx != padding_idx:
        raise _Refusal(
            f"{attribute}.padding_idx is {embedding.padding_idx}, expected {padding_idx}"
        )


def _check_holdings(module, family: Family) -> Inspected:
    if family.name == "ERNIE" and getattr(module, "use_task_id", True):
        raise _Refusal("it adds task-type embeddings (config.use_task_id)")
    expected = {"word_embeddings": EMBEDDING, "dropout": DROPOUT}
    has_segment, has_position = family.segment, family.positions is not None
    embed_proj = None
    if family.deberta:
        position_biased = getattr(module, "position_biased_input", None)
        if position_biased is None:
            raise _Refusal("it has no position_biased_input setting")
        has_position = bool(position_biased)
        has_segment = getattr(module, "token_type_embeddings", None) is not None
        if getattr(module, "embed_proj", None) is not None:
            expected["embed_proj"] = LINEAR
    if has_segment:
        expected["token_type_embeddings"] = EMBEDDING
    if has_position:
        expected["position_embeddings"] = EMBEDDING
    if family.layer_norm:
        expected["LayerNorm"] = LAYER_NORM
    children = {n: _qualified(c) for n, c in module.named_children()}
    if children != expected:
        extra = sorted(set(children) - set(expected))
        missing = sorted(set(expected) - set(children))
        wrong = sorted(n for n in set(children) & set(expected) if children[n] != expected[n])
        parts = [f"extra submodules {extra} the drop-in does not compute"] if extra else []
        parts += [f"missing {missing}"] if missing else []
        parts += [f"{n} is {children[n]}" for n in wrong]
        raise _Refusal("; ".join(parts))
    own = [n for n, _ in module.named_parameters(recurse=False)]
    if own:
        raise _Refusal(f"it holds parameters of its own: {own}")
    buffers_checked = not _on_meta(module)
    if buffers_checked:
        _check_buffers(module, family)
    else:
        _check_buffer_names(module)
    position_type = getattr(module, "position_embedding_type", "absolute")
    if position_type != "absolute":
        raise _Refusal(f"position_embedding_type is {position_type!r}, not 'absolute'")

    word = module.word_embeddings
    _check_embedding("word_embeddings", word, check_padding=False)
    segment = module.token_type_embeddings if has_segment else None
    if segment is not None:
        _check_embedding("token_type_embeddings", segment)
    position = module.position_embeddings if has_position else None
    padding_idx = None
    if family.positions is not None and family.positions.padding:
        padding_idx = getattr(module, "padding_idx", None)
        if not isinstance(padding_idx, int) or padding_idx < 0:
            raise _Refusal(f"its padding_idx is {padding_idx!r}; RoBERTa's positions need one")
    if position is not None:
        _check_embedding("position_embeddings", position, padding_idx)
    norm = module.LayerNorm if family.layer_norm else None
    if norm is not None:
        hidden = (module.embed_proj.out_features,) if "embed_proj" in expected else None
        hidden = hidden or (word.embedding_dim,)
        if norm.weight is None or norm.bias is None or tuple(norm.normalized_shape) != hidden:
            raise _Refusal(f"its LayerNorm is not an affine LayerNorm over {hidden[0]} features")
    if "embed_proj" in expected:
        embed_proj = module.embed_proj
        if embed_proj.bias is not None or embed_proj.in_features != word.embedding_dim:
            raise _Refusal("its embed_proj is not a bias-free projection of the sum")
    tables = [t for t in (word, segment, position) if t is not None]
    if len({t.weight.dtype for t in tables}) != 1:
        raise _Refusal("its tables have different dtypes")
    if len({t.embedding_dim for t in tables}) != 1:
        raise _Refusal("its tables have different widths")
    return Inspected(
        family,
        word,
        segment,
        position,
        norm,
        module.dropout,
        embed_proj,
        padding_idx,
        buffers_checked,
    )


def _on_meta(module) -> bool:
    """Built on the meta device: tensors with shapes and dtypes but no values yet."""
    return any(b.device.type == "meta" for _, b in module.named_buffers(recurse=True))


def _check_buffer_names(module) -> dict:
    buffers = dict(module.named_buffers(recurse=True))
    unknown = sorted(set(buffers) - {"position_ids", "token_type_ids"})
    if unknown:
        raise _Refusal(f"it holds buffers the drop-in does not use: {unknown}")
    return buffers


def _check_buffers(module, family: Family) -> None:
    """Only transformers' id buffers, holding what its forward assumes: the positions
    buffer numbered from the family's rule's offset (0 but for a rule like
    Nystromformer's, whose buffer starts at 2)."""
    buffers = _check_buffer_names(module)
    positions = buffers.get("position_ids")
    first = 0 if family.positions is None else family.positions.offset
    if positions is not None:
        row = positions.reshape(-1)
        if not bool((row == row.new_tensor(range(first, first + row.numel()))).all()):
            raise _Refusal(f"its position_ids buffer is not {first}, {first + 1}, {first + 2}, ...")
    types = buffers.get("token_type_ids")
    if types is not None and bool(types.any()):
        raise _Refusal("its token_type_ids buffer is not all zeros")
