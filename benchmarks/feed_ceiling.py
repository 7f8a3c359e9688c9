"""Feed ceiling: bert-beam end to end around a BERT-Large-shaped model that computes almost nothing.

The model, a TF1 Hub module built here once and cached under ``.cache/bench``, has BERT-Large's
interface and output shapes (H=1024, 512 positions, the all-MiniLM-L6-v2 vocab of 30522 wordpieces)
but only looks up embeddings: ``sequence_output`` is word + position + segment embeddings,
``pooled_output`` the tanh of its [CLS] row. What is left is what the pipeline costs around a model
(read, tokenize, batch, move outputs, encode, write): the rate at which it could feed a fast GPU.

The corpus is real prose (``truncation.real_prose``) cut into documents of lognormal length (median
~100 wordpieces, p90 ~800, a tail to ~10,000), one per line in 4 files. Each configuration
(max_seq_length × outputs × processes) runs ``pipeline.run.run`` on N and on 3N documents; the
marginal rate (difference of times and of real tokens) cancels start-up. N is ``--documents`` for one
process at 128, scaled at other lengths to about as many marginal real tokens, and doubled for two
processes. Processes: one in-process worker; two worker processes (``--direct_num_workers 2
--direct_running_mode multi_processing``) each with its own model copy; the same with
``--large_model`` (one copy, called through Beam's multi-process proxy). A 2-process run starts in
~17 s on 2 cores and this VM's speed drifts between runs, so each configuration runs ``--pairs``
interleaved N/3N pairs (pooled, each pair's rate shown), and by default (without ``--all``) the
2-process modes run only the targets' configuration, pooled,sequence float32 at 128. Runs write to
tmpfs where there is one (``/dev/shm``): the figures are then the CPU's, not the local disk's (on
Dataflow shards stream to Cloud Storage).

Where a worker process's time goes comes from two sources, labelled as such:

* counters, marginal, averaged over the worker processes: Beam's own per-step execution time (its
  state sampler's msecs per PTransform, sampled every ≤ 200 ms) and bert-beam's ``batch_latency_ms``
  (the model call; with ``--large_model`` it includes the proxy round trip);
* stage timings, in this process on the one-process marginal's documents: ``parse_record``,
  ``document_features``, length buckets and ``pad_batch``, the ``LoadedBert`` call, the per-record
  output slices, a call through Beam's ``MultiProcessShared`` proxy (as the handler makes it, through
  shared memory), ``ExampleEncoder.encode_parts`` and the shard sink's record writer.

    .venv/bin/python benchmarks/feed_ceiling.py [--quick] [--documents N] [--seq_lengths 128,512]
        [--outputs float32,bfloat16,mean] [--modes one,separate,shared] [--all] [--pairs P]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import glob
import hashlib
import inspect
import io
import os
import resource
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import cached_models
import numpy as np
import synthetic_text
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions
from pipeline_runs import RecordingPipeline
from results import Report, save_json
from truncation import minilm_vocab, real_prose

from pipeline.conversion import export
from pipeline.inputs.sources import InputConfig, parse_record
from pipeline.outputs.encoding import ExampleEncoder
from pipeline.outputs.shard_sink import SummingFile, write_record
from pipeline.outputs.sinks import default_dead_letter_prefix
from pipeline.run import run
from transforms import counters
from transforms.batching import BatchingConfig
from transforms.features import FeatureConfig, document_features, pad_batch
from transforms.model_loading import LoadedBert, ModelConfig
from transforms.model_outputs import OutputRequest
from transforms.records import Document, Embedding, Features
from transforms.shared_outputs import OutputBlock
from transforms.tokenization import FullTokenizer, read_vocab_file

HIDDEN = 1024
POSITIONS = 512
FILES = 4
# Document lengths in characters: median ~100 wordpieces, p90 ~760, as the real corpus.
MEDIAN_CHARS = 480
SIGMA = 1.55
MAX_CHARS = 40_000
TARGET_TOKENS_PER_SECOND = 150_000
TARGET_SHARED_RATIO = 0.9
_EXECUTION_MSECS = "metric:ptransform_execution_time:total_msecs:v1"  # Beam's name of the urn
_PROXY_SAMPLE = 3  # every third batch goes through the proxy in the stage timings
_COMMON_STAGES = ("read", "tokenize", "batch", "model_call", "slice")
_TMPFS = "/dev/shm"

WORD, SEGMENT, POSITION = (f"bert/embeddings/{name}_embeddings"
                            for name in ("word", "token_type", "position"))


@dataclass(frozen=True)
class Outputs:
    """One ``--outputs`` choice, as flags and as the encoder's arguments."""

    label: str
    outputs: tuple[str, ...]
    sequence_dtype: str

    @property
    def flags(self) -> tuple[str, ...]:
        return (f"--outputs={','.join(self.outputs)}", f"--sequence_dtype={self.sequence_dtype}")


@dataclass(frozen=True)
class Mode:
    """How many workers run, and whether they share one model copy. A worker is a process, or in
    ``threads`` a harness thread of one process (Dataflow's ``no_use_multiple_sdk_containers``:
    one SDK process per VM, one model copy, several threads); figures "per worker process" are
    then per thread."""

    label: str
    processes: int
    flags: tuple[str, ...]


OUTPUTS = {
    "float32": Outputs("pooled,sequence float32", ("pooled", "sequence"), "float32"),
    "bfloat16": Outputs("pooled,sequence bfloat16", ("pooled", "sequence"), "bfloat16"),
    "mean": Outputs("pooled,mean", ("pooled", "mean"), "float32"),
}
_TWO = ("--direct_num_workers=2", "--direct_running_mode=multi_processing")
MODES = {
    "one": Mode("1 process", 1, ()),
    "separate": Mode("2 processes, own copies", 2, _TWO),
    "shared": Mode("2 processes, --large_model", 2, (*_TWO, "--large_model")),
    "threads": Mode("1 process, 2 threads", 2,
                    ("--direct_num_workers=2", "--direct_running_mode=multi_threading")),
}
# Beam step names (prefixes) → the stage they belong to; the rest are "other steps".
_STAGES = (
    ("ReadDocuments", "read"),
    ("EmbedDocuments/Tokenize", "tokenize"),
    ("EmbedDocuments/BatchByLength", "batch"),
    ("EmbedDocuments/RunInference", "run_inference"),
    ("WriteEmbeddings/EncodeExamples", "encode"),
    ("WriteEmbeddings/BatchForEncoding", "encode"),
    ("WriteEmbeddings/WriteTFRecords", "write"),
)


def export_feed_ceiling_module(vocab_lines: Sequence[str], output_dir: str, seed: int = 0) -> str:
    """Writes a TF1 Hub module of BERT-Large's shape whose outputs are embedding lookups only.

    Signatures ``tokens`` and ``tokenization_info`` and the vocab asset are laid out as
    ``pipeline.conversion.export.export_tf1_hub_module`` writes them; ``input_mask`` is taken and unused
    (the pipeline keeps only the real tokens' rows).
    """
    import tensorflow as tf

    v1 = tf.compat.v1
    rng = np.random.default_rng(seed)
    shapes = {WORD: (len(vocab_lines), HIDDEN), SEGMENT: (2, HIDDEN), POSITION: (POSITIONS, HIDDEN)}
    weights = {name: rng.normal(0.0, 0.02, shape).astype(np.float32) for name, shape in shapes.items()}
    with tempfile.TemporaryDirectory() as staging:
        exporter_vocab = os.path.join(staging, "vocab.txt")
        export._write_vocab(vocab_lines, exporter_vocab)
        graph = tf.Graph()
        with graph.as_default():
            variables = {name: v1.get_variable(name, shape=shape, dtype=tf.float32,
                                               initializer=v1.zeros_initializer())
                         for name, shape in shapes.items()}
            inputs = {name: v1.placeholder(tf.int32, [None, None], name=name)
                      for name in ("input_ids", "input_mask", "segment_ids")}
            length = tf.shape(inputs["input_ids"])[1]
            sequence = (tf.gather(variables[WORD], inputs["input_ids"])
                        + tf.gather(variables[SEGMENT], inputs["segment_ids"])
                        + variables[POSITION][tf.newaxis, :length, :])
            pooled = tf.tanh(sequence[:, 0, :])
            info = {"vocab_file": tf.constant(exporter_vocab, name="vocab_file"),
                    "do_lower_case": tf.constant(True, name="do_lower_case")}
            build = v1.saved_model.signature_def_utils.build_signature_def
            info_of = v1.saved_model.utils.build_tensor_info
            signatures = {
                "tokens": build({k: info_of(t) for k, t in inputs.items()},
                                {"pooled_output": info_of(pooled), "sequence_output": info_of(sequence)}),
                "tokenization_info": build({}, {k: info_of(t) for k, t in info.items()}),
            }
            with v1.Session(graph=graph) as session:
                session.run(v1.global_variables_initializer())
                for name, variable in variables.items():
                    variable.load(weights[name], session)
                builder = v1.saved_model.Builder(output_dir)
                builder.add_meta_graph_and_variables(session, [], signature_def_map=signatures,
                                                     strip_default_attrs=True)
                builder.save()
    os.makedirs(os.path.join(output_dir, "assets"), exist_ok=True)
    export._write_vocab(vocab_lines, os.path.join(output_dir, "assets", "vocab.txt"))
    export._record_assets_as_hub_exporter(output_dir)
    with open(os.path.join(output_dir, "tfhub_module.pb"), "wb") as handle:
        handle.write(export.TF1_MODULE_DEF)
    return output_dir


def feed_ceiling_module(vocab_lines: Sequence[str]) -> str:
    """The cached module; its name's digest covers the vocab and the exporter code."""
    digest = hashlib.sha256("\n".join(vocab_lines).encode("utf-8"))
    digest.update(inspect.getsource(export_feed_ceiling_module).encode())
    digest.update(inspect.getsource(export).encode())
    target = cached_models.CACHE / f"feed-ceiling-tf1_hub-{digest.hexdigest()[:12]}"
    if not target.exists():
        staging = cached_models.CACHE / f".{target.name}.{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        print(f"building {target.name} (exported once, then cached) ...", flush=True)
        export_feed_ceiling_module(vocab_lines, str(staging))
        os.replace(staging, target)
    return str(target)


def long_tailed_texts(n: int, seed: int = 0) -> list[str]:
    """``n`` one-line documents of real prose with lognormal character counts, each from its own start."""
    prose = " ".join(real_prose().split())
    cycled = prose * (MAX_CHARS // len(prose) + 2)
    rng = np.random.default_rng(seed)
    lengths = np.clip(np.exp(rng.normal(np.log(MEDIAN_CHARS), SIGMA, n)), 20, MAX_CHARS).astype(int)
    texts = []
    for length in lengths:
        start = cycled.find(" ", int(rng.integers(len(prose)))) + 1
        texts.append(cycled[start : start + int(length)])
    return texts


class Corpus:
    """The benchmark's documents; the first ``count`` of them as FILES text files, written once."""

    def __init__(self, folder: str, texts: list[str]) -> None:
        self.folder = folder
        self.texts = texts
        self._patterns: dict[int, str] = {}

    def first(self, count: int) -> str:
        """The glob pattern of files holding the first ``count`` documents, one per line."""
        if count not in self._patterns:
            folder = os.path.join(self.folder, f"first-{count}")
            shutil.rmtree(folder, ignore_errors=True)
            os.makedirs(folder)
            for index in range(FILES):
                synthetic_text.write_corpus(os.path.join(folder, f"part-{index}.txt"),
                                            self.texts[index:count:FILES])
            self._patterns[count] = os.path.join(folder, "part-*.txt")
        return self._patterns[count]


def output_folder() -> str:
    """Where the runs write: tmpfs when there is room, so that the figures are the CPU's and not this
    disk's (on Dataflow shards stream to Cloud Storage); each run's shards go once measured."""
    if os.path.isdir(_TMPFS) and shutil.disk_usage(_TMPFS).free > 16 * 1024**3:
        return os.path.join(_TMPFS, f"bert-beam-feed-ceiling-{os.getpid()}")
    return cached_models.cache_dir("feed_ceiling", "out")


@dataclass(frozen=True)
class PipelineRun:
    """One finished run: wall and CPU time, counters, per-stage msecs and output size."""

    seconds: float
    cpu_seconds: float
    system_seconds: float  # of cpu_seconds, in the kernel (page faults, copies into files)
    counters: dict[str, int]
    model_call_ms: int
    stage_ms: dict[str, int]
    output_bytes: int

    def __sub__(self, other: PipelineRun) -> PipelineRun:
        return self._combine(other, -1)

    def __add__(self, other: PipelineRun) -> PipelineRun:
        return self._combine(other, 1)

    def _combine(self, other: PipelineRun, sign: int) -> PipelineRun:
        def merge(mine: dict[str, int], theirs: dict[str, int]) -> dict[str, int]:
            return {k: mine.get(k, 0) + sign * theirs.get(k, 0) for k in set(mine) | set(theirs)}

        return PipelineRun(
            self.seconds + sign * other.seconds, self.cpu_seconds + sign * other.cpu_seconds,
            self.system_seconds + sign * other.system_seconds, merge(self.counters, other.counters),
            self.model_call_ms + sign * other.model_call_ms, merge(self.stage_ms, other.stage_ms),
            self.output_bytes + sign * other.output_bytes,
        )


def _cpu_seconds() -> tuple[float, float]:
    """CPU and kernel CPU seconds of this process and its finished children (the worker processes)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    system = own.ru_stime + children.ru_stime
    return own.ru_utime + children.ru_utime + system, system


def _stage_of(step: str) -> str:
    return next((stage for prefix, stage in _STAGES if step.startswith(prefix)), "other steps")


def _stage_msecs(result) -> dict[str, int]:
    """Beam's execution time per step (its state sampler), summed by stage over the workers."""
    totals: dict[str, int] = {}
    for counter in result.monitoring_metrics().query()["counters"]:
        if counter.key.metric.name == _EXECUTION_MSECS:
            stage = _stage_of(counter.key.step)
            value = counter.committed if counter.committed is not None else counter.attempted
            totals[stage] = totals.get(stage, 0) + int(value or 0)
    return totals


def _model_call_ms(result) -> int:
    query = result.metrics().query(MetricsFilter().with_namespace(counters.NAMESPACE)
                                   .with_name(counters.BATCH_LATENCY_MS))
    return sum(int((d.committed or d.attempted).sum) for d in query["distributions"])


def run_pipeline(corpus: str, output: str, model: str, *flags: str) -> PipelineRun:
    """Runs bert-beam through ``pipeline.run.run`` on the DirectRunner; its report is not printed."""
    dead_letters = default_dead_letter_prefix(output)
    for path in glob.glob(output + "*") + glob.glob(dead_letters + "*"):
        shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
    argv = [f"--input={corpus}", f"--output={output}", f"--model={model}", "--runner=DirectRunner", *flags]
    pipeline = RecordingPipeline(options=PipelineOptions(argv))
    (cpu, system), start = _cpu_seconds(), time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        summary = run(argv, test_pipeline=pipeline)
    seconds = time.perf_counter() - start
    cpu_after, system_after = _cpu_seconds()
    shards = glob.glob(output + "-*.tfrecord")
    output_bytes = sum(os.path.getsize(path) for path in shards)
    for path in shards:  # gigabytes a run: gone before the page cache writes them back
        os.remove(path)
    return PipelineRun(seconds, cpu_after - cpu, system_after - system, dict(summary.counters),
                       _model_call_ms(pipeline.result), _stage_msecs(pipeline.result), output_bytes)


@dataclass(frozen=True)
class StageTimes:
    """Seconds each stage took in this process over the marginal documents (stage timings)."""

    read: float = 0.0
    tokenize: float = 0.0
    batch: float = 0.0
    model_call: float = 0.0
    slice: float = 0.0
    proxy: float = 0.0
    encode: float = 0.0
    write: float = 0.0
    real_tokens: int = 0

    def total(self, shared: bool = False) -> float:
        return (self.read + self.tokenize + self.batch + self.model_call + self.slice + self.encode
                + self.write + (self.proxy if shared else 0.0))


def _length_batches(features: list[Features], batching: BatchingConfig) -> Iterator[list[Features]]:
    """Full batches per length bucket, as ``BatchByLength`` makes them within one bundle."""
    buckets: dict[int, list[Features]] = {}
    for feature in features:
        buckets.setdefault(batching.padded_length(feature.sequence_length), []).append(feature)
    for length, group in sorted(buckets.items()):
        rows = batching.full_batch_rows(length)
        for start in range(0, len(group), rows):
            yield group[start : start + rows]


def _timed(totals: dict[str, float], stage: str, function, *args):
    start = time.perf_counter()
    value = function(*args)
    totals[stage] = totals.get(stage, 0.0) + time.perf_counter() - start
    return value


def stage_timings(marginal_file: str, warm_texts: Sequence[str], model_path: str, max_seq_length: int,
                  variants: Sequence[Outputs], with_proxy: bool, folder: str) -> dict[str, StageTimes]:
    """Each stage's seconds over the documents of ``marginal_file``, per outputs variant.

    The tokenizer is warmed on ``warm_texts`` first and the model on each batch shape (a worker's
    are warm in steady state). The proxy figure is the extra time of a call through
    ``MultiProcessShared`` (its server in this process, as in the worker that starts it) over a
    direct call, on every third batch, scaled to all batches by computed tokens.
    """
    model = LoadedBert(ModelConfig(model_path))
    vocab_path, lower_case = model.tokenizer_source()
    tokenizer = FullTokenizer(read_vocab_file(vocab_path), bool(lower_case))
    feature_config = FeatureConfig(max_seq_length=max_seq_length)
    batching = BatchingConfig(max_seq_length=max_seq_length)
    for text in warm_texts:
        list(document_features(Document("warm", text, "warm"), tokenizer, feature_config))
    totals: dict[str, float] = {}
    start = time.perf_counter()
    with open(marginal_file, "rb") as handle:
        documents = [parse_record(line, f"{marginal_file}:{i}", marginal_file, InputConfig())
                     for i, line in enumerate(handle, 1)]
    totals["read"] = time.perf_counter() - start
    features = _timed(totals, "tokenize", lambda: [
        f for d in documents for f in document_features(d, tokenizer, feature_config)])
    batches = _timed(totals, "batch", lambda: list(_length_batches(features, batching)))
    encoders = {v.label: ExampleEncoder(v.outputs, v.sequence_dtype) for v in variants}
    proxy_extra = proxied_tokens = 0.0
    computed_tokens = real_tokens = 0
    with (_proxied(model_path) if with_proxy else contextlib.nullcontext() as proxy,
          tempfile.TemporaryFile(dir=folder) as file):
        sink = SummingFile(file)  # as the shard sink writes: counting bytes, summing their CRC32C
        seen: set[tuple[int, int]] = set()
        for index, batch in enumerate(batches):
            arrays = _timed(totals, "batch", pad_batch, batch, batching.batch_padded_length(batch))
            if arrays["input_ids"].shape not in seen:  # a shape's first call is a fixed cost
                seen.add(arrays["input_ids"].shape)
                model(arrays)
                if proxy is not None:
                    proxy(arrays)
            outputs = _timed(totals, "model_call", model, arrays)
            computed_tokens += arrays["input_mask"].size
            real_tokens += int(arrays["input_mask"].sum())
            if proxy is not None and index % _PROXY_SAMPLE == 0:
                proxy_extra += _seconds(proxy, arrays) - _seconds(model, arrays)
                proxied_tokens += arrays["input_mask"].size
            embeddings = _timed(totals, "slice", _embeddings, batch, outputs)
            for variant in variants:
                encode, label = encoders[variant.label].encode_parts, variant.label
                records = _timed(totals, f"encode {label}", encode, embeddings)
                _timed(totals, f"write {label}", lambda r=records: [write_record(sink, x) for x in r])
    proxy_seconds = max(0.0, proxy_extra * computed_tokens / proxied_tokens) if proxied_tokens else 0.0
    return {v.label: StageTimes(**{stage: totals.get(stage, 0.0) for stage in _COMMON_STAGES},
                                proxy=proxy_seconds, encode=totals[f"encode {v.label}"],
                                write=totals[f"write {v.label}"], real_tokens=real_tokens)
            for v in variants}


@contextlib.contextmanager
def _proxied(model_path: str) -> Iterator:
    """The model behind Beam's ``MultiProcessShared`` proxy, served from this process as
    ``--large_model`` serves it from the worker process that loads it first, and called as the
    handler calls it: inputs and outputs through the caller's shared memory block."""
    from apache_beam.utils.multi_process_shared import MultiProcessShared

    tag = f"feed-ceiling-{uuid.uuid4().hex}"
    shared = MultiProcessShared(functools.partial(LoadedBert, ModelConfig(model_path)), tag=tag,
                                always_proxy=True)
    proxy, block, request = shared.acquire(), OutputBlock(), OutputRequest()

    def call(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return block.read(proxy.call_into_shared_memory(block.put(arrays), request, *block.target()))

    try:
        yield call
    finally:
        shared.unsafe_hard_delete()
        for suffix in (".address", ".lock"):
            with contextlib.suppress(OSError):
                os.remove(os.path.join(tempfile.gettempdir(), tag + suffix))


def _seconds(function, *args) -> float:
    start = time.perf_counter()
    function(*args)
    return time.perf_counter() - start


def _embeddings(batch: list[Features], outputs: dict[str, np.ndarray]) -> list[Embedding]:
    """The handler's per-record results: pooled row and the real tokens' sequence rows."""
    pooled, sequence = outputs["pooled_output"], outputs["sequence_output"]
    return [Embedding(f, pooled[row], np.ascontiguousarray(sequence[row, : f.sequence_length]))
            for row, f in enumerate(batch)]


def _k(rate: float) -> str:
    """A rate in thousands; n/a when the marginal time was not positive (a run too small to tell)."""
    return f"{rate / 1000:.1f}k" if np.isfinite(rate) else "n/a"


def wordpiece_counts(texts: Sequence[str], vocab: Sequence[str]) -> np.ndarray:
    """Wordpieces of each whole document (uncased MiniLM vocab)."""
    tokenizer = FullTokenizer(vocab, do_lower_case=True)
    return np.array([len(tokenizer.tokenize_to_ids(text)) for text in texts])


def documents_per_run(n: int, length: int, processes: int, wordpieces: np.ndarray) -> int:
    """N of one configuration: ``n`` for one process at 128, scaled so that every length's marginal
    holds about as many real tokens, and doubled for two processes (as much work per process)."""
    def real_per_document(max_seq_length: int) -> float:
        return float(np.mean(np.minimum(wordpieces, max_seq_length - 2) + 2))

    return max(1, round(n * processes * real_per_document(128) / real_per_document(length)))


def breakdown(delta: PipelineRun, mode: Mode, stages: StageTimes | None) -> tuple[str, dict[str, float]]:
    """Where a worker process's marginal time went, from the counters (seconds per process).

    With ``--large_model`` the model call's counter holds the proxy round trip too; the pure call
    is estimated from the stage timing's seconds per real token, the rest is the transfer.
    """
    per = 1 / mode.processes
    ms = {stage: value / 1000 * per for stage, value in delta.stage_ms.items()}
    model_call = delta.model_call_ms / 1000 * per
    parts = {"read": ms.get("read", 0.0), "tokenize": ms.get("tokenize", 0.0), "batch": ms.get("batch", 0.0)}
    shared = "--large_model" in mode.flags
    if shared and stages is not None and stages.real_tokens:
        pure = stages.model_call / stages.real_tokens * delta.counters.get(counters.REAL_TOKENS, 0) * per
        parts["model call"] = min(pure, model_call)
        parts["transfer (proxy)"] = model_call - parts["model call"]
    else:
        parts["model call"] = model_call
    parts["pad, slice (RunInference rest)"] = ms.get("run_inference", 0.0) - model_call
    parts["encode"] = ms.get("encode", 0.0)
    parts["write"] = ms.get("write", 0.0)
    parts["other steps"] = ms.get("other steps", 0.0)
    parts["unattributed"] = delta.seconds - sum(parts.values())
    wall = delta.seconds if delta.seconds > 0 else float("nan")
    text = ", ".join(f"{name} {seconds:.2f} ({seconds / wall:.0%})" for name, seconds in parts.items())
    return text, parts


def stage_line(stages: StageTimes, documents: int) -> str:
    """The stage timings of one length and outputs variant, and the rate of all stages in one loop."""
    rate = stages.real_tokens / stages.total() if stages.total() else float("nan")
    proxy = (f"; with the --large_model proxy's extra {stages.proxy:.2f} s, "
             f"{_k(stages.real_tokens / stages.total(shared=True))}" if stages.proxy else "")
    return (f"  - stage timings (this process, no Beam, the one-process marginal's {documents} documents, "
            f"{stages.real_tokens:,} real tokens), s: read {stages.read:.2f}, "
            f"tokenize {stages.tokenize:.2f}, batch+pad {stages.batch:.2f}, "
            f"model call {stages.model_call:.2f}, slices {stages.slice:.2f}, "
            f"encode {stages.encode:.2f}, write {stages.write:.2f}: {stages.total():.2f} s, "
            f"**{_k(rate)} real tokens/s** in one loop{proxy}")


def measure(report: Report, corpus: Corpus, output: str, model: str, n: int, length: int,
            variant: Outputs, mode: Mode, stages: StageTimes, pairs: int) -> dict:
    """Runs one configuration on N and on 3N documents, ``pairs`` times interleaved, and reports the
    pooled marginal figures (sums over the pairs) and each pair's rate (this VM's speed drifts)."""
    flags = (f"--max_seq_length={length}", *variant.flags, *mode.flags)
    small, large, deltas = [], [], []
    for _ in range(pairs):
        small.append(run_pipeline(corpus.first(n), output, model, *flags))
        large.append(run_pipeline(corpus.first(3 * n), output, model, *flags))
        deltas.append(large[-1] - small[-1])
    delta = sum(deltas[1:], deltas[0])

    def rate_of(run: PipelineRun) -> float:
        seconds = run.seconds if run.seconds > 0 else float("nan")
        return run.counters.get(counters.REAL_TOKENS, 0) / seconds / mode.processes

    rate = rate_of(delta)
    seconds = delta.seconds if delta.seconds > 0 else float("nan")
    megabytes = delta.output_bytes / 1e6 / seconds
    kernel = delta.system_seconds / delta.cpu_seconds if delta.cpu_seconds > 0 else float("nan")
    text, parts = breakdown(delta, mode, stages)
    rejected = large[0].counters.get(counters.DOCUMENTS_REJECTED, 0)
    pair_rates = [rate_of(d) for d in deltas]
    spread = f" (pairs: {', '.join(_k(r) for r in pair_rates)})" if pairs > 1 else ""
    report.add(f"  - {mode.label}: N = {n} in {'/'.join(f'{r.seconds:.1f}' for r in small)} s, 3N in "
               f"{'/'.join(f'{r.seconds:.1f}' for r in large)} s ({rejected} rejected); marginal "
               f"{delta.counters.get(counters.REAL_TOKENS, 0):,} real tokens in {delta.seconds:.1f} s: "
               f"**{_k(rate)} real tokens/s per worker process**{spread}, output {megabytes:.0f} MB/s in all "
               f"({megabytes / mode.processes:.0f} per process), {delta.cpu_seconds / seconds:.2f} cores "
               f"busy ({kernel:.0%} of it in the kernel); per worker process (counters), s: {text}")
    return {"rate_per_process": rate, "pair_rates": pair_rates, "output_mb_s": megabytes,
            "seconds": delta.seconds, "real_tokens": delta.counters.get(counters.REAL_TOKENS, 0),
            "cores_busy": delta.cpu_seconds / seconds, "kernel_share": kernel, "breakdown": parts}


@dataclass(frozen=True)
class Selection:
    """The configurations chosen on the command line."""

    seq_lengths: tuple[int, ...]
    variants: tuple[Outputs, ...]
    modes: tuple[Mode, ...]
    every_combination: bool

    pairs: int

    def runs(self, length: int, variant: Outputs, mode: Mode) -> bool:
        """All chosen combinations with --all; else 2 processes run pooled,sequence float32 at 128 only."""
        target = length == 128 and variant == OUTPUTS["float32"]
        return self.every_combination or mode.processes == 1 or target


def measure_all(report: Report, selection: Selection, n: int, model: str, corpus: Corpus,
                wordpieces: np.ndarray, folder: str) -> dict[str, dict]:
    """Stage timings and the pipeline runs of every chosen configuration, reported as they come."""
    output = os.path.join(folder, "emb")
    run_pipeline(corpus.first(8), output, model, "--max_seq_length=128", "--outputs=pooled")  # one-time costs
    shared = MODES["shared"] in selection.modes
    figures: dict[str, dict] = {}
    for length in selection.seq_lengths:
        one = documents_per_run(n, length, 1, wordpieces)
        marginal_file = synthetic_text.write_corpus(os.path.join(folder, "marginal.txt"),
                                                    corpus.texts[one : 3 * one])
        stages = stage_timings(marginal_file, corpus.texts[:one], model, length, selection.variants, shared,
                               folder)
        for variant in selection.variants:
            report.add(f"- max_seq_length {length}, {variant.label}:")
            report.add(stage_line(stages[variant.label], 2 * one))
            for mode in selection.modes:
                if selection.runs(length, variant, mode):
                    documents = documents_per_run(n, length, mode.processes, wordpieces)
                    figures[f"{length} {variant.label} {mode.label}"] = measure(
                        report, corpus, output, model, documents, length, variant, mode,
                        stages[variant.label], selection.pairs)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="A smoke run on a few documents, not recorded.")
    parser.add_argument("--documents", type=int, default=None,
                        help="N for one process at 128 (default 2000; 12 quick); see above.")
    parser.add_argument("--seq_lengths", default="128,512", help="Comma-separated --max_seq_length values.")
    parser.add_argument("--outputs", default=",".join(OUTPUTS),
                        help=f"Comma-separated of {', '.join(OUTPUTS)}.")
    parser.add_argument("--modes", default=",".join(MODES), help=f"Comma-separated of {', '.join(MODES)}.")
    parser.add_argument("--all", action="store_true",
                        help="Every combination of the lengths, outputs and modes chosen. By default the "
                        "2-process modes run pooled,sequence float32 at 128 only (a 2-process run starts in "
                        "~17 s here), which keeps a full run under ~8 minutes on 2 cores.")
    parser.add_argument("--pairs", type=int, default=None,
                        help="Interleaved N/3N pairs per configuration, pooled (default 2; 1 quick).")
    args = parser.parse_args()
    n = args.documents or (12 if args.quick else 2000)
    selection = Selection(tuple(int(v) for v in args.seq_lengths.split(",")),
                          tuple(OUTPUTS[v] for v in args.outputs.split(",")),
                          tuple(MODES[m] for m in args.modes.split(",")), args.all,
                          args.pairs or (1 if args.quick else 2))

    report = Report("feed_ceiling", args.quick)
    vocab = minilm_vocab()
    model = feed_ceiling_module(vocab)
    texts = long_tailed_texts(6 * n)
    wordpieces = wordpiece_counts(texts, vocab)
    corpus = Corpus(cached_models.cache_dir("feed_ceiling", "corpus"), texts)
    folder = output_folder()
    os.makedirs(folder, exist_ok=True)
    report.add(f"- model: TF1 Hub module of BERT-Large's shape (H={HIDDEN}, {POSITIONS} positions, "
               f"all-MiniLM-L6-v2 vocab of {len(vocab)}) computing embedding lookups only "
               f"({os.path.basename(model)}); corpus: real prose (truncation.real_prose) cut to lognormal "
               f"lengths (median {MEDIAN_CHARS} characters, sigma {SIGMA}, at most {MAX_CHARS:,}): "
               f"wordpieces per document median {np.median(wordpieces):.0f}, p90 "
               f"{np.percentile(wordpieces, 90):.0f}, max {wordpieces.max()}; {FILES} text files; default "
               f"batching flags; output to {folder} (its shards deleted after each run); each configuration "
               f"runs on N and 3N documents (marginal = 3N run − N run), N = {n} for one process at 128, "
               f"scaled at other lengths to as many marginal real tokens, doubled for 2 processes")
    report.add("- per worker process, marginal seconds from counters: Beam's per-step execution time (state "
               "sampler, sampled every ≤ 200 ms) and bert-beam's batch_latency_ms (model call); "
               "\"unattributed\" is the wall time no step holds (Beam's data plane and bundle handling, "
               "waits); with --large_model the model call is the stage-timed call scaled to the marginal's "
               "real tokens, and the rest of batch_latency_ms is the transfer. A 2-process run starts in "
               "~17 s here and varies by seconds from run to run (this VM's speed drifts), so the pairs' "
               "rates show how far to trust a figure")
    try:
        figures = measure_all(report, selection, n, model, corpus, wordpieces, folder)
    finally:
        if folder.startswith(_TMPFS):
            shutil.rmtree(folder, ignore_errors=True)
    _targets(report, figures, selection)
    save_json("feed_ceiling", figures, args.quick)
    report.write()


def _targets(report: Report, figures: dict[str, dict], selection: Selection) -> None:
    """Pass or miss against the issue's targets, for the configurations that ran."""
    f32 = OUTPUTS["float32"].label
    if 128 in selection.seq_lengths and OUTPUTS["float32"] in selection.variants:
        for mode in selection.modes:
            rate = figures[f"128 {f32} {mode.label}"]["rate_per_process"]
            verdict = "met" if rate >= TARGET_TOKENS_PER_SECOND else "MISSED"
            report.add(f"- target, feed ceiling at 128, {f32}, {mode.label}: {_k(rate)} real tokens/s per "
                       f"worker process (target ≥ {_k(TARGET_TOKENS_PER_SECOND)}: {verdict})")
    if MODES["separate"] in selection.modes and MODES["shared"] in selection.modes:
        for length in selection.seq_lengths:
            for variant in selection.variants:
                key = f"{length} {variant.label} "
                if key + MODES["shared"].label not in figures:
                    continue
                ratio = (figures[key + MODES["shared"].label]["rate_per_process"]
                         / figures[key + MODES["separate"].label]["rate_per_process"])
                target = " (target" if length == 128 and variant.label == f32 else " (for reference"
                verdict = "met" if ratio >= TARGET_SHARED_RATIO else "MISSED"
                report.add(f"- shared model, {length}, {variant.label}: 2 processes with --large_model "
                           f"**{ratio:.2f}×** 2 processes with their own copies{target} ≥ "
                           f"{TARGET_SHARED_RATIO}: {verdict})")
    if MODES["separate"] in selection.modes and MODES["threads"] in selection.modes:
        for key, figure in figures.items():
            if key.endswith(MODES["threads"].label):
                separate = figures.get(key.removesuffix(MODES["threads"].label) + MODES["separate"].label)
                if separate:
                    ratio = figure["rate_per_process"] / separate["rate_per_process"]
                    report.add(f"- one model copy in one process of 2 threads, "
                               f"{key.removesuffix(' ' + MODES['threads'].label)}: **{ratio:.2f}×** "
                               f"2 processes with their own copies (for reference)")


if __name__ == "__main__":
    main()
