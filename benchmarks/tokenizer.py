"""Tokenizer throughput: bert-beam's FullTokenizer against google-research/bert's and Hugging Face's.

The same text, about 3 MB of it per corpus, goes through:

* bert-beam's ``FullTokenizer.tokenize_to_ids`` (a fresh instance, so its word cache starts
  cold; a second pass shows the warm cache). Its character rules are built once per worker
  process (in ``DoFn.setup``); that one-time cost is timed and reported on its own line;
* the original ``tokenization.FullTokenizer`` of google-research/bert (bert-tensorflow),
  ``convert_tokens_to_ids(tokenize(text))``;
* Hugging Face ``tokenizers.BertWordPieceTokenizer`` on the same vocab file with the same
  lower-casing, ``encode_batch`` (Rust, which may use every core) and one ``encode`` per
  document, without special tokens.

for an ASCII English-like corpus and a mixed-Unicode one, uncased and cased. It also counts
the documents whose ids differ between the three.

    .venv/bin/python benchmarks/tokenizer.py [--quick] [--megabytes MB]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable

import cached_models
import synthetic_text
from results import Report, save_json

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))

TARGET_VS_ORIGINAL = 5.0
TARGET_VS_HF = 1.0


def _corpus(megabytes: float, mixed_unicode: bool) -> list[str]:
    """Documents (median 30 words) until the corpus holds ``megabytes`` of UTF-8."""
    texts: list[str] = []
    size, seed = 0, 40 + int(mixed_unicode)
    while size < megabytes * 1e6:
        for text in synthetic_text.documents(500, median_words=30, sigma=0.6, seed=seed,
                                             mixed_unicode=mixed_unicode):
            texts.append(text)
            size += len(text.encode("utf-8"))
        seed += 2
    return texts


def _timed(function: Callable[[list[str]], list[list[int]]], texts: list[str]):
    start = time.perf_counter()
    ids = function(texts)
    return time.perf_counter() - start, ids


def _process_setup_seconds() -> float:
    """Builds the per-process character rules that every FullTokenizer shares, timed."""
    from transforms.tokenization import _character_rules

    start = time.perf_counter()
    _character_rules()
    return time.perf_counter() - start


def _tokenizers(vocab_path: str, vocab_lines, do_lower_case: bool) -> dict[str, Callable]:
    from reference_bert import original_full_tokenizer
    from tokenizers import BertWordPieceTokenizer

    from transforms.tokenization import FullTokenizer

    original = original_full_tokenizer(vocab_path, do_lower_case)
    hugging_face = BertWordPieceTokenizer(vocab_path, lowercase=do_lower_case)
    warm = FullTokenizer(vocab_lines, do_lower_case)

    def bert_beam(texts):
        tokenizer = FullTokenizer(vocab_lines, do_lower_case)
        return [tokenizer.tokenize_to_ids(t) for t in texts]

    return {
        "bert-beam": bert_beam,
        "bert-beam (warm word cache)": lambda texts: [warm.tokenize_to_ids(t) for t in texts],
        "original": lambda texts: [original.convert_tokens_to_ids(original.tokenize(t)) for t in texts],
        "HF encode_batch": lambda texts: [
            e.ids for e in hugging_face.encode_batch(texts, add_special_tokens=False)],
        "HF encode": lambda texts: [hugging_face.encode(t, add_special_tokens=False).ids for t in texts],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="A smoke run on 0.1 MB.")
    parser.add_argument("--megabytes", type=float, default=None, help="Corpus size (default 3).")
    args = parser.parse_args()
    megabytes = args.megabytes or (0.1 if args.quick else 3.0)
    report = Report("tokenizer", args.quick)

    vocab = synthetic_text.vocabulary()
    vocab_path = os.path.join(cached_models.cache_dir("tokenizer"), "vocab.txt")
    with open(vocab_path, "w", encoding="utf-8") as handle:
        handle.write("\n".join(vocab) + "\n")
    report.add(f"- vocab: {len(vocab)} entries (synthetic, BERT layout); HF tokenizers threads: "
               f"RAYON_NUM_THREADS={os.environ.get('RAYON_NUM_THREADS', 'unset')} on {os.cpu_count()} cores")
    report.add(f"- bert-beam one-time setup per worker process (character rules): "
               f"{_process_setup_seconds():.2f} s, not in the figures below")
    figures = {}
    for corpus_name, mixed in (("ASCII", False), ("mixed-Unicode", True)):
        texts = _corpus(megabytes, mixed)
        size = sum(len(t.encode("utf-8")) for t in texts) / 1e6
        for do_lower_case in (True, False):
            case = "uncased" if do_lower_case else "cased"
            results = {}
            for name, function in _tokenizers(vocab_path, vocab, do_lower_case).items():
                if name.startswith("bert-beam (warm"):
                    function(texts)  # fills the cache
                results[name] = _timed(function, texts)
            pieces = sum(len(ids) for ids in results["bert-beam"][1])
            reference = results["original"][1]
            mismatches = {name: sum(a != b for a, b in zip(ids, reference, strict=True))
                          for name, (_, ids) in results.items()}
            report.add(f"- {corpus_name} {case}: {len(texts)} documents, {size:.2f} MB, {pieces} wordpieces")
            for name, (seconds, _) in results.items():
                report.add(f"  - {name}: {pieces / seconds / 1e6:.2f} M wordpieces/s, "
                           f"{len(texts) / seconds:.0f} docs/s, {size / seconds:.2f} MB/s; documents whose "
                           f"ids differ from the original: {mismatches[name]}")
            ours = results["bert-beam"][0]
            vs_original = results["original"][0] / ours
            vs_hf = min(results["HF encode_batch"][0], results["HF encode"][0]) / ours
            vs_hf_one_thread = results["HF encode"][0] / ours
            report.add(f"  - bert-beam vs original: **{vs_original:.1f}×** "
                       f"(target ≥ {TARGET_VS_ORIGINAL:.0f}×: "
                       f"{'met' if vs_original >= TARGET_VS_ORIGINAL else 'MISSED'}); vs the faster HF call: "
                       f"**{vs_hf:.2f}×** (target ≥ {TARGET_VS_HF:.0f}×: "
                       f"{'met' if vs_hf >= TARGET_VS_HF else 'MISSED'}); vs HF encode, one thread like "
                       f"bert-beam: {vs_hf_one_thread:.2f}×")
            figures[f"{corpus_name} {case}"] = {name: {"seconds": s, "mismatches": mismatches[name]}
                                                for name, (s, _) in results.items()}
    save_json("tokenizer", figures, args.quick)
    report.write()


if __name__ == "__main__":
    main()
