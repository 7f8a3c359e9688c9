"""Draws benchmarks/throughput.png: model throughput by batch size and length, and padding waste.

Top: the bare small model (2 layers, hidden 128; ``LoadedBert``) measured here, sequences/s
and tokens/s against batch size at length 128, and against sequence length at batch 32.
Bottom: padding waste from padding.py's last run (.cache/bench/padding.json; run
``benchmarks/padding.py`` first): computed / real tokens for each ``--bucket_boundaries``
setting, and the record-length histogram with the default bucket boundaries.

    .venv/bin/python benchmarks/plot.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import textwrap
import time

import cached_models
import matplotlib
import numpy as np
import synthetic_text
from results import Report, load_json, save_json

matplotlib.use("Agg")
import matplotlib.pyplot as plt

PNG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "throughput.png")
QUICK_PNG = os.path.join(cached_models.cache_dir(), "throughput-quick.png")
BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64)
LENGTHS = (16, 32, 64, 128, 256, 512)


def _sequences_per_second(model, batch_size: int, length: int, seconds: float) -> float:
    batch = {k: np.ones((batch_size, length), np.int32) for k in ("input_ids", "input_mask", "segment_ids")}
    model(batch)
    calls, start = 0, time.perf_counter()
    while calls < 2 or time.perf_counter() - start < seconds:
        model(batch)
        calls += 1
    return calls * batch_size / (time.perf_counter() - start)


def measure(seconds: float) -> dict:
    from transforms.model_loading import LoadedBert, ModelConfig

    vocab = synthetic_text.vocabulary()
    config = cached_models.bert_config(cached_models.SMALL, len(vocab))
    path = cached_models.cached_model("small", config, vocab)
    model = LoadedBert(ModelConfig(path))
    return {
        "by_batch": {str(b): _sequences_per_second(model, b, 128, seconds) for b in BATCH_SIZES},
        "by_length": {str(n): _sequences_per_second(model, 32, n, seconds) for n in LENGTHS},
    }


def draw(throughput: dict, padding: dict | None, path: str = PNG) -> None:
    figure, axes = plt.subplots(2, 2, figsize=(12, 9))
    for axis, key, xs, fixed, xlabel in (
        (axes[0][0], "by_batch", BATCH_SIZES, 128, "batch size (sequence length 128)"),
        (axes[0][1], "by_length", LENGTHS, 32, "sequence length (batch size 32)"),
    ):
        sequences = np.array([throughput[key][str(x)] for x in xs])
        tokens = sequences * (fixed if key == "by_batch" else np.array(xs))
        axis.plot(xs, sequences, "o-", color="tab:blue", label="sequences/s")
        axis.set_xscale("log", base=2)
        if key == "by_length":
            axis.set_yscale("log")
        else:
            axis.set_ylim(0, sequences.max() * 1.15)
        axis.set_xticks(xs, [str(x) for x in xs])
        axis.set_xlabel(xlabel)
        axis.set_ylabel("sequences/s", color="tab:blue")
        twin = axis.twinx()
        twin.plot(xs, tokens, "s--", color="tab:orange", label="tokens/s")
        twin.set_ylabel("tokens/s (every token real)", color="tab:orange")
        twin.set_ylim(0, tokens.max() * 1.15)
        axis.grid(True, which="both", alpha=0.3)
        axis.set_title(f"bare small BERT (2 layers, hidden 128): {xlabel.split(' (')[0]}")
    if padding:
        settings = padding["settings"]
        labels = list(settings)
        ratios = [settings[k]["ratio"] for k in labels]
        colors = ["tab:green", "tab:red", "tab:blue", "tab:purple"][: len(labels)]
        bars = axes[1][0].bar(labels, ratios, color=colors)
        axes[1][0].bar_label(bars, fmt="%.2f")
        axes[1][0].axhline(1.15, color="black", linestyle=":", label="target 1.15")
        axes[1][0].set_ylabel("computed tokens / real tokens")
        axes[1][0].set_title(f"padding waste at max_seq_length {padding['max_seq_length']}")
        axes[1][0].legend(loc="upper left")
        ticks = [f"{k}\n" + "\n".join(textwrap.wrap(settings[k]["boundaries"].replace(",", ", "), 24))
                 for k in labels]
        axes[1][0].set_xticks(range(len(labels)), ticks, fontsize=8)
        lengths = np.array(padding["lengths"])
        axes[1][1].hist(lengths, bins=64, color="tab:gray")
        for boundary in settings["default buckets"]["boundaries"].split(","):
            axes[1][1].axvline(int(boundary), color="tab:green", linestyle="--")
        axes[1][1].set_xlabel("record length in tokens (dashed: default bucket boundaries)")
        axes[1][1].set_ylabel("records")
        axes[1][1].set_title(f"length distribution of padding.py's corpus ({len(lengths)} records)")
    else:
        for axis in axes[1]:
            axis.text(0.5, 0.5, "run benchmarks/padding.py first", ha="center", va="center")
            axis.set_axis_off()
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="0.2 s a point, drawn to .cache/bench/throughput-quick.png.")
    args = parser.parse_args()
    report = Report("plot", args.quick)
    throughput = measure(0.2 if args.quick else 1.5)
    save_json("throughput", throughput, args.quick)
    padding = load_json("padding")
    png = QUICK_PNG if args.quick else PNG
    draw(throughput, padding, png)
    by_batch = ", ".join(f"{b}: {v:.0f}" for b, v in throughput["by_batch"].items())
    by_length = ", ".join(f"{n}: {v:.0f}" for n, v in throughput["by_length"].items())
    report.add(f"- bare small model, sequences/s by batch size at length 128: {by_batch}")
    report.add(f"- bare small model, sequences/s by length at batch 32: {by_length}")
    report.add("- padding panel from .cache/bench/padding.json"
               + (" (a --quick run's data)" if padding and padding.get("quick") else "")
               + ("" if padding else ": missing, run benchmarks/padding.py first"))
    report.add(f"- wrote {os.path.relpath(png, cached_models.REPO)}")
    report.write()


if __name__ == "__main__":
    main()
