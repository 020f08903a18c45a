//! The `userexport` binary as a user runs it: CLI seed + export on SQLite and Postgres, and the
//! production topology with `serve` and `worker` as separate processes.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use userexport_domain::user::AUTHGEAR_DEFAULT_POINTERS;
use userexport_domain::{JsonPointer, fake};

use crate::helpers::{authgear_cell, create_database, drop_database, random_suffix, services};

const BIN: &str = env!("CARGO_BIN_EXE_userexport");

/// Runs the binary to completion; returns stdout (panics with stderr on failure).
fn run(args: &[&str], env: &[(&str, &str)]) -> String {
    let out = Command::new(BIN)
        .args(args)
        .envs(env.iter().copied())
        .env("USEREXPORT_LOG", "warn")
        .output()
        .expect("run userexport");
    assert!(out.status.success(), "userexport {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("utf-8 stdout")
}

fn json_out(args: &[&str], env: &[(&str, &str)]) -> Value {
    let out = run(args, env);
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

/// Seeds `count` users with the CLI, exports them with the CLI and checks the CSV cell by cell.
fn seed_and_export(env: &[(&str, &str)], dir: &Path, count: u64) {
    let created = json_out(&["project", "create", "--name", "cli", "--json"], env);
    let project = created["project_id"].as_str().unwrap().to_owned();
    assert!(created["management_key"].as_str().unwrap().starts_with('K'));
    let seeded = json_out(
        &["users", "seed", "--project", &project, "--count", &count.to_string(), "--seed", "7", "--json"],
        env,
    );
    assert_eq!(seeded["inserted"], count);
    let out = dir.join("users.csv");
    let out_s = out.to_str().unwrap();
    let exported = json_out(&["export", "--project", &project, "--format", "csv", "--out", out_s, "--json"], env);
    let visible: Vec<_> = (0..count).map(|i| fake::user(7, i)).filter(|u| !u.test).collect();
    assert_eq!(exported["rows"], visible.len());

    let mut reader = csv::Reader::from_path(&out).expect("open csv");
    let headers: Vec<String> = reader.headers().unwrap().iter().map(str::to_owned).collect();
    let want: Vec<String> =
        AUTHGEAR_DEFAULT_POINTERS.iter().map(|p| JsonPointer::parse(p).unwrap().header_name()).collect();
    assert_eq!(headers, want);
    let pointers: Vec<JsonPointer> = AUTHGEAR_DEFAULT_POINTERS.iter().map(|p| JsonPointer::parse(p).unwrap()).collect();
    let mut rows = 0;
    for (record, user) in reader.records().zip(&visible) {
        let record = record.expect("record");
        assert_eq!(record.len(), 41);
        let view = user.authgear_record();
        for (i, p) in pointers.iter().enumerate() {
            assert_eq!(record[i], authgear_cell(p.resolve(&view)), "user {} {}", user.id, p);
        }
        rows += 1;
    }
    assert_eq!(rows, visible.len());
}

#[test]
fn cli_seed_and_export_100k_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let env = [("USEREXPORT_DATA_DIR", data.to_str().unwrap())];
    seed_and_export(&env, dir.path(), 100_000);
}

#[tokio::test]
async fn cli_seed_and_export_100k_on_postgres() {
    let Some(svc) = services() else { return };
    let name = format!("userexport_test_{}", random_suffix());
    let url = create_database(&svc.postgres_admin_url, &name).await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let env =
        [("USEREXPORT_DATA_DIR".to_owned(), data.display().to_string()), ("USEREXPORT_DATABASE_URL".to_owned(), url)];
    let d = dir.path().to_owned();
    let result = tokio::task::spawn_blocking(move || {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        std::panic::catch_unwind(|| seed_and_export(&env, &d, 100_000))
    })
    .await
    .unwrap();
    drop_database(&svc.postgres_admin_url, &name).await;
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

/// Admin JWTs: a key pair from `keys create` signs a token the way Authgear's Node example does;
/// `token mint` prints one; forged, expired or foreign tokens get 401.
async fn check_jwt_auth(client: &reqwest::Client, base: &str, project: &str, dir: &Path, env: &[(&str, &str)]) {
    use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
    let pem_path = dir.join("admin-key.pem");
    let created =
        json_out(&["keys", "create", "--project", project, "--out", pem_path.to_str().unwrap(), "--json"], env);
    let kid = created["kid"].as_str().unwrap().to_owned();
    let pem = std::fs::read_to_string(&pem_path).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&pem_path).unwrap().permissions().mode() & 0o777, 0o600);
    }
    let sign = |aud: &str, exp_offset: i64, kid: &str| {
        let now = chrono::Utc::now().timestamp();
        let claims = json!({"aud": aud, "iat": now - 30, "exp": now + exp_offset});
        let header = Header { kid: Some(kid.to_owned()), ..Header::new(Algorithm::RS256) };
        encode(&header, &claims, &EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap()).unwrap()
    };
    let status = |token: String| async move {
        client
            .get(format!("{base}/_api/admin/users/export/userexport_00000000000000000000000000000000"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    // A valid token gets past authentication: the task simply does not exist.
    assert_eq!(status(sign(project, 300, &kid)).await, 404);
    assert_eq!(status(sign(project, -3600, &kid)).await, 401, "expired");
    assert_eq!(status(sign(project, 300, "key_00000000000000000000")).await, 401, "unknown kid");
    assert_eq!(status(sign("Pnot-a-project", 300, &kid)).await, 401, "foreign audience");
    let minted = json_out(&["token", "mint", "--project", project, "--ttl", "5m", "--json"], env);
    assert_eq!(status(minted["token"].as_str().unwrap().to_owned()).await, 404);
    let minted = run(&["token", "mint", "--project", project, "--key", pem_path.to_str().unwrap(), "--kid", &kid], env);
    assert_eq!(status(minted.trim().to_owned()).await, 404);
}

struct Proc(Child);

impl Proc {
    fn spawn(args: &[&str], env: &[(String, String)]) -> Proc {
        let child = Command::new(BIN)
            .args(args)
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("USEREXPORT_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn userexport");
        Proc(child)
    }

    /// SIGTERM, then wait (bounded); returns whether it exited successfully.
    fn terminate(mut self) -> bool {
        let _ = Command::new("kill").arg("-TERM").arg(self.0.id().to_string()).status();
        for _ in 0..300 {
            if let Ok(Some(status)) = self.0.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
        false
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_and_worker_run_as_separate_processes() {
    let Some(svc) = services() else { return };
    let name = format!("userexport_test_{}", random_suffix());
    let db = create_database(&svc.postgres_admin_url, &name).await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let env: Vec<(String, String)> = [
        ("USEREXPORT_DATA_DIR", dir.path().to_str().unwrap().to_owned()),
        ("USEREXPORT_DATABASE_URL", db.clone()),
        ("USEREXPORT_REDIS_URL", svc.redis_url.clone()),
        ("USEREXPORT_QUEUE_PREFIX", format!("uetest-{}", random_suffix())),
        ("USEREXPORT_S3_ENDPOINT", svc.s3_endpoint.clone()),
        ("USEREXPORT_S3_BUCKET", format!("uetest-{}", random_suffix())),
        ("USEREXPORT_S3_ACCESS_KEY_ID", svc.s3_access_key.clone()),
        ("USEREXPORT_S3_SECRET_ACCESS_KEY", svc.s3_secret_key.clone()),
        ("USEREXPORT_BIND", format!("127.0.0.1:{port}")),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let env_ref: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    run(&["migrate"], &env_ref);
    let created = json_out(&["project", "create", "--name", "procs", "--json"], &env_ref);
    let project = created["project_id"].as_str().unwrap().to_owned();
    let key = created["management_key"].as_str().unwrap().to_owned();
    json_out(&["users", "seed", "--project", &project, "--count", "3000", "--json"], &env_ref);

    let api = Proc::spawn(&["serve"], &env);
    let worker = Proc::spawn(&["worker", "--concurrency", "2"], &env);
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let auth = format!("Bearer {project}:{key}");
    let mut ready = false;
    for _ in 0..200 {
        if client.get(format!("{base}/healthz")).send().await.is_ok_and(|r| r.status() == 200) {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready, "API did not come up");
    check_jwt_auth(&client, &base, &project, dir.path(), &env_ref).await;
    let resp = client
        .post(format!("{base}/_api/admin/users/export"))
        .header("Authorization", &auth)
        .json(&json!({"format": "csv", "csv": {"fields": [{"pointer": "/sub"}, {"pointer": "/email"}]}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let id = resp.json::<Value>().await.unwrap()["result"]["id"].as_str().unwrap().to_owned();
    let mut done = Value::Null;
    for _ in 0..600 {
        let body: Value = client
            .get(format!("{base}/_api/admin/users/export/{id}"))
            .header("Authorization", &auth)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if body["result"]["status"] == "completed" {
            done = body;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(done["result"]["status"], "completed", "task did not complete");
    assert!(done["result"].get("error").is_none(), "{done}");
    let bytes =
        client.get(done["result"]["download_url"].as_str().unwrap()).send().await.unwrap().bytes().await.unwrap();
    let mut reader = csv::Reader::from_reader(bytes.as_ref());
    assert_eq!(reader.headers().unwrap(), vec!["sub", "email"]);
    let expected: Vec<_> = (0..3000).map(|i| fake::user(1, i)).filter(|u| !u.test).collect();
    let got: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(got.len(), expected.len());
    for (row, user) in got.iter().zip(&expected) {
        assert_eq!(&row[0], user.id.as_str());
        assert_eq!(Some(&row[1]), user.email.as_deref());
    }
    assert!(worker.terminate(), "worker did not exit cleanly on SIGTERM");
    assert!(api.terminate(), "API did not exit cleanly on SIGTERM");
    drop_database(&svc.postgres_admin_url, &name).await;
}
