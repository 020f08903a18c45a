//! sea-orm migrations for Postgres and SQLite
