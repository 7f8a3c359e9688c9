"""Checkpoint conversion: Hugging Face and original checkpoints in, served models out, equal outputs."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
import pytest

from pipeline.conversion.checkpoints import (
    CheckpointError,
    bert_config_from_huggingface,
    bert_config_from_original,
    huggingface_lower_case,
    original_lower_case,
    read_bert_source,
)
from pipeline.conversion.convert import convert, main
from pipeline.conversion.reference_encoder import GELU_ERF, GELU_TANH, RELU, BertConfig, bert_forward
from pipeline.options import parse_bool
from transforms.model_loading import LoadedBert, ModelConfig
from transforms.tokenization import read_vocab_file

ATOL = 1e-5
HF_LINEARS = ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense",
              "intermediate.dense", "output.dense")
HF_NORMS = ("attention.output.LayerNorm", "output.LayerNorm")
ORIGINAL_RELEASE = "uncased_L-2_H-32_A-4"


def _config_fields(config: BertConfig) -> dict:
    return {"vocab_size": config.vocab_size, "hidden_size": config.hidden_size,
            "num_hidden_layers": config.num_hidden_layers, "num_attention_heads": config.num_attention_heads,
            "intermediate_size": config.intermediate_size,
            "max_position_embeddings": config.max_position_embeddings,
            "type_vocab_size": config.type_vocab_size, "initializer_range": config.initializer_range}


def huggingface_state(weights: dict, config: BertConfig, prefix: str = "") -> dict[str, np.ndarray]:
    """The state dict transformers' BertModel would save for these weights, spelled out by hand."""
    state = {
        "embeddings.word_embeddings.weight": weights["bert/embeddings/word_embeddings"],
        "embeddings.position_embeddings.weight": weights["bert/embeddings/position_embeddings"],
        "embeddings.token_type_embeddings.weight": weights["bert/embeddings/token_type_embeddings"],
        "embeddings.LayerNorm.weight": weights["bert/embeddings/LayerNorm/gamma"],
        "embeddings.LayerNorm.bias": weights["bert/embeddings/LayerNorm/beta"],
        "pooler.dense.weight": weights["bert/pooler/dense/kernel"].T,
        "pooler.dense.bias": weights["bert/pooler/dense/bias"],
    }
    for layer in range(config.num_hidden_layers):
        tf_layer, hf_layer = f"bert/encoder/layer_{layer}", f"encoder.layer.{layer}"
        for linear in HF_LINEARS:
            tf_name = f"{tf_layer}/{linear.replace('.', '/')}"
            state[f"{hf_layer}.{linear}.weight"] = weights[f"{tf_name}/kernel"].T
            state[f"{hf_layer}.{linear}.bias"] = weights[f"{tf_name}/bias"]
        for norm in HF_NORMS:
            tf_name = f"{tf_layer}/{norm.replace('.', '/')}"
            state[f"{hf_layer}.{norm}.weight"] = weights[f"{tf_name}/gamma"]
            state[f"{hf_layer}.{norm}.bias"] = weights[f"{tf_name}/beta"]
    state = {prefix + key: np.ascontiguousarray(value) for key, value in state.items()}
    state["embeddings.position_ids"] = np.arange(config.max_position_embeddings, dtype=np.int64)[None]
    return state


def write_huggingface_folder(folder: Path, weights: dict, config: BertConfig, vocab_lines, *,
                             hidden_act: str = "gelu_new", config_changes: dict | None = None,
                             state_changes: dict | None = None, drop: tuple[str, ...] = (),
                             prefix: str = "", tokenizer_config: dict | None = None) -> Path:
    """A Hugging Face BERT folder as save_pretrained writes it; ``None`` in a change removes the key."""
    from safetensors.numpy import save_file

    folder.mkdir(parents=True)
    hf_config = {"model_type": "bert", "architectures": ["BertModel"], "hidden_act": hidden_act,
                 "layer_norm_eps": config.layer_norm_eps, "position_embedding_type": "absolute",
                 **_config_fields(config)}
    hf_config = {k: v for k, v in {**hf_config, **(config_changes or {})}.items() if v is not None}
    state = {**huggingface_state(weights, config, prefix), **(state_changes or {})}
    state = {k: v for k, v in state.items() if k not in drop}
    save_file(state, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps(hf_config))
    if tokenizer_config is not None:
        (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    (folder / "vocab.txt").write_text("\n".join(vocab_lines) + "\n", encoding="utf-8")
    return folder


def write_original_checkpoint(folder: Path, weights: dict, config: BertConfig, vocab_lines, *,
                              hidden_act: str = "gelu", drop: tuple[str, ...] = ()) -> Path:
    """A google-research/bert checkpoint folder, with the Adam slots and heads of a pre-training run."""
    import tensorflow as tf

    v1 = tf.compat.v1
    folder.mkdir(parents=True)
    graph = tf.Graph()
    with graph.as_default():
        for name, value in weights.items():
            if name not in drop:
                v1.Variable(value, name=name)
        pooler = weights["bert/pooler/dense/kernel"]
        v1.Variable(np.zeros_like(pooler), name="bert/pooler/dense/kernel/adam_m")
        v1.Variable(np.zeros(config.vocab_size, np.float32), name="cls/predictions/output_bias")
        v1.Variable(np.int64(1000), name="global_step")
        saver = v1.train.Saver()
        with v1.Session(graph=graph) as session:
            session.run(v1.global_variables_initializer())
            saver.save(session, str(folder / "bert_model.ckpt"), write_meta_graph=False)
    original_config = {"hidden_act": hidden_act, "attention_probs_dropout_prob": 0.1,
                       "hidden_dropout_prob": 0.1, **_config_fields(config)}
    (folder / "bert_config.json").write_text(json.dumps(original_config))
    (folder / "vocab.txt").write_text("\n".join(vocab_lines) + "\n", encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def sources(tmp_path_factory, model_weights, model_config, vocab_lines) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("sources")
    return {
        "huggingface": write_huggingface_folder(root / "hf", model_weights, model_config, vocab_lines,
                                                tokenizer_config={"do_lower_case": True}),
        "original": write_original_checkpoint(root / ORIGINAL_RELEASE, model_weights, model_config,
                                              vocab_lines),
    }


def _batch(vocab_size: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    lengths = (17, 9, 3, 12)
    batch = {k: np.zeros((len(lengths), max(lengths)), np.int32) for k in ("input_ids", "input_mask",
                                                                             "segment_ids")}
    for row, length in enumerate(lengths):
        batch["input_ids"][row, :length] = rng.integers(5, vocab_size, length)
        batch["input_mask"][row, :length] = 1
        batch["segment_ids"][row, length // 2:length] = 1
    return batch


def _reference(weights: dict, config: BertConfig, batch: dict) -> dict[str, np.ndarray]:
    pooled, sequence = bert_forward(weights, config, batch["input_ids"], batch["input_mask"],
                                    batch["segment_ids"])
    return {"pooled_output": pooled.numpy(), "sequence_output": sequence.numpy()}


@pytest.mark.parametrize("output_format", ["tf1hub", "tf2"])
@pytest.mark.parametrize("kind", ["huggingface", "original"])
def test_converted_model_matches_bert_forward(kind, output_format, sources, tmp_path, capsys,
                                              model_weights, model_config, vocab_lines):
    output = tmp_path / "model"
    assert main([str(sources[kind]), str(output), "--format", output_format]) == 0
    assert f"Wrote {output_format} model" in capsys.readouterr().out
    model = LoadedBert(ModelConfig(handle=str(output)))
    batch = _batch(model_config.vocab_size)
    expected = _reference(model_weights, model_config, batch)
    actual = model(batch)
    np.testing.assert_allclose(actual["pooled_output"], expected["pooled_output"], atol=ATOL, rtol=0)
    np.testing.assert_allclose(actual["sequence_output"], expected["sequence_output"], atol=ATOL, rtol=0)
    vocab_path, lower = model.tokenizer_source()
    assert read_vocab_file(vocab_path) == tuple(vocab_lines)
    assert lower is True


def test_huggingface_prefix_heads_and_legacy_norm_names_are_read(tmp_path, model_weights, model_config,
                                                                 vocab_lines):
    legacy = {"bert.embeddings.LayerNorm.gamma": model_weights["bert/embeddings/LayerNorm/gamma"],
              "bert.embeddings.LayerNorm.beta": model_weights["bert/embeddings/LayerNorm/beta"]}
    folder = write_huggingface_folder(
        tmp_path / "classifier", model_weights, model_config, vocab_lines, prefix="bert.",
        config_changes={"architectures": ["BertForSequenceClassification"]},
        state_changes={**legacy, "classifier.weight": np.ones((2, model_config.hidden_size), np.float32),
                       "classifier.bias": np.zeros(2, np.float32)},
        drop=("bert.embeddings.LayerNorm.weight", "bert.embeddings.LayerNorm.bias"),
        tokenizer_config={"do_lower_case": False, "tokenizer_class": "BertTokenizer"},
    )
    source = read_bert_source(str(folder))
    assert source.config == model_config
    assert source.do_lower_case is False
    assert sorted(source.weights) == sorted(model_weights)
    for name, value in model_weights.items():
        np.testing.assert_array_equal(source.weights[name], value, err_msg=name)


def test_gelu_is_erf_for_huggingface_and_tanh_for_original(tmp_path, model_weights, model_config,
                                                            vocab_lines):
    fields = {"model_type": "bert", **_config_fields(model_config)}
    assert bert_config_from_huggingface({**fields, "hidden_act": "gelu"}).hidden_act == GELU_ERF
    assert bert_config_from_huggingface({**fields, "hidden_act": "gelu_new"}).hidden_act == GELU_TANH
    assert bert_config_from_huggingface({**fields, "hidden_act": "gelu_pytorch_tanh"}).hidden_act == GELU_TANH
    assert bert_config_from_huggingface({**fields, "hidden_act": "relu"}).hidden_act == RELU
    assert bert_config_from_original({**fields, "hidden_act": "gelu"}).hidden_act == GELU_TANH
    assert bert_config_from_original({**fields, "hidden_act": "relu"}).hidden_act == RELU
    hf = read_bert_source(str(write_huggingface_folder(tmp_path / "hf", model_weights, model_config,
                                                       vocab_lines, hidden_act="gelu",
                                                       tokenizer_config={})))
    original = read_bert_source(str(write_original_checkpoint(tmp_path / ORIGINAL_RELEASE, model_weights,
                                                              model_config, vocab_lines)))
    assert (hf.config.hidden_act, original.config.hidden_act) == (GELU_ERF, GELU_TANH)
    # Tiny random weights keep activations near 0, where the two forms agree; widen them to tell apart.
    wide = {name: value * 30 if "intermediate/dense/kernel" in name else value
            for name, value in model_weights.items()}
    batch = _batch(model_config.vocab_size)
    erf = _reference(wide, hf.config, batch)["sequence_output"]
    tanh = _reference(wide, original.config, batch)["sequence_output"]
    assert np.abs(erf - tanh).max() > 10 * ATOL


@pytest.mark.parametrize(("changes", "message"), [
    ({"model_type": "roberta"}, "model_type 'roberta' is not supported"),
    ({"architectures": ["BertLMHeadModel"]}, "architectures ['BertLMHeadModel'] are not supported"),
    ({"position_embedding_type": "relative_key"}, "position_embedding_type 'relative_key' is not supported"),
    ({"hidden_act": "silu"}, "hidden_act 'silu' is not supported"),
    ({"is_decoder": True}, "is_decoder true is not supported"),
    ({"hidden_size": None}, "lacks hidden_size"),
])
def test_huggingface_configs_outside_bert_are_refused(changes, message, model_config):
    hf_config = {"model_type": "bert", "architectures": ["BertForMaskedLM"], "hidden_act": "gelu",
                 **_config_fields(model_config)}
    hf_config = {k: v for k, v in {**hf_config, **changes}.items() if v is not None}
    with pytest.raises(CheckpointError, match=message.replace("[", r"\[").replace("]", r"\]")):
        bert_config_from_huggingface(hf_config)


def test_original_config_refuses_huggingface_activation_names(model_config):
    with pytest.raises(CheckpointError, match="hidden_act 'gelu_new' is not supported for google-research"):
        bert_config_from_original({"hidden_act": "gelu_new", **_config_fields(model_config)})


@pytest.mark.parametrize(("drop", "extra", "message"), [
    (("encoder.layer.1.output.dense.weight",), {}, r"lack 1 encoder tensor\(s\): \['encoder.layer.1.output"),
    (("pooler.dense.weight", "pooler.dense.bias"), {}, "no pooler"),
    ((), {"encoder.layer.0.crossattention.self.query.weight": np.zeros((32, 32), np.float32)},
     "encoder tensors BERT does not"),
    ((), {"encoder.layer.0.intermediate.dense.bias": np.zeros(7, np.float32)}, "wrong shapes"),
])
def test_huggingface_weights_that_do_not_fit_are_refused(drop, extra, message, tmp_path, model_weights,
                                                         model_config, vocab_lines):
    folder = write_huggingface_folder(tmp_path / "hf", model_weights, model_config, vocab_lines,
                                      drop=drop, state_changes=extra, tokenizer_config={})
    with pytest.raises(CheckpointError, match=message):
        read_bert_source(str(folder))


def test_pickled_huggingface_weights_are_never_loaded(tmp_path, model_weights, model_config, vocab_lines):
    folder = write_huggingface_folder(tmp_path / "hf", model_weights, model_config, vocab_lines,
                                      tokenizer_config={})
    os.replace(folder / "model.safetensors", folder / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="is a pickle, which is never loaded"):
        read_bert_source(str(folder))


def test_sharded_safetensors_are_read_through_their_index(tmp_path, model_weights, model_config, vocab_lines):
    from safetensors.numpy import save_file

    folder = write_huggingface_folder(tmp_path / "hf", model_weights, model_config, vocab_lines,
                                      tokenizer_config={})
    os.remove(folder / "model.safetensors")
    state = huggingface_state(model_weights, model_config)
    shards = {"model-00001-of-00002.safetensors": dict(list(state.items())[::2]),
              "model-00002-of-00002.safetensors": dict(list(state.items())[1::2])}
    for name, tensors in shards.items():
        save_file(tensors, str(folder / name))
    weight_map = {key: name for name, tensors in shards.items() for key in tensors}
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    source = read_bert_source(str(folder))
    for name, value in model_weights.items():
        np.testing.assert_array_equal(source.weights[name], value, err_msg=name)


def test_bfloat16_weights_are_refused_by_name(tmp_path, model_weights, model_config, vocab_lines):
    folder = write_huggingface_folder(tmp_path / "hf", model_weights, model_config, vocab_lines,
                                      tokenizer_config={})
    # numpy has no bfloat16, so the file is written by hand: header length, JSON header, raw bytes.
    header = json.dumps({"pooler.dense.bias": {"dtype": "BF16", "shape": [2], "data_offsets": [0, 4]}})
    header += " " * (-len(header) % 8)
    with open(folder / "model.safetensors", "wb") as handle:
        handle.write(len(header).to_bytes(8, "little") + header.encode() + bytes(4))
    with pytest.raises(CheckpointError, match="pooler.dense.bias is bfloat16"):
        read_bert_source(str(folder))


def test_original_checkpoint_missing_a_variable_is_refused(tmp_path, model_weights, model_config,
                                                           vocab_lines):
    missing = "bert/encoder/layer_0/attention/self/key/bias"
    folder = write_original_checkpoint(tmp_path / ORIGINAL_RELEASE, model_weights, model_config, vocab_lines,
                                       drop=(missing,))
    with pytest.raises(CheckpointError, match=f"lacks 1 encoder variable.*{missing}"):
        read_bert_source(str(folder))


@pytest.mark.parametrize(("name", "flag", "expected"), [
    ("uncased_L-12_H-768_A-12", None, True),
    ("wwm_uncased_L-24_H-1024_A-16", None, True),
    ("cased_L-12_H-768_A-12", None, False),
    ("multi_cased_L-12_H-768_A-12", None, False),
    ("chinese_L-12_H-768_A-12", None, True),
    ("my_finetuned_model", True, True),
    ("my_finetuned_model", False, False),
    ("uncased_L-2_H-128_A-2", True, True),
])
def test_original_lower_casing_comes_from_flag_or_release_name(name, flag, expected):
    assert original_lower_case(name, flag) is expected


@pytest.mark.parametrize(("name", "flag", "message"), [
    ("my_finetuned_model", None, "pass --do_lower_case"),
    ("cased_L-12_H-768_A-12", True, "contradicts the release name"),
])
def test_original_lower_casing_that_is_unknown_or_contradicted_is_refused(name, flag, message):
    with pytest.raises(CheckpointError, match=message):
        original_lower_case(name, flag)


@pytest.mark.parametrize(("tokenizer_config", "flag", "message"), [
    (None, None, "pass --do_lower_case"),
    ({"do_lower_case": True}, False, "contradicts tokenizer_config.json"),
    ({"do_lower_case": True, "strip_accents": False}, None, "strip_accents=False"),
    ({"tokenize_chinese_chars": False}, None, "tokenize_chinese_chars=false"),
    ({"tokenizer_class": "BertJapaneseTokenizer"}, None, "tokenizer_class 'BertJapaneseTokenizer'"),
])
def test_huggingface_tokenizers_bert_cannot_reproduce_are_refused(tokenizer_config, flag, message):
    with pytest.raises(CheckpointError, match=message):
        huggingface_lower_case(tokenizer_config, flag)


def test_huggingface_lower_casing_defaults_like_bert_tokenizer():
    assert huggingface_lower_case({}, None) is True
    assert huggingface_lower_case(None, False) is False
    assert huggingface_lower_case({"do_lower_case": False, "strip_accents": None}, False) is False


def test_conversion_refuses_a_non_empty_output_folder(sources, tmp_path, capsys):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "file").write_text("x")
    assert main([str(sources["original"]), str(tmp_path / "taken"), "--format", "tf2"]) == 1
    assert "exists and is not empty" in capsys.readouterr().err


def test_convert_returns_what_it_read(sources, tmp_path, model_config):
    source = convert(str(sources["original"]), str(tmp_path / "empty"), "tf2", do_lower_case=True)
    assert source.config == model_config
    assert (tmp_path / "empty" / "saved_model.pb").exists()
    assert not list(tmp_path.glob("*.partial-*"))


def test_do_lower_case_flag_is_parsed_strictly():
    assert (parse_bool("True"), parse_bool("false"), parse_bool("no")) == (True, False, False)
    with pytest.raises(argparse.ArgumentTypeError, match="expected true or false"):
        parse_bool("maybe")


def test_a_folder_with_no_checkpoint_is_refused(tmp_path):
    with pytest.raises(CheckpointError, match="neither a Hugging Face BERT folder"):
        read_bert_source(str(tmp_path))
