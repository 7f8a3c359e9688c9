"""The end-of-run summary, read from the pipeline's Beam counters."""

from __future__ import annotations

from dataclasses import dataclass, field

from apache_beam.metrics.metric import MetricsFilter

from transforms import counters

__all__ = ["RunSummary", "summarize"]


@dataclass(frozen=True)
class RunSummary:
    """Counter totals of one finished run."""

    counters: dict[str, int]
    output_prefix: str
    dead_letter_prefix: str
    wall_seconds: float = 0.0
    # Sums of the bert-beam distributions (load_model_latency_milli_secs, batch_latency_ms), over all workers.
    distribution_sums: dict[str, int] = field(default_factory=dict)

    def __getitem__(self, name: str) -> int:
        return self.counters.get(name, 0)

    @property
    def accounted(self) -> bool:
        """True when every document read was embedded, rejected or skipped (embedded by an earlier
        run), and every window was written or dead-lettered, exactly once."""
        documents = self[counters.DOCUMENTS_READ] == (
            self[counters.DOCUMENTS_EMBEDDED] + self[counters.DOCUMENTS_REJECTED]
            + self[counters.DOCUMENTS_SKIPPED])
        windows = self[counters.WINDOWS] == self[counters.RECORDS_WRITTEN] + self[counters.WINDOWS_REJECTED]
        return documents and windows

    def line(self) -> str:
        """One line of counts; ``skipped N`` and the windows dead-lettered appear when there are any."""
        failed = self[counters.WINDOWS_REJECTED]
        windows = f", {failed} window{'' if failed == 1 else 's'} dead-lettered at inference"
        skipped = self[counters.DOCUMENTS_SKIPPED]
        return (
            f"bert-beam: read {self[counters.DOCUMENTS_READ]}, "
            f"{f'skipped {skipped} (embedded earlier), ' if skipped else ''}"
            f"embedded {self[counters.DOCUMENTS_EMBEDDED]} "
            f"({self[counters.RECORDS_WRITTEN]} records, {self[counters.DOCUMENTS_TRUNCATED]} truncated, "
            f"{self[counters.DOCUMENTS_WINDOWED]} windowed), "
            f"rejected {self[counters.DOCUMENTS_REJECTED]}"
            f"{windows if failed else ''}"
            f"{'' if self.accounted else ' (COUNTS DO NOT ADD UP)'}; "
            f"output {self.output_prefix}-*, dead letters {self.dead_letter_prefix}-*"
        )

    def report(self) -> str:
        """Throughput, padding efficiency and where the time went, in a few lines."""
        seconds = max(self.wall_seconds, 1e-9)
        real, padded = self[counters.REAL_TOKENS], self[counters.PADDED_TOKENS]
        model_seconds = self.distribution_sums.get(counters.BATCH_LATENCY_MS, 0) / 1000
        load_seconds = self.distribution_sums.get(counters.MODEL_LOAD_MS, 0) / 1000
        computed = real + padded
        skipped = self[counters.DOCUMENTS_SKIPPED]
        return "\n".join([
            f"bert-beam report: {self[counters.RECORDS_WRITTEN]} records in {self.wall_seconds:.1f} s: "
            f"{self[counters.DOCUMENTS_EMBEDDED] / seconds:.1f} documents/s, "
            f"{real / seconds:.0f} real tokens/s",
            *([f"  skipped: {skipped} documents already embedded in --skip_embedded_in outputs"]
              if skipped else []),
            f"  padding: {real} real of {computed} computed tokens "
            f"({computed / real if real else 0:.2f} computed per real token)",
            f"  model: {self[counters.BATCHES]} batches, {model_seconds:.1f} s in model calls "
            f"(summed over workers; {model_seconds / seconds:.0%} of the wall time), "
            f"{load_seconds:.1f} s loading models",
        ])


def summarize(result, output_prefix: str, dead_letter_prefix: str, wall_seconds: float = 0.0) -> RunSummary:
    """Sums the committed value of every bert-beam counter and distribution of a finished run."""
    query = result.metrics().query(MetricsFilter().with_namespace(counters.NAMESPACE))
    totals = dict.fromkeys(counters.SUMMARY_COUNTERS, 0)
    for counter in query["counters"]:
        value = counter.committed if counter.committed is not None else counter.attempted
        name = counter.key.metric.name
        totals[name] = totals.get(name, 0) + int(value or 0)
    sums: dict[str, int] = {}
    for distribution in query["distributions"]:
        value = distribution.committed if distribution.committed is not None else distribution.attempted
        name = distribution.key.metric.name
        sums[name] = sums.get(name, 0) + int(getattr(value, "sum", 0) or 0)
    return RunSummary(totals, output_prefix, dead_letter_prefix, wall_seconds, sums)
