"""The tf.Example writer equals protobuf's own serialization and tfx-bsl's encoder."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from reference_encoding import encode_with_tfx_bsl

from pipeline import schema
from pipeline.outputs import example_wire as wire
from pipeline.outputs.encoding import ExampleEncoder
from pipeline.outputs.parquet_encoding import ArrowEncoder
from pipeline.reader import EmbeddingRecord, feature_spec
from transforms.records import Embedding, Features

_INT64_EDGES = [0, 1, 127, 128, 255, 300, 16383, 16384, 2**31 - 1, 2**31, 2**35, 2**56, 2**63 - 1,
                -1, -128, -(2**63)]


@pytest.mark.parametrize("value", _INT64_EDGES)
def test_a_varint_equals_protobufs(value):
    import tensorflow as tf

    expected = tf.train.Int64List(value=[value]).SerializeToString()
    assert wire.varint(value) == expected[2:]  # after the packed field's tag and length


@given(st.lists(st.integers(min_value=-(2**63), max_value=2**63 - 1), max_size=40))
@settings(max_examples=200, deadline=None)
def test_a_batch_of_varints_equals_protobufs(values):
    varints = wire.Int64Varints(np.array(values, dtype=np.int64))
    import tensorflow as tf

    for start, stop in [(0, len(values)), (0, len(values) // 2), (len(values) // 3, len(values))]:
        expected = tf.train.Feature(int64_list=tf.train.Int64List(value=values[start:stop]))
        assert b"".join(wire.int64_feature(varints.span(start, stop))) == expected.SerializeToString()


def test_float_and_bytes_features_equal_protobufs():
    import tensorflow as tf

    for values in (np.zeros(0, np.float32), np.array([1.5, -0.0, np.inf, np.nan], np.float32),
                   np.arange(12, dtype=np.float64).reshape(3, 4)):
        expected = tf.train.Feature(float_list=tf.train.FloatList(value=values.reshape(-1)))
        got = tf.train.Feature.FromString(b"".join(wire.float_feature(values)))
        np.testing.assert_array_equal(np.array(got.float_list.value, np.float32),
                                      np.array(expected.float_list.value, np.float32))
        assert b"".join(wire.float_feature(values)) == expected.SerializeToString()
    for values in ([], [b""], [b"a", "é".encode(), bytes(range(256)) * 3]):
        expected = tf.train.Feature(bytes_list=tf.train.BytesList(value=values))
        assert b"".join(wire.bytes_feature(values)) == expected.SerializeToString()


def _embeddings(rng: np.random.Generator, lengths, hidden: int) -> list[Embedding]:
    embeddings = []
    for index, length in enumerate(lengths):
        features = Features(
            id=f"doc-{index}-\u00e9\u4e2d\U0001f600",
            input_ids=rng.integers(0, 30522, length).astype(np.int32),
            segment_ids=(np.arange(length) >= length // 2).astype(np.int32), window=index % 3,
            token_offset=int(rng.integers(0, 2**40)))
        embeddings.append(Embedding(features, rng.standard_normal(hidden).astype(np.float32),
                                    rng.standard_normal((length, hidden)).astype(np.float32)))
    return embeddings


@pytest.mark.parametrize("sequence_dtype", schema.SEQUENCE_DTYPES)
@pytest.mark.parametrize("outputs", [("pooled",), ("sequence",), ("pooled", "mean", "sequence"),
                                     ("mean", "sequence")])
def test_records_equal_tfx_bsls(outputs, sequence_dtype):
    import tensorflow as tf

    embeddings = _embeddings(np.random.default_rng(7), [1, 2, 5, 130, 512, 3], hidden=24)
    ours = ExampleEncoder(outputs, sequence_dtype).encode(embeddings)
    reference = encode_with_tfx_bsl(embeddings, outputs, sequence_dtype)
    assert len(ours) == len(reference) == len(embeddings)
    for mine, theirs in zip(ours, reference, strict=True):
        assert tf.train.Example.FromString(mine) == tf.train.Example.FromString(theirs)


def test_the_parts_the_shard_sink_writes_view_the_float32_outputs_and_join_to_the_records():
    embeddings = _embeddings(np.random.default_rng(3), [2, 20, 130, 300], hidden=1024)
    encoder = ExampleEncoder(("pooled", "sequence"))
    parts = encoder.encode_parts(embeddings)
    assert [bytes(p) for p in parts] == encoder.encode(embeddings)
    for record, embedding in zip(parts, embeddings, strict=True):
        views = [part for part in record if isinstance(part, np.ndarray)]
        assert all(part.ndim == 1 and part.dtype == np.uint8 for part in views)
        # A large record's output is a view, not a copy; a small record is joined whole.
        large = embedding.sequence_output.nbytes > 1024 * 1024
        assert any(np.shares_memory(part, embedding.sequence_output) for part in views) == large
        assert len(record) <= 3


def test_an_empty_batch_encodes_to_nothing():
    assert ExampleEncoder(("pooled",)).encode([]) == []


@pytest.mark.parametrize("sequence_dtype", schema.SEQUENCE_DTYPES)
@pytest.mark.parametrize("outputs", [("pooled",), ("mean", "sequence"), ("sequence", "pooled", "mean")])
def test_the_writer_the_schema_and_the_reader_follow_the_feature_table(outputs, sequence_dtype):
    import tensorflow as tf

    keys = [feature.key for feature in schema.written_features(outputs, sequence_dtype)]
    (record,) = ExampleEncoder(outputs, sequence_dtype).encode(_embeddings(np.random.default_rng(3), [4], 8))
    assert sorted(tf.train.Example.FromString(record).features.feature) == sorted(keys)
    assert [feature.name for feature in schema.build_schema(outputs, 8, sequence_dtype).feature] == keys
    assert list(feature_spec(outputs, 8, sequence_dtype)) == keys
    assert ArrowEncoder(outputs, sequence_dtype).schema.names == keys
    assert [field.name for field in dataclasses.fields(EmbeddingRecord)] == [f.key for f in schema.FEATURES]
