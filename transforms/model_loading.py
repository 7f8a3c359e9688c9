"""Resolves, recognises and loads BERT SavedModels, and finds their tokenizer.

The legacy TF1 Hub format of ``google/bert_*`` modules (``tfhub_module.pb``) is
loaded with graph tags ``set()`` (inference, never ``train``) and called through
its ``tokens`` signature; every other SavedModel is called as its own traced
functions say (``transforms.call_conventions``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tarfile
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from transforms.call_conventions import (
    INPUT_IDS,
    INPUT_KEYS,
    INPUT_MASK,
    OUTPUT_KEYS,
    SEQUENCE_OUTPUT,
    CallMismatch,
    describe_callables,
    find_call_convention,
)
from transforms.model_assets import HUB_ASSET_PLACEHOLDER, read_saved_model, signature_output_asset
from transforms.model_ops import ENCODER_OPS, LOADING_OPS, called_ops, loading_ops, refusal
from transforms.model_outputs import OutputRequest, select_outputs
from transforms.shared_outputs import ATTACHED_BLOCKS, SharedArrays, put_arrays

__all__ = ["MAX_ARCHIVE_BYTES", "TF1_HUB", "TF2", "LoadedBert", "ModelConfig", "ModelError", "detect_format",
           "parse_tensor_names", "position_limit", "resolve_model_path", "vocab_limit"]

TF1_HUB = "tf1_hub"
TF2 = "tf2"

MAX_ARCHIVE_BYTES = 20 * 1024**3

_LOG = logging.getLogger(__name__)


class ModelError(ValueError):
    """The model cannot be used; the message says why and what it has."""


@dataclass(frozen=True)
class ModelConfig:
    """What the user asked for: a model handle and how to call it."""

    handle: str
    signature: str | None = None
    tensor_names: Mapping[str, str] = field(default_factory=dict)
    jit_compile: bool = False
    allow_model_ops: tuple[str, ...] = ()  # ops the user accepts beyond those a BERT needs


def parse_tensor_names(text: str | None) -> dict[str, str]:
    """Parses ``input_ids=ids,pooled_output=pooled`` into a mapping, checking the keys."""
    mapping: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in (text or "").split(","))):
        key, sep, value = item.partition("=")
        if not sep or not value:
            raise ModelError(f"--signature_tensors item {item!r} is not NAME=TENSOR.")
        if key not in INPUT_KEYS + OUTPUT_KEYS:
            raise ModelError(
                f"--signature_tensors key {key!r} is not one of {', '.join(INPUT_KEYS + OUTPUT_KEYS)}."
            )
        mapping[key] = value
    return mapping


def _safe_extract(archive: str, target: str) -> None:
    """Extracts a module archive refusing links out, absolute paths and oversized content."""
    total = 0
    with tarfile.open(archive, "r:*") as tar:
        members = tar.getmembers()
        for member in members:
            parts = member.name.replace("\\", "/").split("/")
            if member.name.startswith(("/", "\\")) or ".." in parts:
                raise ModelError(f"{archive} holds an entry outside its folder: {member.name!r}.")
            total += max(member.size, 0)
            if total > MAX_ARCHIVE_BYTES:
                raise ModelError(f"{archive} unpacks to more than {MAX_ARCHIVE_BYTES} bytes.")
        # The "data" filter also refuses links out of the target, devices and unsafe modes.
        tar.extractall(target, members=members, filter="data")


def resolve_model_path(handle: str) -> str:
    """Turns a handle into a local SavedModel folder.

    Local ``.tar.gz`` archives are unpacked (safely) into the TF Hub cache
    folder; everything else (tfhub.dev and Kaggle URLs, ``gs://`` folders and
    archives, local folders) goes through ``hub.resolve``, which honours
    ``TFHUB_CACHE_DIR``.
    """
    if handle.endswith((".tar.gz", ".tgz")) and os.path.isfile(handle):
        stat = os.stat(handle)
        digest = hashlib.sha1(
            f"{os.path.abspath(handle)}:{stat.st_size}:{stat.st_mtime_ns}".encode()
        ).hexdigest()
        cache = os.environ.get("TFHUB_CACHE_DIR") or os.path.join(tempfile.gettempdir(), "tfhub_modules")
        target = os.path.join(cache, digest)
        if not os.path.isdir(target):
            staging = tempfile.mkdtemp(prefix=f"{digest}.", dir=_makedirs(cache))
            try:
                _safe_extract(handle, staging)
                os.replace(staging, target)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
        return target
    import tensorflow_hub as hub

    try:
        return hub.resolve(handle)
    except Exception as error:  # hub raises many types; all mean "cannot resolve"
        raise ModelError(f"Cannot resolve model {handle!r}: {error}") from error


def _makedirs(path: str) -> str:
    os.makedirs(path, exist_ok=True)
    return path


def detect_format(path: str) -> str:
    """``tf1_hub`` when the folder has ``tfhub_module.pb``, else a TF2 SavedModel."""
    import tensorflow as tf

    if not tf.io.gfile.exists(os.path.join(path, "saved_model.pb")):
        raise ModelError(
            f"{path} is not a SavedModel: no saved_model.pb. Point --model at a TF Hub handle, "
            "a SavedModel folder or a .tar.gz archive of one."
        )
    return TF1_HUB if tf.io.gfile.exists(os.path.join(path, "tfhub_module.pb")) else TF2


def position_limit(path: str) -> int | None:
    """The number of position embeddings, read from the checkpoint (None if not found)."""
    import tensorflow as tf

    try:
        variables = tf.train.list_variables(os.path.join(path, "variables", "variables"))
    except (tf.errors.NotFoundError, ValueError):
        return None
    for name, shape in variables:
        if "position_embedding" in name and len(shape) == 2:
            return int(shape[0])
    return None


def vocab_limit(path: str) -> int | None:
    """Rows of the word embedding table, read from the checkpoint (None if not found)."""
    import tensorflow as tf

    try:
        variables = tf.train.list_variables(os.path.join(path, "variables", "variables"))
    except (tf.errors.NotFoundError, ValueError):
        return None
    rows = [int(shape[0]) for name, shape in variables if "word_embedding" in name and len(shape) == 2]
    return rows[0] if len(rows) == 1 else None


class LoadedBert:
    """A loaded BERT model: numpy int32 batches in, numpy float32 outputs out.

    ``format`` is how the model is stored (``tf1_hub`` or ``tf2``); ``convention`` how it
    is called, found once here from the model's own signatures and traced functions.
    """

    def __init__(self, config: ModelConfig) -> None:
        import tensorflow as tf
        import tensorflow_hub as hub

        self.config = config
        self.path = resolve_model_path(config.handle)
        self.format = detect_format(self.path)
        self.max_positions = position_limit(self.path)
        self.vocab_rows = vocab_limit(self.path)
        # Loading runs the model's restore and init ops: they are checked before it loads.
        self._refuse_unneeded_ops(loading_ops(read_saved_model(self.path)), LOADING_OPS)
        # hub.load picks graph tags set() for TF1 Hub modules: the inference graph.
        self._model = hub.load(self.path)
        try:
            self.convention = find_call_convention(
                self._model, self.format == TF1_HUB, config.signature, config.tensor_names)
        except CallMismatch as mismatch:
            raise ModelError(
                f"{config.handle} has no signature or function that takes BERT's int inputs "
                f"({mismatch}). Choose one with --signature and map its tensors with "
                "--signature_tensors. Its callables:\n" + self.describe_callables()
            ) from mismatch
        # Before any call, the launcher's probe batch included.
        self._refuse_unneeded_ops(called_ops(self.called_functions()), ENCODER_OPS)
        self._dtypes = {item.key: tf.as_dtype(item.dtype) for item in self.convention.inputs}
        # XLA compiles the whole call once per input shape; length buckets keep shapes few.
        self._invoke = tf.function(self._call_model, jit_compile=True) if config.jit_compile \
            else self._call_model
        self._selecting_functions: dict[OutputRequest, object] = {}

    @property
    def entry(self) -> str:
        return self.convention.entry

    @property
    def output_keys(self) -> tuple[str, ...]:
        """The outputs the model gives: ``sequence_output``, and ``pooled_output`` if it has one."""
        return self.convention.output_keys

    def describe_callables(self) -> str:
        return describe_callables(self._model)

    def called_functions(self) -> dict[str, list]:
        """Every concrete function that bert-beam's calls of the model may run, by where it is called.

        A restored ``tf.function`` gives all its traces: TensorFlow picks one per call by the inputs.
        """
        entry = self.convention.entry
        if self.convention.is_signature:
            functions = {f"signature {entry}": [self._model.signatures[entry]]}
        else:
            functions = {f"function {entry}": list(getattr(self._model, entry).concrete_functions)}
        if self._tokenization_info is not None:
            functions["signature tokenization_info"] = [self._tokenization_info]
        return functions

    @property
    def _tokenization_info(self):
        """A TF1 Hub module's ``tokenization_info`` signature, else None."""
        return self._model.signatures.get("tokenization_info") if self.format == TF1_HUB else None

    def _refuse_unneeded_ops(self, found: Mapping, allowed: frozenset[str]) -> None:
        message = refusal(found, allowed, self.config.allow_model_ops)
        if message:
            raise ModelError(message)

    def __call__(self, batch: Mapping[str, np.ndarray], request: OutputRequest | None = None
                 ) -> dict[str, np.ndarray]:
        """Runs one padded batch; returns its outputs as numpy.

        With a ``request``, only its outputs (``pooled_output``, ``mean_output``,
        ``sequence_output``), reduced and cast inside the call; without, ``pooled_output``
        (where the model has one) and ``sequence_output`` in float32. A model with a fixed
        sequence length gets the batch padded to it (the padding is masked out), and its
        sequence output cut back to the batch's length.
        """
        import tensorflow as tf

        length = batch[INPUT_IDS].shape[1]
        fixed = self.convention.fixed_length
        if fixed is not None and length > fixed:
            raise ValueError(f"The model takes sequences of exactly {fixed} tokens, not {length}.")
        pad = [(0, 0), (0, fixed - length)] if fixed is not None and length < fixed else None
        inputs = {key: tf.constant(np.pad(batch[key], pad) if pad else batch[key], dtype)
                  for key, dtype in self._dtypes.items()}
        # np.asarray views a CPU tensor's buffer (read-only); Tensor.numpy() would copy it.
        if request is None:
            outputs = {key: np.asarray(value).astype(np.float32, copy=False)
                       for key, value in self._invoke(inputs).items()}
        else:
            outputs = {key: np.asarray(value) for key, value in self._selecting(request)(inputs).items()}
        if pad and SEQUENCE_OUTPUT in outputs:
            outputs[SEQUENCE_OUTPUT] = outputs[SEQUENCE_OUTPUT][:, :length]
        return outputs

    def call_into_shared_memory(self, batch: SharedArrays | Mapping[str, np.ndarray], request: OutputRequest,
                                block: str, capacity: int) -> SharedArrays:
        """For a model shared across processes: runs the batch (its inputs in the caller's shared
        memory ``block``, or pickled) and writes its outputs into that block (a one-off block if they
        do not fit), so they cross as one copy each way instead of a pickle through Beam's manager
        process."""
        inputs = ATTACHED_BLOCKS.read(batch) if isinstance(batch, SharedArrays) else batch
        outputs = self(inputs, request)
        return ATTACHED_BLOCKS.write(block, capacity, outputs) if block else put_arrays(outputs)

    def _call_model(self, inputs: Mapping) -> dict:
        """The model call on tensors, keyed by the pipeline's own tensor names."""
        return self.convention.call(self._model, inputs)

    def _selecting(self, request: OutputRequest):
        """The model call followed by ``select_outputs``: one function per request, compiled
        with XLA as a whole under ``--jit_compile``."""
        import tensorflow as tf

        function = self._selecting_functions.get(request)
        if function is None:
            def call(inputs: Mapping) -> dict:
                return select_outputs(self.convention.call(self._model, inputs), inputs[INPUT_MASK], request)

            function = tf.function(call, jit_compile=True) if self.config.jit_compile else call
            self._selecting_functions[request] = function
        return function

    def do_lower_case(self) -> bool | None:
        """The model's own lower-casing, where it declares it."""
        import tensorflow as tf

        if self._tokenization_info is not None:
            return bool(self._tokenization_info()["do_lower_case"].numpy())
        lower = getattr(self._model, "do_lower_case", None)
        if lower is not None and not isinstance(lower, bool):
            lower = bool(tf.convert_to_tensor(lower).numpy())
        return lower

    def vocab_file(self) -> str | None:
        """The model's own vocab file, resolved as TensorFlow resolves assets; None if it has none.

        Raises ModelError when the model names a vocab file that cannot be found.
        """
        import tensorflow as tf

        if self._tokenization_info is not None:
            # The asset the output refers to; TF Hub's exporter leaves only a placeholder in it.
            asset = signature_output_asset(self.path, "tokenization_info", "vocab_file")
            if asset is not None and tf.io.gfile.exists(asset):
                return asset
            baked = self._tokenization_info()["vocab_file"].numpy().decode("utf-8")
            return self._resolve_baked_path(baked)
        if hasattr(self._model, "vocab_file"):
            vocab = self._model.vocab_file
            path = vocab.asset_path.numpy().decode("utf-8") if hasattr(vocab, "asset_path") else str(vocab)
            return self._resolve_baked_path(path)
        fallback = os.path.join(self.path, "assets", "vocab.txt")
        return fallback if tf.io.gfile.exists(fallback) else None

    def tokenizer_source(self) -> tuple[str | None, bool | None]:
        """The model's own vocab path and lower-casing, where it declares them."""
        return self.vocab_file(), self.do_lower_case()

    def _resolve_baked_path(self, path: str) -> str:
        """A vocab path baked in at export: as it is, else by its base name in the module's assets."""
        import tensorflow as tf

        if tf.io.gfile.exists(path):
            return path
        local = os.path.join(self.path, "assets", os.path.basename(path))
        if path != HUB_ASSET_PLACEHOLDER and tf.io.gfile.exists(local):
            return local
        raise ModelError(f"The model names vocab file {path!r}, which is neither there nor an asset "
                         f"of the model in {os.path.join(self.path, 'assets')}. Pass --vocab_file.")

    def describe(self) -> str:
        """One line: the model's format, path, call and position limit."""
        limit = self.max_positions if self.max_positions is not None else "unknown"
        return (f"{self.format} model at {self.path}, called as {self.convention.describe()} "
                f"(position limit {limit})")
