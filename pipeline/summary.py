"""The end-of-run summary, read from the pipeline's Beam counters."""

from __future__ import annotations

from dataclasses import dataclass

from apache_beam.metrics.metric import MetricsFilter

from transforms import counters


@dataclass(frozen=True)
class RunSummary:
    """Counter totals of one finished run."""

    counters: dict[str, int]
    output_prefix: str
    dead_letter_prefix: str

    def __getitem__(self, name: str) -> int:
        return self.counters.get(name, 0)

    @property
    def accounted(self) -> bool:
        """True when every document read was embedded or rejected, exactly once."""
        return self[counters.DOCUMENTS_READ] == (
            self[counters.DOCUMENTS_EMBEDDED] + self[counters.DOCUMENTS_REJECTED]
        )

    def line(self) -> str:
        return (
            f"bert-beam: read {self[counters.DOCUMENTS_READ]}, "
            f"embedded {self[counters.DOCUMENTS_EMBEDDED]} "
            f"({self[counters.RECORDS_WRITTEN]} records, {self[counters.DOCUMENTS_TRUNCATED]} truncated, "
            f"{self[counters.DOCUMENTS_WINDOWED]} windowed), "
            f"rejected {self[counters.DOCUMENTS_REJECTED]}"
            f"{'' if self.accounted else ' (COUNTS DO NOT ADD UP)'}; "
            f"output {self.output_prefix}-*, dead letters {self.dead_letter_prefix}-*"
        )


def summarize(result, output_prefix: str, dead_letter_prefix: str) -> RunSummary:
    """Sums the committed value of every bert-beam counter of a finished pipeline result."""
    query = result.metrics().query(MetricsFilter().with_namespace(counters.NAMESPACE))
    totals = dict.fromkeys(counters.SUMMARY_COUNTERS, 0)
    for counter in query["counters"]:
        value = counter.committed if counter.committed is not None else counter.attempted
        name = counter.key.metric.name
        totals[name] = totals.get(name, 0) + int(value or 0)
    return RunSummary(totals, output_prefix, dead_letter_prefix)
