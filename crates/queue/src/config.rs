//! Queue connection settings.

use std::fmt;

/// Where the queue lives.
#[derive(Clone, PartialEq, Eq)]
pub enum QueueConfig {
    /// A Redis (≥ 6.2, no Cluster) server; all keys start with `<prefix>:`.
    Redis {
        /// `redis://[:password@]host:port[/db]` (or `rediss://`).
        url: String,
        /// Queue name and key prefix, e.g. `userexport:exports`.
        prefix: String,
    },
    /// The embedded mode: the same SQLite file as the main database.
    Sqlite {
        /// `sqlite://<path>?mode=rwc` (the database URL of the store).
        url: String,
        /// Queue name (the `job_type` column of apalis' `Jobs` table).
        prefix: String,
    },
}

impl QueueConfig {
    /// The queue name / key prefix.
    pub fn prefix(&self) -> &str {
        match self {
            QueueConfig::Redis { prefix, .. } | QueueConfig::Sqlite { prefix, .. } => prefix,
        }
    }

    /// `"redis"` or `"sqlite"`.
    pub fn backend_name(&self) -> &'static str {
        match self {
            QueueConfig::Redis { .. } => "redis",
            QueueConfig::Sqlite { .. } => "sqlite",
        }
    }
}

/// Hides the password of a `scheme://user:password@host` URL.
pub(crate) fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => {
            let userinfo = &rest[..at];
            let user = userinfo.split(':').next().unwrap_or("");
            let masked = if userinfo.contains(':') { format!("{user}:***") } else { "***".to_owned() };
            format!("{}{masked}{}", &url[..scheme_end + 3], &rest[at..])
        }
        None => url.to_owned(),
    }
}

impl fmt::Debug for QueueConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QueueConfig::Redis { url, prefix } => {
                f.debug_struct("Redis").field("url", &redact_url(url)).field("prefix", prefix).finish()
            }
            QueueConfig::Sqlite { url, prefix } => {
                f.debug_struct("Sqlite").field("url", url).field("prefix", prefix).finish()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords() {
        assert_eq!(redact_url("redis://:s3cret@h:6379/0"), "redis://:***@h:6379/0");
        assert_eq!(redact_url("redis://u:s3cret@h"), "redis://u:***@h");
        assert_eq!(redact_url("rediss://token@h"), "rediss://***@h");
        assert_eq!(redact_url("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
        assert_eq!(redact_url("redis://h/0?x=a@b"), "redis://h/0?x=a@b");
        let cfg = QueueConfig::Redis { url: "redis://:pw@h".into(), prefix: "q".into() };
        let dbg = format!("{cfg:?}");
        assert!(!dbg.contains("pw@"), "{dbg}");
    }
}
