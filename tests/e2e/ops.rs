//! Operating the service: `serve` and `worker` as separate processes on one embedded data
//! directory (SQLite database and queue, local files; no external service needed). The worker's
//! own `/metrics` shows exports that completed, failed and expired by dialect and format; the API's
//! `/metrics` shows what the API counted; `/openapi.json` and `/docs` are served; and the JSON logs
//! (`USEREXPORT_LOG_FORMAT=json`) carry a request id on API lines and the task id on worker lines,
//! and no secret.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use userexport_domain::fake;

const BIN: &str = env!("CARGO_BIN_EXE_userexport");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Runs the binary to completion and parses its JSON stdout.
fn json_out(args: &[&str], env: &[(String, String)]) -> Value {
    let out = Command::new(BIN)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("USEREXPORT_LOG", "warn")
        .output()
        .expect("run userexport");
    assert!(out.status.success(), "userexport {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).expect("utf-8");
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// A child process whose stderr (the log) goes to a file; killed on drop.
struct Proc {
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn spawn(args: &[&str], env: &[(String, String)], log: PathBuf) -> Proc {
        let file = std::fs::File::create(&log).expect("log file");
        let child = Command::new(BIN)
            .args(args)
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("spawn userexport");
        Proc { child, log }
    }

    /// SIGTERM, wait (bounded); returns whether it exited successfully, and its log.
    fn terminate(mut self) -> (bool, String) {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let mut ok = false;
        for _ in 0..300 {
            if let Ok(Some(status)) = self.child.try_wait() {
                ok = status.success();
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        (ok, std::fs::read_to_string(&self.log).unwrap_or_default())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Prometheus text as `series → value` (`name{labels}` exactly as rendered).
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// The value of `name` with exactly these labels (in any order), if present.
fn sample(samples: &BTreeMap<String, f64>, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples.iter().find_map(|(series, value)| {
        let rest = series.strip_prefix(name)?;
        let mut found: Vec<&str> = match rest {
            "" => Vec::new(),
            r if r.starts_with('{') && r.ends_with('}') => r[1..r.len() - 1].split(',').collect(),
            _ => return None,
        };
        let mut want: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
        found.sort_unstable();
        want.sort_unstable();
        (found == want.iter().map(String::as_str).collect::<Vec<_>>()).then_some(*value)
    })
}

async fn wait_healthy(client: &reqwest::Client, url: &str) {
    for _ in 0..300 {
        if client.get(url).send().await.is_ok_and(|r| r.status() == 200) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{url} did not come up");
}

/// Every JSON log line; panics on a line that is not JSON.
fn json_lines(log: &str, what: &str) -> Vec<Value> {
    log.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{what} log line is not JSON ({e}): {l}")))
        .collect()
}

/// A field of the event or of any span it is in.
fn field<'a>(line: &'a Value, name: &str) -> Option<&'a Value> {
    line.get(name)
        .or_else(|| line["span"].get(name))
        .or_else(|| line["spans"].as_array()?.iter().find_map(|s| s.get(name)))
}

/// `cargo run --release` on a machine that never ran it: the API is ready at once, with no export
/// written yet (the files directory is created at start, not by the first export).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_embedded_data_directory_is_ready() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = free_port();
    let env: Vec<(String, String)> = vec![
        ("USEREXPORT_DATA_DIR".to_owned(), data.to_str().unwrap().to_owned()),
        ("USEREXPORT_BIND".to_owned(), format!("127.0.0.1:{port}")),
        ("USEREXPORT_LOG".to_owned(), "warn".to_owned()),
    ];
    let app = Proc::spawn(&[], &env, dir.path().join("app.log"));
    let client = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
    let base = format!("http://127.0.0.1:{port}");
    wait_healthy(&client, &format!("{base}/healthz")).await;
    let resp = client.get(format!("{base}/readyz")).send().await.unwrap();
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "ok", "{body}");
    let (stopped, log) = app.terminate();
    assert!(stopped, "the app did not stop cleanly: {log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_metrics_endpoint_and_structured_logs() {
    let dir = tempfile::tempdir().unwrap();
    let (api_port, metrics_port) = (free_port(), free_port());
    let env: Vec<(String, String)> = [
        ("USEREXPORT_DATA_DIR", dir.path().to_str().unwrap().to_owned()),
        ("USEREXPORT_BIND", format!("127.0.0.1:{api_port}")),
        ("USEREXPORT_WORKER_METRICS_BIND", format!("127.0.0.1:{metrics_port}")),
        ("USEREXPORT_LOG_FORMAT", "json".to_owned()),
        ("USEREXPORT_LOG", "info".to_owned()),
        ("USEREXPORT_RETENTION", "3s".to_owned()),
        ("USEREXPORT_DOWNLOAD_URL_TTL", "3s".to_owned()),
        ("USEREXPORT_SWEEP_INTERVAL", "250ms".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let created = json_out(&["project", "create", "--name", "ops", "--json"], &env);
    let (project, key) =
        (created["project_id"].as_str().unwrap().to_owned(), created["management_key"].as_str().unwrap().to_owned());
    let created = json_out(&["project", "create", "--name", "broken", "--json"], &env);
    let (broken, broken_key) =
        (created["project_id"].as_str().unwrap().to_owned(), created["management_key"].as_str().unwrap().to_owned());
    json_out(&["users", "seed", "--project", &project, "--count", "200", "--seed", "3", "--json"], &env);
    let visible = (0..200).filter(|i| !fake::user(3, *i).test).count() as f64;
    // The broken project's files cannot be written: its export directory is a regular file, so
    // its exports fail for good (a permanent I/O error).
    let exports_dir = dir.path().join("files").join("exports");
    std::fs::create_dir_all(&exports_dir).unwrap();
    std::fs::write(exports_dir.join(&broken), b"not a directory").unwrap();

    let api = Proc::spawn(&["serve"], &env, dir.path().join("api.log"));
    let worker = Proc::spawn(&["worker", "--concurrency", "2"], &env, dir.path().join("worker.log"));
    let client = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
    let base = format!("http://127.0.0.1:{api_port}");
    let metrics_url = format!("http://127.0.0.1:{metrics_port}/metrics");
    wait_healthy(&client, &format!("{base}/healthz")).await;
    wait_healthy(&client, &format!("http://127.0.0.1:{metrics_port}/healthz")).await;

    let post = |path: &str, auth: String, body: Value| {
        let req = client.post(format!("{base}{path}")).header("Authorization", auth).json(&body);
        async move {
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            (status, resp.json::<Value>().await.unwrap())
        }
    };
    let (status, body) = post("/v1/exports", format!("Bearer {project}:{key}"), json!({"format": "csv"})).await;
    assert_eq!(status, 202, "{body}");
    let native_csv = body["id"].as_str().unwrap().to_owned();
    let (status, body) =
        post("/_api/admin/users/export", format!("Bearer {project}:{key}"), json!({"format": "ndjson"})).await;
    assert_eq!(status, 200, "{body}");
    let authgear_ndjson = body["result"]["id"].as_str().unwrap().to_owned();
    let (status, body) =
        post("/v1/exports", format!("Bearer {broken}:{broken_key}"), json!({"format": "ndjson"})).await;
    assert_eq!(status, 202, "{body}");
    let failing = body["id"].as_str().unwrap().to_owned();

    // The native view shows every task, whichever dialect created it.
    let wait_status = |id: String, auth: String, want: &'static str| {
        let client = client.clone();
        let url = format!("{base}/v1/exports/{id}");
        async move {
            let mut last = Value::Null;
            for _ in 0..600 {
                last = client.get(&url).header("Authorization", &auth).send().await.unwrap().json().await.unwrap();
                if last["status"] == want {
                    return last;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            panic!("{id} did not become {want}: {last}");
        }
    };
    let done = wait_status(native_csv.clone(), format!("Bearer {project}:{key}"), "completed").await;
    assert_eq!(done["rows_written"], visible as u64);
    wait_status(authgear_ndjson.clone(), format!("Bearer {project}:{key}"), "completed").await;
    let failed = wait_status(failing.clone(), format!("Bearer {broken}:{broken_key}"), "failed").await;
    assert_eq!(failed["error"]["code"], "export_failed", "{failed}");

    // The worker's own endpoint: completed and failed by dialect and format, rows, durations, phases.
    let text = client.get(&metrics_url).send().await.unwrap().text().await.unwrap();
    let m = samples(&text);
    let native = [("dialect", "native"), ("format", "csv")];
    let authgear = [("dialect", "authgear"), ("format", "ndjson")];
    assert_eq!(sample(&m, "userexport_exports_completed_total", &native), Some(1.0), "{text}");
    assert_eq!(sample(&m, "userexport_exports_completed_total", &authgear), Some(1.0), "{text}");
    assert_eq!(
        sample(&m, "userexport_exports_failed_total", &[("dialect", "native"), ("format", "ndjson")]),
        Some(1.0),
        "{text}"
    );
    assert_eq!(sample(&m, "userexport_rows_exported_total", &native), Some(visible), "{text}");
    assert_eq!(sample(&m, "userexport_rows_exported_total", &authgear), Some(visible), "{text}");
    assert!(sample(&m, "userexport_bytes_exported_total", &native).is_some_and(|b| b > 1000.0), "{text}");
    assert_eq!(sample(&m, "userexport_export_duration_seconds_count", &native), Some(1.0), "{text}");
    for phase in ["starting", "streaming", "completing"] {
        let count = sample(&m, "userexport_export_phase_seconds_count", &[("phase", phase)]);
        assert_eq!(count, Some(2.0), "{phase}: {text}");
    }
    // Files this small are stored with one PutObject: no multipart part was uploaded.
    assert_eq!(sample(&m, "userexport_upload_part_seconds_count", &[]).unwrap_or(0.0), 0.0, "{text}");
    assert_eq!(sample(&m, "userexport_worker_in_flight", &[]), Some(0.0), "{text}");
    assert!(sample(&m, "userexport_queue_depth", &[]).is_some(), "{text}");
    assert!(text.contains("# HELP userexport_exports_failed_total"), "{text}");

    // Past retention the sweeper deletes the files and counts the expiries.
    let mut expired = BTreeMap::new();
    for _ in 0..200 {
        expired = samples(&client.get(&metrics_url).send().await.unwrap().text().await.unwrap());
        if sample(&expired, "userexport_exports_expired_total", &native) == Some(1.0)
            && sample(&expired, "userexport_exports_expired_total", &authgear) == Some(1.0)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(sample(&expired, "userexport_exports_expired_total", &native), Some(1.0), "{expired:?}");
    assert_eq!(sample(&expired, "userexport_exports_expired_total", &authgear), Some(1.0), "{expired:?}");

    // The API process counted what it saw, and none of the worker's counters.
    let text = client.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
    let m = samples(&text);
    assert_eq!(sample(&m, "userexport_exports_created_total", &native), Some(1.0), "{text}");
    assert_eq!(sample(&m, "userexport_exports_created_total", &authgear), Some(1.0), "{text}");
    assert_eq!(
        sample(
            &m,
            "userexport_http_requests_total",
            &[("method", "POST"), ("route", "/v1/exports"), ("status", "202")]
        ),
        Some(2.0),
        "{text}"
    );
    assert!(!text.contains("userexport_exports_completed_total{"), "{text}");

    // The documentation is served by the API process.
    let spec: Value = client.get(format!("{base}/openapi.json")).send().await.unwrap().json().await.unwrap();
    assert!(spec["openapi"].as_str().unwrap().starts_with("3."));
    assert!(spec["paths"]["/v1/exports"]["post"].is_object());
    let docs = client.get(format!("{base}/docs")).send().await.unwrap();
    assert_eq!(docs.status(), 200);
    assert!(docs.text().await.unwrap().contains("swagger-ui-bundle.js"));

    let (worker_ok, worker_log) = worker.terminate();
    let (api_ok, api_log) = api.terminate();
    assert!(worker_ok && api_ok, "processes did not stop cleanly\n{worker_log}\n{api_log}");
    check_logs(&api_log, &worker_log, &[&native_csv, &authgear_ndjson, &failing], &[&key, &broken_key]);
}

/// JSON logs: API lines about a task carry the request id, worker lines about a task its id;
/// secrets appear nowhere.
fn check_logs(api_log: &str, worker_log: &str, tasks: &[&str], secrets: &[&str]) {
    for (what, log) in [("API", api_log), ("worker", worker_log)] {
        for secret in secrets {
            assert!(!log.contains(secret), "the {what} log contains a management key");
        }
        assert!(!log.contains("sig="), "the {what} log contains a download signature");
    }
    let api = json_lines(api_log, "API");
    let created: Vec<&Value> = api.iter().filter(|l| l["message"] == "export created").collect();
    assert_eq!(created.len(), tasks.len(), "{api_log}");
    for line in created {
        let request_id = field(line, "request_id").and_then(Value::as_str).unwrap_or_default();
        assert!(!request_id.is_empty(), "no request id: {line}");
        assert!(field(line, "task_id").is_some(), "no task id: {line}");
    }
    for line in api.iter().filter(|l| l["spans"].as_array().is_some_and(|s| !s.is_empty())) {
        assert!(field(line, "request_id").is_some(), "an API line inside a request has no request id: {line}");
    }

    let worker = json_lines(worker_log, "worker");
    let mut finished: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in &worker {
        let text = line.to_string();
        let Some(task) = tasks.iter().find(|t| text.contains(**t)) else { continue };
        let task_id = field(line, "task_id").and_then(Value::as_str);
        assert_eq!(task_id, Some(*task), "a worker line about {task} does not carry its task_id: {line}");
        let message = line["message"].as_str().unwrap_or_default().to_owned();
        finished.entry((*task).to_owned()).or_default().push(message);
    }
    // Lines logged inside an attempt carry the task id through the attempt's span.
    for task in &tasks[..2] {
        let messages = finished.get(*task).cloned().unwrap_or_default();
        assert!(messages.iter().any(|m| m == "export completed"), "{task}: {messages:?}\n{worker_log}");
    }
    let messages = finished.get(tasks[2]).cloned().unwrap_or_default();
    assert!(messages.iter().any(|m| m == "export failed"), "{}: {messages:?}\n{worker_log}", tasks[2]);
    let completed = worker.iter().filter(|l| l["message"] == "export completed").count();
    assert_eq!(completed, 2, "{worker_log}");
}

#[test]
fn the_sample_parser_matches_labels_in_any_order() {
    let m = samples("# HELP x\nx_total{a=\"1\",b=\"2\"} 3\nx_total 4\ny{a=\"1\"} 5\n");
    assert_eq!(sample(&m, "x_total", &[("b", "2"), ("a", "1")]), Some(3.0));
    assert_eq!(sample(&m, "x_total", &[]), Some(4.0));
    assert_eq!(sample(&m, "y", &[("a", "2")]), None);
    assert!(Path::new(BIN).exists());
}
