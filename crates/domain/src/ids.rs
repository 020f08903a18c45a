//! Typed, prefixed identifiers.
//!
//! Each id kind is a newtype over a `String` that can only be built by generating a new id or by
//! parsing a string of the right shape, so ids of different kinds cannot be mixed up.

use std::fmt;

use rand::Rng;
use serde::{Deserialize, Serialize};

const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const CROCKFORD: &[u8] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// Why a string is not a valid id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} `{value}`: expected {expected}")]
pub struct IdError {
    /// The id kind, e.g. `project id`.
    pub kind: &'static str,
    /// The rejected input (truncated to 80 chars).
    pub value: String,
    /// A description of the expected shape.
    pub expected: &'static str,
}

/// A byte → "is in `alphabet`" table, so parsing checks each byte with one lookup.
const fn byte_table(alphabet: &[u8]) -> [bool; 256] {
    let mut table = [false; 256];
    let mut i = 0;
    while i < alphabet.len() {
        table[alphabet[i] as usize] = true;
        i += 1;
    }
    table
}

fn random_chars(rng: &mut impl Rng, alphabet: &[u8], len: usize) -> String {
    (0..len).map(|_| alphabet[rng.random_range(0..alphabet.len())] as char).collect()
}

macro_rules! prefixed_id {
    ($(#[$doc:meta])* $name:ident, kind = $kind:literal, prefix = $prefix:literal, alphabet = $alpha:ident, len = $len:literal, expected = $expected:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// The id prefix.
            pub const PREFIX: &'static str = $prefix;

            /// A fresh random id.
            pub fn generate() -> Self {
                Self::generate_with(&mut rand::rng())
            }

            /// A fresh id drawn from `rng` (deterministic with a seeded rng).
            pub fn generate_with(rng: &mut impl Rng) -> Self {
                Self(format!("{}{}", $prefix, random_chars(rng, $alpha, $len)))
            }

            /// Parses an id, checking prefix, length and alphabet.
            pub fn parse(s: &str) -> Result<Self, IdError> {
                Self::check(s)?;
                Ok(Self(s.to_owned()))
            }

            /// Like [`parse`](Self::parse), storing the id in `self` (reusing its buffer) instead of a
            /// new value; `self` is unchanged on error.
            pub fn parse_into(&mut self, s: &str) -> Result<(), IdError> {
                Self::check(s)?;
                self.0.clear();
                self.0.push_str(s);
                Ok(())
            }

            fn check(s: &str) -> Result<(), IdError> {
                const ALLOWED: [bool; 256] = byte_table($alpha);
                let ok = s.len() == $prefix.len() + $len
                    && s.starts_with($prefix)
                    && s[$prefix.len()..].bytes().all(|b| ALLOWED[usize::from(b)]);
                if ok {
                    Ok(())
                } else {
                    Err(IdError { kind: $kind, value: s.chars().take(80).collect(), expected: $expected })
                }
            }

            /// The id as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::parse(s)
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                Self::parse(&s)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }
    };
}

prefixed_id!(
    /// A project (tenant). `P` + 27 base62 characters, like Descope project ids.
    ProjectId, kind = "project id", prefix = "P", alphabet = BASE62, len = 27,
    expected = "`P` followed by 27 letters or digits"
);

prefixed_id!(
    /// A user. `U` + 28 base62 characters, like Descope user ids.
    UserId, kind = "user id", prefix = "U", alphabet = BASE62, len = 28,
    expected = "`U` followed by 28 letters or digits"
);

prefixed_id!(
    /// An export task. `userexport_` + 32 Crockford base32 characters, like Authgear task ids.
    TaskId, kind = "task id", prefix = "userexport_", alphabet = CROCKFORD, len = 32,
    expected = "`userexport_` followed by 32 Crockford base32 characters"
);

prefixed_id!(
    /// A JWT signing key id (`kid`) registered for a project.
    SigningKeyId, kind = "signing key id", prefix = "key_", alphabet = BASE62, len = 20,
    expected = "`key_` followed by 20 letters or digits"
);

/// The Auth0-style alias of a task: `job_` + 16 base62 characters.
///
/// Every task gets one at creation so that the Auth0 dialect can show its own id shape while the
/// task underneath stays the same.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct JobAlias(String);

impl JobAlias {
    /// A fresh random alias.
    pub fn generate() -> Self {
        Self(format!("job_{}", random_chars(&mut rand::rng(), BASE62, 16)))
    }

    /// Parses `job_` + 16 letters or digits.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        if s.len() == 20 && s.starts_with("job_") && s[4..].bytes().all(|b| b.is_ascii_alphanumeric()) {
            Ok(Self(s.to_owned()))
        } else {
            Err(IdError {
                kind: "job id",
                value: s.chars().take(80).collect(),
                expected: "`job_` followed by 16 letters or digits",
            })
        }
    }

    /// The alias as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for JobAlias {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for JobAlias {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "JobAlias({})", self.0)
    }
}

impl TryFrom<String> for JobAlias {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, IdError> {
        Self::parse(&s)
    }
}

impl From<JobAlias> for String {
    fn from(id: JobAlias) -> String {
        id.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn generated_ids_parse_back() {
        for _ in 0..100 {
            let t = TaskId::generate();
            assert_eq!(TaskId::parse(t.as_str()).unwrap(), t);
            let p = ProjectId::generate();
            assert_eq!(p.as_str().len(), 28);
            assert_eq!(ProjectId::parse(p.as_str()).unwrap(), p);
            let j = JobAlias::generate();
            assert_eq!(JobAlias::parse(j.as_str()).unwrap(), j);
        }
    }

    #[test]
    fn task_ids_look_like_authgear() {
        let t = TaskId::generate();
        assert!(t.as_str().starts_with("userexport_"));
        assert_eq!(t.as_str().len(), 11 + 32);
        assert!(TaskId::parse("userexport_VWFAACAMB5V0BY1J7KK5NS3GV1TQAACQ").is_ok());
        // I, L, O, U are not Crockford digits.
        assert!(TaskId::parse("userexport_IWFAACAMB5V0BY1J7KK5NS3GV1TQAACQ").is_err());
    }

    #[test]
    fn wrong_shapes_are_rejected_with_a_reason() {
        let e = ProjectId::parse("Pshort").unwrap_err();
        assert!(e.to_string().contains("27 letters"));
        assert!(UserId::parse("").is_err());
        let mut id = UserId::generate();
        let other = UserId::generate();
        id.parse_into(other.as_str()).unwrap();
        assert_eq!(id, other);
        assert!(id.parse_into("nope").is_err());
        assert_eq!(id, other, "unchanged on error");
        assert!(TaskId::parse("job_coRQCC3MHztpuTlo").is_err());
        assert!(JobAlias::parse("job_coRQCC3MHztpuTlo").is_ok());
        assert!(JobAlias::parse("job_coRQCC3MHztpuTl!").is_err());
        assert!(serde_json::from_str::<UserId>("\"nope\"").is_err());
    }

    #[test]
    fn seeded_generation_is_deterministic() {
        let a = UserId::generate_with(&mut rand::rngs::StdRng::seed_from_u64(7));
        let b = UserId::generate_with(&mut rand::rngs::StdRng::seed_from_u64(7));
        assert_eq!(a, b);
    }
}
