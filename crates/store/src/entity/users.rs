//! `users`: scalar columns plus JSON-text columns; `seq` is the keyset cursor.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "users")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub seq: i64,
    pub project_id: String,
    pub user_id: String,
    pub login_ids: String,
    pub username: Option<String>,
    pub email: Option<String>,
    pub email_verified: bool,
    pub phone: Option<String>,
    pub phone_verified: bool,
    pub name: Option<String>,
    pub given_name: Option<String>,
    pub middle_name: Option<String>,
    pub family_name: Option<String>,
    pub nickname: Option<String>,
    pub picture: Option<String>,
    pub gender: Option<String>,
    pub birthdate: Option<String>,
    pub zoneinfo: Option<String>,
    pub locale: Option<String>,
    pub website: Option<String>,
    pub profile: Option<String>,
    pub address: Option<String>,
    pub status: String,
    pub test: bool,
    pub roles: String,
    pub tenants: String,
    pub custom_attributes: String,
    pub sso_app_ids: String,
    pub authenticators: String,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
    pub last_login_at: Option<DateTimeUtc>,
    pub logins_count: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

/// Number of columns, for bind-parameter budgeting of multi-row inserts.
pub const COLUMN_COUNT: usize = 35;
