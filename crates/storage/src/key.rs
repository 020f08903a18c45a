//! Object keys and download headers shared by both stores.

use crate::StorageError;

/// Longest accepted object key, in bytes (S3 allows 1024).
const MAX_KEY_LEN: usize = 1024;

/// Marker in the name of a local upload's temporary file; not allowed inside keys.
pub(crate) const PARTIAL_MARKER: &str = ".partial-";

/// Checks that `key` is a safe relative object key such as `exports/<project>/<task>.csv`.
///
/// Segments are separated by `/` and use only `A–Z a–z 0–9 . _ ~ -` (URL-safe without encoding).
/// Rejected: empty keys, keys over 1024 bytes, absolute paths, backslashes, empty segments
/// (`a//b`, trailing `/`), `.` segments, any `..`, and the local temporary-file marker `.partial-`.
pub fn validate_key(key: &str) -> Result<(), StorageError> {
    let bad = |reason| Err(StorageError::InvalidKey { key: key.to_owned(), reason });
    if key.is_empty() {
        return bad("empty key");
    }
    if key.len() > MAX_KEY_LEN {
        return bad("longer than 1024 bytes");
    }
    if key.starts_with('/') {
        return bad("absolute path");
    }
    if key.contains('\\') {
        return bad("contains a backslash");
    }
    if key.contains("..") {
        return bad("contains `..`");
    }
    if key.contains(PARTIAL_MARKER) {
        return bad("contains the reserved marker `.partial-`");
    }
    for segment in key.split('/') {
        if segment.is_empty() {
            return bad("empty path segment");
        }
        if segment == "." {
            return bad("`.` path segment");
        }
        if !segment.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'~' | b'-')) {
            return bad("only A-Z a-z 0-9 . _ ~ - and / are allowed");
        }
    }
    Ok(())
}

/// The `Content-Disposition` value offering `filename` as a download.
///
/// Always `attachment; filename="…"` with an ASCII fallback (quotes, backslashes, slashes, control
/// and non-ASCII characters replaced by `_`); names with non-ASCII characters also get an RFC 5987
/// `filename*=UTF-8''…` parameter.
pub fn content_disposition(filename: &str) -> String {
    let cleaned: String = filename
        .trim()
        .chars()
        .map(|c| if c.is_control() || matches!(c, '"' | '\\' | '/') { '_' } else { c })
        .collect();
    let cleaned = if cleaned.is_empty() { "download".to_owned() } else { cleaned };
    let ascii: String = cleaned.chars().map(|c| if c.is_ascii() { c } else { '_' }).collect();
    let mut value = format!("attachment; filename=\"{ascii}\"");
    if !cleaned.is_ascii() {
        value.push_str("; filename*=UTF-8''");
        for b in cleaned.bytes() {
            if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
                value.push(char::from(b));
            } else {
                value.push_str(&format!("%{b:02X}"));
            }
        }
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_normal_keys() {
        for key in ["exports/proj_abc/task_123.csv", "exports/p/t.ndjson.gz", "a", "x/y~z-1_2.csv"] {
            validate_key(key).unwrap_or_else(|e| panic!("{key}: {e}"));
        }
    }

    #[test]
    fn rejects_unsafe_keys() {
        for key in [
            "",
            "/etc/passwd",
            "../secret",
            "exports/../../etc/passwd",
            "exports/..",
            "exports/a..b",
            "exports\\win",
            "exports//double",
            "exports/trailing/",
            "./exports/x",
            "exports/./x",
            "exports/x.csv.partial-abc",
            "exports/space here.csv",
            "exports/q?x=1",
            "exports/h#x",
            "exports/pct%2e",
            "exports/ünï.csv",
            &"a".repeat(1025),
        ] {
            let err = validate_key(key).expect_err(key);
            assert!(matches!(err, StorageError::InvalidKey { .. }), "{key}: {err}");
        }
    }

    #[test]
    fn content_disposition_quotes_and_sanitizes() {
        assert_eq!(content_disposition("users.csv"), "attachment; filename=\"users.csv\"");
        assert_eq!(content_disposition("a\"b\\c/d\r\n.csv"), "attachment; filename=\"a_b_c_d__.csv\"");
        assert_eq!(content_disposition("  "), "attachment; filename=\"download\"");
        assert_eq!(
            content_disposition("usérs 1.csv"),
            "attachment; filename=\"us_rs 1.csv\"; filename*=UTF-8''us%C3%A9rs%201.csv"
        );
    }
}
