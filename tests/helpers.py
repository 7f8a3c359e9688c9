"""Shared test helpers: running the pipeline in-process and calling models directly."""

from __future__ import annotations

import glob
import json
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from pipeline.run import run
from pipeline.summary import RunSummary


def write_jsonl(path: Path, records: Iterable[dict | str | bytes]) -> Path:
    """Writes records (dicts as JSON, str/bytes verbatim) one per line."""
    with open(path, "wb") as handle:
        for record in records:
            if isinstance(record, dict):
                record = json.dumps(record, ensure_ascii=False)
            if isinstance(record, str):
                record = record.encode("utf-8")
            handle.write(record + b"\n")
    return path


def run_pipeline(input_pattern: str, output_prefix: str, model: str, *extra: str) -> RunSummary:
    """Runs bert-beam on the DirectRunner, in this process."""
    return run([f"--input={input_pattern}", f"--output={output_prefix}", f"--model={model}",
                "--runner=DirectRunner", *extra])


def dead_letters(prefix: str) -> list[dict]:
    """Every dead-letter record written under ``prefix``."""
    lines: list[dict] = []
    for name in sorted(glob.glob(prefix + "-*.jsonl")):
        with open(name, encoding="utf-8") as handle:
            lines.extend(json.loads(line) for line in handle if line.strip())
    return lines


def call_tf1_module_directly(path: str, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Runs the ``tokens`` signature of a TF1 Hub module in a TF1 Session (not via hub.load)."""
    import tensorflow as tf

    v1 = tf.compat.v1
    graph = tf.Graph()
    with v1.Session(graph=graph) as session:
        meta_graph = v1.saved_model.loader.load(session, [], path)
        signature = meta_graph.signature_def["tokens"]
        feeds = {signature.inputs[k].name: batch[k] for k in ("input_ids", "input_mask", "segment_ids")}
        names = {k: signature.outputs[k].name for k in ("pooled_output", "sequence_output")}
        return session.run(names, feed_dict=feeds)


def call_tf2_model_directly(path: str, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Runs a TF2 SavedModel's ``serving_default`` signature."""
    import tensorflow as tf

    model = tf.saved_model.load(path)
    outputs = model.signatures["serving_default"](
        input_word_ids=tf.constant(batch["input_ids"]),
        input_mask=tf.constant(batch["input_mask"]),
        input_type_ids=tf.constant(batch["segment_ids"]),
    )
    return {k: outputs[k].numpy() for k in ("pooled_output", "sequence_output")}


def padded(input_ids: Sequence[int], segment_ids: Sequence[int], length: int) -> dict[str, np.ndarray]:
    """One record as a batch of one, zero-padded to ``length``."""
    n = len(input_ids)
    batch = {k: np.zeros((1, length), np.int32) for k in ("input_ids", "input_mask", "segment_ids")}
    batch["input_ids"][0, :n] = input_ids
    batch["input_mask"][0, :n] = 1
    batch["segment_ids"][0, :n] = segment_ids
    return batch
