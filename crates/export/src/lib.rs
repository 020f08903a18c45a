//! Streaming CSV / NDJSON encoders for user exports
