"""Reads input files into validated Documents; anything unusable becomes a Rejected.

Files are matched with Beam's filesystems (local, ``gs://``, ...) and read by format: text (one
document per line, id ``FILE:LINE``), JSON Lines and CSV are decompressed by extension and streamed
with a bounded record length, so one enormous record cannot exhaust memory; Parquet files are split
into row groups (``parquet_input``) that workers read apart. A text, JSON Lines or CSV file whose
first block shows a binary format (Parquet, zip, compressed data left compressed, NUL bytes) is one
rejection instead of records of garbage. A bad record is rejected alone; only an I/O or
decompression error ends a file early, its unread rest one rejection.
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import json
import lzma
import os
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple, TypeVar

import apache_beam as beam
import zstandard
from apache_beam.io import fileio
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from google.api_core.exceptions import GoogleAPIError

from pipeline.inputs.binary_formats import SNIFF_BYTES, BinaryFormat, sniff_binary_format
from pipeline.inputs.csv_input import RawRecord, csv_records, delimiter_for, parse_fields, split_records
from pipeline.inputs.parquet_input import (
    PARQUET_ERRORS,
    RowGroup,
    parquet_columns,
    read_row_group,
    split_row_groups,
)
from pipeline.inputs.record_fields import column_problem, document_from_fields
from transforms import counters
from transforms.records import EXCERPT_CHARS, REJECTED_TAG, STAGE_READ, Document, Rejected, excerpt

__all__ = ["COLUMN_CHECK_TRIES", "COMPRESSIONS", "CSV", "DEFAULT_MAX_RECORD_BYTES", "INPUT_FORMATS", "JSONL",
           "PARQUET", "TEXT", "InputConfig", "ReadDocuments", "ReadDocumentsResult", "binary_inputs_error",
           "format_for_path", "input_columns_error", "parse_record", "sniff_file"]

TEXT = "text"
JSONL = "jsonl"
CSV = "csv"
PARQUET = "parquet"
INPUT_FORMATS = (TEXT, JSONL, CSV, PARQUET)
_EXTENSION_FORMATS = {".txt": TEXT, ".text": TEXT, ".jsonl": JSONL, ".ndjson": JSONL, ".json": JSONL,
                      ".csv": CSV, ".tsv": CSV, ".parquet": PARQUET}
_COMPRESSION_EXTENSIONS = (".gz", ".bz2", ".zst", ".zstd", ".deflate", ".lzma", ".xz")
COMPRESSIONS = {"auto": CompressionTypes.AUTO, "gzip": CompressionTypes.GZIP,
                "none": CompressionTypes.UNCOMPRESSED}
DEFAULT_MAX_RECORD_BYTES = 32 * 1024 * 1024
_CHUNK = 1024 * 1024
# The launcher reads the header or footer of the first CSV and the first Parquet input, passing over
# at most this many unreadable ones (the run dead-letters them), never every file.
COLUMN_CHECK_TRIES = 3
# What opening or reading a file raises when the file or its storage is at fault, not bert-beam:
# OSError (Beam's BeamIOError, gzip.BadGzipFile, bzip2's invalid data stream, network errors), EOFError
# (a truncated gzip or bzip2 stream), the raw decompressors' errors, and GCS's API errors (NotFound).
# Only these end a file early as unreadable; anything else is a bug and fails the bundle.
_IO_ERRORS: tuple[type[Exception], ...] = (
    OSError, EOFError, zlib.error, lzma.LZMAError, zstandard.ZstdError, GoogleAPIError)


@dataclass(frozen=True)
class InputConfig:
    """How input records are read and validated."""

    input_format: str | None = None
    id_field: str = "id"
    text_field: str = "text"
    text_b_field: str | None = None
    compression: str = "auto"
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES
    csv_delimiter: str | None = None  # None: by extension, a tab for .tsv, else a comma


def sniff_file(path: str, compression: str = "auto") -> BinaryFormat | None:
    """The binary format of ``path`` decompressed as the pipeline reads it, or None; reads one block."""
    with _open_decompressed(path, compression) as handle:
        return sniff_binary_format(_read_head(handle))


def binary_inputs_error(paths: Sequence[str], compression: str = "auto",
                        input_format: str | None = None) -> str | None:
    """A one-sentence error when every one of ``paths`` is a binary file not read as Parquet, else None.

    Sniffs files in order and stops at the first that is not binary or is read as Parquet, so a text
    input costs one block; a file that cannot even be opened counts as not binary (the run
    dead-letters it).
    """
    first: BinaryFormat | None = None
    for path in paths:
        if format_for_path(path, input_format) == PARQUET:
            return None
        try:
            detected = sniff_file(path, compression)
        except _IO_ERRORS:  # the run dead-letters a file it cannot read
            return None
        if detected is None:
            return None
        first = first or detected
    if first is None:
        return None
    what = f"{first.name}, {first.evidence}"
    subject = (f"--input {paths[0]!r} is a binary file ({what})" if len(paths) == 1 else
               f"All {len(paths)} files --input matches are binary ({paths[0]!r}: {what})")
    return f"{subject}, not text, JSON Lines or CSV{first.hint}."


def _extension(path: str) -> str:
    """A file's extension in lower case, under any compression extension (``.tsv`` for ``a.tsv.gz``)."""
    stem = path
    for extension in _COMPRESSION_EXTENSIONS:
        if stem.endswith(extension):
            stem = stem[: -len(extension)]
            break
    return os.path.splitext(stem)[1].lower()


def format_for_path(path: str, explicit: str | None) -> str:
    """The input format: ``explicit`` if set, else from the extension (text by default)."""
    return explicit or _EXTENSION_FORMATS.get(_extension(path), TEXT)


def _csv_delimiter(path: str, config: InputConfig) -> str:
    return delimiter_for(_extension(path), config.csv_delimiter)


def _header_columns(path: str, config: InputConfig) -> Sequence[str] | None:
    """The columns a CSV file's header or a Parquet file's footer names; None for an empty file or an
    unreadable header. Raises ``_IO_ERRORS`` or ``PARQUET_ERRORS`` for a file that cannot be read."""
    if format_for_path(path, config.input_format) == PARQUET:
        return parquet_columns(path)
    delimiter = _csv_delimiter(path, config)
    with _open_decompressed(path, config.compression) as handle:
        for record in split_records(_read_chunks(handle), delimiter, config.max_record_bytes):
            fields = parse_fields(record, delimiter, config.max_record_bytes)
            return None if isinstance(fields, str) else fields
    return None


def input_columns_error(paths: Sequence[str], config: InputConfig) -> str | None:
    """A one-sentence error when the first readable CSV or Parquet file among ``paths`` lacks a
    configured column, else None.

    Reads one header or footer per format, passing over at most ``COLUMN_CHECK_TRIES`` unreadable
    files: with thousands of inputs the launcher stays quick, and a later file that lacks a column
    is dead-lettered whole when the run reads it.
    """
    tries = {CSV: COLUMN_CHECK_TRIES, PARQUET: COLUMN_CHECK_TRIES}
    for path in paths:
        kind = format_for_path(path, config.input_format)
        if not tries.get(kind):
            continue
        try:
            columns = _header_columns(path, config)
        except (*_IO_ERRORS, *PARQUET_ERRORS):  # the run dead-letters a file it cannot read
            columns = None
        if columns is None:
            tries[kind] -= 1
            continue
        problem = column_problem(columns, config)
        if problem:
            return f"--input file {path!r} {problem}."
        tries[kind] = 0
        if not any(tries.values()):
            break
    return None


def parse_record(raw: bytes, source: str, path: str, config: InputConfig) -> Document | Rejected:
    """Validates one raw line into a Document, or says why it cannot be one."""

    def reject(reason: str) -> Rejected:
        return Rejected(source=source, raw=excerpt(raw), reason=reason, stage=STAGE_READ)

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
    result = document_from_fields(record, source, config)
    return result if isinstance(result, Document) else reject(result)


class _Line(NamedTuple):
    """One line as ``_bounded_lines`` yields it: its 1-based number and bytes, the first ones if oversize."""

    number: int
    raw: bytes
    oversize: bool

    @property
    def last_line(self) -> int:
        return self.number


_Item = TypeVar("_Item", _Line, RawRecord)


def _read_file(path: str, config: InputConfig,
               split: Callable[[Iterator[bytes]], Iterator[_Item]]) -> Iterator[_Item | Rejected]:
    """A text, JSON Lines or CSV file's records as ``split`` cuts them from its bytes; a binary file
    is one Rejected, and so is the unread rest of a file whose opening or reading raises ``_IO_ERRORS``.

    Only bytes are read here: records are parsed by the caller, so a record's failure is never the file's.
    """
    last_line = 0
    try:
        with _open_decompressed(path, config.compression) as handle:
            head = _read_head(handle)
            detected = sniff_binary_format(head)
            if detected:
                yield Rejected(f"{path}:1", "", detected.reason, STAGE_READ)
                return
            for item in split(_read_chunks(handle, head)):
                last_line = item.last_line
                yield item
    except _IO_ERRORS as error:
        # A corrupt or truncated file: what was read stands, the rest is one rejection.
        yield Rejected(f"{path}:{last_line + 1}", "", f"file unreadable after line {last_line}: "
                       f"{type(error).__name__}: {error}", STAGE_READ)


@dataclass(frozen=True)
class _WholeFile:
    """A text, JSON Lines or CSV file, read whole by one worker."""

    path: str


_ReadTask = _WholeFile | RowGroup | Rejected


class _SplitFiles(beam.DoFn):
    """Each matched file as what one worker reads: the file whole, or a Parquet file's row groups
    (from its footer; a Parquet file that cannot be read or lacks a column is one Rejected)."""

    def __init__(self, config: InputConfig) -> None:
        self._config = config
        self._files = Metrics.counter(counters.NAMESPACE, counters.FILES_READ)

    def process(self, readable: fileio.ReadableFile) -> Iterator[_ReadTask]:
        path = readable.metadata.path
        self._files.inc()
        if format_for_path(path, self._config.input_format) == PARQUET:
            yield from split_row_groups(path, self._config)
        else:
            yield _WholeFile(path)


class _ReadRecords(beam.DoFn):
    """Reads one task into Documents and Rejected, every one counted as read."""

    def __init__(self, config: InputConfig) -> None:
        self._config = config
        self._read = Metrics.counter(counters.NAMESPACE, counters.DOCUMENTS_READ)

    def process(self, task: _ReadTask) -> Iterator:
        if isinstance(task, Rejected):
            records: Iterable[Document | Rejected] = [task]
        elif isinstance(task, RowGroup):
            records = read_row_group(task, self._config)
        else:
            records = self._file_records(task.path)
        for record in records:
            self._read.inc()
            yield record if isinstance(record, Document) else beam.pvalue.TaggedOutput(REJECTED_TAG, record)

    def _file_records(self, path: str) -> Iterator[Document | Rejected]:
        """A text, JSON Lines or CSV file's records, each a Document or a Rejected."""
        config = self._config
        limit = config.max_record_bytes
        if format_for_path(path, config.input_format) == CSV:
            delimiter = _csv_delimiter(path, config)
            records = _read_file(path, config, lambda chunks: split_records(chunks, delimiter, limit))
            return csv_records(records, path, delimiter, config)
        lines = _read_file(path, config, lambda chunks: _bounded_lines(chunks, limit))
        return (line if isinstance(line, Rejected) else self._line_record(path, line) for line in lines)

    def _line_record(self, path: str, line: _Line) -> Document | Rejected:
        """One line of a text or JSON Lines file as a Document, or a Rejected saying why it is none."""
        source = f"{path}:{line.number}"
        if line.oversize:
            return Rejected(source, excerpt(line.raw), f"record over --max_record_bytes "
                            f"({self._config.max_record_bytes} bytes)", STAGE_READ)
        return parse_record(line.raw, source, path, self._config)


@contextlib.contextmanager
def _open_decompressed(path: str, compression: str):
    """Opens a file decompressed; gzip and bzip2 through Python's own readers.

    Python's gzip and bz2 readers raise EOFError on a truncated stream, where
    Beam's CompressedFile ends quietly and would pass a cut-off last record as whole.
    """
    kind = compression
    if kind == "auto":
        kind = "gzip" if path.endswith(".gz") else "bzip2" if path.endswith(".bz2") else "auto"
    if kind not in ("gzip", "bzip2"):
        with FileSystems.open(path, compression_type=COMPRESSIONS[compression]) as handle:
            yield handle
        return
    with (
        FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as raw,
        gzip.GzipFile(fileobj=raw) if kind == "gzip" else bz2.BZ2File(raw) as handle,
    ):
        yield handle


def _read_head(handle, size: int = SNIFF_BYTES) -> bytes:
    """The first ``size`` bytes of a file object (fewer at its end); decompressors may return short reads."""
    head = b""
    while len(head) < size:
        block = handle.read(size - len(head))
        if not block:
            break
        head += block
    return head


def _read_chunks(handle, head: bytes = b"") -> Iterator[bytes]:
    """``head`` (bytes already read from ``handle``), then the rest of ``handle`` in chunks."""
    if head:
        yield head
    while chunk := handle.read(_CHUNK):
        yield chunk


def _bounded_lines(chunks: Iterable[bytes], limit: int) -> Iterator[_Line]:
    """Yields a file's lines from its bytes, chunk by chunk.

    Never holds more than ``limit`` bytes of one line (plus a chunk): an
    oversize line yields only its first bytes, the rest is skipped.
    """
    line_number = 0
    pending = b""
    skipping = False
    for chunk in chunks:
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
                yield _Line(line_number, line, False) if len(line) - 1 <= limit else _Line(
                    line_number, line[:EXCERPT_CHARS], True)
            start = end + 1
        pending = pending[start:]
        if not skipping and len(pending) > limit:
            line_number += 1
            yield _Line(line_number, pending[:EXCERPT_CHARS], True)
            skipping, pending = True, b""
        elif skipping:
            pending = b""
    if pending and not skipping:
        line_number += 1
        yield _Line(line_number, pending, False) if len(pending) <= limit else _Line(
            line_number, pending[:EXCERPT_CHARS], True)


class ReadDocumentsResult(NamedTuple):
    """What ``ReadDocuments`` returns."""

    documents: beam.PCollection[Document]
    rejected: beam.PCollection[Rejected]  # unreadable files and records


class ReadDocuments(beam.PTransform[beam.pvalue.PBegin, ReadDocumentsResult]):
    """File pattern → ``ReadDocumentsResult``: Documents and Rejected."""

    def __init__(self, file_pattern: str, config: InputConfig) -> None:
        super().__init__()
        self._file_pattern = file_pattern
        self._config = config

    def expand(self, pbegin: beam.pvalue.PBegin) -> ReadDocumentsResult:
        read = (
            pbegin
            | "MatchFiles" >> fileio.MatchFiles(self._file_pattern)
            | "ReadMatches" >> fileio.ReadMatches()
            | "SplitFiles" >> beam.ParDo(_SplitFiles(self._config))
            # Different workers read different files, and different row groups of one Parquet file.
            | "DistributeReads" >> beam.Reshuffle()
            | "ReadRecords" >> beam.ParDo(_ReadRecords(self._config)).with_outputs(
                REJECTED_TAG, main="documents")
        )
        return ReadDocumentsResult(read.documents, read[REJECTED_TAG])
