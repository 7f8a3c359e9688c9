"""Resolves, recognises and loads BERT SavedModels, and finds their tokenizer.

Three kinds of model are recognised:

* the legacy TF1 Hub format of ``google/bert_*`` modules (``tfhub_module.pb``):
  loaded with graph tags ``set()`` (inference, never ``train``), called
  through the ``tokens`` signature;
* TF Hub's TF2 BERT encoders, called with a dict of
  ``input_word_ids``/``input_mask``/``input_type_ids``;
* any SavedModel signature with three integer inputs (a user's fine-tuned
  export), chosen with ``--signature`` and mapped with ``--signature_tensors``.
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

TF1_HUB = "tf1_hub"
TF2 = "tf2"

INPUT_KEYS = ("input_ids", "input_mask", "segment_ids")
OUTPUT_KEYS = ("pooled_output", "sequence_output")
TF2_INPUT_NAMES = {"input_ids": "input_word_ids", "input_mask": "input_mask",
                   "segment_ids": "input_type_ids"}
# Names that common exports use for each pipeline tensor, tried in order.
KNOWN_TENSOR_NAMES = {
    "input_ids": ("input_ids", "input_word_ids"),
    "input_mask": ("input_mask", "attention_mask"),
    "segment_ids": ("segment_ids", "input_type_ids", "token_type_ids"),
    "pooled_output": ("pooled_output", "pooler_output", "default"),
    "sequence_output": ("sequence_output", "last_hidden_state"),
}
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


def _describe_signatures(signatures: Mapping) -> str:
    lines = []
    for name, function in signatures.items():
        inputs = function.structured_input_signature[1]
        outputs = function.structured_outputs
        lines.append(f"  {name}: inputs {sorted(inputs)} -> outputs {sorted(outputs)}")
    return "\n".join(lines) or "  (none)"


class LoadedBert:
    """A loaded BERT model: numpy int32 batches in, numpy float32 outputs out.

    ``format`` is how the model is stored (``tf1_hub`` or ``tf2``), ``entry`` how
    it is called: a signature name or ``__call__`` for TF2 BERT encoders.
    """

    def __init__(self, config: ModelConfig) -> None:
        import tensorflow as tf
        import tensorflow_hub as hub

        self.config = config
        self.path = resolve_model_path(config.handle)
        self.format = detect_format(self.path)
        self.max_positions = position_limit(self.path)
        # hub.load picks graph tags set() for TF1 Hub modules: the inference graph.
        self._model = hub.load(self.path)
        self._signature_fn = None
        self._tensor_names: dict[str, str] = {}
        self._dtypes: dict[str, tf.DType] = {}
        signatures = getattr(self._model, "signatures", {})
        if config.signature:
            self.entry = config.signature
        elif self.format == TF1_HUB:
            self.entry = "tokens"
        elif self._is_tf2_bert():
            self.entry = "__call__"
        elif "serving_default" in signatures:
            self.entry = "serving_default"
        else:
            raise ModelError(
                f"{config.handle} is neither a TF1 Hub BERT module nor a TF2 BERT encoder "
                "(callable with a dict of input_word_ids, input_mask, input_type_ids) and has no "
                "serving_default signature. Choose one with --signature. Its signatures:\n"
                + _describe_signatures(signatures)
            )
        if self.entry != "__call__":
            if self.entry not in signatures:
                raise ModelError(
                    f"{config.handle} has no signature {self.entry!r}. Its signatures:\n"
                    + _describe_signatures(signatures)
                )
            self._bind_signature(signatures[self.entry], self.entry)
        # XLA compiles the whole call once per input shape; length buckets keep shapes few.
        self._invoke = tf.function(self._call_model, jit_compile=True) if config.jit_compile \
            else self._call_model

    def _is_tf2_bert(self) -> bool:
        return callable(self._model) and hasattr(self._model, "vocab_file")

    def _bind_signature(self, function, name: str) -> None:
        inputs = function.structured_input_signature[1]
        outputs = function.structured_outputs
        mapping: dict[str, str] = {}
        for key in INPUT_KEYS + OUTPUT_KEYS:
            available = inputs if key in INPUT_KEYS else outputs
            chosen = self.config.tensor_names.get(key)
            if chosen is None:
                chosen = next((n for n in KNOWN_TENSOR_NAMES[key] if n in available), None)
            if chosen is None or chosen not in available:
                if key == "pooled_output" and chosen is None:
                    continue  # a model without a pooler can still give sequence outputs
                raise ModelError(
                    f"Signature {name!r} has no tensor for {key}"
                    + (f" (asked for {chosen!r})" if chosen else "")
                    + f". Its inputs are {sorted(inputs)}, its outputs {sorted(outputs)}; "
                    "map them with --signature_tensors input_ids=...,input_mask=...,segment_ids=...,"
                    "pooled_output=...,sequence_output=..."
                )
            mapping[key] = chosen
        for key in INPUT_KEYS:
            spec = inputs[mapping[key]]
            if not spec.dtype.is_integer:
                raise ModelError(f"Signature {name!r} input {mapping[key]!r} is {spec.dtype.name}, "
                                 "not an integer tensor.")
            self._dtypes[key] = spec.dtype
        self._signature_fn = function
        self._tensor_names = mapping

    @property
    def has_pooled_output(self) -> bool:
        return self._signature_fn is None or "pooled_output" in self._tensor_names

    def __call__(self, batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Runs one padded batch; returns ``pooled_output`` and ``sequence_output`` as numpy."""
        import tensorflow as tf

        inputs = {k: tf.constant(batch[k], self._dtypes.get(k, tf.int32)) for k in INPUT_KEYS}
        outputs = self._invoke(inputs)
        return {k: value.numpy().astype(np.float32, copy=False) for k, value in outputs.items()}

    def _call_model(self, inputs: Mapping) -> dict:
        """The model call on tensors, keyed by the pipeline's own tensor names."""
        if self._signature_fn is None:
            outputs = self._model({TF2_INPUT_NAMES[k]: inputs[k] for k in INPUT_KEYS}, training=False)
            return {k: outputs[k] for k in OUTPUT_KEYS}
        outputs = self._signature_fn(**{self._tensor_names[k]: inputs[k] for k in INPUT_KEYS})
        return {k: outputs[self._tensor_names[k]] for k in OUTPUT_KEYS if k in self._tensor_names}

    def tokenizer_source(self) -> tuple[str | None, bool | None]:
        """The model's own vocab path and lower-casing, where it declares them."""
        import tensorflow as tf

        if self.format == TF1_HUB and "tokenization_info" in self._model.signatures:
            info = self._model.signatures["tokenization_info"]()
            baked = info["vocab_file"].numpy().decode("utf-8")
            lower = bool(info["do_lower_case"].numpy())
            return self._resolve_asset(baked), lower
        if hasattr(self._model, "vocab_file"):
            vocab = self._model.vocab_file
            path = vocab.asset_path.numpy().decode("utf-8") if hasattr(vocab, "asset_path") else str(vocab)
            lower = getattr(self._model, "do_lower_case", None)
            if lower is not None and not isinstance(lower, bool):
                lower = bool(tf.convert_to_tensor(lower).numpy())
            return self._resolve_asset(path), lower
        fallback = os.path.join(self.path, "assets", "vocab.txt")
        return (fallback if tf.io.gfile.exists(fallback) else None), None

    def _resolve_asset(self, path: str) -> str:
        """TF1 Hub modules bake the exporter's vocab path; find the file in the module's assets."""
        import tensorflow as tf

        if tf.io.gfile.exists(path):
            return path
        local = os.path.join(self.path, "assets", os.path.basename(path))
        if tf.io.gfile.exists(local):
            return local
        raise ModelError(f"The model names vocab file {path!r}, which is neither there nor in "
                         f"{os.path.join(self.path, 'assets')}. Pass --vocab_file.")

    def describe(self) -> str:
        """One line: the model's format, path and position limit."""
        limit = self.max_positions if self.max_positions is not None else "unknown"
        return f"{self.format} model at {self.path}, called via {self.entry} (position limit {limit})"
