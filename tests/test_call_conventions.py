"""Every call convention users' BERT exports have loads, and its records equal direct calls."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import cached_model
from helpers import padded, run_pipeline, write_jsonl
from model_variants import KERAS_LENGTH, VARIANTS

from pipeline.options import BertBeamOptions, ConfigurationError, parse_pipeline_options
from pipeline.plan import prepare_run, probe_failure_kind
from pipeline.reader import read_embeddings
from transforms.call_conventions import DICT, KEYWORDS, LIST
from transforms.model_loading import LoadedBert, ModelConfig, ModelError

DOCUMENTS = [
    {"id": "short", "text": "The dog is hairy."},
    {"id": "pair", "text": "The quick brown fox", "text_b": "jumps over the lazy dog"},
    {"id": "long", "text": " ".join(["the dog running fast"] * 20)},
    {"id": "empty-a", "text": "", "text_b": "a pair whose first text is empty"},
]
EXPECTED_STYLE = {
    "dict_without_training": (DICT, "__call__"),
    "list_inputs": (LIST, "__call__"),
    "keyword_int64": (KEYWORDS, "serving_default"),
    "no_segments_no_pooler": (KEYWORDS, "serving_default"),
    "default_and_encoder_outputs": (DICT, "__call__"),
    "keras3_export": (KEYWORDS, "serve"),
}


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def variant_model(request, model_weights, model_config, vocab_lines):
    variant = VARIANTS[request.param]
    path = cached_model(f"variant-{variant.name}",
                        lambda target: variant.build(model_weights, model_config, vocab_lines, target))
    return variant, path


def _flags(variant, path: str) -> list[str]:
    return [flag.format(model=path) for flag in variant.flags]


def test_each_convention_is_found_at_load_and_answers_like_a_direct_call(variant_model):
    variant, path = variant_model
    signature = next((f.split("=", 1)[1] for f in variant.flags if f.startswith("--signature=")), None)
    model = LoadedBert(ModelConfig(path, signature=signature))
    assert (model.convention.input_style, model.entry) == EXPECTED_STYLE[variant.name]
    assert ("pooled_output" in model.output_keys) == variant.has_pooled
    assert ("segment_ids" in model.convention.input_keys) == variant.has_segments
    batch = padded([2, 60, 61, 62, 3, 70, 71, 3], [0, 0, 0, 0, 0, 1, 1, 1], 8)
    got = model(batch)
    want = variant.call(path, batch["input_ids"], batch["input_mask"], batch["segment_ids"])
    assert set(got) == set(want)
    for key in want:
        np.testing.assert_allclose(got[key], want[key], atol=1e-5)


def test_each_convention_runs_through_the_pipeline_and_its_records_equal_direct_calls(
        variant_model, tmp_path):
    variant, path = variant_model
    docs = write_jsonl(tmp_path / "docs.jsonl", DOCUMENTS)
    summary = run_pipeline(str(docs), str(tmp_path / "out" / "emb"), path, "--text_b_field=text_b",
                           "--max_seq_length=24" if variant.name != "keras3_export" else "--batch_size=2",
                           *_flags(variant, path))
    assert summary.counters["documents_embedded"] == len(DOCUMENTS)
    records = {record.id: record for record in read_embeddings(str(tmp_path / "out" / "emb"))}
    assert set(records) == {doc["id"] for doc in DOCUMENTS}
    for record in records.values():
        ids = record.input_ids[np.newaxis].astype(np.int32)
        want = variant.call(path, ids, np.ones_like(ids), record.segment_ids[np.newaxis].astype(np.int32))
        np.testing.assert_allclose(record.sequence_output, want["sequence_output"][0], atol=1e-5)
        if record.pooled_output is not None:
            np.testing.assert_allclose(record.pooled_output, want["pooled_output"][0], atol=1e-5)
        if record.mean_output is not None:
            np.testing.assert_allclose(record.mean_output, want["sequence_output"][0].mean(0), atol=1e-5)


def test_a_model_without_a_pooled_output_refuses_pooled_before_the_run(model_weights, model_config,
                                                                       vocab_lines, tmp_path):
    variant = VARIANTS["no_segments_no_pooler"]
    path = cached_model(f"variant-{variant.name}",
                        lambda target: variant.build(model_weights, model_config, vocab_lines, target))
    docs = write_jsonl(tmp_path / "docs.jsonl", DOCUMENTS[:1])
    options = parse_pipeline_options([f"--input={docs}", f"--output={tmp_path}/emb", f"--model={path}",
                                      "--do_lower_case=true", "--outputs=pooled,sequence"])
    with pytest.raises(ConfigurationError, match="--outputs asks for pooled, but the model has no pooled "
                       "output .*use --outputs mean,sequence"):
        prepare_run(options.view_as(BertBeamOptions))


def test_a_fixed_length_model_refuses_a_longer_max_seq_length(model_weights, model_config, vocab_lines,
                                                              tmp_path):
    variant = VARIANTS["keras3_export"]
    path = cached_model(f"variant-{variant.name}",
                        lambda target: variant.build(model_weights, model_config, vocab_lines, target))
    docs = write_jsonl(tmp_path / "docs.jsonl", DOCUMENTS[:1])
    options = parse_pipeline_options([f"--input={docs}", f"--output={tmp_path}/emb", f"--model={path}",
                                      f"--vocab_file={path}/assets.extra/vocab.txt", "--do_lower_case=true",
                                      f"--max_seq_length={KERAS_LENGTH + 1}"])
    with pytest.raises(ConfigurationError, match=f"over the {KERAS_LENGTH} tokens that the model's inputs "
                       "are fixed at"):
        prepare_run(options.view_as(BertBeamOptions))


def test_a_model_traced_only_for_training_is_refused_listing_its_callables(tmp_path, model_weights,
                                                                           model_config):
    import tensorflow as tf

    from pipeline.conversion.reference_encoder import bert_forward

    module = tf.Module()
    module.bert_weights = {k: tf.Variable(v) for k, v in model_weights.items()}
    spec = tf.TensorSpec([None, None], tf.int32)

    @tf.function
    def call(inputs, training):
        return dict(zip(("pooled_output", "sequence_output"), bert_forward(
            module.bert_weights, model_config, inputs["input_word_ids"], inputs["input_mask"],
            inputs["input_type_ids"], 0.1 if training else 0.0), strict=True))

    module.__call__ = call
    call.get_concrete_function({"input_word_ids": spec, "input_mask": spec, "input_type_ids": spec}, True)
    tf.saved_model.save(module, str(tmp_path / "train_only"))
    with pytest.raises(ModelError, match=r"(?s)__call__: only traced with training=True.*Its callables:\n"
                       r"  function __call__\(\{input_mask: int32\[\?,\?\]"):
        LoadedBert(ModelConfig(str(tmp_path / "train_only")))


@pytest.mark.parametrize("error, kind", [
    (TypeError("Binding inputs to tf.function failed due to got an unexpected keyword argument 'training'"),
     "Binding failed"),
    (ValueError("indices[0,1] = 30522 is not in [0, 28996)"), "The vocabulary does not fit"),
    (ValueError("cannot compute __inference as input #0(zero-based) was expected to be a int64 tensor but is "
                "a int32 tensor"), "Dtypes failed"),
    (ValueError("Incompatible shapes: [1,3,32] vs. [1,128,32]"), "Shapes failed"),
])
def test_a_failed_probe_says_what_failed(error, kind):
    assert probe_failure_kind(error, 30523).startswith(kind)
