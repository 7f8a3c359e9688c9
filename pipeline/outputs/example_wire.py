"""``tf.train.Example`` in protobuf wire format, written straight from numpy buffers.

A float feature's payload is the array's little-endian bytes (a view: copied once when the
record is joined, or not at all when the shard sink writes its parts), an int64
feature's payload is its varints (computed for a whole batch at once with numpy),
and everything else is a few length-prefixed headers. The layout follows
``tensorflow/core/example/example.proto`` and ``feature.proto``::

    Example  { Features features = 1; }
    Features { map<string, Feature> feature = 1; }       # entries: key = 1, value = 2
    Feature  { BytesList bytes_list = 1; FloatList float_list = 2; Int64List int64_list = 3; }
    *List    { repeated <type> value = 1 [packed = true]; }  # bytes: one field per value
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

__all__ = ["Chunks", "Int64Varints", "SerializedParts", "bytes_feature", "example", "example_parts",
           "float_feature", "int64_feature", "int64_scalar_feature", "varint"]

_LENGTH_DELIMITED_FIELD_1 = b"\x0a"
_MAP_VALUE = b"\x12"
_BYTES_LIST, _FLOAT_LIST, _INT64_LIST = b"\x0a", b"\x12", b"\x1a"
_MAX_VARINT_BYTES = 10
_LITTLE_ENDIAN_FLOAT32 = np.dtype("<f4")
_SEPARATE_BYTES = 64 * 1024  # a chunk this large is written as it is; smaller ones are joined
# A record this small is joined whole: its bytes are still in the cache when the file write copies
# them. Larger ones are written from the outputs' buffers. Side by side in one process on the
# feed-ceiling model and corpus (1 worker, float32 sequence output), parts for every record ran
# 164k real tokens/s at 512 against 123k joined, but 117–118k at 128 against 120–127k; with this
# limit, 170k against 150k at 512, and 128 (records up to 0.5 MiB) is joined as before.
_JOIN_AT_MOST = 1024 * 1024


def varint(value: int) -> bytes:
    """One unsigned varint; negative int64 values take their 64-bit two's complement."""
    value &= 0xFFFFFFFFFFFFFFFF
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


# The serialized pieces of one message: bytes, and 1-D uint8 views of numpy arrays (which
# ``bytes.join``, file writes and CRC32C all take as they are).
Chunks = list[bytes | np.ndarray]


class SerializedParts(tuple):
    """A serialized message as its pieces in order, for a writer that writes them one after the
    other instead of joining them first; ``bytes(parts)`` joins them. Pickled (when it crosses a
    fusion break) it becomes its joined bytes."""

    def __bytes__(self) -> bytes:
        return b"".join(self)

    def __reduce__(self):
        return bytes, (bytes(self),)


def _header(tag: bytes, length: int) -> bytes:
    return tag + varint(length)


def _size(chunks: Chunks) -> int:
    return sum(len(chunk) for chunk in chunks)


def _field(tag: bytes, chunks: Chunks) -> Chunks:
    return [_header(tag, _size(chunks)), *chunks]


def _packed_list(payload) -> Chunks:
    """A *List message whose values are one packed field (empty when there are none)."""
    return [_header(_LENGTH_DELIMITED_FIELD_1, len(payload)), payload] if len(payload) else []


class Int64Varints:
    """The varints of a flat int64 array, encoded at once; ``span(start, stop)`` gives the
    bytes of elements ``start:stop`` without re-encoding."""

    def __init__(self, values: np.ndarray) -> None:
        unsigned = np.ascontiguousarray(values, dtype=np.int64).view(np.uint64)
        sizes = np.ones(unsigned.shape, dtype=np.int64)
        for shift in range(7, 7 * _MAX_VARINT_BYTES, 7):
            sizes += unsigned >= (np.uint64(1) << np.uint64(shift))
        self._ends = np.zeros(unsigned.size + 1, dtype=np.int64)
        np.cumsum(sizes, out=self._ends[1:])
        out = np.empty(int(self._ends[-1]), dtype=np.uint8)
        starts = self._ends[:-1]
        for index in range(_MAX_VARINT_BYTES):
            present = sizes > index
            if not present.any():
                break
            group = (unsigned[present] >> np.uint64(7 * index)) & np.uint64(0x7F)
            continued = (sizes[present] > index + 1).astype(np.uint64) << np.uint64(7)
            out[starts[present] + index] = (group | continued).astype(np.uint8)
        self._buffer = out.tobytes()

    def span(self, start: int, stop: int) -> bytes:
        return self._buffer[self._ends[start]:self._ends[stop]]


def bytes_feature(values: Iterable[bytes]) -> Chunks:
    """A Feature holding a BytesList."""
    items: Chunks = []
    for value in values:
        items += [_header(_LENGTH_DELIMITED_FIELD_1, len(value)), value]
    return _field(_BYTES_LIST, items)


def float_feature(values: np.ndarray) -> Chunks:
    """A Feature holding a packed FloatList of the array's values (any shape, row-major);
    the payload is a view of the array, copied once when the Example is joined."""
    array = np.ascontiguousarray(values, dtype=_LITTLE_ENDIAN_FLOAT32)
    return _field(_FLOAT_LIST, _packed_list(array.reshape(-1).view(np.uint8)))


def int64_feature(packed_varints: bytes) -> Chunks:
    """A Feature holding a packed Int64List, given its values' varints."""
    return _field(_INT64_LIST, _packed_list(packed_varints))


def int64_scalar_feature(value: int) -> Chunks:
    """A Feature holding an Int64List of one value."""
    return int64_feature(varint(value))


def example_parts(features: Sequence[tuple[str, Chunks]]) -> SerializedParts:
    """A serialized Example from (key, Feature chunks) pairs, written in the given order, as pieces."""
    entries: Chunks = []
    for key, feature in features:
        entries += _field(_LENGTH_DELIMITED_FIELD_1,
                          [*_field(_LENGTH_DELIMITED_FIELD_1, [key.encode("utf-8")]),
                           *_field(_MAP_VALUE, feature)])
    chunks = _field(_LENGTH_DELIMITED_FIELD_1, entries)
    if _size(chunks) <= _JOIN_AT_MOST:
        return SerializedParts((b"".join(chunks),))
    return SerializedParts(_coalesced(chunks))


def _coalesced(chunks: Chunks) -> Chunks:
    """The chunks with each run of small ones joined, so that a writer makes a few calls a record."""
    parts: Chunks = []
    run: list[bytes | np.ndarray] = []
    for chunk in chunks:
        if len(chunk) >= _SEPARATE_BYTES:
            if run:
                parts.append(b"".join(run))
                run = []
            parts.append(chunk)
        else:
            run.append(chunk)
    if run:
        parts.append(b"".join(run))
    return parts


def example(features: Sequence[tuple[str, Chunks]]) -> bytes:
    """A serialized Example from (key, Feature chunks) pairs, written in the given order."""
    return bytes(example_parts(features))
