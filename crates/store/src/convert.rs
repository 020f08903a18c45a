//! The one place where rows and domain values are mapped onto each other. A row that does not map back
//! is reported as [`StoreError::Corrupt`], never a panic.

use serde::Serialize;
use serde::de::DeserializeOwned;
use userexport_domain::{ErrorObject, ExportTask, JobAlias, Project, ProjectId, SigningKeyId, TaskId, User, UserId};

use crate::entity::{export_tasks, projects, users};
use crate::error::StoreError;

/// Serializes a value to JSON text.
pub(crate) fn to_json<T: Serialize + ?Sized>(what: &str, v: &T) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| StoreError::Corrupt(format!("cannot serialize {what}: {e}")))
}

/// Parses JSON text of a stored column.
pub(crate) fn from_json<T: DeserializeOwned>(what: &str, s: &str) -> Result<T, StoreError> {
    serde_json::from_str(s).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

fn parse<T>(what: &str, s: &str, f: impl FnOnce(&str) -> Result<T, String>) -> Result<T, StoreError> {
    f(s).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

/// A count as stored (saturating at `i64::MAX`).
pub(crate) fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn to_u64(what: &str, v: i64) -> Result<u64, StoreError> {
    u64::try_from(v).map_err(|_| StoreError::Corrupt(format!("{what} is negative ({v})")))
}

/// Row → [`Project`].
pub(crate) fn project(m: projects::Model) -> Result<Project, StoreError> {
    Ok(Project {
        id: parse("projects.id", &m.id, |s| ProjectId::parse(s).map_err(|e| e.to_string()))?,
        name: m.name,
        created_at: m.created_at,
    })
}

/// Parses a stored signing key id.
pub(crate) fn signing_key_id(s: &str) -> Result<SigningKeyId, StoreError> {
    parse("signing_keys.kid", s, |s| SigningKeyId::parse(s).map_err(|e| e.to_string()))
}

/// [`User`] → row, with the given internal sequence number.
pub(crate) fn user_model(project: &ProjectId, seq: i64, u: &User) -> Result<users::Model, StoreError> {
    Ok(users::Model {
        seq,
        project_id: project.as_str().to_owned(),
        user_id: u.id.as_str().to_owned(),
        login_ids: to_json("login_ids", &u.login_ids)?,
        username: u.username.clone(),
        email: u.email.clone(),
        email_verified: u.email_verified,
        phone: u.phone.clone(),
        phone_verified: u.phone_verified,
        name: u.name.clone(),
        given_name: u.given_name.clone(),
        middle_name: u.middle_name.clone(),
        family_name: u.family_name.clone(),
        nickname: u.nickname.clone(),
        picture: u.picture.clone(),
        gender: u.gender.clone(),
        birthdate: u.birthdate.clone(),
        zoneinfo: u.zoneinfo.clone(),
        locale: u.locale.clone(),
        website: u.website.clone(),
        profile: u.profile.clone(),
        address: u.address.as_ref().map(|a| to_json("address", a)).transpose()?,
        status: u.status.as_str().to_owned(),
        test: u.test,
        roles: to_json("roles", &u.roles)?,
        tenants: to_json("tenants", &u.tenants)?,
        custom_attributes: to_json("custom_attributes", &u.custom_attributes)?,
        sso_app_ids: to_json("sso_app_ids", &u.sso_app_ids)?,
        authenticators: to_json("authenticators", &u.authenticators)?,
        created_at: u.created_at,
        updated_at: u.updated_at,
        last_login_at: u.last_login_at,
        logins_count: u.logins_count,
    })
}

/// Row → [`User`].
pub(crate) fn user(m: users::Model) -> Result<User, StoreError> {
    let ctx = |col: &str| format!("users.{col} of seq {}", m.seq);
    Ok(User {
        id: parse(&ctx("user_id"), &m.user_id, |s| UserId::parse(s).map_err(|e| e.to_string()))?,
        login_ids: from_json(&ctx("login_ids"), &m.login_ids)?,
        username: m.username,
        email: m.email,
        email_verified: m.email_verified,
        phone: m.phone,
        phone_verified: m.phone_verified,
        name: m.name,
        given_name: m.given_name,
        middle_name: m.middle_name,
        family_name: m.family_name,
        nickname: m.nickname,
        picture: m.picture,
        gender: m.gender,
        birthdate: m.birthdate,
        zoneinfo: m.zoneinfo,
        locale: m.locale,
        website: m.website,
        profile: m.profile,
        address: m.address.as_deref().map(|a| from_json(&ctx("address"), a)).transpose()?,
        status: parse(&ctx("status"), &m.status, |s| s.parse())?,
        test: m.test,
        roles: from_json(&ctx("roles"), &m.roles)?,
        tenants: from_json(&ctx("tenants"), &m.tenants)?,
        custom_attributes: from_json(&ctx("custom_attributes"), &m.custom_attributes)?,
        sso_app_ids: from_json(&ctx("sso_app_ids"), &m.sso_app_ids)?,
        authenticators: from_json(&ctx("authenticators"), &m.authenticators)?,
        created_at: m.created_at,
        updated_at: m.updated_at,
        last_login_at: m.last_login_at,
        logins_count: m.logins_count,
    })
}

/// [`ExportTask`] → row (`seq` is left to the database).
pub(crate) fn task_model(t: &ExportTask) -> Result<export_tasks::Model, StoreError> {
    Ok(export_tasks::Model {
        seq: 0,
        id: t.id.as_str().to_owned(),
        job_alias: t.job_alias.as_str().to_owned(),
        project_id: t.project_id.as_str().to_owned(),
        dialect: t.dialect.as_str().to_owned(),
        status: t.status.as_str().to_owned(),
        spec: to_json("spec", &t.spec)?,
        request: to_json("request", &t.request)?,
        rows_written: to_i64(t.rows_written),
        rows_total: t.rows_total.map(to_i64),
        bytes_written: to_i64(t.bytes_written),
        attempts: i64::from(t.attempts),
        lease_owner: t.lease_owner.clone(),
        lease_expires_at: t.lease_expires_at,
        cancel_requested: t.cancel_requested,
        object_key: t.object_key.clone(),
        upload_id: t.upload_id.clone(),
        download_url: t.download_url.clone(),
        download_url_expires_at: t.download_url_expires_at,
        error: t.error.as_ref().map(|e| to_json("error", e)).transpose()?,
        created_at: t.created_at,
        started_at: t.started_at,
        finished_at: t.finished_at,
        expires_at: t.expires_at,
        updated_at: t.updated_at,
        requeued_at: None,
    })
}

/// Row → [`ExportTask`].
pub(crate) fn task(m: export_tasks::Model) -> Result<ExportTask, StoreError> {
    let ctx = |col: &str| format!("export_tasks.{col} of {}", m.id);
    Ok(ExportTask {
        id: parse(&ctx("id"), &m.id, |s| TaskId::parse(s).map_err(|e| e.to_string()))?,
        job_alias: parse(&ctx("job_alias"), &m.job_alias, |s| JobAlias::parse(s).map_err(|e| e.to_string()))?,
        project_id: parse(&ctx("project_id"), &m.project_id, |s| ProjectId::parse(s).map_err(|e| e.to_string()))?,
        dialect: parse(&ctx("dialect"), &m.dialect, |s| s.parse())?,
        spec: from_json(&ctx("spec"), &m.spec)?,
        request: from_json(&ctx("request"), &m.request)?,
        status: parse(&ctx("status"), &m.status, |s| s.parse())?,
        rows_written: to_u64(&ctx("rows_written"), m.rows_written)?,
        rows_total: m.rows_total.map(|v| to_u64(&ctx("rows_total"), v)).transpose()?,
        bytes_written: to_u64(&ctx("bytes_written"), m.bytes_written)?,
        attempts: u32::try_from(m.attempts)
            .map_err(|_| StoreError::Corrupt(format!("{} out of range ({})", ctx("attempts"), m.attempts)))?,
        lease_owner: m.lease_owner,
        lease_expires_at: m.lease_expires_at,
        cancel_requested: m.cancel_requested,
        object_key: m.object_key,
        upload_id: m.upload_id,
        download_url: m.download_url,
        download_url_expires_at: m.download_url_expires_at,
        error: m.error.as_deref().map(|e| from_json::<ErrorObject>(&ctx("error"), e)).transpose()?,
        created_at: m.created_at,
        started_at: m.started_at,
        finished_at: m.finished_at,
        expires_at: m.expires_at,
        updated_at: m.updated_at,
    })
}
