"""The end-of-run summary line and report."""

from __future__ import annotations

from pipeline.summary import RunSummary

COUNTERS = {"documents_read": 10, "documents_embedded": 8, "documents_rejected": 2, "windows": 9,
            "records_written": 9, "real_tokens": 900, "padded_tokens": 100, "batches": 3}


def test_line_says_when_counts_do_not_add_up():
    assert "DO NOT ADD UP" not in RunSummary(COUNTERS, "o", "d").line()
    broken = RunSummary({**COUNTERS, "documents_rejected": 1}, "o", "d")
    assert not broken.accounted and "COUNTS DO NOT ADD UP" in broken.line()


def test_windows_must_be_written_or_dead_lettered():
    lost = RunSummary({**COUNTERS, "windows": 12, "windows_rejected": 2}, "o", "d")
    assert not lost.accounted and "COUNTS DO NOT ADD UP" in lost.line()


def test_line_mentions_windows_dead_lettered_only_when_some_were():
    assert "dead-lettered" not in RunSummary(COUNTERS, "o", "d").line()
    one = RunSummary({**COUNTERS, "windows": 10, "windows_rejected": 1}, "o", "d")
    assert one.accounted and "rejected 2, 1 window dead-lettered at inference; " in one.line()
    three = RunSummary({**COUNTERS, "windows": 12, "windows_rejected": 3}, "o", "d")
    assert "rejected 2, 3 windows dead-lettered at inference; " in three.line()


def test_report_gives_throughput_padding_and_model_time():
    summary = RunSummary(COUNTERS, "o", "d", wall_seconds=4.0,
                         distribution_sums={"batch_latency_ms": 3000, "load_model_latency_milli_secs": 500})
    report = summary.report()
    assert "9 records in 4.0 s: 2.0 documents/s, 225 real tokens/s" in report
    assert "900 real of 1000 computed tokens (1.11 computed per real token)" in report
    assert "3 batches, 3.0 s in model calls" in report and "75% of the wall time" in report
    assert "0.5 s loading models" in report


def test_documents_skipped_as_embedded_earlier_count_in_the_accounting():
    skipped = {**COUNTERS, "documents_embedded": 5, "documents_skipped": 3}
    summary = RunSummary(skipped, "o", "d")
    assert summary.accounted
    assert summary.line().startswith("bert-beam: read 10, skipped 3 (embedded earlier), embedded 5 ")
    assert "DO NOT ADD UP" not in summary.line()
    lost = RunSummary({**skipped, "documents_skipped": 2}, "o", "d")
    assert not lost.accounted and "COUNTS DO NOT ADD UP" in lost.line()


def test_skipped_shows_in_the_line_and_report_only_when_some_were():
    assert "skipped" not in RunSummary(COUNTERS, "o", "d").line()
    assert "skipped" not in RunSummary(COUNTERS, "o", "d").report()
    report = RunSummary({**COUNTERS, "documents_embedded": 5, "documents_skipped": 3}, "o", "d", 4.0).report()
    assert "\n  skipped: 3 documents already embedded in --skip_embedded_in outputs\n" in report
