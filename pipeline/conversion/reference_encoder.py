"""The BERT encoder as plain TensorFlow ops over named weights.

One implementation serves every exporter (TF1 Hub format, TF2 SavedModel) and
the test fixtures. Weight names follow google-research/bert checkpoints
(``bert/encoder/layer_0/attention/self/query/kernel``), so an original
checkpoint maps onto it one to one.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass

import numpy as np

__all__ = ["ACTIVATIONS", "GELU_ERF", "GELU_TANH", "RELU", "BertConfig", "bert_forward", "check_weights",
           "random_weights", "weight_shapes"]

GELU_TANH = "gelu_tanh"
GELU_ERF = "gelu_erf"
RELU = "relu"
ACTIVATIONS = (GELU_TANH, GELU_ERF, RELU)


@dataclass(frozen=True)
class BertConfig:
    """Shapes and activation of a BERT encoder.

    ``hidden_act`` names the exact function: google-research/bert's "gelu" is the
    tanh approximation (``gelu_tanh``), Hugging Face's "gelu" is the erf form
    (``gelu_erf``).
    """

    vocab_size: int
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = GELU_TANH
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02

    def __post_init__(self) -> None:
        if self.hidden_act not in ACTIVATIONS:
            raise ValueError(f"hidden_act must be one of {ACTIVATIONS}, got {self.hidden_act!r}.")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError("hidden_size must be a multiple of num_attention_heads.")

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)


def weight_shapes(config: BertConfig) -> dict[str, tuple[int, ...]]:
    """Every weight of the encoder, by original checkpoint name, with its shape."""
    h, i = config.hidden_size, config.intermediate_size
    shapes: dict[str, tuple[int, ...]] = {
        "bert/embeddings/word_embeddings": (config.vocab_size, h),
        "bert/embeddings/token_type_embeddings": (config.type_vocab_size, h),
        "bert/embeddings/position_embeddings": (config.max_position_embeddings, h),
        "bert/embeddings/LayerNorm/gamma": (h,),
        "bert/embeddings/LayerNorm/beta": (h,),
        "bert/pooler/dense/kernel": (h, h),
        "bert/pooler/dense/bias": (h,),
    }
    for layer in range(config.num_hidden_layers):
        prefix = f"bert/encoder/layer_{layer}"
        for name in ("attention/self/query", "attention/self/key", "attention/self/value",
                     "attention/output/dense"):
            shapes[f"{prefix}/{name}/kernel"] = (h, h)
            shapes[f"{prefix}/{name}/bias"] = (h,)
        shapes[f"{prefix}/intermediate/dense/kernel"] = (h, i)
        shapes[f"{prefix}/intermediate/dense/bias"] = (i,)
        shapes[f"{prefix}/output/dense/kernel"] = (i, h)
        shapes[f"{prefix}/output/dense/bias"] = (h,)
        for norm in ("attention/output/LayerNorm", "output/LayerNorm"):
            shapes[f"{prefix}/{norm}/gamma"] = (h,)
            shapes[f"{prefix}/{norm}/beta"] = (h,)
    return shapes


def random_weights(config: BertConfig, seed: int = 0) -> dict[str, np.ndarray]:
    """Truncated-normal-like random weights (std ``initializer_range``), unit LayerNorms."""
    rng = np.random.default_rng(seed)
    weights: dict[str, np.ndarray] = {}
    for name, shape in weight_shapes(config).items():
        if name.endswith("/gamma"):
            value = np.ones(shape, np.float32)
        elif name.endswith(("/beta", "/bias")):
            value = rng.normal(0.0, config.initializer_range, shape).astype(np.float32)
        else:
            value = np.clip(rng.normal(0.0, config.initializer_range, shape), -0.04, 0.04)
        weights[name] = value.astype(np.float32)
    return weights


def check_weights(weights: Mapping[str, np.ndarray], config: BertConfig) -> None:
    """Raises ValueError naming any missing, unexpected or misshapen weight."""
    expected = weight_shapes(config)
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    wrong = sorted(
        f"{name} {tuple(weights[name].shape)} != {shape}"
        for name, shape in expected.items()
        if name in weights and tuple(weights[name].shape) != shape
    )
    problems = []
    if missing:
        problems.append(f"missing {missing[:5]}")
    if unexpected:
        problems.append(f"unexpected {unexpected[:5]}")
    if wrong:
        problems.append(f"wrong shapes {wrong[:5]}")
    if problems:
        raise ValueError("BERT weights do not match the config: " + "; ".join(problems) + ".")


def _activation(name: str):
    import tensorflow as tf

    if name == GELU_TANH:
        return lambda x: 0.5 * x * (1.0 + tf.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))
    if name == GELU_ERF:
        return lambda x: 0.5 * x * (1.0 + tf.math.erf(x / math.sqrt(2.0)))
    return tf.nn.relu


def _layer_norm(x, gamma, beta, eps: float):
    import tensorflow as tf

    mean, variance = tf.nn.moments(x, axes=[-1], keepdims=True)
    return (x - mean) * tf.math.rsqrt(variance + eps) * gamma + beta


def _dense(x, weights: Mapping, name: str):
    import tensorflow as tf

    return tf.matmul(x, weights[f"{name}/kernel"]) + weights[f"{name}/bias"]


def bert_forward(weights: Mapping, config: BertConfig, input_ids, input_mask, segment_ids,
                 dropout_rate: float = 0.0):
    """Runs the encoder; returns ``(pooled_output [B, H], sequence_output [B, T, H])``.

    Works on tf.Variables or tensors, eagerly, in a tf.function or in a TF1
    graph. ``dropout_rate`` > 0 gives the training variant (used only to prove
    that exporters and loaders never serve it).
    """
    import tensorflow as tf

    act = _activation(config.hidden_act)
    heads = config.num_attention_heads
    head_size = config.hidden_size // heads
    batch = tf.shape(input_ids)[0]
    length = tf.shape(input_ids)[1]

    def dropout(x):
        return tf.nn.dropout(x, rate=dropout_rate) if dropout_rate > 0 else x

    embeddings = (
        tf.gather(weights["bert/embeddings/word_embeddings"], input_ids)
        + tf.gather(weights["bert/embeddings/token_type_embeddings"], segment_ids)
        + weights["bert/embeddings/position_embeddings"][tf.newaxis, :length, :]
    )
    x = dropout(_layer_norm(embeddings, weights["bert/embeddings/LayerNorm/gamma"],
                            weights["bert/embeddings/LayerNorm/beta"], config.layer_norm_eps))
    mask = tf.cast(input_mask, x.dtype)[:, tf.newaxis, tf.newaxis, :]
    attention_bias = (1.0 - mask) * -10000.0

    def split_heads(t):
        t = tf.reshape(t, [batch, length, heads, head_size])
        return tf.transpose(t, [0, 2, 1, 3])

    for layer in range(config.num_hidden_layers):
        prefix = f"bert/encoder/layer_{layer}"
        q = split_heads(_dense(x, weights, f"{prefix}/attention/self/query"))
        k = split_heads(_dense(x, weights, f"{prefix}/attention/self/key"))
        v = split_heads(_dense(x, weights, f"{prefix}/attention/self/value"))
        scores = tf.matmul(q, k, transpose_b=True) * (1.0 / math.sqrt(head_size)) + attention_bias
        probs = dropout(tf.nn.softmax(scores, axis=-1))
        context = tf.reshape(tf.transpose(tf.matmul(probs, v), [0, 2, 1, 3]),
                             [batch, length, config.hidden_size])
        attention = dropout(_dense(context, weights, f"{prefix}/attention/output/dense"))
        x = _layer_norm(attention + x, weights[f"{prefix}/attention/output/LayerNorm/gamma"],
                        weights[f"{prefix}/attention/output/LayerNorm/beta"], config.layer_norm_eps)
        intermediate = act(_dense(x, weights, f"{prefix}/intermediate/dense"))
        output = dropout(_dense(intermediate, weights, f"{prefix}/output/dense"))
        x = _layer_norm(output + x, weights[f"{prefix}/output/LayerNorm/gamma"],
                        weights[f"{prefix}/output/LayerNorm/beta"], config.layer_norm_eps)
    pooled = tf.tanh(_dense(x[:, 0, :], weights, "bert/pooler/dense"))
    return pooled, x
