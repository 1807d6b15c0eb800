"""A reader of the safetensors format that trusts nothing in the file.

safetensors' own numpy loader cannot read BF16 (numpy has no bfloat16), so the format is
read here: an 8-byte little-endian header length, a JSON header, then the raw tensors.
The whole header is checked against the format's rules before any tensor is read, and
only the tensors asked for are read:

- the header length is at most ``MAX_HEADER_BYTES`` (safetensors' own limit, 100 MB) and
  lies within the file; the header is a JSON object;
- ``__metadata__``, if present, maps strings to strings;
- every other entry is a tensor: a known dtype, a shape of non-negative integers, and
  ``data_offsets`` ``[begin, end]`` with ``0 <= begin <= end <= `` the data section's
  length and ``end - begin`` equal to the shape's element count times the dtype's size;
- no two tensors' byte ranges overlap.

A file that breaks a rule gets one ``ValueError`` naming the file, the tensor and the
rule, never a ``MemoryError``, a numpy message or a table read from the wrong bytes.
"""

from __future__ import annotations

import itertools
import json
import math
import struct
from pathlib import Path

import numpy as np

from .dtypes import BFLOAT16

MAX_HEADER_BYTES = 100_000_000
# Every dtype of the format, with its size in bytes (a tensor of any of them may sit in a
# checkpoint beside the tables: its byte range is checked all the same).
ITEM_BYTES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "F8_E8M0": 1,
    "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4,
    "I64": 8, "U64": 8, "F64": 8,
}  # fmt: skip
# The dtypes an embedding table may be stored in, as numpy reads them.
STORED_DTYPES = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": BFLOAT16,
}


class SafetensorsFile:
    """The checked header of a ``.safetensors`` file, and its tensors read one at a time."""

    def __init__(self, path: Path):
        self.path = path
        self.header = self._read_header()
        self._check_tensors()

    def _broken(self, rule: str) -> ValueError:
        return ValueError(f"{self.path} is not a valid safetensors file: {rule}.")

    def _read_header(self) -> dict:
        file_bytes = self.path.stat().st_size
        with open(self.path, "rb") as handle:
            prefix = handle.read(8)
            if len(prefix) < 8:
                raise self._broken(f"it has {file_bytes} bytes, fewer than the 8 of its length")
            (size,) = struct.unpack("<Q", prefix)
            if size > MAX_HEADER_BYTES or 8 + size > file_bytes:
                raise self._broken(
                    f"its header length is {size} bytes, beyond the file's {file_bytes} bytes "
                    f"or the format's limit of {MAX_HEADER_BYTES}"
                )
            raw = handle.read(size)
        try:
            header = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as error:
            raise self._broken(f"its header is not JSON ({error})") from None
        if not isinstance(header, dict):
            raise self._broken(f"its header is a JSON {type(header).__name__}, not an object")
        self.data_start, self.data_bytes = 8 + size, file_bytes - 8 - size
        metadata = header.pop("__metadata__", {})
        if not isinstance(metadata, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
        ):
            raise self._broken("__metadata__ is not an object of strings")
        return header

    def _check_tensors(self) -> None:
        ranges = []
        for key, entry in self.header.items():
            where = f"tensor {key!r}"
            if not isinstance(entry, dict):
                raise self._broken(f"{where} is described by a {type(entry).__name__}")
            dtype, shape, offsets = (
                entry.get("dtype"),
                entry.get("shape"),
                entry.get("data_offsets"),
            )
            if dtype not in ITEM_BYTES:
                raise self._broken(f"{where} has dtype {dtype!r}, not one of the format's")
            if not isinstance(shape, list) or not all(_is_count(n) for n in shape):
                raise self._broken(f"{where} has shape {shape!r}, not a list of integers >= 0")
            if (
                not isinstance(offsets, list)
                or len(offsets) != 2
                or not all(_is_count(n) for n in offsets)
                or not offsets[0] <= offsets[1] <= self.data_bytes
            ):
                raise self._broken(
                    f"{where} has data_offsets {offsets!r}, not [begin, end] with "
                    f"0 <= begin <= end <= {self.data_bytes} (the data section's length)"
                )
            expected = math.prod(shape) * ITEM_BYTES[dtype]
            if offsets[1] - offsets[0] != expected:
                raise self._broken(
                    f"{where} spans {offsets[1] - offsets[0]} bytes, but its shape {shape} of "
                    f"{dtype} needs {expected}"
                )
            ranges.append((offsets[0], offsets[1], key))
        ranges.sort()
        for (_, end, first), (begin, _, second) in itertools.pairwise(ranges):
            if begin < end:
                raise self._broken(f"tensors {first!r} and {second!r} overlap")

    def keys(self) -> set[str]:
        return set(self.header)

    def get(self, key: str) -> np.ndarray:
        """Tensor ``key`` as stored (only its bytes are read)."""
        entry = self.header[key]
        dtype = STORED_DTYPES.get(entry["dtype"])
        if dtype is None:
            raise TypeError(
                f"{self.path}: tensor {key!r} is stored as {entry['dtype']}; embedding "
                f"tables must be one of {', '.join(STORED_DTYPES)}."
            )
        begin, end = entry["data_offsets"]
        array = np.fromfile(
            self.path, dtype, (end - begin) // dtype.itemsize, offset=self.data_start + begin
        )
        return array.reshape(entry["shape"])


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
