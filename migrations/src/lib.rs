//! sea-orm migrations for Postgres and SQLite.
//!
//! The same migrations run on both backends. Timestamps are `timestamp with time zone` on Postgres and
//! sea-orm's RFC 3339 text on SQLite; JSON documents are stored as text on both.

pub use sea_orm_migration::MigratorTrait;
use sea_orm_migration::prelude::*;

mod m0001_init;
mod m0002_search_cursors;
mod m0003_requeued_at;
mod m0004_users_count_index;

/// All migrations of the service, in order. Run with `Migrator::up(&db, None)`.
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m0001_init::Migration),
            Box::new(m0002_search_cursors::Migration),
            Box::new(m0003_requeued_at::Migration),
            Box::new(m0004_users_count_index::Migration),
        ]
    }
}
