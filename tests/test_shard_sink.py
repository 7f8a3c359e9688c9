"""The TFRecord shard sink: Beam's and TensorFlow's framing, summaries that match a read-back, and a
manifest built from them without reading a shard."""

from __future__ import annotations

import glob
import hashlib
import io
import json
import os
from pathlib import Path

import apache_beam as beam
import google_crc32c
import numpy as np
import pytest
import tensorflow as tf
from apache_beam.io.filesystem import CompressionTypes

from pipeline import manifest
from pipeline.outputs.shard_sink import (
    SUMMARIES_SUFFIX,
    SummingFile,
    TFRecordShardSink,
    masked_crc32c,
    write_record,
)

RECORDS = [os.urandom(size) for size in (0, 1, 127, 128, 5000, 70_000)] * 5


def _write(prefix: str, records: list[bytes], compression: str = CompressionTypes.UNCOMPRESSED,
           num_shards: int = 3) -> list[str]:
    suffix = ".tfrecord.gz" if compression == CompressionTypes.GZIP else ".tfrecord"
    with beam.Pipeline() as pipeline:
        _ = (pipeline | beam.Create(records)
             | beam.io.Write(TFRecordShardSink(prefix, suffix, num_shards, compression)))
    return sorted(glob.glob(prefix + "-*" + suffix))


def _read_with_tensorflow(paths: list[str], compression: str) -> list[bytes]:
    kind = "GZIP" if compression == CompressionTypes.GZIP else ""
    return [record.numpy() for record in tf.data.TFRecordDataset(paths, compression_type=kind)]


@pytest.mark.parametrize("compression", [CompressionTypes.UNCOMPRESSED, CompressionTypes.GZIP])
def test_tensorflow_reads_back_every_record(tmp_path, compression):
    paths = _write(str(tmp_path / "out"), RECORDS, compression)
    assert len(paths) == 3
    assert sorted(_read_with_tensorflow(paths, compression)) == sorted(RECORDS)


def test_files_are_byte_for_byte_what_beams_tfrecord_sink_writes(tmp_path):
    ours = _write(str(tmp_path / "ours"), RECORDS, num_shards=1)
    with beam.Pipeline() as pipeline:
        _ = pipeline | beam.Create(RECORDS) | beam.io.WriteToTFRecord(str(tmp_path / "beams"), num_shards=1)
    beams = glob.glob(str(tmp_path / "beams-*"))
    # one shard each, records in the same order: Beam's Create keeps a small list's order in one bundle
    assert Path(ours[0]).read_bytes() == Path(beams[0]).read_bytes()


@pytest.mark.parametrize("compression", [CompressionTypes.UNCOMPRESSED, CompressionTypes.GZIP])
def test_summaries_match_the_files_as_read_back(tmp_path, compression):
    prefix = str(tmp_path / "out")
    paths = _write(prefix, RECORDS, compression)
    written = json.loads(Path(prefix + SUMMARIES_SUFFIX).read_text())["shards"]
    assert [shard["name"] for shard in written] == [os.path.basename(path) for path in paths]
    for shard, path in zip(written, paths, strict=True):
        data = Path(path).read_bytes()
        assert shard["bytes"] == len(data)
        assert shard["crc32c"] == f"{google_crc32c.value(data):08x}"
        assert shard["records"] == len(_read_with_tensorflow([path], compression))
    assert sum(shard["records"] for shard in written) == len(RECORDS)


def test_the_manifest_takes_the_jobs_summaries_without_reading_a_shard(tmp_path, monkeypatch):
    prefix = str(tmp_path / "out")
    paths = _write(prefix, RECORDS)
    read_back = [manifest.summarize_shard(path) for path in paths]

    def refuse(path):
        raise AssertionError(f"read {path} back")

    with monkeypatch.context() as patch:
        patch.setattr(manifest, "summarize_shard", refuse)
        assert manifest.shard_summaries(prefix) == read_back
    os.remove(prefix + SUMMARIES_SUFFIX)  # e.g. a finalisation retried after a crash
    assert manifest.shard_summaries(prefix) == read_back


def test_summaries_naming_other_shards_are_not_trusted(tmp_path):
    prefix = str(tmp_path / "out")
    paths = _write(prefix, RECORDS)
    os.remove(paths[0])
    assert [s.name for s in manifest.shard_summaries(prefix)] == [os.path.basename(p) for p in paths[1:]]


def test_verify_checks_crc32c_and_size_and_still_reads_version_1_manifests(tmp_path):
    prefix = str(tmp_path / "out")
    paths = _write(prefix, RECORDS)
    shards = [summary.__dict__ for summary in manifest.shard_summaries(prefix)]
    counters = {"records_written": len(RECORDS), "documents_read": 1, "documents_embedded": 1}
    manifest.write_manifest(prefix, {"shards": shards, "records": len(RECORDS), "counters": counters})
    assert manifest.verify(prefix) == []
    version_1 = [{"name": s["name"], "records": s["records"],
                  "sha256": hashlib.sha256(Path(path).read_bytes()).hexdigest()}
                 for s, path in zip(shards, paths, strict=True)]
    manifest.write_manifest(prefix, {"shards": version_1, "records": len(RECORDS), "counters": counters})
    assert manifest.verify(prefix) == []

    data = bytearray(Path(paths[1]).read_bytes())
    data[-10] ^= 1  # inside the last record's payload
    Path(paths[1]).write_bytes(bytes(data))
    assert manifest.verify(prefix) == [f"{os.path.basename(paths[1])}: checksum differs from the manifest"]
    manifest.write_manifest(prefix, {"shards": shards, "records": len(RECORDS), "counters": counters})
    assert manifest.verify(prefix) == [f"{os.path.basename(paths[1])}: checksum differs from the manifest"]
    Path(paths[2]).write_bytes(Path(paths[2]).read_bytes()[:-1])
    assert manifest.verify(prefix)[1:] == [f"{paths[2]} ends inside record {shards[2]['records'] - 1}."]


def test_a_record_given_as_parts_is_written_as_its_joined_bytes(tmp_path):
    floats = np.arange(3000, dtype=np.float32).view(np.uint8)
    parts = [(b"\x0a\x05", floats[:4000], b"", floats[4000:]), (floats,), ()]
    joined = [b"".join(record) for record in parts]
    files = io.BytesIO(), io.BytesIO()
    by_parts, by_bytes = (SummingFile(file) for file in files)
    for record, whole in zip(parts, joined, strict=True):
        write_record(by_parts, record)
        write_record(by_bytes, whole)
    assert files[0].getvalue() == files[1].getvalue()
    assert (by_parts.bytes, by_parts.crc32c) == (by_bytes.bytes, by_bytes.crc32c)
    assert masked_crc32c(parts[0]) == masked_crc32c(joined[0])
