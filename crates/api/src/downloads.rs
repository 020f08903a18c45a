//! Local-file downloads (embedded mode): `GET /downloads/{key}?expires=&filename=&sig=`.
//!
//! The URL is checked with [`LocalFsStore::verify`] (HMAC-SHA256, constant time); a tampered or
//! expired link is 403, a deleted file 404. The file is streamed in 64 KiB chunks.

use std::path::Path;

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use chrono::Utc;
use futures_util::stream;
use serde::Deserialize;
use tokio::io::AsyncReadExt;
use userexport_domain::Code;
use userexport_storage::{LocalFsStore, StorageError};

use crate::error::{ApiDialect, ApiError};
use crate::routes::Routes;

const CHUNK: usize = 64 * 1024;

/// Registers the download route.
pub fn configure(routes: &mut Routes<'_>) {
    routes.resource("/downloads/{key:.*}", |r| r.get(download).head(download_head));
}

/// Headers of an export file (size, type, name) without its body.
#[utoipa::path(
    head,
    path = "/downloads/{key}",
    tag = "downloads",
    operation_id = "download_file_head",
    params(
        ("key" = String, Path, description = "Object key"),
        ("expires" = i64, Query, description = "Expiry (unix seconds)"),
        ("filename" = Option<String>, Query, description = "File name offered to the browser"),
        ("sig" = String, Query, description = "HMAC-SHA256 signature"),
    ),
    responses(
        (status = 200, description = "The file exists; `Content-Length` is its size"),
        (status = 403, description = "Tampered or expired link", body = crate::openapi::schemas::NativeError),
        (status = 404, description = "The file no longer exists", body = crate::openapi::schemas::NativeError),
    )
)]
async fn download_head(
    store: Option<web::Data<LocalFsStore>>,
    req: HttpRequest,
    key: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    download(store, req, key).await
}

#[derive(Debug, Deserialize)]
struct Params {
    expires: i64,
    #[serde(default)]
    filename: String,
    sig: String,
}

/// MIME type by file name.
pub fn content_type_for(name: &str) -> &'static str {
    let lower = name.to_ascii_lowercase();
    if lower.ends_with(".gz") {
        "application/gzip"
    } else if lower.ends_with(".csv") {
        "text/csv; charset=utf-8"
    } else if lower.ends_with(".ndjson") || lower.ends_with(".jsonl") {
        "application/x-ndjson"
    } else if lower.ends_with(".json") {
        "application/json"
    } else {
        "application/octet-stream"
    }
}

fn forbidden() -> ApiError {
    ApiError::new(ApiDialect::Native, Code::InvalidDownloadSignature)
}

/// Checks the link and opens the file.
async fn open(store: &LocalFsStore, key: &str, params: &Params) -> Result<(tokio::fs::File, u64), ApiError> {
    let path = store.verify(key, params.expires, &params.filename, &params.sig, Utc::now()).map_err(|e| match e {
        StorageError::BadSignature | StorageError::Expired | StorageError::InvalidKey { .. } => forbidden(),
        other => ApiError::from_coded(ApiDialect::Native, other),
    })?;
    let not_found = || ApiError::with_message(ApiDialect::Native, Code::RouteNotFound, "the file no longer exists");
    let file = match tokio::fs::File::open(&path).await {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(not_found()),
        Err(e) => return Err(ApiError::internal(ApiDialect::Native, e)),
    };
    let meta = file.metadata().await.map_err(|e| ApiError::internal(ApiDialect::Native, e))?;
    if !meta.is_file() {
        return Err(not_found());
    }
    Ok((file, meta.len()))
}

/// Download an export file (embedded mode, signed URL).
///
/// The URL is the `download_url` of a completed task: it is HMAC-signed and expires.
#[utoipa::path(
    get,
    path = "/downloads/{key}",
    tag = "downloads",
    operation_id = "download_file",
    params(
        ("key" = String, Path, description = "Object key, e.g. `exports/<project>/<task>.csv`"),
        ("expires" = i64, Query, description = "Expiry (unix seconds)"),
        ("filename" = Option<String>, Query, description = "File name offered to the browser"),
        ("sig" = String, Query, description = "HMAC-SHA256 signature"),
    ),
    responses(
        (status = 200, description = "The file", content_type = "application/octet-stream"),
        (status = 403, description = "Tampered or expired link", body = crate::openapi::schemas::NativeError),
        (status = 404, description = "The file no longer exists, or this server keeps no local files", body = crate::openapi::schemas::NativeError),
    )
)]
async fn download(
    store: Option<web::Data<LocalFsStore>>,
    req: HttpRequest,
    key: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let Some(store) = store else {
        return Err(ApiError::new(ApiDialect::Native, Code::RouteNotFound));
    };
    let params = web::Query::<Params>::from_query(req.query_string()).map_err(|_| forbidden())?.into_inner();
    let (file, len) = open(&store, &key, &params).await?;
    let filename = if params.filename.is_empty() {
        Path::new(key.as_str()).file_name().and_then(|n| n.to_str()).unwrap_or("download").to_owned()
    } else {
        params.filename.clone()
    };
    let mut res = HttpResponse::Ok();
    res.insert_header((header::CONTENT_TYPE, content_type_for(&filename)))
        .insert_header((header::CONTENT_DISPOSITION, userexport_storage::content_disposition(&filename)))
        .insert_header((header::CACHE_CONTROL, "private, no-store"))
        .insert_header(("X-Content-Type-Options", "nosniff"));
    res.no_chunking(len);
    if req.method() == actix_web::http::Method::HEAD {
        return Ok(res.finish());
    }
    let body = stream::try_unfold(file, |mut file| async move {
        let mut buf = vec![0u8; CHUNK];
        let n = file.read(&mut buf).await?;
        if n == 0 {
            return Ok::<_, std::io::Error>(None);
        }
        buf.truncate(n);
        Ok(Some((web::Bytes::from(buf), file)))
    });
    Ok(res.streaming(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types_by_extension() {
        assert_eq!(content_type_for("a.csv"), "text/csv; charset=utf-8");
        assert_eq!(content_type_for("a.ndjson"), "application/x-ndjson");
        assert_eq!(content_type_for("a.csv.gz"), "application/gzip");
        assert_eq!(content_type_for("A.CSV"), "text/csv; charset=utf-8");
        assert_eq!(content_type_for("a.bin"), "application/octet-stream");
    }

    use std::time::Duration;

    use actix_web::App;
    use actix_web::body::MessageBody;
    use actix_web::test as atest;
    use userexport_storage::{ObjectMeta, ObjectStore};

    async fn store_with_file(dir: &Path, key: &str, content: &[u8]) -> LocalFsStore {
        let store = LocalFsStore::new(dir.to_path_buf(), "http://127.0.0.1:1".into(), b"secret".to_vec());
        store.ensure_root().await.unwrap();
        let meta = ObjectMeta { content_type: "text/csv".into(), filename: "users.csv".into() };
        let mut up = store.start_upload(key, &meta).await.unwrap();
        up.put_part(web::Bytes::copy_from_slice(content)).await.unwrap();
        up.complete().await.unwrap();
        store
    }

    fn path_and_query(url: &str) -> String {
        url.strip_prefix("http://127.0.0.1:1").unwrap().to_owned()
    }

    #[actix_web::test]
    async fn signed_links_stream_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let content: Vec<u8> = (0..200_000u32).flat_map(|i| i.to_le_bytes()).collect();
        let store = store_with_file(dir.path(), "exports/p/t.csv", &content).await;
        let url = store.presign_get("exports/p/t.csv", "users.csv", Duration::from_secs(60)).await.unwrap();
        let app =
            atest::init_service(App::new().app_data(web::Data::new(store)).configure(crate::routes::apply(configure)))
                .await;

        let res = atest::call_service(&app, atest::TestRequest::get().uri(&path_and_query(&url)).to_request()).await;
        assert_eq!(res.status().as_u16(), 200);
        assert_eq!(res.headers().get(header::CONTENT_TYPE).unwrap(), "text/csv; charset=utf-8");
        assert_eq!(res.headers().get(header::CONTENT_DISPOSITION).unwrap(), "attachment; filename=\"users.csv\"");
        let body = atest::read_body(res).await;
        assert_eq!(body.len(), content.len());
        assert!(body == content);
    }

    #[actix_web::test]
    async fn tampered_expired_and_missing() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_file(dir.path(), "exports/p/t.csv", b"a,b\n").await;
        let good =
            path_and_query(&store.presign_get("exports/p/t.csv", "users.csv", Duration::from_secs(60)).await.unwrap());
        let gone = path_and_query(
            &store.presign_get("exports/p/gone.csv", "gone.csv", Duration::from_secs(60)).await.unwrap(),
        );
        let app =
            atest::init_service(App::new().app_data(web::Data::new(store)).configure(crate::routes::apply(configure)))
                .await;

        let status_and_code = |uri: String| {
            let app = &app;
            async move {
                let res = atest::call_service(app, atest::TestRequest::get().uri(&uri).to_request()).await;
                let status = res.status().as_u16();
                let body = res.into_body().try_into_bytes().unwrap();
                let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                (status, v["code"].as_str().unwrap_or_default().to_owned())
            }
        };
        let tampered_name = good.replace("filename=users.csv", "filename=evil.csv");
        assert_ne!(tampered_name, good);
        assert_eq!(status_and_code(tampered_name).await, (403, "invalid_download_signature".into()));
        let tampered_key = good.replace("/t.csv", "/u.csv");
        assert_eq!(status_and_code(tampered_key).await, (403, "invalid_download_signature".into()));
        let no_sig = good.split("&sig=").next().unwrap().to_owned();
        assert_eq!(status_and_code(no_sig).await.0, 403);
        assert_eq!(status_and_code("/downloads/../../etc/passwd?expires=1&sig=00".into()).await.0, 403);
        assert_eq!(status_and_code(gone).await, (404, "route_not_found".into()));
    }

    #[actix_web::test]
    async fn expired_links_are_403() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_file(dir.path(), "exports/p/t.csv", b"x").await;
        let past = Utc::now() - chrono::Duration::seconds(120);
        let url = store.presign_get_at("exports/p/t.csv", "t.csv", past, Duration::from_secs(60)).await.unwrap();
        let app =
            atest::init_service(App::new().app_data(web::Data::new(store)).configure(crate::routes::apply(configure)))
                .await;
        let res = atest::call_service(&app, atest::TestRequest::get().uri(&path_and_query(&url)).to_request()).await;
        assert_eq!(res.status().as_u16(), 403);
    }

    #[actix_web::test]
    async fn without_local_files_the_route_is_404() {
        let app = atest::init_service(App::new().configure(crate::routes::apply(configure))).await;
        let res =
            atest::call_service(&app, atest::TestRequest::get().uri("/downloads/a.csv?expires=1&sig=00").to_request())
                .await;
        assert_eq!(res.status().as_u16(), 404);
    }
}
