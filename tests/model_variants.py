"""BERT SavedModels in the call conventions users' exports have, built from tiny weights.

Each variant is written by project code (``pipeline.conversion.reference_encoder.bert_forward``) the way
its kind of exporter writes it, and knows how to call itself directly, by hand, so tests
can compare the pipeline's records with that call.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from pipeline.conversion.reference_encoder import BertConfig, bert_forward


@dataclass(frozen=True)
class Variant:
    """A model convention: how to build it, call it by hand, and run bert-beam on it."""

    name: str
    build: Callable[[Mapping[str, np.ndarray], BertConfig, Sequence[str], str], None]
    call: Callable[[str, np.ndarray, np.ndarray, np.ndarray], dict[str, np.ndarray]]
    flags: tuple[str, ...] = ()  # what bert-beam needs beside --model ({model}: the model's path)
    has_pooled: bool = True
    has_segments: bool = True


def _write_vocab(vocab_lines: Sequence[str], folder: str) -> str:
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "vocab.txt")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("\n".join(vocab_lines) + "\n")
    return path


def _module(weights, vocab_lines: Sequence[str] | None):
    """A tf.Module holding the weights and, as TF Hub's encoders do, a vocab asset and casing."""
    import tensorflow as tf

    module = tf.Module()
    module.bert_weights = {name: tf.Variable(value, name=name.replace("/", "_"))
                           for name, value in weights.items()}
    if vocab_lines:
        staging = tempfile.mkdtemp()  # saving copies the asset into assets/
        module.vocab_file = tf.saved_model.Asset(_write_vocab(vocab_lines, staging))
        module.do_lower_case = tf.Variable(True, trainable=False)
    return module


def _specs(dtype, length=None):
    import tensorflow as tf

    return tf.TensorSpec([None, length], dtype)


def build_dict_without_training(weights, config, vocab_lines, path: str) -> None:
    """TF Hub's TF2 encoder convention, ``__call__`` traced without a ``training`` argument."""
    import tensorflow as tf

    module = _module(weights, vocab_lines)
    spec = _specs(tf.int32)

    @tf.function(input_signature=[{"input_word_ids": spec, "input_mask": spec, "input_type_ids": spec}])
    def call(inputs):
        pooled, sequence = bert_forward(module.bert_weights, config, inputs["input_word_ids"],
                                        inputs["input_mask"], inputs["input_type_ids"])
        return {"pooled_output": pooled, "sequence_output": sequence}

    module.__call__ = call
    tf.saved_model.save(module, path, signatures={"serving_default": call})


def call_dict_without_training(path, ids, mask, types):
    import tensorflow as tf

    model = tf.saved_model.load(path)
    outputs = model({"input_word_ids": tf.constant(ids), "input_mask": tf.constant(mask),
                     "input_type_ids": tf.constant(types)})
    return {k: outputs[k].numpy() for k in ("pooled_output", "sequence_output")}


def build_list_inputs(weights, config, vocab_lines, path: str) -> None:
    """TF Hub's first TF2 encoders: ``[word_ids, mask, type_ids]`` in, ``[pooled, sequence]`` out."""
    import tensorflow as tf

    module = _module(weights, vocab_lines)
    spec = _specs(tf.int32)

    @tf.function
    def call(inputs, training=False):
        return list(bert_forward(module.bert_weights, config, *inputs, 0.1 if training else 0.0))

    module.__call__ = call
    for training in (True, False):
        call.get_concrete_function([spec, spec, spec], training=training)
    tf.saved_model.save(module, path)


def call_list_inputs(path, ids, mask, types):
    import tensorflow as tf

    model = tf.saved_model.load(path)
    pooled, sequence = model([tf.constant(ids), tf.constant(mask), tf.constant(types)], training=False)
    return {"pooled_output": pooled.numpy(), "sequence_output": sequence.numpy()}


def build_keyword_int64(weights, config, vocab_lines, path: str) -> None:
    """A Hugging Face style signature: int64 ``input_ids``/``attention_mask``/``token_type_ids``
    in, ``pooler_output``/``last_hidden_state`` out; the vocab only as ``assets/vocab.txt``."""
    import tensorflow as tf

    module = _module(weights, None)
    spec = _specs(tf.int64)

    @tf.function(input_signature=[spec, spec, spec])
    def serve(input_ids, attention_mask, token_type_ids):
        pooled, sequence = bert_forward(module.bert_weights, config, input_ids, attention_mask,
                                        token_type_ids)
        return {"pooler_output": pooled, "last_hidden_state": sequence}

    tf.saved_model.save(module, path, signatures={"serving_default": serve})
    _write_vocab(vocab_lines, os.path.join(path, "assets"))


def call_keyword_int64(path, ids, mask, types):
    import tensorflow as tf

    model = tf.saved_model.load(path)
    outputs = model.signatures["serving_default"](
        input_ids=tf.constant(ids, tf.int64), attention_mask=tf.constant(mask, tf.int64),
        token_type_ids=tf.constant(types, tf.int64))
    return {"pooled_output": outputs["pooler_output"].numpy(),
            "sequence_output": outputs["last_hidden_state"].numpy()}


def build_no_segments_no_pooler(weights, config, vocab_lines, path: str) -> None:
    """DistilBERT-style: ``input_ids`` and ``attention_mask`` only, ``last_hidden_state`` only."""
    import tensorflow as tf

    module = _module(weights, None)
    spec = _specs(tf.int32)

    @tf.function(input_signature=[spec, spec])
    def serve(input_ids, attention_mask):
        _, sequence = bert_forward(module.bert_weights, config, input_ids, attention_mask,
                                   tf.zeros_like(input_ids))
        return {"last_hidden_state": sequence}

    tf.saved_model.save(module, path, signatures={"serving_default": serve})
    _write_vocab(vocab_lines, os.path.join(path, "assets"))


def call_no_segments_no_pooler(path, ids, mask, types):
    import tensorflow as tf

    model = tf.saved_model.load(path)
    outputs = model.signatures["serving_default"](
        input_ids=tf.constant(ids), attention_mask=tf.constant(mask))
    return {"sequence_output": outputs["last_hidden_state"].numpy()}


def build_default_and_encoder_outputs(weights, config, vocab_lines, path: str) -> None:
    """Outputs ``default`` (pooled) and ``encoder_outputs`` (a list; the last layer's is the sequence)."""
    import tensorflow as tf

    module = _module(weights, vocab_lines)
    spec = _specs(tf.int32)

    @tf.function
    def call(inputs, training=False):
        pooled, sequence = bert_forward(module.bert_weights, config, inputs["input_word_ids"],
                                        inputs["input_mask"], inputs["input_type_ids"])
        first_layer = tf.ones_like(sequence)  # stands for an earlier layer's output
        return {"default": pooled, "encoder_outputs": [first_layer, sequence]}

    module.__call__ = call
    call.get_concrete_function({"input_word_ids": spec, "input_mask": spec, "input_type_ids": spec},
                               training=False)
    tf.saved_model.save(module, path)


def call_default_and_encoder_outputs(path, ids, mask, types):
    import tensorflow as tf

    model = tf.saved_model.load(path)
    outputs = model({"input_word_ids": tf.constant(ids), "input_mask": tf.constant(mask),
                     "input_type_ids": tf.constant(types)}, training=False)
    return {"pooled_output": outputs["default"].numpy(),
            "sequence_output": outputs["encoder_outputs"][-1].numpy()}


def build_failing_on_token(weights, config, vocab_lines, path: str, token_id: int) -> None:
    """TF Hub's TF2 encoder convention, failing (InvalidArgumentError) on any batch holding
    ``token_id``: a model that breaks on some batches and answers the rest."""
    import tensorflow as tf

    module = _module(weights, vocab_lines)
    spec = _specs(tf.int32)

    @tf.function(input_signature=[{"input_word_ids": spec, "input_mask": spec, "input_type_ids": spec}])
    def call(inputs):
        ids = inputs["input_word_ids"]
        check = tf.debugging.Assert(tf.reduce_all(tf.not_equal(ids, token_id)),
                                    [f"the batch holds token {token_id}"])
        with tf.control_dependencies([check]):
            pooled, sequence = bert_forward(module.bert_weights, config, ids, inputs["input_mask"],
                                            inputs["input_type_ids"])
        return {"pooled_output": pooled, "sequence_output": sequence}

    module.__call__ = call
    tf.saved_model.save(module, path, signatures={"serving_default": call})


KERAS_LENGTH = 32


def build_keras3_export(weights, config, vocab_lines, path: str) -> None:
    """A Keras 3 functional model with dict inputs of fixed length, written by ``model.export()``."""
    import keras
    import tensorflow as tf

    class Encoder(keras.layers.Layer):
        def __init__(self):
            super().__init__()
            self.bert = {name: self.add_weight(shape=value.shape, name=name.replace("/", "_"),
                                               initializer=keras.initializers.Constant(value),
                                               trainable=False)
                         for name, value in weights.items()}

        def call(self, input_ids, attention_mask, token_type_ids):
            tensors = {name: tf.convert_to_tensor(value) for name, value in self.bert.items()}
            pooled, sequence = bert_forward(tensors, config, input_ids, attention_mask, token_type_ids)
            return {"pooler_output": pooled, "last_hidden_state": sequence}

    inputs = {name: keras.Input(shape=(KERAS_LENGTH,), dtype="int32", name=name)
              for name in ("input_ids", "attention_mask", "token_type_ids")}
    model = keras.Model(inputs, Encoder()(**inputs))
    model.export(path, verbose=False)
    _write_vocab(vocab_lines, os.path.join(path, "assets.extra"))  # a user keeps it beside the model


def call_keras3_export(path, ids, mask, types):
    import tensorflow as tf

    pad = [(0, 0), (0, KERAS_LENGTH - ids.shape[1])]
    model = tf.saved_model.load(path)  # held: its variables live as long as it does
    outputs = model.serve(
        {"input_ids": tf.constant(np.pad(ids, pad)), "attention_mask": tf.constant(np.pad(mask, pad)),
         "token_type_ids": tf.constant(np.pad(types, pad))})
    return {"pooled_output": outputs["pooler_output"].numpy(),
            "sequence_output": outputs["last_hidden_state"].numpy()[:, : ids.shape[1]]}


VARIANTS = {
    variant.name: variant
    for variant in (
        Variant("dict_without_training", build_dict_without_training, call_dict_without_training),
        Variant("list_inputs", build_list_inputs, call_list_inputs),
        Variant("keyword_int64", build_keyword_int64, call_keyword_int64, ("--do_lower_case=true",)),
        Variant("no_segments_no_pooler", build_no_segments_no_pooler, call_no_segments_no_pooler,
                ("--do_lower_case=true", "--outputs=mean,sequence"), has_pooled=False, has_segments=False),
        Variant("default_and_encoder_outputs", build_default_and_encoder_outputs,
                call_default_and_encoder_outputs),
        Variant("keras3_export", build_keras3_export, call_keras3_export,
                ("--do_lower_case=true", f"--max_seq_length={KERAS_LENGTH}",
                 "--vocab_file={model}/assets.extra/vocab.txt", "--signature=serve")),
    )
}
