//! The fault harness: a throwaway Postgres database, a random queue prefix and bucket, the API in
//! process (no worker in this process), and `userexport worker` child processes that a test can
//! kill with SIGKILL. Everything started here is stopped on drop.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sea_orm::{ConnectionTrait, Statement};
use serde_json::Value;
use userexport::app::{self, Components};
use userexport::config::ConfigArgs;
use userexport_domain::{ProjectId, fake};

use crate::helpers::{self, create_database, drop_database, random_suffix};

pub const BIN: &str = env!("CARGO_BIN_EXE_userexport");

/// Faults run one at a time: they kill processes and connections and time what follows.
pub static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// One fault scenario's environment.
pub struct Fault {
    pub name: &'static str,
    pub base: String,
    pub client: reqwest::Client,
    pub components: Components,
    pub project: ProjectId,
    pub key: String,
    pub prefix: String,
    env: Vec<(String, String)>,
    redis_url: String,
    admin_url: String,
    db_name: Option<String>,
    server: actix_web::dev::ServerHandle,
    dir: tempfile::TempDir,
    started: Instant,
}

/// A snapshot of a task row.
#[derive(Debug, Clone)]
pub struct TaskRow {
    pub status: String,
    pub attempts: i64,
    pub lease_owner: Option<String>,
    pub upload_id: Option<String>,
    pub rows_written: i64,
}

impl Fault {
    /// Starts the scenario `name` with these extra `USEREXPORT_*` settings (for API and workers);
    /// `None` when the production services are unreachable and not required.
    pub async fn start(name: &'static str, extra: &[(&str, &str)]) -> Option<Fault> {
        let svc = helpers::services()?;
        let started = Instant::now();
        let dir = tempfile::tempdir().expect("tempdir");
        let db_name = format!("userexport_fault_{}", random_suffix());
        let db_url = create_database(&svc.postgres_admin_url, &db_name).await;
        let prefix = format!("uefault-{}", random_suffix());
        let mut env: Vec<(String, String)> = [
            ("USEREXPORT_QUEUE_PREFIX", prefix.clone()),
            ("USEREXPORT_DATABASE_URL", db_url),
            ("USEREXPORT_REDIS_URL", svc.redis_url.clone()),
            ("USEREXPORT_S3_ENDPOINT", svc.s3_endpoint.clone()),
            ("USEREXPORT_S3_BUCKET", format!("uefault-{}", random_suffix())),
            ("USEREXPORT_S3_REGION", "us-east-1".to_owned()),
            ("USEREXPORT_S3_ACCESS_KEY_ID", svc.s3_access_key.clone()),
            ("USEREXPORT_S3_SECRET_ACCESS_KEY", svc.s3_secret_key.clone()),
            ("USEREXPORT_S3_FORCE_PATH_STYLE", "true".to_owned()),
            ("USEREXPORT_DATA_DIR", dir.path().join("data").display().to_string()),
            ("USEREXPORT_BIND", "127.0.0.1:0".to_owned()),
            ("USEREXPORT_SIGNING_SECRET", format!("fault-signing-secret-{}-{}", random_suffix(), random_suffix())),
            ("USEREXPORT_LOG", "info".to_owned()),
            ("USEREXPORT_LEASE", "5s".to_owned()),
            ("USEREXPORT_SWEEP_INTERVAL", "1s".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        for (k, v) in extra {
            env.retain(|(name, _)| name != k);
            env.push(((*k).to_owned(), (*v).to_owned()));
        }
        let map: HashMap<String, String> = env.iter().cloned().collect();
        let settings = ConfigArgs::default().resolve_with(&|n| map.get(n).cloned()).expect("fault settings resolve");
        let components = app::build(&settings).await.expect("build components");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let server = app::start_api(&settings, &components, listener).expect("start api");
        let handle = server.handle();
        tokio::spawn(server);
        let (project, key) = components.store.create_project("faults").await.expect("project");
        eprintln!("[{name}] environment ready in {:.2?} (queue prefix {prefix})", started.elapsed());
        Some(Fault {
            name,
            base,
            client: reqwest::Client::builder().timeout(Duration::from_secs(120)).build().expect("client"),
            components,
            project: project.id,
            key,
            prefix,
            env,
            redis_url: map.get("USEREXPORT_REDIS_URL").cloned().unwrap_or(svc.redis_url),
            admin_url: svc.postgres_admin_url,
            db_name: Some(db_name),
            server: handle,
            dir,
            started,
        })
    }

    /// Prints a timing line for the note.
    pub fn note(&self, what: &str, since: Instant) {
        eprintln!("[{}] {what}: {:.2?} (scenario at {:.2?})", self.name, since.elapsed(), self.started.elapsed());
    }

    /// The database name of this scenario.
    pub fn db_name(&self) -> &str {
        self.db_name.as_deref().expect("database")
    }

    /// The Postgres admin URL.
    pub fn admin_url(&self) -> &str {
        &self.admin_url
    }

    /// Inserts `n` fake users (seed `seed`); returns the ids of the users an export shows (the
    /// non-test ones), in insertion order.
    pub async fn seed(&self, seed: u64, n: u64) -> Vec<String> {
        let t = Instant::now();
        let mut visible = Vec::new();
        let mut chunk = Vec::with_capacity(5000);
        for i in 0..n {
            let u = fake::user(seed, i);
            if !u.test {
                visible.push(u.id.to_string());
            }
            chunk.push(u);
            if chunk.len() == 5000 || i + 1 == n {
                self.components.store.insert_users(&self.project, &chunk).await.expect("insert users");
                chunk.clear();
            }
        }
        self.note(&format!("seeded {n} users ({} visible)", visible.len()), t);
        visible
    }

    /// Starts `userexport worker --concurrency n`, logging to `<dir>/<label>.log`.
    pub fn worker(&self, label: &str, concurrency: usize) -> Proc {
        let log = self.dir.path().join(format!("{label}.log"));
        let file = std::fs::File::create(&log).expect("log file");
        let mut cmd = Command::new(BIN);
        cmd.args(["worker", "--concurrency", &concurrency.to_string()]);
        // Only this scenario's settings: none inherited from the test runner's environment.
        for (k, _) in std::env::vars() {
            if k.starts_with("USEREXPORT_") {
                cmd.env_remove(k);
            }
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file);
        let child = cmd.spawn().expect("spawn userexport worker");
        Proc { label: label.to_owned(), child, log }
    }

    /// POSTs JSON with the project's credentials; returns status and body.
    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let resp = self
            .client
            .post(format!("{}{path}", self.base))
            .header("Authorization", format!("Bearer {}:{}", self.project, self.key))
            .json(body)
            .send()
            .await
            .expect("request");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// Creates an Authgear CSV export whose first column is the user id; returns the task id.
    pub async fn create_csv_export(&self) -> String {
        let body = serde_json::json!({"format": "csv", "csv": {"fields": [
            {"pointer": "/sub", "field_name": "user_id"}, {"pointer": "/email"}, {"pointer": "/name"},
            {"pointer": "/phone_number"}, {"pointer": "/custom_attributes"}, {"pointer": "/roles"},
            {"pointer": "/address/formatted"}, {"pointer": "/created_at"}]}});
        let (status, created) = self.post("/_api/admin/users/export", &body).await;
        assert_eq!(status, 200, "{created}");
        created["result"]["id"].as_str().expect("task id").to_owned()
    }

    /// The native view of a task, retrying transient failures (the API's own connections may be
    /// among those a fault killed).
    pub async fn task(&self, id: &str) -> Value {
        let mut last = String::new();
        for _ in 0..50 {
            match self
                .client
                .get(format!("{}/v1/exports/{id}", self.base))
                .header("Authorization", format!("Bearer {}:{}", self.project, self.key))
                .send()
                .await
            {
                Ok(r) if r.status().is_success() => return r.json().await.expect("json"),
                Ok(r) => last = format!("{} {}", r.status(), r.text().await.unwrap_or_default()),
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!("GET /v1/exports/{id} keeps failing: {last}");
    }

    /// Waits until the task is `completed` (panics on another final status or after `timeout`).
    pub async fn wait_completed(&self, id: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let t = self.task(id).await;
            match t["status"].as_str() {
                Some("completed") => return t,
                Some("pending" | "processing") => {}
                _ => panic!("[{}] task {id} ended badly: {t}", self.name),
            }
            assert!(Instant::now() < deadline, "[{}] task {id} not completed within {timeout:?}: {t}", self.name);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The task's row, read directly (retrying while connections are being killed).
    pub async fn row(&self, id: &str) -> TaskRow {
        let db = self.components.store.connection();
        let mut last = String::new();
        for _ in 0..50 {
            let stmt = Statement::from_sql_and_values(
                db.get_database_backend(),
                "SELECT status, attempts, lease_owner, upload_id, rows_written FROM export_tasks WHERE id = $1",
                [id.into()],
            );
            match db.query_one_raw(stmt).await {
                Ok(Some(r)) => {
                    return TaskRow {
                        status: r.try_get("", "status").expect("status"),
                        attempts: r.try_get("", "attempts").expect("attempts"),
                        lease_owner: r.try_get("", "lease_owner").expect("lease_owner"),
                        upload_id: r.try_get("", "upload_id").expect("upload_id"),
                        rows_written: r.try_get("", "rows_written").expect("rows_written"),
                    };
                }
                Ok(None) => panic!("task {id} not found"),
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!("cannot read task {id}: {last}");
    }

    /// Waits until `pred(row)` holds; returns the row. Panics after `timeout`.
    pub async fn wait_row(&self, id: &str, timeout: Duration, what: &str, pred: impl Fn(&TaskRow) -> bool) -> TaskRow {
        let deadline = Instant::now() + timeout;
        loop {
            let r = self.row(id).await;
            if pred(&r) {
                return r;
            }
            assert!(
                Instant::now() < deadline,
                "[{}] task {id}: {what} not reached within {timeout:?}: {r:?}",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Creates a CSV export and waits until its first attempt is streaming and has written a quarter
    /// of `users` rows (at least one 8 MiB part is uploaded by then), still `processing` under the
    /// same upload. Returns with every one of `workers` frozen ([`Proc::pause`]) and the row read
    /// while they were, so a fault injected now lands mid-stream however fast the export runs; the
    /// caller resumes the workers that should go on.
    pub async fn export_a_quarter_written(&self, users: usize, workers: &[&Proc]) -> (String, TaskRow) {
        let t0 = Instant::now();
        let id = self.create_csv_export().await;
        let first = self
            .wait_row(&id, Duration::from_secs(120), "an attempt streaming into an upload", |r| {
                r.status == "processing" && r.upload_id.is_some() && r.lease_owner.is_some()
            })
            .await;
        self.note("enqueue → first attempt uploading", t0);
        let quarter = users as i64 / 4;
        let deadline = Instant::now() + Duration::from_secs(300);
        let before = loop {
            workers.iter().for_each(|w| w.pause());
            let r = self.row(&id).await;
            if r.rows_written >= quarter || r.status != "processing" {
                break r;
            }
            workers.iter().for_each(|w| w.resume());
            assert!(Instant::now() < deadline, "[{}] task {id}: a quarter of the users not written: {r:?}", self.name);
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(before.status, "processing", "the export finished before the fault: {before:?}");
        assert_eq!(before.upload_id, first.upload_id, "{before:?}");
        (id, before)
    }

    /// Waits until every task in `tasks` is completed, noting each time since the fault (`since`,
    /// described by `fault`). The first task's file is checked user by user against `expected`, the
    /// others' row counts.
    pub async fn wait_all_completed(&self, tasks: &[&String], expected: &[String], fault: &str, since: Instant) {
        for (i, t) in tasks.iter().enumerate() {
            let done = self.wait_completed(t, Duration::from_secs(300)).await;
            self.note(&format!("{fault} → {t} completed"), since);
            if i == 0 {
                self.check_csv_file(&done, expected).await;
            } else {
                assert_eq!(done["rows_written"], expected.len() as u64, "{done}");
            }
        }
    }

    /// After a fault: an export created now completes (noted as `what`), no task is left
    /// `pending` or `processing`, and the queue drains.
    pub async fn check_recovered(&self, what: &str) {
        let id = self.create_csv_export().await;
        let t = Instant::now();
        self.wait_completed(&id, Duration::from_secs(300)).await;
        self.note(what, t);
        let unfinished =
            self.sql_i64("SELECT COUNT(*) FROM export_tasks WHERE status IN ('pending', 'processing')").await;
        assert_eq!(unfinished, vec![0], "tasks left unfinished");
        self.wait_queue_drained(Duration::from_secs(30)).await;
    }

    /// Waits until the queue holds no job; panics after `timeout`.
    pub async fn wait_queue_drained(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let depth = self.components.queue.depth().await.expect("queue depth");
            if depth == 0 {
                return;
            }
            assert!(Instant::now() < deadline, "the queue did not drain: depth {depth}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Runs SQL statements (no result); returns the rows the last one affected.
    pub async fn sql_exec(&self, sql: &str) -> u64 {
        let db = self.components.store.connection();
        db.execute_unprepared(sql).await.expect(sql).rows_affected()
    }

    /// The keys of the finished objects in this scenario's bucket.
    pub async fn objects(&self) -> Vec<String> {
        self.components.storage.list("").await.expect("list objects")
    }

    /// Runs one SQL statement and returns the first column of every row as i64.
    pub async fn sql_i64(&self, sql: &str) -> Vec<i64> {
        let db = self.components.store.connection();
        let rows = db.query_all_raw(Statement::from_string(db.get_database_backend(), sql)).await.expect(sql);
        rows.iter().map(|r| r.try_get_by_index::<i64>(0).expect("i64")).collect()
    }

    /// Downloads the completed task's file and checks that its user ids are exactly `expected`
    /// (each once, none missing, nothing else).
    pub async fn check_csv_file(&self, done: &Value, expected: &[String]) {
        let url = done["download_url"].as_str().unwrap_or_else(|| panic!("no download_url: {done}"));
        let t = Instant::now();
        let resp = self.client.get(url).send().await.expect("download");
        assert_eq!(resp.status().as_u16(), 200, "download of {url}");
        let body = resp.bytes().await.expect("body");
        let mut reader = csv::ReaderBuilder::new().has_headers(true).from_reader(body.as_ref());
        let headers = reader.headers().expect("header").clone();
        assert_eq!(headers.get(0), Some("user_id"), "{headers:?}");
        let mut seen: HashSet<String> = HashSet::with_capacity(expected.len());
        let mut duplicates = Vec::new();
        let mut rows = 0u64;
        for record in reader.records() {
            let record = record.expect("csv record");
            rows += 1;
            let id = record.get(0).expect("id column").to_owned();
            if !seen.insert(id.clone()) && duplicates.len() < 10 {
                duplicates.push(id);
            }
        }
        let want: HashSet<&str> = expected.iter().map(String::as_str).collect();
        let missing: Vec<&&str> = want.iter().filter(|id| !seen.contains(**id)).take(10).collect();
        let unknown: Vec<&String> = seen.iter().filter(|id| !want.contains(id.as_str())).take(10).collect();
        assert!(duplicates.is_empty(), "[{}] duplicated users in the file: {duplicates:?}", self.name);
        assert!(missing.is_empty(), "[{}] users missing from the file: {missing:?}", self.name);
        assert!(unknown.is_empty(), "[{}] unexpected users in the file: {unknown:?}", self.name);
        assert_eq!(rows, expected.len() as u64, "[{}] rows in the file", self.name);
        assert_eq!(done["rows_written"], expected.len() as u64, "{done}");
        assert_eq!(done["bytes_written"], body.len() as u64, "{done}");
        self.note(&format!("downloaded and checked {rows} rows ({} bytes)", body.len()), t);
    }

    /// Deletes every Redis key under this scenario's queue prefix; returns how many were deleted.
    pub fn delete_queue_keys(&self) -> usize {
        redis_delete_prefix(&self.redis_url, &self.prefix)
    }

    /// Keys under this scenario's queue prefix.
    pub fn queue_keys(&self) -> Vec<String> {
        redis_scan(&self.redis_url, &self.prefix)
    }

    /// apalis' finished-job records: members of the `<prefix>:done` and `<prefix>:dead` sets, and
    /// the job payloads left in the `<prefix>:data` hash.
    pub fn finished_records(&self) -> (i64, i64) {
        let mut r = Redis::connect(&self.redis_url);
        let int = |reply| match reply {
            Resp::Int(n) => n,
            Resp::Simple | Resp::Bulk(_) | Resp::Array(_) => panic!("expected an integer reply"),
        };
        let done = int(r.cmd(&["SCARD", &format!("{}:done", self.prefix)]));
        let dead = int(r.cmd(&["SCARD", &format!("{}:dead", self.prefix)]));
        let payloads = int(r.cmd(&["HLEN", &format!("{}:data", self.prefix)]));
        (done + dead, payloads)
    }
}

impl Drop for Fault {
    fn drop(&mut self) {
        drop(self.server.stop(false));
        redis_delete_prefix(&self.redis_url, &self.prefix);
        if let Some(name) = self.db_name.take() {
            let admin = self.admin_url.clone();
            let _ = std::thread::spawn(move || {
                if let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    rt.block_on(drop_database(&admin, &name));
                }
            })
            .join();
        }
    }
}

/// A `redis-server` of the test's own on a loopback port, keeping nothing on disk, so it can be
/// killed and started again empty (as a Redis without persistence comes back after a crash).
pub struct RedisServer {
    pub port: u16,
    bin: String,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts `redis-server` (`USEREXPORT_TEST_REDIS_SERVER`, else the one on PATH) on a free port;
    /// `None` when it is not installed and services are not required.
    pub fn start() -> Option<RedisServer> {
        let bin = std::env::var("USEREXPORT_TEST_REDIS_SERVER").unwrap_or_else(|_| "redis-server".to_owned());
        if Command::new(&bin).arg("--version").output().is_err() {
            let msg = format!("`{bin}` cannot be run; the Redis-restart fault test needs redis-server");
            assert!(!helpers::services_required(), "{msg}");
            eprintln!("skipping: {msg}");
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
        let mut server = RedisServer { port, bin, child: None };
        server.restart();
        Some(server)
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// SIGKILL: every key is lost.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server (again) on the same port and waits until it answers PING.
    pub fn restart(&mut self) {
        self.kill9();
        let port = self.port.to_string();
        let child = Command::new(&self.bin)
            .args(["--port", &port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--protected-mode", "no", "--daemonize", "no", "--loglevel", "warning"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(stream) = std::net::TcpStream::connect(("127.0.0.1", self.port)) {
                stream.set_read_timeout(Some(Duration::from_secs(2))).ok();
                let mut r = Redis { reader: BufReader::new(stream.try_clone().expect("clone")), writer: stream };
                if matches!(r.cmd(&["PING"]), Resp::Simple) {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "redis-server on port {port} did not answer PING within 10 s");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A `userexport worker` child process; killed (SIGKILL) on drop.
pub struct Proc {
    pub label: String,
    child: Child,
    log: PathBuf,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// True while the process runs.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGKILL and reap.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Freezes the process (SIGSTOP): it keeps its connections, leases and open transactions but
    /// does nothing until [`Proc::resume`]. A frozen process is still killed on drop.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Lets a paused process go on (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, which: &str) {
        let status = Command::new("kill")
            .args([which, &self.pid().to_string()])
            .status()
            .unwrap_or_else(|e| panic!("kill {which} {}: {e}", self.label));
        assert!(status.success(), "kill {which} {} failed: {status}", self.label);
    }

    /// The process's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether `owner` (a lease owner, `<host>-<pid>-<ulid>`) is this process.
    pub fn owns(&self, owner: &str) -> bool {
        owner.contains(&format!("-{}-", self.pid()))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        // Set USEREXPORT_TEST_FAULT_LOGS=1 to see every worker's log, also when the scenario passes.
        if std::env::var("USEREXPORT_TEST_FAULT_LOGS").is_ok_and(|v| v == "1") {
            eprintln!("----- log of {} -----\n{}", self.label, self.log());
        }
    }
}

// A minimal RESP client: the test crate has no Redis dependency, and it only needs SCAN and DEL.

enum Resp {
    Simple,
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Vec<Resp>),
}

fn resp_read(r: &mut impl BufRead) -> Resp {
    let mut line = String::new();
    r.read_line(&mut line).expect("redis read");
    let line = line.trim_end_matches("\r\n");
    let (kind, rest) = line.split_at(1);
    match kind {
        "+" => Resp::Simple,
        "-" => panic!("redis error: {rest}"),
        ":" => Resp::Int(rest.parse().expect("int")),
        "$" => {
            let n: i64 = rest.parse().expect("len");
            if n < 0 {
                return Resp::Bulk(None);
            }
            let mut buf = vec![0u8; n as usize + 2];
            std::io::Read::read_exact(r, &mut buf).expect("bulk");
            buf.truncate(n as usize);
            Resp::Bulk(Some(buf))
        }
        "*" => {
            let n: i64 = rest.parse().expect("len");
            Resp::Array((0..n.max(0)).map(|_| resp_read(r)).collect())
        }
        other => panic!("unexpected redis reply type {other}: {line}"),
    }
}

struct Redis {
    reader: BufReader<std::net::TcpStream>,
    writer: std::net::TcpStream,
}

impl Redis {
    fn connect(url: &str) -> Redis {
        let u = url::Url::parse(url).expect("redis url");
        let host = u.host_str().unwrap_or("127.0.0.1");
        let stream = std::net::TcpStream::connect((host, u.port().unwrap_or(6379))).expect("connect to redis");
        stream.set_read_timeout(Some(Duration::from_secs(10))).ok();
        let mut r = Redis { reader: BufReader::new(stream.try_clone().expect("clone")), writer: stream };
        if !u.password().unwrap_or_default().is_empty() {
            let user = if u.username().is_empty() { "default" } else { u.username() };
            r.cmd(&["AUTH", user, u.password().unwrap_or_default()]);
        }
        let db = u.path().trim_start_matches('/');
        if !db.is_empty() {
            r.cmd(&["SELECT", db]);
        }
        r
    }

    fn cmd(&mut self, args: &[&str]) -> Resp {
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            out.extend_from_slice(a.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        self.writer.write_all(&out).expect("redis write");
        resp_read(&mut self.reader)
    }
}

fn glob_escape(s: &str) -> String {
    s.chars().flat_map(|c| if matches!(c, '*' | '?' | '[' | ']' | '\\') { vec!['\\', c] } else { vec![c] }).collect()
}

/// Every key whose name starts with `prefix` (SCAN, never KEYS).
fn redis_scan(url: &str, prefix: &str) -> Vec<String> {
    assert!(prefix.starts_with("uefault-"), "refusing to touch keys outside a fault prefix");
    let mut r = Redis::connect(url);
    let pattern = format!("{}*", glob_escape(prefix));
    let mut cursor = "0".to_owned();
    let mut keys = Vec::new();
    loop {
        let Resp::Array(parts) = r.cmd(&["SCAN", &cursor, "MATCH", &pattern, "COUNT", "1000"]) else {
            panic!("bad SCAN reply")
        };
        let mut parts = parts.into_iter();
        let Some(Resp::Bulk(Some(next))) = parts.next() else { panic!("bad SCAN cursor") };
        if let Some(Resp::Array(found)) = parts.next() {
            for k in found {
                if let Resp::Bulk(Some(k)) = k {
                    keys.push(String::from_utf8(k).expect("utf-8 key"));
                }
            }
        }
        cursor = String::from_utf8(next).expect("cursor");
        if cursor == "0" {
            return keys;
        }
    }
}

fn redis_delete_prefix(url: &str, prefix: &str) -> usize {
    let keys = redis_scan(url, prefix);
    let mut r = Redis::connect(url);
    let mut deleted = 0;
    for chunk in keys.chunks(100) {
        let mut args = vec!["DEL"];
        args.extend(chunk.iter().map(String::as_str));
        match r.cmd(&args) {
            Resp::Int(n) => deleted += n as usize,
            Resp::Simple | Resp::Bulk(_) | Resp::Array(_) => panic!("bad DEL reply"),
        }
    }
    deleted
}
