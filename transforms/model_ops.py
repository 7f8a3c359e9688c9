"""Refuses models whose graphs run operations a BERT encoder never needs: files, summaries, I/O ...

A SavedModel is a TensorFlow program, run on every machine of a job. bert-beam walks the ops that
loading it runs (read from ``saved_model.pb`` before it is loaded: a TF1 graph's restore and init
ops, a TF2 model's resource functions and restore functions) and the ops of every function it will
call (once loaded, before the first call), and allows only the ops an encoder computes with. A walk
follows every function that an op names in its attributes (``StatefulPartitionedCall``'s ``f``,
``While``'s ``cond`` and ``body``, ``If``'s branches, ``Case``'s ``branches``) and every node that
calls a library function by its name, each function once.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence

__all__ = ["ENCODER_OPS", "LOADING_OPS", "called_ops", "loading_ops", "parse_op_names", "refusal"]

_LOG = logging.getLogger(__name__)

# What BERT-style encoders are made of: every op of the project's exports (TF1 Hub, TF2, each call
# convention, converted checkpoints, the demo's MiniLM), and their close relatives in TensorFlow's
# math, array, nn, control-flow, random and variable-read families that TF1 Hub BERTs, TF Hub's TF2
# encoders (Keras layers: Einsum, FusedBatchNormV3 layer norms, Erf GELUs, dropout in training traces)
# and Hugging Face or Keras 3 exports use. Nothing that touches files, the network, summaries, queues,
# readers, datasets, lookup tables, Python, printing or debugging; nothing that writes a variable.
ENCODER_OPS = frozenset({
    # graph plumbing
    "Const", "Placeholder", "PlaceholderWithDefault", "Identity", "IdentityN", "NoOp", "Snapshot",
    "StopGradient", "PreventGradient", "EnsureShape", "Assert",
    # variable and resource reads (VariableV2: the ref variables of TF1 modules such as google/bert_*)
    "ReadVariableOp", "VarHandleOp", "VariableV2", "VarIsInitializedOp", "VariableShape",
    "ResourceGather", "ResourceGatherNd",
    # function calls and control flow
    "StatefulPartitionedCall", "PartitionedCall", "While", "StatelessWhile", "If", "StatelessIf",
    "Case", "StatelessCase", "Switch", "Merge", "Enter", "Exit", "NextIteration", "LoopCond",
    "ControlTrigger", "TensorListReserve", "TensorListFromTensor", "TensorListStack",
    "TensorListGetItem", "TensorListSetItem", "TensorListPushBack", "TensorListPopBack",
    "TensorListLength", "TensorListElementShape", "TensorListConcatV2", "TensorListSplit",
    "TensorListGather", "TensorListScatterIntoExistingList",
    # math
    "Abs", "Add", "AddN", "AddV2", "All", "Any", "ApproximateEqual", "ArgMax", "ArgMin", "BatchMatMul",
    "BatchMatMulV2", "BatchMatMulV3", "Cast", "Ceil", "ClipByValue", "Cos", "Cumprod", "Cumsum", "Div",
    "DivNoNan", "Einsum", "Equal", "Erf", "Erfc", "Exp", "Expm1", "Floor", "FloorDiv", "FloorMod",
    "Greater", "GreaterEqual", "Inv", "IsFinite", "IsInf", "IsNan", "Less", "LessEqual", "Log", "Log1p",
    "LogicalAnd", "LogicalNot", "LogicalOr", "MatMul", "Max", "Maximum", "Mean", "Min", "Minimum", "Mod",
    "Mul", "MulNoNan", "Neg", "NotEqual", "Pow", "Prod", "Range", "RealDiv", "Reciprocal", "Rint",
    "Round", "Rsqrt", "Select", "SelectV2", "Sigmoid", "Sign", "Sin", "Sqrt", "Square",
    "SquaredDifference", "Sub", "Sum", "Tanh", "TruncateDiv",
    # nn
    "BiasAdd", "Elu", "FusedBatchNorm", "FusedBatchNormV2", "FusedBatchNormV3", "InTopKV2", "LeakyRelu",
    "LogSoftmax", "Relu", "Relu6", "Selu", "Softmax", "Softplus", "Softsign", "TopKV2",
    # array
    "Bitcast", "BroadcastArgs", "BroadcastTo", "Concat", "ConcatV2", "DynamicStitch", "ExpandDims",
    "Fill", "Gather", "GatherNd", "GatherV2", "InvertPermutation", "MatrixBandPart", "MatrixDiagV3",
    "MatrixSetDiagV3", "MirrorPad", "OneHot", "OnesLike", "Pack", "Pad", "PadV2",
    "ParallelDynamicStitch", "Rank", "Reshape", "ReverseV2", "Roll", "ScatterNd", "SegmentSum", "Shape",
    "ShapeN", "Size", "Slice", "Split", "SplitV", "Squeeze", "StridedSlice", "TensorScatterAdd",
    "TensorScatterUpdate", "Tile", "Transpose", "Unique", "Unpack", "UnsortedSegmentMax",
    "UnsortedSegmentSum", "Where", "ZerosLike",
    # random (dropout, in the training traces a TF2 model keeps beside its inference ones)
    "RandomStandardNormal", "RandomUniform", "RandomUniformInt", "RngReadAndSkip",
    "StatelessRandomGetAlg", "StatelessRandomGetKeyCounter", "StatelessRandomGetKeyCounterAlg",
    "StatelessRandomNormal", "StatelessRandomNormalV2", "StatelessRandomUniform",
    "StatelessRandomUniformV2", "StatelessTruncatedNormal", "StatelessTruncatedNormalV2",
    "TruncatedNormal",
})
# Loading also restores the variables from the model's own checkpoint and initialises them.
LOADING_OPS = ENCODER_OPS | {"RestoreV2", "Assign", "AssignVariableOp", "IsVariableInitialized"}

# A TF2 resource's functions: TensorFlow's loader runs them to create it, and when it is deleted.
_RESOURCE_FUNCTIONS = ("_create_resource", "_initialize", "_destroy_resource")
_INIT_OP_SIGNATURE = "__saved_model_init_op"
_INIT_OP_COLLECTIONS = ("saved_model_main_op", "legacy_init_op", "table_initializer")


def parse_op_names(text: str | None) -> tuple[str, ...]:
    """``WriteFile,ReadFile`` (``--allow_model_ops``) as op names, each one TensorFlow has."""
    import tensorflow as tf

    names = tuple(dict.fromkeys(filter(None, (part.strip() for part in (text or "").split(",")))))
    unknown = [name for name in names if not hasattr(tf.raw_ops, name)]
    if unknown:
        raise ValueError(f"--allow_model_ops names {', '.join(unknown)}: TensorFlow has no such operation "
                         "(names are case-sensitive, e.g. WriteFile).")
    return names


def loading_ops(saved_model) -> dict[str, Counter[str]]:
    """The ops that TensorFlow's loader runs of a ``SavedModel`` proto, by what runs them.

    A meta graph with an object graph is loaded as TF2, one without as TF1; every meta graph counts.
    """
    found: dict[str, Counter[str]] = {}
    for meta_graph in saved_model.meta_graphs:
        graph_def = meta_graph.graph_def
        library = {function.signature.name: function for function in graph_def.library.function}
        if meta_graph.object_graph_def.nodes:
            starts = {label: ([], names)
                      for label, names in _tf2_loading_functions(meta_graph.object_graph_def.nodes).items()}
        else:
            starts = {label: (_reachable_nodes(graph_def, roots), [])
                      for label, roots in _tf1_loading_roots(meta_graph).items()}
        for label, (nodes, functions) in starts.items():
            found.setdefault(label, Counter()).update(_op_counts(nodes, library, functions))
    return found


def called_ops(functions: Mapping[str, Sequence]) -> dict[str, Counter[str]]:
    """The ops of loaded concrete functions, by where they are called (``signature tokens``)."""
    found: dict[str, Counter[str]] = {}
    for label, traces in functions.items():
        found[label] = Counter()
        for trace in traces:
            graph_def = trace.graph.as_graph_def()
            library = {function.signature.name: function for function in graph_def.library.function}
            found[label].update(_op_counts(graph_def.node, library))
    return found


def refusal(
    found: Mapping[str, Counter[str]], allowed: frozenset[str], accepted: Iterable[str]
) -> str | None:
    """The sentence refusing the ops in ``found`` beyond ``allowed`` and ``accepted``, else None.

    Ops that only ``accepted`` (``--allow_model_ops``) lets through are logged as a warning.
    """
    accepted = frozenset(accepted)
    refused: Counter[str] = Counter()
    where = []
    for label, counts in found.items():
        beyond = Counter({op: count for op, count in counts.items() if op not in allowed})
        kept = Counter({op: count for op, count in beyond.items() if op in accepted})
        if kept:
            _LOG.warning("The model's %s runs %s, which --allow_model_ops accepts.", label, _listed(kept))
        if beyond - kept:
            refused.update(beyond - kept)
            where.append(label)
    if not refused:
        return None
    return (f"The model's {' and '.join(where)} {'runs' if len(where) == 1 else 'run'} operations a BERT "
            f"never needs: {_listed(refused)}. bert-beam refuses models that read or write files, write "
            "summaries, print, use queues or do anything but compute their outputs; pass --allow_model_ops "
            f"{','.join(sorted(refused))} to accept them if you trust the model.")


def _listed(counts: Counter[str]) -> str:
    return ", ".join(f"{op} ({count})" for op, count in sorted(counts.items()))


def _tf1_loading_roots(meta_graph) -> dict[str, list[str]]:
    """What TF1 loading runs: the saver's restore op, and the init op (the main or legacy init op, else
    the local variables' and tables' initializers; all of them are walked)."""
    from tensorflow.core.framework import variable_pb2

    collections = meta_graph.collection_def
    init = [tensor.name for tensor in meta_graph.signature_def[_INIT_OP_SIGNATURE].outputs.values()] \
        if _INIT_OP_SIGNATURE in meta_graph.signature_def else []
    init += [name for key in _INIT_OP_COLLECTIONS if key in collections
             for name in collections[key].node_list.value]
    if "local_variables" in collections:
        init += [variable_pb2.VariableDef.FromString(value).initializer_name
                 for value in collections["local_variables"].bytes_list.value]
    restore = meta_graph.saver_def.restore_op_name
    return {"restore op": [restore] if restore else [], "init op": init}


def _tf2_loading_functions(objects) -> dict[str, list[str]]:
    """What TF2 loading runs: its resources' functions and its saveables' restore functions."""
    resource_ids = [child.node_id for node in objects for child in node.children
                    if child.local_name in _RESOURCE_FUNCTIONS]
    restore_ids = [saveable.restore_function for node in objects
                   for saveable in node.saveable_objects.values()]
    return {"resource function": _concrete_function_names(objects, resource_ids),
            "restore function": _concrete_function_names(objects, restore_ids)}


def _concrete_function_names(objects, ids: Iterable[int]) -> list[str]:
    """The concrete functions of the object graph's function nodes ``ids``."""
    names: list[str] = []
    for node in (objects[index] for index in ids):
        kind = node.WhichOneof("kind")
        if kind == "function":
            names.extend(node.function.concrete_functions)
        elif kind == "bare_concrete_function":
            names.append(node.bare_concrete_function.concrete_function_name)
    return names


def _reachable_nodes(graph_def, roots: Iterable[str]) -> list:
    """The nodes that running ``roots`` (op or tensor names) runs: their data and control inputs."""
    nodes = {node.name: node for node in graph_def.node}
    pending = [root.lstrip("^").split(":")[0] for root in roots]
    seen: set[str] = set()
    while pending:
        name = pending.pop()
        if name in seen or name not in nodes:
            continue
        seen.add(name)
        pending.extend(source.lstrip("^").split(":")[0] for source in nodes[name].input)
    return [nodes[name] for name in seen]


def _op_counts(nodes: Iterable, library: Mapping, functions: Iterable[str] = ()) -> Counter[str]:
    """Ops of ``nodes`` and of the functions named, and of every library function they reach.

    A function the library lacks counts as an op of its name, so it is never allowed.
    """
    counts: Counter[str] = Counter()
    seen: set[str] = set()
    stack = [list(nodes)]

    def call(name: str) -> None:
        if name not in seen:
            seen.add(name)
            if name in library:
                stack.append(library[name].node_def)
            else:
                counts[name] += 1

    for name in functions:
        call(name)
    while stack:
        for node in stack.pop():
            if node.op in library:  # TensorFlow refuses functions named like an op
                call(node.op)
            else:
                counts[node.op] += 1
            for value in node.attr.values():
                for name in _called_functions(value):
                    call(name)
    return counts


def _called_functions(value) -> Iterator[str]:
    """Function names in an attr value: ``func``, ``list(func)``, and those their own attrs name."""
    kind = value.WhichOneof("value")
    items = [value.func] if kind == "func" else value.list.func if kind == "list" else []
    for item in items:
        yield item.name
        for nested in item.attr.values():
            yield from _called_functions(nested)
