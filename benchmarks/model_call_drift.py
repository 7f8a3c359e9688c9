"""Why the pipeline's model calls slow down as a run grows, on CPU at max_seq_length 512.

Each condition runs in its own process (allocator variables must be set before the process
starts), with the demo's real MiniLM TF1 Hub module, on a seeded long-tailed corpus
(lognormal, ~100 wordpieces median, p90 ~700) repeated ``--repeats`` times, in three steps:

(1) the whole pipeline, ``pipeline.run.run`` on the DirectRunner in the process
    (``--direct_num_workers 1``), with ``LoadedBert.__call__`` wrapped to record each model
    call in order: rows × length, real tokens, wall and CPU seconds, minor page faults, Python
    garbage-collection passes and their time, a matmul probe of the machine speed, the RSS;
(2) a bare loop: ``LoadedBert`` called on exactly the arrays the pipeline fed it, in the same
    order, in the same process, after the pipeline run (so with whatever memory it left), and the
    best bare loop on the same records (sorted by length, at most 32 rows and 4,096 tokens, each
    batch padded to its own longest), twice: the second pass is its limit;
(3) with ``--interleave K``, K more pipeline runs, each between bare passes over the first run's
    arrays: the ratio of each run to the passes around it cancels this VM's drifting speed.

A matmul probe before every call and the process's CPU seconds per second of model call show
when another process took cores: on this 2-core VM that, not the pipeline, moves the figures.

Computed tokens/s (rows × padded length per second of model call) are reported per repeat of
the corpus, so a drift shows as the later repeats running slower than the first.

    .venv/bin/python benchmarks/model_call_drift.py [--documents N] [--repeats R]
        [--conditions default,tokens4096,seq128,malloc_env,gc_off,tf_threads1,...] [--interleave K] [--quick]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

BENCH = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH)
MAX_SEQ_LENGTH = 512
MEDIAN_WORDS, SIGMA, SEED = 45, 1.7, 14
# Each condition: (environment added to the child, extra pipeline flags, child options).
CONDITIONS: dict[str, tuple[dict[str, str], tuple[str, ...], dict[str, bool]]] = {
    "default": ({}, (), {}),
    "tokens4096": ({}, ("--max_batch_tokens=4096",), {}),
    # glibc: big buffers from the heap, never trimmed back to the kernel, so never re-faulted.
    "malloc_env": ({"MALLOC_MMAP_THRESHOLD_": str(2**31 - 1), "MALLOC_TRIM_THRESHOLD_": str(2**62),
                    "MALLOC_TOP_PAD_": str(1 << 30)}, (), {}),
    "gc_off": ({}, (), {"gc_off": True}),
    "tf_threads1": ({}, ("--tf_threads=1",), {}),
    "tf_threads2": ({}, ("--tf_threads=2",), {}),
    "seq128": ({}, ("--max_seq_length=128",), {}),
    "seq128_tokens4096": ({}, ("--max_seq_length=128", "--max_batch_tokens=4096"), {}),
}


def _corpus_texts(n: int) -> list[str]:
    import synthetic_text

    return list(synthetic_text.documents(n, median_words=MEDIAN_WORDS, sigma=SIGMA, seed=SEED))


def _demo_module() -> str:
    from pathlib import Path

    from pipeline.conversion.minilm import converted_module

    return converted_module(Path(REPO) / ".cache" / "demo")


def _machine_gflops() -> float:
    """Best of three 1024² float32 TensorFlow matmuls: this VM's speed now (it drifts with its host)."""
    import tensorflow as tf

    a = tf.random.normal((1024, 1024))
    best = 0.0
    for _ in range(3):
        start = time.perf_counter()
        tf.matmul(a, a).numpy()
        best = max(best, 2 * 1024**3 / (time.perf_counter() - start) / 1e9)
    return best


def _rss_mb() -> float:
    with open("/proc/self/statm", encoding="ascii") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class _GcClock:
    """Counts Python garbage-collection passes and their seconds, by generation."""

    def __init__(self) -> None:
        self.passes = [0, 0, 0]
        self.seconds = 0.0
        self._started = 0.0
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.passes[info["generation"]] += 1
            self.seconds += time.perf_counter() - self._started


class _CallRecorder:
    """Wraps ``LoadedBert.__call__`` and records every model call, in order."""

    def __init__(self, gc_off: bool) -> None:
        from transforms.model_loading import LoadedBert

        self.calls: list[dict] = []
        self.model = None
        self.batches: list[tuple[dict, object]] = []
        self.gc = _GcClock()
        self._gc_off = gc_off
        original = LoadedBert.__call__
        recorder = self

        def recorded(model, batch, request=None):
            return recorder.call(original, model, batch, request)

        LoadedBert.__call__ = recorded
        self._restore = lambda: setattr(LoadedBert, "__call__", original)

    def stop(self) -> None:
        """Unwraps the model call: the bare loop that follows is not recorded."""
        self._restore()

    def call(self, original, model, batch, request):
        self.model = model
        gflops = _machine_gflops()
        usage = resource.getrusage(resource.RUSAGE_SELF)
        passes, gc_seconds = sum(self.gc.passes), self.gc.seconds
        if self._gc_off:
            gc.disable()
        start = time.perf_counter()
        try:
            outputs = original(model, batch, request)
        finally:
            seconds = time.perf_counter() - start
            if self._gc_off:
                gc.enable()
        after = resource.getrusage(resource.RUSAGE_SELF)
        rows, length = batch["input_ids"].shape
        self.calls.append({
            "rows": rows, "length": length, "real": int(batch["input_mask"].sum()),
            "seconds": seconds,
            "cpu": (after.ru_utime - usage.ru_utime) + (after.ru_stime - usage.ru_stime),
            "sys": after.ru_stime - usage.ru_stime,
            "minflt": after.ru_minflt - usage.ru_minflt,
            "gc_passes": sum(self.gc.passes) - passes, "gc_seconds": self.gc.seconds - gc_seconds,
            "gflops": gflops, "rss_mb": _rss_mb(),
        })
        self.batches.append(({key: np.array(value) for key, value in batch.items()}, request))
        return outputs


def _bare(model, batches) -> list[dict]:
    """The model alone over the same arrays, in the same order."""
    calls = []
    for batch, request in batches:
        gflops = _machine_gflops()
        usage = resource.getrusage(resource.RUSAGE_SELF)
        start = time.perf_counter()
        model(batch, request)
        seconds = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_SELF)
        rows, length = batch["input_ids"].shape
        calls.append({"rows": rows, "length": length, "real": int(batch["input_mask"].sum()),
                      "seconds": seconds,
                      "cpu": (after.ru_utime - usage.ru_utime) + (after.ru_stime - usage.ru_stime),
                      "sys": after.ru_stime - usage.ru_stime, "minflt": after.ru_minflt - usage.ru_minflt,
                      "gflops": gflops, "rss_mb": _rss_mb()})
    return calls


def _rows(batches) -> list[dict]:
    """Every record the pipeline fed the model, cut back to its real tokens."""
    rows = []
    for batch, _ in batches:
        for row in range(batch["input_ids"].shape[0]):
            length = int(batch["input_mask"][row].sum())
            if length:
                rows.append({key: value[row, :length] for key, value in batch.items()})
    return rows


def best_loop_batches(batches, max_rows: int = 32, max_tokens: int = 4096) -> list[tuple[dict, object]]:
    """The best bare loop's batches of the same records: sorted by length, each padded to its own
    longest record, at most ``max_rows`` rows and ``max_tokens`` padded tokens."""
    rows = sorted(_rows(batches), key=lambda r: len(r["input_ids"]))
    request = batches[0][1]
    groups, current = [], []
    for row in rows:
        length = len(row["input_ids"])
        if current and (len(current) + 1 > max_rows or (len(current) + 1) * length > max_tokens):
            groups.append(current)
            current = []
        current.append(row)
    if current:
        groups.append(current)
    result = []
    for group in groups:
        length = len(group[-1]["input_ids"])
        arrays = {key: np.zeros((len(group), length), np.int32) for key in group[0]}
        for index, row in enumerate(group):
            for key, value in row.items():
                arrays[key][index, : len(value)] = value
        result.append((arrays, request))
    return result


def child(args: argparse.Namespace, extra: list[str]) -> None:
    """One condition: the pipeline with recorded model calls, then the bare loop on its batches."""
    import synthetic_text
    from pipeline_runs import run_bert_beam

    module = _demo_module()
    work = tempfile.mkdtemp(prefix="model_call_drift.")
    corpus = synthetic_text.write_corpus(os.path.join(work, "corpus.txt"),
                                         _corpus_texts(args.documents) * args.repeats)
    flags = [f"--max_seq_length={MAX_SEQ_LENGTH}", "--direct_num_workers=1", *extra]
    result: dict = {"flags": flags, "env": {k: os.environ[k] for k in CONDITIONS[args.condition][0]}}
    recorder = _CallRecorder(gc_off=args.gc_off)
    start = time.perf_counter()
    run = run_bert_beam(corpus, os.path.join(work, "out", "emb"), module, *flags)
    result["pipeline_seconds"] = time.perf_counter() - start
    result["pipeline"] = recorder.calls
    result["summary"] = {"real_tokens": run.real_tokens, "padded_tokens": run.padded_tokens,
                         "batches": run.batches}
    result["gc_total_passes"] = recorder.gc.passes
    result["gc_objects_after"] = len(gc.get_objects())
    recorder.stop()
    # The pipeline's own model object, on exactly the arrays it was fed.
    result["bare_after"] = _bare(recorder.model, recorder.batches)
    # Twice: the first pass pays each new shape's first call; the second is the loop's limit.
    best = best_loop_batches(recorder.batches)
    result["best_loop_first"] = _bare(recorder.model, best)
    result["best_loop"] = _bare(recorder.model, best)
    # The pipeline's batches and the best loop's, alternated, both warm: the batching ratio with
    # the VM's drift cancelled (each best pass against the mean of the passes around it).
    batching = [("its", result["bare_after"])]
    for _ in range(args.interleave):
        batching += [("best", _bare(recorder.model, best)), ("its", _bare(recorder.model, recorder.batches))]
    result["batching_interleaved"] = [{"kind": kind, "real_rate": _real_rate(calls)}
                                      for kind, calls in batching]
    # Pipeline runs between bare passes over the first run's arrays, in this process: each run is
    # bracketed by bare passes, so the VM's drifting speed cancels from the ratio.
    model, batches = recorder.model, recorder.batches
    sequence = [("bare", result["bare_after"])]
    for _ in range(args.interleave):
        again = _CallRecorder(gc_off=args.gc_off)
        run_bert_beam(corpus, os.path.join(work, "out", "emb"), module, *flags)
        again.stop()
        sequence += [("pipeline", again.calls), ("bare", _bare(model, batches))]
    result["interleaved"] = [{"kind": kind, "rate": _rate(calls), "gflops": _gflops(calls)}
                             for kind, calls in sequence]
    with open(args.child_output, "w", encoding="utf-8") as handle:
        json.dump(result, handle)


def _real_rate(calls: list[dict]) -> float:
    return sum(c["real"] for c in calls) / max(sum(c["seconds"] for c in calls), 1e-9)


def _rate(calls: list[dict]) -> float:
    return sum(c["rows"] * c["length"] for c in calls) / max(sum(c["seconds"] for c in calls), 1e-9)


def _split(calls: list[dict], parts: int) -> list[list[dict]]:
    """The calls in ``parts`` consecutive groups of about equal computed tokens."""
    total = sum(c["rows"] * c["length"] for c in calls)
    groups: list[list[dict]] = [[] for _ in range(parts)]
    done = 0
    for call in calls:
        groups[min(parts - 1, int(parts * done / max(total, 1)))].append(call)
        done += call["rows"] * call["length"]
    return groups


def _by_shape(calls: list[dict]) -> dict[str, float]:
    shapes: dict[str, list[dict]] = {}
    for call in calls:
        full = (call["rows"], call["length"]) == (32, 512)
        shapes.setdefault("full 32×512" if full else "other", []).append(call)
    return {name: _rate(group) for name, group in sorted(shapes.items())}


def _cpu_ratio(calls: list[dict], key: str = "cpu") -> float:
    return sum(c[key] for c in calls) / sum(c["seconds"] for c in calls)


def _gflops(calls: list[dict]) -> float:
    return float(np.median([c["gflops"] for c in calls]))


def summarise(name: str, data: dict, repeats: int, report) -> None:
    """Model-call tokens/s by repeat of the corpus, against the bare loop on the same arrays."""
    calls, bare = data["pipeline"], data["bare_after"]
    parts, bare_parts = _split(calls, repeats), _split(bare, repeats)
    flags = " ".join(data["flags"][2:]) or "default flags"
    env = "; " + " ".join(f"{k}={v}" for k, v in data["env"].items()) if data["env"] else ""
    per_call = [c["seconds"] / b["seconds"] for c, b in zip(calls, bare, strict=True)]
    report.add(
        f"- **{name}** ({flags}{env}): pipeline {data['pipeline_seconds']:.0f} s, {len(calls)} model calls, "
        f"{sum(c['rows'] * c['length'] for c in calls)} computed tokens; model-call tokens/s by repeat "
        f"{' → '.join(f'{_rate(g):.0f}' for g in parts)} (whole run {_rate(calls):.0f}); bare loop after it "
        f"on the same arrays {' → '.join(f'{_rate(g):.0f}' for g in bare_parts)} (whole {_rate(bare):.0f}); "
        f"pipeline/bare **{_rate(calls) / _rate(bare):.2f}** (last repeat "
        f"{_rate(parts[-1]) / _rate(bare_parts[-1]):.2f}); per call pipeline/bare median "
        f"{np.median(per_call):.2f}")
    real_rates = [sum(c["real"] for c in group) / sum(c["seconds"] for c in group)
                  for group in (calls, bare, data["best_loop"])]
    report.add(
        f"  - real tokens/s in model calls: pipeline {real_rates[0]:.0f}, bare loop on its batches "
        f"{real_rates[1]:.0f}, best bare loop (the same records sorted, ≤ 32 rows, ≤ 4,096 tokens, each "
        f"batch padded to its longest, {len(data['best_loop'])} batches) {real_rates[2]:.0f}: pipeline/best "
        f"**{real_rates[0] / real_rates[2]:.2f}**, its batches/best {real_rates[1] / real_rates[2]:.2f}")
    alternated = data.get("batching_interleaved", [])
    if len(alternated) > 1:
        ratios = [((alternated[i - 1]["real_rate"] + alternated[i + 1]["real_rate"]) / 2)
                  / alternated[i]["real_rate"] for i in range(1, len(alternated) - 1, 2)]
        report.add(
            "  - batching, alternated in the process, real tokens/s: "
            + " → ".join(f"{s['kind']} {s['real_rate']:.0f}" for s in alternated)
            + "; the pipeline's batches / the best loop's between them: "
            f"**{', '.join(f'{r:.2f}' for r in ratios)}**")
    steps = data.get("interleaved", [])
    if len(steps) > 1:
        ratios = [steps[i]["rate"] / ((steps[i - 1]["rate"] + steps[i + 1]["rate"]) / 2)
                  for i in range(1, len(steps) - 1, 2)]
        report.add(
            "  - interleaved in the process, computed tokens/s (matmul GFLOP/s): "
            + " → ".join(f"{s['kind']} {s['rate']:.0f} ({s['gflops']:.0f})" for s in steps)
            + f"; each pipeline run / the mean of the bare passes around it: "
            f"**{', '.join(f'{r:.2f}' for r in ratios)}**")
    speeds = [" → ".join(f"{_gflops(g):.0f}" for g in groups) for groups in (parts, bare_parts)]
    report.add(
        f"  - machine speed (matmul GFLOP/s, median) by repeat: pipeline {speeds[0]}, bare {speeds[1]}; "
        f"by shape, pipeline {', '.join(f'{k} {v:.0f}' for k, v in _by_shape(calls).items())}, bare "
        f"{', '.join(f'{k} {v:.0f}' for k, v in _by_shape(bare).items())} tokens/s; minor faults per call "
        f"{np.mean([c['minflt'] for c in calls[1:]]):.0f} after the first (bare "
        f"{np.mean([c['minflt'] for c in bare]):.0f}); CPU/wall in calls {_cpu_ratio(calls):.2f} "
        f"(bare {_cpu_ratio(bare):.2f}), system {_cpu_ratio(calls, 'sys'):.2f} "
        f"(bare {_cpu_ratio(bare, 'sys'):.2f}); gc passes during calls "
        f"{sum(c['gc_passes'] for c in calls)} ({sum(c['gc_seconds'] for c in calls):.2f} s), "
        f"{sum(data['gc_total_passes'])} in the run; RSS {calls[0]['rss_mb']:.0f} → "
        f"{calls[-1]['rss_mb']:.0f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--documents", type=int, default=None, help="N (default 330; 12 with --quick).")
    parser.add_argument("--repeats", type=int, default=None, help="R (default 3; 2 with --quick).")
    parser.add_argument("--conditions", default="default,tokens4096")
    parser.add_argument("--quick", action="store_true", help="A smoke run: 12 documents twice.")
    parser.add_argument("--condition", help=argparse.SUPPRESS)
    parser.add_argument("--child_output", help=argparse.SUPPRESS)
    parser.add_argument("--gc_off", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--interleave", type=int, default=0,
                        help="Pipeline runs more, each between bare passes over the first run's arrays.")
    args, extra = parser.parse_known_args()
    sys.path[:0] = [REPO, BENCH]
    if args.child_output:
        child(args, extra)
        return
    args.documents = args.documents or (12 if args.quick else 330)
    args.repeats = args.repeats or (2 if args.quick else 3)
    from results import Report, save_json

    report = Report("model_call_drift", args.quick)
    texts = _corpus_texts(args.documents)
    from transforms.tokenization import FullTokenizer, read_vocab_file

    module = _demo_module()
    tokenizer = FullTokenizer(read_vocab_file(os.path.join(module, "assets", "vocab.txt")), True)
    pieces = np.array([len(tokenizer.tokenize(t)) for t in texts])
    report.add(f"- model: the demo's all-MiniLM-L6-v2 TF1 Hub module; max_seq_length {MAX_SEQ_LENGTH}; "
               f"corpus: {args.documents} synthetic documents (lognormal words, median {MEDIAN_WORDS}, "
               f"sigma {SIGMA}, seed {SEED}), wordpieces median {np.median(pieces):.0f}, "
               f"p90 {np.percentile(pieces, 90):.0f}, max {pieces.max()}, repeated {args.repeats}×; "
               f"DirectRunner in-process, --direct_num_workers 1; one process per condition")
    results = {}
    for name in args.conditions.split(","):
        env, flags, options = CONDITIONS[name]
        with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as handle:
            output = handle.name
        command = [sys.executable, os.path.abspath(__file__), "--condition", name, "--child_output", output,
                   "--documents", str(args.documents), "--repeats", str(args.repeats)]
        command += ["--interleave", str(args.interleave)]
        if options.get("gc_off"):
            command.append("--gc_off")
        command += flags
        subprocess.run(command, env={**os.environ, **env}, check=True)
        with open(output, encoding="utf-8") as handle:
            results[name] = json.load(handle)
        summarise(name, results[name], args.repeats, report)
    save_json("model_call_drift", results, args.quick)
    report.write()


if __name__ == "__main__":
    main()
