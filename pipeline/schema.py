"""The output contract: feature keys, types and shapes, declared once.

The writer, the reader, the tensorflow-metadata schema file and the tests all
derive from these constants.
"""

from __future__ import annotations

from collections.abc import Sequence

from transforms.model_outputs import FLOAT32, MEAN, OUTPUT_KINDS, POOLED, SEQUENCE, SEQUENCE_DTYPES

__all__ = ["FLOAT32", "MEAN", "POOLED", "SEQUENCE", "SEQUENCE_DTYPES"]  # re-exported: the contract

ID = "id"
WINDOW = "window"
TOKEN_OFFSET = "token_offset"
SEQUENCE_LENGTH = "sequence_length"
INPUT_IDS = "input_ids"
SEGMENT_IDS = "segment_ids"
HIDDEN_SIZE = "hidden_size"
POOLED_OUTPUT = "pooled_output"
MEAN_OUTPUT = "mean_output"
SEQUENCE_OUTPUT = "sequence_output"

OUTPUT_CHOICES = OUTPUT_KINDS
OUTPUT_FEATURES = {POOLED: POOLED_OUTPUT, MEAN: MEAN_OUTPUT, SEQUENCE: SEQUENCE_OUTPUT}
DTYPE_TAG = "dtype:"

SCHEMA_SUFFIX = ".schema.pbtxt"
SHARD_SUFFIX = ".tfrecord"

# Scalar int64 features, one value per record.
SCALAR_INT_FEATURES = (WINDOW, TOKEN_OFFSET, SEQUENCE_LENGTH, HIDDEN_SIZE)
# Token-level int64 features, sequence_length values per record.
TOKEN_INT_FEATURES = (INPUT_IDS, SEGMENT_IDS)


def parse_outputs(text: str) -> tuple[str, ...]:
    """Parses ``--outputs`` (e.g. ``pooled,sequence``) into a tuple of known output kinds."""
    chosen = tuple(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    unknown = [part for part in chosen if part not in OUTPUT_CHOICES]
    if unknown or not chosen:
        raise ValueError(
            f"--outputs must list one or more of {', '.join(OUTPUT_CHOICES)}; got {text!r}."
        )
    return chosen


def build_schema(outputs: Sequence[str], hidden_size: int, sequence_dtype: str = FLOAT32):
    """The tensorflow-metadata Schema of the records that a run with ``outputs`` writes.

    A 16-bit ``sequence_dtype`` stores ``sequence_output`` as one bytes value of raw
    little-endian numbers, tagged ``dtype:float16`` or ``dtype:bfloat16``.
    """
    from tensorflow_metadata.proto.v0 import schema_pb2

    schema = schema_pb2.Schema()

    def add(name: str, kind: int, fixed: int | None, description: str) -> None:
        feature = schema.feature.add(name=name, type=kind)
        feature.presence.min_fraction = 1.0
        feature.presence.min_count = 1
        if fixed is not None:
            feature.shape.dim.add(size=fixed)
        else:
            feature.value_count.min = 1
        feature.annotation.comment.append(description)

    add(ID, schema_pb2.BYTES, 1, "Document id (UTF-8).")
    add(WINDOW, schema_pb2.INT, 1, "Window index within the document, 0 when not windowed.")
    add(TOKEN_OFFSET, schema_pb2.INT, 1,
        "Position of the window's first wordpiece in the document's wordpieces (without [CLS]).")
    add(SEQUENCE_LENGTH, schema_pb2.INT, 1, "Real tokens, [CLS] and [SEP] included.")
    add(INPUT_IDS, schema_pb2.INT, None, "Wordpiece ids, sequence_length values.")
    add(SEGMENT_IDS, schema_pb2.INT, None, "Segment ids (0 for text A, 1 for text B).")
    add(HIDDEN_SIZE, schema_pb2.INT, 1, "Width of the model's outputs.")
    hidden = next(feature for feature in schema.feature if feature.name == HIDDEN_SIZE)
    hidden.int_domain.min = hidden.int_domain.max = hidden_size
    if POOLED in outputs:
        add(POOLED_OUTPUT, schema_pb2.FLOAT, hidden_size, "The model's pooled_output.")
    if MEAN in outputs:
        add(MEAN_OUTPUT, schema_pb2.FLOAT, hidden_size,
            "Mean of sequence_output over the real tokens, [CLS] and [SEP] included.")
    if SEQUENCE in outputs and sequence_dtype == FLOAT32:
        add(SEQUENCE_OUTPUT, schema_pb2.FLOAT, None,
            "sequence_output of the real tokens, row-major [sequence_length, hidden_size].")
    elif SEQUENCE in outputs:
        add(SEQUENCE_OUTPUT, schema_pb2.BYTES, 1,
            f"sequence_output of the real tokens as raw little-endian {sequence_dtype}, "
            "row-major [sequence_length, hidden_size].")
        schema.feature[-1].annotation.tag.append(DTYPE_TAG + sequence_dtype)
    return schema


def schema_text(outputs: Sequence[str], hidden_size: int, sequence_dtype: str = FLOAT32) -> str:
    """The schema as text protobuf, as written to ``PREFIX.schema.pbtxt``."""
    from google.protobuf import text_format

    return text_format.MessageToString(build_schema(outputs, hidden_size, sequence_dtype))
