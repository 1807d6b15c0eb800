"""float16 and bfloat16 inside numba kernels, which have no 16-bit float arrays on the CPU.

The kernels see a 16-bit table as its ``uint16`` bit patterns and convert each
element to float32 on load and back on store:

- bfloat16 -> float32 is exact: the 16 bits become the top half of a float32;
- float16 -> float32 is exact: LLVM's ``fpext half to float`` (one ``vcvtph2ps``
  per 8 or 16 elements on x86 with F16C);
- float32 -> float16 rounds to nearest even (LLVM's ``fptrunc``), with
  overflow to inf, subnormals and NaN as IEEE defines them;
- float32 -> bfloat16 rounds to nearest even by integer arithmetic on the bits;
  a NaN stays a NaN (quiet bit set) instead of rounding into inf.

All four agree bit for bit with numpy's float16 and ml_dtypes' bfloat16
conversions over every 16-bit pattern and across the float32 range (tested).
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic, overload

from ...dtypes import BFLOAT16, FLOAT16

# Which 16-bit format a kernel's uint16 arrays hold (a kernel argument).
BF16 = 0
F16 = 1
KIND = {BFLOAT16: BF16, FLOAT16: F16}


@intrinsic
def _half_bits_to_f32(typingctx, bits):
    def codegen(context, builder, signature, args):
        return builder.fpext(builder.bitcast(args[0], ir.HalfType()), ir.FloatType())

    return types.float32(types.uint16), codegen


@intrinsic
def _f32_to_half_bits(typingctx, value):
    def codegen(context, builder, signature, args):
        return builder.bitcast(builder.fptrunc(args[0], ir.HalfType()), ir.IntType(16))

    return types.uint16(types.float32), codegen


@intrinsic
def _u32_as_f32(typingctx, bits):
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return types.float32(types.uint32), codegen


@intrinsic
def _f32_as_u32(typingctx, value):
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(32))

    return types.uint32(types.float32), codegen


@njit(inline="always", cache=True)
def widen(bits, kind):
    """The float32 value of 16-bit pattern ``bits`` in format ``kind`` (exact)."""
    if kind == BF16:
        return _u32_as_f32(np.uint32(bits) << np.uint32(16))
    return _half_bits_to_f32(bits)


@njit(inline="always", cache=True)
def narrow(value, kind):
    """``value`` (float32) rounded to nearest even in format ``kind``, as 16 bits."""
    if kind == F16:
        return _f32_to_half_bits(value)
    bits = _f32_as_u32(value)
    if (bits & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000):  # NaN: stay NaN, quiet
        return np.uint16((bits >> np.uint32(16)) | np.uint32(0x40))
    bits += np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))
    return np.uint16(bits >> np.uint32(16))


def bits(array: np.ndarray) -> np.ndarray:
    """The uint16 view of a float16 or bfloat16 array (same memory)."""
    return array.view(np.uint16)


def store(row, h, value, kind):
    """``row[h] = value``, rounded to format ``kind`` where ``row`` holds 16-bit patterns."""


@overload(store)
def _store(row, h, value, kind):
    # Chosen when the kernel compiles, from the output array's dtype: a uint16
    # row holds 16-bit patterns (round once), any other row takes the float32.
    if row.dtype == types.uint16:

        def store_bits(row, h, value, kind):
            row[h] = narrow(value, kind)

        return store_bits

    def store_value(row, h, value, kind):
        row[h] = value

    return store_value
