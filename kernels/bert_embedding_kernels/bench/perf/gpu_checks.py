"""``embench perf --device cuda``'s checks: the GPU's results against numpy on the host,
before anything is timed (the sum and the backward bit for bit, LayerNorm to rounding)."""

from __future__ import annotations

import numpy as np

import bert_embedding_kernels.cuda as kc


def check_results(device, batch, grad_device, host, ids, grad):
    """The GPU's results against numpy on the host: (name, verdict) pairs."""
    token, segment, position, weight, bias = host
    input_ids, types, positions = ids
    expected = (token[input_ids] + segment[types]) + position[positions]
    got = kc.fused_sum(device, batch).copy_to_host()
    verdicts = [("sum == numpy, bitwise", bool(np.array_equal(got, expected)))]
    x = expected.astype(np.float64)
    centred = x - x.mean(-1, keepdims=True)
    inverse_std = 1.0 / np.sqrt((centred**2).mean(-1, keepdims=True) + 1e-12)
    xhat = centred * inverse_std
    reference = xhat * weight + bias
    normed, sums = kc.fused_sum_norm(device, batch, keep_sum=True)
    error = float(np.abs(normed.copy_to_host() - reference).max())
    verdicts.append(("sum+LayerNorm max |error| vs float64", f"{error:.2e}"))
    verdicts.append(("kept sum == sum, bitwise", bool(np.array_equal(sums.copy_to_host(), got))))
    flat = grad.reshape(-1, grad.shape[-1])
    gradients = kc.fused_backward(device, batch, grad_device)
    for name, table, table_ids in zip(
        ("token", "segment", "position"), (token, segment, position), ids, strict=True
    ):
        reference = np.zeros_like(table)
        np.add.at(reference, np.broadcast_to(table_ids, input_ids.shape).reshape(-1), flat)
        same = np.array_equal(getattr(gradients, name).copy_to_host(), reference)
        verdicts.append((f"backward {name} == np.add.at (token order), bitwise", bool(same)))
    # LayerNorm's backward against float64 formulas on the host (to rounding).
    g = grad.astype(np.float64) * weight
    d_sums = inverse_std * (
        g - g.mean(-1, keepdims=True) - xhat * (g * xhat).mean(-1, keepdims=True)
    )
    hidden = grad.shape[-1]
    got = kc.layer_norm_backward(
        sums.reshape(-1, hidden), grad_device.reshape(-1, hidden), device.norm_weight, 1e-12
    )
    expected = (d_sums, (grad * xhat).reshape(-1, hidden).sum(0), flat.sum(0, dtype=np.float64))
    for name, array, want in zip(("sum", "weight", "bias"), got, expected, strict=True):
        error = np.abs(array.copy_to_host().reshape(want.shape) - want).max() / np.abs(want).max()
        verdicts.append(
            (f"LayerNorm backward d{name} max |error| / max vs float64", f"{error:.1e}")
        )
    return verdicts
