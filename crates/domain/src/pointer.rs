//! RFC 6901 JSON pointers, and the Auth0 dotted-path syntax translated into them.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Why a string is not a valid JSON pointer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid JSON pointer `{input}` at byte {position}: {reason}")]
pub struct PointerError {
    /// The rejected input (truncated to 200 chars).
    pub input: String,
    /// Byte offset of the problem.
    pub position: usize,
    /// What is wrong there.
    pub reason: String,
}

/// A parsed RFC 6901 JSON pointer such as `/address/formatted` or `/identities/0/login_id/value`.
///
/// The empty pointer `""` refers to the whole document; `"/"` refers to the key `""`.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct JsonPointer {
    raw: String,
    tokens: Vec<String>,
}

impl JsonPointer {
    /// Parses a pointer, unescaping `~1` to `/` and `~0` to `~`.
    pub fn parse(s: &str) -> Result<Self, PointerError> {
        let err =
            |position: usize, reason: String| PointerError { input: s.chars().take(200).collect(), position, reason };
        if s.is_empty() {
            return Ok(Self { raw: String::new(), tokens: Vec::new() });
        }
        if !s.starts_with('/') {
            let found = s.chars().next().unwrap_or(' ');
            return Err(err(0, format!("expecting `/` but found `{found}`")));
        }
        let mut tokens = Vec::new();
        let mut offset = 1;
        for part in s[1..].split('/') {
            let mut token = String::with_capacity(part.len());
            let mut chars = part.char_indices().peekable();
            while let Some((i, c)) = chars.next() {
                if c == '~' {
                    match chars.next() {
                        Some((_, '0')) => token.push('~'),
                        Some((_, '1')) => token.push('/'),
                        Some((_, other)) => {
                            return Err(err(
                                offset + i,
                                format!("`~` must be followed by `0` or `1`, found `{other}`"),
                            ));
                        }
                        None => {
                            return Err(err(offset + i, "`~` at end of token must be followed by `0` or `1`".into()));
                        }
                    }
                } else {
                    token.push(c);
                }
            }
            offset += part.len() + 1;
            tokens.push(token);
        }
        Ok(Self { raw: s.to_owned(), tokens })
    }

    /// Builds a pointer from unescaped tokens.
    pub fn from_tokens<I, S>(tokens: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let tokens: Vec<String> = tokens.into_iter().map(Into::into).collect();
        let raw = tokens.iter().map(|t| format!("/{}", t.replace('~', "~0").replace('/', "~1"))).collect();
        Self { raw, tokens }
    }

    /// Translates an Auth0 field path (`user_metadata.plan`, `identities[0].connection`) into a pointer.
    pub fn from_auth0_path(path: &str) -> Result<Self, PointerError> {
        let err = |position: usize, reason: &str| PointerError {
            input: path.chars().take(200).collect(),
            position,
            reason: reason.to_owned(),
        };
        if path.is_empty() {
            return Err(err(0, "the path is empty"));
        }
        let mut tokens = Vec::new();
        let mut current = String::new();
        let mut chars = path.char_indices().peekable();
        let mut after_index = false;
        while let Some((i, c)) = chars.next() {
            match c {
                '.' => {
                    if current.is_empty() && !after_index {
                        return Err(err(i, "empty path segment"));
                    }
                    if !current.is_empty() {
                        tokens.push(std::mem::take(&mut current));
                    }
                    after_index = false;
                    if chars.peek().is_none() {
                        return Err(err(i, "the path ends with `.`"));
                    }
                }
                '[' => {
                    if current.is_empty() && !after_index {
                        return Err(err(i, "`[` must follow a field name"));
                    }
                    if !current.is_empty() {
                        tokens.push(std::mem::take(&mut current));
                    }
                    let mut digits = String::new();
                    loop {
                        match chars.next() {
                            Some((_, d)) if d.is_ascii_digit() => digits.push(d),
                            Some((_, ']')) if !digits.is_empty() => break,
                            Some((j, _)) => return Err(err(j, "array index must be digits closed by `]`")),
                            None => return Err(err(path.len(), "unclosed `[`")),
                        }
                    }
                    tokens.push(digits);
                    after_index = true;
                }
                ']' => return Err(err(i, "unexpected `]`")),
                _ => {
                    if after_index {
                        return Err(err(i, "expected `.` or `[` after `]`"));
                    }
                    current.push(c)
                }
            }
        }
        if !current.is_empty() {
            tokens.push(current);
        }
        Ok(Self::from_tokens(tokens))
    }

    /// The pointer as written (escaped).
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// The unescaped reference tokens.
    pub fn tokens(&self) -> &[String] {
        &self.tokens
    }

    /// The default CSV header: the unescaped tokens joined with `.` (Authgear's rule).
    pub fn header_name(&self) -> String {
        self.tokens.join(".")
    }

    /// Evaluates the pointer against `doc`. Missing keys and out-of-range indices give `None`.
    pub fn resolve<'a>(&self, doc: &'a Value) -> Option<&'a Value> {
        let mut cur = doc;
        for t in &self.tokens {
            cur = match cur {
                Value::Object(map) => map.get(t)?,
                Value::Array(items) => items.get(parse_index(t)?)?,
                _ => return None,
            };
        }
        Some(cur)
    }
}

/// RFC 6901 array index: `0` or digits without a leading zero.
fn parse_index(t: &str) -> Option<usize> {
    if t.is_empty() || (t.len() > 1 && t.starts_with('0')) || !t.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    t.parse().ok()
}

impl fmt::Display for JsonPointer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

impl fmt::Debug for JsonPointer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "JsonPointer({:?})", self.raw)
    }
}

impl std::str::FromStr for JsonPointer {
    type Err = PointerError;
    fn from_str(s: &str) -> Result<Self, PointerError> {
        Self::parse(s)
    }
}

impl TryFrom<String> for JsonPointer {
    type Error = PointerError;
    fn try_from(s: String) -> Result<Self, PointerError> {
        Self::parse(&s)
    }
}

impl From<JsonPointer> for String {
    fn from(p: JsonPointer) -> String {
        p.raw
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn p(s: &str) -> JsonPointer {
        JsonPointer::parse(s).unwrap()
    }

    #[test]
    fn rfc6901_examples() {
        let doc = json!({"foo": ["bar", "baz"], "": 0, "a/b": 1, "c%d": 2, "e^f": 3, "g|h": 4,
            "i\\j": 5, "k\"l": 6, " ": 7, "m~n": 8});
        assert_eq!(p("").resolve(&doc), Some(&doc));
        assert_eq!(p("/foo").resolve(&doc), Some(&json!(["bar", "baz"])));
        assert_eq!(p("/foo/0").resolve(&doc), Some(&json!("bar")));
        assert_eq!(p("/").resolve(&doc), Some(&json!(0)));
        assert_eq!(p("/a~1b").resolve(&doc), Some(&json!(1)));
        assert_eq!(p("/c%d").resolve(&doc), Some(&json!(2)));
        assert_eq!(p("/e^f").resolve(&doc), Some(&json!(3)));
        assert_eq!(p("/g|h").resolve(&doc), Some(&json!(4)));
        assert_eq!(p("/i\\j").resolve(&doc), Some(&json!(5)));
        assert_eq!(p("/k\"l").resolve(&doc), Some(&json!(6)));
        assert_eq!(p("/ ").resolve(&doc), Some(&json!(7)));
        assert_eq!(p("/m~0n").resolve(&doc), Some(&json!(8)));
    }

    #[test]
    fn tilde_zero_one_is_tilde_then_one() {
        // `~01` unescapes to `~1`, not `/`.
        let ptr = p("/~01");
        assert_eq!(ptr.tokens(), &["~1".to_string()]);
        let doc = json!({"~1": "tilde-one", "/": "slash"});
        assert_eq!(ptr.resolve(&doc), Some(&json!("tilde-one")));
        assert_eq!(ptr.header_name(), "~1");
    }

    #[test]
    fn missing_keys_and_bad_indices_resolve_to_none() {
        let doc = json!({"a": [10, 20], "s": "str"});
        assert_eq!(p("/a/0").resolve(&doc), Some(&json!(10)));
        assert_eq!(p("/a/2").resolve(&doc), None);
        assert_eq!(p("/a/01").resolve(&doc), None);
        assert_eq!(p("/a/-").resolve(&doc), None);
        assert_eq!(p("/a/x").resolve(&doc), None);
        assert_eq!(p("/missing").resolve(&doc), None);
        assert_eq!(p("/s/0").resolve(&doc), None);
    }

    #[test]
    fn parse_errors_say_where_and_why() {
        let e = JsonPointer::parse("sub").unwrap_err();
        assert_eq!(e.position, 0);
        assert!(e.reason.contains("expecting `/`"));
        let e = JsonPointer::parse("/ab/c~2").unwrap_err();
        assert_eq!(e.position, 5);
        assert!(e.reason.contains("`0` or `1`"));
        let e = JsonPointer::parse("/a~").unwrap_err();
        assert_eq!(e.position, 2);
    }

    #[test]
    fn header_names_join_unescaped_tokens() {
        assert_eq!(p("/address/formatted").header_name(), "address.formatted");
        assert_eq!(p("/roles/0").header_name(), "roles.0");
        assert_eq!(p("/a~1b").header_name(), "a/b");
        assert_eq!(p("").header_name(), "");
    }

    #[test]
    fn from_tokens_escapes() {
        let ptr = JsonPointer::from_tokens(["a/b", "c~d"]);
        assert_eq!(ptr.as_str(), "/a~1b/c~0d");
        assert_eq!(JsonPointer::parse(ptr.as_str()).unwrap(), ptr);
    }

    #[test]
    fn auth0_paths_translate() {
        let t = |s: &str| JsonPointer::from_auth0_path(s).unwrap().as_str().to_owned();
        assert_eq!(t("email"), "/email");
        assert_eq!(t("user_metadata.plan"), "/user_metadata/plan");
        assert_eq!(t("identities[0].connection"), "/identities/0/connection");
        assert_eq!(t("a[1][2]"), "/a/1/2");
        for bad in ["", ".a", "a.", "a..b", "[0]", "a[x]", "a[0", "a]", "a[0]b"] {
            assert!(JsonPointer::from_auth0_path(bad).is_err(), "{bad} should fail");
        }
    }

    #[test]
    fn serde_round_trip_validates() {
        let ptr: JsonPointer = serde_json::from_str("\"/a/0\"").unwrap();
        assert_eq!(ptr.tokens(), &["a".to_string(), "0".to_string()]);
        assert!(serde_json::from_str::<JsonPointer>("\"a\"").is_err());
    }
}
