"""How to call a restored BERT SavedModel, decided once at load from its own functions.

BERT exports differ in how they are called, and nothing but their traced functions says how:
* a signature of keyword tensors (TF1 Hub ``tokens``, ``serving_default``, Keras 3 ``serve``);
* a function of one dict (TF Hub's TF2 encoders: ``input_word_ids``/``input_mask``/
  ``input_type_ids``), with or without a ``training`` argument;
* a function of one list ``[input_word_ids, input_mask, input_type_ids]`` (TF Hub's first TF2
  encoders) returning ``[pooled_output, sequence_output]``;
* int32 or int64 inputs, fixed or free sequence length, no segment input (DistilBERT-style);
* outputs named ``pooled_output``/``sequence_output``, ``pooler_output``/``last_hidden_state``
  or ``default``/``encoder_outputs`` (a list whose last item is the sequence output).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

__all__ = ["CALL", "DEFAULT_ENTRIES", "DICT", "INPUT_IDS", "INPUT_KEYS", "INPUT_MASK", "KEYWORDS",
           "KNOWN_TENSOR_NAMES", "LIST", "LIST_INPUT_ORDER", "MEAN_OUTPUT", "OUTPUT_KEYS", "POOLED_OUTPUT",
           "REQUIRED_INPUTS", "SEGMENT_IDS", "SEQUENCE_OUTPUT", "TF1_HUB_SIGNATURE", "CallConvention",
           "CallMismatch", "ModelInput", "describe_callables", "find_call_convention"]

# The pipeline's names for the tensors of a model call, used everywhere (and as output feature keys).
INPUT_IDS = "input_ids"
INPUT_MASK = "input_mask"
SEGMENT_IDS = "segment_ids"
POOLED_OUTPUT = "pooled_output"
SEQUENCE_OUTPUT = "sequence_output"
MEAN_OUTPUT = "mean_output"  # reduced from sequence_output inside the call (transforms.model_outputs)
INPUT_KEYS = (INPUT_IDS, INPUT_MASK, SEGMENT_IDS)
OUTPUT_KEYS = (POOLED_OUTPUT, SEQUENCE_OUTPUT)
REQUIRED_INPUTS = (INPUT_IDS, INPUT_MASK)
# Names that common exports use for each pipeline tensor, tried in order.
KNOWN_TENSOR_NAMES = {
    INPUT_IDS: (INPUT_IDS, "input_word_ids"),
    INPUT_MASK: (INPUT_MASK, "attention_mask"),
    SEGMENT_IDS: (SEGMENT_IDS, "input_type_ids", "token_type_ids"),
    POOLED_OUTPUT: (POOLED_OUTPUT, "pooler_output", "default"),
    SEQUENCE_OUTPUT: (SEQUENCE_OUTPUT, "last_hidden_state", "encoder_outputs"),
}
# The order of a list input, as TF Hub's first TF2 BERT encoders take it.
LIST_INPUT_ORDER = (INPUT_IDS, INPUT_MASK, SEGMENT_IDS)

KEYWORDS = "keywords"
DICT = "dict"
LIST = "list"

TF1_HUB_SIGNATURE = "tokens"
CALL = "__call__"
# Entries tried, in order, when --signature is not given (after ``tokens`` for TF1 Hub modules).
DEFAULT_ENTRIES = (CALL, "serving_default", "serve")


class CallMismatch(ValueError):
    """One callable of the model cannot take BERT's inputs; the message says why."""


@dataclass(frozen=True)
class ModelInput:
    """One model input: the pipeline tensor it takes and how the model names it."""

    key: str
    name: str | int  # a keyword or dict key, or a position in a list input
    dtype: str  # a TensorFlow dtype name: int32, int64 ...


@dataclass(frozen=True)
class CallConvention:
    """How to call one entry of a restored model, and where its outputs are."""

    entry: str  # a signature name, or a function attribute (``__call__``, ``serve``)
    is_signature: bool
    input_style: str  # KEYWORDS, DICT or LIST
    inputs: tuple[ModelInput, ...]
    outputs: tuple[tuple[str, tuple[str | int, ...]], ...]  # pipeline output → path in the result
    extra_args: tuple = ()  # what the trace took after the inputs, such as training=False
    extra_arg_names: tuple[str, ...] = ()  # their parameter names, where the trace has them
    extra_kwargs: tuple[tuple[str, object], ...] = ()
    fixed_length: int | None = None  # the model's static sequence length, if it has one

    @property
    def output_keys(self) -> tuple[str, ...]:
        return tuple(key for key, _ in self.outputs)

    @property
    def input_keys(self) -> tuple[str, ...]:
        return tuple(item.key for item in self.inputs)

    def describe(self) -> str:
        """``__call__({input_word_ids: int32, ...}, training=False) -> pooled_output, ...``."""
        named = ", ".join(f"{item.name}: {item.dtype}" for item in self.inputs)
        shown = {KEYWORDS: named, DICT: "{" + named + "}", LIST: "[" + named + "]"}[self.input_style]
        names = self.extra_arg_names or ("",) * len(self.extra_args)
        extras = [f"{name}={value!r}" if name else repr(value)
                  for name, value in zip(names, self.extra_args, strict=True)]
        extras += [f"{name}={value!r}" for name, value in self.extra_kwargs]
        outputs = ", ".join(
            f"{key}={'/'.join(str(step) for step in path)}" for key, path in self.outputs)
        length = f", sequence length fixed at {self.fixed_length}" if self.fixed_length else ""
        kind = "signature" if self.is_signature else "function"
        return f"{kind} {self.entry}({', '.join([shown, *extras])}) -> {outputs}{length}"

    def call(self, model, tensors: Mapping[str, object]) -> dict[str, object]:
        """Calls the model with the pipeline's tensors; returns its outputs by pipeline key."""
        function = model.signatures[self.entry] if self.is_signature else getattr(model, self.entry)
        if self.input_style == KEYWORDS:
            result = function(**{item.name: tensors[item.key] for item in self.inputs})
        else:
            structured = {item.name: tensors[item.key] for item in self.inputs}
            if self.input_style == LIST:
                structured = [structured[position] for position in range(len(self.inputs))]
            result = function(structured, *self.extra_args, **dict(self.extra_kwargs))
        outputs = {}
        for key, path in self.outputs:
            value = result
            for step in path:
                value = value[step]
            outputs[key] = value
        return outputs


def find_call_convention(
    model, is_tf1_hub: bool, signature: str | None, tensor_names: Mapping[str, str]
) -> CallConvention:
    """The first entry of the model that takes BERT's inputs; ModelError-ready CallMismatch if none.

    ``signature`` (``--signature``) names a signature or a function attribute to use alone;
    ``tensor_names`` (``--signature_tensors``) overrides the name of any pipeline tensor.
    """
    entries = (signature,) if signature else (TF1_HUB_SIGNATURE,) if is_tf1_hub else DEFAULT_ENTRIES
    reasons = []
    for entry in entries:
        try:
            return _bind_entry(model, entry, tensor_names)
        except CallMismatch as mismatch:
            reasons.append(f"{entry}: {mismatch}")
    raise CallMismatch("; ".join(reasons))


def _bind_entry(model, entry: str, tensor_names: Mapping[str, str]) -> CallConvention:
    signatures = getattr(model, "signatures", {})
    if entry in signatures:
        function = signatures[entry]
        return _bind_signature(entry, function.structured_input_signature[1],
                               function.structured_outputs, tensor_names)
    traces = list(_concrete_functions(getattr(model, entry, None)))
    if not traces:
        raise CallMismatch("no such signature or traced function")
    reasons = []
    for trace in traces:
        try:
            return _bind_trace(entry, trace, tensor_names)
        except CallMismatch as mismatch:
            reasons.append(str(mismatch))
    raise CallMismatch(" / ".join(dict.fromkeys(reasons)))


def _concrete_functions(function) -> Iterator:
    """The traces a restored ``tf.function`` holds (none for anything else)."""
    yield from getattr(function, "concrete_functions", None) or ()


def _bind_signature(entry: str, inputs: Mapping, outputs, tensor_names: Mapping[str, str]) -> CallConvention:
    bound = _bind_named_inputs(inputs, tensor_names)
    return CallConvention(
        entry=entry, is_signature=True, input_style=KEYWORDS, inputs=bound,
        outputs=_bind_outputs(outputs, tensor_names), fixed_length=_fixed_length(inputs, bound),
    )


def _bind_trace(entry: str, trace, tensor_names: Mapping[str, str]) -> CallConvention:
    import tensorflow as tf

    args, kwargs = trace.structured_input_signature
    names = _parameter_names(trace)
    if args and all(isinstance(arg, tf.TensorSpec) for arg in args) and len(args) > 1 and not kwargs:
        if len(names) < len(args):
            raise CallMismatch("positional tensor inputs without names")
        specs = dict(zip(names, args, strict=False))
        bound = _bind_named_inputs(specs, tensor_names)
        return CallConvention(entry=entry, is_signature=False, input_style=KEYWORDS, inputs=bound,
                              outputs=_bind_outputs(trace.structured_outputs, tensor_names),
                              fixed_length=_fixed_length(specs, bound))
    if not args:
        raise CallMismatch("takes no positional input")
    structured, extra = args[0], args[1:]
    for position, value in enumerate(extra, start=1):
        name = names[position] if position < len(names) else None
        if value is True and name in (None, "training"):
            raise CallMismatch("only traced with training=True")
    if kwargs.get("training") is True:
        raise CallMismatch("only traced with training=True")
    if any(isinstance(value, tf.TensorSpec) for value in (*extra, *kwargs.values())):
        raise CallMismatch("takes tensors beside its first argument")
    if isinstance(structured, Mapping):
        style, specs = DICT, dict(structured)
        bound = _bind_named_inputs(specs, tensor_names)
    elif isinstance(structured, (list, tuple)) and len(structured) in (2, 3):
        style, specs = LIST, dict(enumerate(structured))
        bound = tuple(ModelInput(key, position, _integer_dtype(spec, key))
                      for position, (key, spec) in enumerate(zip(LIST_INPUT_ORDER, structured,
                                                                 strict=False)))
    else:
        raise CallMismatch(f"its first argument is {type(structured).__name__}, not a dict or list "
                           "of input tensors")
    return CallConvention(
        entry=entry, is_signature=False, input_style=style, inputs=bound,
        outputs=_bind_outputs(trace.structured_outputs, tensor_names),
        extra_args=tuple(extra), extra_kwargs=tuple(sorted(kwargs.items())),
        extra_arg_names=tuple(names[1 : len(args)]) if len(names) >= len(args) else (),
        fixed_length=_fixed_length(specs, bound),
    )


def _parameter_names(trace) -> list[str]:
    """Parameter names of a trace, from its function type (empty where TensorFlow has none)."""
    function_type = getattr(trace, "function_type", None)
    parameters = getattr(function_type, "parameters", None) or {}
    return list(parameters)


def _integer_dtype(spec, key: str) -> str:
    if not _is_tensor_like(spec) or not spec.dtype.is_integer:
        raise CallMismatch(f"its input for {key} is {getattr(spec, 'dtype', spec)!r}, not an integer tensor")
    if spec.shape.rank not in (None, 2):
        raise CallMismatch(f"its input for {key} has shape {spec.shape}, not [batch, length]")
    if spec.shape.rank == 2 and spec.shape[0] is not None:
        raise CallMismatch(f"its input for {key} has a fixed batch size of {spec.shape[0]}")
    return spec.dtype.name


def _bind_named_inputs(specs: Mapping, tensor_names: Mapping[str, str]) -> tuple[ModelInput, ...]:
    bound: dict[str, ModelInput] = {}
    for key in INPUT_KEYS:
        asked = tensor_names.get(key)
        if asked is not None and asked not in specs:
            raise CallMismatch(f"no input {asked!r} for {key} (asked for with --signature_tensors); "
                               f"its inputs are {sorted(map(str, specs))}")
        name = asked or next((n for n in KNOWN_TENSOR_NAMES[key] if n in specs), None)
        if name is None:
            if key in REQUIRED_INPUTS:
                raise CallMismatch(f"no input for {key} among {sorted(map(str, specs))}; map one with "
                                   "--signature_tensors")
            continue
        bound[key] = ModelInput(key, name, _integer_dtype(specs[name], key))
    unknown = sorted(set(map(str, specs)) - {str(item.name) for item in bound.values()})
    if unknown:
        raise CallMismatch(f"inputs {unknown} are not BERT's; map them with --signature_tensors")
    return tuple(bound.values())


def _fixed_length(specs: Mapping, bound: tuple[ModelInput, ...]) -> int | None:
    lengths = {specs[item.name].shape[1] for item in bound if specs[item.name].shape.rank == 2}
    lengths.discard(None)
    if len(lengths) > 1:
        raise CallMismatch(f"its inputs have different fixed lengths {sorted(lengths)}")
    return lengths.pop() if lengths else None


def _bind_outputs(outputs, tensor_names: Mapping[str, str]) -> tuple[tuple[str, tuple], ...]:
    """Where pooled and sequence outputs are in the result: by name, else by rank."""
    if isinstance(outputs, Mapping):
        return _bind_named_outputs(outputs, tensor_names)
    if not isinstance(outputs, (list, tuple)):
        if _float_rank(outputs) != 3:
            raise CallMismatch(f"its one output {outputs} is not a [batch, length, hidden] tensor")
        return ((SEQUENCE_OUTPUT, ()),)
    ranks = [_float_rank(spec) for spec in outputs]
    if ranks.count(3) != 1 or ranks.count(2) > 1:
        raise CallMismatch(f"its unnamed outputs {list(outputs)} hold no single [batch, length, hidden] "
                           "tensor")
    found = [(POOLED_OUTPUT, (ranks.index(2),))] if 2 in ranks else []
    return (*found, (SEQUENCE_OUTPUT, (ranks.index(3),)))


def _bind_named_outputs(outputs: Mapping, tensor_names: Mapping[str, str]) -> tuple[tuple[str, tuple], ...]:
    found = []
    for key, rank in ((POOLED_OUTPUT, 2), (SEQUENCE_OUTPUT, 3)):
        asked = tensor_names.get(key)
        if asked is not None and asked not in outputs:
            raise CallMismatch(f"no output {asked!r} for {key} (asked for with --signature_tensors); "
                               f"its outputs are {sorted(outputs)}")
        for name in (asked,) if asked else KNOWN_TENSOR_NAMES[key]:
            value = outputs.get(name)
            if isinstance(value, (list, tuple)) and value and _float_rank(value[-1]) == rank:
                found.append((key, (name, len(value) - 1)))  # per-layer outputs: the last layer's
                break
            if value is not None and (asked or _float_rank(value) == rank):
                found.append((key, (name,)))
                break
    if SEQUENCE_OUTPUT not in dict(found):
        raise CallMismatch(f"no sequence output among its outputs {sorted(outputs)}; map one with "
                           "--signature_tensors sequence_output=NAME")
    return tuple(found)


def _is_tensor_like(value) -> bool:
    """A TensorSpec, or a graph tensor (TF1 signatures give those as their outputs)."""
    import tensorflow as tf

    return isinstance(value, (tf.TensorSpec, tf.Tensor))


def _float_rank(spec) -> int | None:
    if _is_tensor_like(spec) and spec.dtype.is_floating:
        return spec.shape.rank
    return None


def describe_callables(model) -> str:
    """Every signature and traced function of the model with its inputs and outputs, one per line."""
    lines = []
    for name, function in getattr(model, "signatures", {}).items():
        inputs = function.structured_input_signature[1]
        lines.append(f"  signature {name}: inputs {_describe_specs(inputs)} -> outputs "
                     f"{_describe_specs(function.structured_outputs)}")
    for name in (CALL, "serve"):
        for trace in _concrete_functions(getattr(model, name, None)):
            args, kwargs = trace.structured_input_signature
            shown = ", ".join([*(_describe_specs(arg) for arg in args),
                               *(f"{k}={_describe_specs(v)}" for k, v in sorted(kwargs.items()))])
            lines.append(f"  function {name}({shown}) -> {_describe_specs(trace.structured_outputs)}")
    return "\n".join(lines) or "  (no signatures or traced functions)"


def _describe_specs(value) -> str:
    if _is_tensor_like(value):
        dims = ",".join("?" if d is None else str(d) for d in value.shape) if value.shape.rank is not None \
            else "..."
        return f"{value.dtype.name}[{dims}]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k}: {_describe_specs(v)}" for k, v in sorted(value.items())) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_describe_specs(v) for v in value) + "]"
    return repr(value)
