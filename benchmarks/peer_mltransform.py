"""bert-beam against Beam's own MLTransform + TensorflowHubTextEmbeddings on the same model.

The peer pipeline is the one Beam documents: read text → ``MLTransform`` with
``TensorflowHubTextEmbeddings(hub_url=MODEL, preprocessing_url=PREPROCESSOR)`` → tf.Example
with the pooled embedding → TFRecord. The model is the MiniLM-shaped TF2 SavedModel of
pipeline_vs_model.py. TF Hub's BERT preprocessors cannot be downloaded here, so the script
builds one the way ``bert_en_uncased_preprocess`` is built, with tensorflow-text (the
``bench`` extra): ``BertTokenizer`` on the model's vocabulary, trimmed to 126 wordpieces,
[CLS]/[SEP], padded to 128. bert-beam runs with ``--outputs pooled`` so both write the
pooled embedding.

    .venv/bin/python benchmarks/peer_mltransform.py [--quick] [--documents N]
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import subprocess
import sys
import time

import cached_models
import synthetic_text
from pipeline_runs import run_bert_beam
from results import Report

MAX_SEQ_LENGTH = 128
TARGET_RATIO = 3.0
BATCH_SIZE = 32


def import_error() -> str | None:
    """The error of importing Beam's TF Hub embeddings module in a fresh process, if any."""
    probe = subprocess.run(
        [sys.executable, "-c", "import apache_beam.ml.transforms.embeddings.tensorflow_hub"],
        capture_output=True, text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    if probe.returncode == 0:
        return None
    return probe.stderr.strip().splitlines()[-1]


def build_preprocessor(vocab_lines, path: str) -> str:
    """A SavedModel like TF Hub's ``bert_en_uncased_preprocess``: string batch →
    ``input_word_ids`` / ``input_mask`` / ``input_type_ids`` [B, 128], by tensorflow-text's
    ``BertTokenizer`` (WordPiece on the same vocabulary), trimmed to 126 wordpieces, framed by
    [CLS] and [SEP] and padded to 128."""
    import tensorflow as tf
    import tensorflow_text as text

    if os.path.exists(os.path.join(path, "saved_model.pb")):
        return path
    vocab_path = os.path.join(cached_models.cache_dir("peer_mltransform"), "vocab.txt")
    with open(vocab_path, "w", encoding="utf-8") as handle:
        handle.write("\n".join(vocab_lines) + "\n")
    index = {token: i for i, token in enumerate(vocab_lines)}
    cls, sep = index["[CLS]"], index["[SEP]"]

    class BertPreprocessor(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.tokenizer = text.BertTokenizer(vocab_path, lower_case=True, token_out_type=tf.int64)

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
        def __call__(self, texts):
            pieces = self.tokenizer.tokenize(texts).merge_dims(-2, -1)
            trimmed = text.RoundRobinTrimmer(max_seq_length=MAX_SEQ_LENGTH - 2).trim([pieces])
            ids, type_ids = text.combine_segments(trimmed, start_of_sequence_id=cls, end_of_segment_id=sep)
            word_ids, mask = text.pad_model_inputs(ids, max_seq_length=MAX_SEQ_LENGTH)
            type_ids, _ = text.pad_model_inputs(type_ids, max_seq_length=MAX_SEQ_LENGTH)
            return {"input_word_ids": tf.cast(word_ids, tf.int32), "input_mask": tf.cast(mask, tf.int32),
                    "input_type_ids": tf.cast(type_ids, tf.int32)}

    tf.saved_model.save(BertPreprocessor(), path)
    return path


def run_peer(corpus: str, output: str, model: str, preprocessor: str, artifacts: str) -> float:
    """Seconds for Beam's MLTransform pipeline over ``corpus``, read to write."""
    import apache_beam as beam
    import tensorflow as tf
    from apache_beam.ml.transforms.base import MLTransform
    from apache_beam.ml.transforms.embeddings.tensorflow_hub import TensorflowHubTextEmbeddings
    from apache_beam.options.pipeline_options import PipelineOptions

    def to_example(row) -> bytes:
        feature = {"pooled_output": tf.train.Feature(float_list=tf.train.FloatList(value=row["text"]))}
        return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()

    for path in glob.glob(output + "*"):
        os.remove(path)
    shutil.rmtree(artifacts, ignore_errors=True)
    embeddings = TensorflowHubTextEmbeddings(columns=["text"], hub_url=model, preprocessing_url=preprocessor,
                                             max_batch_size=BATCH_SIZE)
    start = time.perf_counter()
    with beam.Pipeline(options=PipelineOptions(["--runner=DirectRunner"])) as pipeline:
        _ = (pipeline
             | "Read" >> beam.io.ReadFromText(corpus)
             | "ToDict" >> beam.Map(lambda text: {"text": text})
             | "Embed" >> MLTransform(write_artifact_location=artifacts).with_transform(embeddings)
             | "ToExample" >> beam.Map(to_example)
             | "Write" >> beam.io.WriteToTFRecord(output))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="A smoke run on a few documents.")
    parser.add_argument("--documents", type=int, default=None, help="N (default 240; 16 quick).")
    args = parser.parse_args()
    n = args.documents or (16 if args.quick else 240)
    report = Report("peer_mltransform", args.quick)

    error = import_error()
    if error:
        report.add(f"- `import apache_beam.ml.transforms.embeddings.tensorflow_hub`: **cannot run: {error}** "
                   "(`pip install -e .[bench]` installs tensorflow-text)")
        report.write()
        return

    vocab = synthetic_text.vocabulary()
    model = cached_models.cached_model(
        "minilm", cached_models.bert_config(cached_models.MINILM, len(vocab)), vocab)
    work = cached_models.cache_dir("peer_mltransform")
    preprocessor = build_preprocessor(vocab, os.path.join(work, "bert_preprocessor"))
    texts = list(synthetic_text.documents(2 * n, median_words=24, sigma=0.6, seed=11))
    corpora = {
        "warm-up": synthetic_text.write_corpus(os.path.join(work, "corpus_warmup.txt"), texts[:8]),
        n: synthetic_text.write_corpus(os.path.join(work, "corpus_n.txt"), texts[:n]),
        2 * n: synthetic_text.write_corpus(os.path.join(work, "corpus_2n.txt"), texts),
    }
    report.add(f"- model: MiniLM-shaped TF2 SavedModel (random weights); N = {n} documents (lognormal, "
               f"median 24 words); bert-beam --max_seq_length {MAX_SEQ_LENGTH} --outputs pooled (length "
               f"buckets), the peer pads every text to {MAX_SEQ_LENGTH}; batches of at most {BATCH_SIZE}; "
               f"DirectRunner in this process, after one warm-up run of each on 8 documents")

    output = os.path.join(work, "out", "emb")
    flags = (f"--max_seq_length={MAX_SEQ_LENGTH}", "--outputs=pooled")
    seconds: dict[tuple[str, object], float] = {}
    for size in ("warm-up", n, 2 * n):
        seconds["bert-beam", size] = run_bert_beam(corpora[size], output, model, *flags).seconds
    try:
        for size in ("warm-up", n, 2 * n):
            seconds["MLTransform", size] = run_peer(corpora[size], output + "-peer", model, preprocessor,
                                                    os.path.join(work, "artifacts"))
    except Exception as failure:  # the peer's failure is the documented result, whatever its type
        report.add(f"- MLTransform pipeline: **cannot run: {type(failure).__name__}: "
                   f"{str(failure).splitlines()[0][:300]}**")
        report.write()
        return
    rates = {}
    for name in ("bert-beam", "MLTransform"):
        whole = 2 * n / seconds[name, 2 * n]
        steady = n / max(seconds[name, 2 * n] - seconds[name, n], 1e-9)
        rates[name] = (whole, steady)
        report.add(f"- {name}: N in {seconds[name, n]:.1f} s, 2N in {seconds[name, 2 * n]:.1f} s: "
                   f"{whole:.1f} docs/s whole run on 2N, **{steady:.1f} docs/s** steady state (2N − N)")
    whole_ratio = rates["bert-beam"][0] / rates["MLTransform"][0]
    steady_ratio = rates["bert-beam"][1] / rates["MLTransform"][1]
    report.add(f"- bert-beam / MLTransform: **{steady_ratio:.2f}×** steady state, {whole_ratio:.2f}× whole "
               f"run on 2N (target ≥ {TARGET_RATIO:.0f}×: "
               f"{'met' if steady_ratio >= TARGET_RATIO else 'MISSED'})")
    report.write()


if __name__ == "__main__":
    main()
