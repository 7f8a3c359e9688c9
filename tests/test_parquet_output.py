"""Parquet output: the same records as the TFRecord output (pyarrow against tf.data), the layout in the
files' metadata, the sink's files as pyarrow writes them, and manifest, verify, reruns and the reader."""

from __future__ import annotations

import glob
import json
import os
from pathlib import Path

import apache_beam as beam
import google_crc32c
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import tensorflow as tf
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.testing.test_pipeline import TestPipeline
from google.protobuf import text_format
from tensorflow_metadata.proto.v0 import schema_pb2

from pipeline import manifest, schema
from pipeline.outputs.encoding import sequence_numpy_dtype
from pipeline.outputs.parquet_encoding import (
    LAYOUT_KEY,
    ArrowEncoder,
    arrow_schema,
    read_layout,
    writer_options,
)
from pipeline.outputs.parquet_sink import ParquetShardSink
from pipeline.outputs.shard_sink import SUMMARIES_SUFFIX
from pipeline.outputs.sinks import WriteEmbeddings
from pipeline.reader import load_layout, make_dataset, output_format, read_embeddings
from transforms import counters
from transforms.records import Embedding, Features

HIDDEN = 24
POOLED, MEAN, SEQUENCE = schema.POOLED, schema.MEAN, schema.SEQUENCE
ALL_OUTPUTS = [(POOLED,), (MEAN,), (SEQUENCE,), (POOLED, MEAN), (POOLED, SEQUENCE), (MEAN, SEQUENCE),
               (POOLED, MEAN, SEQUENCE)]
# Every outputs combination with float32, and the 16-bit sequence dtypes wherever sequence is written.
LAYOUTS = [(outputs, dtype) for outputs in ALL_OUTPUTS for dtype in schema.SEQUENCE_DTYPES
           if dtype == schema.FLOAT32 or SEQUENCE in outputs]


def _embeddings(count: int = 70, seed: int = 5, whitening_dims: int = 0) -> list[Embedding]:
    """Records of 1 to 140 tokens (over one encode batch of 64), several windows, non-ASCII ids."""
    rng = np.random.default_rng(seed)
    embeddings = []
    for index in range(count):
        length = int(rng.integers(1, 140)) if index else 1
        features = Features(f"doc-{index // 3}-\u00e9\u4e2d\U0001f600",
                            rng.integers(0, 30522, length).astype(np.int32),
                            (np.arange(length) >= length // 2).astype(np.int32), window=index % 3,
                            token_offset=int(rng.integers(0, 2**40)))
        whitened = rng.standard_normal(whitening_dims).astype(np.float32) if whitening_dims else None
        embeddings.append(Embedding(features, rng.standard_normal(HIDDEN).astype(np.float32),
                                    rng.standard_normal((length, HIDDEN)).astype(np.float32),
                                    whitened_output=whitened))
    return embeddings


def _write(prefix: str, embeddings, outputs=(POOLED, SEQUENCE), sequence_dtype=schema.FLOAT32,
           output_format=schema.PARQUET, **options):
    pipeline = TestPipeline()
    _ = (pipeline | beam.Create(embeddings)
         | WriteEmbeddings(prefix, outputs, HIDDEN, sequence_dtype=sequence_dtype,
                           output_format=output_format, **options))
    result = pipeline.run()
    result.wait_until_finish()
    return result


def _parquet_rows(prefix: str) -> list[dict]:
    paths = sorted(glob.glob(prefix + "-*.parquet"))
    return [row for path in paths for row in pq.ParquetFile(path).read().to_pylist()]


def _tfrecord_examples(prefix: str) -> list[tf.train.Example]:
    paths = sorted(glob.glob(prefix + "-*.tfrecord"))
    return [tf.train.Example.FromString(record.numpy()) for record in tf.data.TFRecordDataset(paths)]


def _example_value(feature: tf.train.Feature):
    kind = feature.WhichOneof("kind")
    return list(getattr(feature, kind).value)


@pytest.mark.parametrize(("outputs", "sequence_dtype"), LAYOUTS)
def test_the_parquet_columns_hold_the_tfrecord_features(tmp_path, outputs, sequence_dtype):
    embeddings = _embeddings()
    _write(str(tmp_path / "pq"), embeddings, outputs, sequence_dtype)
    _write(str(tmp_path / "tf"), embeddings, outputs, sequence_dtype, output_format=schema.TFRECORD)
    rows = {(row[schema.ID], row[schema.WINDOW]): row for row in _parquet_rows(str(tmp_path / "pq"))}
    examples = _tfrecord_examples(str(tmp_path / "tf"))
    assert len(rows) == len(examples) == len(embeddings)
    keys = [feature.key for feature in schema.written_features(outputs, sequence_dtype)]
    for example in examples:
        features = example.features.feature
        assert sorted(features) == sorted(keys)
        row = rows[(features[schema.ID].bytes_list.value[0].decode("utf-8"),
                    features[schema.WINDOW].int64_list.value[0])]
        assert list(row) == keys
        for key in keys:
            expected = _example_value(features[key])
            if isinstance(row[key], str):
                assert [row[key].encode("utf-8")] == expected
            elif isinstance(row[key], (int, bytes)):
                assert [row[key]] == expected
            elif features[key].HasField("float_list"):
                np.testing.assert_array_equal(np.array(row[key], np.float32), np.array(expected, np.float32))
            else:
                assert row[key] == expected


@pytest.mark.parametrize("sequence_dtype", schema.SEQUENCE_DTYPES)
def test_the_column_types_and_the_layout_in_the_metadata(tmp_path, sequence_dtype):
    prefix = str(tmp_path / "emb")
    outputs = (POOLED, MEAN, SEQUENCE)
    _write(prefix, _embeddings(8), outputs, sequence_dtype)
    (path,) = glob.glob(prefix + "-*.parquet")
    parquet = pq.ParquetFile(path)
    types = {field.name: (field.type, field.nullable) for field in parquet.schema_arrow}
    floats = pa.list_(pa.field("element", pa.float32(), nullable=False))
    int64s = pa.list_(pa.field("element", pa.int64(), nullable=False))
    assert types == {
        "id": (pa.string(), False), "window": (pa.int64(), False), "token_offset": (pa.int64(), False),
        "sequence_length": (pa.int64(), False), "input_ids": (int64s, False), "segment_ids": (int64s, False),
        "hidden_size": (pa.int64(), False), "pooled_output": (floats, False), "mean_output": (floats, False),
        "sequence_output": (floats if sequence_dtype == schema.FLOAT32 else pa.binary(), False),
    }
    # Parquet's standard three-level LIST (NAME.list.element), as BigQuery's list inference and DuckDB
    # read it; every field required.
    lists = [name for name, (column_type, _) in types.items() if pa.types.is_list(column_type)]
    assert [parquet.schema.column(i).path for i in range(len(parquet.schema))] == [
        name + ".list.element" if name in lists else name for name in types]
    assert str(parquet.schema).count("(List)") == len(lists) and "optional" not in str(parquet.schema)

    layout = read_layout(parquet.schema_arrow.metadata)
    assert json.loads(parquet.metadata.metadata[LAYOUT_KEY.encode()]) == layout
    written = load_layout(prefix)
    assert (tuple(layout["outputs"]), layout["hidden_size"], layout["sequence_dtype"],
            layout["whitening_dims"]) == (written.outputs, written.hidden_size, written.sequence_dtype,
                                          written.whitening_dims)
    # Each column's description is the comment of the schema file written beside the shards.
    beside = text_format.Parse(Path(prefix + schema.SCHEMA_SUFFIX).read_text(), schema_pb2.Schema())
    assert [(f["name"], f["description"]) for f in layout["features"]] == [
        (feature.name, feature.annotation.comment[0]) for feature in beside.feature]
    assert [f["type"] for f in layout["features"]] == [str(types[f["name"]][0]) for f in layout["features"]]
    raw = {f["name"]: f.get("raw_dtype") for f in layout["features"]}
    assert raw[schema.SEQUENCE_OUTPUT] == (None if sequence_dtype == schema.FLOAT32 else sequence_dtype)


def _assert_records_equal_the_embeddings(records, embeddings, outputs, sequence_dtype):
    by_key = {(e.features.id, e.features.window): e for e in embeddings}
    assert sorted(by_key) == sorted((r.id, r.window) for r in records)
    for record in records:
        embedding = by_key[(record.id, record.window)]
        features = embedding.features
        assert (record.token_offset, record.sequence_length, record.hidden_size) == (
            features.token_offset, features.sequence_length, HIDDEN)
        assert record.input_ids.dtype == np.int64
        np.testing.assert_array_equal(record.input_ids, features.input_ids)
        np.testing.assert_array_equal(record.segment_ids, features.segment_ids)
        for kind, key, expected in [(POOLED, "pooled_output", embedding.pooled_output),
                                    (MEAN, "mean_output", embedding.mean_output),
                                    (SEQUENCE, "sequence_output", embedding.sequence_output)]:
            if kind not in outputs:
                assert getattr(record, key) is None
                continue
            if kind == SEQUENCE:
                expected = expected.astype(sequence_numpy_dtype(sequence_dtype)).astype(np.float32)
            assert getattr(record, key).dtype == np.float32
            np.testing.assert_array_equal(getattr(record, key), expected)


@pytest.mark.parametrize(("outputs", "sequence_dtype"),
                         [((POOLED, MEAN, SEQUENCE), dtype) for dtype in schema.SEQUENCE_DTYPES]
                         + [((MEAN,), schema.FLOAT32)])
def test_the_reader_reads_both_formats_into_the_same_records(tmp_path, outputs, sequence_dtype):
    embeddings = _embeddings()
    records = {}
    for written_format in schema.OUTPUT_FORMATS:
        prefix = str(tmp_path / written_format)
        _write(prefix, embeddings, outputs, sequence_dtype, output_format=written_format, num_shards=2)
        assert load_layout(prefix).output_format == output_format(prefix) == written_format
        records[written_format] = sorted(read_embeddings(prefix), key=lambda r: (r.id, r.window))
        _assert_records_equal_the_embeddings(records[written_format], embeddings, outputs, sequence_dtype)
    for parquet, tfrecord in zip(records[schema.PARQUET], records[schema.TFRECORD], strict=True):
        for key, value in vars(parquet).items():
            other = getattr(tfrecord, key)
            if isinstance(value, np.ndarray):
                assert (value.shape, value.dtype) == (other.shape, other.dtype)
                np.testing.assert_array_equal(value, other)
            else:
                assert value == other


def test_make_dataset_says_it_reads_tfrecord_shards_only(tmp_path):
    prefix = str(tmp_path / "emb")
    _write(prefix, _embeddings(4))
    with pytest.raises(ValueError, match="make_dataset reads TFRecord shards.*read_embeddings"):
        make_dataset(prefix)


def test_whitened_output_is_a_column_too(tmp_path):
    embeddings = _embeddings(6, whitening_dims=5)
    prefix = str(tmp_path / "emb")
    _write(prefix, embeddings, (POOLED,), whitening_dims=5)
    rows = {(row[schema.ID], row[schema.WINDOW]): row for row in _parquet_rows(prefix)}
    for embedding in embeddings:
        np.testing.assert_array_equal(np.array(rows[(embedding.features.id, embedding.features.window)][
            schema.WHITENED_OUTPUT], np.float32), embedding.whitened_output)
    records = {(r.id, r.window): r.whitened_output for r in read_embeddings(prefix)}
    for embedding in embeddings:
        np.testing.assert_array_equal(records[(embedding.features.id, embedding.features.window)],
                                      embedding.whitened_output)


def test_the_encoder_equals_pyarrow_building_the_rows_from_python_values():
    embeddings = _embeddings(9)
    for outputs, sequence_dtype in [((POOLED, MEAN, SEQUENCE), "float32"), ((SEQUENCE,), "bfloat16")]:
        encoder = ArrowEncoder(outputs, sequence_dtype)
        rows = []
        for e in embeddings:
            f = e.features
            row = {"id": f.id, "window": f.window, "token_offset": f.token_offset,
                   "sequence_length": f.sequence_length, "input_ids": [int(v) for v in f.input_ids],
                   "segment_ids": [int(v) for v in f.segment_ids], "hidden_size": HIDDEN}
            if POOLED in outputs:
                row["pooled_output"] = [float(v) for v in e.pooled_output]
            if MEAN in outputs:
                row["mean_output"] = [float(v) for v in e.mean_output]
            if sequence_dtype == "float32":
                row["sequence_output"] = [float(v) for v in e.sequence_output.reshape(-1)]
            else:
                raw = e.sequence_output.astype(sequence_numpy_dtype(sequence_dtype))
                row["sequence_output"] = raw.tobytes()
            rows.append(row)
        assert encoder.encode(embeddings).equals(pa.RecordBatch.from_pylist(rows, schema=encoder.schema))
        assert encoder.encode([]).num_rows == 0


def _sink_batches(count: int = 5) -> tuple[list[pa.RecordBatch], pa.Schema]:
    embeddings = _embeddings(count * 7)
    encoder = ArrowEncoder((POOLED, SEQUENCE))
    batches = [encoder.encode(embeddings[start:start + 7]) for start in range(0, len(embeddings), 7)]
    return batches, arrow_schema((POOLED, SEQUENCE), HIDDEN)


def _write_with_sink(prefix: str, batches, arrow, num_shards: int = 1, **options) -> list[str]:
    sink = ParquetShardSink(prefix, ".parquet", num_shards, arrow, writer_options("NONE", arrow), **options)
    with beam.Pipeline() as pipeline:
        _ = pipeline | beam.Create(batches) | beam.io.Write(sink)
    return sorted(glob.glob(prefix + "-*.parquet"))


def test_the_sink_writes_the_bytes_pyarrow_writes_to_a_local_path(tmp_path):
    batches, arrow = _sink_batches()
    (ours,) = _write_with_sink(str(tmp_path / "ours"), batches, arrow)
    table = pa.Table.from_batches(batches).replace_schema_metadata(arrow.metadata)
    pq.write_table(table, str(tmp_path / "theirs.parquet"), **writer_options("NONE", arrow))
    # one shard, batches in order: Beam's Create keeps a small list's order in one bundle
    assert Path(ours).read_bytes() == (tmp_path / "theirs.parquet").read_bytes()
    assert pq.ParquetFile(ours).read().equals(table)


def test_row_groups_are_whole_batches_up_to_the_size_limit(tmp_path):
    batches, arrow = _sink_batches(7)
    limit = int(2.5 * batches[0].nbytes)
    (path,) = _write_with_sink(str(tmp_path / "out"), batches, arrow, row_group_bytes=limit)
    expected, pending, size = [], 0, 0
    for batch in batches:
        pending, size = pending + batch.num_rows, size + batch.nbytes
        if size >= limit:
            expected.append(pending)
            pending, size = 0, 0
    expected += [pending] if pending else []
    parquet = pq.ParquetFile(path)
    assert [parquet.metadata.row_group(i).num_rows for i in range(parquet.num_row_groups)] == expected
    assert len(expected) > 1
    assert parquet.read().equals(pa.Table.from_batches(batches).replace_schema_metadata(arrow.metadata))


def test_shards_without_rows_are_valid_empty_files_and_counted(tmp_path):
    batches, arrow = _sink_batches(1)
    prefix = str(tmp_path / "out")
    paths = _write_with_sink(prefix, batches, arrow, num_shards=3)
    assert len(paths) == 3
    rows = [pq.ParquetFile(path).metadata.num_rows for path in paths]
    assert sorted(rows) == [0, 0, batches[0].num_rows]
    assert all(pq.ParquetFile(path).schema_arrow.equals(arrow) for path in paths)
    written = json.loads(Path(prefix + SUMMARIES_SUFFIX).read_text())["shards"]
    assert [shard["records"] for shard in written] == rows


def test_counters_count_every_record_and_document(tmp_path):
    embeddings = _embeddings()
    result = _write(str(tmp_path / "emb"), embeddings)

    def counter(name):
        (found,) = result.metrics().query(MetricsFilter().with_name(name))["counters"]
        return found.committed

    assert counter(counters.RECORDS_WRITTEN) == len(embeddings) == len(_parquet_rows(str(tmp_path / "emb")))
    assert counter(counters.DOCUMENTS_EMBEDDED) == sum(1 for e in embeddings if e.features.window == 0)


def test_gzip_compresses_the_parquet_pages(tmp_path):
    embeddings = _embeddings()
    _write(str(tmp_path / "plain"), embeddings, output_compression="none")
    _write(str(tmp_path / "gzip"), embeddings, output_compression="gzip")
    for name, codec in (("plain", "UNCOMPRESSED"), ("gzip", "GZIP")):
        paths = glob.glob(str(tmp_path / name) + "-*")
        assert paths and all(path.endswith(".parquet") for path in paths)
        metadata = pq.ParquetFile(paths[0]).metadata
        assert {metadata.row_group(g).column(c).compression for g in range(metadata.num_row_groups)
                for c in range(metadata.num_columns)} == {codec}
    assert _parquet_rows(str(tmp_path / "gzip")) == _parquet_rows(str(tmp_path / "plain"))


def test_the_manifest_and_verify_cover_parquet_shards(tmp_path, monkeypatch):
    embeddings = _embeddings()
    prefix = str(tmp_path / "emb")
    _write(prefix, embeddings, num_shards=3)
    paths = sorted(glob.glob(prefix + "-*.parquet"))
    assert manifest.list_shards(prefix) == paths
    independent = [manifest.ShardSummary(os.path.basename(path), pq.ParquetFile(path).metadata.num_rows,
                                         len(data), f"{google_crc32c.value(data):08x}")
                   for path, data in ((path, Path(path).read_bytes()) for path in paths)]

    def refuse(path):
        raise AssertionError(f"read {path} back")

    with monkeypatch.context() as patch:
        patch.setattr(manifest, "summarize_shard", refuse)
        assert manifest.shard_summaries(prefix) == independent
    os.remove(prefix + SUMMARIES_SUFFIX)  # the fallback reads the shards: rows from the footer
    assert manifest.shard_summaries(prefix) == independent

    shards = [summary.__dict__ for summary in independent]
    counts = {"records_written": len(embeddings), "documents_read": 1, "documents_embedded": 1}
    manifest.write_manifest(prefix, {"shards": shards, "records": len(embeddings), "counters": counts})
    assert manifest.verify(prefix) == []
    largest = max(paths, key=os.path.getsize)
    data = bytearray(Path(largest).read_bytes())
    data[len(data) // 2] ^= 1  # inside a data page: the file still parses
    Path(largest).write_bytes(bytes(data))
    assert manifest.verify(prefix) == [f"{os.path.basename(largest)}: checksum differs from the manifest"]
    Path(largest).write_bytes(bytes(data[:-100]))  # cut: the footer is gone
    (problem,) = manifest.verify(prefix)
    assert problem.startswith(f"{largest} is not a whole Parquet file (")


def test_a_rerun_in_the_other_format_replaces_the_earlier_shards(tmp_path):
    embeddings = _embeddings(10)
    prefix, dead_letters = str(tmp_path / "emb"), str(tmp_path / "dead_letter" / "emb")
    _write(prefix, embeddings, output_format=schema.TFRECORD, num_shards=2)
    _write(prefix, embeddings, output_format=schema.TFRECORD, output_compression="gzip", num_shards=2)
    earlier = sorted(glob.glob(prefix + "-*"))
    assert len(earlier) == 4
    assert set(earlier) <= set(manifest.stale_outputs(prefix, dead_letters))
    _write(prefix, embeddings, num_shards=3)  # a Parquet run beside them, before any clean-up
    assert set(glob.glob(prefix + "-*")) <= set(manifest.stale_outputs(prefix, dead_letters))
    with pytest.raises(ValueError, match="more than one format"):
        output_format(prefix)
    counts = {"records_written": len(embeddings), "documents_read": 1, "documents_embedded": 1}
    manifest.write_manifest(prefix, {"shards": [s.__dict__ for s in manifest.shard_summaries(prefix)
                                                if s.name.endswith(".parquet")],
                                     "records": len(embeddings), "counters": counts})
    unexpected = "(not written by the run the manifest describes)"
    assert manifest.verify(prefix) == [f"unexpected shard {os.path.basename(path)} {unexpected}"
                                       for path in earlier]

    # What the launcher does before a run: remove what stale_outputs lists; then only the new format is left.
    manifest.delete_files(manifest.stale_outputs(prefix, dead_letters))
    _write(prefix, embeddings, num_shards=3)
    assert sorted(os.path.basename(p) for p in glob.glob(prefix + "-*")) == [
        f"emb-{index:05d}-of-00003.parquet" for index in range(3)]
    assert output_format(prefix) == schema.PARQUET
    assert len(list(read_embeddings(prefix))) == len(embeddings)


def test_an_unknown_output_format_is_refused():
    with pytest.raises(ValueError, match="output_format must be one of tfrecord, parquet"):
        WriteEmbeddings("out/emb", (POOLED,), HIDDEN, output_format="csv")
