"""The run manifest beside the output, and the checks that compare shards against it.

``PREFIX.manifest.json`` records what a finished run wrote: its counters, every shard with
its record count, size and CRC32C (version 1 manifests: SHA-256), the model and its fingerprint,
versions and options. It is written last, so its presence means the run completed;
``python -m pipeline.verify PREFIX`` re-reads the shards and reports any difference. The shard
summaries come from the job itself (``shard_sink``), so writing the manifest reads no shard.
Shards are TFRecord (records counted from their frames) or Parquet (from the footer), told apart by
their file names' endings (``schema.SHARD_ENDINGS``).
"""

from __future__ import annotations

import glob
import gzip
import hashlib
import json
import posixpath
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata

import google_crc32c

from pipeline import schema
from pipeline.outputs.shard_sink import SUMMARIES_SUFFIX

__all__ = ["MANIFEST_SUFFIX", "MANIFEST_VERSION", "ShardSummary", "build_manifest", "delete_files",
           "list_shards", "model_fingerprint", "read_manifest", "shard_patterns", "shard_summaries",
           "stale_outputs", "stale_shard_summaries", "summarize_shard", "verify", "write_manifest"]

MANIFEST_SUFFIX = ".manifest.json"
MANIFEST_VERSION = 2
_CHUNK = 8 * 1024 * 1024


@dataclass(frozen=True)
class ShardSummary:
    """One output shard: its file name (relative to the output folder), records, size and the
    CRC32C of its bytes (as hex)."""

    name: str
    records: int
    bytes: int
    crc32c: str


def _open(path: str):
    from apache_beam.io.filesystems import FileSystems

    return FileSystems.open(path, compression_type="uncompressed")


def _file_digests(path: str, sha256: bool = False) -> tuple[int, str, str | None]:
    """The file's size, CRC32C (hex) and, if asked, SHA-256 (hex; what version 1 manifests hold)."""
    crc, size, digest = 0, 0, hashlib.sha256() if sha256 else None
    with _open(path) as handle:
        while chunk := handle.read(_CHUNK):
            crc, size = google_crc32c.extend(crc, chunk), size + len(chunk)
            if digest is not None:
                digest.update(chunk)
    return size, f"{crc:08x}", digest.hexdigest() if digest is not None else None


def _count_records(path: str) -> int:
    """A shard's records: a Parquet footer's row count, or TFRecord frames counted."""
    if schema.shard_format(path) == schema.PARQUET:
        return _count_parquet_rows(path)
    return _count_tfrecord_frames(path)


def _count_parquet_rows(path: str) -> int:
    """The row count in a Parquet file's footer (a cut or overwritten footer does not parse)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    with _open(path) as handle:
        try:
            return pq.ParquetFile(handle).metadata.num_rows
        except (pa.ArrowException, OSError) as error:
            raise ValueError(f"{path} is not a whole Parquet file ({error}).") from error


def _count_tfrecord_frames(path: str) -> int:
    """Counts TFRecord frames, reading length headers and skipping payloads."""
    records = 0
    with _open(path) as raw:
        stream = gzip.GzipFile(fileobj=raw) if path.endswith(".gz") else raw
        while header := stream.read(12):
            if len(header) < 12:
                raise ValueError(f"{path} ends inside a record header.")
            (length,) = struct.unpack("<Q", header[:8])
            payload = stream.read(length + 4)
            if len(payload) < length + 4:
                raise ValueError(f"{path} ends inside record {records}.")
            records += 1
    return records


def summarize_shard(path: str) -> ShardSummary:
    """Reads a shard back: its records, size and CRC32C."""
    size, crc, _ = _file_digests(path)
    return ShardSummary(posixpath.basename(path), _count_records(path), size, crc)


def shard_summaries(prefix: str) -> list[ShardSummary]:
    """The shards' summaries as the job wrote them (``PREFIX.shards.json``); read back from the
    shards themselves only where that file is missing or does not name exactly the shards present."""
    from apache_beam.io.filesystems import FileSystems

    shards = list_shards(prefix)
    if FileSystems.exists(prefix + SUMMARIES_SUFFIX):
        with _open(prefix + SUMMARIES_SUFFIX) as handle:
            written = [ShardSummary(**shard) for shard in json.loads(handle.read().decode("utf-8"))["shards"]]
        if sorted(shard.name for shard in written) == [posixpath.basename(path) for path in shards]:
            return sorted(written, key=lambda shard: shard.name)
    return [summarize_shard(path) for path in shards]


def shard_patterns(prefix: str) -> list[str]:
    """The file patterns of this prefix's shards, in every format and compression."""
    return [prefix + schema.SHARD_NUMBERING + ending for ending in schema.SHARD_ENDINGS]


def list_shards(prefix: str) -> list[str]:
    """This prefix's shard files, of every format, compressed or not, sorted."""
    from apache_beam.io.filesystems import FileSystems

    return sorted(found.path for result in FileSystems.match(shard_patterns(prefix))
                  for found in result.metadata_list)


def model_fingerprint(model_path: str) -> str:
    """SHA-256 over the SavedModel graph and its variables index: changes when the model does."""
    from apache_beam.io.filesystems import FileSystems

    digest = hashlib.sha256()
    for name in ("saved_model.pb", "variables/variables.index"):
        path = FileSystems.join(model_path, name)
        if FileSystems.exists(path):
            with _open(path) as handle:
                while chunk := handle.read(_CHUNK):
                    digest.update(chunk)
    return digest.hexdigest()


def _versions() -> dict[str, str]:
    versions = {}
    for package in ("bert-beam", "apache-beam", "tensorflow", "tensorflow-hub", "numpy"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def build_manifest(
    prefix: str,
    counters: Mapping[str, int],
    model: Mapping[str, str],
    options: Mapping[str, object],
    resolved: Mapping[str, object] | None = None,
) -> dict:
    """The manifest of a finished run; ``options`` as the user gave them, ``resolved`` the values the
    plan derived for those left to their defaults (``RunPlan.resolved_flags``)."""
    shards = shard_summaries(prefix)
    return {
        "manifest_version": MANIFEST_VERSION,
        "written_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "output_prefix": prefix,
        "counters": dict(counters),
        "records": sum(shard.records for shard in shards),
        "shards": [shard.__dict__ for shard in shards],
        "model": dict(model),
        "versions": _versions(),
        "options": {k: v for k, v in options.items() if _is_plain(v)},
        "resolved": {k: v for k, v in (resolved or {}).items() if _is_plain(v)},
    }


def _is_plain(value: object) -> bool:
    return value is None or isinstance(value, (str, int, float, bool, list))


def write_manifest(prefix: str, manifest: Mapping) -> str:
    from apache_beam.io.filesystems import FileSystems

    path = prefix + MANIFEST_SUFFIX
    with FileSystems.create(path) as handle:
        handle.write(json.dumps(manifest, indent=2, sort_keys=True).encode("utf-8"))
    return path


def read_manifest(prefix: str) -> dict:
    with _open(prefix + MANIFEST_SUFFIX) as handle:
        return json.loads(handle.read().decode("utf-8"))


def verify(prefix: str) -> list[str]:
    """Every difference between the shards under ``prefix`` and its manifest; empty when they agree."""
    from apache_beam.io.filesystems import FileSystems

    if not FileSystems.exists(prefix + MANIFEST_SUFFIX):
        return [f"no manifest {prefix}{MANIFEST_SUFFIX}: the run did not complete (or predates manifests)"]
    manifest = read_manifest(prefix)
    problems: list[str] = []
    expected = {shard["name"]: shard for shard in manifest["shards"]}
    present = {posixpath.basename(path): path for path in list_shards(prefix)}
    for name in sorted(set(expected) - set(present)):
        problems.append(f"missing shard {name}")
    for name in sorted(set(present) - set(expected)):
        problems.append(f"unexpected shard {name} (not written by the run the manifest describes)")
    for name in sorted(set(expected) & set(present)):
        try:
            records = _count_records(present[name])
        except ValueError as error:  # a length header or footer changed, or the file was cut
            problems.append(str(error))
            continue
        if records != expected[name]["records"]:
            problems.append(f"{name}: {records} records, manifest says {expected[name]['records']}")
        checksum = "sha256" if "sha256" in expected[name] else "crc32c"
        size, crc32c, sha256 = _file_digests(present[name], sha256=checksum == "sha256")
        if "bytes" in expected[name] and size != expected[name]["bytes"]:
            problems.append(f"{name}: {size} bytes, manifest says {expected[name]['bytes']}")
        if {"crc32c": crc32c, "sha256": sha256}[checksum] != expected[name][checksum]:
            problems.append(f"{name}: checksum differs from the manifest")
    counters = manifest["counters"]
    if counters.get("records_written") != manifest["records"]:
        problems.append(f"counters say {counters.get('records_written')} records written, "
                        f"shards hold {manifest['records']}")
    if counters.get("documents_read") != sum(counters.get(name, 0) for name in (
            "documents_embedded", "documents_rejected", "documents_skipped")):
        problems.append("documents read != embedded + rejected + skipped in the manifest's counters")
    return problems


def stale_outputs(prefix: str, dead_letter_prefix: str) -> list[str]:
    """What an earlier run left: shards (of either format: a rerun in the other one must not leave
    them beside its own), schema, manifest and fitted whitening under the prefixes, and the
    temporary folders (``beam-temp-NAME-*``) of a run killed before Beam could remove them."""
    from apache_beam.io.filesystems import FileSystems

    whitening = prefix + schema.WHITENING_SUFFIX
    patterns = [*shard_patterns(prefix), prefix + schema.SCHEMA_SUFFIX,
                prefix + MANIFEST_SUFFIX, prefix + SUMMARIES_SUFFIX,
                dead_letter_prefix + schema.SHARD_NUMBERING + ".jsonl", whitening + "/**"]
    folders: list[str] = sorted(glob.glob(whitening)) if "://" not in whitening else []
    for sink_prefix in (prefix, prefix + ".schema", dead_letter_prefix):
        directory, name = posixpath.split(sink_prefix)
        temporary = posixpath.join(directory, f"beam-temp-{name}-*")
        patterns.append(temporary + "/**")  # tf.Transform's temporary files are nested
        if "://" not in temporary:  # object stores have no folders; local ones must go too
            folders.extend(sorted(glob.glob(temporary)))
    found: list[str] = []
    for result in FileSystems.match(patterns):
        found.extend(m.path for m in result.metadata_list)
    return found + folders


def stale_shard_summaries(prefix: str) -> list[str]:
    """``PREFIX.shards.json`` where the job left it: once in the manifest, it goes."""
    from apache_beam.io.filesystems import FileSystems

    path = prefix + SUMMARIES_SUFFIX
    return [path] if FileSystems.exists(path) else []


def delete_files(paths: Iterable[str]) -> None:
    from apache_beam.io.filesystems import FileSystems

    paths = list(paths)
    if paths:
        FileSystems.delete(paths)
