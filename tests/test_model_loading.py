"""Model resolution, format detection, tokenizer discovery and the handler's contract."""

from __future__ import annotations

import io
import os
import shutil
import tarfile

import numpy as np
import pytest
from helpers import padded

from pipeline.conversion.export import archive_module
from transforms.batching import BatchingConfig
from transforms.features import pad_batch
from transforms.model_handler import BertModelHandler
from transforms.model_loading import (
    TF1_HUB,
    TF2,
    LoadedBert,
    ModelConfig,
    ModelError,
    parse_tensor_names,
    resolve_model_path,
)
from transforms.records import Features

BATCH = padded([2, 60, 61, 62, 3], [0, 0, 0, 0, 0], 8)


def test_tf1_module_is_called_through_tokens_on_the_inference_graph(tf1_module):
    model = LoadedBert(ModelConfig(tf1_module))
    assert (model.format, model.entry, model.max_positions) == (TF1_HUB, "tokens", 128)
    first, second = model(BATCH), model(BATCH)
    # The module's "train" graph applies dropout: two calls would differ.
    np.testing.assert_array_equal(first["sequence_output"], second["sequence_output"])


def test_train_graph_exists_and_differs_so_the_test_above_can_fail(tf1_module):
    import tensorflow as tf

    graph = tf.Graph()
    with tf.compat.v1.Session(graph=graph) as session:
        meta = tf.compat.v1.saved_model.loader.load(session, ["train"], tf1_module)
        signature = meta.signature_def["tokens"]
        feeds = {signature.inputs[k].name: BATCH[k] for k in BATCH}
        fetch = signature.outputs["sequence_output"].name
        runs = [session.run(fetch, feed_dict=feeds) for _ in range(2)]
    assert not np.allclose(runs[0], runs[1])


def test_the_hub_exporters_placeholder_resolves_to_the_asset_the_signature_names(tf1_module, tmp_path):
    import tensorflow_hub as hub

    moved = shutil.copytree(tf1_module, tmp_path / "moved")
    # As TF Hub's exporter wrote google/bert_*: the signature gives only the placeholder.
    info = hub.load(str(moved)).signatures["tokenization_info"]()
    assert info["vocab_file"].numpy() == b"SAVEDMODEL-ASSET"
    os.rename(moved / "assets" / "vocab.txt", moved / "assets" / "bert_vocab.txt")
    _rename_asset(moved, "vocab.txt", "bert_vocab.txt")  # not found by a base-name rule
    model = LoadedBert(ModelConfig(str(moved)))
    vocab_path, lower = model.tokenizer_source()
    assert vocab_path == os.path.join(str(moved), "assets", "bert_vocab.txt")
    assert lower is True


def _rename_asset(module, old: str, new: str) -> None:
    """Renames the file that the module's saved_model_assets records name."""
    from tensorflow.core.protobuf import meta_graph_pb2

    from transforms.model_assets import ASSETS_COLLECTION, read_saved_model

    proto = read_saved_model(str(module))
    for meta_graph in proto.meta_graphs:
        for packed in meta_graph.collection_def[ASSETS_COLLECTION].any_list.value:
            asset = meta_graph_pb2.AssetFileDef()
            packed.Unpack(asset)
            assert asset.filename == old
            asset.filename = new
            packed.Pack(asset)
    (module / "saved_model.pb").write_bytes(proto.SerializeToString())


def test_a_vocab_path_baked_at_export_resolves_by_its_name_in_the_module_assets(
        tf1_module_baked_path, tmp_path):
    import tensorflow_hub as hub

    moved = shutil.copytree(tf1_module_baked_path, tmp_path / "moved")
    baked = hub.load(str(moved)).signatures["tokenization_info"]()["vocab_file"].numpy().decode()
    assert baked.endswith("vocab.txt") and not os.path.exists(baked)
    model = LoadedBert(ModelConfig(str(moved)))
    assert model.tokenizer_source() == (os.path.join(str(moved), "assets", "vocab.txt"), True)


def test_a_module_whose_vocab_asset_is_gone_asks_for_vocab_file(tf1_module, tmp_path):
    moved = shutil.copytree(tf1_module, tmp_path / "moved")
    os.remove(moved / "assets" / "vocab.txt")
    with pytest.raises(ModelError, match="names vocab file 'SAVEDMODEL-ASSET'.*Pass --vocab_file"):
        LoadedBert(ModelConfig(str(moved))).vocab_file()


def test_tf2_model_is_called_with_a_dict_and_declares_its_vocab(tf2_model, tf1_module):
    model = LoadedBert(ModelConfig(tf2_model))
    assert (model.format, model.entry) == (TF2, "__call__")
    vocab_path, lower = model.tokenizer_source()
    assert os.path.exists(vocab_path) and lower is True
    reference = LoadedBert(ModelConfig(tf1_module))(BATCH)
    np.testing.assert_allclose(model(BATCH)["pooled_output"], reference["pooled_output"], atol=1e-5)


def test_a_custom_signature_is_mapped_with_signature_tensors(tmp_path, model_config, model_weights):
    import tensorflow as tf

    from pipeline.conversion.reference_encoder import bert_forward

    spec = tf.TensorSpec([None, None], tf.int64)

    class FineTuned(tf.Module):
        def __init__(self):
            super().__init__()
            self.weights_ = {k: tf.Variable(v) for k, v in model_weights.items()}

        @tf.function(input_signature=[spec, spec, spec])
        def encode(self, ids, mask, types):
            pooled, sequence = bert_forward(self.weights_, model_config, ids, mask, types)
            return {"sentence": pooled, "tokens_out": sequence}

    module = FineTuned()
    path = str(tmp_path / "finetuned")
    tf.saved_model.save(module, path, signatures={"encode": module.encode})
    with pytest.raises(ModelError, match=r"no input for input_ids among \[.ids."):
        LoadedBert(ModelConfig(path, signature="encode"))
    mapping = parse_tensor_names(
        "input_ids=ids,input_mask=mask,segment_ids=types,pooled_output=sentence,sequence_output=tokens_out")
    model = LoadedBert(ModelConfig(path, signature="encode", tensor_names=mapping))
    outputs = model(BATCH)
    assert outputs["sequence_output"].shape == (1, 8, 32)
    assert model.tokenizer_source() == (None, None)


def test_unknown_signature_lists_what_the_model_has(tf1_module):
    with pytest.raises(ModelError,
                       match=r"(?s)nope: no such signature.*signature tokens: inputs \{input_ids: int32"):
        LoadedBert(ModelConfig(tf1_module, signature="nope"))


def test_parse_tensor_names_rejects_unknown_keys():
    with pytest.raises(ModelError, match="not one of"):
        parse_tensor_names("token_ids=x")
    with pytest.raises(ModelError, match="NAME=TENSOR"):
        parse_tensor_names("input_ids")


def test_missing_folder_is_not_a_saved_model(tmp_path):
    with pytest.raises(ModelError, match="not a SavedModel"):
        LoadedBert(ModelConfig(str(tmp_path)))


def test_tar_gz_archive_is_unpacked_into_the_hub_cache(tf1_module, tmp_path, monkeypatch):
    monkeypatch.setenv("TFHUB_CACHE_DIR", str(tmp_path / "cache"))
    archive = archive_module(tf1_module, str(tmp_path / "module.tar.gz"))
    resolved = resolve_model_path(archive)
    assert resolved.startswith(str(tmp_path / "cache"))
    assert os.path.exists(os.path.join(resolved, "tfhub_module.pb"))
    assert resolve_model_path(archive) == resolved  # unpacked once
    assert LoadedBert(ModelConfig(archive)).format == TF1_HUB


@pytest.mark.parametrize("name, kind", [("../escape.txt", tarfile.REGTYPE), ("/abs.txt", tarfile.REGTYPE),
                                        ("link", tarfile.SYMTYPE)])
def test_malicious_archives_are_refused(tmp_path, monkeypatch, name, kind):
    monkeypatch.setenv("TFHUB_CACHE_DIR", str(tmp_path / "cache"))
    archive = tmp_path / "evil.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        member = tarfile.TarInfo(name)
        member.type = kind
        if kind == tarfile.SYMTYPE:
            member.linkname = "/etc/passwd"
            tar.addfile(member)
        else:
            member.size = 4
            tar.addfile(member, io.BytesIO(b"evil"))
    with pytest.raises((tarfile.TarError, ModelError)):
        resolve_model_path(str(archive))
    assert not (tmp_path / "escape.txt").exists()


def test_handler_loads_once_and_results_do_not_depend_on_batch_mates(tf1_module):
    handler = BertModelHandler(ModelConfig(tf1_module), BatchingConfig(16, bucket_boundaries=()))
    model = handler.load_model()
    target = Features("t", np.array([2, 60, 61, 3], np.int32), np.zeros(4, np.int32))
    others = [Features(f"o{i}", np.array([2] + [50 + i] * (i + 3) + [3], np.int32),
                       np.zeros(i + 5, np.int32)) for i in range(5)]
    alone = handler.run_inference([target], model)[0]
    crowded = handler.run_inference(others[:2] + [target] + others[2:], model)[2]
    assert crowded.features is target and crowded.sequence_output.shape == (4, 32)
    np.testing.assert_allclose(alone.sequence_output, crowded.sequence_output, atol=1e-5)
    np.testing.assert_allclose(alone.pooled_output, crowded.pooled_output, atol=1e-5)
    direct = model(pad_batch([target], 16))
    np.testing.assert_allclose(alone.pooled_output, direct["pooled_output"][0], atol=1e-6)


def test_padding_to_a_length_bucket_does_not_change_real_token_outputs(tf1_module):
    model = LoadedBert(ModelConfig(tf1_module))
    batch = [Features(f"d{n}", np.array([2] + [40 + n] * n + [3], np.int32), np.zeros(n + 2, np.int32))
             for n in (1, 5, 9)]
    outputs = {}
    for boundaries in ((), (12,), (16, 32)):
        handler = BertModelHandler(ModelConfig(tf1_module), BatchingConfig(64, bucket_boundaries=boundaries))
        outputs[boundaries] = handler.run_inference(batch, model)
    assert BatchingConfig(64, (12,)).batch_padded_length(batch) == 12
    for results in (outputs[(12,)], outputs[(16, 32)]):
        for got, want in zip(results, outputs[()], strict=True):
            np.testing.assert_allclose(got.sequence_output, want.sequence_output, atol=1e-5)
            np.testing.assert_allclose(got.pooled_output, want.pooled_output, atol=1e-5)


def test_empty_rows_that_round_a_partial_batch_do_not_change_its_outputs(tf1_module, monkeypatch):
    model = LoadedBert(ModelConfig(tf1_module))
    batch = [Features(f"d{n}", np.array([2] + [40 + n] * n + [3], np.int32), np.zeros(n + 2, np.int32))
             for n in (1, 5, 9)]
    shapes = []
    calls = model.__call__
    monkeypatch.setattr(LoadedBert, "__call__", lambda self, arrays, *request: shapes.append(
        arrays["input_ids"].shape) or calls(arrays, *request))
    outputs = {}
    for rounded in (False, True):
        handler = BertModelHandler(ModelConfig(tf1_module), BatchingConfig(
            16, bucket_boundaries=(), max_batch_size=8, round_batch_rows=rounded))
        outputs[rounded] = handler.run_inference(batch, model)
    assert shapes == [(3, 16), (4, 16)]
    for got, want in zip(outputs[True], outputs[False], strict=True):
        assert got.features is want.features
        for name in ("sequence_output", "pooled_output"):
            np.testing.assert_allclose(getattr(got, name), getattr(want, name), atol=1e-5)


@pytest.mark.parametrize("fixture", ["tf1_module", "tf2_model"])
def test_xla_compiled_calls_stay_within_tolerance(request, fixture):
    path = request.getfixturevalue(fixture)
    plain = LoadedBert(ModelConfig(path))(BATCH)
    compiled = LoadedBert(ModelConfig(path, jit_compile=True))(BATCH)
    for key in ("pooled_output", "sequence_output"):
        np.testing.assert_allclose(compiled[key], plain[key], atol=1e-5)
