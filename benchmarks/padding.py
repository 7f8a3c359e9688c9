"""Padding waste and speed: length buckets against always padding to max_seq_length.

A long-tailed corpus (lognormal word counts) at max_seq_length 512 through a small BERT
(2 layers, hidden 128). For each setting of ``--bucket_boundaries`` (the pipeline's default,
``none``, and six coarse buckets 32,64,128,256,384,512) the pipeline runs end to
end and its counters give computed tokens / real tokens, (real_tokens + padded_tokens) /
real_tokens. The same ratio is predicted beforehand from the documents' token counts: a batch
only holds records of one bucket, so it is exact, and a mismatch would be a batching bug.
When the default boundaries miss the target, the script searches the boundaries (multiples of
16) with the fewest buckets that meet it, and runs those too.

    .venv/bin/python benchmarks/padding.py [--quick] [--documents N]
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

import cached_models
import numpy as np
import synthetic_text
from pipeline_runs import run_bert_beam
from results import Report, save_json

MAX_SEQ_LENGTH = 512
COARSE_BOUNDARIES = "32,64,128,256,384,512"
TARGET_RATIO = 1.15
SEARCH_STEP = 16


def corpus_and_model(n: int) -> tuple[tuple[str, ...], str, list[str]]:
    """The vocabulary, the small model's path and the long-tailed corpus of ``n`` documents."""
    vocab = synthetic_text.vocabulary()
    model = cached_models.cached_model(
        "small", cached_models.bert_config(cached_models.SMALL, len(vocab), MAX_SEQ_LENGTH), vocab)
    return vocab, model, list(synthetic_text.documents(n, median_words=40, sigma=1.0, seed=21))


def records(texts: Sequence[str], vocab_lines) -> list:
    """Each document's Features, truncated at MAX_SEQ_LENGTH as the pipeline builds them."""
    from transforms.features import FeatureConfig, document_features
    from transforms.records import Document
    from transforms.tokenization import FullTokenizer

    tokenizer = FullTokenizer(vocab_lines, do_lower_case=True)
    config = FeatureConfig(max_seq_length=MAX_SEQ_LENGTH)
    return [f for i, text in enumerate(texts)
            for f in document_features(Document(str(i), text, str(i)), tokenizer, config)]


def sequence_lengths(texts: Sequence[str], vocab_lines) -> np.ndarray:
    """Each document's record length, [CLS] and [SEP] included, as the pipeline truncates it."""
    return np.array([f.sequence_length for f in records(texts, vocab_lines)])


def predicted_ratio(lengths: np.ndarray, boundaries: Sequence[int]) -> float:
    from transforms.features import bucket_length

    padded = sum(bucket_length(int(n), tuple(boundaries), MAX_SEQ_LENGTH) for n in lengths)
    return padded / int(lengths.sum())


def fewest_boundaries(lengths: np.ndarray, target: float) -> tuple[int, ...]:
    """The fewest boundaries (multiples of SEARCH_STEP, ending at 512) whose ratio meets ``target``.

    Dynamic programming over candidate boundaries: cost[k][j] is the least padded size of
    the records up to candidate j with k buckets, the last one ending at j.
    """
    candidates = list(range(SEARCH_STEP, MAX_SEQ_LENGTH, SEARCH_STEP)) + [MAX_SEQ_LENGTH]
    counts = np.bincount(lengths, minlength=MAX_SEQ_LENGTH + 1)
    below = np.concatenate([[0], np.cumsum(counts)])  # below[n] = records shorter than n

    def bucket_cost(previous: int, boundary: int) -> int:
        return boundary * int(below[boundary + 1] - below[previous + 1])

    real = int(lengths.sum())
    size = len(candidates)
    cost = [[bucket_cost(0, c) for c in candidates]]
    choice: list[list[int | None]] = [[None] * size]
    while True:
        k = len(cost) - 1
        if cost[k][-1] / real <= target or k + 1 >= size:
            break
        row, back = [np.inf] * size, [None] * size
        for j in range(size):
            for i in range(j):
                value = cost[k][i] + bucket_cost(candidates[i], candidates[j])
                if value < row[j]:
                    row[j], back[j] = value, i
        cost.append(row)
        choice.append(back)
    boundaries, j = [], size - 1
    for k in range(len(cost) - 1, -1, -1):
        boundaries.append(candidates[j])
        j = choice[k][j] if choice[k][j] is not None else j
    return tuple(sorted(set(boundaries)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="A smoke run on a few documents.")
    parser.add_argument("--documents", type=int, default=None, help="Documents (default 1500; 60 quick).")
    args = parser.parse_args()
    n = args.documents or (60 if args.quick else 1500)
    report = Report("padding", args.quick)

    vocab, model, texts = corpus_and_model(n)
    work = cached_models.cache_dir("padding")
    corpus = synthetic_text.write_corpus(os.path.join(work, "corpus.txt"), texts)
    lengths = sequence_lengths(texts, vocab)
    percentiles = np.percentile(lengths, [10, 50, 90, 99]).astype(int)
    report.add(f"- corpus: {n} documents, lognormal word counts (median 40 words, sigma 1.0); record "
               f"lengths p10/p50/p90/p99 = {'/'.join(map(str, percentiles))} tokens, "
               f"{(lengths == MAX_SEQ_LENGTH).mean():.1%} truncated at {MAX_SEQ_LENGTH}")
    report.add("- model: 2 layers, hidden 128, 2 heads, intermediate 512, random weights (TF2)")

    from pipeline.options import all_options_parser
    from transforms.features import parse_bucket_boundaries

    default = all_options_parser().get_default("bucket_boundaries")
    settings = {"default buckets": default, "pad to 512": "none"}
    if default != COARSE_BOUNDARIES:
        settings["6 coarse buckets"] = COARSE_BOUNDARIES
    if predicted_ratio(lengths, parse_bucket_boundaries(default)) > TARGET_RATIO:
        found = fewest_boundaries(lengths, TARGET_RATIO)
        settings["searched buckets"] = ",".join(map(str, found))
    # A warm-up run takes the process's one-time start-up costs, which the first setting would pay.
    warm_up = synthetic_text.write_corpus(os.path.join(work, "corpus_warmup.txt"), texts[:8])
    run_bert_beam(warm_up, os.path.join(work, "out", "emb"), model, f"--max_seq_length={MAX_SEQ_LENGTH}")
    measured = {}
    for label, flag in settings.items():
        run = run_bert_beam(corpus, os.path.join(work, "out", "emb"), model,
                            f"--max_seq_length={MAX_SEQ_LENGTH}", f"--bucket_boundaries={flag}")
        ratio = (run.real_tokens + run.padded_tokens) / run.real_tokens
        predicted = predicted_ratio(lengths, parse_bucket_boundaries(flag))
        measured[label] = {"boundaries": flag, "ratio": ratio, "predicted_ratio": predicted,
                           "seconds": run.seconds, "inference_seconds": run.inference_seconds,
                           "batches": run.batches, "real_tokens": run.real_tokens,
                           "padded_tokens": run.padded_tokens}
        verdict = "" if flag == "none" else (" (target ≤ 1.15: " + (
            "met)" if ratio <= TARGET_RATIO else "MISSED)"))
        report.add(f"- `--bucket_boundaries {flag}`: computed/real tokens **{ratio:.3f}**{verdict} "
                   f"(predicted from token counts {predicted:.3f}); {run.batches} batches; whole run "
                   f"{run.seconds:.1f} s ({n / run.seconds:.1f} docs/s), {run.inference_seconds:.1f} s in "
                   f"run_inference")
    padded = measured["pad to 512"]
    for label in [k for k in measured if k != "pad to 512"]:
        whole = padded["seconds"] / measured[label]["seconds"]
        inference = padded["inference_seconds"] / measured[label]["inference_seconds"]
        report.add(f"- speed-up of {label} over padding to 512: **{whole:.2f}×** whole run, "
                   f"{inference:.2f}× time in run_inference")
    save_json("padding", {"lengths": lengths.tolist(), "max_seq_length": MAX_SEQ_LENGTH,
                          "settings": measured, "quick": args.quick}, args.quick)
    report.write()


if __name__ == "__main__":
    main()
