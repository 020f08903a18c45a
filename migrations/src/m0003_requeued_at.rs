//! `export_tasks.requeued_at`: when the reconciler last put the task back on the queue.
//!
//! The reconciler re-enqueues a task the queue may have lost. Without a record of having done so it
//! would send the same task again every round for as long as a backlog keeps it waiting; with it, a
//! task is re-sent at most once per grace period (and once per lapsed lease).

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

/// Adds the nullable `requeued_at` column.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum ExportTasks {
    Table,
    RequeuedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(
            Table::alter()
                .table(ExportTasks::Table)
                .add_column(timestamp_with_time_zone_null(ExportTasks::RequeuedAt))
                .take(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(Table::alter().table(ExportTasks::Table).drop_column(ExportTasks::RequeuedAt).take()).await
    }
}
