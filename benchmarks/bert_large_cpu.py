"""BERT-Large on this CPU: sequences/s, achieved GFLOP/s against the machine's peak, and memory.

A BERT-Large-shaped TF1 Hub module (24 layers, hidden 1024, 16 heads, intermediate 4096,
vocab 28996 like ``bert_cased_L-24_H-1024_A-16``; random weights, about 1.3 GB) is exported
once to .cache/bench. The script then measures:

* ``LoadedBert`` at sequence length 128 for a few batch sizes (warmed up, model load outside
  the clock), and the achieved GFLOP/s, counting FLOPs analytically per sequence of T tokens:
  per layer 2·T·(4·H² + 2·H·I) for the dense layers plus 2·2·T²·H for the attention scores
  and context, and 2·H² for the pooler;
* the machine's measured peak: the best float32 matmul rate of numpy and of TensorFlow;
* its theoretical peak: cores × clock × FLOPs per cycle, from lscpu/cpuinfo where known;
* the peak RSS of a fresh process that loads the model and embeds one batch.

    .venv/bin/python benchmarks/bert_large_cpu.py [--quick] [--batch_sizes 1,4,16]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import cached_models
import numpy as np
import synthetic_text
from results import Report, save_json

SEQUENCE_LENGTH = 128
VOCAB_SIZE = 28996

_RSS_PROBE = """
import json, resource, sys, time
import numpy as np
import tensorflow, tensorflow_hub
from transforms.model_loading import LoadedBert, ModelConfig
after_import = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
model = LoadedBert(ModelConfig(sys.argv[1]))
load_seconds = time.perf_counter() - start
after_load = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
batch = {k: np.ones((8, 128), np.int32) for k in ("input_ids", "input_mask", "segment_ids")}
model(batch)
print(json.dumps({"load_seconds": load_seconds, "after_load_kb": after_load, "after_import_kb": after_import,
                  "after_batch_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def flops_per_sequence(tokens: int, hidden: int, intermediate: int, layers: int) -> float:
    per_layer = 2 * tokens * (4 * hidden**2 + 2 * hidden * intermediate) + 2 * 2 * tokens**2 * hidden
    return layers * per_layer + 2 * hidden**2


def _best_rate(function, flops: float, seconds: float = 4.0) -> float:
    """Best GFLOP/s of ``function`` over repeated calls for about ``seconds``."""
    function()
    best, deadline = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        function()
        best = max(best, flops / (time.perf_counter() - start) / 1e9)
    return best


def measured_peak(size: int) -> dict[str, float]:
    import tensorflow as tf

    a = np.random.default_rng(0).standard_normal((size, size), dtype=np.float32)
    b = np.random.default_rng(1).standard_normal((size, size), dtype=np.float32)
    ta, tb = tf.constant(a), tf.constant(b)
    flops = 2.0 * size**3
    return {"numpy": _best_rate(lambda: a @ b, flops),
            "tensorflow": _best_rate(lambda: tf.matmul(ta, tb).numpy(), flops)}


def theoretical_peak() -> tuple[float | None, str]:
    """Cores × nominal clock × float32 FLOPs per cycle, with the reasoning."""
    info: dict[str, str] = {}
    with open("/proc/cpuinfo", encoding="utf-8") as handle:
        for line in handle:
            key, _, value = line.partition(":")
            info.setdefault(key.strip(), value.strip())
    flags = set(info.get("flags", "").split())
    vendor, family, model = info.get("vendor_id"), int(info.get("cpu family", 0)), int(info.get("model", 0))
    mhz = float(info.get("cpu MHz", 0) or 0)
    if "avx512f" in flags:
        per_cycle, why = 64, "AVX-512 with FMA: 2 × 16 lanes × 2"
    elif vendor == "AuthenticAMD" and family == 0x17 and model < 0x30 and "fma" in flags:
        per_cycle, why = 16, "Zen/Zen+ (family 17h, model < 30h): 2 × 128-bit FMA pipes: 2 × 4 lanes × 2"
    elif {"avx2", "fma"} <= flags:
        per_cycle, why = 32, "AVX2 with 2 FMA units: 2 × 8 lanes × 2"
    elif "avx" in flags:
        per_cycle, why = 16, "AVX without FMA: 8-lane add + 8-lane multiply"
    else:
        per_cycle, why = 8, "SSE: 4-lane add + 4-lane multiply"
    if not mhz:
        return None, f"{why} FLOPs/cycle, clock unknown"
    cores = os.cpu_count() or 1
    peak = cores * mhz / 1000 * per_cycle
    return peak, (f"{cores} cores × {mhz / 1000:.2f} GHz (cpuinfo's nominal clock; a guest cannot see "
                  f"turbo) × {per_cycle} float32 FLOPs/cycle ({why})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="A smoke run on a 2-layer model of BERT-Large's width, batch size 1.")
    parser.add_argument("--batch_sizes", default=None, help="Comma-separated (default 1,4,16).")
    args = parser.parse_args()
    batch_sizes = [int(b) for b in (args.batch_sizes or ("1" if args.quick else "1,4,16")).split(",")]
    report = Report("bert_large_cpu", args.quick)

    from transforms.model_loading import LoadedBert, ModelConfig

    shape = dict(cached_models.LARGE, num_hidden_layers=2) if args.quick else cached_models.LARGE
    vocab = synthetic_text.vocabulary(size=VOCAB_SIZE)
    config = cached_models.bert_config(shape, len(vocab))
    start = time.perf_counter()
    path = cached_models.cached_model("bert-large", config, vocab, cached_models.TF1_HUB,
                                      do_lower_case=False)
    build_seconds = time.perf_counter() - start
    size_gb = sum(os.path.getsize(os.path.join(root, name))
                  for root, _, names in os.walk(path) for name in names) / 1e9
    report.add(f"- model: TF1 Hub module, {config.num_hidden_layers} layers, hidden {config.hidden_size}, "
               f"{config.num_attention_heads} heads, intermediate {config.intermediate_size}, vocab "
               f"{config.vocab_size}, random weights, {size_gb:.2f} GB on disk (export or cache lookup "
               f"took {build_seconds:.0f} s)")

    rss = json.loads(subprocess.run(
        [sys.executable, "-c", _RSS_PROBE, path], check=True, capture_output=True, text=True,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")).stdout.strip().splitlines()[-1])
    report.add(f"- one fresh process: peak RSS {rss['after_import_kb'] / 1e6:.2f} GB after importing "
               f"TensorFlow and bert-beam, **{rss['after_load_kb'] / 1e6:.2f} GB** after loading the model "
               f"({rss['load_seconds']:.1f} s), {rss['after_batch_kb'] / 1e6:.2f} GB after one batch "
               f"of 8 × 128")

    model = LoadedBert(ModelConfig(path))
    per_sequence = flops_per_sequence(SEQUENCE_LENGTH, config.hidden_size, config.intermediate_size,
                                      config.num_hidden_layers)
    peaks = measured_peak(2048 if args.quick else 4096)
    theory, reasoning = theoretical_peak()
    best_measured = max(peaks.values())
    report.add(f"- measured peak (float32 matmul, best of repeats): numpy {peaks['numpy']:.1f} GFLOP/s, "
               f"TensorFlow {peaks['tensorflow']:.1f} GFLOP/s")
    report.add(f"- theoretical peak: {f'{theory:.0f} GFLOP/s' if theory else 'unknown'} = {reasoning}")
    report.add(f"- FLOPs per sequence of {SEQUENCE_LENGTH}: {per_sequence / 1e9:.1f} GFLOP")
    figures = []
    for batch_size in batch_sizes:
        batch = {k: np.ones((batch_size, SEQUENCE_LENGTH), np.int32)
                 for k in ("input_ids", "input_mask", "segment_ids")}
        model(batch)
        calls, start = 0, time.perf_counter()
        while calls < 2 or time.perf_counter() - start < 10:
            model(batch)
            calls += 1
        seconds = time.perf_counter() - start
        rate = calls * batch_size / seconds
        gflops = rate * per_sequence / 1e9
        figures.append({"batch_size": batch_size, "sequences_per_second": rate, "gflops": gflops})
        report.add(f"- batch {batch_size} × {SEQUENCE_LENGTH}: **{rate:.2f} sequences/s**, "
                   f"{gflops:.1f} GFLOP/s = {gflops / best_measured:.0%} of the measured peak"
                   + (f", {gflops / theory:.0%} of the theoretical" if theory else "")
                   + f" ({calls} calls in {seconds:.1f} s)")
    save_json("bert_large_cpu", {"figures": figures, "peaks": peaks, "theoretical": theory,
                                 "quick": args.quick}, args.quick)
    report.write()


if __name__ == "__main__":
    main()
