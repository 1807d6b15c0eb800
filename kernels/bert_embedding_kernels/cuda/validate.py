"""Argument checks for the CUDA kernels: shapes and dtypes on the host, id ranges on the device.

The messages are the CPU's (kernels/bert_embedding_kernels/validate/), so a bad input reads the same
whichever device computes. Ids may already be in GPU memory, where numpy
cannot look at them, so the range check is a kernel: every out-of-range id
lowers a per-array "first bad flat index" with an integer atomic min (exact and
order-independent, unlike float atomics), and one 24-byte read-back tells the
host whether, and where, to raise.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..validate.ids import check_past_length  # the CPU's check and message
from ._runtime import SIMULATOR, as_device, cuda, intersect, is_read_only, memory_span
from .tables import DeviceTables

KERNEL_ID_DTYPES = (np.dtype(np.int32), np.dtype(np.int64))
_NONE = np.iinfo(np.int64).max  # "no bad id" in the range check's flags
# The simulator runs one Python thread per CUDA thread: small blocks keep it fast.
_CHECK_THREADS = 32 if SIMULATOR else 256


class DeviceBatch(NamedTuple):
    """Device ids in the normal form the kernels take (as
    :class:`bert_embedding_kernels.validate.batch.Batch`).

    ``token_type_ids`` and ``position_ids`` are 2-D with a first axis of 1
    (shared by every sequence of the batch) or ``batch``.
    """

    input_ids: object  # (batch, seq) device array
    token_type_ids: object  # (1 | batch, seq)
    position_ids: object  # (1 | batch, seq)

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.input_ids.shape)

    @property
    def num_tokens(self) -> int:
        return int(self.input_ids.size)


@cuda.jit(device=True)
def _flag_out_of_range(ids, b, s, size, first_bad, slot):
    row = 0 if ids.shape[0] == 1 else b  # a shared (1, seq) array is checked at row 0
    value = ids[row, s]
    if value < 0 or value >= size:
        cuda.atomic.min(first_bad, slot, row * ids.shape[1] + s)


@cuda.jit
def _find_out_of_range(input_ids, token_type_ids, position_ids, vocab, types, positions, first_bad):
    """``first_bad[a]`` = lowest flat index of an id of array ``a`` outside its table."""
    t = cuda.grid(1)
    batch, seq = input_ids.shape
    if t < batch * seq:
        b = t // seq
        s = t - b * seq
        _flag_out_of_range(input_ids, b, s, vocab, first_bad, 0)
        _flag_out_of_range(token_type_ids, b, s, types, first_bad, 1)
        _flag_out_of_range(position_ids, b, s, positions, first_bad, 2)


@cuda.jit
def _reset_flags(first_bad):
    if cuda.grid(1) < first_bad.size:
        first_bad[cuda.grid(1)] = _NONE


def _flag_buffers(stream) -> tuple:
    """A device flag array and a page-locked host array for its read-back."""
    pinned = cuda.pinned_array(3, np.int64) if not SIMULATOR else np.empty(3, np.int64)
    return cuda.device_array(3, np.int64, stream=stream), pinned


def _device_ids(name: str, value, stream):
    """Integer ids as a device array: device arrays as they are, host data copied once."""
    array = as_device(value, name)
    if array is None:
        array = np.asarray(value)
        if array.size == 0 and array.dtype == np.float64 and not isinstance(value, np.ndarray):
            array = array.astype(np.int64)  # np.asarray([]) is float64; an empty list is no float
    dtype = np.dtype(array.dtype)
    if dtype.kind not in "iu":
        raise TypeError(
            f"{name} has dtype {dtype}; ids must be integers (bool is not accepted). "
            f"Convert them with np.asarray({name}).astype(np.int64)."
        )
    if isinstance(array, np.ndarray):
        array = np.ascontiguousarray(array, dtype=dtype.newbyteorder("="))
        array = cuda.to_device(array, stream=stream)
    return array


def _raise_out_of_range(name, ids, flat, ndim, size, size_name):
    seq = ids.shape[1]
    b, s = divmod(int(flat), seq)
    value = int(ids[b, s])  # one element read back, on the error path only
    if ndim == 2:
        location = f"{name}[{b}, {s}] (batch {b}, position {s})"
    else:
        location = f"{name}[{s}] (position {s})"
    raise IndexError(
        f"{location} is {value}, out of range: valid ids satisfy 0 <= id < {size} ({size_name})."
    )


def check_range(tables: DeviceTables, batch: DeviceBatch, position_ndim: int = 2, stream=0):
    """Raise the CPU's IndexError for the first id outside its table; one read-back."""
    if batch.num_tokens == 0:
        return
    sizes = (tables.vocab_size, tables.type_vocab_size, tables.max_positions)
    # The flags and the host array they are read into are kept on the tables (no
    # allocation per call); the lock keeps another thread's check off them meanwhile.
    with tables.scratch_lock:
        first_bad, pinned = tables.scratch(("range check", stream), lambda: _flag_buffers(stream))
        _reset_flags[1, 32, stream](first_bad)
        blocks = -(-batch.num_tokens // _CHECK_THREADS)
        _find_out_of_range[blocks, _CHECK_THREADS, stream](*batch, *sizes, first_bad)
        first_bad.copy_to_host(pinned, stream=stream)
        if stream:
            stream.synchronize()
        found = pinned.copy()
    names = (
        ("input_ids", 2, "vocab_size"),
        ("token_type_ids", 2, "type_vocab_size"),
        ("position_ids", position_ndim, "max_positions"),
    )
    for (name, ndim, size_name), ids, flat, size in zip(names, batch, found, sizes, strict=True):
        if flat != _NONE:
            _raise_out_of_range(name, ids, flat, ndim, size, size_name)


def prepare(
    tables: DeviceTables,
    input_ids,
    token_type_ids=None,
    position_ids=None,
    past_length=0,
    *,
    check=True,
    stream=0,
) -> DeviceBatch:
    """Validate ids (host or device) and put them in the kernels' normal form on the device.

    Parameters
    ----------
    tables : DeviceTables
    input_ids : int array, (batch, seq)
        Host data (copied once) or a CUDA array (numba's, or anything with
        ``__cuda_array_interface__``; used in place).
    token_type_ids : int array, (batch, seq), optional
        None means zeros.
    position_ids : int array, (seq,), (1, seq) or (batch, seq), optional
        None means ``arange(past_length, past_length + seq)``.
    past_length : int, default 0
    check : bool, default True
        Run the device range check (one kernel and a 24-byte read-back, which
        waits for the stream). Pass False only for ids already checked, e.g.
        host ids that went through :func:`bert_embedding_kernels.validate.prepare.prepare`.
    stream : numba stream or 0

    Raises
    ------
    TypeError, ValueError, IndexError
        As :func:`bert_embedding_kernels.validate.prepare.prepare`, with the same messages.
    """
    past_length = check_past_length(past_length)
    input_ids = _device_ids("input_ids", input_ids, stream)
    if input_ids.ndim != 2:
        raise ValueError(
            f"input_ids has shape {tuple(input_ids.shape)}; it must be 2-D (batch, seq). "
            "Use input_ids[None, :] for a single sequence."
        )
    batch, seq = input_ids.shape
    ids_dtype = np.dtype(input_ids.dtype)
    # Defaults share input_ids' dtype where it is a kernel dtype, so that a call
    # with defaults compiles no extra specialisation.
    default_dtype = ids_dtype if ids_dtype in KERNEL_ID_DTYPES else np.dtype(np.int64)

    if token_type_ids is None:
        token_type_ids = tables.default_ids("types", 0, seq, default_dtype)
    else:
        token_type_ids = _device_ids("token_type_ids", token_type_ids, stream)
        if tuple(token_type_ids.shape) != (batch, seq):
            raise ValueError(
                f"token_type_ids has shape {tuple(token_type_ids.shape)}; it must match "
                f"input_ids' shape {(batch, seq)}."
            )

    position_ndim = 2
    if position_ids is None:
        if past_length + seq > tables.max_positions:
            raise IndexError(
                f"position_ids (default, past_length={past_length}) run to position "
                f"{past_length + seq - 1}, out of range: valid ids satisfy "
                f"0 <= id < {tables.max_positions} (max_positions)."
            )
        position_ids = tables.default_ids("positions", past_length, seq, default_dtype)
    else:
        position_ids = _device_ids("position_ids", position_ids, stream)
        shape = tuple(position_ids.shape)
        if shape not in {(seq,), (1, seq), (batch, seq)}:
            raise ValueError(
                f"position_ids has shape {shape}; with input_ids of shape "
                f"{(batch, seq)} it must be {(seq,)}, {(1, seq)} or {(batch, seq)}."
            )
        position_ndim = len(shape)
        if position_ndim == 1:
            position_ids = position_ids.reshape(1, seq)

    prepared = DeviceBatch(input_ids, token_type_ids, position_ids)
    if check:
        check_range(tables, prepared, position_ndim, stream)
    return prepared


def check_out(name: str, out, shape: tuple, dtype: np.dtype, inputs) -> object:
    """``out`` as a device array of ``shape`` and ``dtype``, C-contiguous, apart from ``inputs``.

    ``inputs`` holds ``(name, memory_span(array))`` pairs: spans are computed
    once per array (the tables' once per DeviceTables), since on a small call
    these checks cost as much host time as the launch (docs/GPU.md).
    """
    array = as_device(out, name)
    if array is None:
        raise TypeError(
            f"{name} is {type(out).__name__}; it must be a CUDA array (a numba device array, "
            "or anything with __cuda_array_interface__) or None."
        )
    if np.dtype(array.dtype) != dtype:
        raise TypeError(
            f"{name} has dtype {array.dtype}; it must have the tables' dtype {dtype}. "
            f"Allocate it with cuda.device_array({shape}, dtype=np.{dtype})."
        )
    if tuple(array.shape) != shape:
        raise ValueError(f"{name} has shape {tuple(array.shape)}; it must have shape {shape}.")
    if is_read_only(out):
        raise ValueError(f"{name} is read-only; pass a writable array.")
    if not array.is_c_contiguous():
        raise ValueError(f"{name} is not C-contiguous; pass cuda.device_array(shape, dtype).")
    span = memory_span(array)
    for input_name, other in inputs:
        if intersect(span, other):
            raise ValueError(
                f"{name} overlaps {input_name}; pass an array that shares no memory with it."
            )
    return array


@cuda.jit
def _compact(grad, flat):
    """flat[b * seq + s, h] = grad[b, s, h]: a strided grad_output in the layout the sums read."""
    t = cuda.blockIdx.x
    seq = grad.shape[1]
    b = t // seq
    s = t - b * seq
    for h in range(cuda.threadIdx.x, flat.shape[1], cuda.blockDim.x):
        flat[t, h] = grad[b, s, h]


def device_grad(grad_output, shape: tuple, dtype: np.dtype, stream):
    """``grad_output`` (host or device) checked, as a C-contiguous (tokens, hidden) device array."""
    grad = as_device(grad_output, "grad_output")
    if grad is None:
        grad = np.asarray(grad_output)
    if np.dtype(grad.dtype) != dtype:
        raise TypeError(
            f"grad_output has dtype {grad.dtype}; it must have the tables' dtype {dtype}. "
            f"Convert it with grad_output.astype(np.{dtype})."
        )
    if tuple(grad.shape) != shape:
        raise ValueError(
            f"grad_output has shape {tuple(grad.shape)}; it must have shape {shape} "
            "(input_ids' (batch, seq) and the tables' hidden_size)."
        )
    tokens = shape[0] * shape[1]
    if isinstance(grad, np.ndarray):
        grad = cuda.to_device(np.ascontiguousarray(grad), stream=stream)
    elif not grad.is_c_contiguous():  # read once into the (tokens, hidden) layout
        flat = cuda.device_array((tokens, shape[2]), dtype, stream=stream)
        if tokens:
            _compact[tokens, _CHECK_THREADS, stream](grad, flat)
        return flat
    return grad.reshape(tokens, shape[2])


def inputs(tables: DeviceTables, batch: DeviceBatch) -> list:
    """``(name, memory span)`` of every array a kernel reads, for ``check_out``: the tables'
    arrays (LayerNorm's too) and the ids."""
    named = tables.named_spans()
    return named + [
        (name, memory_span(array)) for name, array in zip(DeviceBatch._fields, batch, strict=True)
    ]


def check_targets(label: str, given, tables: DeviceTables, batch: DeviceBatch, grads) -> tuple:
    """The caller's three gradient arrays (``out`` or ``accumulate_into``), checked as out:
    apart from each other, the tables, the ids and ``grads`` (``grad_output`` as given,
    and the copy the sums read where it was copied), as the CPU's ``accumulate_into``."""
    parts = tuple(given) if isinstance(given, (tuple, list)) else None
    if parts is None or len(parts) != 3:
        raise TypeError(
            f"{label} is {type(given).__name__}; it must be a DeviceGradients "
            "(or a tuple) of three CUDA arrays: token, segment and position gradients."
        )
    checked = []
    named = inputs(tables, batch) + [("grad_output", memory_span(grad)) for grad in grads]
    arrays = (tables.token, tables.segment, tables.position)
    for name, array, table in zip(("token", "segment", "position"), parts, arrays, strict=True):
        checked.append(
            check_out(f"{label}.{name}", array, tuple(table.shape), tables.grad_dtype, named)
        )
        named.append((f"{label}.{name}", memory_span(checked[-1])))
    return tuple(checked)
