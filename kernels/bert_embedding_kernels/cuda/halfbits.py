"""float16 and bfloat16 in device code: conversions on the bit patterns, x86's NaN rules.

The device tables hold 16-bit formats as their ``uint16`` patterns, as the CPU
kernels do (:mod:`bert_embedding_kernels.halfbits`), and the conversions are
integer arithmetic on those patterns, so they are exact and the same on a GPU
and under the simulator:

- :func:`widen`: 16 bits -> float32 bits, exact (bfloat16: a shift; float16:
  rebias the exponent, normalise subnormals, keep NaN payloads);
- :func:`narrow`: float32 bits -> 16 bits, rounded to nearest even, overflow
  to inf, subnormals as IEEE defines them, a NaN stays a NaN with its sign and
  the top of its payload, quiet bit set (what x86's ``vcvtps2ph`` and the CPU's
  bfloat16 rounding give).

Only the reinterpretation of 32 bits as a float32 and back differs: libdevice's
``int_as_float`` on a GPU, a numpy view under the simulator.

NaN bits. A GPU's float32 arithmetic returns one canonical NaN (0x7FFFFFFF); an
x86 CPU returns the first NaN operand, quieted, or the "default NaN"
0xFFC00000 where two non-NaNs make one (inf - inf, 0 x inf). :func:`x86_nan`
puts x86's NaN back after an operation, so that NaNs round to the CPU's 16-bit
patterns bit for bit. (Where two different NaNs meet, the CPU's choice depends
on the operand order LLVM picked; the tests keep one NaN per sum.)
"""

from __future__ import annotations

import numpy as np

from ..dtypes import BFLOAT16, FLOAT16
from ._runtime import SIMULATOR, cuda

BF16 = 0
F16 = 1
KIND = {BFLOAT16: BF16, FLOAT16: F16}

QUIET = np.uint32(0x00400000)
DEFAULT_NAN = np.uint32(0xFFC00000)
_ABS = np.uint32(0x7FFFFFFF)
_INF = np.uint32(0x7F800000)

if SIMULATOR:

    @cuda.jit(device=True)
    def as_float(bits):
        """The float32 whose bit pattern is ``bits`` (uint32)."""
        return np.uint32(bits).view(np.float32)

    @cuda.jit(device=True)
    def as_bits(value):
        """The bit pattern (uint32) of float32 ``value``."""
        return np.float32(value).view(np.uint32)

else:  # pragma: no cover  (hardware only)
    from numba.cuda import libdevice

    @cuda.jit(device=True)
    def as_float(bits):
        return libdevice.int_as_float(np.int32(bits))

    @cuda.jit(device=True)
    def as_bits(value):
        return np.uint32(libdevice.float_as_int(np.float32(value)))


@cuda.jit(device=True)
def is_nan(bits):
    return (np.uint32(bits) & _ABS) > _INF


@cuda.jit(device=True)
def x86_nan(result, a, b):
    """``result`` of float32 ``a op b``, with x86's NaN where it is a NaN (module docstring)."""
    if result == result:
        return result
    a_bits, b_bits = as_bits(a), as_bits(b)
    if is_nan(a_bits):
        return as_float(a_bits | QUIET)
    if is_nan(b_bits):
        return as_float(b_bits | QUIET)
    return as_float(DEFAULT_NAN)


@cuda.jit(device=True)
def widen(half, kind):
    """The float32 bit pattern (uint32) of 16-bit pattern ``half`` in format ``kind``; exact."""
    h = np.uint32(half)
    if kind == BF16:
        return h << np.uint32(16)
    sign = (h & np.uint32(0x8000)) << np.uint32(16)
    exponent = (h >> np.uint32(10)) & np.uint32(0x1F)
    mantissa = h & np.uint32(0x3FF)
    if exponent == np.uint32(0x1F):  # inf, NaN (payload kept)
        return sign | _INF | (mantissa << np.uint32(13))
    if exponent == np.uint32(0):
        if mantissa == np.uint32(0):
            return sign
        e = np.uint32(113)  # a subnormal: shift the leading one into the implicit bit
        while (mantissa & np.uint32(0x400)) == np.uint32(0):
            mantissa = mantissa << np.uint32(1)
            e = e - np.uint32(1)
        return sign | (e << np.uint32(23)) | ((mantissa & np.uint32(0x3FF)) << np.uint32(13))
    return sign | ((exponent + np.uint32(112)) << np.uint32(23)) | (mantissa << np.uint32(13))


@cuda.jit(device=True)
def narrow(bits, kind):
    """Float32 pattern ``bits`` rounded to nearest even in format ``kind``, as a uint16."""
    x = np.uint32(bits)
    magnitude = x & _ABS
    if kind == BF16:
        if magnitude > _INF:  # NaN: stay NaN, quiet
            return np.uint16((x >> np.uint32(16)) | np.uint32(0x40))
        x = x + np.uint32(0x7FFF) + ((x >> np.uint32(16)) & np.uint32(1))
        return np.uint16((x >> np.uint32(16)) & np.uint32(0xFFFF))
    sign = (x >> np.uint32(16)) & np.uint32(0x8000)
    if magnitude > _INF:
        return np.uint16(
            sign | np.uint32(0x7E00) | ((magnitude >> np.uint32(13)) & np.uint32(0x3FF))
        )
    if magnitude >= np.uint32(0x477FF000):  # 65520 and above round to inf
        return np.uint16(sign | np.uint32(0x7C00))
    if magnitude >= np.uint32(0x38800000):  # a normal float16 (or rounds up to 65504)
        r = magnitude - np.uint32(0x38000000)
        r = r + np.uint32(0xFFF) + ((r >> np.uint32(13)) & np.uint32(1))
        return np.uint16(sign | (r >> np.uint32(13)))
    if magnitude <= np.uint32(0x33000000):  # 2**-25 and below (a tie) round to zero
        return np.uint16(sign)
    # A subnormal float16: magnitude / 2**-24, rounded to nearest even.
    shift = np.uint32(126) - (magnitude >> np.uint32(23))
    mantissa = (magnitude & np.uint32(0x7FFFFF)) | np.uint32(0x800000)
    q = mantissa >> shift
    rest = mantissa - (q << shift)
    half = np.uint32(1) << (shift - np.uint32(1))
    if rest > half or (rest == half and (q & np.uint32(1)) == np.uint32(1)):
        q = q + np.uint32(1)
    return np.uint16(sign | q)


@cuda.jit(device=True)
def sum3(a, b, c):
    """``(a + b) + c`` in float32, with x86's NaN bits."""
    s = x86_nan(a + b, a, b)
    return x86_nan(s + c, s, c)
