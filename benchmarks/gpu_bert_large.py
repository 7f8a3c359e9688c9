"""BERT-Large on a GPU: what the rest of the pipeline must keep up with, and padding's cost there.

Runs where only PyTorch is installed (the lent GPU machine has no TensorFlow), so the model is
PyTorch's own ``nn.TransformerEncoder`` in BERT-Large's shape (24 post-LayerNorm layers,
hidden 1024, 16 heads, intermediate 4096, GELU) plus the embedding sum and the pooler, with
random weights: the same matrix work per token as the SavedModel, not the same numbers. Like
TensorFlow's default on Ampere and later GPUs, float32 matmuls may use TF32. No attention
mask is passed, so padding is computed densely, as a SavedModel computes it.

It measures, each as the median of timed CUDA-synchronised calls after warm-up:

* sequences/s, wordpieces/s and float32 ``sequence_output`` MB/s for batches of 32, 64 and 128
  at 32 to 512 tokens;
* a long-tailed corpus (lognormal word counts, as ``benchmarks/padding.py``) run in length
  buckets (``16,32,48,...,512``, full batches by a 65536-token budget) against every sequence
  padded to 512;
* the GPU memory that one model copy and its largest batch take.

It prints the figures and writes them as JSON to ``$OUT/gpu_bert_large.json`` (or the current
folder); ``--record FILE`` appends such a JSON file's figures to RESULTS.md on a machine with
the project installed.

    python benchmarks/gpu_bert_large.py [--quick]
    .venv/bin/python benchmarks/gpu_bert_large.py --record gpu_bert_large.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import numpy as np

HIDDEN, LAYERS, HEADS, INTERMEDIATE, VOCAB, POSITIONS = 1024, 24, 16, 4096, 28996, 512
BUCKETS = (16, 32, 48, 64, 80, 96, 128, 160, 208, 272, 368, 512)
BATCH_SIZES = (32, 64, 128)
LENGTHS = (32, 64, 128, 256, 512)
TOKEN_BUDGET = 65536
MAX_BATCH = 128


def _model(torch, device, layers: int):
    """BERT-Large's shape from PyTorch's transformer layers, random weights, eval mode."""
    nn = torch.nn

    class BertShaped(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.words = nn.Embedding(VOCAB, HIDDEN)
            self.positions = nn.Embedding(POSITIONS, HIDDEN)
            self.types = nn.Embedding(2, HIDDEN)
            self.norm = nn.LayerNorm(HIDDEN, eps=1e-12)
            layer = nn.TransformerEncoderLayer(HIDDEN, HEADS, INTERMEDIATE, dropout=0.0, activation="gelu",
                                               layer_norm_eps=1e-12, batch_first=True, norm_first=False)
            self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
            self.pooler = nn.Linear(HIDDEN, HIDDEN)

        def forward(self, ids, types):
            positions = torch.arange(ids.shape[1], device=ids.device)
            hidden = self.norm(self.words(ids) + self.positions(positions)[None] + self.types(types))
            sequence = self.encoder(hidden)
            return torch.tanh(self.pooler(sequence[:, 0])), sequence

    return BertShaped().to(device).eval()


def _seconds(torch, model, batch: int, length: int, device, repeats: int) -> float:
    ids = torch.randint(0, VOCAB, (batch, length), device=device)
    types = torch.zeros_like(ids)
    times = []
    with torch.inference_mode():
        for attempt in range(repeats + 2):
            torch.cuda.synchronize() if device.type == "cuda" else None
            start = time.perf_counter()
            pooled, sequence = model(ids, types)
            sequence.float().cpu()  # the outputs come back to the host, as RunInference needs them
            torch.cuda.synchronize() if device.type == "cuda" else None
            if attempt >= 2:
                times.append(time.perf_counter() - start)
    return statistics.median(times)


def _corpus_lengths(count: int, seed: int = 0) -> np.ndarray:
    """Wordpieces per document with [CLS]/[SEP]: lognormal words (median 60), ~1.3 pieces a word."""
    rng = np.random.default_rng(seed)
    words = np.clip(np.rint(np.exp(rng.normal(np.log(60), 1.0, count))), 1, 5000)
    return np.minimum(np.rint(words * 1.3).astype(int) + 2, 512)


def _bucket(length: int) -> int:
    return next(b for b in BUCKETS if length <= b)


def _corpus_seconds(torch, model, device, lengths: np.ndarray, bucketed: bool, cache: dict,
                    max_batch: int) -> float:
    """Time for the corpus: per shape, the measured time of one call times the calls of that shape."""
    counts: dict[int, int] = {}
    for length in lengths:
        padded = _bucket(int(length)) if bucketed else 512
        counts[padded] = counts.get(padded, 0) + 1
    total = 0.0
    for padded, documents in counts.items():
        rows = max(1, min(max_batch, TOKEN_BUDGET * max_batch // MAX_BATCH // padded))
        full, rest = divmod(documents, rows)
        for batch, calls in ((rows, full), (1 << max(rest - 1, 0).bit_length(), 1 if rest else 0)):
            if calls:
                key = (batch, padded)
                if key not in cache:
                    cache[key] = _seconds(torch, model, batch, padded, device, repeats=3)
                total += calls * cache[key]
    return total


def measure(quick: bool) -> dict:
    import torch

    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    layers = 2 if quick else LAYERS
    model = _model(torch, device, layers)
    result = {
        "device": torch.cuda.get_device_name(0) if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__, "layers": layers, "quick": quick,
        "weights_mb": sum(p.numel() * p.element_size() for p in model.parameters()) / 1e6,
        "grid": [],
    }
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    batch_sizes, lengths = ((8,), (32, 128)) if quick else (BATCH_SIZES, LENGTHS)
    for length in lengths:
        for batch in batch_sizes:
            seconds = _seconds(torch, model, batch, length, device, repeats=3 if quick else 10)
            result["grid"].append({"batch": batch, "length": length, "seconds": seconds,
                                   "sequences_per_s": batch / seconds,
                                   "tokens_per_s": batch * length / seconds,
                                   "sequence_output_mb_per_s": batch * length * HIDDEN * 4 / seconds / 1e6})
    if device.type == "cuda":
        result["peak_gpu_memory_mb"] = torch.cuda.max_memory_allocated() / 1e6
    lengths_corpus = _corpus_lengths(200 if quick else 20000)
    cache: dict = {}
    max_batch = 4 if quick else MAX_BATCH
    bucketed = _corpus_seconds(torch, model, device, lengths_corpus, True, cache, max_batch)
    padded = _corpus_seconds(torch, model, device, lengths_corpus, False, cache, max_batch)
    real = int(lengths_corpus.sum())
    computed = sum(_bucket(int(n)) for n in lengths_corpus)
    result["corpus"] = {"documents": len(lengths_corpus), "real_tokens": real,
                        "bucketed_tokens_per_real": computed / real,
                        "padded_tokens_per_real": 512 * len(lengths_corpus) / real,
                        "bucketed_seconds": bucketed, "padded_seconds": padded,
                        "speedup": padded / bucketed,
                        "bucketed_real_tokens_per_s": real / bucketed,
                        "bucketed_sequence_output_mb_per_s": real * HIDDEN * 4 / bucketed / 1e6}
    return result


def lines(result: dict) -> list[str]:
    corpus = result["corpus"]
    out = [f"- device: {result['device']}, PyTorch {result['torch']}, {result['layers']} layers, "
           f"{result['weights_mb']:.0f} MB of float32 weights"
           + (f", peak GPU memory {result['peak_gpu_memory_mb']:.0f} MB with batches up to 128 x 512"
              if "peak_gpu_memory_mb" in result else "")]
    for row in result["grid"]:
        out.append(f"  - batch {row['batch']} x {row['length']} tokens: {row['sequences_per_s']:.0f} seq/s, "
                   f"{row['tokens_per_s'] / 1e3:.0f} k tokens/s, float32 sequence_output "
                   f"{row['sequence_output_mb_per_s']:.0f} MB/s")
    out.append(f"- long-tailed corpus ({corpus['documents']} documents): computed/real tokens "
               f"{corpus['bucketed_tokens_per_real']:.2f} with buckets, "
               f"{corpus['padded_tokens_per_real']:.2f} padded to 512; **{corpus['speedup']:.2f}×** "
               "faster with buckets; bucketed: "
               f"{corpus['bucketed_real_tokens_per_s'] / 1e3:.0f} k real tokens/s, "
               f"{corpus['bucketed_sequence_output_mb_per_s']:.0f} MB/s of float32 sequence_output to encode")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 layers, a few shapes: a smoke run")
    parser.add_argument("--record", metavar="JSON", help="append a device run's JSON to RESULTS.md")
    args = parser.parse_args()
    if args.record:
        from results import RESULTS

        with open(args.record, encoding="utf-8") as handle:
            result = json.load(handle)
        header = ["## gpu_bert_large (device run, recorded "
                  f"{time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC)",
                  "- command (on the lent GPU machine): `python benchmarks/gpu_bert_large.py`"]
        with open(RESULTS, "a", encoding="utf-8") as handle:
            handle.write("\n".join(header + lines(result)) + "\n\n")
        print("\n".join(header + lines(result)))
        return
    result = measure(args.quick)
    print("\n".join(lines(result)))
    path = os.path.join(os.environ.get("OUT", "."), "gpu_bert_large.json")
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(result, handle, indent=1)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
