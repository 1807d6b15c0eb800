"""Everything timed at one shape, ours and theirs alike, each checked before it is timed.

A :class:`Contender` is a zero-argument call plus what the report says of it.
:func:`build` makes them for one shape from the registry (every method writing
into a preallocated ``out=``, and ``fused`` allocating its output), the copy
roofline, the installed peers (allocating, as those libraries do; onnxruntime
also through IOBinding into a bound output) and, with ``layer_norm=True``, the
normalising ones (``fused+LN``, torch, onnxruntime's EmbedLayerNormalization),
all allocating.

Each call runs once here and its output is compared with the naive reference:
a contender that disagrees gets status ``failed`` and is never timed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import ml_dtypes
import numpy as np

from ... import embed
from ...registry import METHODS
from . import peers
from .reference import Reference
from .roofline import CopyReference, apart_from

COPY = "copy"
FUSED_ALLOCATING = "fused (allocating)"
FUSED_NORM = "fused+LN"
# LayerNorm outputs are compared with the naive float64 LayerNorm of the naive
# sum: statistics in other precisions and orders differ by a few float32 ulps of
# values of order 1 (measured max 1.2e-6 on BERT-base); 1e-4 leaves room and
# still fails any wrong row, scale or shift. A 16-bit output adds its own
# rounding: two of its ulps of |y| on top.
LAYER_NORM_ATOL = 1e-4


@dataclass
class Contender:
    name: str
    kind: str  # "sum", "layernorm" or "roofline"
    origin: str  # "kernels", "peer" or "roofline"
    allocates: bool  # a new output per call (else into a preallocated one)
    call: Callable[[], object] | None = None
    status: str = "measured"  # or "skipped", "failed"
    reason: str = ""
    agrees: bool | None = None


def _ours(name, tables, inputs, out, method, layer_norm=False, **options) -> Contender:
    allocates = out is None
    # layer_norm always named: tables from a checkpoint normalise by default
    call = lambda: embed(  # noqa: E731
        tables, *inputs, method=method, out=out, layer_norm=layer_norm, **options
    )
    kind = "layernorm" if layer_norm else "sum"
    return Contender(name, kind, "kernels", allocates, call)


def _peer(name: str, tables, inputs, layer_norm: bool) -> Contender:
    kind = "layernorm" if layer_norm else "sum"
    try:
        peer = peers.make_peer(name, tables)
    except (ImportError, TypeError, ValueError) as error:
        return Contender(name, kind, "peer", True, status="skipped", reason=str(error))
    return Contender(name, kind, "peer", True, lambda: peer(*inputs))


def _check(contender: Contender, reference: Reference) -> None:
    """Run the call once and compare its output with the reference; failed if it differs."""
    try:
        result = peers.as_numpy(contender.call())
    except ValueError as error:
        if str(error).startswith("memory_budget"):  # a one-hot method at a vocabulary too big
            contender.status, contender.reason = "skipped", str(error)
            return
        contender.status, contender.reason = "failed", f"ValueError: {error}"
        return
    except Exception as error:  # a peer that cannot run here: say why, time the rest
        contender.status, contender.reason = "failed", f"{type(error).__name__}: {error}"
        return
    if contender.kind == "layernorm":
        expected = reference.layer_norm()
        eps = float(ml_dtypes.finfo(result.dtype).eps)
        excess = np.abs(result.astype(np.float64) - expected) - 2 * eps * np.abs(expected)
        difference = np.max(excess, initial=0.0)
        contender.agrees = bool(difference <= LAYER_NORM_ATOL)
        detail = f"max |y - naive LayerNorm| - 2 eps |y| = {difference:.3g} > {LAYER_NORM_ATOL:g}"
    else:
        agreement = reference.compare(contender.name.split(" ")[0], result)
        contender.agrees = agreement.ok
        detail = f"{agreement}"
    if not contender.agrees:
        contender.status, contender.reason = "failed", f"disagrees with the reference: {detail}"


def build(
    tables,
    inputs: tuple[np.ndarray, np.ndarray],
    *,
    methods=METHODS,
    peer_names=(),
    layer_norm: bool = False,
    skip: Callable[[str], str] = lambda name: "",
) -> dict[str, Contender]:
    """Every contender at one shape, checked; ``skip(name)`` returns a reason to skip or ''."""
    shape = (*inputs[0].shape, tables.hidden_size)
    reference = Reference(tables, *inputs)
    copy = CopyReference(shape, tables.dtype)
    contenders = {COPY: Contender(COPY, "roofline", "roofline", False, copy)}
    for method in methods:
        out = apart_from(tables.token, shape, tables.dtype)
        contenders[method] = _ours(method, tables, inputs, out, method)
    if "fused" in methods:
        contenders[FUSED_ALLOCATING] = _ours(FUSED_ALLOCATING, tables, inputs, None, "fused")
    for name in peer_names:
        if name in peers.PEERS:
            contenders[name] = _peer(name, tables, inputs, layer_norm=False)
    if layer_norm and tables.has_layer_norm:
        # Allocating, like the LayerNorm peers it is compared with.
        contenders[FUSED_NORM] = _ours(FUSED_NORM, tables, inputs, None, "fused", layer_norm=True)
        for name in peer_names:
            if name in peers.LAYER_NORM_PEERS:
                contenders[name] = _peer(name, tables, inputs, layer_norm=True)
    for contender in contenders.values():
        if contender.status != "measured" or contender.kind == "roofline":
            continue
        reason = skip(contender.name)
        if reason:
            contender.status, contender.reason = "skipped", reason
            continue
        _check(contender, reference)
    return contenders


def timed(contenders: dict[str, Contender]) -> dict[str, Callable[[], object]]:
    """The calls to time: every contender still ``measured`` after its check."""
    return {n: c.call for n, c in contenders.items() if c.status == "measured"}
