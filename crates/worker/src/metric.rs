//! Names of the metrics the worker records (Prometheus, through the `metrics` facade).
//!
//! Export counters carry `dialect` (`native`, `authgear`, `auth0`, `descope`; `unknown` when the
//! task row could not be read) and `format` (`csv`, `ndjson`) labels. [`describe`] registers the
//! help texts; the process that installs the recorder calls it once.

/// Counter: exports completed.
pub const EXPORTS_COMPLETED: &str = "userexport_exports_completed_total";
/// Counter: exports that failed for good.
pub const EXPORTS_FAILED: &str = "userexport_exports_failed_total";
/// Counter: exports cancelled by their worker on request.
pub const EXPORTS_CANCELLED: &str = "userexport_exports_cancelled_total";
/// Counter: exports whose file passed retention and was deleted.
pub const EXPORTS_EXPIRED: &str = "userexport_exports_expired_total";
/// Counter: rows written by completed exports.
pub const ROWS_EXPORTED: &str = "userexport_rows_exported_total";
/// Counter: bytes written by completed exports.
pub const BYTES_EXPORTED: &str = "userexport_bytes_exported_total";
/// Histogram (seconds): duration of completed exports, claim to completion.
pub const EXPORT_DURATION: &str = "userexport_export_duration_seconds";
/// Histogram (seconds): the phases of a completed export, by `phase`: `starting` (claim, count,
/// upload started), `streaming` (read, encode, upload every part), `completing` (the storage
/// publishes the object). Where an export's time goes; `userexport bench` reads it.
pub const EXPORT_PHASE_DURATION: &str = "userexport_export_phase_seconds";
/// Histogram (seconds): duration of one multipart part upload (recorded by the pipeline).
pub const UPLOAD_PART_DURATION: &str = "userexport_upload_part_seconds";
/// Gauge: export attempts running in this process.
pub const WORKER_IN_FLIGHT: &str = "userexport_worker_in_flight";
/// Gauge: export jobs waiting in the queue (sampled by every maintenance round).
pub const QUEUE_DEPTH: &str = "userexport_queue_depth";

/// Registers the help text of every worker metric with the installed recorder, and starts the
/// in-flight gauge at 0 so it is scraped before the first job.
pub fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(EXPORTS_COMPLETED, "Exports completed, by dialect and format.");
    describe_counter!(EXPORTS_FAILED, "Exports that failed for good, by dialect and format.");
    describe_counter!(EXPORTS_CANCELLED, "Exports cancelled while processing, by dialect and format.");
    describe_counter!(EXPORTS_EXPIRED, "Exports past retention whose file was deleted, by dialect and format.");
    describe_counter!(ROWS_EXPORTED, "Rows written by completed exports, by dialect and format.");
    describe_counter!(BYTES_EXPORTED, Unit::Bytes, "Bytes written by completed exports, by dialect and format.");
    describe_histogram!(EXPORT_DURATION, Unit::Seconds, "Duration of completed exports, by dialect and format.");
    describe_histogram!(
        EXPORT_PHASE_DURATION,
        Unit::Seconds,
        "Phases of completed exports (starting, streaming, completing), by phase."
    );
    describe_histogram!(UPLOAD_PART_DURATION, Unit::Seconds, "Duration of one multipart part upload.");
    describe_gauge!(WORKER_IN_FLIGHT, "Export attempts running in this process.");
    describe_gauge!(QUEUE_DEPTH, "Export jobs waiting in the queue.");
    metrics::gauge!(WORKER_IN_FLIGHT).increment(0.0);
}
