"""Shard sinks that summarise each shard (records, bytes, CRC32C) as they write it, and TFRecord framing.

The run's manifest used to read every shard back to count and checksum it: one more pass over
outputs that run to gigabytes a second. ``SummarizedShardSink`` writes each shard through a
``SummingFile`` that keeps a running CRC32C of the file's bytes, and leaves the shard's summary
beside its temporary file. Finalising, it writes them all to ``PREFIX.shards.json`` before renaming
the shards, so the launcher builds the manifest without reading a shard. The format is its
subclasses' business: ``TFRecordShardSink`` here, ``parquet_sink.ParquetShardSink``.

Beam's ``WriteToTFRecord`` joins every record with its framing into a new buffer before writing it;
``TFRecordShardSink`` writes a record's framing and payload as separate writes.
"""

from __future__ import annotations

import json
import logging
import posixpath
import struct
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import google_crc32c
import numpy as np
from apache_beam.coders import BytesCoder
from apache_beam.io.filebasedsink import FileBasedSink
from apache_beam.io.filesystem import CompressedFile, CompressionTypes
from apache_beam.io.filesystems import FileSystems

__all__ = ["SUMMARIES_SUFFIX", "Payload", "ShardHandle", "SummarizedShardSink", "SummingFile",
           "TFRecordShardSink", "masked_crc32c", "record_footer", "record_header", "write_record"]

SUMMARIES_SUFFIX = ".shards.json"
_SIDECAR_SUFFIX = ".summary.json"
_READERS = 16  # sidecars read at once when finalising: each is one small object-store read
_LOG = logging.getLogger(__name__)


def _read_json(path: str) -> dict:
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
        return json.loads(handle.read().decode("utf-8"))


# A record's payload: its bytes, or its pieces in order (bytes and 1-D uint8 numpy views of the
# model's outputs: ``example_wire.SerializedParts``), written without joining them.
Payload = bytes | Sequence[bytes | np.ndarray]


def _mask(crc: int) -> int:
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def masked_crc32c(data: Payload) -> int:
    """TFRecord's masked CRC32C of ``data``."""
    if isinstance(data, bytes):
        return _mask(google_crc32c.value(data))
    crc = 0
    for part in data:
        crc = google_crc32c.extend(crc, part)
    return _mask(crc)


def _size(payload: Payload) -> int:
    return len(payload) if isinstance(payload, bytes) else sum(len(part) for part in payload)


def record_header(payload: Payload) -> bytes:
    """The 12 bytes before a TFRecord payload: its length and the length's masked CRC."""
    length = struct.pack("<Q", _size(payload))
    return length + struct.pack("<I", masked_crc32c(length))


def record_footer(payload: Payload) -> bytes:
    """The 4 bytes after a TFRecord payload: its masked CRC."""
    return struct.pack("<I", masked_crc32c(payload))


def write_record(stream, payload: Payload) -> None:
    """One TFRecord: framing and payload as separate writes, so the payload is never copied here."""
    stream.write(record_header(payload))
    for part in (payload,) if isinstance(payload, bytes) else payload:
        stream.write(part)
    stream.write(record_footer(payload))


class SummingFile:
    """A shard's file as written: passes bytes through, keeping their count and CRC32C."""

    mode = "wb"  # what Beam's CompressedFile checks before writing through it

    def __init__(self, raw) -> None:
        self._raw = raw
        self.bytes = 0
        self.crc32c = 0

    @property
    def closed(self) -> bool:
        return self._raw.closed

    def tell(self) -> int:
        return self.bytes

    def write(self, data: bytes) -> None:
        self._raw.write(data)
        self.bytes += len(data)
        self.crc32c = google_crc32c.extend(self.crc32c, data)

    def flush(self) -> None:
        self._raw.flush()

    def close(self) -> None:
        self._raw.close()


class ShardHandle:
    """What a summarising sink's ``open`` returns: the temporary file, written through a
    ``SummingFile``, and the records written to it. A format's handle adds its stream over ``file``
    and overrides ``finish``."""

    def __init__(self, temp_path: str) -> None:
        self.temp_path = temp_path
        self.file = SummingFile(FileSystems.create(temp_path, "application/octet-stream",
                                                    CompressionTypes.UNCOMPRESSED))
        self.records = 0

    def finish(self) -> None:
        """Writes what the format still holds, then closes the file."""
        self.file.close()

    def summary(self) -> dict[str, int | str]:
        return {"records": self.records, "bytes": self.file.bytes, "crc32c": f"{self.file.crc32c:08x}"}


class SummarizedShardSink(FileBasedSink):
    """A file sink whose shards are summarised as written and listed in ``PREFIX.shards.json``.

    Subclasses open a ``ShardHandle`` and write each value into it, counting records; values reach
    ``write_record`` as they are (no coder encodes them), so the coder given to Beam is never used.
    """

    def __init__(self, file_path_prefix: str, file_name_suffix: str, num_shards: int,
                 compression_type: str = CompressionTypes.UNCOMPRESSED) -> None:
        super().__init__(file_path_prefix, coder=BytesCoder(), file_name_suffix=file_name_suffix,
                         num_shards=num_shards, mime_type="application/octet-stream",
                         compression_type=compression_type)

    def close(self, file_handle: ShardHandle) -> None:
        file_handle.finish()
        with FileSystems.create(file_handle.temp_path + _SIDECAR_SUFFIX) as sidecar:
            sidecar.write(json.dumps(file_handle.summary()).encode("utf-8"))

    def finalize_write(self, init_result, writer_results, pre_finalize_results):
        self._write_summaries(sorted(writer_results))
        yield from super().finalize_write(init_result, writer_results, pre_finalize_results)

    def _write_summaries(self, temp_paths: list[str]) -> None:
        """``PREFIX.shards.json``: each final shard's name and summary, from the writers' sidecars.
        A retried finalisation finds the sidecars gone with the renamed shards and keeps the file
        the first attempt wrote."""
        if not temp_paths:
            return
        sidecars = [path + _SIDECAR_SUFFIX for path in temp_paths]
        pattern = FileSystems.join(FileSystems.split(temp_paths[0])[0], "*" + _SIDECAR_SUFFIX)
        found = {m.path for m in FileSystems.match([pattern])[0].metadata_list}
        if not found.issuperset(sidecars):
            _LOG.warning("bert-beam: shard summaries incomplete; the manifest will read the shards back")
            return
        with ThreadPoolExecutor(_READERS) as pool:
            summaries = list(pool.map(_read_json, sidecars))
        shards = [{"name": posixpath.basename(self._get_final_name(index, len(temp_paths))), **summary}
                  for index, summary in enumerate(summaries)]
        with FileSystems.create(self.file_path_prefix.get() + SUMMARIES_SUFFIX) as handle:
            handle.write(json.dumps({"shards": shards}, indent=1).encode("utf-8"))


class _TFRecordShard(ShardHandle):
    """A TFRecord shard: records go to ``stream``, the summing file or a gzip stream over it."""

    def __init__(self, temp_path: str, compression_type: str) -> None:
        super().__init__(temp_path)
        compressed = compression_type != CompressionTypes.UNCOMPRESSED
        self.stream = CompressedFile(self.file, compression_type) if compressed else self.file

    def finish(self) -> None:
        self.stream.close()  # a compressed stream closes the file under it


class TFRecordShardSink(SummarizedShardSink):
    """Serialized records → ``PREFIX-SSSSS-of-NNNNN.tfrecord[.gz]``, as ``tf.data.TFRecordDataset`` reads."""

    def open(self, temp_path: str) -> _TFRecordShard:
        return _TFRecordShard(temp_path, self.compression_type)

    def write_record(self, file_handle: _TFRecordShard, value: Payload) -> None:
        """Writes a record's bytes or pieces as they are: no coder joins them first."""
        write_record(file_handle.stream, value)
        file_handle.records += 1

    def write_encoded_record(self, file_handle: _TFRecordShard, encoded_value: bytes) -> None:
        self.write_record(file_handle, encoded_value)
