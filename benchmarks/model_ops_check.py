"""The op check on BERT-Large: how long bert-beam's walks of a model's graphs take, apart from loading it.

The BERT-Large-shaped TF1 Hub module of ``bert_large_cpu.py`` (24 layers, hidden 1024, 16 heads,
intermediate 4096, 512 positions, vocab 28996, random weights; exported once to .cache/bench and
shared with it) is loaded once with ``LoadedBert``, which runs the check itself. Then the two walks
that ``LoadedBert`` runs are timed again, each on its own, over several repeats:

* before loading: reading ``saved_model.pb`` and walking what loading runs (restore and init ops);
* before the first call: walking every function bert-beam calls (``tokens``, ``tokenization_info``)
  and each function they reach.

The target is under a second for both together, in the slowest repeat of each. Loading the model
is timed once, for scale.

    .venv/bin/python benchmarks/model_ops_check.py [--quick] [--repeats 7]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import cached_models
import synthetic_text
from results import Report

VOCAB_SIZE = 28996
TARGET_SECONDS = 1.0


def _seconds(function: Callable[[], object], repeats: int) -> list[float]:
    """The wall time of each of ``repeats`` calls."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return times


def _figures(times: list[float]) -> str:
    return (f"{statistics.median(times) * 1000:.0f} ms median of {len(times)} (first "
            f"{times[0] * 1000:.0f} ms, slowest {max(times) * 1000:.0f} ms)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="A smoke run on a 2-layer model.")
    parser.add_argument("--repeats", type=int, default=7, help="Timed repeats of each walk (default 7).")
    args = parser.parse_args()
    report = Report("model_ops_check", args.quick)

    from transforms.model_assets import read_saved_model
    from transforms.model_loading import LoadedBert, ModelConfig
    from transforms.model_ops import ENCODER_OPS, LOADING_OPS, called_ops, loading_ops, refusal

    shape = dict(cached_models.LARGE, num_hidden_layers=2) if args.quick else cached_models.LARGE
    vocab = synthetic_text.vocabulary(size=VOCAB_SIZE)
    config = cached_models.bert_config(shape, len(vocab))
    path = cached_models.cached_model("bert-large", config, vocab, cached_models.TF1_HUB,
                                      do_lower_case=False)
    start = time.perf_counter()
    model = LoadedBert(ModelConfig(path))
    load_seconds = time.perf_counter() - start

    def check_loading() -> None:
        assert refusal(loading_ops(read_saved_model(path)), LOADING_OPS, ()) is None

    def check_calls() -> None:
        assert refusal(called_ops(model.called_functions()), ENCODER_OPS, ()) is None

    loading = loading_ops(read_saved_model(path))
    called = called_ops(model.called_functions())
    loading_times = _seconds(check_loading, args.repeats)
    calls_times = _seconds(check_calls, args.repeats)
    median = statistics.median(loading_times) + statistics.median(calls_times)
    slowest = max(loading_times) + max(calls_times)
    report.add(f"- model: TF1 Hub module, {config.num_hidden_layers} layers, hidden {config.hidden_size}, "
               f"{config.num_attention_heads} heads, intermediate {config.intermediate_size}, "
               f"{config.max_position_embeddings} positions, vocab {config.vocab_size}, random weights; "
               f"LoadedBert (load and check) took {load_seconds:.1f} s")
    report.add(f"- walked: {sum(sum(c.values()) for c in loading.values())} nodes that loading runs "
               f"({', '.join(loading)}), {sum(sum(c.values()) for c in called.values())} nodes that the "
               f"calls run ({', '.join(called)})")
    report.add(f"- before loading (read saved_model.pb, walk the restore and init ops): "
               f"{_figures(loading_times)}")
    report.add(f"- before the first call (walk the called functions): {_figures(calls_times)}")
    report.add(f"- **op check: {median * 1000:.0f} ms** median in all, {slowest * 1000:.0f} ms for the "
               f"slowest of each walk, against a target of under {TARGET_SECONDS * 1000:.0f} ms: "
               f"{'met' if slowest < TARGET_SECONDS else 'MISSED'}")
    report.write()


if __name__ == "__main__":
    main()
