"""Reads input files into validated Documents; anything unusable becomes a Rejected.

Files are matched with Beam's filesystems (local, ``gs://``, ...), decompressed
by extension, and streamed line by line with a bounded line length, so one
enormous line cannot exhaust memory. Each line is one record: plain text (one
document per line, id ``FILE:LINE``) or JSON Lines. A file whose first block
shows a binary format (Parquet, zip, compressed data left compressed, NUL bytes)
is one rejection instead of lines of garbage. A bad record is rejected alone; only an
I/O or decompression error ends a file early, its unread rest one rejection.
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import json
import lzma
import os
import re
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import apache_beam as beam
import zstandard
from apache_beam.io import fileio
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from google.api_core.exceptions import GoogleAPIError

from transforms import counters
from transforms.records import EXCERPT_CHARS, REJECTED_TAG, STAGE_READ, Document, Rejected, excerpt

TEXT = "text"
JSONL = "jsonl"
INPUT_FORMATS = (TEXT, JSONL)
_EXTENSION_FORMATS = {".txt": TEXT, ".text": TEXT, ".jsonl": JSONL, ".ndjson": JSONL, ".json": JSONL}
_COMPRESSION_EXTENSIONS = (".gz", ".bz2", ".zst", ".zstd", ".deflate", ".lzma", ".xz")
COMPRESSIONS = {"auto": CompressionTypes.AUTO, "gzip": CompressionTypes.GZIP,
                "none": CompressionTypes.UNCOMPRESSED}
DEFAULT_MAX_RECORD_BYTES = 32 * 1024 * 1024
_CHUNK = 1024 * 1024
SNIFF_BYTES = 8 * 1024
# What opening or reading a file raises when the file or its storage is at fault, not bert-beam:
# OSError (Beam's BeamIOError, gzip.BadGzipFile, bzip2's invalid data stream, network errors), EOFError
# (a truncated gzip or bzip2 stream), the raw decompressors' errors, and GCS's API errors (NotFound).
# Only these end a file early as unreadable; anything else is a bug and fails the bundle.
_IO_ERRORS: tuple[type[Exception], ...] = (
    OSError, EOFError, zlib.error, lzma.LZMAError, zstandard.ZstdError, GoogleAPIError)
_DECOMPRESS_HINT = ("; compressed input is decompressed only when its name ends in .gz, .bz2, .zst, .xz, "
                    ".lzma or .deflate, or with --compression=gzip")
# Magic numbers at offset 0, each too specific to open a line of text (bzip2's includes its block
# magic 1AY&SY). Formats without one (TFRecord, ORC, ...) are left to the NUL-byte check.
_MAGICS: tuple[tuple[re.Pattern[bytes], str, str], ...] = tuple(
    (re.compile(pattern), name, hint) for pattern, name, hint in (
        (rb"PAR1", "Parquet", ""),
        (rb"Obj\x01", "Avro", ""),
        (rb"ARROW1\x00\x00", "Arrow IPC", ""),
        (rb"\x93NUMPY", "NumPy .npy", ""),
        (rb"\x89HDF\r\n\x1a\n", "HDF5", ""),
        (rb"SQLite format 3\x00", "SQLite", ""),
        (rb"PK(?:\x03\x04|\x05\x06)", "zip", "; unzip it first"),
        (rb"%PDF-", "PDF", ""),
        (rb"\x89PNG\r\n\x1a\n", "PNG", ""),
        (rb"\xff\xd8\xff", "JPEG", ""),
        (rb"\x1f\x8b", "gzip", _DECOMPRESS_HINT),
        (rb"BZh[1-9](?:1AY&SY|\x17rE8P\x90)", "bzip2", _DECOMPRESS_HINT),
        (rb"\xfd7zXZ\x00", "xz", _DECOMPRESS_HINT),
        (rb"\x28\xb5\x2f\xfd", "zstd", _DECOMPRESS_HINT),
    )
)


@dataclass(frozen=True)
class InputConfig:
    """How input records are read and validated."""

    input_format: str | None = None
    id_field: str = "id"
    text_field: str = "text"
    text_b_field: str | None = None
    compression: str = "auto"
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES


@dataclass(frozen=True)
class BinaryFormat:
    """A binary format recognised from a file's first bytes, and how it was recognised."""

    name: str
    evidence: str
    hint: str = ""

    @property
    def reason(self) -> str:
        """The dead-letter reason for a file in this format."""
        return (f"binary file ({self.name}, {self.evidence}): not text or JSON Lines; "
                f"bert-beam reads text and JSON Lines{self.hint}")


def _show_magic(magic: bytes) -> str:
    """``PAR1`` as it reads when printable ASCII, else hex bytes (``1F 8B``)."""
    if all(0x20 < byte < 0x7F for byte in magic):
        return magic.decode("ascii")
    return magic.hex(" ").upper()


def sniff_binary_format(head: bytes) -> BinaryFormat | None:
    """The binary format a file's first bytes (after decompression) show, or None for text.

    A known magic number at offset 0, else a NUL byte in the first ``SNIFF_BYTES``: UTF-8 text and
    JSON never hold a raw NUL, while binary formats and UTF-16 text almost always do early on.
    """
    for pattern, name, hint in _MAGICS:
        match = pattern.match(head)
        if match:
            return BinaryFormat(name, f"magic {_show_magic(match.group())}", hint)
    if b"\x00" in head[:SNIFF_BYTES]:
        return BinaryFormat("unknown format", f"NUL bytes in the first {SNIFF_BYTES // 1024} KiB",
                            "; UTF-16 or UTF-32 text must be converted to UTF-8")
    return None


def sniff_file(path: str, compression: str = "auto") -> BinaryFormat | None:
    """The binary format of ``path`` decompressed as the pipeline reads it, or None; reads one block."""
    with _open_decompressed(path, compression) as handle:
        return sniff_binary_format(_read_head(handle))


def binary_inputs_error(paths: Sequence[str], compression: str = "auto") -> str | None:
    """A one-sentence error when every one of ``paths`` is a binary file, else None.

    Sniffs files in order and stops at the first that is not binary, so a text input costs one
    block; a file that cannot even be opened counts as not binary (the run dead-letters it).
    """
    first: BinaryFormat | None = None
    for path in paths:
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
    return f"{subject}, not text or JSON Lines{first.hint}."


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
    text = record.get(config.text_field)
    if not isinstance(text, str):
        missing = config.text_field not in record
        return reject(f"field {config.text_field!r} is " + ("missing" if missing else
                      f"a {type(text).__name__}, not a string"))
    text_b = record.get(config.text_b_field) if config.text_b_field else None
    if text_b is not None and not isinstance(text_b, str):
        return reject(f"field {config.text_b_field!r} is a {type(text_b).__name__}, not a string")
    # google-research/bert's convert_single_example takes an empty text_a beside a text_b:
    # [CLS] [SEP] B [SEP].
    if not text.strip() and not (text_b or "").strip():
        return reject(f"field {config.text_field!r} is empty" + (
            f" and so is {config.text_b_field!r}" if config.text_b_field else ""))
    doc_id = record.get(config.id_field, source)
    if isinstance(doc_id, bool) or not isinstance(doc_id, (str, int)):
        return reject(f"field {config.id_field!r} is a {type(doc_id).__name__}, not a string or integer")
    return Document(id=str(doc_id), text=text, source=source, text_b=text_b or None)


_Line = tuple[int, bytes, bool]  # (line_number, raw, oversize), as _bounded_lines yields them


@dataclass(frozen=True)
class _Unreadable:
    """The rest of a file that reading failed in, after ``after_line`` lines were read."""

    after_line: int
    error: Exception

    @property
    def reason(self) -> str:
        return f"file unreadable after line {self.after_line}: {type(self.error).__name__}: {self.error}"


_FileItem = BinaryFormat | _Line | _Unreadable


def _read_file(path: str, config: InputConfig) -> Iterator[_FileItem]:
    """A file's lines, or its binary format alone; ends in an ``_Unreadable`` where opening or
    reading it raises one of ``_IO_ERRORS``.

    Only bytes are read here: records are parsed by the caller, so a record's failure is never the file's.
    """
    line_number = 0
    try:
        with _open_decompressed(path, config.compression) as handle:
            head = _read_head(handle)
            detected = sniff_binary_format(head)
            if detected:
                yield detected
                return
            for line in _bounded_lines(_read_chunks(handle, head), config.max_record_bytes):
                line_number = line[0]
                yield line
    except _IO_ERRORS as error:
        # A corrupt or truncated file: what was read stands, the rest is one rejection.
        yield _Unreadable(line_number, error)


class _ReadRecords(beam.DoFn):
    """Streams one matched file as numbered raw lines, bounded in length; a binary file is one rejection."""

    def __init__(self, config: InputConfig) -> None:
        self._config = config
        self._read = Metrics.counter(counters.NAMESPACE, counters.DOCUMENTS_READ)
        self._files = Metrics.counter(counters.NAMESPACE, counters.FILES_READ)

    def process(self, readable: fileio.ReadableFile) -> Iterator:
        path = readable.metadata.path
        self._files.inc()
        for item in _read_file(path, self._config):
            self._read.inc()
            record = self._record(path, item)
            yield record if isinstance(record, Document) else beam.pvalue.TaggedOutput(REJECTED_TAG, record)

    def _record(self, path: str, item: _FileItem) -> Document | Rejected:
        """One item ``_read_file`` yields as a Document, or a Rejected saying why it is none."""
        if isinstance(item, BinaryFormat):
            return Rejected(f"{path}:1", "", item.reason, STAGE_READ)
        if isinstance(item, _Unreadable):
            return Rejected(f"{path}:{item.after_line + 1}", "", item.reason, STAGE_READ)
        line_number, raw, oversize = item
        source = f"{path}:{line_number}"
        if oversize:
            return Rejected(source, excerpt(raw), f"record over --max_record_bytes "
                            f"({self._config.max_record_bytes} bytes)", STAGE_READ)
        return parse_record(raw, source, path, self._config)


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


def _bounded_lines(chunks: Iterable[bytes], limit: int) -> Iterator[tuple[int, bytes, bool]]:
    """Yields ``(line_number, raw, oversize)`` from a file's bytes, chunk by chunk.

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


class ReadDocumentsResult(NamedTuple):
    """What ``ReadDocuments`` returns."""

    documents: beam.PCollection  # of Document
    rejected: beam.PCollection  # of Rejected: unreadable files and records


class ReadDocuments(beam.PTransform):
    """File pattern → ``ReadDocumentsResult``: Documents and Rejected."""

    def __init__(self, file_pattern: str, config: InputConfig) -> None:
        super().__init__()
        self._file_pattern = file_pattern
        self._config = config

    def expand(self, pbegin) -> ReadDocumentsResult:
        read = (
            pbegin
            | "MatchFiles" >> fileio.MatchFiles(self._file_pattern)
            | "ReadMatches" >> fileio.ReadMatches()
            | "ReadRecords" >> beam.ParDo(_ReadRecords(self._config)).with_outputs(
                REJECTED_TAG, main="documents")
        )
        return ReadDocumentsResult(read.documents, read[REJECTED_TAG])
