"""Names of the Beam counters every stage reports, and their namespace."""

__all__ = ["BATCHES", "BATCH_LATENCY_MS", "DOCUMENTS_EMBEDDED", "DOCUMENTS_READ", "DOCUMENTS_REJECTED",
           "DOCUMENTS_SKIPPED", "DOCUMENTS_TRUNCATED", "DOCUMENTS_WINDOWED", "FILES_READ", "MODEL_LOAD_MS",
           "NAMESPACE", "PADDED_TOKENS", "REAL_TOKENS", "RECORDS_WHITENED", "RECORDS_WRITTEN",
           "SUMMARY_COUNTERS", "WINDOWS", "WINDOWS_REJECTED"]


NAMESPACE = "bert_beam"

DOCUMENTS_READ = "documents_read"
FILES_READ = "files_read"
DOCUMENTS_EMBEDDED = "documents_embedded"
DOCUMENTS_REJECTED = "documents_rejected"
# Documents --skip_embedded_in found embedded, all their windows, in an earlier run's output.
DOCUMENTS_SKIPPED = "documents_skipped"
# Windows dead-lettered at inference; a failed window 0 also counts its document as rejected.
WINDOWS_REJECTED = "windows_rejected"
DOCUMENTS_TRUNCATED = "documents_truncated"
DOCUMENTS_WINDOWED = "documents_windowed"
WINDOWS = "windows"
RECORDS_WRITTEN = "records_written"
# Records given a whitened_output (--whitening_dims).
RECORDS_WHITENED = "records_whitened"
REAL_TOKENS = "real_tokens"
PADDED_TOKENS = "padded_tokens"
# Recorded by Beam's RunInference in this namespace (the handler's get_metrics_namespace).
MODEL_LOAD_MS = "load_model_latency_milli_secs"
BATCHES = "batches"
BATCH_LATENCY_MS = "batch_latency_ms"

SUMMARY_COUNTERS = (
    DOCUMENTS_READ,
    DOCUMENTS_EMBEDDED,
    DOCUMENTS_REJECTED,
    DOCUMENTS_SKIPPED,
    DOCUMENTS_TRUNCATED,
    DOCUMENTS_WINDOWED,
    WINDOWS,
    WINDOWS_REJECTED,
    RECORDS_WRITTEN,
    RECORDS_WHITENED,
    REAL_TOKENS,
    PADDED_TOKENS,
    BATCHES,
)
