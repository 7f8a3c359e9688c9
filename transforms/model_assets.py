"""Finds the asset file that a TF1 SavedModel's signature output names, as TensorFlow does.

TF Hub's TF1 exporter (``tensorflow_hub/saved_model_lib.py``, which wrote the
``google/bert_*`` modules) overwrites each asset's path constant with the
placeholder ``SAVEDMODEL-ASSET`` "to avoid leaking the original path" and records
the real file name in the meta graph's ``saved_model_assets`` collection;
TensorFlow's own builder records it in ``asset_file_def``. Either way the
signature output is only a tensor name, and the file lives in ``assets/``.
"""

from __future__ import annotations

import os

__all__ = ["ASSETS_COLLECTION", "HUB_ASSET_PLACEHOLDER", "asset_filenames", "meta_graph_for_tags",
           "read_saved_model", "signature_output_asset", "source_tensor"]

HUB_ASSET_PLACEHOLDER = "SAVEDMODEL-ASSET"
ASSETS_COLLECTION = "saved_model_assets"  # tf.compat.v1.saved_model.constants.ASSETS_KEY
# Ops that pass their input through unchanged, between a signature output and its constant.
_PASS_THROUGH_OPS = frozenset({"Identity", "Snapshot", "StopGradient", "IdentityN"})


def read_saved_model(path: str):
    """The ``SavedModel`` proto of the folder ``path``."""
    import tensorflow as tf
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    with tf.io.gfile.GFile(os.path.join(path, "saved_model.pb"), "rb") as handle:
        proto.ParseFromString(handle.read())
    return proto


def meta_graph_for_tags(saved_model, tags: frozenset[str] = frozenset()):
    """The meta graph with exactly ``tags`` (``set()``: a TF1 Hub module's inference graph)."""
    for meta_graph in saved_model.meta_graphs:
        if frozenset(meta_graph.meta_info_def.tags) == tags:
            return meta_graph
    return None


def asset_filenames(meta_graph) -> dict[str, str]:
    """Asset tensor name (``vocab_file:0``) → file name in ``assets/``, from either record."""
    from tensorflow.core.protobuf import meta_graph_pb2

    assets = {asset.tensor_info.name: asset.filename for asset in meta_graph.asset_file_def}
    collection = meta_graph.collection_def.get(ASSETS_COLLECTION)
    if collection is not None:
        for packed in collection.any_list.value:
            asset = meta_graph_pb2.AssetFileDef()
            packed.Unpack(asset)
            assets.setdefault(asset.tensor_info.name, asset.filename)
    return assets


def source_tensor(graph_def, tensor_name: str) -> str:
    """Follows pass-through ops (Identity ...) from ``tensor_name`` back to the tensor they forward."""
    nodes = {node.name: node for node in graph_def.node}
    seen: set[str] = set()
    while tensor_name not in seen:
        seen.add(tensor_name)
        node_name, _, index = tensor_name.partition(":")
        node = nodes.get(node_name)
        if node is None or node.op not in _PASS_THROUGH_OPS:
            break
        inputs = [name for name in node.input if not name.startswith("^")]
        position = int(index or 0) if node.op == "IdentityN" else 0
        if position >= len(inputs):
            break
        tensor_name = inputs[position] if ":" in inputs[position] else inputs[position] + ":0"
    return tensor_name


def signature_output_asset(path: str, signature: str, output: str) -> str | None:
    """The local path of the asset that ``signature``'s ``output`` holds, if it holds one."""
    meta_graph = meta_graph_for_tags(read_saved_model(path))
    if meta_graph is None or signature not in meta_graph.signature_def:
        return None
    outputs = meta_graph.signature_def[signature].outputs
    if output not in outputs:
        return None
    tensor = source_tensor(meta_graph.graph_def, outputs[output].name)
    filename = asset_filenames(meta_graph).get(tensor)
    return os.path.join(path, "assets", filename) if filename else None
