//! Search cursors: where page N of a user search starts, so that page N costs what page 1 costs.
//!
//! Descope's search API pages by number (`page`, `limit`). Each served page records the keyset
//! position after its last user under `(project, query key, page + 1)`; the next page starts there
//! instead of skipping rows. Rows are a cache: losing them only makes the next deep page walk again.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

/// Creates `user_search_cursors`.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum UserSearchCursors {
    Table,
    ProjectId,
    QueryKey,
    Page,
    Cursor,
    CreatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(UserSearchCursors::Table)
                .col(text(UserSearchCursors::ProjectId))
                .col(text(UserSearchCursors::QueryKey))
                .col(big_integer(UserSearchCursors::Page))
                .col(text(UserSearchCursors::Cursor))
                .col(timestamp_with_time_zone(UserSearchCursors::CreatedAt))
                .primary_key(
                    Index::create()
                        .col(UserSearchCursors::ProjectId)
                        .col(UserSearchCursors::QueryKey)
                        .col(UserSearchCursors::Page),
                )
                .take(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("idx_user_search_cursors_created_at")
                .table(UserSearchCursors::Table)
                .col(UserSearchCursors::CreatedAt)
                .take(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table(UserSearchCursors::Table).take()).await
    }
}
