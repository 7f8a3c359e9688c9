"""Reads BERT checkpoints into the project's encoder config and weights, refusing what it cannot serve.

Two sources are understood: a Hugging Face BERT folder (``config.json``, ``model.safetensors``,
``vocab.txt``) and an original google-research/bert checkpoint (``bert_config.json``,
``bert_model.ckpt.*``, ``vocab.txt``). Nothing is unpickled: Hugging Face weights come from
safetensors, original ones from ``tf.train.load_checkpoint``. Weights come out keyed by original
checkpoint names, ready for ``pipeline.conversion.export``.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from pipeline.conversion.reference_encoder import (
    GELU_ERF,
    GELU_TANH,
    RELU,
    BertConfig,
    check_weights,
    weight_shapes,
)
from transforms.tokenization import FullTokenizer, read_vocab_file

__all__ = ["GOOGLE_UNCASED_RELEASES", "HF_ACTIVATIONS", "HF_CONFIG", "HF_PICKLED_WEIGHTS", "HF_TOKENIZERS",
           "HF_TOKENIZER_CONFIG", "HF_WEIGHTS", "HF_WEIGHTS_INDEX", "ORIGINAL_ACTIVATIONS",
           "ORIGINAL_CHECKPOINT", "ORIGINAL_CONFIG", "ORIGINAL_LAYER_NORM_EPS", "SHAPE_KEYS", "VOCAB",
           "BertSource", "CheckpointError", "bert_config_from_huggingface", "bert_config_from_original",
           "huggingface_keys", "huggingface_lower_case", "original_lower_case", "read_bert_source",
           "read_huggingface_folder", "read_original_checkpoint", "weights_from_huggingface"]

HF_CONFIG = "config.json"
HF_TOKENIZER_CONFIG = "tokenizer_config.json"
HF_WEIGHTS = "model.safetensors"
HF_WEIGHTS_INDEX = "model.safetensors.index.json"
HF_PICKLED_WEIGHTS = "pytorch_model.bin"
ORIGINAL_CONFIG = "bert_config.json"
ORIGINAL_CHECKPOINT = "bert_model.ckpt"
VOCAB = "vocab.txt"

# Hugging Face's "gelu" is the exact erf form; google-research/bert's "gelu" is the tanh approximation.
HF_ACTIVATIONS = {"gelu": GELU_ERF, "gelu_new": GELU_TANH, "gelu_pytorch_tanh": GELU_TANH, "relu": RELU}
ORIGINAL_ACTIVATIONS = {"gelu": GELU_TANH, "relu": RELU}
# google-research/bert normalises with tf.contrib.layers.layer_norm, whose epsilon is 1e-12.
ORIGINAL_LAYER_NORM_EPS = 1e-12
SHAPE_KEYS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
              "intermediate_size", "max_position_embeddings", "type_vocab_size")
HF_TOKENIZERS = ("BertTokenizer", "BertTokenizerFast")
# google-research/bert's validate_case_matches_checkpoint counts these release names as lower-cased.
GOOGLE_UNCASED_RELEASES = ("multilingual_L-12_H-768_A-12", "chinese_L-12_H-768_A-12")

_HF_ENCODER_PARTS = ("embeddings.", "encoder.", "pooler.")
_HF_BUFFERS = ("embeddings.position_ids", "embeddings.token_type_ids")


class CheckpointError(ValueError):
    """The source cannot be converted; the message names what is unsupported or missing."""


@dataclass(frozen=True)
class BertSource:
    """A BERT encoder read from a checkpoint: everything the exporters need."""

    config: BertConfig
    weights: dict[str, np.ndarray]
    vocab_lines: tuple[str, ...]
    do_lower_case: bool


def read_bert_source(folder: str, do_lower_case: bool | None = None) -> BertSource:
    """Reads a Hugging Face folder or an original checkpoint folder, recognised by its weight files."""
    is_huggingface = any(os.path.exists(os.path.join(folder, name))
                         for name in (HF_WEIGHTS, HF_WEIGHTS_INDEX, HF_PICKLED_WEIGHTS))
    is_original = os.path.exists(os.path.join(folder, ORIGINAL_CONFIG))
    if is_huggingface == is_original:
        raise CheckpointError(
            f"{folder} is {'both' if is_huggingface else 'neither'} a Hugging Face BERT folder "
            f"({HF_CONFIG} + {HF_WEIGHTS}) {'and' if is_huggingface else 'nor'} a google-research/bert "
            f"checkpoint ({ORIGINAL_CONFIG} + {ORIGINAL_CHECKPOINT}.*)."
        )
    reader = read_huggingface_folder if is_huggingface else read_original_checkpoint
    return reader(folder, do_lower_case)


def read_huggingface_folder(folder: str, do_lower_case: bool | None = None) -> BertSource:
    """Reads ``config.json``, ``model.safetensors`` (or its shards) and ``vocab.txt``."""
    config = bert_config_from_huggingface(_read_json(os.path.join(folder, HF_CONFIG)))
    tokenizer_path = os.path.join(folder, HF_TOKENIZER_CONFIG)
    tokenizer_config = _read_json(tokenizer_path) if os.path.exists(tokenizer_path) else None
    lower = huggingface_lower_case(tokenizer_config, do_lower_case)
    weights = weights_from_huggingface(_read_safetensors(folder), config)
    return BertSource(config, weights, _read_vocab(folder, config, lower), lower)


def read_original_checkpoint(folder: str, do_lower_case: bool | None = None) -> BertSource:
    """Reads ``bert_config.json``, ``bert_model.ckpt`` (else the latest checkpoint) and ``vocab.txt``."""
    config = bert_config_from_original(_read_json(os.path.join(folder, ORIGINAL_CONFIG)))
    lower = original_lower_case(os.path.basename(os.path.normpath(folder)), do_lower_case)
    weights = _read_original_weights(_checkpoint_prefix(folder), config)
    return BertSource(config, weights, _read_vocab(folder, config, lower), lower)


def bert_config_from_huggingface(hf_config: Mapping) -> BertConfig:
    """Maps a Hugging Face ``config.json`` onto a BertConfig, refusing anything but a plain BERT encoder."""
    model_type = hf_config.get("model_type")
    if model_type != "bert":
        raise CheckpointError(f"model_type {model_type!r} is not supported: only BERT (model_type 'bert') "
                              "converts onto bert-beam's encoder.")
    unsupported = [name for name in hf_config.get("architectures") or ()
                   if name != "BertModel" and not name.startswith("BertFor")]
    if unsupported:
        raise CheckpointError(f"architectures {unsupported} are not supported: only BertModel and BertFor* "
                              "models share BERT's encoder.")
    position_type = hf_config.get("position_embedding_type", "absolute")
    if position_type != "absolute":
        raise CheckpointError(f"position_embedding_type {position_type!r} is not supported: bert-beam's "
                              "encoder has absolute position embeddings only.")
    if hf_config.get("is_decoder"):
        raise CheckpointError("is_decoder true is not supported: bert-beam's encoder attends both ways.")
    return BertConfig(
        hidden_act=_activation(hf_config, HF_ACTIVATIONS, "Hugging Face"),
        layer_norm_eps=float(hf_config.get("layer_norm_eps", 1e-12)),
        initializer_range=float(hf_config.get("initializer_range", 0.02)),
        **_shape_fields(hf_config),
    )


def bert_config_from_original(original_config: Mapping) -> BertConfig:
    """Maps a google-research/bert ``bert_config.json`` onto a BertConfig."""
    return BertConfig(
        hidden_act=_activation(original_config, ORIGINAL_ACTIVATIONS, "google-research/bert"),
        layer_norm_eps=ORIGINAL_LAYER_NORM_EPS,
        initializer_range=float(original_config.get("initializer_range", 0.02)),
        **_shape_fields(original_config),
    )


def _activation(config: Mapping, known: Mapping[str, str], source: str) -> str:
    name = config.get("hidden_act")
    if name not in known:
        raise CheckpointError(f"hidden_act {name!r} is not supported for {source} configs; "
                              f"known: {', '.join(sorted(known))}.")
    return known[name]


def _shape_fields(config: Mapping) -> dict[str, int]:
    missing = [key for key in SHAPE_KEYS if key not in config]
    if missing:
        raise CheckpointError(f"The config lacks {', '.join(missing)}.")
    return {key: int(config[key]) for key in SHAPE_KEYS}


def huggingface_lower_case(tokenizer_config: Mapping | None, flag: bool | None) -> bool:
    """Lower-casing from ``tokenizer_config.json``, checked against ``--do_lower_case`` when both exist.

    The project's tokenizer is BERT's own: it strips accents exactly when it lower-cases and always
    splits CJK ideographs, so a tokenizer configured otherwise is refused rather than approximated.
    """
    if tokenizer_config is None:
        if flag is None:
            raise CheckpointError(f"The folder has no {HF_TOKENIZER_CONFIG} to say whether the vocabulary "
                                  "is lower-cased; pass --do_lower_case=true or false.")
        return flag
    tokenizer_class = tokenizer_config.get("tokenizer_class")
    if tokenizer_class not in (None, *HF_TOKENIZERS):
        raise CheckpointError(f"tokenizer_class {tokenizer_class!r} is not supported: only BERT's WordPiece "
                              f"tokenizer ({', '.join(HF_TOKENIZERS)}).")
    recorded = bool(tokenizer_config.get("do_lower_case", True))  # BertTokenizer's default
    if flag is not None and flag != recorded:
        raise CheckpointError(f"--do_lower_case={str(flag).lower()} contradicts {HF_TOKENIZER_CONFIG}, "
                              f"which says do_lower_case={str(recorded).lower()}.")
    strip_accents = tokenizer_config.get("strip_accents")
    if strip_accents is not None and bool(strip_accents) != recorded:
        raise CheckpointError(f"strip_accents={strip_accents} with do_lower_case={recorded} is not "
                              "supported: BERT's tokenizer strips accents exactly when it lower-cases.")
    for setting in ("tokenize_chinese_chars", "do_basic_tokenize"):
        if tokenizer_config.get(setting, True) is False:
            raise CheckpointError(f"{setting}=false is not supported: BERT's tokenizer always does it.")
    return recorded


def original_lower_case(folder_name: str, flag: bool | None) -> bool:
    """``--do_lower_case`` or, failing that, Google's release name (``uncased_L-12_...``, ``cased_L-12_...``).

    Original checkpoints do not record lower-casing; like google-research/bert's
    ``validate_case_matches_checkpoint``, a flag that contradicts a release name is refused.
    """
    if re.search(r"(?:^|_)uncased_L-\d", folder_name) or folder_name in GOOGLE_UNCASED_RELEASES:
        named: bool | None = True
    elif re.search(r"(?:^|_)cased_L-\d", folder_name):
        named = False
    else:
        named = None
    if flag is None and named is None:
        raise CheckpointError("google-research/bert checkpoints do not record lower-casing and "
                              f"{folder_name!r} is not a Google release name (uncased_L-*, cased_L-*); pass "
                              "--do_lower_case=true or false.")
    if flag is not None and named is not None and flag != named:
        raise CheckpointError(f"--do_lower_case={str(flag).lower()} contradicts the release name "
                              f"{folder_name!r}, which is {'un' if named else ''}cased.")
    return named if flag is None else flag


def huggingface_keys(name: str) -> tuple[tuple[str, ...], bool]:
    """The Hugging Face keys that may hold an original weight, and whether the value is transposed.

    PyTorch Linear weights are ``[out, in]``, TF kernels ``[in, out]``. Keys may carry the
    ``bert.`` prefix of BertFor* models; old checkpoints name LayerNorm parameters gamma/beta.
    """
    path = re.sub(r"layer_(\d+)", r"layer.\1", name.removeprefix("bert/")).replace("/", ".")
    stem, _, leaf = path.rpartition(".")
    transpose = leaf == "kernel"
    if leaf in ("kernel", "gamma"):
        keys = [f"{stem}.weight"] + ([f"{stem}.gamma"] if leaf == "gamma" else [])
    elif leaf in ("bias", "beta"):
        keys = [f"{stem}.bias"] + ([f"{stem}.beta"] if leaf == "beta" else [])
    else:  # an embedding table
        keys = [f"{path}.weight"]
    return tuple(key for bare in keys for key in (bare, f"bert.{bare}")), transpose


def weights_from_huggingface(tensors: Mapping[str, np.ndarray], config: BertConfig) -> dict[str, np.ndarray]:
    """Picks and reshapes the encoder's weights; task heads (``cls.``, ``classifier.``...) are left out."""
    weights: dict[str, np.ndarray] = {}
    used: set[str] = set()
    missing: list[str] = []
    for name in weight_shapes(config):
        keys, transpose = huggingface_keys(name)
        found = [key for key in keys if key in tensors]
        if len(found) > 1:
            raise CheckpointError(f"The weights hold {name} twice, as {found}.")
        if not found:
            missing.append(keys[0])
            continue
        value = np.asarray(tensors[found[0]], dtype=np.float32)
        weights[name] = np.ascontiguousarray(value.T if transpose else value)
        used.add(found[0])
    if missing and all(key.startswith("pooler.") for key in missing):
        raise CheckpointError("The weights have no pooler (pooler.dense.*), as when saved with "
                              "add_pooling_layer=False; bert-beam serves pooled_output and will not "
                              "invent one.")
    if missing:
        raise CheckpointError(f"The weights lack {len(missing)} encoder tensor(s): {missing[:5]}.")
    unexpected = sorted(key for key in tensors if key not in used and _is_huggingface_encoder_key(key))
    if unexpected:
        raise CheckpointError(f"The weights have encoder tensors BERT does not: {unexpected[:5]}.")
    return _checked(weights, config)


def _is_huggingface_encoder_key(key: str) -> bool:
    bare = key.removeprefix("bert.")
    return bare.startswith(_HF_ENCODER_PARTS) and bare not in _HF_BUFFERS


def _checked(weights: dict[str, np.ndarray], config: BertConfig) -> dict[str, np.ndarray]:
    try:
        check_weights(weights, config)
    except ValueError as error:
        raise CheckpointError(str(error)) from error
    return weights


def _read_safetensors(folder: str) -> dict[str, np.ndarray]:
    """Every tensor of ``model.safetensors`` or of the shards its index names, as numpy arrays."""
    from safetensors import safe_open

    single, index = os.path.join(folder, HF_WEIGHTS), os.path.join(folder, HF_WEIGHTS_INDEX)
    if os.path.exists(single):
        files = [single]
    elif os.path.exists(index):
        shards = sorted(set(_read_json(index)["weight_map"].values()))
        files = [os.path.join(folder, shard) for shard in shards]
    else:
        raise CheckpointError(f"{folder} has no {HF_WEIGHTS}; {HF_PICKLED_WEIGHTS} is a pickle, which is "
                              "never loaded. Save the model with safetensors (save_pretrained's default).")
    tensors: dict[str, np.ndarray] = {}
    for path in files:
        with safe_open(path, framework="np") as handle:
            for key in handle.keys():  # noqa: SIM118 - safe_open is not a Mapping
                if handle.get_slice(key).get_dtype() == "BF16":
                    raise CheckpointError(f"{key} is bfloat16, which numpy cannot read; save the model "
                                          "as float32 or float16.")
                tensors[key] = handle.get_tensor(key)
    return tensors


def _checkpoint_prefix(folder: str) -> str:
    import tensorflow as tf

    prefix = os.path.join(folder, ORIGINAL_CHECKPOINT)
    if tf.io.gfile.exists(prefix + ".index"):
        return prefix
    latest = tf.train.latest_checkpoint(folder)
    if latest is None:
        raise CheckpointError(f"{folder} has no {ORIGINAL_CHECKPOINT}.index and no checkpoint file "
                              "naming one.")
    return latest


def _read_original_weights(prefix: str, config: BertConfig) -> dict[str, np.ndarray]:
    """The encoder's variables; optimizer slots (``.../adam_m``) and task heads (``cls/``...) are left out."""
    import tensorflow as tf

    reader = tf.train.load_checkpoint(prefix)
    stored = reader.get_variable_to_shape_map()
    expected = weight_shapes(config)
    unexpected = sorted(name for name in stored if name.startswith("bert/") and name not in expected
                        and name.rsplit("/", 1)[0] not in expected)
    if unexpected:
        raise CheckpointError(f"{prefix} has encoder variables BERT does not: {unexpected[:5]}.")
    missing = [name for name in expected if name not in stored]
    if missing:
        raise CheckpointError(f"{prefix} lacks {len(missing)} encoder variable(s): {missing[:5]}.")
    return _checked({name: reader.get_tensor(name).astype(np.float32) for name in expected}, config)


def _read_vocab(folder: str, config: BertConfig, do_lower_case: bool) -> tuple[str, ...]:
    """``vocab.txt``, checked to be a usable BERT vocabulary that fits the embedding table."""
    path = os.path.join(folder, VOCAB)
    if not os.path.exists(path):
        raise CheckpointError(f"{folder} has no {VOCAB}.")
    lines = read_vocab_file(path)
    if len(lines) > config.vocab_size:
        raise CheckpointError(f"{VOCAB} has {len(lines)} tokens but the model embeds only "
                              f"{config.vocab_size}.")
    try:
        FullTokenizer(lines, do_lower_case)
    except ValueError as error:
        raise CheckpointError(f"{path}: {error}") from error
    return lines


def _read_json(path: str) -> dict:
    if not os.path.exists(path):
        raise CheckpointError(f"{os.path.dirname(path)} has no {os.path.basename(path)}.")
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)
