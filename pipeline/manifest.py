"""The run manifest beside the output, and the checks that compare shards against it.

``PREFIX.manifest.json`` records what a finished run wrote: its counters, every shard with
its record count and SHA-256, the model and its fingerprint, versions and options. It is
written last, so its presence means the run completed; ``python -m pipeline.verify PREFIX``
re-reads the shards and reports any difference.
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

from pipeline import schema

MANIFEST_SUFFIX = ".manifest.json"
SHARD_GLOB = "-?????-of-?????" + schema.SHARD_SUFFIX
_CHUNK = 8 * 1024 * 1024


@dataclass(frozen=True)
class ShardSummary:
    """One output shard: its file name (relative to the output folder), records and checksum."""

    name: str
    records: int
    sha256: str


def _open(path: str):
    from apache_beam.io.filesystems import FileSystems

    return FileSystems.open(path, compression_type="uncompressed")


def summarize_shard(path: str) -> ShardSummary:
    """Counts TFRecord frames (length headers, skipping payloads) and hashes the file bytes."""
    digest = hashlib.sha256()
    with _open(path) as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
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
    return ShardSummary(posixpath.basename(path), records, digest.hexdigest())


def list_shards(prefix: str) -> list[str]:
    """This prefix's shard files, compressed or not, sorted."""
    from apache_beam.io.filesystems import FileSystems

    found = []
    for pattern in (prefix + SHARD_GLOB, prefix + SHARD_GLOB + ".gz"):
        found.extend(m.path for m in FileSystems.match([pattern])[0].metadata_list)
    return sorted(found)


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
) -> dict:
    """The manifest of a finished run, reading its shards back for counts and checksums."""
    shards = [summarize_shard(path) for path in list_shards(prefix)]
    return {
        "manifest_version": 1,
        "written_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "output_prefix": prefix,
        "counters": dict(counters),
        "records": sum(shard.records for shard in shards),
        "shards": [shard.__dict__ for shard in shards],
        "model": dict(model),
        "versions": _versions(),
        "options": {k: v for k, v in options.items() if _is_plain(v)},
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
        actual = summarize_shard(present[name])
        if actual.records != expected[name]["records"]:
            problems.append(f"{name}: {actual.records} records, manifest says {expected[name]['records']}")
        if actual.sha256 != expected[name]["sha256"]:
            problems.append(f"{name}: checksum differs from the manifest")
    counters = manifest["counters"]
    if counters.get("records_written") != manifest["records"]:
        problems.append(f"counters say {counters.get('records_written')} records written, "
                        f"shards hold {manifest['records']}")
    if counters.get("documents_read") != counters.get("documents_embedded", 0) + counters.get(
            "documents_rejected", 0):
        problems.append("documents read != embedded + rejected in the manifest's counters")
    return problems


def stale_outputs(prefix: str, dead_letter_prefix: str) -> list[str]:
    """What an earlier run left: shards, schema and manifest under the prefixes, and the
    temporary folders (``beam-temp-NAME-*``) of a run killed before Beam could remove them."""
    from apache_beam.io.filesystems import FileSystems

    patterns = [prefix + SHARD_GLOB, prefix + SHARD_GLOB + ".gz", prefix + schema.SCHEMA_SUFFIX,
                prefix + MANIFEST_SUFFIX, dead_letter_prefix + "-?????-of-?????.jsonl"]
    folders: list[str] = []
    for sink_prefix in (prefix, prefix + ".schema", dead_letter_prefix):
        directory, name = posixpath.split(sink_prefix)
        temporary = posixpath.join(directory, f"beam-temp-{name}-*")
        patterns.append(temporary + "/*")
        if "://" not in temporary:  # object stores have no folders; local ones must go too
            folders.extend(sorted(glob.glob(temporary)))
    found: list[str] = []
    for result in FileSystems.match(patterns):
        found.extend(m.path for m in result.metadata_list)
    return found + folders


def delete_files(paths: Iterable[str]) -> None:
    from apache_beam.io.filesystems import FileSystems

    paths = list(paths)
    if paths:
        FileSystems.delete(paths)
