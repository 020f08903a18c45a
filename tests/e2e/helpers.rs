//! The `spawn_app()` harness: a real app on port 0 with a throwaway database, a random queue prefix
//! and a fresh bucket (production mode) or a temp dir (embedded mode), plus a worker running in the
//! background that tests can wait on.

use std::net::TcpListener;
use std::time::Duration;

use rand::Rng;
use serde_json::Value;
use userexport::app::{self, Components, Shutdown};
use userexport::config::{ConfigArgs, Settings};
use userexport_domain::{ProjectId, User, fake};

/// Which backing services an app uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// SQLite + SQLite queue + local files.
    Embedded,
    /// Postgres + Redis + s3s-fs.
    Production,
}

/// True when services must be present (CI); a missing service then fails the test.
pub fn services_required() -> bool {
    std::env::var("USEREXPORT_TEST_REQUIRE_SERVICES").is_ok_and(|v| v == "1")
}

/// Test service locations.
pub struct Services {
    pub postgres_admin_url: String,
    pub redis_url: String,
    pub s3_endpoint: String,
    pub s3_access_key: String,
    pub s3_secret_key: String,
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

fn reachable(url: &str) -> bool {
    let Ok(u) = url::Url::parse(url) else { return false };
    let (Some(host), Some(port)) = (u.host_str(), u.port_or_known_default()) else { return false };
    let host = if host == "localhost" { "127.0.0.1" } else { host };
    let Ok(addr) = format!("{host}:{port}").parse() else { return false };
    std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok()
}

/// The production services, or `None` (with a message) when they are not all reachable.
/// Panics instead when services are required.
pub fn services() -> Option<Services> {
    let s = Services {
        postgres_admin_url: env_or("USEREXPORT_TEST_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres"),
        redis_url: env_or("USEREXPORT_TEST_REDIS_URL", "redis://127.0.0.1:6379"),
        s3_endpoint: env_or("USEREXPORT_TEST_S3_ENDPOINT", ""),
        s3_access_key: env_or("USEREXPORT_TEST_S3_ACCESS_KEY_ID", ""),
        s3_secret_key: env_or("USEREXPORT_TEST_S3_SECRET_ACCESS_KEY", ""),
    };
    let missing: Vec<&str> = [
        ("postgres", reachable(&s.postgres_admin_url)),
        ("redis", reachable(&s.redis_url)),
        ("s3 (USEREXPORT_TEST_S3_ENDPOINT)", !s.s3_endpoint.is_empty() && reachable(&s.s3_endpoint)),
    ]
    .into_iter()
    .filter(|(_, ok)| !ok)
    .map(|(n, _)| n)
    .collect();
    if missing.is_empty() {
        return Some(s);
    }
    let msg = format!("production-mode services unreachable: {}; run `cargo xtask test`", missing.join(", "));
    if services_required() {
        panic!("{msg}");
    }
    eprintln!("skipping: {msg}");
    None
}

/// An Authgear CSV cell as read back by a CSV reader, written independently of the encoder:
/// strings as is, numbers and booleans as text, null or missing as empty, arrays and objects as
/// HTML-escaped compact JSON; then the formula guard (E.164 phone numbers spared).
pub fn authgear_cell(v: Option<&Value>) -> String {
    let s = match v {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Bool(b)) => b.to_string(),
        Some(Value::Number(n)) => n.to_string(),
        Some(other) => serde_json::to_string(other)
            .expect("serialize")
            .replace('<', "\\u003c")
            .replace('>', "\\u003e")
            .replace('&', "\\u0026"),
    };
    let formula = s.starts_with(['=', '-', '@', '\t', '\r'])
        || (s.starts_with('+') && !s[1..].bytes().all(|b| b.is_ascii_digit()));
    if formula { format!("'{s}") } else { s }
}

/// A random lowercase suffix for throwaway names.
pub fn random_suffix() -> String {
    let mut r = rand::rng();
    (0..12).map(|_| (b'a' + r.random_range(0..26)) as char).collect()
}

/// Creates a throwaway Postgres database; returns its URL.
pub async fn create_database(admin_url: &str, name: &str) -> String {
    use sea_orm::ConnectionTrait;
    let admin = sea_orm::Database::connect(admin_url).await.expect("connect to the Postgres admin database");
    admin.execute_unprepared(&format!("CREATE DATABASE \"{name}\"")).await.expect("create test database");
    let _ = admin.close().await;
    let mut url = url::Url::parse(admin_url).expect("admin url");
    url.set_path(&format!("/{name}"));
    url.to_string()
}

/// Drops a throwaway Postgres database.
pub async fn drop_database(admin_url: &str, name: &str) {
    use sea_orm::ConnectionTrait;
    if let Ok(admin) = sea_orm::Database::connect(admin_url).await {
        let _ = admin.execute_unprepared(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")).await;
        let _ = admin.close().await;
    }
}

/// A running app.
pub struct TestApp {
    pub mode: Mode,
    pub base: String,
    pub client: reqwest::Client,
    pub components: Components,
    pub project: ProjectId,
    pub key: String,
    pub other_project: ProjectId,
    pub other_key: String,
    server: actix_web::dev::ServerHandle,
    stop_worker: Option<tokio::sync::watch::Sender<bool>>,
    worker: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    database: Option<(String, String)>,
    _dir: tempfile::TempDir,
}

/// Settings for a test app in `mode` under `dir`, plus `extra` `USEREXPORT_*` variables.
pub async fn test_settings_with(
    mode: Mode,
    dir: &std::path::Path,
    extra: &[(&str, String)],
) -> Option<(Settings, Option<(String, String)>)> {
    let prefix = format!("uetest-{}", random_suffix());
    match mode {
        Mode::Embedded => {
            let mut vars = vec![("USEREXPORT_QUEUE_PREFIX", prefix)];
            vars.extend(extra.iter().cloned());
            Some((resolve(dir, &vars), None))
        }
        Mode::Production => {
            let svc = services()?;
            let db_name = format!("userexport_test_{}", random_suffix());
            let db_url = create_database(&svc.postgres_admin_url, &db_name).await;
            let mut vars = vec![
                ("USEREXPORT_QUEUE_PREFIX", prefix),
                ("USEREXPORT_DATABASE_URL", db_url),
                ("USEREXPORT_REDIS_URL", svc.redis_url.clone()),
                ("USEREXPORT_S3_ENDPOINT", svc.s3_endpoint.clone()),
                ("USEREXPORT_S3_BUCKET", format!("uetest-{}", random_suffix())),
                ("USEREXPORT_S3_REGION", "us-east-1".to_owned()),
                ("USEREXPORT_S3_ACCESS_KEY_ID", svc.s3_access_key.clone()),
                ("USEREXPORT_S3_SECRET_ACCESS_KEY", svc.s3_secret_key.clone()),
                ("USEREXPORT_S3_FORCE_PATH_STYLE", "true".to_owned()),
            ];
            vars.extend(extra.iter().cloned());
            let s = resolve(dir, &vars);
            Some((s, Some((svc.postgres_admin_url, db_name))))
        }
    }
}

/// Resolves settings exactly as the binary does, from `vars` only (the process environment is ignored).
fn resolve(dir: &std::path::Path, vars: &[(&str, String)]) -> Settings {
    let mut env: std::collections::HashMap<String, String> =
        vars.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect();
    env.insert("USEREXPORT_DATA_DIR".into(), dir.join("data").display().to_string());
    env.insert("USEREXPORT_BIND".into(), "127.0.0.1:0".into());
    ConfigArgs::default().resolve_with(&|name| env.get(name).cloned()).expect("test settings resolve")
}

/// Starts an app (API on port 0 and a background worker) with two projects.
pub async fn spawn_app(mode: Mode) -> Option<TestApp> {
    spawn_app_with(mode, &[]).await
}

/// [`spawn_app`] with extra `USEREXPORT_*` settings.
pub async fn spawn_app_with(mode: Mode, extra: &[(&str, String)]) -> Option<TestApp> {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut settings, database) = test_settings_with(mode, dir.path(), extra).await?;
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    settings.public_url = format!("http://{addr}");
    settings.lease = Duration::from_secs(10);
    let components = app::build(&settings).await.expect("build components");
    let server = app::start_api(&settings, &components, listener).expect("start api");
    let handle = server.handle();
    tokio::spawn(server);
    let (tx, shutdown) = Shutdown::new();
    let (ws, wc) = (settings.clone(), components.clone());
    let worker = tokio::spawn(async move { app::run_worker(&ws, &wc, 2, shutdown).await });
    let (project, key) = components.store.create_project("test").await.expect("project");
    let (other, other_key) = components.store.create_project("other").await.expect("other project");
    Some(TestApp {
        mode,
        base: format!("http://{addr}"),
        client: reqwest::Client::builder().timeout(Duration::from_secs(60)).build().expect("client"),
        components,
        project: project.id,
        key,
        other_project: other.id,
        other_key,
        server: handle,
        stop_worker: Some(tx),
        worker: Some(worker),
        database,
        _dir: dir,
    })
}

impl TestApp {
    /// `Bearer <project>:<key>` of the main project.
    pub fn auth(&self) -> String {
        format!("Bearer {}:{}", self.project, self.key)
    }

    /// `Bearer <project>:<key>` of the other project.
    pub fn other_auth(&self) -> String {
        format!("Bearer {}:{}", self.other_project, self.other_key)
    }

    /// Inserts `n` fake users (seed `seed`) into the main project; returns them in insertion order.
    pub async fn seed(&self, seed: u64, n: u64) -> Vec<User> {
        let users: Vec<User> = (0..n).map(|i| fake::user(seed, i)).collect();
        for chunk in users.chunks(5000) {
            self.components.store.insert_users(&self.project, chunk).await.expect("insert users");
        }
        users
    }

    /// POSTs JSON with the main project's credentials.
    pub async fn post(&self, path: &str, body: &Value) -> reqwest::Response {
        self.client
            .post(format!("{}{path}", self.base))
            .header("Authorization", self.auth())
            .json(body)
            .send()
            .await
            .expect("request")
    }

    /// GETs with the other project's credentials.
    pub async fn get_as_other(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.base))
            .header("Authorization", self.other_auth())
            .send()
            .await
            .expect("request")
    }

    /// GETs with the main project's credentials.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.base))
            .header("Authorization", self.auth())
            .send()
            .await
            .expect("request")
    }

    /// Polls `path` until `done(body)` holds; panics after `timeout`.
    pub async fn poll_until(&self, path: &str, timeout: Duration, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let resp = self.get(path).await;
            let status = resp.status();
            let body: Value = resp.json().await.expect("json body");
            assert!(status.is_success(), "GET {path} → {status}: {body}");
            if done(&body) {
                return body;
            }
            assert!(tokio::time::Instant::now() < deadline, "timed out waiting on {path}; last body {body}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Downloads a URL without credentials.
    pub async fn download(&self, url: &str) -> (u16, Vec<u8>) {
        let resp = self.client.get(url).send().await.expect("download");
        let status = resp.status().as_u16();
        (status, resp.bytes().await.expect("body").to_vec())
    }

    /// Number of tasks of any project (for "nothing was created" checks).
    pub async fn task_count(&self) -> u64 {
        use sea_orm::{ConnectionTrait, Statement};
        let db = self.components.store.connection();
        let row = db
            .query_one_raw(Statement::from_string(db.get_database_backend(), "SELECT COUNT(*) AS n FROM export_tasks"))
            .await
            .expect("count")
            .expect("row");
        row.try_get::<i64>("", "n").expect("n") as u64
    }

    /// Stops the server and the worker and removes the throwaway database.
    fn server_stop_on_drop(&mut self) {
        if let Some(tx) = self.stop_worker.take() {
            let _ = tx.send(true);
        }
        if let Some(w) = self.worker.take() {
            w.abort();
        }
        drop(self.server.stop(false));
    }

    pub async fn stop(mut self) {
        self.server.stop(true).await;
        if let Some(tx) = self.stop_worker.take() {
            let _ = tx.send(true);
        }
        if let Some(w) = self.worker.take() {
            let _ = tokio::time::timeout(Duration::from_secs(30), w).await;
        }
        if let Some((admin, name)) = self.database.take() {
            self.components.store.connection().clone().close().await.ok();
            drop_database(&admin, &name).await;
        }
    }
}

impl Drop for TestApp {
    /// A test that panicked never reached [`TestApp::stop`]: still drop its database (on a thread
    /// with its own runtime, as this may run inside the test's runtime).
    fn drop(&mut self) {
        self.server_stop_on_drop();
        if let Some((admin, name)) = self.database.take() {
            let _ = std::thread::spawn(move || {
                if let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    rt.block_on(drop_database(&admin, &name));
                }
            })
            .join();
        }
    }
}

/// Runs an SDK script to completion; panics with its output unless it exits with status 0.
pub async fn run_sdk_script(mut cmd: std::process::Command, app: &TestApp, fixture: &std::path::Path) {
    cmd.current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("USEREXPORT_SDK_BASE_URL", &app.base)
        .env("USEREXPORT_SDK_FIXTURE", fixture)
        .env("NO_PROXY", "127.0.0.1,localhost");
    let described = format!("{cmd:?}");
    let out = tokio::time::timeout(Duration::from_secs(600), tokio::task::spawn_blocking(move || cmd.output()))
        .await
        .expect("the SDK script finishes within 10 minutes")
        .unwrap()
        .unwrap_or_else(|e| panic!("cannot run {described}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{described} failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}", out.status);
    println!("{stdout}");
}
