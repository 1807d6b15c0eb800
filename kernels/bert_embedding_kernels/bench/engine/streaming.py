"""Non-temporal (streaming) stores for numba kernels: the copy roofline's limit of writing.

A plain store to a line that is not in cache first reads the line (read for
ownership), so writing N bytes moves 2N over the memory bus. A store marked
``!nontemporal`` (``vmovntps`` on x86) writes the line without reading it, and
bypasses the caches that the output, written once and read later by someone
else, would only pollute. numba has no way to say so: :func:`stream32` emits one
32-byte vector store with that metadata (:mod:`bert_embedding_kernels.methods.fused.vectors` has the
fused kernel's streaming stores and the fence that makes them visible).

The destination of every :func:`stream32` must be 32-byte aligned (the callers
compute an aligned start). Measured on this project's 2-core machine: a parallel
copy of 48 MiB with these stores took 2.10 ms against 2.78 ms for the plain copy.
The fused kernel's scalar loop with them measured no faster (4.40 against 4.25 ms); once
that loop ran in whole vectors they paid (docs/FORWARD.md).
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.extending import intrinsic

VECTOR_BYTES = 32  # one AVX register; the alignment every streaming store needs
ALIGNMENT = VECTOR_BYTES
LANES = 8  # float32 values per store (VECTOR_BYTES / 4)


@intrinsic
def stream32(typingctx, destination, index, source, source_index):
    """``destination[index : index + n] = source[source_index : ...]``, n = 32 bytes' worth.

    Both arrays have one element type; ``destination`` at ``index`` must be 32-byte
    aligned. The load from ``source`` may be unaligned.
    """
    if destination.dtype != source.dtype:
        return None

    def codegen(context, builder, signature, args):
        destination_type, _, source_type, _ = signature.args
        element = context.get_data_type(destination_type.dtype)
        lanes = VECTOR_BYTES // context.get_abi_sizeof(element)
        vector = ir.VectorType(element, lanes)
        target = context.make_array(destination_type)(context, builder, args[0])
        origin = context.make_array(source_type)(context, builder, args[2])
        load_from = builder.bitcast(builder.gep(origin.data, [args[3]]), vector.as_pointer())
        store_to = builder.bitcast(builder.gep(target.data, [args[1]]), vector.as_pointer())
        store = builder.store(builder.load(load_from, align=1), store_to, align=VECTOR_BYTES)
        store.set_metadata("nontemporal", builder.module.add_metadata([ir.IntType(32)(1)]))
        return context.get_dummy_value()

    return types.void(destination, index, source, source_index), codegen
