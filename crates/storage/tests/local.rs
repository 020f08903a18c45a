//! LocalFsStore: uploads, signed URLs and key validation (no services needed).

use std::time::Duration;

use bytes::Bytes;
use chrono::{TimeDelta, Utc};
use userexport_domain::{Code, ErrorCode};
use userexport_storage::{LocalFsStore, ObjectMeta, ObjectStore, StorageError};

const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

fn store(dir: &tempfile::TempDir) -> LocalFsStore {
    LocalFsStore::new(dir.path().join("files"), "http://localhost:8080/".into(), SECRET.to_vec())
}

fn meta() -> ObjectMeta {
    ObjectMeta { content_type: "text/csv".into(), filename: "users export.csv".into() }
}

/// Every file below `dir`, as paths relative to it.
fn files_under(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path.strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    out.sort();
    out
}

/// The URL's key (after `/downloads/`) and its query parameters.
struct ParsedUrl {
    key: String,
    expires: i64,
    filename: String,
    sig: String,
}

fn parse(url: &str) -> ParsedUrl {
    let url = url::Url::parse(url).expect("valid URL");
    assert_eq!(url.host_str(), Some("localhost"));
    let key = url.path().strip_prefix("/downloads/").expect("download path").to_owned();
    let q = |name: &str| url.query_pairs().find(|(k, _)| k == name).map(|(_, v)| v.into_owned()).expect(name);
    ParsedUrl { key, expires: q("expires").parse().unwrap(), filename: q("filename"), sig: q("sig") }
}

#[tokio::test]
async fn multipart_upload_completes_into_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir);
    store.ensure_root().await.unwrap();
    store.check().await.unwrap();
    assert_eq!(store.kind(), "local");

    let key = "exports/proj_1/task_1.csv";
    let mut up = store.start_upload(key, &meta()).await.unwrap();
    assert!(up.upload_id().is_some_and(|id| id.len() == 32));
    up.put_part(Bytes::from_static(b"id,email\n")).await.unwrap();
    up.put_part(Bytes::from(vec![b'x'; 100_000])).await.unwrap();
    up.put_part(Bytes::from_static(b"\nlast\n")).await.unwrap();
    assert_eq!(store.head(key).await.unwrap(), None, "nothing visible before complete");
    let total = up.complete().await.unwrap();

    let mut expected = b"id,email\n".to_vec();
    expected.extend(vec![b'x'; 100_000]);
    expected.extend(b"\nlast\n");
    assert_eq!(total, expected.len() as u64);
    assert_eq!(store.head(key).await.unwrap(), Some(total));
    let path = store.path_for(key).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), expected);
    assert_eq!(files_under(store.root()), vec!["exports/proj_1/task_1.csv".to_owned()], "no partial left");
    let mut open = store.start_upload("exports/proj_1/task_2.csv", &meta()).await.unwrap();
    open.put_part(Bytes::from_static(b"unfinished")).await.unwrap();
    assert_eq!(store.list("exports/").await.unwrap(), vec![key.to_owned()], "an open upload is not listed");
    assert_eq!(store.list("exports/proj_1/task_1").await.unwrap(), vec![key.to_owned()]);
    assert!(store.list("exports/proj_2/").await.unwrap().is_empty());
    open.abort().await.unwrap();

    store.delete(key).await.unwrap();
    assert_eq!(store.head(key).await.unwrap(), None);
    store.delete(key).await.unwrap();
}

#[tokio::test]
async fn zero_part_upload_is_an_empty_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir);
    let up = store.start_upload("exports/p/empty.csv", &meta()).await.unwrap();
    assert_eq!(up.complete().await.unwrap(), 0);
    assert_eq!(store.head("exports/p/empty.csv").await.unwrap(), Some(0));
}

#[tokio::test]
async fn put_object_writes_the_whole_file_and_replaces_an_old_one() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir);
    let key = "exports/p/whole.csv";
    assert_eq!(store.put_object(key, &meta(), Bytes::from_static(b"id\nold\n")).await.unwrap(), 7);
    // A second attempt writes the same key again.
    assert_eq!(store.put_object(key, &meta(), Bytes::from_static(b"id\n1\n")).await.unwrap(), 5);
    assert_eq!(store.head(key).await.unwrap(), Some(5));
    assert_eq!(std::fs::read(store.path_for(key).unwrap()).unwrap(), b"id\n1\n");
    assert_eq!(store.put_object("exports/p/none.csv", &meta(), Bytes::new()).await.unwrap(), 0);
    assert_eq!(store.head("exports/p/none.csv").await.unwrap(), Some(0));
    assert_eq!(files_under(store.root()), vec!["exports/p/none.csv".to_owned(), key.to_owned()], "no partial left");
    assert!(matches!(
        store.put_object("../x.csv", &meta(), Bytes::from_static(b"x")).await,
        Err(StorageError::InvalidKey { .. })
    ));
}

#[tokio::test]
async fn abort_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir);
    let key = "exports/p/t.csv";

    let mut up = store.start_upload(key, &meta()).await.unwrap();
    up.put_part(Bytes::from_static(b"some data")).await.unwrap();
    up.abort().await.unwrap();
    assert_eq!(store.head(key).await.unwrap(), None);
    assert!(files_under(store.root()).is_empty());

    // By stored id (sweeper), as after a crash; twice is fine.
    let mut up = store.start_upload(key, &meta()).await.unwrap();
    up.put_part(Bytes::from_static(b"more data")).await.unwrap();
    let id = up.upload_id().unwrap().to_owned();
    std::mem::forget(up); // a crashed worker never finishes its upload
    assert_eq!(files_under(store.root()).len(), 1);
    store.abort_upload(key, &id).await.unwrap();
    store.abort_upload(key, &id).await.unwrap();
    assert!(files_under(store.root()).is_empty());
    assert!(matches!(store.abort_upload(key, "../../x").await, Err(StorageError::InvalidKey { .. })));

    // Dropped without complete or abort.
    let mut up = store.start_upload(key, &meta()).await.unwrap();
    up.put_part(Bytes::from_static(b"dropped")).await.unwrap();
    drop(up);
    assert!(files_under(store.root()).is_empty());
}

#[tokio::test]
async fn presigned_url_verifies_and_rejects_tampering() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir);
    let key = "exports/proj_1/task_1.csv";
    let now = Utc::now();
    let url = store.presign_get(key, "users export.csv", Duration::from_secs(24 * 3600)).await.unwrap();
    assert!(url.starts_with("http://localhost:8080/downloads/exports/proj_1/task_1.csv?expires="), "{url}");
    let p = parse(&url);
    assert_eq!(p.key, key);
    assert_eq!(p.filename, "users export.csv");
    assert_eq!(p.sig.len(), 64);
    assert!((p.expires - (now.timestamp() + 24 * 3600)).abs() <= 2);

    let path = store.verify(&p.key, p.expires, &p.filename, &p.sig, now).unwrap();
    assert_eq!(path, store.path_for(key).unwrap());
    assert!(path.starts_with(store.root()));

    let bad = |r: Result<std::path::PathBuf, StorageError>| {
        let err = r.expect_err("must be rejected");
        assert!(matches!(err, StorageError::BadSignature), "{err}");
        assert_eq!(err.error_code(), Code::InvalidDownloadSignature);
        assert_eq!(err.error_code().http_status(), 403);
    };
    let mut flipped = p.sig.clone().into_bytes();
    flipped[10] = if flipped[10] == b'0' { b'1' } else { b'0' };
    let flipped = String::from_utf8(flipped).unwrap();
    bad(store.verify(&p.key, p.expires, &p.filename, &flipped, now));
    bad(store.verify(&p.key, p.expires, &p.filename, &p.sig[..62], now));
    bad(store.verify(&p.key, p.expires, &p.filename, "not hex", now));
    bad(store.verify(&p.key, p.expires, &p.filename, "", now));
    bad(store.verify("exports/proj_1/task_2.csv", p.expires, &p.filename, &p.sig, now));
    bad(store.verify("exports/proj_1/../proj_1/task_1.csv", p.expires, &p.filename, &p.sig, now));
    bad(store.verify(&p.key, p.expires + 3600, &p.filename, &p.sig, now));
    bad(store.verify(&p.key, p.expires, "other.csv", &p.sig, now));

    // Another secret signs differently.
    let other =
        LocalFsStore::new(store.root().to_path_buf(), "http://localhost:8080".into(), b"another secret".to_vec());
    bad(other.verify(&p.key, p.expires, &p.filename, &p.sig, now));
}

#[tokio::test]
async fn expired_url_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir);
    let key = "exports/p/t.csv";
    let now = Utc::now();
    let url = store.presign_get_at(key, "t.csv", now - TimeDelta::hours(2), Duration::from_secs(3600)).await.unwrap();
    let p = parse(&url);
    assert_eq!(p.expires, (now - TimeDelta::hours(1)).timestamp());
    let err = store.verify(&p.key, p.expires, &p.filename, &p.sig, now).expect_err("expired");
    assert!(matches!(err, StorageError::Expired), "{err}");
    assert_eq!(err.error_code(), Code::InvalidDownloadSignature);
    // Valid just before the expiry instant, expired at it.
    let before = now - TimeDelta::hours(1) - TimeDelta::seconds(1);
    store.verify(&p.key, p.expires, &p.filename, &p.sig, before).unwrap();
    let at = chrono::DateTime::from_timestamp(p.expires, 0).unwrap();
    assert!(matches!(store.verify(&p.key, p.expires, &p.filename, &p.sig, at), Err(StorageError::Expired)));
}

#[tokio::test]
async fn unsafe_keys_are_rejected_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir);
    for key in ["../escape.csv", "/abs/path.csv", "exports/../../x", "exports\\x.csv", "exports//x.csv", ""] {
        let invalid = |r: Result<(), StorageError>| assert!(matches!(r, Err(StorageError::InvalidKey { .. })), "{key}");
        invalid(store.start_upload(key, &meta()).await.map(drop));
        invalid(store.head(key).await.map(drop));
        invalid(store.delete(key).await);
        invalid(store.presign_get(key, "x.csv", Duration::from_secs(60)).await.map(drop));
        invalid(store.path_for(key).map(drop));
    }
    assert!(files_under(dir.path()).is_empty());
}

#[tokio::test]
async fn check_fails_without_a_usable_root_or_secret() {
    let dir = tempfile::tempdir().unwrap();
    let missing = LocalFsStore::new(dir.path().join("missing"), "http://x".into(), SECRET.to_vec());
    let err = missing.check().await.expect_err("root is missing");
    assert_eq!(err.error_code(), Code::ServiceUnavailable);

    let file = dir.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let not_dir = LocalFsStore::new(file, "http://x".into(), SECRET.to_vec());
    assert!(not_dir.check().await.is_err());

    let no_secret = LocalFsStore::new(dir.path().to_path_buf(), "http://x".into(), Vec::new());
    assert!(matches!(no_secret.check().await, Err(StorageError::Config(_))));
    assert!(matches!(
        no_secret.presign_get("exports/p/t.csv", "t.csv", Duration::from_secs(60)).await,
        Err(StorageError::Config(_))
    ));
    assert!(matches!(
        no_secret.verify("exports/p/t.csv", i64::MAX, "t.csv", &"0".repeat(64), Utc::now()),
        Err(StorageError::BadSignature)
    ));

    let bad_base = LocalFsStore::new(dir.path().to_path_buf(), "not a url".into(), SECRET.to_vec());
    assert!(matches!(
        bad_base.presign_get("exports/p/t.csv", "t.csv", Duration::from_secs(60)).await,
        Err(StorageError::Config(_))
    ));
}
