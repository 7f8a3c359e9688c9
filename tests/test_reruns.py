"""Reruns and verification: a killed run rerun completes cleanly; the manifest catches tampering."""

from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import sys
import time

from helpers import run_pipeline, write_jsonl

from pipeline import verify as verify_cli
from pipeline.manifest import MANIFEST_SUFFIX, read_manifest, verify
from pipeline.reader import read_embeddings


def _corpus(path, count):
    return write_jsonl(path, [{"id": f"d{i}", "text": f"the quick brown fox {i} jumps over the lazy dog"}
                              for i in range(count)])


def _has_bytes(pattern: str) -> bool:
    """Whether any file matching the glob pattern holds data."""
    for path in glob.glob(pattern):
        try:
            if os.path.getsize(path) > 0:
                return True
        except FileNotFoundError:  # finalised (renamed) between the glob and the stat
            continue
    return False


def test_manifest_describes_the_run_and_verify_catches_changes(tmp_path, tf1_module, capsys):
    docs = _corpus(tmp_path / "docs.jsonl", 30)
    prefix = str(tmp_path / "out" / "emb")
    run_pipeline(str(docs), prefix, tf1_module, "--num_shards=3")
    manifest = read_manifest(prefix)
    assert manifest["records"] == 30 and len(manifest["shards"]) == 3
    assert manifest["counters"]["documents_embedded"] == 30
    assert manifest["model"]["handle"] == tf1_module and len(manifest["model"]["fingerprint"]) == 64
    assert manifest["options"]["num_shards"] == 3
    assert verify(prefix) == []
    assert verify_cli.main([prefix]) == 0
    assert "OK" in capsys.readouterr().out

    shards = sorted(glob.glob(prefix + "-*.tfrecord"))
    with open(shards[0], "ab") as handle:
        handle.write(b"\0" * 16)
    os.remove(shards[1])
    problems = verify(prefix)
    assert any("checksum" in p for p in problems)
    assert any("missing shard" in p for p in problems)
    assert verify_cli.main([prefix]) == 1


def test_a_rerun_replaces_an_earlier_runs_outputs_without_duplicates(tmp_path, tf1_module):
    docs = _corpus(tmp_path / "docs.jsonl", 12)
    prefix = str(tmp_path / "out" / "emb")
    run_pipeline(str(docs), prefix, tf1_module, "--num_shards=4")
    run_pipeline(str(docs), prefix, tf1_module, "--num_shards=2")
    names = sorted(os.path.basename(p) for p in glob.glob(prefix + "*"))
    assert names == ["emb-00000-of-00002.tfrecord", "emb-00001-of-00002.tfrecord",
                     "emb.manifest.json", "emb.schema.pbtxt"]
    assert sorted(r.id for r in read_embeddings(prefix)) == sorted(f"d{i}" for i in range(12))
    assert verify(prefix) == []


def test_a_killed_run_rerun_with_the_same_arguments_is_complete(tmp_path, tf1_module):
    docs = _corpus(tmp_path / "docs.jsonl", 6000)
    prefix = str(tmp_path / "out" / "emb")
    command = [sys.executable, "-m", "pipeline.run", f"--input={docs}", f"--output={prefix}",
               f"--model={tf1_module}", "--batch_size=4", "--runner=DirectRunner"]
    partial = str(tmp_path / "out" / "beam-temp-*" / "*.tfrecord")
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and process.poll() is None and not _has_bytes(partial):
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not os.path.exists(prefix + MANIFEST_SUFFIX), "the run finished before it could be killed"
    assert _has_bytes(partial), "the run was killed before it wrote anything"
    finished = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, finished.stderr[-2000:]
    assert verify(prefix) == []
    ids = [r.id for r in read_embeddings(prefix)]
    assert len(ids) == len(set(ids)) == 6000
    leftovers = [p for p in glob.glob(str(tmp_path / "out" / "*")) if "beam-temp" in p]
    assert leftovers == []
    assert json.loads((tmp_path / "out" / "emb.manifest.json").read_text())["records"] == 6000
