"""Scaling over the machine's cores: 2 DirectRunner worker processes against 1 worker.

A BERT big enough that the model dominates (4 layers, hidden 256, 4 heads, intermediate
1024) at max_seq_length 128 runs the same corpus with ``--direct_num_workers 1`` (in
process) and with ``--direct_num_workers 2 --direct_running_mode multi_processing``, each
with TensorFlow's default thread pools and with ``TF_NUM_INTRAOP_THREADS=1
TF_NUM_INTEROP_THREADS=1``. Each run is a fresh Python process, so the variables reach
TensorFlow before it starts (and reach the SDK worker processes, which inherit them); each
setting runs on M documents and on 8, and the difference gives the steady-state rate (the
fixed costs, above all the worker processes' start-up, cancel out).

It first checks that TensorFlow honours the two variables: it counts the threads of its
pools after a matmul (inter-op threads are named ``tf_Compute``; the intra-op pool's show
as new ``python`` threads) and the CPU time per wall second of a matmul loop.

    .venv/bin/python benchmarks/scaling.py [--quick] [--documents M]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time

import cached_models
import synthetic_text
from results import Report

MAX_SEQ_LENGTH = 128
TINY = 8
TARGET_SPEEDUP = 1.6
ONE_THREAD = {"TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1"}
WORKERS = {1: (), 2: ("--direct_num_workers=2", "--direct_running_mode=multi_processing")}

_THREAD_PROBE = """
import collections, json, os, time
import tensorflow as tf
def names():
    return collections.Counter(open(f"/proc/self/task/{t}/comm").read().strip()
                               for t in os.listdir("/proc/self/task"))
before = names()
a = tf.random.normal((1024, 1024))
tf.matmul(a, a).numpy()
after = names()
cpu, wall = time.process_time(), time.perf_counter()
for _ in range(15):
    tf.matmul(a, a).numpy()
print(json.dumps({"intra_op_threads": after["python"] - before["python"],
                  "inter_op_threads": after["tf_Compute"],
                  "cpu_per_wall": (time.process_time() - cpu) / (time.perf_counter() - wall),
                  "api_intra": tf.config.threading.get_intra_op_parallelism_threads(),
                  "api_inter": tf.config.threading.get_inter_op_parallelism_threads()}))
"""


def _child_env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ONE_THREAD}
    env.update(extra)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return env


def _thread_probe(extra: dict[str, str]) -> dict:
    out = subprocess.run([sys.executable, "-c", _THREAD_PROBE], env=_child_env(extra), check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def _run_child(corpus: str, model: str, workers: int, extra_env: dict[str, str]) -> dict:
    """One pipeline run in a fresh process; wall and CPU seconds of it and its workers."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    out = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--child", corpus, model, str(workers)],
        env=_child_env(extra_env), check=True, capture_output=True, text=True).stdout
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    figures = json.loads(out.strip().splitlines()[-1])
    figures["process_seconds"] = wall
    figures["cpu_seconds"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return figures


def _child(corpus: str, model: str, workers: int) -> None:
    from pipeline_runs import run_bert_beam

    output = os.path.join(cached_models.cache_dir("scaling", f"out-{os.getpid()}"), "emb")
    run = run_bert_beam(corpus, output, model, f"--max_seq_length={MAX_SEQ_LENGTH}", *WORKERS[workers])
    print(json.dumps({"seconds": run.seconds, "documents": run.documents, "batches": run.batches,
                      "inference_seconds": run.inference_seconds}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="A smoke run on a few documents.")
    parser.add_argument("--documents", type=int, default=None, help="M (default 600; 16 quick).")
    parser.add_argument("--child", nargs=3, metavar=("CORPUS", "MODEL", "WORKERS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child[0], args.child[1], int(args.child[2]))
        return
    m = args.documents or (16 if args.quick else 600)
    report = Report("scaling", args.quick)

    for label, extra in (("default", {}), ("TF_NUM_*_THREADS=1", ONE_THREAD)):
        probe = _thread_probe(extra)
        report.add(f"- TensorFlow threads, {label}: intra-op pool {probe['intra_op_threads']} thread(s), "
                   f"inter-op pool {probe['inter_op_threads']}; matmul loop used {probe['cpu_per_wall']:.2f} "
                   f"CPU-seconds per second; tf.config.threading reports intra "
                   f"{probe['api_intra']}, inter {probe['api_inter']} (0 = TensorFlow's default)")

    vocab = synthetic_text.vocabulary()
    model = cached_models.cached_model(
        "medium", cached_models.bert_config(cached_models.MEDIUM, len(vocab)), vocab)
    work = cached_models.cache_dir("scaling")
    texts = list(synthetic_text.documents(m, median_words=50, sigma=0.5, seed=31))
    corpus = synthetic_text.write_corpus(os.path.join(work, "corpus.txt"), texts)
    tiny = synthetic_text.write_corpus(os.path.join(work, "corpus_tiny.txt"), texts[:TINY])
    report.add(f"- model: 4 layers, hidden 256, 4 heads, intermediate 1024, random weights (TF2), "
               f"max_seq_length {MAX_SEQ_LENGTH}; M = {m} documents (lognormal, median 50 words); each run "
               f"is a fresh process; steady state = (M − {TINY}) / (time on M − time on {TINY} documents); "
               "\"default threads\" is bert-beam's default --tf_threads: TensorFlow's own pools in one "
               "process, cores / processes (here 1) with 2 worker processes")
    settings = (("default threads", {}),) if args.quick else (
        ("default threads", {}), ("TF_NUM_*_THREADS=1", ONE_THREAD))
    rates: dict[tuple[str, int], float] = {}
    for label, extra in settings:
        for workers in (1, 2):
            large = _run_child(corpus, model, workers, extra)
            usage = (f"CPU use on M {large['cpu_seconds'] / large['process_seconds']:.2f} cores "
                     f"({large['cpu_seconds']:.0f} CPU-s in {large['process_seconds']:.0f} s, process start "
                     f"included); {large['inference_seconds']:.1f} s in run_inference over "
                     f"{large['batches']} batches")
            if args.quick:  # one size only: whole-run rates
                rates[label, workers] = m / large["seconds"]
                report.add(f"- {label}, {workers} worker(s): M in {large['seconds']:.1f} s "
                           f"({rates[label, workers]:.1f} docs/s whole run); {usage}")
                continue
            small = _run_child(tiny, model, workers, extra)
            extra_seconds = large["seconds"] - small["seconds"]
            rate = (m - TINY) / extra_seconds if extra_seconds > 0 else math.nan
            rates[label, workers] = rate
            report.add(f"- {label}, {workers} worker(s): run() took {small['seconds']:.1f} s on {TINY} and "
                       f"{large['seconds']:.1f} s on M ({m / large['seconds']:.1f} docs/s whole run); "
                       f"steady state **{rate:.1f} docs/s**; {usage}")
    kind = "whole run (--quick)" if args.quick else "steady state"
    for label, _ in settings:
        speedup = rates[label, 2] / rates[label, 1]
        verdict = "met" if speedup >= TARGET_SPEEDUP else "MISSED"
        report.add(f"- speed-up of 2 workers over 1, {label}: **{speedup:.2f}×** {kind} "
                   f"(target ≥ {TARGET_SPEEDUP}: {verdict})")
    best = max(rates.values())
    report.add(f"- best {kind} {best:.1f} docs/s against one in-process worker with default threads "
               f"{rates['default threads', 1]:.1f} docs/s: {best / rates['default threads', 1]:.2f}×")
    report.write()


if __name__ == "__main__":
    main()
