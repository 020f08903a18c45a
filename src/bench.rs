//! `userexport bench`: how far full exports are from what Postgres can stream (issue #8).
//!
//! One run, on the Postgres of `USEREXPORT_DATABASE_URL` (used as the admin connection):
//!
//! 1. creates a throwaway database `userexport_bench_<random>` (dropped at the end, also on errors
//!    and Ctrl-C), migrates it, creates a project and seeds `--users` deterministic fake users
//!    ([`fake::user`], through [`commands::seed_users`]);
//! 2. after one unreported warm-up export, measures `--runs` rounds (default 3) of:
//!    - two **anchors**: `COPY … TO STDOUT` of the columns the export reads, in CSV and as
//!      `row_to_json` lines, written to a local temp file — the floor an export could reach;
//!    - three full **exports** through the production path: a `userexport worker` child process,
//!      the task row inserted and enqueued as the API does ([`service::new_task`], Redis queue), S3
//!      upload; wall time from enqueue to `completed`. Each export is checked (`rows_written` equals
//!      the number of non-test users, the stored object's size equals `bytes_written`) and deleted;
//! 3. reads the worker's peak RSS (`VmHWM`) per export (reset through `/proc/<pid>/clear_refs`
//!    before each one where the kernel allows it) and once more before stopping the worker;
//! 4. reads where each export's time went from the worker's own `/metrics`
//!    (`userexport_export_phase_seconds`): streaming (read, encode, upload every part) and
//!    completing (the S3 server assembles the object), so that a table shows how much of a ratio is
//!    ours and how much the object store's;
//! 5. prints a table, or one JSON object with `--json`: seconds are medians over the rounds, a
//!    case's ratio is the median of its per-round ratios to the same round's anchor (with the range),
//!    because a shared 2-core box varies ±20 % from run to run. Progress goes to stderr.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use chrono::Utc;
use futures_util::StreamExt;
use sea_orm::ConnectionTrait;
use serde::Serialize;
use tokio::io::AsyncWriteExt;
use userexport_api::ApiDialect;
use userexport_api::service::{self, NewExport};
use userexport_domain::{ExportFormat, ExportSpec, JsonPointer, ProjectId, TaskStatus};
use userexport_store::{Backend, Store};
use userexport_worker::metric::EXPORT_PHASE_DURATION;

use crate::app::{self, Components};
use crate::cli::BenchArgs;
use crate::commands;
use crate::config::{QueueSettings, Settings, StorageSettings};

/// The columns the export reads from `users` (every column of the users entity), in table order.
pub const USER_COLUMNS: &str = "seq, project_id, user_id, login_ids, username, email, email_verified, phone, \
    phone_verified, name, given_name, middle_name, family_name, nickname, picture, gender, birthdate, zoneinfo, \
    locale, website, profile, address, status, test, roles, tenants, custom_attributes, sso_app_ids, \
    authenticators, created_at, updated_at, last_login_at, logins_count";

/// Fields of the narrow CSV case.
pub const FIVE_POINTERS: [&str; 5] = ["/sub", "/email", "/phone_number", "/name", "/created_at"];

/// How often a running export is polled.
const POLL: Duration = Duration::from_millis(50);

/// How often progress of a running export is printed.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// How long the worker may take to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(60);

/// One timed `COPY` anchor, over every round.
#[derive(Debug, Clone, Serialize)]
pub struct AnchorResult {
    /// `copy_csv` or `copy_ndjson`.
    pub case: String,
    /// Output format the anchor stands for.
    pub format: ExportFormat,
    /// Rows streamed (without the CSV header).
    pub rows: u64,
    /// Bytes written to the temp file.
    pub bytes: u64,
    /// Median wall time of the `COPY` over the rounds, including writing the file.
    pub seconds: f64,
    /// The wall time of each round, in round order.
    pub samples: Vec<f64>,
    /// `rows / seconds`.
    pub users_per_second: f64,
    /// Always 1: an anchor is its own reference.
    pub ratio: f64,
}

/// One timed export through the worker process, over every round.
#[derive(Debug, Clone, Serialize)]
pub struct CaseResult {
    /// `csv_41_fields`, `csv_5_fields` or `ndjson_full`.
    pub case: String,
    /// Output format.
    pub format: ExportFormat,
    /// Number of fields (0: the whole record).
    pub fields: usize,
    /// `rows_written` of the completed task.
    pub rows: u64,
    /// `bytes_written` of the completed task (checked against the stored object).
    pub bytes: u64,
    /// Median wall time from enqueue to `completed` over the rounds.
    pub seconds: f64,
    /// The wall time of each round, in round order.
    pub samples: Vec<f64>,
    /// `rows / seconds`.
    pub users_per_second: f64,
    /// The anchor this case is compared with.
    pub anchor: String,
    /// How many times slower than `COPY` the export is: the median over the rounds of
    /// `seconds / anchor seconds` of the same round.
    pub ratio: f64,
    /// The smallest per-round ratio.
    pub ratio_min: f64,
    /// The largest per-round ratio.
    pub ratio_max: f64,
    /// Peak resident set size of the worker process during this export (the largest over the
    /// rounds), in MiB (`None` where `/proc` is unavailable).
    pub worker_peak_rss_mib: Option<f64>,
    /// Median seconds of the streaming phase (read, encode, upload every part), from the worker's
    /// metrics (`None` when they could not be read).
    pub streaming_seconds: Option<f64>,
    /// The median over the rounds of the streaming phase ÷ the same round's anchor: the ratio
    /// without the object store's completion.
    pub streaming_ratio: Option<f64>,
    /// Median seconds of the completing phase (the object store assembles the multipart upload).
    pub completing_seconds: Option<f64>,
    /// Median CPU seconds (user + system, every thread) the worker process spent on this export:
    /// our own cost, which a busy shared machine changes far less than the wall time (`None` where
    /// `/proc` is unavailable).
    pub worker_cpu_seconds: Option<f64>,
}

/// Everything one `bench` run measured.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// Users seeded.
    pub users: u64,
    /// Population seed.
    pub seed: u64,
    /// Rounds measured (`--runs`).
    pub runs: u32,
    /// Non-test users: the rows every anchor and export must produce.
    pub expected_rows: u64,
    /// Name of the throwaway database (already dropped when the report is printed).
    pub database: String,
    /// Seconds spent seeding.
    pub seed_seconds: f64,
    /// The `COPY` anchors.
    pub anchors: Vec<AnchorResult>,
    /// The exports.
    pub cases: Vec<CaseResult>,
    /// Whether the worker's peak RSS was reset before each export (else the per-case values are
    /// cumulative).
    pub rss_reset_per_case: bool,
    /// Peak RSS of the worker over its whole life, read right before stopping it, in MiB.
    pub worker_peak_rss_mib: Option<f64>,
}

/// One measurement of an anchor or an export.
#[derive(Debug, Clone, Copy, Default)]
struct Run {
    rows: u64,
    bytes: u64,
    seconds: f64,
    /// The worker's peak RSS during the run (exports only).
    rss_mib: Option<f64>,
    /// The export's phases as the worker measured them (exports only).
    phases: Option<Phases>,
    /// CPU seconds the worker spent on the run (exports only).
    cpu_seconds: Option<f64>,
}

/// Seconds an export spent in the worker's phases (see `userexport_export_phase_seconds`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Phases {
    streaming: f64,
    completing: f64,
    /// Completed exports counted by the histogram (a difference of two scrapes must be 1).
    count: f64,
}

impl Phases {
    /// The phase sums and count of a Prometheus text exposition; None when the worker has not
    /// completed any export yet (the series do not exist).
    fn parse(text: &str) -> Option<Self> {
        let value = |series: &str| text.lines().find_map(|l| l.strip_prefix(series)?.trim().parse::<f64>().ok());
        Some(Self {
            streaming: value(&format!("{EXPORT_PHASE_DURATION}_sum{{phase=\"streaming\"}}"))?,
            completing: value(&format!("{EXPORT_PHASE_DURATION}_sum{{phase=\"completing\"}}"))?,
            count: value(&format!("{EXPORT_PHASE_DURATION}_count{{phase=\"streaming\"}}"))?,
        })
    }

    /// What one export added between two scrapes; None unless exactly one export completed.
    fn since(self, before: Option<Self>) -> Option<Self> {
        let b = before.unwrap_or_default();
        let d = Self {
            streaming: self.streaming - b.streaming,
            completing: self.completing - b.completing,
            count: self.count - b.count,
        };
        (d.count == 1.0).then_some(d)
    }
}

/// The median of `v` (the mean of the middle two for an even count); 0 for none.
fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

impl AnchorResult {
    /// Summarizes the rounds of one anchor (`runs` is not empty).
    fn from_runs(case: &str, format: ExportFormat, runs: &[Run]) -> Self {
        let samples: Vec<f64> = runs.iter().map(|r| r.seconds).collect();
        let seconds = median(&samples);
        let (rows, bytes) = runs.last().map_or((0, 0), |r| (r.rows, r.bytes));
        Self {
            case: case.to_owned(),
            format,
            rows,
            bytes,
            seconds,
            samples,
            users_per_second: per_second(rows, seconds),
            ratio: 1.0,
        }
    }
}

impl CaseResult {
    /// Summarizes the rounds of one export against its anchor's rounds (same length, same order).
    fn from_runs(case: &str, spec: &ExportSpec, runs: &[Run], anchor: &AnchorResult) -> Self {
        let samples: Vec<f64> = runs.iter().map(|r| r.seconds).collect();
        let ratios: Vec<f64> = samples.iter().zip(&anchor.samples).map(|(s, a)| s / a.max(1e-9)).collect();
        let seconds = median(&samples);
        // Phase figures only when every round has them, so that medians compare like with like.
        let phases: Option<Vec<Phases>> = runs.iter().map(|r| r.phases).collect();
        let phase_median =
            |f: fn(&Phases) -> f64| phases.as_ref().map(|p| median(&p.iter().map(f).collect::<Vec<_>>()));
        let streaming_ratio = phases.as_ref().map(|p| {
            median(&p.iter().zip(&anchor.samples).map(|(p, a)| p.streaming / a.max(1e-9)).collect::<Vec<_>>())
        });
        let (rows, bytes) = runs.last().map_or((0, 0), |r| (r.rows, r.bytes));
        Self {
            case: case.to_owned(),
            format: spec.format(),
            fields: spec.fields().len(),
            rows,
            bytes,
            seconds,
            users_per_second: per_second(rows, seconds),
            anchor: anchor.case.clone(),
            ratio: median(&ratios),
            ratio_min: ratios.iter().copied().fold(f64::INFINITY, f64::min),
            ratio_max: ratios.iter().copied().fold(0.0, f64::max),
            samples,
            worker_peak_rss_mib: runs.iter().filter_map(|r| r.rss_mib).reduce(f64::max),
            streaming_seconds: phase_median(|p| p.streaming),
            streaming_ratio,
            completing_seconds: phase_median(|p| p.completing),
            worker_cpu_seconds: runs
                .iter()
                .map(|r| r.cpu_seconds)
                .collect::<Option<Vec<f64>>>()
                .map(|cpu| median(&cpu)),
        }
    }
}

/// Runs the benchmark with `settings` (which must name Postgres, Redis and S3) and prints the report.
pub async fn run(settings: &Settings, args: &BenchArgs) -> anyhow::Result<()> {
    if args.users == 0 {
        bail!("--users must be at least 1");
    }
    let QueueSettings::Redis { url: redis_url, prefix } = &settings.queue else {
        bail!("bench measures the production path: set USEREXPORT_REDIS_URL (the queue must be Redis)");
    };
    if !matches!(settings.storage, StorageSettings::S3 { .. }) {
        bail!(
            "bench measures the production path: set USEREXPORT_S3_BUCKET, USEREXPORT_S3_ACCESS_KEY_ID and \
             USEREXPORT_S3_SECRET_ACCESS_KEY (and USEREXPORT_S3_ENDPOINT for S3-compatible servers)"
        );
    }
    let admin_url = &settings.database_url;
    if !(admin_url.starts_with("postgres://") || admin_url.starts_with("postgresql://")) {
        bail!(
            "bench needs Postgres: set --database-url / USEREXPORT_DATABASE_URL to a postgres:// URL of a user \
             allowed to create databases"
        );
    }
    let suffix = random_suffix();
    let db_name = format!("userexport_bench_{suffix}");
    let admin = Store::connect_with(admin_url, 1).await.context("cannot connect to the Postgres admin database")?;
    if admin.backend() != Backend::Postgres {
        bail!("bench needs Postgres");
    }
    admin
        .connection()
        .execute_unprepared(&format!("CREATE DATABASE \"{db_name}\""))
        .await
        .with_context(|| format!("cannot create the database {db_name}"))?;
    eprintln!("bench: created database {db_name}");

    let mut bench_settings = settings.clone();
    bench_settings.database_url = database_url(admin_url, &db_name)?;
    // A queue of its own, so that no other worker on this Redis takes the bench's jobs.
    bench_settings.queue = QueueSettings::Redis { url: redis_url.clone(), prefix: format!("{prefix}-bench-{suffix}") };
    let scratch = std::env::temp_dir().join(&db_name);

    let result = tokio::select! {
        r = run_in(&bench_settings, args, &db_name, &scratch) => r,
        () = app::os_signal() => Err(anyhow!("interrupted")),
    };

    let _ = std::fs::remove_dir_all(&scratch);
    let dropped = admin
        .connection()
        .execute_unprepared(&format!("DROP DATABASE IF EXISTS \"{db_name}\" WITH (FORCE)"))
        .await
        .with_context(|| format!("cannot drop the bench database {db_name}; drop it by hand"));
    let _ = admin.connection().close_by_ref().await;
    let report = match (result, dropped) {
        (Ok(report), Ok(_)) => {
            eprintln!("bench: dropped database {db_name}");
            report
        }
        (Ok(_), Err(e)) => return Err(e),
        (Err(e), Ok(_)) => {
            eprintln!("bench: dropped database {db_name}");
            return Err(e);
        }
        (Err(e), Err(drop_err)) => {
            eprintln!("error: {drop_err:#}");
            return Err(e);
        }
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", render_table(&report));
    }
    Ok(())
}

/// Everything between creating and dropping the database.
async fn run_in(settings: &Settings, args: &BenchArgs, db_name: &str, scratch: &Path) -> anyhow::Result<BenchReport> {
    let c = app::build(settings).await?;
    let (project, _key) = c.store.create_project("bench").await?;
    // Started before seeding so that its start-up is over long before the first timed export.
    let mut worker = WorkerProcess::spawn(settings)?;
    eprintln!("bench: worker process {} started", worker.pid());

    eprintln!("bench: seeding {} users (seed {})", args.users, args.seed);
    let started = Instant::now();
    let bar = commands::progress_bar(args.users, "seeding");
    let seeded =
        commands::seed_users(&c.store, &project.id, args.seed, 0, args.users, |done| bar.set_position(done)).await?;
    bar.finish_and_clear();
    let seed_seconds = started.elapsed().as_secs_f64();
    let expected_rows = seeded.inserted - seeded.test_users;
    eprintln!(
        "bench: seeded {} users ({} test users) in {seed_seconds:.1}s; exports must hold {expected_rows} rows",
        seeded.inserted, seeded.test_users
    );
    settle(&c.store).await?;

    std::fs::create_dir_all(scratch).with_context(|| format!("cannot create {}", scratch.display()))?;
    let measured = measure(&c, &project.id, &mut worker, args.runs, expected_rows, scratch).await;
    let stopped = worker.stop().await;
    let (anchors, cases, rss_reset_per_case) = measured?;
    let worker_peak_rss_mib = stopped?;
    Ok(BenchReport {
        users: seeded.inserted,
        seed: args.seed,
        runs: args.runs,
        expected_rows,
        database: db_name.to_owned(),
        seed_seconds,
        anchors,
        cases,
        rss_reset_per_case,
        worker_peak_rss_mib,
    })
}

/// Brings the freshly loaded table into the state a production table is in, so that no measurement
/// pays for the bulk load: `VACUUM (ANALYZE)` sets the hint bits and the visibility map (else the
/// first reader of every row writes its page) and refreshes the planner statistics; `CHECKPOINT`
/// then writes the dirtied pages out before the clock starts (skipped with a warning where the
/// user may not run it).
async fn settle(store: &Store) -> anyhow::Result<()> {
    eprintln!("bench: VACUUM (ANALYZE) users, CHECKPOINT");
    store.connection().execute_unprepared("VACUUM (ANALYZE) users").await.context("VACUUM (ANALYZE) users")?;
    if let Err(e) = store.connection().execute_unprepared("CHECKPOINT").await {
        eprintln!("bench: warning: CHECKPOINT failed ({e}); the first measurements may pay for writing the load");
    }
    Ok(())
}

fn check_rows(case: &str, rows: u64, expected: u64) -> anyhow::Result<()> {
    if rows != expected {
        bail!("{case} produced {rows} rows, expected {expected} (the non-test users)");
    }
    Ok(())
}

/// The `COPY` anchors, by case name.
fn anchor_formats() -> [(&'static str, ExportFormat); 2] {
    [("copy_csv", ExportFormat::Csv), ("copy_ndjson", ExportFormat::Ndjson)]
}

/// The measured exports.
fn case_specs() -> anyhow::Result<Vec<(&'static str, ExportSpec)>> {
    let mut five = ExportSpec::builder(ExportFormat::Csv);
    for p in FIVE_POINTERS {
        five = five.field(JsonPointer::parse(p).map_err(|e| anyhow!("{e}"))?, None);
    }
    Ok(vec![
        ("csv_41_fields", ExportSpec::builder(ExportFormat::Csv).build()?),
        ("csv_5_fields", five.build()?),
        ("ndjson_full", ExportSpec::builder(ExportFormat::Ndjson).build()?),
    ])
}

/// A warm-up export (not reported), then `runs` rounds of: both anchors, the three exports. Returns
/// the summaries and whether the worker's peak RSS could be reset before each export.
async fn measure(
    c: &Components,
    project: &ProjectId,
    worker: &mut WorkerProcess,
    runs: u32,
    expected_rows: u64,
    scratch: &Path,
) -> anyhow::Result<(Vec<AnchorResult>, Vec<CaseResult>, bool)> {
    // Warm-up: proves the worker consumes the queue and warms its pools, so that the first measured
    // case does not pay for the worker's start-up.
    let sub = JsonPointer::parse("/sub").map_err(|e| anyhow!("{e}"))?;
    let warm = ExportSpec::builder(ExportFormat::Csv).field(sub, None).limit(1).build()?;
    let run = run_task(c, project, &warm, worker, "warm-up").await?;
    check_rows("warm-up", run.rows, expected_rows.min(1))?;

    let specs = case_specs()?;
    let mut anchor_runs: Vec<Vec<Run>> = vec![Vec::new(); anchor_formats().len()];
    let mut case_runs: Vec<Vec<Run>> = vec![Vec::new(); specs.len()];
    let mut reset_every_time = true;
    for round in 1..=runs {
        if runs > 1 {
            eprintln!("bench: round {round} of {runs}");
        }
        for ((case, format), runs) in anchor_formats().into_iter().zip(&mut anchor_runs) {
            let ext = format.extension();
            let run = copy_anchor(&c.store, project, case, format, &scratch.join(format!("copy.{ext}"))).await?;
            check_rows(case, run.rows, expected_rows)?;
            runs.push(run);
        }
        for ((name, spec), runs) in specs.iter().zip(&mut case_runs) {
            reset_every_time &= worker.reset_peak_rss();
            let before = worker.phases().await;
            let cpu_before = worker.cpu_seconds();
            eprintln!("bench: {name}: exporting through the worker");
            let mut run = run_task(c, project, spec, worker, name).await?;
            check_rows(name, run.rows, expected_rows)?;
            run.cpu_seconds = worker.cpu_seconds().zip(cpu_before).map(|(after, before)| after - before);
            run.rss_mib = worker.peak_rss_mib();
            run.phases = worker.phases().await.and_then(|after| after.since(before));
            if run.phases.is_none() {
                eprintln!("bench: warning: {name}: no phase timings from the worker's /metrics");
            }
            eprintln!(
                "bench: {name}: {} rows, {} bytes in {:.2}s ({:.0} users/s)",
                run.rows,
                run.bytes,
                run.seconds,
                per_second(run.rows, run.seconds)
            );
            runs.push(run);
        }
    }
    let anchors: Vec<AnchorResult> = anchor_formats()
        .into_iter()
        .zip(&anchor_runs)
        .map(|((case, format), runs)| AnchorResult::from_runs(case, format, runs))
        .collect();
    let mut cases = Vec::new();
    for ((name, spec), runs) in specs.iter().zip(&case_runs) {
        let anchor = anchors
            .iter()
            .find(|a| a.format == spec.format())
            .ok_or_else(|| anyhow!("no anchor for {}", spec.format()))?;
        cases.push(CaseResult::from_runs(name, spec, runs, anchor));
    }
    Ok((anchors, cases, reset_every_time))
}

/// Creates a task as the API does, enqueues it and waits until the worker completes it; checks the
/// stored object, then deletes it (so that rounds of large exports do not fill the disk).
async fn run_task(
    c: &Components,
    project: &ProjectId,
    spec: &ExportSpec,
    worker: &mut WorkerProcess,
    name: &str,
) -> anyhow::Result<Run> {
    let new = NewExport {
        dialect: ApiDialect::Native,
        spec: spec.clone(),
        request: serde_json::to_value(spec)?,
        idempotency_key: None,
    };
    let task = service::new_task(project, &new, Utc::now());
    let (task, _) = c.store.insert_task(&task, None).await.context("cannot insert the export task")?;
    let enqueued_at = Utc::now();
    let started = Instant::now();
    c.queue.enqueue(&task.id).await.context("cannot enqueue the export")?;
    let mut last_report = Instant::now();
    let done = loop {
        tokio::time::sleep(POLL).await;
        worker.check_alive()?;
        let t = c.store.get_task(project, &task.id).await?.ok_or_else(|| anyhow!("task {} vanished", task.id))?;
        match t.status {
            TaskStatus::Completed => break t,
            TaskStatus::Pending | TaskStatus::Processing => {
                if last_report.elapsed() >= PROGRESS_EVERY {
                    last_report = Instant::now();
                    let total = t.rows_total.map(|n| n.to_string()).unwrap_or_else(|| "?".into());
                    eprintln!("bench: {name}: {} {}/{total} rows", t.status, t.rows_written);
                }
            }
            other => {
                let error = t.error.map(|e| format!("{} ({})", e.message, e.code)).unwrap_or_default();
                bail!("{name}: the export ended {other}: {error}");
            }
        }
    };
    let observed = started.elapsed();
    // The worker stamps `finished_at` from the same clock right when it completes the task, which is
    // sharper than the polling interval; the observed time is the fallback.
    let seconds = done
        .finished_at
        .and_then(|f| (f - enqueued_at).to_std().ok())
        .filter(|d| *d <= observed)
        .unwrap_or(observed)
        .as_secs_f64();
    let key = done.object_key.clone().ok_or_else(|| anyhow!("{name}: completed without an object key"))?;
    if done.download_url.is_none() {
        bail!("{name}: completed without a download URL");
    }
    let head = c.storage.head(&key).await.with_context(|| format!("{name}: HEAD {key}"));
    if let Err(e) = c.storage.delete(&key).await {
        eprintln!("bench: warning: cannot delete {key}: {e}");
    }
    match head? {
        Some(size) if size == done.bytes_written && size > 0 => {}
        Some(size) => bail!("{name}: the object has {size} bytes, the task says {}", done.bytes_written),
        None => bail!("{name}: the object {key} does not exist"),
    }
    Ok(Run { rows: done.rows_written, bytes: done.bytes_written, seconds, ..Run::default() })
}

/// Times `COPY (SELECT <the export's columns> …) TO STDOUT` into `path`.
async fn copy_anchor(
    store: &Store,
    project: &ProjectId,
    case: &str,
    format: ExportFormat,
    path: &Path,
) -> anyhow::Result<Run> {
    let project = project.as_str().replace('\'', "''");
    let select = format!("SELECT {USER_COLUMNS} FROM users WHERE project_id = '{project}' AND NOT test ORDER BY seq");
    let sql = match format {
        ExportFormat::Csv => format!("COPY ({select}) TO STDOUT WITH (FORMAT csv, HEADER)"),
        ExportFormat::Ndjson => format!("COPY (SELECT row_to_json(u) FROM ({select}) u) TO STDOUT"),
    };
    eprintln!("bench: {case}: streaming COPY into {}", path.display());
    let pool = store.connection().get_postgres_connection_pool();
    let started = Instant::now();
    let mut conn = pool.acquire().await.context("cannot get a Postgres connection")?;
    let mut stream = conn.copy_out_raw(&sql).await.with_context(|| format!("{case}: COPY failed to start"))?;
    let file = tokio::fs::File::create(path).await.with_context(|| format!("cannot create {}", path.display()))?;
    let mut out = tokio::io::BufWriter::with_capacity(1 << 20, file);
    let mut counter = RowCounter::new(format);
    let mut bytes = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.with_context(|| format!("{case}: COPY failed"))?;
        counter.feed(&chunk);
        bytes += chunk.len() as u64;
        out.write_all(&chunk).await.with_context(|| format!("cannot write {}", path.display()))?;
    }
    out.flush().await.with_context(|| format!("cannot write {}", path.display()))?;
    let seconds = started.elapsed().as_secs_f64();
    drop(stream);
    drop(conn);
    // Untimed: write the file out before deleting it, so that its writeback (gigabytes at 10M
    // users) does not run during, and slow down, the export timed next.
    let _ = out.into_inner().sync_all().await;
    let _ = tokio::fs::remove_file(path).await;
    let rows = counter.rows();
    eprintln!("bench: {case}: {rows} rows, {bytes} bytes in {seconds:.2}s");
    Ok(Run { rows, bytes, seconds, ..Run::default() })
}

/// Counts rows of `COPY` output: newlines outside quotes (CSV, minus the header line) or newlines
/// (text format, which escapes newlines inside values).
struct RowCounter {
    csv: bool,
    in_quotes: bool,
    lines: u64,
}

impl RowCounter {
    fn new(format: ExportFormat) -> Self {
        Self { csv: format == ExportFormat::Csv, in_quotes: false, lines: 0 }
    }

    fn feed(&mut self, data: &[u8]) {
        for &b in data {
            match b {
                // A doubled quote inside a quoted field toggles twice: no net change.
                b'"' if self.csv => self.in_quotes = !self.in_quotes,
                b'\n' if !self.in_quotes => self.lines += 1,
                _ => {}
            }
        }
    }

    fn rows(&self) -> u64 {
        if self.csv { self.lines.saturating_sub(1) } else { self.lines }
    }
}

fn per_second(rows: u64, seconds: f64) -> f64 {
    rows as f64 / seconds.max(1e-9)
}

/// `admin_url` with its database replaced by `name`.
fn database_url(admin_url: &str, name: &str) -> anyhow::Result<String> {
    let mut url = url::Url::parse(admin_url).context("USEREXPORT_DATABASE_URL is not a URL")?;
    url.set_path(&format!("/{name}"));
    Ok(url.to_string())
}

fn random_suffix() -> String {
    use rand::Rng;
    let mut r = rand::rng();
    (0..12)
        .map(|_| {
            let i = r.random_range(0..36u8);
            (if i < 10 { b'0' + i } else { b'a' + i - 10 }) as char
        })
        .collect()
}

/// A `userexport worker` child process, killed if dropped while running.
struct WorkerProcess {
    child: std::process::Child,
    /// Where the worker serves its own `/metrics`.
    metrics_addr: std::net::SocketAddr,
}

impl WorkerProcess {
    /// Starts `<this binary> worker` with `settings` passed as `USEREXPORT_*` variables (they beat
    /// any inherited variable and config file).
    fn spawn(settings: &Settings) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("cannot find the userexport binary")?;
        let mut cmd = std::process::Command::new(exe);
        cmd.arg("worker").stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::inherit());
        for (name, value) in child_env(settings) {
            match value {
                Some(v) => cmd.env(name, v),
                None => cmd.env_remove(name),
            };
        }
        // A port free a moment ago; were it taken meanwhile, only the phase columns stay empty.
        let metrics_addr = std::net::TcpListener::bind(("127.0.0.1", 0))
            .and_then(|l| l.local_addr())
            .context("cannot find a free port for the worker's metrics")?;
        cmd.env("USEREXPORT_WORKER_METRICS_BIND", metrics_addr.to_string());
        let child = cmd.spawn().context("cannot start the worker process")?;
        Ok(Self { child, metrics_addr })
    }

    /// The phase sums of the worker's `/metrics`; None when unreadable or before the first export.
    async fn phases(&self) -> Option<Phases> {
        let addr = self.metrics_addr;
        let text = tokio::task::spawn_blocking(move || scrape(addr)).await.ok()?.ok()?;
        Phases::parse(&text)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn check_alive(&mut self) -> anyhow::Result<()> {
        match self.child.try_wait()? {
            Some(status) => bail!("the worker process exited early ({status}); see its log above"),
            None => Ok(()),
        }
    }

    fn proc_file(&self, name: &str) -> PathBuf {
        PathBuf::from(format!("/proc/{}/{name}", self.pid()))
    }

    /// Resets `VmHWM` to the current RSS (Linux ≥ 4.0); false where that is not possible.
    fn reset_peak_rss(&self) -> bool {
        std::fs::write(self.proc_file("clear_refs"), "5").is_ok()
    }

    /// `VmHWM` in MiB.
    fn peak_rss_mib(&self) -> Option<f64> {
        let status = std::fs::read_to_string(self.proc_file("status")).ok()?;
        parse_vm_hwm_kib(&status).map(|kib| kib as f64 / 1024.0)
    }

    /// CPU seconds (user + system) of every thread of the worker so far, exited threads included.
    fn cpu_seconds(&self) -> Option<f64> {
        let stat = std::fs::read_to_string(self.proc_file("stat")).ok()?;
        parse_cpu_ticks(&stat).map(|ticks| ticks as f64 / CLOCK_TICKS_PER_SECOND)
    }

    /// Reads the peak RSS, then stops the worker with SIGTERM and waits for it to exit.
    async fn stop(mut self) -> anyhow::Result<Option<f64>> {
        self.check_alive()?;
        let peak = self.peak_rss_mib();
        let sent = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        let deadline = Instant::now() + STOP_TIMEOUT;
        while sent && Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                if !status.success() {
                    eprintln!("bench: warning: the worker exited with {status}");
                }
                return Ok(peak);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        eprintln!("bench: warning: the worker did not stop on SIGTERM; killing it");
        let _ = self.child.kill();
        let _ = self.child.wait();
        Ok(peak)
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `GET /metrics` over HTTP/1.0 (the answer ends with the connection): the body of a 200.
fn scrape(addr: std::net::SocketAddr) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let timeout = Duration::from_secs(5);
    let mut conn = std::net::TcpStream::connect_timeout(&addr, timeout)?;
    conn.set_read_timeout(Some(timeout))?;
    conn.write_all(format!("GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())?;
    let mut response = String::new();
    conn.read_to_string(&mut response)?;
    match response.split_once("\r\n\r\n") {
        Some((head, body)) if head.split_whitespace().nth(1) == Some("200") => Ok(body.to_owned()),
        _ => Err(std::io::Error::other(format!("{addr}/metrics did not answer 200"))),
    }
}

/// The unit of the times in `/proc/<pid>/stat`: Linux's `USER_HZ`, which is what
/// `sysconf(_SC_CLK_TCK)` returns, 100 on every architecture whatever the kernel's own tick rate.
const CLOCK_TICKS_PER_SECOND: f64 = 100.0;

/// `utime + stime` of a `/proc/<pid>/stat` text, in clock ticks.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    // Field 2, the command name, is in parentheses and may hold spaces and `)`: count fields from
    // the last `)`. What follows starts with field 3 (state); utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// `VmHWM` of a `/proc/<pid>/status` text, in KiB.
fn parse_vm_hwm_kib(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line["VmHWM:".len()..].trim().trim_end_matches("kB").trim().parse().ok()
}

fn millis(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}

/// The worker's environment: every setting a worker uses; `None` removes the variable.
fn child_env(s: &Settings) -> Vec<(&'static str, Option<String>)> {
    let mut env = vec![
        ("USEREXPORT_DATA_DIR", Some(s.data_dir.display().to_string())),
        ("USEREXPORT_DATABASE_URL", Some(s.database_url.clone())),
        ("USEREXPORT_LOG", Some(s.log.clone())),
        ("USEREXPORT_DOWNLOAD_URL_TTL", Some(millis(s.download_url_ttl))),
        ("USEREXPORT_RETENTION", Some(millis(s.retention))),
        ("USEREXPORT_WORKER_CONCURRENCY", Some(s.worker_concurrency.to_string())),
        ("USEREXPORT_LEASE", Some(millis(s.lease))),
        ("USEREXPORT_SWEEP_INTERVAL", Some(millis(s.sweep_interval))),
    ];
    if let Some(secret) = &s.signing_secret {
        env.push(("USEREXPORT_SIGNING_SECRET", Some(secret.clone())));
    }
    if let QueueSettings::Redis { url, prefix } = &s.queue {
        env.push(("USEREXPORT_REDIS_URL", Some(url.clone())));
        env.push(("USEREXPORT_QUEUE_PREFIX", Some(prefix.clone())));
    }
    if let StorageSettings::S3 { endpoint, bucket, region, access_key_id, secret_access_key, force_path_style } =
        &s.storage
    {
        env.extend([
            ("USEREXPORT_S3_ENDPOINT", endpoint.clone()),
            ("USEREXPORT_S3_BUCKET", Some(bucket.clone())),
            ("USEREXPORT_S3_REGION", Some(region.clone())),
            ("USEREXPORT_S3_ACCESS_KEY_ID", Some(access_key_id.clone())),
            ("USEREXPORT_S3_SECRET_ACCESS_KEY", Some(secret_access_key.clone())),
            ("USEREXPORT_S3_FORCE_PATH_STYLE", Some(force_path_style.to_string())),
        ]);
    }
    env
}

/// The human-readable table of a report.
pub fn render_table(r: &BenchReport) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let rss = |v: Option<f64>| v.map(|m| format!("{m:.1}")).unwrap_or_else(|| "-".into());
    let fixed = |v: Option<f64>| v.map(|x| format!("{x:.2}")).unwrap_or_else(|| "-".into());
    let _ = writeln!(
        s,
        "{:<14} {:>10} {:>14} {:>9} {:>10} {:>7} {:>11} {:>14} {:>9} {:>9} {:>10} {:>12}",
        "case",
        "users",
        "bytes",
        "seconds",
        "users/s",
        "ratio",
        "ratio range",
        "worker RSS MiB",
        "streaming",
        "str.ratio",
        "completing",
        "worker CPU s"
    );
    for a in &r.anchors {
        let _ = writeln!(
            s,
            "{:<14} {:>10} {:>14} {:>9.2} {:>10.0} {:>7.2} {:>11} {:>14} {:>9} {:>9} {:>10} {:>12}",
            a.case, a.rows, a.bytes, a.seconds, a.users_per_second, a.ratio, "-", "-", "-", "-", "-", "-"
        );
    }
    for c in &r.cases {
        let _ = writeln!(
            s,
            "{:<14} {:>10} {:>14} {:>9.2} {:>10.0} {:>7.2} {:>11} {:>14} {:>9} {:>9} {:>10} {:>12}",
            c.case,
            c.rows,
            c.bytes,
            c.seconds,
            c.users_per_second,
            c.ratio,
            format!("{:.2}–{:.2}", c.ratio_min, c.ratio_max),
            rss(c.worker_peak_rss_mib),
            fixed(c.streaming_seconds),
            fixed(c.streaming_ratio),
            fixed(c.completing_seconds),
            fixed(c.worker_cpu_seconds)
        );
    }
    let _ = writeln!(
        s,
        "\n{} users seeded (seed {}), {} exported; {} round{}: seconds are medians, ratio = the median of each \
         round's seconds ÷ the same round's COPY anchor of the same format; streaming and completing are the worker's \
         phases (completing: the S3 server assembles the object), str.ratio the streaming phase's ratio, worker CPU s \
         the worker process's CPU time (median); worker peak RSS over the run: {} MiB{}",
        r.users,
        r.seed,
        r.expected_rows,
        r.runs,
        if r.runs == 1 { "" } else { "s" },
        rss(r.worker_peak_rss_mib),
        if r.rss_reset_per_case { "" } else { " (per-case values are cumulative: VmHWM could not be reset)" }
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_come_from_the_worker_histogram() {
        let scrape = |streaming: f64, completing: f64, count: u32| {
            format!(
                "# TYPE userexport_export_phase_seconds histogram\n\
                 userexport_export_phase_seconds_bucket{{phase=\"streaming\",le=\"+Inf\"}} {count}\n\
                 userexport_export_phase_seconds_sum{{phase=\"completing\"}} {completing}\n\
                 userexport_export_phase_seconds_count{{phase=\"completing\"}} {count}\n\
                 userexport_export_phase_seconds_sum{{phase=\"streaming\"}} {streaming}\n\
                 userexport_export_phase_seconds_count{{phase=\"streaming\"}} {count}\n\
                 userexport_export_phase_seconds_sum{{phase=\"starting\"}} 0.01\n"
            )
        };
        assert_eq!(Phases::parse("# nothing completed yet\n"), None);
        let first = Phases::parse(&scrape(4.5, 1.5, 1)).unwrap();
        assert_eq!(first, Phases { streaming: 4.5, completing: 1.5, count: 1.0 });
        assert_eq!(first.since(None), Some(first), "the first export: no series before it");
        let second = Phases::parse(&scrape(6.0, 2.0, 2)).unwrap();
        assert_eq!(second.since(Some(first)), Some(Phases { streaming: 1.5, completing: 0.5, count: 1.0 }));
        assert_eq!(second.since(None), None, "two exports between the scrapes are not one export's phases");
        assert_eq!(first.since(Some(first)), None, "no export between the scrapes");
    }

    #[test]
    fn csv_rows_ignore_newlines_in_quoted_fields() {
        let mut c = RowCounter::new(ExportFormat::Csv);
        c.feed(b"a,b\n1,\"x\ny\"\n2,\"say \"\"hi");
        c.feed(b"\"\"\"\n");
        assert_eq!(c.rows(), 2);
        let mut t = RowCounter::new(ExportFormat::Ndjson);
        t.feed(b"{\"a\":\"\\\\n\"}\n{}\n");
        assert_eq!(t.rows(), 2);
    }

    #[test]
    fn medians_and_ratios_come_from_rounds() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(&[]), 0.0);
        let run = |seconds| Run { rows: 10, bytes: 100, seconds, rss_mib: Some(seconds), ..Run::default() };
        let anchor = AnchorResult::from_runs("copy_csv", ExportFormat::Csv, &[run(1.0), run(2.0), run(4.0)]);
        assert_eq!((anchor.seconds, anchor.samples.len(), anchor.users_per_second), (2.0, 3, 5.0));
        let spec = ExportSpec::builder(ExportFormat::Csv).build().unwrap();
        // Round ratios 3.0, 1.0, 0.5: each round is compared with its own anchor.
        let case = CaseResult::from_runs("csv_41_fields", &spec, &[run(3.0), run(2.0), run(2.0)], &anchor);
        assert_eq!((case.seconds, case.ratio, case.ratio_min, case.ratio_max), (2.0, 1.0, 0.5, 3.0));
        assert_eq!((case.fields, case.worker_peak_rss_mib), (41, Some(3.0)));
        assert_eq!((case.streaming_seconds, case.streaming_ratio, case.completing_seconds), (None, None, None));
        assert_eq!(case.worker_cpu_seconds, None);
        // Phases: streaming 2.0, 1.0, 1.0 against anchors 1, 2, 4 → per-round ratios 2.0, 0.5, 0.25.
        let phased = |seconds, streaming| Run {
            phases: Some(Phases { streaming, completing: seconds - streaming, count: 1.0 }),
            cpu_seconds: Some(streaming * 0.75),
            ..run(seconds)
        };
        let case = CaseResult::from_runs(
            "csv_41_fields",
            &spec,
            &[phased(3.0, 2.0), phased(2.0, 1.0), phased(2.0, 1.0)],
            &anchor,
        );
        assert_eq!(
            (case.streaming_seconds, case.streaming_ratio, case.completing_seconds),
            (Some(1.0), Some(0.5), Some(1.0))
        );
        assert_eq!(case.worker_cpu_seconds, Some(0.75), "the median of 1.5, 0.75, 0.75");
        let partly =
            CaseResult::from_runs("csv_41_fields", &spec, &[phased(3.0, 2.0), run(2.0), phased(2.0, 1.0)], &anchor);
        assert_eq!(partly.streaming_ratio, None, "phases of only some rounds are not summarized");
        assert_eq!(partly.worker_cpu_seconds, None, "CPU times of only some rounds are not summarized");
        let table = render_table(&BenchReport {
            users: 10,
            seed: 1,
            runs: 3,
            expected_rows: 10,
            database: "x".into(),
            seed_seconds: 0.1,
            anchors: vec![anchor],
            cases: vec![case],
            rss_reset_per_case: true,
            worker_peak_rss_mib: Some(3.0),
        });
        assert!(table.contains("0.50–3.00") && table.contains("3 rounds"), "{table}");
        assert!(table.lines().nth(2).is_some_and(|l| l.ends_with("1.00      0.50       1.00         0.75")), "{table}");
    }

    #[test]
    fn cpu_ticks_are_user_plus_system_time() {
        // A command name with a space and a `)`, as `/proc/<pid>/stat` prints it.
        let stat = "4242 (user (x) port) S 1 4242 4242 0 -1 4194560 5117 0 0 0 731 94 0 0 20 0 9 0 1234 \
                    123456789 4000 18446744073709551615 1 1 0 0 0 0 0 4096 17 1 0 0 0 0 0\n";
        assert_eq!(parse_cpu_ticks(stat), Some(731 + 94));
        assert_eq!(parse_cpu_ticks("4242 (cut) S 1 2"), None);
        assert_eq!(parse_cpu_ticks("no parentheses"), None);
    }

    #[test]
    fn vm_hwm_is_read_in_kib() {
        let status = "Name:\tuserexport\nVmPeak:\t  20000 kB\nVmHWM:\t    8192 kB\nVmRSS:\t 4096 kB\n";
        assert_eq!(parse_vm_hwm_kib(status), Some(8192));
        assert_eq!(parse_vm_hwm_kib("Name: x\n"), None);
    }

    #[test]
    fn database_url_keeps_credentials_and_options() {
        let u = database_url("postgres://u:p@db:5432/postgres?sslmode=disable", "userexport_bench_x").unwrap();
        assert_eq!(u, "postgres://u:p@db:5432/userexport_bench_x?sslmode=disable");
    }

    #[test]
    fn the_worker_gets_every_production_setting() {
        let env: std::collections::HashMap<&str, &str> = [
            ("USEREXPORT_DATABASE_URL", "postgres://127.0.0.1/x"),
            ("USEREXPORT_REDIS_URL", "redis://127.0.0.1:6379"),
            ("USEREXPORT_S3_BUCKET", "exports"),
            ("USEREXPORT_S3_ENDPOINT", "http://127.0.0.1:9000"),
            ("USEREXPORT_SIGNING_SECRET", "0123456789abcdef0123456789abcdef"),
            ("USEREXPORT_S3_ACCESS_KEY_ID", "AK"),
            ("USEREXPORT_S3_SECRET_ACCESS_KEY", "SK"),
            ("USEREXPORT_LEASE", "1500ms"),
        ]
        .into_iter()
        .collect();
        let settings =
            crate::config::ConfigArgs::default().resolve_with(&|n| env.get(n).map(|v| (*v).to_owned())).unwrap();
        let child: std::collections::HashMap<&str, String> =
            child_env(&settings).into_iter().filter_map(|(k, v)| v.map(|v| (k, v))).collect();
        let again =
            crate::config::ConfigArgs::default().resolve_with(&|n| child.get(n).cloned()).expect("child settings");
        assert!(again == settings, "the worker would resolve different settings");
    }
}
