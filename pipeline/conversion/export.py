"""Writes a BERT encoder as a TF1 Hub module or a TF2 SavedModel.

Both layouts are the ones users' models have: the TF1 Hub format of
``google/bert_*`` modules (``tfhub_module.pb``, graph tags ``set()`` for
inference and ``{"train"}`` with dropout, signatures ``tokens`` and
``tokenization_info``) and the TF2 format of TF Hub's BERT encoders (called with
a dict of ``input_word_ids``/``input_mask``/``input_type_ids``; attributes
``vocab_file`` and ``do_lower_case``).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence

import numpy as np

from pipeline.conversion.reference_encoder import BertConfig, bert_forward, check_weights
from transforms.call_conventions import INPUT_IDS, INPUT_MASK, POOLED_OUTPUT, SEGMENT_IDS, SEQUENCE_OUTPUT

__all__ = ["ASSET_LAYOUTS", "BAKED_PATH_LAYOUT", "HUB_EXPORTER_LAYOUT", "TF1_MODULE_DEF",
           "TRAIN_DROPOUT_RATE", "VOCAB_TENSOR", "archive_module", "export_tf1_hub_module",
           "export_tf2_saved_model"]

TF1_MODULE_DEF = b"\x08\x03"  # hub ModuleDef proto {format: FORMAT_V3}
TRAIN_DROPOUT_RATE = 0.1
VOCAB_TENSOR = "vocab_file:0"
# How a TF1 Hub module records its vocab asset: as TF Hub's exporter wrote the google/bert_* modules
# (placeholder constant, file named in the saved_model_assets collection), or with the exporter's
# path left in the constant.
HUB_EXPORTER_LAYOUT = "hub_exporter"
BAKED_PATH_LAYOUT = "baked_path"
ASSET_LAYOUTS = (HUB_EXPORTER_LAYOUT, BAKED_PATH_LAYOUT)


def _write_vocab(vocab_lines: Sequence[str], path: str) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("\n".join(vocab_lines) + "\n")


def export_tf1_hub_module(
    weights: Mapping[str, np.ndarray],
    config: BertConfig,
    vocab_lines: Sequence[str],
    do_lower_case: bool,
    output_dir: str,
    asset_layout: str = HUB_EXPORTER_LAYOUT,
) -> str:
    """Writes a TF1 Hub format module like ``google/bert_cased_L-24_H-1024_A-16``.

    The vocab file lives in the module's ``assets/``. With the hub exporter's layout (the
    default) the ``tokenization_info`` signature returns the placeholder ``SAVEDMODEL-ASSET``
    and the meta graphs name the file, as ``tensorflow_hub``'s ``saved_model_lib`` writes
    them; with ``baked_path`` it returns the path the vocab had at export time (a temporary
    folder that is deleted).
    """
    import tensorflow as tf

    if asset_layout not in ASSET_LAYOUTS:
        raise ValueError(f"asset_layout must be one of {ASSET_LAYOUTS}, got {asset_layout!r}.")
    check_weights(weights, config)
    v1 = tf.compat.v1
    with tempfile.TemporaryDirectory() as staging:
        exporter_vocab = os.path.join(staging, "vocab.txt")
        _write_vocab(vocab_lines, exporter_vocab)
        graph = tf.Graph()
        with graph.as_default():
            variables = {
                name: v1.get_variable(name, shape=value.shape, dtype=tf.float32,
                                      initializer=v1.zeros_initializer())
                for name, value in weights.items()
            }
            input_ids = v1.placeholder(tf.int32, [None, None], name=INPUT_IDS)
            input_mask = v1.placeholder(tf.int32, [None, None], name=INPUT_MASK)
            segment_ids = v1.placeholder(tf.int32, [None, None], name=SEGMENT_IDS)
            pooled, sequence = bert_forward(variables, config, input_ids, input_mask, segment_ids)
            train_pooled, train_sequence = bert_forward(
                variables, config, input_ids, input_mask, segment_ids, TRAIN_DROPOUT_RATE
            )
            vocab_file = tf.constant(exporter_vocab, name="vocab_file")
            lower_case = tf.constant(do_lower_case, name="do_lower_case")
            info = {"vocab_file": vocab_file, "do_lower_case": lower_case}
            inputs = {INPUT_IDS: input_ids, INPUT_MASK: input_mask, SEGMENT_IDS: segment_ids}

            def signatures(pooled_tensor, sequence_tensor):
                build = v1.saved_model.signature_def_utils.build_signature_def
                info_of = v1.saved_model.utils.build_tensor_info
                return {
                    "tokens": build(
                        {k: info_of(t) for k, t in inputs.items()},
                        {POOLED_OUTPUT: info_of(pooled_tensor), SEQUENCE_OUTPUT: info_of(sequence_tensor)},
                    ),
                    "tokenization_info": build({}, {k: info_of(t) for k, t in info.items()}),
                }

            with v1.Session(graph=graph) as session:
                session.run(v1.global_variables_initializer())
                for name, variable in variables.items():
                    variable.load(weights[name], session)
                builder = v1.saved_model.Builder(output_dir)
                builder.add_meta_graph_and_variables(
                    session, [], signature_def_map=signatures(pooled, sequence), strip_default_attrs=True
                )
                builder.add_meta_graph(
                    ["train"], signature_def_map=signatures(train_pooled, train_sequence),
                    strip_default_attrs=True,
                )
                builder.save()
    os.makedirs(os.path.join(output_dir, "assets"), exist_ok=True)
    _write_vocab(vocab_lines, os.path.join(output_dir, "assets", "vocab.txt"))
    if asset_layout == HUB_EXPORTER_LAYOUT:
        _record_assets_as_hub_exporter(output_dir)
    with open(os.path.join(output_dir, "tfhub_module.pb"), "wb") as handle:
        handle.write(TF1_MODULE_DEF)
    with open(os.path.join(output_dir, "bert_config.json"), "w", encoding="utf-8") as handle:
        handle.write(config.to_json())
    return output_dir


def _record_assets_as_hub_exporter(module_dir: str) -> None:
    """Rewrites saved_model.pb as TF Hub's ``saved_model_lib`` exports assets.

    For each meta graph: the vocab constant is listed in ``asset_filepaths``, its value is
    overwritten with ``SAVEDMODEL-ASSET``, and an ``AssetFileDef`` naming ``vocab.txt`` is
    packed into the ``saved_model_assets`` collection.
    """
    from tensorflow.core.protobuf import meta_graph_pb2

    from transforms.model_assets import ASSETS_COLLECTION, HUB_ASSET_PLACEHOLDER, read_saved_model

    proto = read_saved_model(module_dir)
    node_name = VOCAB_TENSOR.split(":")[0]
    for meta_graph in proto.meta_graphs:
        (node,) = [node for node in meta_graph.graph_def.node if node.name == node_name]
        node.attr["value"].tensor.string_val[0] = HUB_ASSET_PLACEHOLDER.encode()
        meta_graph.collection_def["asset_filepaths"].node_list.value.append(VOCAB_TENSOR)
        asset = meta_graph_pb2.AssetFileDef(filename="vocab.txt")
        asset.tensor_info.name = VOCAB_TENSOR
        meta_graph.collection_def[ASSETS_COLLECTION].any_list.value.add().Pack(asset)
    with open(os.path.join(module_dir, "saved_model.pb"), "wb") as handle:
        handle.write(proto.SerializeToString())


def export_tf2_saved_model(
    weights: Mapping[str, np.ndarray],
    config: BertConfig,
    vocab_lines: Sequence[str],
    do_lower_case: bool,
    output_dir: str,
) -> str:
    """Writes a TF2 SavedModel callable like TF Hub's ``bert_en_*`` encoders."""
    import tensorflow as tf

    check_weights(weights, config)
    spec = tf.TensorSpec([None, None], tf.int32)

    class ExportedBert(tf.Module):
        def __init__(self, vocab_path: str) -> None:
            super().__init__(name="bert")
            self.bert_weights = {name: tf.Variable(value, name=name.replace("/", "_"))
                                 for name, value in weights.items()}
            self.vocab_file = tf.saved_model.Asset(vocab_path)
            self.do_lower_case = tf.Variable(do_lower_case, trainable=False)

        @tf.function
        def __call__(self, inputs, training=False):
            pooled, sequence = bert_forward(
                self.bert_weights, config, inputs["input_word_ids"], inputs[INPUT_MASK],
                inputs["input_type_ids"], TRAIN_DROPOUT_RATE if training else 0.0,
            )
            return {POOLED_OUTPUT: pooled, SEQUENCE_OUTPUT: sequence, "default": pooled}

        @tf.function(input_signature=[spec, spec, spec])
        def serve(self, input_word_ids, input_mask, input_type_ids):
            return self.__call__(
                {"input_word_ids": input_word_ids, INPUT_MASK: input_mask,
                 "input_type_ids": input_type_ids},
                training=False,
            )

    with tempfile.TemporaryDirectory() as staging:
        vocab_path = os.path.join(staging, "vocab.txt")
        _write_vocab(vocab_lines, vocab_path)
        module = ExportedBert(vocab_path)
        dict_spec = {"input_word_ids": spec, INPUT_MASK: spec, "input_type_ids": spec}
        module.__call__.get_concrete_function(dict_spec, training=False)
        module.__call__.get_concrete_function(dict_spec, training=True)
        tf.saved_model.save(module, output_dir, signatures={"serving_default": module.serve})
    with open(os.path.join(output_dir, "bert_config.json"), "w", encoding="utf-8") as handle:
        handle.write(config.to_json())
    return output_dir


def archive_module(module_dir: str, archive_path: str) -> str:
    """Packs a module folder as a ``.tar.gz`` archive with the folder's contents at its root."""
    base = archive_path[: -len(".tar.gz")] if archive_path.endswith(".tar.gz") else archive_path
    made = shutil.make_archive(base, "gztar", root_dir=module_dir)
    return made
