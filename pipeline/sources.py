"""Reads input files into validated Documents; anything unusable becomes a Rejected.

Files are matched with Beam's filesystems (local, ``gs://``, ...), decompressed
by extension, and streamed line by line with a bounded line length, so one
enormous line cannot exhaust memory. Each line is one record: plain text (one
document per line, id ``FILE:LINE``) or JSON Lines.
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.metrics import Metrics

from transforms import counters
from transforms.records import EXCERPT_CHARS, REJECTED_TAG, Document, Rejected, excerpt

TEXT = "text"
JSONL = "jsonl"
INPUT_FORMATS = (TEXT, JSONL)
_EXTENSION_FORMATS = {".txt": TEXT, ".text": TEXT, ".jsonl": JSONL, ".ndjson": JSONL, ".json": JSONL}
_COMPRESSION_EXTENSIONS = (".gz", ".bz2", ".zst", ".zstd", ".deflate", ".lzma", ".xz")
COMPRESSIONS = {"auto": CompressionTypes.AUTO, "gzip": CompressionTypes.GZIP,
                "none": CompressionTypes.UNCOMPRESSED}
DEFAULT_MAX_RECORD_BYTES = 32 * 1024 * 1024
_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class InputConfig:
    """How input records are read and validated."""

    input_format: str | None = None
    id_field: str = "id"
    text_field: str = "text"
    text_b_field: str | None = None
    compression: str = "auto"
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES


def format_for_path(path: str, explicit: str | None) -> str:
    """The input format: ``explicit`` if set, else from the extension (text by default)."""
    if explicit:
        return explicit
    stem = path
    for extension in _COMPRESSION_EXTENSIONS:
        if stem.endswith(extension):
            stem = stem[: -len(extension)]
            break
    return _EXTENSION_FORMATS.get(os.path.splitext(stem)[1].lower(), TEXT)


def parse_record(raw: bytes, source: str, path: str, config: InputConfig) -> Document | Rejected:
    """Validates one raw line into a Document, or says why it cannot be one."""

    def reject(reason: str) -> Rejected:
        return Rejected(source=source, raw=excerpt(raw), reason=reason, stage="read")

    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        return reject(f"invalid UTF-8 at byte {error.start}")
    line = line.removesuffix("\n").removesuffix("\r").removeprefix("\ufeff")
    if format_for_path(path, config.input_format) == TEXT:
        if not line.strip():
            return reject("empty text")
        return Document(id=source, text=line, source=source)
    try:
        record = json.loads(line)
    except (ValueError, RecursionError) as error:
        return reject(f"invalid JSON: {str(error)[:200]}")
    if not isinstance(record, dict):
        return reject(f"JSON record is a {type(record).__name__}, not an object")
    text = record.get(config.text_field)
    if not isinstance(text, str):
        missing = config.text_field not in record
        return reject(f"field {config.text_field!r} is " + ("missing" if missing else
                      f"a {type(text).__name__}, not a string"))
    if not text.strip():
        return reject(f"field {config.text_field!r} is empty")
    text_b = None
    if config.text_b_field:
        text_b = record.get(config.text_b_field)
        if text_b is not None and not isinstance(text_b, str):
            return reject(f"field {config.text_b_field!r} is a {type(text_b).__name__}, not a string")
    doc_id = record.get(config.id_field, source)
    if isinstance(doc_id, bool) or not isinstance(doc_id, (str, int)):
        return reject(f"field {config.id_field!r} is a {type(doc_id).__name__}, not a string or integer")
    return Document(id=str(doc_id), text=text, source=source, text_b=text_b or None)


class _ReadRecords(beam.DoFn):
    """Streams one matched file as numbered raw lines, bounded in length."""

    def __init__(self, config: InputConfig) -> None:
        self._config = config
        self._read = Metrics.counter(counters.NAMESPACE, counters.DOCUMENTS_READ)
        self._files = Metrics.counter(counters.NAMESPACE, counters.FILES_READ)

    def process(self, readable: fileio.ReadableFile) -> Iterator:
        path = readable.metadata.path
        self._files.inc()
        line_number = 0
        try:
            with _open_decompressed(readable, self._config.compression) as handle:
                for line_number, raw, oversize in _bounded_lines(handle, self._config.max_record_bytes):
                    self._read.inc()
                    source = f"{path}:{line_number}"
                    if oversize:
                        yield beam.pvalue.TaggedOutput(REJECTED_TAG, Rejected(
                            source, excerpt(raw), f"record over --max_record_bytes "
                            f"({self._config.max_record_bytes} bytes)", "read"))
                        continue
                    record = parse_record(raw, source, path, self._config)
                    if isinstance(record, Rejected):
                        yield beam.pvalue.TaggedOutput(REJECTED_TAG, record)
                    else:
                        yield record
        except Exception as error:  # decompressors raise zlib.error, OSError, EOFError, ZstdError ...
            # A corrupt or truncated file: what was read stands, the rest is one rejection.
            self._read.inc()
            yield beam.pvalue.TaggedOutput(REJECTED_TAG, Rejected(
                f"{path}:{line_number + 1}", "",
                f"file unreadable after line {line_number}: {type(error).__name__}: {error}", "read"))


@contextlib.contextmanager
def _open_decompressed(readable: fileio.ReadableFile, compression: str):
    """Opens a matched file decompressed; gzip and bzip2 through Python's own readers.

    Python's gzip and bz2 readers raise EOFError on a truncated stream, where
    Beam's CompressedFile ends quietly and would pass a cut-off last record as whole.
    """
    path = readable.metadata.path
    kind = compression
    if kind == "auto":
        kind = "gzip" if path.endswith(".gz") else "bzip2" if path.endswith(".bz2") else "auto"
    if kind not in ("gzip", "bzip2"):
        with readable.open(compression_type=COMPRESSIONS[compression]) as handle:
            yield handle
        return
    with (
        readable.open(compression_type=CompressionTypes.UNCOMPRESSED) as raw,
        gzip.GzipFile(fileobj=raw) if kind == "gzip" else bz2.BZ2File(raw) as handle,
    ):
        yield handle


def _bounded_lines(handle, limit: int) -> Iterator[tuple[int, bytes, bool]]:
    """Yields ``(line_number, raw, oversize)`` from any file object with ``read(n)``.

    Reads in chunks and never holds more than ``limit`` bytes of one line: an
    oversize line yields only its first bytes, the rest is skipped.
    """
    line_number = 0
    pending = b""
    skipping = False
    while True:
        chunk = handle.read(_CHUNK)
        if not chunk:
            break
        pending += chunk
        start = 0
        while True:
            end = pending.find(b"\n", start)
            if end < 0:
                break
            if skipping:
                skipping = False
            else:
                line_number += 1
                line = pending[start : end + 1]
                yield (line_number, line, False) if len(line) - 1 <= limit else (
                    line_number, line[:EXCERPT_CHARS], True)
            start = end + 1
        pending = pending[start:]
        if not skipping and len(pending) > limit:
            line_number += 1
            yield line_number, pending[:EXCERPT_CHARS], True
            skipping, pending = True, b""
        elif skipping:
            pending = b""
    if pending and not skipping:
        line_number += 1
        yield (line_number, pending, False) if len(pending) <= limit else (
            line_number, pending[:EXCERPT_CHARS], True)


class ReadDocuments(beam.PTransform):
    """File pattern → Documents (main output) and Rejected (tagged ``rejected``)."""

    def __init__(self, file_pattern: str, config: InputConfig) -> None:
        super().__init__()
        self._file_pattern = file_pattern
        self._config = config

    def expand(self, pbegin):
        return (
            pbegin
            | "MatchFiles" >> fileio.MatchFiles(self._file_pattern)
            | "ReadMatches" >> fileio.ReadMatches()
            | "ReadRecords" >> beam.ParDo(_ReadRecords(self._config)).with_outputs(
                REJECTED_TAG, main="documents")
        )
