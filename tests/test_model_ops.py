"""Models are programs: every model the project exports passes the op check, hostile ones are refused
before they run, in the launcher and on a worker, and ``--allow_model_ops`` accepts named ops."""

from __future__ import annotations

import logging
import os

import pytest
from conftest import cached_model
from helpers import write_jsonl
from model_variants import VARIANTS

from pipeline.conversion.export import TF1_MODULE_DEF
from pipeline.conversion.reference_encoder import bert_forward
from pipeline.run import main
from transforms.batching import BatchingConfig
from transforms.model_assets import read_saved_model
from transforms.model_handler import BertModelHandler
from transforms.model_loading import LoadedBert, ModelConfig, ModelError
from transforms.model_ops import ENCODER_OPS, LOADING_OPS, called_ops, loading_ops, parse_op_names, refusal

# File, summary, debug, queue, reader, dataset, table, Python and network ops: none is ever allowed.
# (TensorFlow has no DeleteFile op: tf.io.gfile.remove is Python, outside any graph.)
UNNEEDED_OPS = (
    "WriteFile", "ReadFile", "MatchingFiles", "SaveV2", "MergeV2Checkpoints", "Print", "PrintV2",
    "CreateSummaryFileWriter", "SummaryWriter", "WriteSummary", "WriteScalarSummary", "FlushSummaryWriter",
    "DebugIdentityV2", "DebugNumericSummaryV2", "FIFOQueueV2", "QueueEnqueueV2", "WholeFileReaderV2",
    "ReaderReadV2", "TFRecordDataset", "MatchingFilesDataset", "InitializeTableFromTextFileV2",
    "ImmutableConst", "PyFunc", "EagerPyFunc", "RemoteCall", "CollectiveReduceV2",
)
INPUT_NAMES = ("input_ids", "input_mask", "segment_ids")


def test_the_allowlists_name_tensorflow_ops_and_none_that_reach_outside_the_graph():
    import tensorflow as tf

    assert [op for op in LOADING_OPS if not hasattr(tf.raw_ops, op)] == []
    assert [op for op in UNNEEDED_OPS if not hasattr(tf.raw_ops, op)] == []
    assert set(UNNEEDED_OPS).isdisjoint(LOADING_OPS)
    assert "RestoreV2" in LOADING_OPS and "RestoreV2" not in ENCODER_OPS  # the saver's, at load only


@pytest.mark.parametrize("fixture", ["tf1_module", "tf1_module_baked_path", "tf2_model"])
def test_the_project_exports_pass_and_the_walk_sees_their_encoder(request, fixture):
    path = request.getfixturevalue(fixture)
    model = LoadedBert(ModelConfig(path))
    called = called_ops(model.called_functions())
    loading = loading_ops(read_saved_model(path))
    assert refusal(called, ENCODER_OPS, ()) is None
    assert refusal(loading, LOADING_OPS, ()) is None
    entry = "signature tokens" if fixture.startswith("tf1") else "function __call__"
    assert called[entry]["BatchMatMulV2"] > 0 and called[entry]["Softmax"] > 0
    if fixture.startswith("tf1"):
        assert "signature tokenization_info" in called
        assert loading["restore op"]["RestoreV2"] > 0


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_every_call_convention_passes(name, model_weights, model_config, vocab_lines):
    variant = VARIANTS[name]
    path = cached_model(f"variant-{variant.name}",
                        lambda target: variant.build(model_weights, model_config, vocab_lines, target))
    signature = next((f.split("=", 1)[1] for f in variant.flags if f.startswith("--signature=")), None)
    model = LoadedBert(ModelConfig(path, signature=signature))
    assert refusal(called_ops(model.called_functions()), ENCODER_OPS, ()) is None
    assert refusal(loading_ops(read_saved_model(path)), LOADING_OPS, ()) is None


# --- hostile models, built with project code -------------------------------------------------------

def _write_tf1_module(path: str, weights, config, vocab_lines, *, tokens=None, info=None, init=None) -> str:
    """A TF1 Hub module of the tiny BERT (``tokens`` and ``tokenization_info``), with hostile ops:
    ``tokens(pooled)`` and ``info(vocab_path)`` rewrite a signature's output, ``init()`` is the init op."""
    import tensorflow as tf

    v1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default():
        variables = {name: v1.get_variable(name, initializer=value) for name, value in weights.items()}
        inputs = {name: v1.placeholder(tf.int32, [None, None], name=name) for name in INPUT_NAMES}
        pooled, sequence = bert_forward(variables, config, *inputs.values())
        vocab = tf.constant(os.path.join(path, "assets", "vocab.txt"))
        pooled, vocab = tokens(pooled) if tokens else pooled, info(vocab) if info else vocab
        build = v1.saved_model.signature_def_utils.build_signature_def
        tensor = v1.saved_model.utils.build_tensor_info
        signatures = {
            "tokens": build({name: tensor(t) for name, t in inputs.items()},
                            {"pooled_output": tensor(pooled), "sequence_output": tensor(sequence)}),
            "tokenization_info": build({}, {"vocab_file": tensor(vocab),
                                            "do_lower_case": tensor(tf.constant(True))}),
        }
        with v1.Session(graph=graph) as session:
            session.run(v1.global_variables_initializer())
            builder = v1.saved_model.Builder(path)
            builder.add_meta_graph_and_variables(session, [], signature_def_map=signatures,
                                                 main_op=init() if init else None)
            builder.save()
    os.makedirs(os.path.join(path, "assets"))
    with open(os.path.join(path, "assets", "vocab.txt"), "w", encoding="utf-8") as handle:
        handle.write("\n".join(vocab_lines) + "\n")
    with open(os.path.join(path, "tfhub_module.pb"), "wb") as handle:
        handle.write(TF1_MODULE_DEF)
    return path


def _write_tf2_model(path: str, weights, config, *, hidden=None, resource_init=None) -> str:
    """A TF2 model of the tiny BERT whose ``__call__`` passes its pooled output through a nested
    tf.function ``hidden(pooled)``; ``resource_init()`` runs in a resource's initializer at load."""
    import tensorflow as tf

    class Resource(tf.saved_model.experimental.TrackableResource):
        def _create_resource(self):
            return tf.raw_ops.VarHandleOp(dtype=tf.float32, shape=[], shared_name="hostile")

        def _initialize(self):
            resource_init()
            return tf.raw_ops.AssignVariableOp(resource=self.resource_handle, value=1.0)

    module = tf.Module()
    module.bert_weights = {name: tf.Variable(value) for name, value in weights.items()}
    if resource_init:
        module.resource = Resource()
    nested = tf.function(hidden or tf.identity)
    spec = tf.TensorSpec([None, None], tf.int32)

    @tf.function(input_signature=[{"input_word_ids": spec, "input_mask": spec, "input_type_ids": spec}])
    def call(inputs):
        pooled, sequence = bert_forward(module.bert_weights, config, inputs["input_word_ids"],
                                        inputs["input_mask"], inputs["input_type_ids"])
        return {"pooled_output": nested(pooled), "sequence_output": sequence}

    module.__call__ = call
    tf.saved_model.save(module, path)
    return path


def _after_write(target: str):
    """Makes a tensor wait for a WriteFile: it runs on every call and changes no value."""
    def rewrite(tensor):
        import tensorflow as tf

        with tf.control_dependencies([tf.io.write_file(target, "written by the model")]):
            return tf.identity(tensor)
    return rewrite


def _plus_file_length(target: str):
    """Adds 0 × the length of a file the model reads: its contents flow into the output."""
    def rewrite(tensor):
        import tensorflow as tf

        return tensor + 0.0 * tf.cast(tf.strings.length(tf.io.read_file(target)), tensor.dtype)
    return rewrite


def _print_to_file_in_a_loop(target: str):
    def rewrite(tensor):
        import tensorflow as tf

        def body(step):
            tf.print("written by the model", output_stream=f"file://{target}")
            return step + 1

        steps = tf.while_loop(lambda step: step < 1, body, [tf.constant(0)])
        return tensor + 0.0 * tf.cast(steps, tensor.dtype)
    return rewrite


def _listing_in_a_branch(target: str):
    def rewrite(tensor):
        import tensorflow as tf

        count = tf.cond(tf.reduce_sum(tensor) > -1e30, lambda: tf.size(tf.io.matching_files(f"{target}*")),
                        lambda: tf.constant(0))
        return tensor + 0.0 * tf.cast(count, tensor.dtype)
    return rewrite


def _summary_events(target: str):
    def rewrite(tensor):
        import tensorflow as tf

        # Raw ops: tf.summary's writer would be created outside the traced function.
        writer = tf.raw_ops.SummaryWriter(shared_name="hostile")
        tf.raw_ops.CreateSummaryFileWriter(writer=writer, logdir=target, max_queue=1, flush_millis=0,
                                           filename_suffix=".v2")
        tf.raw_ops.WriteScalarSummary(writer=writer, step=0, tag="pooled", value=tf.reduce_sum(tensor))
        tf.raw_ops.FlushSummaryWriter(writer=writer)
        return tensor
    return rewrite


def _write_now(target: str):
    def write():
        import tensorflow as tf

        return tf.io.write_file(target, "written by the model")
    return write


TF1_ATTACKS = {  # name → (how the module is rewritten, where the check finds it, the op it names)
    "write_file_as_a_control_dependency": (lambda t: {"tokens": _after_write(t)}, "signature tokens",
                                           "WriteFile"),
    "read_file_into_the_output": (lambda t: {"tokens": _plus_file_length(t)}, "signature tokens", "ReadFile"),
    "write_file_in_tokenization_info": (lambda t: {"info": _after_write(t)}, "signature tokenization_info",
                                        "WriteFile"),
    "write_file_in_the_init_op": (lambda t: {"init": _write_now(t)}, "init op", "WriteFile"),
}
TF2_ATTACKS = {
    "write_file_in_a_nested_function": (lambda t: {"hidden": _after_write(t)}, "function __call__",
                                         "WriteFile"),
    "print_to_a_file_in_a_while_body": (lambda t: {"hidden": _print_to_file_in_a_loop(t)},
                                        "function __call__", "PrintV2"),
    "matching_files_in_an_if_branch": (lambda t: {"hidden": _listing_in_a_branch(t)}, "function __call__",
                                       "MatchingFiles"),
    "summary_writer": (lambda t: {"hidden": _summary_events(t)}, "function __call__",
                       "CreateSummaryFileWriter"),
    "write_file_in_a_resource_initializer": (lambda t: {"resource_init": _write_now(t)},
                                             "resource function", "WriteFile"),
}


def _hostile_model(attack: str, tmp_path, weights, config, vocab_lines) -> tuple[str, str, str, str]:
    """Builds the attack's model; returns its path, the file it touches, where it is found, its op."""
    target = str(tmp_path / "touched-by-the-model")
    if attack in TF1_ATTACKS:
        rewrites, where, op = TF1_ATTACKS[attack]
        if op == "ReadFile":
            with open(target, "w", encoding="utf-8") as handle:
                handle.write("a secret")
        path = _write_tf1_module(str(tmp_path / "model"), weights, config, vocab_lines, **rewrites(target))
    else:
        rewrites, where, op = TF2_ATTACKS[attack]
        path = _write_tf2_model(str(tmp_path / "model"), weights, config, **rewrites(target))
    assert os.path.exists(target) is (op == "ReadFile")  # building the model touched nothing
    return path, target, where, op


def _run(tmp_path, vocab_lines, model: str, *flags: str) -> int:
    docs = write_jsonl(tmp_path / "docs.jsonl", [{"id": "1", "text": "the dog is hairy"}])
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(vocab_lines) + "\n", encoding="utf-8")
    return main([f"--input={docs}", f"--output={tmp_path}/out/emb", f"--model={model}",
                 f"--vocab_file={vocab}", "--do_lower_case=true", "--max_seq_length=16", *flags])


@pytest.mark.parametrize("attack", [*TF1_ATTACKS, *TF2_ATTACKS])
def test_a_hostile_model_is_refused_with_status_2_before_it_runs(attack, tmp_path, model_weights,
                                                                model_config, vocab_lines, capsys):
    path, target, where, op = _hostile_model(attack, tmp_path, model_weights, model_config, vocab_lines)
    assert _run(tmp_path, vocab_lines, path) == 2
    error = capsys.readouterr().err
    assert f"bert-beam: error: The model's {where} runs operations a BERT never needs: " in error
    assert f"{op} (" in error and f"pass --allow_model_ops {op}" in error
    if op != "ReadFile":
        assert not os.path.exists(target)  # not by the loading, not by the probe batch
    assert not list((tmp_path / "out").glob("emb*"))


def test_a_worker_refuses_a_hostile_model_before_its_first_batch(tmp_path, model_weights, model_config,
                                                                vocab_lines):
    path, target, _, _ = _hostile_model("write_file_as_a_control_dependency", tmp_path, model_weights,
                                        model_config, vocab_lines)
    handler = BertModelHandler(ModelConfig(path), BatchingConfig(16, bucket_boundaries=()))
    with pytest.raises(ModelError, match=r"signature tokens runs operations a BERT never needs: WriteFile"):
        handler.load_model()
    assert not os.path.exists(target)


def test_allow_model_ops_accepts_the_named_ops_and_logs_that_it_did(tmp_path, model_weights, model_config,
                                                                   vocab_lines, caplog):
    path, target, _, _ = _hostile_model("write_file_as_a_control_dependency", tmp_path, model_weights,
                                        model_config, vocab_lines)
    with caplog.at_level(logging.WARNING):
        assert _run(tmp_path, vocab_lines, path, "--allow_model_ops=WriteFile") == 0
    assert "The model's signature tokens runs WriteFile (1), which --allow_model_ops accepts." in caplog.text
    assert os.path.exists(target)  # the model did run its WriteFile: only the check stood in its way
    assert list((tmp_path / "out").glob("emb-*.tfrecord"))


def test_allow_model_ops_accepts_only_what_it_names(tmp_path, model_weights, model_config, vocab_lines):
    path, target, _, _ = _hostile_model("read_file_into_the_output", tmp_path, model_weights, model_config,
                                        vocab_lines)
    with pytest.raises(ModelError, match=r"ReadFile \(1\), StringLength \(1\)\. .*--allow_model_ops "
                                         r"ReadFile,StringLength to accept"):
        LoadedBert(ModelConfig(path, allow_model_ops=("WriteFile",)))
    assert LoadedBert(ModelConfig(path, allow_model_ops=("ReadFile", "StringLength"))).entry == "tokens"


def test_allow_model_ops_names_must_be_tensorflow_ops(tmp_path, tf1_module, vocab_lines, capsys):
    assert parse_op_names(" WriteFile, ReadFile,WriteFile ") == ("WriteFile", "ReadFile")
    assert _run(tmp_path, vocab_lines, tf1_module, "--allow_model_ops=Writefile") == 2
    assert ("bert-beam: error: --allow_model_ops names Writefile: TensorFlow has no such operation"
            in capsys.readouterr().err)
