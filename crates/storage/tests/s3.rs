//! S3Store against a real S3-compatible server (s3s-fs), stack.md §7.3 checks 1–9.
//!
//! Needs `USEREXPORT_TEST_S3_ENDPOINT` (and `USEREXPORT_TEST_S3_ACCESS_KEY_ID` /
//! `USEREXPORT_TEST_S3_SECRET_ACCESS_KEY`, default `testkey` / `testsecret`). Without a reachable
//! server the tests skip, or fail when `USEREXPORT_TEST_REQUIRE_SERVICES=1`.

use std::time::Duration;

use bytes::Bytes;
use chrono::{TimeDelta, Utc};
use rand::{Rng, RngCore};
use sha2::{Digest, Sha256};
use userexport_domain::{Code, ErrorCode};
use userexport_storage::{ObjectMeta, ObjectStore, S3Config, S3Store, StorageError, content_disposition};

const MIB: usize = 1024 * 1024;

struct S3Env {
    endpoint: String,
    access_key_id: String,
    secret_access_key: String,
}

impl S3Env {
    fn config(&self, bucket: &str) -> S3Config {
        S3Config {
            endpoint: Some(self.endpoint.clone()),
            bucket: bucket.to_owned(),
            region: "us-east-1".into(),
            access_key_id: self.access_key_id.clone(),
            secret_access_key: self.secret_access_key.clone(),
            force_path_style: true,
        }
    }

    /// A store on a fresh, created bucket.
    async fn fresh_store(&self) -> S3Store {
        let bucket = format!("ue-test-{}", hex::encode(rand::rng().random::<[u8; 6]>()));
        let store = S3Store::new(&self.config(&bucket));
        store.ensure_bucket().await.expect("create bucket");
        store
    }
}

/// The test server, or `None` (after printing why) when the test should be skipped.
async fn s3_env() -> Option<S3Env> {
    let require = std::env::var("USEREXPORT_TEST_REQUIRE_SERVICES").as_deref() == Ok("1");
    let unavailable = |why: String| {
        if require {
            panic!("S3 test server unavailable: {why}");
        }
        println!("skipping: S3 test server unavailable: {why}");
    };
    let Some(endpoint) = std::env::var("USEREXPORT_TEST_S3_ENDPOINT").ok().filter(|e| !e.is_empty()) else {
        unavailable("USEREXPORT_TEST_S3_ENDPOINT is not set".into());
        return None;
    };
    let addrs = match url::Url::parse(&endpoint).map(|u| u.socket_addrs(|| Some(80))) {
        Ok(Ok(addrs)) if !addrs.is_empty() => addrs,
        other => {
            unavailable(format!("cannot resolve `{endpoint}`: {other:?}"));
            return None;
        }
    };
    match tokio::time::timeout(Duration::from_secs(3), tokio::net::TcpStream::connect(&addrs[..])).await {
        Ok(Ok(_)) => {}
        other => {
            unavailable(format!("cannot connect to `{endpoint}`: {other:?}"));
            return None;
        }
    }
    let var = |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.to_owned());
    Some(S3Env {
        endpoint: endpoint.trim_end_matches('/').to_owned(),
        access_key_id: var("USEREXPORT_TEST_S3_ACCESS_KEY_ID", "testkey"),
        secret_access_key: var("USEREXPORT_TEST_S3_SECRET_ACCESS_KEY", "testsecret"),
    })
}

fn csv_meta(filename: &str) -> ObjectMeta {
    ObjectMeta { content_type: "text/csv".into(), filename: filename.into() }
}

fn random_bytes(len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    rand::rng().fill_bytes(&mut buf);
    buf
}

/// `url` with query parameter `name` replaced by `value`.
fn with_param(url: &str, name: &str, value: &str) -> String {
    let mut parsed = url::Url::parse(url).unwrap();
    let pairs: Vec<(String, String)> = parsed
        .query_pairs()
        .map(|(k, v)| if k == name { (k.into_owned(), value.to_owned()) } else { (k.into_owned(), v.into_owned()) })
        .collect();
    assert!(pairs.iter().any(|(k, _)| k == name), "{name} is in the URL");
    parsed.query_pairs_mut().clear().extend_pairs(pairs);
    parsed.into()
}

fn param(url: &str, name: &str) -> String {
    url::Url::parse(url).unwrap().query_pairs().find(|(k, _)| k == name).map(|(_, v)| v.into_owned()).unwrap()
}

async fn get_status(url: &str) -> u16 {
    reqwest::get(url).await.expect("HTTP GET").status().as_u16()
}

async fn upload(store: &S3Store, key: &str, parts: &[&[u8]]) -> u64 {
    let mut up = store.start_upload(key, &csv_meta("x.csv")).await.unwrap();
    for part in parts {
        up.put_part(Bytes::copy_from_slice(part)).await.unwrap();
    }
    up.complete().await.unwrap()
}

#[tokio::test]
async fn multipart_upload_presign_and_tampering() {
    let Some(env) = s3_env().await else { return };
    let store = env.fresh_store().await;
    // 1. create_bucket again is fine; the bucket is ready.
    store.ensure_bucket().await.unwrap();
    store.check().await.unwrap();
    assert_eq!(store.kind(), "s3");

    // 2. A 5 MiB part plus a small last part.
    let key = "exports/proj_test/task_1.csv";
    let first = random_bytes(5 * MIB);
    let last = random_bytes(1234);
    let filename = "users \"2024\".csv";
    let mut up = store.start_upload(key, &csv_meta(filename)).await.unwrap();
    let upload_id = up.upload_id().unwrap().to_owned();
    assert!(!upload_id.is_empty());
    up.put_part(Bytes::from(first.clone())).await.unwrap();
    up.put_part(Bytes::from(last.clone())).await.unwrap();
    assert_eq!(store.head(key).await.unwrap(), None, "nothing visible before complete");
    let total = up.complete().await.unwrap();
    assert_eq!(total, (first.len() + last.len()) as u64);
    assert_eq!(store.head(key).await.unwrap(), Some(total));
    let expected_hash = Sha256::new().chain_update(&first).chain_update(&last).finalize();

    // 5. A 24 h presigned GET: 200, full body, requested Content-Disposition.
    let url = store.presign_get(key, filename, Duration::from_secs(24 * 3600)).await.unwrap();
    assert_eq!(param(&url, "X-Amz-Expires"), "86400");
    let resp = reqwest::get(&url).await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let disposition = resp.headers().get("content-disposition").expect("Content-Disposition").to_str().unwrap();
    assert_eq!(disposition, content_disposition(filename));
    assert_eq!(disposition, "attachment; filename=\"users _2024_.csv\"");
    let body = resp.bytes().await.unwrap();
    assert_eq!(body.len() as u64, total);
    assert_eq!(Sha256::digest(&body), expected_hash);

    // 6. Tampered copies → 403.
    let sig = param(&url, "X-Amz-Signature");
    let mut flipped = sig.into_bytes();
    flipped[0] = if flipped[0] == b'a' { b'b' } else { b'a' };
    assert_eq!(get_status(&with_param(&url, "X-Amz-Signature", std::str::from_utf8(&flipped).unwrap())).await, 403);
    let other_key = "exports/proj_test/other.csv";
    upload(&store, other_key, &[b"other object"]).await;
    assert_eq!(get_status(&url.replacen(key, other_key, 1)).await, 403, "path switched to another object");
    assert_eq!(get_status(&with_param(&url, "X-Amz-Expires", "604800")).await, 403);
    let open = store.start_upload("exports/proj_test/open.csv", &csv_meta("x.csv")).await.unwrap();
    assert_eq!(store.list("exports/").await.unwrap(), vec![other_key.to_owned(), key.to_owned()]);
    assert_eq!(store.list("exports/proj_test/t").await.unwrap(), vec![key.to_owned()]);
    assert!(store.list("nothing/").await.unwrap().is_empty());
    open.abort().await.unwrap();

    // 7. Signed two hours ago for one hour → expired; a fresh URL works.
    let stale =
        store.presign_get_at(key, filename, Utc::now() - TimeDelta::hours(2), Duration::from_secs(3600)).await.unwrap();
    assert_eq!(get_status(&stale).await, 403);
    let fresh = store.presign_get_at(key, filename, Utc::now(), Duration::from_secs(3600)).await.unwrap();
    assert_eq!(get_status(&fresh).await, 200);

    // 9. An unsigned GET → 403.
    assert_eq!(get_status(&format!("{}/{}/{key}", env.endpoint, store.bucket())).await, 403);

    // Delete, twice.
    store.delete(key).await.unwrap();
    assert_eq!(store.head(key).await.unwrap(), None);
    store.delete(key).await.unwrap();
    store.delete(other_key).await.unwrap();
}

#[tokio::test]
async fn non_last_part_too_small_fails_at_complete() {
    let Some(env) = s3_env().await else { return };
    let store = env.fresh_store().await;
    // 3. Two 4-byte parts: the first is under 5 MiB.
    let key = "exports/p/small.csv";
    let mut up = store.start_upload(key, &csv_meta("small.csv")).await.unwrap();
    up.put_part(Bytes::from_static(b"abcd")).await.unwrap();
    up.put_part(Bytes::from_static(b"efgh")).await.unwrap();
    let err = up.complete().await.expect_err("EntityTooSmall");
    assert!(matches!(err, StorageError::Permanent { .. }), "{err}");
    assert!(!err.is_transient());
    assert!(err.to_string().contains("EntityTooSmall"), "{err}");
    assert_eq!(err.error_code(), Code::ExportFailed);
    assert_eq!(store.head(key).await.unwrap(), None);
}

#[tokio::test]
async fn aborted_upload_cannot_complete() {
    let Some(env) = s3_env().await else { return };
    let store = env.fresh_store().await;
    // 4. Upload a part, abort (by stored id, as the sweeper does), complete → error.
    let key = "exports/p/aborted.csv";
    let mut up = store.start_upload(key, &csv_meta("aborted.csv")).await.unwrap();
    up.put_part(Bytes::from_static(b"some rows\n")).await.unwrap();
    let id = up.upload_id().unwrap().to_owned();
    store.abort_upload(key, &id).await.unwrap();
    let err = up.complete().await.expect_err("the upload was aborted");
    assert!(!err.is_transient(), "{err}");
    assert_eq!(store.head(key).await.unwrap(), None);

    // Upload::abort discards the parts.
    let mut up = store.start_upload(key, &csv_meta("aborted.csv")).await.unwrap();
    up.put_part(Bytes::from_static(b"more rows\n")).await.unwrap();
    up.abort().await.unwrap();
    assert_eq!(store.head(key).await.unwrap(), None);
}

#[tokio::test]
async fn wrong_secret_is_rejected() {
    let Some(env) = s3_env().await else { return };
    let store = env.fresh_store().await;
    let key = "exports/p/t.csv";
    upload(&store, key, &[b"data"]).await;
    // 8. A client with the wrong secret.
    let mut cfg = env.config(store.bucket());
    cfg.secret_access_key.push_str("-wrong");
    let wrong = S3Store::new(&cfg);
    let err = wrong.head(key).await.expect_err("wrong secret");
    assert!(matches!(err, StorageError::Permanent { .. }), "{err}");
    assert!(err.to_string().contains("403"), "{err}");
    assert!(!err.to_string().contains(&cfg.secret_access_key));
    assert!(wrong.check().await.is_err());
    let url = wrong.presign_get(key, "t.csv", Duration::from_secs(60)).await.unwrap();
    assert_eq!(get_status(&url).await, 403);
    assert!(wrong.start_upload("exports/p/u.csv", &csv_meta("u.csv")).await.is_err());
}

#[tokio::test]
async fn zero_part_upload_is_an_empty_object() {
    let Some(env) = s3_env().await else { return };
    let store = env.fresh_store().await;
    let key = "exports/p/empty.csv";
    let up = store.start_upload(key, &csv_meta("empty.csv")).await.unwrap();
    assert_eq!(up.complete().await.unwrap(), 0);
    assert_eq!(store.head(key).await.unwrap(), Some(0));
    let url = store.presign_get(key, "empty.csv", Duration::from_secs(600)).await.unwrap();
    let resp = reqwest::get(&url).await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert!(resp.bytes().await.unwrap().is_empty());
}

#[tokio::test]
async fn put_object_stores_a_whole_file_in_one_request() {
    let Some(env) = s3_env().await else { return };
    let store = env.fresh_store().await;
    let key = "exports/p/whole.csv";
    let body = random_bytes(100_000);
    assert_eq!(store.put_object(key, &csv_meta("old.csv"), Bytes::from_static(b"old")).await.unwrap(), 3);
    // A second attempt writes the same key again.
    let stored = store.put_object(key, &csv_meta("whole.csv"), Bytes::from(body.clone())).await.unwrap();
    assert_eq!(stored, body.len() as u64);
    assert_eq!(store.head(key).await.unwrap(), Some(stored));
    let url = store.presign_get(key, "whole.csv", Duration::from_secs(600)).await.unwrap();
    let resp = reqwest::get(&url).await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.headers()["content-disposition"].to_str().unwrap(), content_disposition("whole.csv"));
    assert_eq!(resp.bytes().await.unwrap(), body);

    assert_eq!(store.put_object("exports/p/none.csv", &csv_meta("none.csv"), Bytes::new()).await.unwrap(), 0);
    assert_eq!(store.head("exports/p/none.csv").await.unwrap(), Some(0));
    assert_eq!(store.list("exports/p/").await.unwrap(), ["exports/p/none.csv", key]);
    assert!(matches!(
        store.put_object("../x.csv", &csv_meta("x.csv"), Bytes::from_static(b"x")).await,
        Err(StorageError::InvalidKey { .. })
    ));
}

#[tokio::test]
async fn missing_bucket_fails_check() {
    let Some(env) = s3_env().await else { return };
    let store = S3Store::new(&env.config(&format!("ue-missing-{}", hex::encode(rand::rng().random::<[u8; 6]>()))));
    let err = store.check().await.expect_err("no such bucket");
    assert!(!err.is_transient(), "{err}");
    assert_eq!(err.error_code(), Code::ExportFailed);
}
