"""The whitening pass's cost against the embedding run's, and its memory, at 10k and 100k records.

(a) The embedding run, measured here: bert-beam end to end (``pipeline.run.run``, ``--outputs mean``)
    around a MiniLM-shaped BERT (hidden 384, random weights) at max_seq_length 128, on N and on 2N
    synthetic documents (lognormal, median 24 words); the difference of the two runs is its
    steady-state rate in records per second, on this machine now.
(b) The whitening pass on synthetic anisotropic 384-wide embeddings (a 100k-record embedding run
    would take hours on 2 cores), generated inside the pipeline so that no N x H array exists in
    the launcher. Each of three pipelines runs in a fresh process, timed from its start to its end:
    ``generate`` (generate and count the embeddings, the baseline), ``fit`` (the same plus
    ``FitWhitening``: the tf.Transform analysis and the saved transform_fn) and ``whiten`` (the
    same plus the whole ``WhitenEmbeddings``: fit, then every record through the saved transform).
    Their differences from ``generate`` are the pass's cost, set against (a)'s time per record.
    Two record counts give the pass's fixed cost (tf.Transform's tracing and saving) and its
    marginal cost per record.
(c) Memory: each process's peak resident set (``VmHWM``; ``ru_maxrss`` would carry this process's
    over the exec). The fit holds one H x H float64 accumulator per worker; the whole pass also has
    the runner keep every record until the fit is done, because the transform reads them again.

    .venv/bin/python benchmarks/whitening.py [--quick] [--documents N] [--records 10000,100000] [--dims K]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

import cached_models
import numpy as np
import synthetic_text
from pipeline_runs import run_bert_beam
from results import Report

from transforms import counters

MAX_SEQ_LENGTH = 128
HIDDEN = cached_models.MINILM["hidden_size"]
DIMS = 128
PER_CHUNK = 1000  # synthetic embeddings generated per element
PHASES = ("generate", "fit", "whiten")


def _synthetic_chunk(chunk: int, hidden: int, count: int) -> list:
    """``count`` embeddings with a common offset and unequal, correlated variances, as BERT's have."""
    from transforms.records import Embedding, Features

    rng = np.random.default_rng(chunk)
    mixing = np.random.default_rng(12345).standard_normal((hidden, hidden)) / np.sqrt(hidden)
    scales = np.geomspace(3.0, 0.03, hidden)
    vectors = ((rng.standard_normal((count, hidden)) * scales) @ mixing + 2.0).astype(np.float32)
    ids = np.array([101, 2000, 102], np.int32)
    return [Embedding(Features(f"c{chunk}-{i}", ids, np.zeros(3, np.int32), source=f"synthetic:{chunk}"),
                      None, None, vector) for i, vector in enumerate(vectors)]


def _peak_rss_mb() -> float:
    """This process's peak resident set since its exec (``VmHWM``), in MiB."""
    with open("/proc/self/status", encoding="utf-8") as handle:
        line = next(line for line in handle if line.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


def _run_phase(phase: str, records: int, dims: int, folder: str) -> dict:
    """Runs one pipeline in this process; its seconds, this process's peak RSS, and the seconds that
    importing tf.Transform took after TensorFlow (which an embedding run has loaded already)."""
    import apache_beam as beam
    import tensorflow  # noqa: F401
    from apache_beam.options.pipeline_options import PipelineOptions

    start = time.perf_counter()
    import tensorflow_transform.beam  # noqa: F401  every phase holds the libraries: the memory compares

    from pipeline.whitening import FitWhitening, WhitenEmbeddings, default_temp_dir, whitening_dir

    import_seconds = time.perf_counter() - start
    prefix = os.path.join(folder, "emb")
    start = time.perf_counter()
    with beam.Pipeline(options=PipelineOptions(["--runner=DirectRunner"])) as p:
        embeddings = (p | "Chunks" >> beam.Create(range(records // PER_CHUNK))
                      | "Generate" >> beam.FlatMap(_synthetic_chunk, HIDDEN, PER_CHUNK))
        if phase == "fit":
            _ = embeddings | FitWhitening(whitening_dir(prefix), dims, "mean", HIDDEN,
                                          default_temp_dir(prefix))
        if phase == "whiten":
            embeddings = (embeddings | WhitenEmbeddings(prefix, dims, "mean", HIDDEN)).embeddings
        _ = embeddings | beam.combiners.Count.Globally()
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "peak_rss_mb": _peak_rss_mb(), "import_seconds": import_seconds}


def _in_fresh_process(phase: str, records: int, dims: int, folder: str) -> dict:
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)
    command = [sys.executable, os.path.abspath(__file__), "--phase", phase, "--records", str(records),
               "--dims", str(dims), "--folder", folder]
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _embedding_rate(documents: int, report: Report) -> float:
    """(a): the steady-state records/s of an embedding run, from runs on N and 2N documents."""
    vocab = synthetic_text.vocabulary()
    model = cached_models.cached_model("minilm", cached_models.bert_config(cached_models.MINILM, len(vocab)),
                                       vocab)
    work = cached_models.cache_dir("whitening")
    texts = list(synthetic_text.documents(2 * documents, median_words=24, sigma=0.6, seed=11))
    flags = (f"--max_seq_length={MAX_SEQ_LENGTH}", "--outputs=mean")
    runs = []
    for name, part in (("warmup", texts[-8:]), ("n", texts[:documents]), ("2n", texts)):
        corpus = synthetic_text.write_corpus(os.path.join(work, f"corpus_{name}.txt"), part)
        runs.append(run_bert_beam(corpus, os.path.join(work, "out", "emb"), model, *flags))
    _, small, large = runs  # the warm-up takes the process's one-time start-up
    records = large.summary[counters.RECORDS_WRITTEN] - small.summary[counters.RECORDS_WRITTEN]
    rate = records / (large.seconds - small.seconds)
    report.add(f"- (a) embedding run, MiniLM-shaped TF2 model (hidden {HIDDEN}, random weights), "
               f"max_seq_length {MAX_SEQ_LENGTH}, --outputs mean, DirectRunner in process: "
               f"{small.seconds:.1f} s for {documents} documents, {large.seconds:.1f} s for {2 * documents}: "
               f"**{rate:.1f} records/s** steady state ({1e3 / rate:.2f} ms a record)")
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="A smoke run: few documents and records.")
    parser.add_argument("--documents", type=int, default=None,
                        help="N for (a) (default 400; 24 with --quick).")
    parser.add_argument("--records", default=None, help="Record counts for (b) (default 10000,100000).")
    parser.add_argument("--dims", type=int, default=DIMS, help="K, the whitened dimensions.")
    parser.add_argument("--phase", choices=PHASES, help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        print(json.dumps(_run_phase(args.phase, int(args.records), args.dims, args.folder)))
        return
    sizes = [int(n) for n in (args.records or ("2000,4000" if args.quick else "10000,100000")).split(",")]
    report = Report("whitening", args.quick)
    rate = _embedding_rate(args.documents or (24 if args.quick else 400), report)
    report.add(f"- (b), (c): synthetic embeddings, hidden {HIDDEN}, K = {args.dims}, whitening the mean "
               f"output, DirectRunner in process; each pipeline in a fresh process")
    folder = cached_models.cache_dir("whitening", "pass")
    costs = {}
    for records in sizes:
        figures = {phase: _in_fresh_process(phase, records, args.dims, folder) for phase in PHASES}
        base, fit, whole = (figures[phase] for phase in PHASES)
        costs[records] = (fit["seconds"] - base["seconds"], whole["seconds"] - base["seconds"])
        embedding_seconds = records / rate
        report.add(
            f"- {records} records: generate and count {base['seconds']:.1f} s; FitWhitening adds "
            f"{costs[records][0]:.1f} s, the whole WhitenEmbeddings {costs[records][1]:.1f} s: "
            f"**{100 * costs[records][1] / embedding_seconds:.1f}%** of the {embedding_seconds:.0f} s that "
            f"embedding {records} records takes at (a)'s rate")
        report.add(
            f"  - peak RSS: generate {base['peak_rss_mb']:.0f} MiB, fit {fit['peak_rss_mb']:.0f} MiB, "
            f"whole pass {whole['peak_rss_mb']:.0f} MiB; the records' vectors are "
            f"{records * HIDDEN * 4 / 2**20:.0f} MiB of float32, one covariance "
            f"{HIDDEN**2 * 8 / 2**20:.1f} MiB")
    report.add(f"- importing tf.Transform after TensorFlow, once per process: {fit['import_seconds']:.1f} s "
               "(not in the figures above)")
    small, large = min(sizes), max(sizes)
    if large > small:
        fit_marginal, whole_marginal = ((costs[large][i] - costs[small][i]) / (large - small) for i in (0, 1))
        report.add(
            f"- marginal cost a record, {small} → {large} records: FitWhitening {1e6 * fit_marginal:.0f} µs, "
            f"the whole pass {1e6 * whole_marginal:.0f} µs, against {1e6 / rate:.0f} µs to embed a record: "
            f"**{100 * whole_marginal * rate:.2f}%**; fixed cost of the whole pass "
            f"{costs[small][1] - small * whole_marginal:.1f} s")
    shutil.rmtree(folder, ignore_errors=True)
    report.write()


if __name__ == "__main__":
    main()
