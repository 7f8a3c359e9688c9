"""The worker image's Python environment, rebuilt here, runs a job: only the runtime part of the lock.

templates/Dockerfile installs bert-beam's wheel with requirements.lock as constraints, which leaves
the test, benchmark and demo packages out. This builds the same environment in a fresh virtual
environment (plain ``tensorflow``, as this machine has no GPU, for the Dockerfile's ``[and-cuda]``)
and runs a small job in two worker processes there, so a runtime import of a package the workers lack
fails here rather than on Dataflow. The environment is cached under ``.cache/`` by the lock's hash;
bert-beam itself is built from the working tree on every run. Marker ``worker_env``:
``make test-worker-env``.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import write_jsonl

from pipeline.reader import read_embeddings

pytestmark = pytest.mark.worker_env

REPO = Path(__file__).resolve().parent.parent
# What the Dockerfile copies into /build before it builds the wheel.
BUILD_CONTEXT = ("requirements.lock", "requirements.in", "setup.py", "README.md", "pipeline", "transforms")
ENVIRONMENT_INPUTS = ("requirements.lock", "requirements.in", "setup.py")
# Test, benchmark and demo packages (import names) that no worker may need.
NOT_AT_RUNTIME = ("torch", "transformers", "bert", "tensorflow_text", "hypothesis", "pytest",
                  "matplotlib")


def _pip(python: Path, *args: str) -> None:
    subprocess.run([str(python), "-m", "pip", "--quiet", *args], check=True, timeout=1800)


def _copy_build_context(target: Path) -> Path:
    target.mkdir(parents=True)
    for name in BUILD_CONTEXT:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, target / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, target / name)
    return target


def _build_wheel(python: Path, context: Path, dist: Path) -> Path:
    """bert-beam's wheel, built as the Dockerfile builds it, from its build context only."""
    _pip(python, "wheel", "--no-deps", "--no-build-isolation", "--wheel-dir", str(dist), str(context))
    return next(dist.glob("bert_beam-*.whl"))


def _tensorflow_pin() -> str:
    return re.search(r"^tensorflow==(\S+)$", (REPO / "requirements.lock").read_text(), re.M)[0]


def _build_environment(target: Path, scratch: Path) -> None:
    """The Dockerfile's RUN line in a fresh venv; bert-beam is uninstalled after ``pip check``, so that
    each run installs the working tree's own."""
    staging = target.with_name(f".{target.name}.{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(staging)], check=True, timeout=300)
    python = staging / "bin" / "python"
    lock = str(REPO / "requirements.lock")
    _pip(python, "install", "pip<27")
    _pip(python, "install", "--constraint", lock, "setuptools", "wheel")
    wheel = _build_wheel(python, _copy_build_context(scratch / "build"), scratch / "dist")
    _pip(python, "install", "--constraint", lock, _tensorflow_pin(), str(wheel))
    _pip(python, "check")
    _pip(python, "uninstall", "--yes", "bert-beam")
    try:  # the venv works from its new path through bin/python; only its scripts' shebangs name staging
        os.replace(staging, target)
    except OSError:  # another run finished the same environment first
        if not target.exists():
            raise
        shutil.rmtree(staging, ignore_errors=True)


@pytest.fixture(scope="session")
def worker_python(tmp_path_factory) -> Path:
    """The cached runtime environment's interpreter, built on first use."""
    digest = hashlib.sha256(b"".join((REPO / name).read_bytes() for name in ENVIRONMENT_INPUTS))
    target = REPO / ".cache" / f"worker-env-{digest.hexdigest()[:16]}"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        _build_environment(target, tmp_path_factory.mktemp("worker-env-build"))
    return target / "bin" / "python"


@pytest.fixture()
def bert_beam_site(worker_python, tmp_path) -> Path:
    """The working tree's bert-beam, as a wheel installed into a folder of its own (on PYTHONPATH)."""
    wheel = _build_wheel(worker_python, _copy_build_context(tmp_path / "build"), tmp_path / "dist")
    site = tmp_path / "site"
    _pip(worker_python, "install", "--no-deps", "--target", str(site), str(wheel))
    return site


def test_the_worker_environment_lacks_every_test_benchmark_and_demo_package(worker_python):
    probe = ("import importlib.util, sys; "
             f"print(*[name for name in {NOT_AT_RUNTIME!r} if importlib.util.find_spec(name)])")
    completed = subprocess.run([str(worker_python), "-c", probe], capture_output=True, text=True, timeout=60)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.split() == []


def test_a_job_runs_in_two_worker_processes_with_only_the_runtime_packages(worker_python, bert_beam_site,
                                                                           tmp_path, tf1_module):
    texts = ["the quick brown fox jumps over the lazy dog", "hello world", "a long sentence of words"]
    # Distinct texts, so that the whitening below has more directions than it keeps.
    documents = [{"id": f"doc-{i}", "text": f"{texts[i % len(texts)]} number {i}"} for i in range(12)]
    docs = write_jsonl(tmp_path / "docs.jsonl", documents)
    prefix = f"{tmp_path}/out/emb"
    env = {**os.environ, "PYTHONPATH": str(bert_beam_site)}
    # From tmp_path, so that the job imports the installed wheel and not the working tree.
    completed = subprocess.run(
        [str(worker_python), "-m", "pipeline.run", f"--input={docs}", f"--output={prefix}",
         f"--model={tf1_module}", "--max_seq_length=16", "--outputs=pooled,mean,sequence",
         "--whitening_dims=4", "--direct_num_workers=2", "--direct_running_mode=multi_processing"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900,
    )
    assert completed.returncode == 0, completed.stderr[-5000:]
    summary = r"bert-beam: read 12, embedded 12 \(12 records, \d+ truncated, 0 windowed\), rejected 0;"
    assert re.search(summary, completed.stdout), completed.stdout[-2000:]
    records = list(read_embeddings(prefix))
    assert sorted(record.id for record in records) == sorted(d["id"] for d in documents)
    assert all(record.whitened_output.shape == (4,) for record in records)  # tf.Transform at runtime
