//! Versioned ID-only export job messages on apalis (Redis or SQLite)
