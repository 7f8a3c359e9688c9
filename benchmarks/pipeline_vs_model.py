"""How close the whole pipeline comes to the bare model on the same documents and batches.

A MiniLM-shaped BERT (6 layers, hidden 384, 12 heads, intermediate 1536, a 30,522-word
vocabulary, random weights) at max_seq_length 128:

(a) the bare model: ``LoadedBert`` called in a loop on padded batches built beforehand
    from the same documents, with the batch composition bert-beam's BatchByLength makes;
    the model is loaded outside the clock, and the loop runs twice: the second pass, when
    every batch shape has been seen once, is the model's limit; it runs once more after (b),
    since this VM's speed drifts with its host's load, and the ratios use the mean;
(b) the whole pipeline, ``pipeline.run.run`` on the DirectRunner in this process, read →
    tokenize → batch → RunInference → encode → write, on N and on 2N documents, after a
    warm-up run that takes the process's one-time start-up costs. The
    difference of the two runs gives the steady-state rate; the rest of the N run is the
    fixed cost (option parsing, the launcher's plan, which loads the model once, Beam's
    start-up, the worker's model load, the output finalisation);
(c) the same with ``--direct_num_workers 2 --direct_running_mode multi_processing``.

    .venv/bin/python benchmarks/pipeline_vs_model.py [--quick] [--documents N] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import math
import os
import pstats
import time

import cached_models
import synthetic_text
from pipeline_runs import PipelineRun, run_bert_beam
from results import Report

MAX_SEQ_LENGTH = 128
TARGET_RATIO = 0.90
MULTI_PROCESSING = ("--direct_num_workers=2", "--direct_running_mode=multi_processing")


def _batches_like_the_pipeline(texts: list[str], vocab_lines, batching):
    """The padded batches bert-beam would feed the model for ``texts`` in one bundle."""
    from transforms.batching import _BatchByLength
    from transforms.features import FeatureConfig, document_features, pad_batch
    from transforms.records import Document
    from transforms.tokenization import FullTokenizer

    tokenizer = FullTokenizer(vocab_lines, do_lower_case=True)
    config = FeatureConfig(max_seq_length=MAX_SEQ_LENGTH)
    # The pipeline's own batching DoFn, driven directly: the same rule, not a copy of it.
    batcher = _BatchByLength(batching)
    batcher.start_bundle()
    groups = []
    for index, text in enumerate(texts):
        for features in document_features(Document(str(index), text, str(index)), tokenizer, config):
            groups.extend(batcher.process(features))
    groups.extend(windowed.value for windowed in batcher.finish_bundle())
    return [pad_batch(group, batching.batch_padded_length(group)) for group in groups]


class _BareModel:
    """The model alone over pre-built batches, loaded once, outside the clock."""

    def __init__(self, model_path: str, batches) -> None:
        from transforms.model_loading import LoadedBert, ModelConfig

        self._model = LoadedBert(ModelConfig(model_path))
        self._batches = batches

    def seconds(self) -> float:
        """One pass over the batches; the first pass also pays each new shape's first call."""
        start = time.perf_counter()
        for batch in self._batches:
            self._model(batch)
        return time.perf_counter() - start


def _steady_state(small: PipelineRun, large: PipelineRun, extra_docs: int) -> tuple[float, float]:
    """(steady-state docs/s, fixed seconds) from runs on N and 2N documents.

    NaN when the 2N run was not slower than the N run: N is too small to see past the noise.
    """
    extra_seconds = large.seconds - small.seconds
    if extra_seconds <= 0:
        return math.nan, math.nan
    rate = extra_docs / extra_seconds
    return rate, small.seconds - small.documents / rate


def _profile_run(corpus: str, output: str, model: str, report: Report) -> None:
    profiler = cProfile.Profile()
    profiler.enable()
    run_bert_beam(corpus, output, model, f"--max_seq_length={MAX_SEQ_LENGTH}")
    profiler.disable()
    for order in ("tottime", "cumulative"):
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).strip_dirs().sort_stats(order).print_stats(18)
        report.add(f"- cProfile of the pipeline on N documents, by {order}:")
        report.add("```\n" + text.getvalue().strip() + "\n```")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="A smoke run on a few documents.")
    parser.add_argument("--documents", type=int, default=None, help="N (default 300; 24 with --quick).")
    parser.add_argument("--profile", action="store_true", help="Also profile one pipeline run (cProfile).")
    parser.add_argument("--skip_multiprocessing", action="store_true", help="Leave out (c).")
    args = parser.parse_args()
    n = args.documents or (24 if args.quick else 300)
    report = Report("pipeline_vs_model", args.quick)

    from transforms.batching import BatchingConfig

    vocab = synthetic_text.vocabulary()
    model = cached_models.cached_model(
        "minilm", cached_models.bert_config(cached_models.MINILM, len(vocab)), vocab)
    work = cached_models.cache_dir("pipeline_vs_model")
    texts = list(synthetic_text.documents(2 * n, median_words=24, sigma=0.6, seed=11))
    corpus_n = synthetic_text.write_corpus(os.path.join(work, "corpus_n.txt"), texts[:n])
    corpus_2n = synthetic_text.write_corpus(os.path.join(work, "corpus_2n.txt"), texts)
    corpus_warmup = synthetic_text.write_corpus(os.path.join(work, "corpus_warmup.txt"), texts[-8:])
    output = os.path.join(work, "out", "emb")

    batching = BatchingConfig(max_seq_length=MAX_SEQ_LENGTH)
    batches = _batches_like_the_pipeline(texts[:n], vocab, batching)
    bare = _BareModel(model, batches)
    cold_seconds, bare_seconds = bare.seconds(), bare.seconds()
    bare_rate = n / bare_seconds
    real = sum(int(b["input_mask"].sum()) for b in batches)
    padded = sum(b["input_mask"].size for b in batches)
    report.add(f"- model: MiniLM-shaped TF2 SavedModel, random weights, vocab {len(vocab)}, "
               f"max_seq_length {MAX_SEQ_LENGTH}; N = {n} documents (lognormal, median 24 words), "
               f"{real} real tokens in {len(batches)} batches padded to {padded} tokens")
    shapes = len({b["input_ids"].shape for b in batches})
    report.add(f"- (a) bare LoadedBert on pre-built padded batches ({shapes} distinct batch shapes): "
               f"{bare_seconds:.1f} s, **{bare_rate:.1f} docs/s** with every shape seen once before "
               f"(model load excluded); the first pass on the freshly loaded model took {cold_seconds:.1f} s "
               f"({n / cold_seconds:.1f} docs/s): TensorFlow's first call with each new shape costs extra")

    flags = (f"--max_seq_length={MAX_SEQ_LENGTH}",)
    # The first pipeline run in a process also pays one-time imports and initialisation; a
    # warm-up run keeps that out of the N run, which would otherwise flatter the steady state.
    warm_up = run_bert_beam(corpus_warmup, output, model, *flags)
    report.add(f"- first pipeline run in this process (warm-up, 8 documents): {warm_up.seconds:.1f} s")
    one_n = run_bert_beam(corpus_n, output, model, *flags)
    one_2n = run_bert_beam(corpus_2n, output, model, *flags)
    rate, fixed = _steady_state(one_n, one_2n, len(texts) - n)
    # This VM's speed drifts with its host's load: the bare pass again, right after the runs.
    bare_after = bare.seconds()
    report.add(f"- (a) again after (b): {bare_after:.1f} s ({n / bare_after:.1f} docs/s); the ratios below "
               f"use the mean of the two warm passes")
    bare_seconds = (bare_seconds + bare_after) / 2
    bare_rate = n / bare_seconds
    launcher_load = _launcher_plan_seconds(corpus_n, output, model)
    worker_loads = ", ".join(f"{ms / 1000:.1f} s" for ms in one_n.model_load_ms) or "not reported"
    report.add(f"- (b) pipeline, DirectRunner in-process: N docs in {one_n.seconds:.1f} s "
               f"({n / one_n.seconds:.1f} docs/s whole run), 2N docs in {one_2n.seconds:.1f} s "
               f"({2 * n / one_2n.seconds:.1f} docs/s whole run)")
    report.add(f"  - steady state (2N − N): **{rate:.1f} docs/s**; fixed cost {fixed:.1f} s, of which "
               f"the launcher's plan (model load + probe) {launcher_load:.1f} s and the worker's model "
               f"load {worker_loads}")
    report.add(f"  - inside the N run: {one_n.batches} batches (the bare loop had {len(batches)}), "
               f"{one_n.inference_seconds:.1f} s in run_inference (bare model: {cold_seconds:.1f} s cold, "
               f"{bare_seconds:.1f} s warm), real/padded tokens "
               f"{one_n.real_tokens}/{one_n.real_tokens + one_n.padded_tokens}")
    extra_docs = len(texts) - n
    inference_ms = 1000 * (one_2n.inference_seconds - one_n.inference_seconds) / extra_docs
    report.add(f"  - per document in steady state: {1000 / rate:.1f} ms in the pipeline, of which "
               f"{inference_ms:.1f} ms in run_inference (the bare model: {1000 / bare_rate:.1f} ms) and "
               f"{1000 / rate - inference_ms:.1f} ms outside it (read, tokenize, batch, encode, write, Beam)")
    ratio = rate / bare_rate
    verdict = "met" if ratio >= TARGET_RATIO else "MISSED"
    report.add(f"- ratio pipeline/bare: steady state **{ratio:.2f}** (target ≥ {TARGET_RATIO}: {verdict}); "
               f"whole run on N {n / one_n.seconds / bare_rate:.2f}, on 2N "
               f"{2 * n / one_2n.seconds / bare_rate:.2f}")

    rounded = ("--round_batch_rows",)
    rounded_n = run_bert_beam(corpus_n, output, model, *flags, *rounded)
    rounded_2n = run_bert_beam(corpus_2n, output, model, *flags, *rounded)
    rounded_rate, rounded_fixed = _steady_state(rounded_n, rounded_2n, len(texts) - n)
    rounded_ratio = rounded_rate / bare_rate
    verdict = "met" if rounded_ratio >= TARGET_RATIO else "MISSED"
    report.add(f"- (b') the same with --round_batch_rows (partial batches padded to power-of-two rows, "
               f"so runs repeat shapes): N in {rounded_n.seconds:.1f} s, 2N in {rounded_2n.seconds:.1f} s; "
               f"steady state **{rounded_rate:.1f} docs/s**, ratio to the bare model **{rounded_ratio:.2f}** "
               f"(target ≥ {TARGET_RATIO}: {verdict}); fixed cost {rounded_fixed:.1f} s; real/padded tokens "
               f"on N {rounded_n.real_tokens}/{rounded_n.real_tokens + rounded_n.padded_tokens}")

    if not args.skip_multiprocessing:
        multi_n = run_bert_beam(corpus_n, output, model, *flags, *MULTI_PROCESSING)
        multi_2n = run_bert_beam(corpus_2n, output, model, *flags, *MULTI_PROCESSING)
        multi_rate, multi_fixed = _steady_state(multi_n, multi_2n, len(texts) - n)
        report.add(f"- (c) pipeline, 2 workers multi_processing: N in {multi_n.seconds:.1f} s, 2N in "
                   f"{multi_2n.seconds:.1f} s ({2 * n / multi_2n.seconds:.1f} docs/s whole run); "
                   f"steady state **{multi_rate:.1f} docs/s** ({multi_rate / bare_rate:.2f}× the bare "
                   f"model, {multi_rate / rate:.2f}× one in-process worker); fixed cost {multi_fixed:.1f} s; "
                   f"{multi_2n.batches} batches on 2N")
    if args.profile:
        _profile_run(corpus_n, output, model, report)
    report.write()


def _launcher_plan_seconds(corpus: str, output: str, model: str) -> float:
    """Seconds of the fail-fast plan alone (it loads the model and runs a probe batch)."""
    from pipeline.options import BertBeamOptions, parse_pipeline_options
    from pipeline.plan import prepare_run

    options = parse_pipeline_options([f"--input={corpus}", f"--output={output}", f"--model={model}"])
    start = time.perf_counter()
    prepare_run(options.view_as(BertBeamOptions))
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
