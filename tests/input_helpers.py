"""Runs ``ReadDocuments`` alone in a TestPipeline: outputs checked in the pipeline, counters returned."""

from __future__ import annotations

from collections.abc import Sequence

from apache_beam.metrics.metric import MetricsFilter
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from pipeline.inputs.sources import InputConfig, ReadDocuments
from transforms import counters
from transforms.records import EXCERPT_CHARS, STAGE_READ, Document, Rejected


def _rejected_like(expected: Sequence[tuple[str, str]]):
    """A matcher: the rejected are the ``(source, reason prefix)`` pairs expected, all at STAGE_READ."""

    def check(actual: list[Rejected]) -> None:
        got = sorted((r.source, r.reason) for r in actual)
        want = sorted(expected)
        assert [source for source, _ in got] == [source for source, _ in want], (got, want)
        for (source, reason), (_, prefix) in zip(got, want, strict=True):
            assert reason.startswith(prefix), (source, reason, prefix)
        assert all(r.stage == STAGE_READ and len(r.raw) <= EXCERPT_CHARS + 40 for r in actual)

    return check


def read_in_pipeline(pattern: str, config: InputConfig, documents: Sequence[Document],
                     rejected: Sequence[tuple[str, str]]) -> dict[str, int]:
    """Reads ``pattern`` with ``ReadDocuments``; asserts its outputs are ``documents`` and ``rejected``
    (``(source, reason prefix)`` pairs), and returns the bert-beam counters of the run."""
    pipeline = TestPipeline()
    read = pipeline | "ReadDocuments" >> ReadDocuments(pattern, config)
    assert_that(read.documents, equal_to(list(documents)), label="CheckDocuments")
    assert_that(read.rejected, _rejected_like(rejected), label="CheckRejected")
    result = pipeline.run()
    result.wait_until_finish()
    query = result.metrics().query(MetricsFilter().with_namespace(counters.NAMESPACE))
    totals: dict[str, int] = {}
    for counter in query["counters"]:
        name = counter.key.metric.name
        totals[name] = totals.get(name, 0) + int(counter.committed or 0)
    return totals
