//! The web console (`/console`) driven in headless Chromium through chromedriver (WebDriver, the
//! `fantoccini` crate): sign in (a wrong key first, whose API error must be shown), filter users,
//! select some by checkbox across two pages, export the selection as CSV and the whole filtered set
//! as NDJSON, wait for completion in the task list, download both files and check them, check the
//! narrow layout, and save screenshots under `target/test-artifacts/`.
//!
//! Needs Debian's `chromium` and `chromium-driver` (`cargo xtask test` installs them and exports
//! `USEREXPORT_TEST_CHROMIUM` / `USEREXPORT_TEST_CHROMEDRIVER`). Without them the test is skipped,
//! or fails when `USEREXPORT_TEST_REQUIRE_SERVICES=1`.

use std::collections::BTreeSet;
use std::net::{TcpListener, TcpStream};
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use futures_util::FutureExt;
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};

use crate::helpers::{Mode, TestApp, services_required, spawn_app};

/// Chromium's flags: headless, no sandbox (containers), nothing phoning home.
const CHROMIUM_FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,1000",
];

/// How long a page state may take to appear.
const WAIT: Duration = Duration::from_secs(60);

/// Where screenshots and the chromedriver log go.
fn artifacts_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target").join("test-artifacts");
    std::fs::create_dir_all(&dir).expect("create target/test-artifacts");
    dir
}

/// The browser binaries, or `None` (with a skip line) when one is missing; panics instead when
/// services are required.
fn browser_binaries() -> Option<(PathBuf, PathBuf)> {
    let path = |var: &str, default: &str| PathBuf::from(std::env::var(var).unwrap_or_else(|_| default.to_owned()));
    let chromium = path("USEREXPORT_TEST_CHROMIUM", "/usr/bin/chromium");
    let chromedriver = path("USEREXPORT_TEST_CHROMEDRIVER", "/usr/bin/chromedriver");
    let missing: Vec<String> =
        [&chromium, &chromedriver].into_iter().filter(|p| !p.is_file()).map(|p| p.display().to_string()).collect();
    if missing.is_empty() {
        return Some((chromium, chromedriver));
    }
    let msg = format!(
        "the console browser test needs Chromium and chromedriver, missing: {}; install Debian's `chromium` and \
         `chromium-driver` packages (`cargo xtask test` does) or set USEREXPORT_TEST_CHROMIUM / USEREXPORT_TEST_CHROMEDRIVER",
        missing.join(", ")
    );
    if services_required() {
        panic!("{msg}");
    }
    eprintln!("skipping: {msg}");
    None
}

/// A running chromedriver and the browser profile it uses. Dropping it kills chromedriver and any
/// Chromium still running on this profile (after a panic the session may not have been closed).
struct Driver {
    child: Child,
    port: u16,
    profile: tempfile::TempDir,
}

impl Driver {
    fn start(chromedriver: &Path) -> Driver {
        let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
        let log = std::fs::File::create(artifacts_dir().join("chromedriver.log")).expect("chromedriver log");
        let child = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", chromedriver.display()));
        let driver = Driver { child, port, profile: tempfile::tempdir().expect("profile dir") };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "chromedriver did not listen on port {port}; see target/test-artifacts/chromedriver.log"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        driver
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Browser processes started for this profile (matched by its unique directory).
        let marker = format!("--user-data-dir={}", self.profile.path().display());
        let pids: Vec<String> = std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok().filter(|n| n.bytes().all(|b| b.is_ascii_digit())))
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline"))
                    .map(|c| c.split(|b| *b == 0).any(|arg| arg == marker.as_bytes()))
                    .unwrap_or(false)
            })
            .collect();
        if !pids.is_empty() {
            let _ = Command::new("kill").arg("-KILL").args(&pids).stderr(Stdio::null()).status();
        }
    }
}

/// Runs `script` (a function body; `return` the result) in the page.
async fn js(c: &Client, script: &str) -> Value {
    c.execute(script, Vec::new()).await.unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
}

/// Polls `script` until it returns something other than `null` / `false`; returns that.
async fn wait_js(c: &Client, what: &str, script: &str) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let v = js(c, script).await;
        if !(v.is_null() || v == Value::Bool(false)) {
            return v;
        }
        if Instant::now() > deadline {
            let error = js(c, "return document.getElementById('error-text').textContent").await;
            panic!("timed out waiting for {what}; error box: {error}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn click(c: &Client, css: &str) {
    c.find(Locator::Css(css)).await.unwrap_or_else(|e| panic!("{css}: {e}")).click().await.expect("click");
}

async fn type_into(c: &Client, css: &str, text: &str) {
    let input = c.find(Locator::Css(css)).await.unwrap_or_else(|e| panic!("{css}: {e}"));
    input.clear().await.expect("clear");
    input.send_keys(text).await.expect("type");
}

async fn text_of(c: &Client, css: &str) -> String {
    c.find(Locator::Css(css)).await.unwrap_or_else(|e| panic!("{css}: {e}")).text().await.expect("text")
}

/// The newest task's download URL once it completed (`title_has` identifies the task).
async fn completed_download(c: &Client, title_has: &str) -> String {
    let script = format!(
        "const li = Array.from(document.querySelectorAll('#tasks li.task'))
            .find((li) => li.querySelector('.task-title').textContent.includes({title_has:?}));
         if (!li) return null;
         if (li.dataset.status === 'failed' || li.dataset.status === 'cancelled')
             return 'FAILED ' + li.textContent;
         const a = li.querySelector('a.download');
         return li.dataset.status === 'completed' && a ? a.href : null;"
    );
    let href = wait_js(c, &format!("the export of {title_has} to complete"), &script).await;
    let href = href.as_str().expect("href").to_owned();
    assert!(!href.starts_with("FAILED"), "{href}");
    href
}

async fn save_screenshot(c: &Client, name: &str) {
    match c.screenshot().await {
        Ok(png) => std::fs::write(artifacts_dir().join(name), png).expect("write screenshot"),
        Err(e) => eprintln!("screenshot {name} failed: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn console_exports_selected_and_filtered_users_in_headless_chromium() {
    let Some((chromium, chromedriver)) = browser_binaries() else { return };
    let Some(app) = spawn_app(Mode::Embedded).await else { return };
    app.seed(1010, 120).await;
    let _ = std::fs::remove_file(artifacts_dir().join("console-failure.png"));

    let driver = Driver::start(&chromedriver);
    let mut args: Vec<String> = CHROMIUM_FLAGS.iter().map(|s| (*s).to_owned()).collect();
    args.push(format!("--user-data-dir={}", driver.profile.path().display()));
    let capabilities = json!({
        "browserName": "chrome",
        "goog:chromeOptions": { "binary": chromium.display().to_string(), "args": args },
    });
    let Value::Object(capabilities) = capabilities else { unreachable!("an object literal") };
    let client = ClientBuilder::new(HttpConnector::new())
        .capabilities(capabilities)
        .connect(&driver.url())
        .await
        .unwrap_or_else(|e| panic!("WebDriver session: {e}; see target/test-artifacts/chromedriver.log"));

    let outcome = AssertUnwindSafe(scenario(&client, &app)).catch_unwind().await;
    if outcome.is_err() {
        save_screenshot(&client, "console-failure.png").await;
    }
    let _ = client.close().await;
    drop(driver);
    app.stop().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

async fn scenario(c: &Client, app: &TestApp) {
    c.goto(&format!("{}/console", app.base)).await.expect("open /console");
    assert_eq!(c.title().await.expect("title"), "userexport console");
    wait_js(c, "the sign-in form", "return !document.getElementById('signin').hidden").await;

    // A wrong key: the API's own error message is shown, and the console stays signed out.
    let bad = app
        .client
        .post(format!("{}/v2/mgmt/user/search", app.base))
        .header("Authorization", format!("Bearer {}:wrong-key", app.project))
        .json(&json!({"limit": 20, "page": 0, "withTestUser": false}))
        .send()
        .await
        .expect("search");
    assert_eq!(bad.status(), 401);
    let bad: Value = bad.json().await.expect("error body");
    let api_message = bad["errorMessage"].as_str().expect("errorMessage").to_owned();
    type_into(c, "#project-id", app.project.as_str()).await;
    type_into(c, "#management-key", "wrong-key").await;
    click(c, "#signin-submit").await;
    wait_js(c, "the sign-in error", "return !document.getElementById('error').hidden").await;
    let shown = text_of(c, "#error-text").await;
    assert!(shown.starts_with("Sign-in failed: ") && shown.contains(&api_message), "{shown} / {api_message}");
    assert_eq!(js(c, "return document.getElementById('error').getAttribute('role')").await, "alert");
    assert_eq!(js(c, "return document.getElementById('app').hidden").await, true);

    // The right key, submitted with the keyboard (Enter in the key field).
    type_into(c, "#management-key", &format!("{}\u{E007}", app.key)).await;
    wait_js(c, "the users table", "return !document.getElementById('app').hidden && document.querySelectorAll('#users-body input.row-select').length > 0").await;
    assert_eq!(js(c, "return document.getElementById('error').hidden").await, true);
    let storage = js(c, "return [localStorage.length, sessionStorage.length, location.href, document.getElementById('management-key').value]").await;
    assert_eq!(storage[0], 0, "nothing in localStorage");
    assert_eq!(storage[1], 1, "the credentials in sessionStorage");
    assert_eq!(storage[2].as_str(), Some(format!("{}/console", app.base).as_str()), "no credentials in the URL");
    assert_eq!(storage[3], "", "the key field is cleared");

    // Filter: enabled users, 10 per page. The page shows the API's total.
    let (total, first_page) = {
        let resp = app.post("/v2/mgmt/user/search", &json!({"statuses": ["enabled"], "limit": 10, "page": 0})).await;
        let body: Value = resp.json().await.expect("search body");
        let ids: Vec<String> =
            body["users"].as_array().unwrap().iter().map(|u| u["userId"].as_str().unwrap().to_owned()).collect();
        (body["total"].as_u64().expect("total"), ids)
    };
    assert!(total > 20, "enough enabled users for two pages: {total}");
    c.find(Locator::Css("#filter-status")).await.unwrap().select_by_value("enabled").await.expect("status");
    c.find(Locator::Css("#page-size")).await.unwrap().select_by_value("10").await.expect("page size");
    click(c, "#search-submit").await;
    let script = format!(
        "const t = document.getElementById('users-table');
         return t.dataset.total === '{total}' && t.dataset.page === '0' && !t.hasAttribute('aria-busy')
             && document.querySelectorAll('#users-body tr').length === 10"
    );
    wait_js(c, "the filtered first page", &script).await;
    let shown_ids = js(
        c,
        "return Array.from(document.querySelectorAll('#users-body input.row-select')).map((b) => b.dataset.userId)",
    )
    .await;
    assert_eq!(shown_ids, json!(first_page));
    let statuses =
        js(c, "return Array.from(document.querySelectorAll('#users-body .badge')).map((b) => b.textContent)").await;
    assert!(statuses.as_array().unwrap().iter().all(|s| s == "enabled"), "{statuses}");
    assert!(text_of(c, "#users-status").await.contains(&format!("of {total}")));
    assert_eq!(text_of(c, "#matching-count").await, total.to_string());

    // Select rows 1, 3 and 5 with the mouse, row 7 with the keyboard (Space), then one on page 2.
    let mut selected = BTreeSet::new();
    let boxes = c.find_all(Locator::Css("#users-body input.row-select")).await.expect("row checkboxes");
    for i in [0, 2, 4] {
        boxes[i].click().await.expect("select row");
        selected.insert(boxes[i].attr("data-user-id").await.unwrap().expect("user id"));
    }
    boxes[6].send_keys(" ").await.expect("space toggles the checkbox");
    selected.insert(boxes[6].attr("data-user-id").await.unwrap().expect("user id"));
    assert_eq!(js(c, "return document.getElementById('select-page').indeterminate").await, true);
    click(c, "#next-page").await;
    wait_js(c, "page 2", "const t = document.getElementById('users-table'); return t.dataset.page === '1' && !t.hasAttribute('aria-busy')").await;
    let boxes = c.find_all(Locator::Css("#users-body input.row-select")).await.expect("row checkboxes");
    boxes[1].click().await.expect("select row");
    let id = boxes[1].attr("data-user-id").await.unwrap().expect("user id");
    assert!(!first_page.contains(&id), "page 2 shows other users");
    selected.insert(id);
    assert_eq!(selected.len(), 5);
    assert_eq!(text_of(c, "#selected-count").await, "5");
    assert_eq!(js(c, "return document.getElementById('scope-selected').checked").await, true);

    // Fields: the Descope defaults, minus two unticked ones.
    let fields: Vec<(String, String)> = serde_json::from_value::<Vec<Value>>(
        js(c, "return JSON.parse(document.getElementById('default-fields').textContent)").await,
    )
    .unwrap()
    .iter()
    .map(|f| (f["pointer"].as_str().unwrap().to_owned(), f["name"].as_str().unwrap().to_owned()))
    .collect();
    assert_eq!(fields.first().map(|f| f.0.as_str()), Some("/userId"));
    for pointer in ["/verifiedPhone", "/userTenants"] {
        click(c, &format!("#field-list input[data-pointer='{pointer}']")).await;
    }
    let expected_headers: Vec<String> =
        fields.iter().filter(|(p, _)| p != "/verifiedPhone" && p != "/userTenants").map(|(_, n)| n.clone()).collect();

    // Export the selection as CSV; the file holds exactly the selected users.
    click(c, "#export-csv").await;
    let href = completed_download(c, "5 selected users").await;
    assert!(href.starts_with(&format!("{}/downloads/", app.base)), "{href}");
    let (status, bytes) = app.download(&href).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&bytes));
    let mut reader = csv::Reader::from_reader(bytes.as_slice());
    let headers: Vec<String> = reader.headers().expect("csv header").iter().map(str::to_owned).collect();
    assert_eq!(headers, expected_headers);
    let ids: BTreeSet<String> = reader.records().map(|r| r.expect("csv record")[0].to_owned()).collect();
    assert_eq!(ids, selected, "the CSV holds exactly the selected users");
    let task_status = js(c, "return document.getElementById('tasks-status').closest('[aria-live]') !== null").await;
    assert_eq!(task_status, true);

    // Export everything the search matches as NDJSON; one line per matching user.
    click(c, "#scope-all").await;
    click(c, "#export-ndjson").await;
    let href = completed_download(c, "users matching status enabled").await;
    let (status, bytes) = app.download(&href).await;
    assert_eq!(status, 200);
    let lines: Vec<Value> = String::from_utf8(bytes)
        .expect("utf-8")
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_str(l).expect("ndjson line"))
        .collect();
    assert_eq!(lines.len() as u64, total, "one line per user of the search total");
    assert!(lines.iter().all(|u| u["status"] == "enabled" && u.get("userTenants").is_none()), "{:?}", lines.first());
    let rows =
        js(c, "return Array.from(document.querySelectorAll('#tasks li.task .task-rows')).map((r) => r.textContent)")
            .await;
    assert!(rows[0].as_str().unwrap().contains(&format!("{total} of {total} rows")), "{rows}");
    assert_eq!(js(c, "return document.querySelectorAll('#tasks progress[value=\"100\"]').length").await, 2);
    assert_eq!(js(c, "return document.querySelectorAll('#tasks button.cancel').length").await, 0);

    // A client-side refusal is shown the same way.
    click(c, "#fields-none").await;
    click(c, "#export-csv").await;
    wait_js(c, "the no-fields error", "return !document.getElementById('error').hidden").await;
    assert!(text_of(c, "#error-text").await.contains("Pick at least one field"));
    click(c, "#error-dismiss").await;
    click(c, "#fields-all").await;

    // The screenshot for the README: the whole page at desktop width.
    c.set_window_size(1280, 1000).await.expect("window size");
    let height = js(c, "window.scrollTo(0, 0); return document.documentElement.scrollHeight").await;
    let height = height.as_u64().unwrap_or(1600).clamp(800, 2400) as u32 + 140;
    c.set_window_size(1280, height).await.expect("window size");
    save_screenshot(c, "console.png").await;

    // Narrow screens: nothing wider than the viewport (the table scrolls inside its region).
    c.set_window_size(360, 800).await.expect("narrow window");
    let fits = wait_js(
        c,
        "the narrow layout",
        "return window.innerWidth <= 500 && [document.documentElement.clientWidth, document.documentElement.scrollWidth]",
    )
    .await;
    if fits[1].as_u64() > fits[0].as_u64() {
        let wide = js(
            c,
            "const inWrap = (e) => e.parentElement && e.parentElement.closest('.table-wrap');
             return Array.from(document.querySelectorAll('body *'))
                 .filter((e) => !inWrap(e) && (e.getBoundingClientRect().right > document.documentElement.clientWidth + 1
                     || (e.scrollWidth > e.clientWidth + 1 && e.clientWidth > 0 && getComputedStyle(e).overflowX === 'visible')))
                 .map((e) => e.tagName + '#' + e.id + '.' + e.className + ' ' + e.clientWidth + '/' + e.scrollWidth)
                 .slice(0, 12)",
        )
        .await;
        panic!("page wider than the viewport: {fits}; elements past the right edge: {wide}");
    }
    save_screenshot(c, "console-narrow.png").await;

    // Signing out forgets the key.
    click(c, "#sign-out").await;
    wait_js(c, "the sign-in form again", "return !document.getElementById('signin').hidden").await;
    assert_eq!(js(c, "return sessionStorage.length").await, 0);
}
