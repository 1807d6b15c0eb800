"""Whole-vector row arithmetic for the fused kernels, emitted through llvmlite.

Why not plain loops: LLVM vectorises ``o[h] = t[h] + g[h] + p[h]`` only after a
runtime check that the output row overlaps none of the input rows, and it
gives up when a loop has more pointer pairs to check than its threshold (eight
by default). The fused kernel's loop over four rows at once has four outputs
and twelve inputs, so it ran one element at a time; with these vectors it runs
one cache line (64 bytes) per instruction (docs/FORWARD.md). The caller
guarantees what the check would have: validation keeps ``out`` apart from every
table (:mod:`bert_embedding_kernels.validate`).

Same bits as the scalar loop: each lane computes ``(a + b) + c`` in the arrays'
dtype, the IEEE operations of the scalar code in the same order, with no
contraction into fused multiply-adds.

A streaming (``!nontemporal``) store writes a whole line without first reading
it (the read for ownership a plain store pays) and keeps the output, written
once, from evicting the rows the kernel is still reading. Such stores are weakly
ordered: :func:`store_fence` makes them visible before the kernel returns.

``VECTOR_BYTES`` is one cache line and one AVX-512 register; LLVM splits the
vector into the registers a machine has (two AVX2, four SSE or NEON), so the
same code compiles everywhere.
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from .halfbits import BF16

VECTOR_BYTES = 64


@intrinsic
def vector_lanes(typingctx, row):
    """Elements of ``row``'s dtype in one vector: a compile-time constant."""

    def codegen(context, builder, signature, args):
        element = context.get_data_type(signature.args[0].dtype)
        return context.get_constant(types.intp, VECTOR_BYTES // context.get_abi_sizeof(element))

    return types.intp(row), codegen


def _vector_pointer(context, builder, signature, args, position: int, vector, start) -> ir.Value:
    """A ``vector`` pointer to element ``start`` of array argument ``position``."""
    array = context.make_array(signature.args[position])(context, builder, args[position])
    return builder.bitcast(builder.gep(array.data, [start]), vector.as_pointer())


def _sum3_intrinsic(streaming: bool):
    @intrinsic
    def sum3(typingctx, out, first, second, third, start):
        if not first.dtype == second.dtype == third.dtype == out.dtype:
            return None

        def codegen(context, builder, signature, args):
            element = context.get_data_type(signature.args[0].dtype)
            vector = ir.VectorType(element, VECTOR_BYTES // context.get_abi_sizeof(element))

            def at(position: int) -> ir.Value:
                return _vector_pointer(context, builder, signature, args, position, vector, args[4])

            loaded = [builder.load(at(position), align=1) for position in (1, 2, 3)]
            total = builder.fadd(builder.fadd(loaded[0], loaded[1]), loaded[2])
            if streaming:
                store = builder.store(total, at(0), align=VECTOR_BYTES)
                store.set_metadata("nontemporal", builder.module.add_metadata([ir.IntType(32)(1)]))
            else:
                builder.store(total, at(0), align=1)
            return context.get_dummy_value()

        return types.void(out, first, second, third, start), codegen

    return sum3


# ``out[start : start + lanes] = (first[...] + second[...]) + third[...]``: one vector of
# ``vector_lanes(out)`` elements from ``start``, which the caller keeps inside all four
# rows (no bounds check runs here). Unaligned loads and store.
sum3_store = _sum3_intrinsic(streaming=False)
# The same with a streaming store: ``out`` at ``start`` must be ``VECTOR_BYTES``-aligned
# (an unaligned streaming store faults on x86); end the kernel's writes with store_fence.
sum3_stream = _sum3_intrinsic(streaming=True)


@intrinsic
def copy_stream(typingctx, out, row, start):
    """``out[start : start + lanes] = row[...]`` with a streaming store: ``out`` at ``start``
    must be ``VECTOR_BYTES``-aligned; end the kernel's writes with :func:`store_fence`."""
    if out.dtype != row.dtype:
        return None

    def codegen(context, builder, signature, args):
        element = context.get_data_type(signature.args[0].dtype)
        vector = ir.VectorType(element, VECTOR_BYTES // context.get_abi_sizeof(element))
        source = _vector_pointer(context, builder, signature, args, 1, vector, args[2])
        target = _vector_pointer(context, builder, signature, args, 0, vector, args[2])
        store = builder.store(builder.load(source, align=1), target, align=VECTOR_BYTES)
        store.set_metadata("nontemporal", builder.module.add_metadata([ir.IntType(32)(1)]))
        return context.get_dummy_value()

    return types.void(out, row, start), codegen


# Elements per vector of the 16-bit kernels: they add in float32, so one 64-byte float32 vector.
HALF_LANES = VECTOR_BYTES // 4


def _half_codegen(context, builder, signature, args, start: ir.Value, kind: ir.Value):
    """Builders shared by the 16-bit intrinsics: vectors of ``HALF_LANES`` lanes, loads
    that widen 16-bit patterns to float32 and a store that rounds them back."""
    i16, i32, f32 = ir.IntType(16), ir.IntType(32), ir.FloatType()
    lanes = HALF_LANES

    def vector(element):
        return ir.VectorType(element, lanes)

    def splat(value: int) -> ir.Constant:
        return ir.Constant(vector(i32), [value] * lanes)

    def pointer(position: int, element) -> ir.Value:
        return _vector_pointer(context, builder, signature, args, position, vector(element), start)

    is_bfloat16 = builder.icmp_signed("==", kind, ir.Constant(kind.type, BF16))

    def widened(positions) -> list[ir.Value]:
        """The float32 values of the 16-bit patterns at the start of these arguments."""
        patterns = [builder.load(pointer(position, i16), align=1) for position in positions]
        with builder.if_else(is_bfloat16) as (bfloat16, float16):
            with bfloat16:
                shifted = [builder.shl(builder.zext(p, vector(i32)), splat(16)) for p in patterns]
                wide_bf16 = [builder.bitcast(value, vector(f32)) for value in shifted]
                block_bf16 = builder.block
            with float16:
                as_half = [builder.bitcast(p, vector(ir.HalfType())) for p in patterns]
                wide_f16 = [builder.fpext(value, vector(f32)) for value in as_half]
                block_f16 = builder.block
        wide = []
        for from_bf16, from_f16 in zip(wide_bf16, wide_f16, strict=True):
            merged = builder.phi(vector(f32))
            merged.add_incoming(from_bf16, block_bf16)
            merged.add_incoming(from_f16, block_f16)
            wide.append(merged)
        return wide

    def stored(total: ir.Value) -> None:
        """``total`` (float32 lanes) into argument 0: as it is into a float32 row, else
        rounded to nearest even into 16-bit patterns."""
        if signature.args[0].dtype == types.float32:
            builder.store(total, pointer(0, f32), align=1)
            return
        with builder.if_else(is_bfloat16) as (bfloat16, float16):
            with bfloat16:
                value = builder.bitcast(total, vector(i32))
                high = builder.lshr(value, splat(16))
                magnitude = builder.and_(value, splat(0x7FFFFFFF))
                is_nan = builder.icmp_unsigned(">", magnitude, splat(0x7F800000))
                quiet_nan = builder.or_(high, splat(0x40))
                even = builder.and_(high, splat(1))
                rounded = builder.lshr(
                    builder.add(value, builder.add(splat(0x7FFF), even)), splat(16)
                )
                chosen = builder.select(is_nan, quiet_nan, rounded)
                builder.store(builder.trunc(chosen, vector(i16)), pointer(0, i16), align=1)
            with float16:
                narrowed = builder.fptrunc(total, vector(ir.HalfType()))
                builder.store(builder.bitcast(narrowed, vector(i16)), pointer(0, i16), align=1)

    return widened, stored, pointer


@intrinsic
def sum3_half(typingctx, out, first, second, third, start, kind):
    """``out[start : start + HALF_LANES]`` = the float32 sum of three rows of 16-bit patterns.

    ``kind`` is :data:`bert_embedding_kernels.halfbits.BF16` or ``F16``. Each lane is what
    :func:`bert_embedding_kernels.halfbits.widen` and ``store`` compute for one element: both
    formats widen exactly, the float32 ``(a + b) + c`` is stored as it is into a
    float32 ``out``, or rounded to nearest even into a uint16 ``out`` (bfloat16 by
    integer arithmetic on the bits, a NaN kept a quiet NaN; float16 by LLVM's
    ``fptrunc``), so the bits equal the scalar loop's.
    """
    if any(row.dtype != types.uint16 for row in (first, second, third)):
        return None
    if out.dtype not in (types.uint16, types.float32):
        return None

    def codegen(context, builder, signature, args):
        widened, stored, _ = _half_codegen(context, builder, signature, args, *args[4:6])
        wide = widened((1, 2, 3))
        stored(builder.fadd(builder.fadd(wide[0], wide[1]), wide[2]))
        return context.get_dummy_value()

    return types.void(out, first, second, third, start, kind), codegen


@intrinsic
def round_half(typingctx, out, row, start, kind):
    """``out[start : start + HALF_LANES]`` = float32 ``row``'s elements there, rounded into
    16-bit patterns of format ``kind`` as :func:`bert_embedding_kernels.halfbits.store` rounds one
    (or
    copied, where ``out`` is float32)."""
    if row.dtype != types.float32 or out.dtype not in (types.uint16, types.float32):
        return None

    def codegen(context, builder, signature, args):
        _, stored, pointer = _half_codegen(context, builder, signature, args, *args[2:4])
        stored(builder.load(pointer(1, ir.FloatType()), align=1))
        return context.get_dummy_value()

    return types.void(out, row, start, kind), codegen


@intrinsic
def store_fence(typingctx):
    """A full fence: every streaming store before it is visible before anything after it.

    LLVM's ``fence seq_cst`` (``mfence`` on x86, which orders the weakly ordered
    streaming stores too; ``dmb ish`` on ARM). numba's JIT has no assembler for
    inline ``sfence``, and a target intrinsic would not compile elsewhere.
    """

    def codegen(context, builder, signature, args):
        builder.fence("seq_cst")
        return context.get_dummy_value()

    return types.void(), codegen
