"""Names of the Beam counters every stage reports, and their namespace."""

NAMESPACE = "bert_beam"

DOCUMENTS_READ = "documents_read"
FILES_READ = "files_read"
DOCUMENTS_EMBEDDED = "documents_embedded"
DOCUMENTS_REJECTED = "documents_rejected"
# Windows dead-lettered at inference; a failed window 0 also counts its document as rejected.
WINDOWS_REJECTED = "windows_rejected"
DOCUMENTS_TRUNCATED = "documents_truncated"
DOCUMENTS_WINDOWED = "documents_windowed"
WINDOWS = "windows"
RECORDS_WRITTEN = "records_written"
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
    DOCUMENTS_TRUNCATED,
    DOCUMENTS_WINDOWED,
    WINDOWS,
    WINDOWS_REJECTED,
    RECORDS_WRITTEN,
    REAL_TOKENS,
    PADDED_TOKENS,
    BATCHES,
)
