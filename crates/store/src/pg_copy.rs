//! Postgres fast path for bulk user inserts: `COPY … FROM STDIN` (text format) in one transaction.
//!
//! Sequence numbers are reserved up front with `nextval`, so the `user_login_ids` rows can be copied
//! too without reading anything back. Any unique violation aborts the whole transaction.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use sea_orm::sqlx::{self, PgPool};
use userexport_domain::{ProjectId, User};

use crate::error::from_sqlx;
use crate::{StoreError, convert};

/// Bytes buffered before a chunk is sent to the server.
const SEND_CHUNK: usize = 1 << 20;

const USERS_COPY: &str = "COPY users (seq, project_id, user_id, login_ids, username, email, email_verified, \
    phone, phone_verified, name, given_name, middle_name, family_name, nickname, picture, gender, birthdate, \
    zoneinfo, locale, website, profile, address, status, test, roles, tenants, custom_attributes, sso_app_ids, \
    authenticators, created_at, updated_at, last_login_at, logins_count) FROM STDIN";

const LOGIN_IDS_COPY: &str = "COPY user_login_ids (project_id, login_id, user_seq) FROM STDIN";

/// Inserts `batch` with `COPY`; all or nothing. Unique violations surface as sea-orm `DbErr`s.
pub(crate) async fn insert_users(pool: &PgPool, project: &ProjectId, batch: &[User]) -> Result<u64, StoreError> {
    let mut tx = pool.begin().await.map_err(from_sqlx)?;
    let n = i64::try_from(batch.len()).unwrap_or(i64::MAX);
    let mut seqs: Vec<i64> =
        sqlx::query_scalar("SELECT nextval(pg_get_serial_sequence('users', 'seq')) FROM generate_series(1, $1)")
            .bind(n)
            .fetch_all(&mut *tx)
            .await
            .map_err(from_sqlx)?;
    if seqs.len() != batch.len() {
        return Err(StoreError::Corrupt(format!("reserved {} sequence numbers for {} users", seqs.len(), batch.len())));
    }
    seqs.sort_unstable();

    let mut copy = tx.copy_in_raw(USERS_COPY).await.map_err(from_sqlx)?;
    let mut buf = String::with_capacity(SEND_CHUNK + 4096);
    for (u, seq) in batch.iter().zip(&seqs) {
        write_user_row(&mut buf, &convert::user_model(project, *seq, u)?);
        if buf.len() >= SEND_CHUNK {
            copy.send(buf.as_bytes()).await.map_err(from_sqlx)?;
            buf.clear();
        }
    }
    if !buf.is_empty() {
        copy.send(buf.as_bytes()).await.map_err(from_sqlx)?;
        buf.clear();
    }
    copy.finish().await.map_err(from_sqlx)?;

    if batch.iter().any(|u| !u.login_ids.is_empty()) {
        let mut copy = tx.copy_in_raw(LOGIN_IDS_COPY).await.map_err(from_sqlx)?;
        for (u, seq) in batch.iter().zip(&seqs) {
            for login in &u.login_ids {
                field(&mut buf, project.as_str());
                buf.push('\t');
                field(&mut buf, login);
                let _ = writeln!(buf, "\t{seq}");
            }
            if buf.len() >= SEND_CHUNK {
                copy.send(buf.as_bytes()).await.map_err(from_sqlx)?;
                buf.clear();
            }
        }
        if !buf.is_empty() {
            copy.send(buf.as_bytes()).await.map_err(from_sqlx)?;
        }
        copy.finish().await.map_err(from_sqlx)?;
    }
    tx.commit().await.map_err(from_sqlx)?;
    Ok(batch.len() as u64)
}

/// Appends `s` escaped for the COPY text format.
fn field(buf: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '\\' => buf.push_str("\\\\"),
            '\n' => buf.push_str("\\n"),
            '\r' => buf.push_str("\\r"),
            '\t' => buf.push_str("\\t"),
            c => buf.push(c),
        }
    }
}

fn opt(buf: &mut String, s: &Option<String>) {
    match s {
        Some(s) => field(buf, s),
        None => buf.push_str("\\N"),
    }
}

fn boolean(buf: &mut String, b: bool) {
    buf.push(if b { 't' } else { 'f' });
}

/// Microseconds, truncated like sqlx's binary encoding, so both paths store the same instant.
fn timestamp(buf: &mut String, t: &DateTime<Utc>) {
    let _ = write!(buf, "{}", t.format("%Y-%m-%d %H:%M:%S%.6f+00"));
}

fn write_user_row(buf: &mut String, m: &crate::entity::users::Model) {
    let _ = write!(buf, "{}\t", m.seq);
    field(buf, &m.project_id);
    buf.push('\t');
    field(buf, &m.user_id);
    buf.push('\t');
    field(buf, &m.login_ids);
    buf.push('\t');
    opt(buf, &m.username);
    buf.push('\t');
    opt(buf, &m.email);
    buf.push('\t');
    boolean(buf, m.email_verified);
    buf.push('\t');
    opt(buf, &m.phone);
    buf.push('\t');
    boolean(buf, m.phone_verified);
    for s in [
        &m.name,
        &m.given_name,
        &m.middle_name,
        &m.family_name,
        &m.nickname,
        &m.picture,
        &m.gender,
        &m.birthdate,
        &m.zoneinfo,
        &m.locale,
        &m.website,
        &m.profile,
        &m.address,
    ] {
        buf.push('\t');
        opt(buf, s);
    }
    buf.push('\t');
    field(buf, &m.status);
    buf.push('\t');
    boolean(buf, m.test);
    for s in [&m.roles, &m.tenants, &m.custom_attributes, &m.sso_app_ids, &m.authenticators] {
        buf.push('\t');
        field(buf, s);
    }
    buf.push('\t');
    timestamp(buf, &m.created_at);
    buf.push('\t');
    timestamp(buf, &m.updated_at);
    buf.push('\t');
    match &m.last_login_at {
        Some(t) => timestamp(buf, t),
        None => buf.push_str("\\N"),
    }
    let _ = writeln!(buf, "\t{}", m.logins_count);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_format_escapes_separators() {
        let mut b = String::new();
        field(&mut b, "a\tb\nc\\d\re");
        assert_eq!(b, "a\\tb\\nc\\\\d\\re");
        let mut b = String::new();
        opt(&mut b, &None);
        assert_eq!(b, "\\N");
    }

    #[test]
    fn rows_have_one_field_per_column() {
        let u = userexport_domain::fake::user(3, 9);
        let m = convert::user_model(&ProjectId::generate(), 7, &u).unwrap();
        let mut b = String::new();
        write_user_row(&mut b, &m);
        assert!(b.ends_with('\n'));
        assert_eq!(b.trim_end_matches('\n').split('\t').count(), crate::entity::users::COLUMN_COUNT - 2);
    }
}
