"""The ``id`` and ``window`` of serialized tf.Examples, read from the protobuf wire format without
parsing their outputs: what an incremental run needs from an earlier run's TFRecord shards."""

from __future__ import annotations

from pipeline import schema

__all__ = ["example_key"]

# Protobuf tags (field number << 3 | wire type) of the tf.train.Example messages walked here.
_LENGTH_DELIMITED_1 = 0x0A  # Example.features, Features.feature, an entry's key, Feature.bytes_list,
#                             BytesList.value and a packed Int64List.value
_LENGTH_DELIMITED_2 = 0x12  # a feature map entry's value
_INT64_LIST = 0x1A  # Feature.int64_list
_VARINT_1 = 0x08  # an unpacked Int64List.value
_ID_KEY, _WINDOW_KEY = schema.ID.encode(), schema.WINDOW.encode()


def _varint(data: bytes, position: int) -> tuple[int, int]:
    """The protobuf varint at ``position``, and the position after it."""
    byte = data[position]
    if byte < 0x80:
        return byte, position + 1
    value, shift = byte & 0x7F, 7
    while True:
        position += 1
        byte = data[position]
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, position + 1
        shift += 7


def _skip(data: bytes, position: int, tag: int) -> int:
    """The position after the value of a field with ``tag`` that starts at ``position``, unread."""
    wire_type = tag & 7
    if wire_type == 0:
        return _varint(data, position)[1]
    if wire_type == 2:
        length, position = _varint(data, position)
        return position + length
    if wire_type in (1, 5):
        return position + (8 if wire_type == 1 else 4)
    raise ValueError(f"an earlier record is no tf.train.Example (protobuf wire type {wire_type})")


def example_key(serialized: bytes) -> tuple[str, int]:
    """The ``id`` and ``window`` of a serialized tf.train.Example, parsing no other feature.

    Walks the Example's feature map entries by their length headers and decodes those two only, so
    a record's outputs (kilobytes to megabytes) are skipped unread: 3.3 µs a record against
    ``tf.train.Example.FromString``'s 4.3 on pooled outputs of 768, 3.4 against 41 with a 128 x 768
    sequence output (``benchmarks/skip_embedded.py``).
    """
    found: dict[bytes, str | int] = {}
    position, end = 0, len(serialized)
    while position < end:
        tag, position = _varint(serialized, position)
        if tag != _LENGTH_DELIMITED_1:  # not Example.features
            position = _skip(serialized, position, tag)
            continue
        length, position = _varint(serialized, position)
        features_end = position + length
        while position < features_end:
            tag, position = _varint(serialized, position)
            if tag != _LENGTH_DELIMITED_1:  # not a Features.feature entry
                position = _skip(serialized, position, tag)
                continue
            length, position = _varint(serialized, position)
            key, value = _wanted_entry(serialized, position, position + length)
            position += length
            if value is not None:
                found[key] = value
                if len(found) == 2:
                    return _checked_key(found[_ID_KEY], found[_WINDOW_KEY])
    raise ValueError("an earlier record lacks its id or window feature")


def _checked_key(document_id: str | int, window: str | int) -> tuple[str, int]:
    if not isinstance(document_id, str) or not isinstance(window, int):
        raise ValueError("an earlier record's id is not bytes or its window not int64")
    return document_id, window


def _wanted_entry(data: bytes, start: int, end: int) -> tuple[bytes | None, str | int | None]:
    """A feature map entry's key and first value if the key is ``id`` or ``window``, else (key, None)."""
    key, value_at = None, None
    position = start
    while position < end:
        tag, position = _varint(data, position)
        if tag == _LENGTH_DELIMITED_1:
            length, position = _varint(data, position)
            key = data[position:position + length]
            position += length
        elif tag == _LENGTH_DELIMITED_2:
            length, position = _varint(data, position)
            value_at = (position, position + length)
            position += length
        else:
            position = _skip(data, position, tag)
    if value_at is None or key not in (_ID_KEY, _WINDOW_KEY):
        return key, None
    return key, _first_value(data, *value_at)


def _first_value(data: bytes, start: int, end: int) -> str | int | None:
    """A Feature's first value: a BytesList's as text, an Int64List's as int (packed or not)."""
    position = start
    while position < end:
        kind, position = _varint(data, position)
        if kind not in (_LENGTH_DELIMITED_1, _INT64_LIST):  # neither bytes_list nor int64_list
            position = _skip(data, position, kind)
            continue
        length, position = _varint(data, position)
        list_end = position + length
        while position < list_end:
            tag, position = _varint(data, position)
            if tag == _LENGTH_DELIMITED_1:
                length, position = _varint(data, position)
                if kind == _INT64_LIST:
                    return _varint(data, position)[0] if length else None
                return data[position:position + length].decode("utf-8")
            if tag == _VARINT_1 and kind == _INT64_LIST:
                return _varint(data, position)[0]
            position = _skip(data, position, tag)
    return None
