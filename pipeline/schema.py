"""The output contract: one table of the written features, their types, shapes and presence.

The tf.Example writer, the reader, the tensorflow-metadata schema file and the tests all
iterate ``FEATURES``; the model tensors' own names (``transforms.call_conventions``) are the
keys of the features that hold them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from transforms.call_conventions import INPUT_IDS, MEAN_OUTPUT, POOLED_OUTPUT, SEGMENT_IDS, SEQUENCE_OUTPUT
from transforms.model_outputs import FLOAT32, MEAN, OUTPUT_KINDS, POOLED, SEQUENCE, SEQUENCE_DTYPES

__all__ = [  # re-exported: the contract
    "FLOAT32", "INPUT_IDS", "MEAN", "MEAN_OUTPUT", "POOLED", "POOLED_OUTPUT", "SEGMENT_IDS", "SEQUENCE",
    "SEQUENCE_DTYPES", "SEQUENCE_OUTPUT",
]

ID = "id"
WINDOW = "window"
TOKEN_OFFSET = "token_offset"
SEQUENCE_LENGTH = "sequence_length"
HIDDEN_SIZE = "hidden_size"
WHITENED_OUTPUT = "whitened_output"

# The type of a feature's stored values.
BYTES = "bytes"
INT64 = "int64"
# How many values a record holds (a bytes feature always holds one).
ONE = "one"
PER_TOKEN = "per_token"  # sequence_length
HIDDEN = "hidden"  # hidden_size
PER_TOKEN_HIDDEN = "per_token_hidden"  # sequence_length * hidden_size, row-major [T, H]
WHITENED = "whitened"  # --whitening_dims; written only when that is above 0

OUTPUT_CHOICES = OUTPUT_KINDS
DTYPE_TAG = "dtype:"

SCHEMA_SUFFIX = ".schema.pbtxt"
# The fitted whitening beside the shards (--whitening_dims): PREFIX.whitening/.
WHITENING_SUFFIX = ".whitening"
SHARD_SUFFIX = ".tfrecord"

# --output_format: the file format of the shards, which hold the same features either way.
TFRECORD = "tfrecord"
PARQUET = "parquet"
OUTPUT_FORMATS = (TFRECORD, PARQUET)
DEFAULT_OUTPUT_FORMAT = TFRECORD
PARQUET_SUFFIX = ".parquet"
GZIP_SUFFIX = ".gz"
# Shards are PREFIX-SSSSS-of-NNNNN<ending>; every ending a run writes, and its format.
SHARD_NUMBERING = "-?????-of-?????"
SHARD_ENDINGS = {SHARD_SUFFIX: TFRECORD, SHARD_SUFFIX + GZIP_SUFFIX: TFRECORD, PARQUET_SUFFIX: PARQUET}

@dataclass(frozen=True)
class OutputFeature:
    """One feature of the written tf.Examples: its key, values, presence and schema comment.

    Its value is the ``Embedding`` attribute named ``key``, or its ``Features``' one where
    ``from_features``. ``raw_comment`` marks a feature that a 16-bit ``--sequence_dtype``
    stores as one bytes value of raw little-endian numbers, ``raw_dtype`` then naming them
    (``written_features`` resolves it).
    """

    key: str
    dtype: str
    shape: str
    comment: str
    kind: str | None = None  # the output kind that writes it; None: every record has it
    from_features: bool = False
    is_hidden_size: bool = False  # its one value is the run's hidden size
    raw_comment: str | None = None
    raw_dtype: str | None = None

    @property
    def single_value(self) -> bool:
        """A record holds exactly one value of it."""
        return self.dtype == BYTES or self.shape == ONE


# Every feature, in the order each Example writes them.
FEATURES = (
    OutputFeature(ID, BYTES, ONE, "Document id (UTF-8).", from_features=True),
    OutputFeature(WINDOW, INT64, ONE, "Window index within the document, 0 when not windowed.",
                  from_features=True),
    OutputFeature(TOKEN_OFFSET, INT64, ONE,
                  "Position of the window's first wordpiece in the document's wordpieces (without [CLS]).",
                  from_features=True),
    OutputFeature(SEQUENCE_LENGTH, INT64, ONE, "Real tokens, [CLS] and [SEP] included.", from_features=True),
    OutputFeature(INPUT_IDS, INT64, PER_TOKEN, "Wordpiece ids, sequence_length values.", from_features=True),
    OutputFeature(SEGMENT_IDS, INT64, PER_TOKEN, "Segment ids (0 for text A, 1 for text B).",
                  from_features=True),
    OutputFeature(HIDDEN_SIZE, INT64, ONE, "Width of the model's outputs.", is_hidden_size=True),
    OutputFeature(POOLED_OUTPUT, FLOAT32, HIDDEN, "The model's pooled_output.", kind=POOLED),
    OutputFeature(MEAN_OUTPUT, FLOAT32, HIDDEN,
                  "Mean of sequence_output over the real tokens, [CLS] and [SEP] included.", kind=MEAN),
    OutputFeature(SEQUENCE_OUTPUT, FLOAT32, PER_TOKEN_HIDDEN,
                  "sequence_output of the real tokens, row-major [sequence_length, hidden_size].",
                  kind=SEQUENCE,
                  raw_comment="sequence_output of the real tokens as raw little-endian {dtype}, "
                  "row-major [sequence_length, hidden_size]."),
    OutputFeature(WHITENED_OUTPUT, FLOAT32, WHITENED,
                  "The --whitening_source output whitened with the run's own corpus mean and covariance, "
                  "--whitening_dims values; the fitted transform is PREFIX.whitening/."),
)
OUTPUT_FEATURES = {feature.kind: feature.key for feature in FEATURES if feature.kind is not None}


def written_features(outputs: Sequence[str], sequence_dtype: str = FLOAT32,
                     whitening_dims: int = 0) -> tuple[OutputFeature, ...]:
    """The features a run with ``outputs`` writes, in order; 16-bit ones in their bytes form."""
    written = []
    for feature in FEATURES:
        if feature.kind is not None and feature.kind not in outputs:
            continue
        if feature.shape == WHITENED and not whitening_dims:
            continue
        if feature.raw_comment is not None and sequence_dtype != FLOAT32:
            feature = replace(feature, dtype=BYTES, comment=feature.raw_comment.format(dtype=sequence_dtype),
                              raw_dtype=sequence_dtype)
        written.append(feature)
    return tuple(written)


def parse_outputs(text: str) -> tuple[str, ...]:
    """Parses ``--outputs`` (e.g. ``pooled,sequence``) into a tuple of known output kinds."""
    chosen = tuple(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    unknown = [part for part in chosen if part not in OUTPUT_CHOICES]
    if unknown or not chosen:
        raise ValueError(
            f"--outputs must list one or more of {', '.join(OUTPUT_CHOICES)}; got {text!r}."
        )
    return chosen


def build_schema(outputs: Sequence[str], hidden_size: int, sequence_dtype: str = FLOAT32,
                 whitening_dims: int = 0):
    """The tensorflow-metadata Schema of the records that a run with ``outputs`` writes.

    A 16-bit ``sequence_dtype`` stores ``sequence_output`` as one bytes value of raw
    little-endian numbers, tagged ``dtype:float16`` or ``dtype:bfloat16``. ``whitening_dims``
    above 0 adds ``whitened_output``, of that many values.
    """
    from tensorflow_metadata.proto.v0 import schema_pb2

    types = {BYTES: schema_pb2.BYTES, INT64: schema_pb2.INT, FLOAT32: schema_pb2.FLOAT}
    schema = schema_pb2.Schema()
    for feature in written_features(outputs, sequence_dtype, whitening_dims):
        entry = schema.feature.add(name=feature.key, type=types[feature.dtype])
        entry.presence.min_fraction = 1.0
        entry.presence.min_count = 1
        if feature.single_value:
            entry.shape.dim.add(size=1)
        elif feature.shape == HIDDEN:
            entry.shape.dim.add(size=hidden_size)
        elif feature.shape == WHITENED:
            entry.shape.dim.add(size=whitening_dims)
        else:
            entry.value_count.min = 1
        entry.annotation.comment.append(feature.comment)
        if feature.is_hidden_size:
            entry.int_domain.min = entry.int_domain.max = hidden_size
        if feature.raw_dtype is not None:
            entry.annotation.tag.append(DTYPE_TAG + feature.raw_dtype)
    return schema


def schema_text(outputs: Sequence[str], hidden_size: int, sequence_dtype: str = FLOAT32,
                whitening_dims: int = 0) -> str:
    """The schema as text protobuf, as written to ``PREFIX.schema.pbtxt``."""
    from google.protobuf import text_format

    return text_format.MessageToString(build_schema(outputs, hidden_size, sequence_dtype, whitening_dims))


def shard_format(path: str) -> str | None:
    """The output format of a shard from its file name's ending; None for a file that is no shard."""
    return next((fmt for ending, fmt in SHARD_ENDINGS.items() if path.endswith(ending)), None)
