"""What a run would submit, for ``--dry_run``: its resolved options and its job graph."""

from __future__ import annotations

import argparse
from collections.abc import Iterator, Mapping

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, TestOptions
from apache_beam.pipeline import AppliedPTransform, PipelineVisitor

from pipeline.options import ConfigurationError, parse_bool

__all__ = ["GRAPH_DEPTH", "describe_dry_run", "dry_run_requested", "graph_summary"]

GRAPH_DEPTH = 2


def dry_run_requested(options: PipelineOptions) -> bool:
    """Beam's own ``--dry_run`` (TestOptions), typed: its parser keeps "false" as a truthy string.

    The typed value is written back, so that the DataflowRunner, which skips submission
    when the option is truthy, never sees the string "false".
    """
    test = options.view_as(TestOptions)
    try:
        test.dry_run = parse_bool(test.dry_run or False)
    except argparse.ArgumentTypeError as error:
        raise ConfigurationError(f"--dry_run: {error}.") from error
    return test.dry_run


def describe_dry_run(options: PipelineOptions, pipeline: beam.Pipeline, plan_description: str,
                     resolved_flags: Mapping[str, object]) -> str:
    """The dry-run report: the plan, every option that differs from Beam's default with the plan's
    derived values (``resolved_flags``) in place of the defaults they replace, the graph."""
    lines = ["bert-beam: dry run; validated, nothing was run or submitted.", f"plan: {plan_description}",
             "pipeline options:"]
    lines += [f"  --{name}={value}" for name, value in _option_items(options, resolved_flags)]
    lines.append(f"job graph (transforms {GRAPH_DEPTH} levels deep, [resource hints]):")
    lines += [f"  {line}" for line in graph_summary(pipeline)]
    return "\n".join(lines)


def _option_items(options: PipelineOptions, resolved: Mapping[str, object]) -> Iterator[tuple[str, object]]:
    """(name, value) of every set or resolved option, sorted; a list option yields one pair per value."""
    for name, value in sorted({**options.get_all_options(drop_default=True), **resolved}.items()):
        for item in value if isinstance(value, list) else [value]:
            yield name, item


def graph_summary(pipeline: beam.Pipeline, depth: int = GRAPH_DEPTH) -> list[str]:
    """Full labels of the transforms ``depth`` levels deep, each with its resource hints."""
    visitor = _LabelCollector(depth)
    pipeline.visit(visitor)
    return visitor.lines


def _describe_hints(node: AppliedPTransform) -> str:
    """``accelerator=...; min_ram_bytes=...`` from a transform's hint URNs (``beam:resources:NAME:v1``)."""
    hints = sorted(node.resource_hints.items())
    return "; ".join(f"{urn.split(':')[2]}={value.decode()}" for urn, value in hints)


class _LabelCollector(PipelineVisitor):
    def __init__(self, depth: int) -> None:
        self._depth = depth
        self.lines: list[str] = []

    def enter_composite_transform(self, node: AppliedPTransform) -> None:
        self._add(node)

    def visit_transform(self, node: AppliedPTransform) -> None:
        self._add(node)

    def _add(self, node: AppliedPTransform) -> None:
        if not node.full_label or node.full_label.count("/") >= self._depth:
            return
        hints = _describe_hints(node)
        self.lines.append(f"{node.full_label} [{hints}]" if hints else node.full_label)
