//! Initial schema: projects, keys, users (+ login id index table), export tasks, idempotency keys.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;
use sea_orm_migration::sea_orm::{DbBackend, Statement};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Projects {
    Table,
    Id,
    Name,
    CreatedAt,
}

#[derive(DeriveIden)]
enum ManagementKeys {
    Table,
    Id,
    ProjectId,
    KeyHash,
    CreatedAt,
}

#[derive(DeriveIden)]
enum SigningKeys {
    Table,
    ProjectId,
    Kid,
    PublicJwk,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Users {
    Table,
    Seq,
    ProjectId,
    UserId,
    LoginIds,
    Username,
    Email,
    EmailVerified,
    Phone,
    PhoneVerified,
    Name,
    GivenName,
    MiddleName,
    FamilyName,
    Nickname,
    Picture,
    Gender,
    Birthdate,
    Zoneinfo,
    Locale,
    Website,
    Profile,
    Address,
    Status,
    Test,
    Roles,
    Tenants,
    CustomAttributes,
    SsoAppIds,
    Authenticators,
    CreatedAt,
    UpdatedAt,
    LastLoginAt,
    LoginsCount,
}

#[derive(DeriveIden)]
enum UserLoginIds {
    Table,
    ProjectId,
    LoginId,
    UserSeq,
}

#[derive(DeriveIden)]
enum ExportTasks {
    Table,
    Seq,
    Id,
    JobAlias,
    ProjectId,
    Dialect,
    Status,
    Spec,
    Request,
    RowsWritten,
    RowsTotal,
    BytesWritten,
    Attempts,
    LeaseOwner,
    LeaseExpiresAt,
    CancelRequested,
    ObjectKey,
    UploadId,
    DownloadUrl,
    DownloadUrlExpiresAt,
    Error,
    CreatedAt,
    StartedAt,
    FinishedAt,
    ExpiresAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum IdempotencyKeys {
    Table,
    ProjectId,
    Key,
    RequestHash,
    TaskId,
    CreatedAt,
}

fn index<T: IntoIden + 'static>(name: &str, table: T, cols: Vec<DynIden>, unique: bool) -> IndexCreateStatement {
    let mut idx = Index::create();
    idx.name(name).table(table);
    for c in cols {
        idx.col(c);
    }
    if unique {
        idx.unique();
    }
    idx.take()
}

fn iden<T: IntoIden>(c: T) -> DynIden {
    c.into_iden()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(Projects::Table)
                .col(text(Projects::Id).primary_key())
                .col(text(Projects::Name))
                .col(timestamp_with_time_zone(Projects::CreatedAt))
                .take(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(ManagementKeys::Table)
                .col(big_pk_auto(ManagementKeys::Id))
                .col(text(ManagementKeys::ProjectId))
                .col(text_uniq(ManagementKeys::KeyHash))
                .col(timestamp_with_time_zone(ManagementKeys::CreatedAt))
                .take(),
        )
        .await?;
        m.create_index(index(
            "idx_management_keys_project",
            ManagementKeys::Table,
            vec![iden(ManagementKeys::ProjectId)],
            false,
        ))
        .await?;

        m.create_table(
            Table::create()
                .table(SigningKeys::Table)
                .col(text(SigningKeys::ProjectId))
                .col(text(SigningKeys::Kid))
                .col(text(SigningKeys::PublicJwk))
                .col(timestamp_with_time_zone(SigningKeys::CreatedAt))
                .primary_key(Index::create().col(SigningKeys::ProjectId).col(SigningKeys::Kid))
                .take(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(Users::Table)
                .col(big_pk_auto(Users::Seq))
                .col(text(Users::ProjectId))
                .col(text(Users::UserId))
                .col(text(Users::LoginIds))
                .col(text_null(Users::Username))
                .col(text_null(Users::Email))
                .col(boolean(Users::EmailVerified))
                .col(text_null(Users::Phone))
                .col(boolean(Users::PhoneVerified))
                .col(text_null(Users::Name))
                .col(text_null(Users::GivenName))
                .col(text_null(Users::MiddleName))
                .col(text_null(Users::FamilyName))
                .col(text_null(Users::Nickname))
                .col(text_null(Users::Picture))
                .col(text_null(Users::Gender))
                .col(text_null(Users::Birthdate))
                .col(text_null(Users::Zoneinfo))
                .col(text_null(Users::Locale))
                .col(text_null(Users::Website))
                .col(text_null(Users::Profile))
                .col(text_null(Users::Address))
                .col(text(Users::Status))
                .col(boolean(Users::Test))
                .col(text(Users::Roles))
                .col(text(Users::Tenants))
                .col(text(Users::CustomAttributes))
                .col(text(Users::SsoAppIds))
                .col(text(Users::Authenticators))
                .col(timestamp_with_time_zone(Users::CreatedAt))
                .col(timestamp_with_time_zone(Users::UpdatedAt))
                .col(timestamp_with_time_zone_null(Users::LastLoginAt))
                .col(big_integer(Users::LoginsCount))
                .take(),
        )
        .await?;
        m.create_index(index(
            "idx_users_project_seq",
            Users::Table,
            vec![iden(Users::ProjectId), iden(Users::Seq)],
            false,
        ))
        .await?;
        m.create_index(index(
            "idx_users_project_user_id",
            Users::Table,
            vec![iden(Users::ProjectId), iden(Users::UserId)],
            true,
        ))
        .await?;
        // No indexes on status or created_at: exports read keyset pages in `seq` order and apply those
        // filters to the page, so such indexes would only slow every insert (they halved COPY
        // throughput when measured) for the benefit of `count_users`.
        // Email filters are ASCII-case-insensitive, so the email index is on the ASCII-lowercased email,
        // written exactly as the store's queries write it (SQLite's `lower` folds ASCII only).
        let email_index = match m.get_database_backend() {
            DbBackend::Postgres => {
                "CREATE INDEX idx_users_project_email ON users (project_id, \
                 translate(email, 'ABCDEFGHIJKLMNOPQRSTUVWXYZ', 'abcdefghijklmnopqrstuvwxyz'))"
            }
            _ => "CREATE INDEX idx_users_project_email ON users (project_id, lower(email))",
        };
        m.get_connection().execute_raw(Statement::from_string(m.get_database_backend(), email_index)).await?;

        m.create_table(
            Table::create()
                .table(UserLoginIds::Table)
                .col(text(UserLoginIds::ProjectId))
                .col(text(UserLoginIds::LoginId))
                .col(big_integer(UserLoginIds::UserSeq))
                .primary_key(Index::create().col(UserLoginIds::ProjectId).col(UserLoginIds::LoginId))
                .take(),
        )
        .await?;
        m.create_index(index("idx_user_login_ids_seq", UserLoginIds::Table, vec![iden(UserLoginIds::UserSeq)], false))
            .await?;

        m.create_table(
            Table::create()
                .table(ExportTasks::Table)
                .col(big_pk_auto(ExportTasks::Seq))
                .col(text_uniq(ExportTasks::Id))
                .col(text_uniq(ExportTasks::JobAlias))
                .col(text(ExportTasks::ProjectId))
                .col(text(ExportTasks::Dialect))
                .col(text(ExportTasks::Status))
                .col(text(ExportTasks::Spec))
                .col(text(ExportTasks::Request))
                .col(big_integer(ExportTasks::RowsWritten))
                .col(big_integer_null(ExportTasks::RowsTotal))
                .col(big_integer(ExportTasks::BytesWritten))
                .col(big_integer(ExportTasks::Attempts))
                .col(text_null(ExportTasks::LeaseOwner))
                .col(timestamp_with_time_zone_null(ExportTasks::LeaseExpiresAt))
                .col(boolean(ExportTasks::CancelRequested))
                .col(text_null(ExportTasks::ObjectKey))
                .col(text_null(ExportTasks::UploadId))
                .col(text_null(ExportTasks::DownloadUrl))
                .col(timestamp_with_time_zone_null(ExportTasks::DownloadUrlExpiresAt))
                .col(text_null(ExportTasks::Error))
                .col(timestamp_with_time_zone(ExportTasks::CreatedAt))
                .col(timestamp_with_time_zone_null(ExportTasks::StartedAt))
                .col(timestamp_with_time_zone_null(ExportTasks::FinishedAt))
                .col(timestamp_with_time_zone_null(ExportTasks::ExpiresAt))
                .col(timestamp_with_time_zone(ExportTasks::UpdatedAt))
                .take(),
        )
        .await?;
        m.create_index(index(
            "idx_export_tasks_project_seq",
            ExportTasks::Table,
            vec![iden(ExportTasks::ProjectId), iden(ExportTasks::Seq)],
            false,
        ))
        .await?;
        m.create_index(index(
            "idx_export_tasks_status_lease",
            ExportTasks::Table,
            vec![iden(ExportTasks::Status), iden(ExportTasks::LeaseExpiresAt)],
            false,
        ))
        .await?;
        m.create_index(index(
            "idx_export_tasks_status_expires",
            ExportTasks::Table,
            vec![iden(ExportTasks::Status), iden(ExportTasks::ExpiresAt)],
            false,
        ))
        .await?;

        m.create_table(
            Table::create()
                .table(IdempotencyKeys::Table)
                .col(text(IdempotencyKeys::ProjectId))
                .col(text(IdempotencyKeys::Key))
                .col(text(IdempotencyKeys::RequestHash))
                .col(text(IdempotencyKeys::TaskId))
                .col(timestamp_with_time_zone(IdempotencyKeys::CreatedAt))
                .primary_key(Index::create().col(IdempotencyKeys::ProjectId).col(IdempotencyKeys::Key))
                .take(),
        )
        .await?;
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table(IdempotencyKeys::Table).if_exists().take()).await?;
        m.drop_table(Table::drop().table(ExportTasks::Table).if_exists().take()).await?;
        m.drop_table(Table::drop().table(UserLoginIds::Table).if_exists().take()).await?;
        m.drop_table(Table::drop().table(Users::Table).if_exists().take()).await?;
        m.drop_table(Table::drop().table(SigningKeys::Table).if_exists().take()).await?;
        m.drop_table(Table::drop().table(ManagementKeys::Table).if_exists().take()).await?;
        m.drop_table(Table::drop().table(Projects::Table).if_exists().take()).await?;
        Ok(())
    }

    fn use_transaction(&self) -> Option<bool> {
        // SQLite supports transactional DDL too: a failed migration leaves nothing half-applied.
        Some(true)
    }
}
