"""The built-in safetensors reader checks the whole header before it reads any data.

Every malformed file gets one ValueError naming the file, the tensor and the broken rule
(never a MemoryError, a numpy message or a table read from the wrong bytes); a property
test generates headers, valid and broken, and holds the reader to an independent,
deliberately naive statement of the format's rules.
"""

import json
import math
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bert_embedding_kernels.safetensors_file import ITEM_BYTES, MAX_HEADER_BYTES, SafetensorsFile


def write(path, header, data=b"", length=None):
    raw = json.dumps(header).encode() if not isinstance(header, bytes) else header
    size = len(raw) if length is None else length
    path.write_bytes(struct.pack("<Q", size) + raw + data)
    return path


def valid_header():
    return {
        "__metadata__": {"format": "pt"},
        "a": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]},
        "b": {"dtype": "BF16", "shape": [4], "data_offsets": [24, 32]},
    }


def test_a_valid_file_reads_exactly_its_bytes(tmp_path):
    data = np.arange(6, dtype="<f4").tobytes() + bytes(range(8))
    reader = SafetensorsFile(write(tmp_path / "m.safetensors", valid_header(), data))
    assert reader.keys() == {"a", "b"}
    np.testing.assert_array_equal(reader.get("a"), np.arange(6, dtype=np.float32).reshape(2, 3))


def _entry(**changes):
    header = valid_header()
    header["a"] = {**header["a"], **changes}
    return header


@pytest.mark.parametrize(
    "header, length, data_bytes, rule",
    [
        (valid_header(), 10**9, 32, "header length is 1000000000 bytes, beyond"),
        (valid_header(), MAX_HEADER_BYTES + 1, 32, "beyond the file's"),
        (b"{not json", None, 0, "header is not JSON"),
        ([1, 2], None, 0, "header is a JSON list, not an object"),
        ({"__metadata__": {"a": 1}}, None, 0, "__metadata__ is not an object of strings"),
        ({"a": [1]}, None, 0, "tensor 'a' is described by a list"),
        (_entry(dtype="F17"), None, 32, "tensor 'a' has dtype 'F17'"),
        (_entry(shape=[2, -3]), None, 32, "tensor 'a' has shape [2, -3]"),
        (_entry(shape=[2, True]), None, 32, "tensor 'a' has shape [2, True]"),
        (_entry(shape="23"), None, 32, "tensor 'a' has shape '23'"),
        (_entry(data_offsets=[0, 10**12]), None, 32, "tensor 'a' has data_offsets"),
        (_entry(data_offsets=[24, 0]), None, 32, "tensor 'a' has data_offsets"),
        (_entry(data_offsets=[0]), None, 32, "tensor 'a' has data_offsets"),
        (_entry(data_offsets=[0, 20]), None, 32, "tensor 'a' spans 20 bytes, but its shape"),
        (_entry(shape=[10**9, 10**9]), None, 32, "tensor 'a' spans 24 bytes"),
        (_entry(data_offsets=[4, 28]), None, 32, "tensors 'a' and 'b' overlap"),
    ],
)
def test_a_malformed_header_is_one_value_error_naming_file_tensor_and_rule(
    tmp_path, header, length, data_bytes, rule
):
    path = write(tmp_path / "m.safetensors", header, bytes(data_bytes), length)
    with pytest.raises(ValueError, match="not a valid safetensors file") as error:
        SafetensorsFile(path)
    message = str(error.value)
    assert str(path) in message and rule in message, message
    assert "\n" not in message


def test_a_file_shorter_than_its_length_prefix(tmp_path):
    path = tmp_path / "m.safetensors"
    path.write_bytes(b"\x01\x02")
    with pytest.raises(ValueError, match="fewer than the 8 of its length"):
        SafetensorsFile(path)


def naive_rules_hold(header: dict, data_bytes: int) -> bool:
    """The format's rules, stated independently of the reader: a deliberately plain loop."""
    spans = []
    for key, entry in header.items():
        if key == "__metadata__":
            if not isinstance(entry, dict):
                return False
            for k, v in entry.items():
                if type(k) is not str or type(v) is not str:
                    return False
            continue
        if type(entry) is not dict or entry.get("dtype") not in ITEM_BYTES:
            return False
        shape, offsets = entry.get("shape"), entry.get("data_offsets")
        if type(shape) is not list or type(offsets) is not list or len(offsets) != 2:
            return False
        for n in [*shape, *offsets]:
            if type(n) is not int or n < 0:
                return False
        begin, end = offsets
        if begin > end or end > data_bytes:
            return False
        if end - begin != math.prod(shape) * ITEM_BYTES[entry["dtype"]]:
            return False
        spans.append((begin, end))
    spans.sort()
    return all(spans[i][1] <= spans[i + 1][0] for i in range(len(spans) - 1))


numbers = st.one_of(
    st.integers(-5, 40), st.just(2**63), st.booleans(), st.none(), st.text(max_size=2)
)
entries = st.fixed_dictionaries(
    {
        "dtype": st.sampled_from(["F32", "BF16", "F16", "U8", "I64", "F17", ""]),
        "shape": st.one_of(st.lists(numbers, max_size=3), numbers),
        "data_offsets": st.one_of(st.lists(numbers, min_size=0, max_size=3), numbers),
    }
)
headers = st.dictionaries(st.sampled_from(["a", "b", "c", "__metadata__"]), entries, max_size=3)


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(header=headers, data_bytes=st.integers(0, 64))
def test_every_generated_header_is_read_or_refused_by_the_rules(tmp_path, header, data_bytes):
    path = write(tmp_path / "m.safetensors", header, bytes(range(data_bytes)))
    try:
        reader = SafetensorsFile(path)
    except ValueError as error:
        assert str(path) in str(error) and not naive_rules_hold(header, data_bytes)
        return
    assert naive_rules_hold(header, data_bytes), header
    for key in reader.header:  # an accepted header reads each tensor's own bytes
        entry = header[key]
        if entry["dtype"] == "F32":
            begin, end = entry["data_offsets"]
            expected = np.frombuffer(bytes(range(data_bytes))[begin:end], "<f4")
            got = reader.get(key)
            assert got.shape == tuple(entry["shape"])
            np.testing.assert_array_equal(got.reshape(-1).view(np.uint8), expected.view(np.uint8))
