"""Memory of two worker processes with and without a shared model (``--large_model``).

Runs bert-beam as a subprocess on the DirectRunner with ``--direct_num_workers 2
--direct_running_mode multi_processing`` (two SDK worker processes, as on a Dataflow machine
with two SDK processes) and samples, every 0.1 s, the resident memory (RSS) and proportional
set size (PSS, which splits shared pages between the processes that map them) of every process
of the run, from /proc. Three runs on the same documents:

* ``small model``: a 2-layer model, so the figures show what the processes cost without BERT;
* ``separate copies``: a BERT-Large-shaped model (24 layers, hidden 1024, random weights, about
  1.3 GB of float32 weights), each worker process loading its own copy;
* ``shared (--large_model)``: the same model served by one process to both workers
  (Beam's ``MultiProcessShared``).

One model copy is measured in a fresh process as its RSS after loading the model and running a
batch, less its RSS after importing TensorFlow. The figure judged is the two workers' summed
peak RSS against that of one worker process holding one copy (the largest process of the
separate-copies run): the issue asks that two workers with a shared model stay near one copy.

    .venv/bin/python benchmarks/shared_model.py [--quick] [--documents N]
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

import cached_models
import synthetic_text
from results import Report

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VOCAB_SIZE = 28996
TARGET_COPIES = 1.25  # "near one model copy"

_COPY_PROBE = """
import json, sys
import numpy as np
import tensorflow, tensorflow_hub
from transforms.model_loading import LoadedBert, ModelConfig

def rss_kb():
    with open("/proc/self/status") as handle:
        return next(int(line.split()[1]) for line in handle if line.startswith("VmRSS:"))

after_import = rss_kb()
model = LoadedBert(ModelConfig(sys.argv[1]))
model({k: np.ones((8, 128), np.int32) for k in ("input_ids", "input_mask", "segment_ids")})
print(json.dumps({"after_import_kb": after_import, "after_batch_kb": rss_kb()}))
"""


def _kb(pid: int, path: str, key: str) -> int:
    try:
        with open(f"/proc/{pid}/{path}", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith(key):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", encoding="utf-8") as handle:
                    parent = int(handle.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            tree.setdefault(parent, []).append(int(entry))
    return tree


def _descendants(root: int) -> list[int]:
    tree, found, pending = _children(), [], [root]
    while pending:
        pid = pending.pop()
        found.append(pid)
        pending.extend(tree.get(pid, []))
    return found


@dataclass
class MemoryPeaks:
    """Peaks over the samples of one run, in MB: the launcher and the rest of its process tree."""

    launcher_rss: float = 0.0
    launcher_at_workers_peak: float = 0.0
    workers_rss: float = 0.0
    total_pss: float = 0.0
    largest_process_rss: float = 0.0
    processes: int = 0
    samples: int = 0
    per_process: dict[int, float] = field(default_factory=dict)
    root: int = 0

    def worker_peaks(self) -> list[float]:
        """Each process's peak RSS, launcher excluded, largest first (MB)."""
        return sorted((v for pid, v in self.per_process.items() if pid != self.root), reverse=True)

    def sample(self, root: int) -> None:
        self.root = root
        pids = _descendants(root)
        rss = {pid: _kb(pid, "status", "VmRSS:") / 1024 for pid in pids}
        pss = sum(_kb(pid, "smaps_rollup", "Pss:") for pid in pids) / 1024
        self.launcher_rss = max(self.launcher_rss, rss.get(root, 0.0))
        workers = sum(v for pid, v in rss.items() if pid != root)
        if workers > self.workers_rss:
            self.workers_rss, self.launcher_at_workers_peak = workers, rss.get(root, 0.0)
        self.total_pss = max(self.total_pss, pss)
        self.largest_process_rss = max(self.largest_process_rss, max(rss.values(), default=0.0))
        self.processes = max(self.processes, len(pids))
        for pid, value in rss.items():
            self.per_process[pid] = max(self.per_process.get(pid, 0.0), value)
        self.samples += 1


def _run(name: str, model: str, corpus: str, output: str, extra: list[str]) -> tuple[MemoryPeaks, float, str]:
    for path in glob.glob(output + "*"):
        if os.path.isfile(path):
            os.remove(path)
    command = [sys.executable, "-m", "pipeline.run", f"--input={corpus}", f"--output={output}",
               f"--model={model}", "--runner=DirectRunner", "--direct_num_workers=2",
               "--direct_running_mode=multi_processing", "--max_seq_length=128", "--batch_size=8",
               "--outputs=pooled,sequence", *extra]
    peaks, done = MemoryPeaks(), threading.Event()
    start = time.perf_counter()
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def watch() -> None:
        while not done.is_set():
            peaks.sample(process.pid)
            time.sleep(0.1)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    log, _ = process.communicate()
    seconds = time.perf_counter() - start
    done.set()
    watcher.join()
    if process.returncode != 0:
        raise SystemExit(f"{name}: bert-beam failed:\n{log[-3000:]}")
    lines = log.splitlines()
    summary = next((line.split(";")[0] for line in lines if line.startswith("bert-beam: read")), "")
    return peaks, seconds, summary


def _one_copy_mb(model: str) -> tuple[float, float]:
    result = subprocess.run([sys.executable, "-c", _COPY_PROBE, model], cwd=REPO, capture_output=True,
                            text=True, check=True)
    probe = json.loads(result.stdout.strip().splitlines()[-1])
    return (probe["after_batch_kb"] - probe["after_import_kb"]) / 1024, probe["after_batch_kb"] / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run with a MiniLM-shaped model instead of BERT-Large, not recorded")
    parser.add_argument("--documents", type=int, default=64)
    args = parser.parse_args()

    vocab = synthetic_text.vocabulary(size=VOCAB_SIZE)
    small = cached_models.cached_model("small", cached_models.bert_config(cached_models.SMALL, len(vocab)),
                                       vocab, cached_models.TF1_HUB, do_lower_case=False)
    shape, name = (cached_models.MINILM, "minilm") if args.quick else (cached_models.LARGE, "bert-large")
    big = cached_models.cached_model(name, cached_models.bert_config(shape, len(vocab)), vocab,
                                     cached_models.TF1_HUB, do_lower_case=False)
    folder = cached_models.cache_dir("shared_model")
    texts = list(synthetic_text.documents(args.documents, median_words=40, seed=5))
    corpus = synthetic_text.write_corpus(os.path.join(folder, "docs.txt"), texts)

    report = Report("shared_model", args.quick)
    copy_mb, process_mb = _one_copy_mb(big)
    report.add(f"- model: {name}-shaped TF1 Hub module, random weights ({os.path.basename(big)}); "
               f"{args.documents} documents, --max_seq_length 128 --batch_size 8 --outputs pooled,sequence, "
               "--direct_num_workers 2 --direct_running_mode multi_processing; memory sampled every 0.1 s "
               "from /proc over the launcher and every process it starts")
    report.add(f"- one model copy: **{copy_mb:.0f} MB** of RSS (a fresh process after loading it and "
               f"running a batch, less its RSS after importing TensorFlow; that process: {process_mb:.0f} MB)"
               )
    runs = {}
    for label, model, extra in [("small model", small, []), ("separate copies", big, []),
                                ("shared (--large_model)", big, ["--large_model"])]:
        peaks, seconds, summary = _run(label, model, corpus, os.path.join(folder, "out", "emb"), extra)
        runs[label] = peaks
        worker_sizes = [round(v) for v in peaks.worker_peaks() if v > 50]
        report.add(f"- {label}: {seconds:.1f} s; peak RSS of the worker processes (summed) "
                   f"**{peaks.workers_rss:.0f} MB**, launcher {peaks.launcher_rss:.0f} MB at its peak (the "
                   f"checks before the run load the model) and {peaks.launcher_at_workers_peak:.0f} MB "
                   "at the workers' peak, "
                   f"peak PSS of all {peaks.processes} processes {peaks.total_pss:.0f} MB; worker processes' "
                   f"peaks (MB, > 50): {worker_sizes}; {summary.strip()}")
    one_worker = runs["separate copies"].worker_peaks()[0]
    separate = runs["separate copies"].workers_rss / one_worker
    shared = runs["shared (--large_model)"].workers_rss / one_worker
    verdict = "met" if shared <= TARGET_COPIES else "MISSED"
    saved = runs["separate copies"].workers_rss - runs["shared (--large_model)"].workers_rss
    report.add(f"- two workers' summed peak RSS against one worker process holding one copy (the largest "
               f"process of the separate run, {one_worker:.0f} MB): separate **{separate:.2f}×**, shared "
               f"**{shared:.2f}×** (target ≤ {TARGET_COPIES}: {verdict}); sharing saves {saved:.0f} MB "
               f"({saved / copy_mb:.2f} model copies)")
    report.write()


if __name__ == "__main__":
    main()
