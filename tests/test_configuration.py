"""Misconfiguration fails before any work starts, with a message a user understands."""

from __future__ import annotations

import pytest
from helpers import write_jsonl

from pipeline.options import (
    BertBeamOptions,
    ConfigurationError,
    all_options_parser,
    parse_bool,
)
from pipeline.plan import prepare_run
from pipeline.run import main
from pipeline.workers import plan_workers


def _options(*argv: str) -> BertBeamOptions:
    return BertBeamOptions(list(argv))


@pytest.fixture()
def docs(tmp_path):
    return str(write_jsonl(tmp_path / "docs.jsonl", [{"id": "1", "text": "the dog"}]))


def _prepare(docs, model, tmp_path, *extra):
    return prepare_run(_options(f"--input={docs}", f"--output={tmp_path}/out/emb", f"--model={model}",
                                *extra))


def test_a_valid_configuration_resolves_the_model_tokenizer_and_hidden_size(docs, tf1_module, tmp_path):
    plan = _prepare(docs, tf1_module, tmp_path)
    assert plan.embedding.hidden_size == plan.output.hidden_size == 32
    assert plan.embedding.tokenizer.do_lower_case is True
    assert plan.input.files == 1
    assert plan.output.dead_letter_prefix == f"{tmp_path}/out/dead_letter/emb"


@pytest.mark.parametrize("extra, message", [
    (("--max_seq_length=129",), "over the model's limit of 128 positions"),
    (("--long_document=window", "--max_seq_length=16", "--doc_stride=15"), "doc_stride must be between 1"),
    (("--outputs=pooled,cls",), "--outputs must list"),
    (("--signature=serving",), "serving: no such signature or traced function"),
    (("--vocab_file=/nonexistent/vocab.txt",), "Cannot use vocab file"),
])
def test_bad_options_fail_fast(docs, tf1_module, tmp_path, extra, message):
    with pytest.raises(ConfigurationError, match=message):
        _prepare(docs, tf1_module, tmp_path, *extra)


def test_vocab_file_overrides_a_model_whose_own_vocab_cannot_be_found(docs, tf1_module, tmp_path):
    import shutil

    moved = shutil.copytree(tf1_module, tmp_path / "moved")
    vocab = shutil.move(moved / "assets" / "vocab.txt", tmp_path / "my_vocab.txt")
    with pytest.raises(ConfigurationError, match="Pass --vocab_file"):
        _prepare(docs, str(moved), tmp_path)
    plan = _prepare(docs, str(moved), tmp_path, f"--vocab_file={vocab}")
    assert plan.embedding.tokenizer.do_lower_case is True and len(plan.embedding.tokenizer.vocab_lines) > 100


def test_a_parquet_file_read_as_text_fails_fast_and_read_as_parquet_is_checked_for_its_columns(
        tf1_module, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "docs.parquet"
    pq.write_table(pa.table({"id": ["1"], "body": ["the dog"]}), path)
    with pytest.raises(ConfigurationError, match=r"--input '.*docs.parquet' is a binary file \(Parquet, "
                       r"magic PAR1\), not text, JSON Lines or CSV; read Parquet with "
                       r"--input_format parquet\."):
        _prepare(str(path), tf1_module, tmp_path, "--input_format=text")
    with pytest.raises(ConfigurationError, match=r"has no column 'text' \(--text_field\); its columns are "
                       r"'id', 'body'"):
        _prepare(str(path), tf1_module, tmp_path)
    assert _prepare(str(path), tf1_module, tmp_path, "--text_field=body").input.config.input_format is None


def test_no_matching_input(tf1_module, tmp_path):
    with pytest.raises(ConfigurationError, match="No file matches"):
        _prepare(str(tmp_path / "missing-*.jsonl"), tf1_module, tmp_path)


def test_missing_model(docs, tmp_path):
    with pytest.raises(ConfigurationError, match="Cannot resolve model .*no-model.* does not exist"):
        _prepare(docs, str(tmp_path / "no-model"), tmp_path)


def test_unwritable_output(docs, tf1_module, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the output folder should be")
    with pytest.raises(ConfigurationError, match="Cannot write"):
        prepare_run(_options(f"--input={docs}", f"--output={blocker}/emb", f"--model={tf1_module}"))


def test_a_vocab_larger_than_the_models_embedding_table_fails_fast(docs, tf1_module, tmp_path, vocab_lines):
    big_vocab = tmp_path / "vocab.txt"
    big_vocab.write_text("\n".join(list(vocab_lines) + [f"extra{i}" for i in range(50)]) + "\n")
    with pytest.raises(ConfigurationError, match=f"has {len(vocab_lines) + 50} tokens but the model's word "
                       f"embedding table has {len(vocab_lines)} rows"):
        _prepare(docs, tf1_module, tmp_path, f"--vocab_file={big_vocab}")


def test_a_vocab_beyond_an_unreadable_table_fails_the_probe_naming_the_vocabulary(
        docs, tf1_module, tmp_path, vocab_lines, monkeypatch):
    from transforms import model_loading

    monkeypatch.setattr(model_loading, "vocab_limit", lambda path: None)
    big_vocab = tmp_path / "vocab.txt"
    big_vocab.write_text("\n".join(list(vocab_lines) + [f"extra{i}" for i in range(50)]) + "\n")
    with pytest.raises(ConfigurationError, match="(?s)probe batch.*The vocabulary does not fit.*"
                       "called as signature tokens.*Its callables:\n  signature"):
        _prepare(docs, tf1_module, tmp_path, f"--vocab_file={big_vocab}")


def test_the_launcher_frees_the_model_it_loaded_for_the_checks(docs, tf1_module, tmp_path, monkeypatch):
    import weakref

    from transforms.model_loading import LoadedBert

    loaded = []
    original_init = LoadedBert.__init__

    def tracked_init(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        loaded.append(weakref.ref(self))

    monkeypatch.setattr(LoadedBert, "__init__", tracked_init)
    plan = _prepare(docs, tf1_module, tmp_path)
    assert plan.embedding.hidden_size > 0 and len(loaded) == 1
    assert loaded[0]() is None, "the plan's model copy is still alive during the run"


def test_batch_rows_are_rounded_by_default_only_with_xla(docs, tf1_module, tmp_path):
    def rounded(*flags: str) -> bool:
        return _prepare(docs, tf1_module, tmp_path, *flags).embedding.batching.round_batch_rows

    assert rounded() is False
    assert rounded("--jit_compile") is True
    assert rounded("--jit_compile", "--round_batch_rows=false") is False
    assert rounded("--round_batch_rows") is True


def test_required_flags(tf1_module):
    with pytest.raises(ConfigurationError, match="--input is required"):
        prepare_run(_options(f"--model={tf1_module}", "--output=/tmp/x"))


def test_booleans_are_parsed_not_truthy():
    assert parse_bool("False") is False and parse_bool("true") is True
    assert _options("--large_model=false").large_model is False
    assert _options("--large_model").large_model is True
    assert _options("--do_lower_case=False").do_lower_case is False


def test_main_exits_2_with_a_message(tmp_path, tf1_module, capsys):
    status = main([f"--input={tmp_path}/none.txt", f"--output={tmp_path}/o", f"--model={tf1_module}"])
    assert status == 2
    assert "bert-beam: error: No file matches" in capsys.readouterr().err


def test_unknown_flags_are_an_error_not_a_silent_default(tmp_path, tf1_module, capsys):
    status = main([f"--input={tmp_path}/x", f"--output={tmp_path}/o", "--max_seq_lenght=64"])
    assert status == 2
    assert "Unknown flag(s): --max_seq_lenght=64" in capsys.readouterr().err


def test_help_lists_bert_beam_and_beam_flags():
    text = all_options_parser().format_help()
    for flag in ("--input", "--output", "--model", "--max_seq_length", "--id_field", "--text_field",
                 "--text_b_field", "--long_document", "--doc_stride", "--vocab_file", "--do_lower_case",
                 "--outputs", "--dead_letter", "--compression", "--signature", "--signature_tensors",
                 "--runner", "--direct_num_workers"):
        assert flag in text


def test_tf_threads_split_the_cores_between_local_worker_processes_that_each_hold_a_model(monkeypatch):
    from apache_beam.options.pipeline_options import PipelineOptions

    monkeypatch.setattr("os.cpu_count", lambda: 8)
    multi = ("--direct_num_workers=2", "--direct_running_mode=multi_processing")

    def threads(*argv: str) -> int:
        return plan_workers(PipelineOptions(list(argv))).tf_threads

    assert threads(*multi) == 4
    assert threads("--runner=DirectRunner", "--direct_num_workers=3", multi[1]) == 2
    assert threads("--direct_num_workers=16", "--direct_running_mode=multi_processing") == 1
    assert threads(*multi, "--large_model") == 0  # one shared copy serves both processes: every core
    assert threads(*multi, "--model_copies=1") == 0
    assert threads("--direct_num_workers=2") == 0  # threads in one process share TensorFlow's pools
    assert threads(*multi, "--runner=DataflowRunner") == 0
    assert threads(*multi, "--tf_threads=0") == 0
    assert threads("--tf_threads=3") == 3
    with pytest.raises(SystemExit):
        BertBeamOptions(["--tf_threads=-1"]).tf_threads  # noqa: B018 - parsing raises


def test_tf_threads_reach_tensorflow_in_a_fresh_worker_process():
    import subprocess
    import sys

    probe = ("import tensorflow as tf; from transforms.devices import configure_threads; "
             "configure_threads(3); tf.constant(1.0) + 1; c = tf.config.threading; "
             "print(c.get_intra_op_parallelism_threads(), c.get_inter_op_parallelism_threads())")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert result.stdout.split() == ["3", "3"], result.stderr[-2000:]
