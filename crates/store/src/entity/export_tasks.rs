//! `export_tasks`: one row per export; `seq` orders listings.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "export_tasks")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub seq: i64,
    #[sea_orm(unique)]
    pub id: String,
    #[sea_orm(unique)]
    pub job_alias: String,
    pub project_id: String,
    pub dialect: String,
    pub status: String,
    pub spec: String,
    pub request: String,
    pub rows_written: i64,
    pub rows_total: Option<i64>,
    pub bytes_written: i64,
    pub attempts: i64,
    pub lease_owner: Option<String>,
    pub lease_expires_at: Option<DateTimeUtc>,
    pub cancel_requested: bool,
    pub object_key: Option<String>,
    pub upload_id: Option<String>,
    pub download_url: Option<String>,
    pub download_url_expires_at: Option<DateTimeUtc>,
    pub error: Option<String>,
    pub created_at: DateTimeUtc,
    pub started_at: Option<DateTimeUtc>,
    pub finished_at: Option<DateTimeUtc>,
    pub expires_at: Option<DateTimeUtc>,
    pub updated_at: DateTimeUtc,
    pub requeued_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
