//! `userexport bench` against the test services: it runs end to end, every anchor and export holds
//! exactly the non-test users, and its throwaway database is gone afterwards. Times are never asserted.

use std::process::Command;

use serde_json::Value;
use userexport_domain::fake;

use crate::helpers::{random_suffix, services};

const BIN: &str = env!("CARGO_BIN_EXE_userexport");

const USERS: u64 = 20_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_measures_copy_anchors_and_worker_exports() {
    let Some(svc) = services() else { return };
    let dir = tempfile::tempdir().unwrap();
    let env: Vec<(&str, String)> = vec![
        ("USEREXPORT_DATA_DIR", dir.path().join("data").display().to_string()),
        ("USEREXPORT_DATABASE_URL", svc.postgres_admin_url.clone()),
        ("USEREXPORT_REDIS_URL", svc.redis_url.clone()),
        ("USEREXPORT_QUEUE_PREFIX", format!("uetest-{}", random_suffix())),
        ("USEREXPORT_S3_ENDPOINT", svc.s3_endpoint.clone()),
        ("USEREXPORT_S3_BUCKET", format!("uetest-{}", random_suffix())),
        ("USEREXPORT_S3_ACCESS_KEY_ID", svc.s3_access_key.clone()),
        ("USEREXPORT_S3_SECRET_ACCESS_KEY", svc.s3_secret_key.clone()),
        ("USEREXPORT_S3_REGION", "us-east-1".to_owned()),
        ("USEREXPORT_S3_FORCE_PATH_STYLE", "true".to_owned()),
        ("USEREXPORT_LOG", "warn".to_owned()),
    ];
    let out = tokio::task::spawn_blocking(move || {
        Command::new(BIN)
            .args(["bench", "--users", &USERS.to_string(), "--runs", "2", "--json"])
            .env_remove("USEREXPORT_CONFIG")
            .envs(env)
            .output()
            .expect("run userexport bench")
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "userexport bench failed:\n{stderr}");
    let stdout = String::from_utf8(out.stdout).expect("utf-8 stdout");
    let report: Value =
        serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("not one JSON object ({e}): {stdout}"));

    let expected = (0..USERS).filter(|&i| !fake::user(1, i).test).count() as u64;
    assert!(expected > 0 && expected < USERS, "the population mixes test and real users");
    assert_eq!(report["users"], USERS);
    assert_eq!(report["expected_rows"], expected);
    assert_eq!(report["runs"], 2);

    let names = |key: &str| -> Vec<String> {
        report[key].as_array().unwrap().iter().map(|e| e["case"].as_str().unwrap().to_owned()).collect()
    };
    assert_eq!(names("anchors"), ["copy_csv", "copy_ndjson"]);
    assert_eq!(names("cases"), ["csv_41_fields", "csv_5_fields", "ndjson_full"]);
    let all = report["anchors"].as_array().unwrap().iter().chain(report["cases"].as_array().unwrap());
    for entry in all {
        assert_eq!(entry["rows"], expected, "{entry}");
        assert!(entry["bytes"].as_u64().unwrap() > 0, "{entry}");
        assert!(entry["ratio"].as_f64().unwrap() > 0.0, "{entry}");
        assert!(entry["seconds"].as_f64().unwrap() > 0.0, "{entry}");
        // Both rounds were measured; the reported time is their median (here: their mean).
        let samples: Vec<f64> = entry["samples"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        assert_eq!(samples.len(), 2, "{entry}");
        let mean = (samples[0] + samples[1]) / 2.0;
        assert!((entry["seconds"].as_f64().unwrap() - mean).abs() < 1e-9, "{entry}");
    }
    let cases = report["cases"].as_array().unwrap();
    assert_eq!(cases[0]["fields"], 41);
    assert_eq!(cases[1]["fields"], 5);
    assert_eq!(cases[0]["anchor"], "copy_csv");
    assert_eq!(cases[2]["anchor"], "copy_ndjson");
    for case in cases {
        let (lo, mid, hi) =
            (case["ratio_min"].as_f64().unwrap(), case["ratio"].as_f64().unwrap(), case["ratio_max"].as_f64().unwrap());
        assert!(lo <= mid && mid <= hi, "{case}");
        // The worker's phases were read from its /metrics for every round; each lies within the
        // export's wall time (medians of two rounds: within the larger one).
        let longest = case["samples"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).fold(0.0, f64::max);
        for phase in ["streaming_seconds", "completing_seconds"] {
            let took = case[phase].as_f64().unwrap_or_else(|| panic!("no {phase}: {case}"));
            assert!(took > 0.0 && took <= longest, "{phase}: {case}");
        }
        assert!(case["streaming_ratio"].as_f64().is_some_and(|r| r > 0.0 && r < mid), "{case}");
    }
    // Narrower rows make a smaller file from the same users.
    assert!(cases[1]["bytes"].as_u64().unwrap() < cases[0]["bytes"].as_u64().unwrap());
    if cfg!(target_os = "linux") {
        for case in cases {
            assert!(case["worker_peak_rss_mib"].as_f64().is_some_and(|m| m > 0.0), "{case}");
            // The worker did the export's work: it used CPU time, and no more than all the cores for
            // the longest round (plus a clock tick of rounding on either side).
            let cpu = case["worker_cpu_seconds"].as_f64().unwrap_or_else(|| panic!("no worker CPU: {case}"));
            let longest = case["samples"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).fold(0.0, f64::max);
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
            assert!(cpu > 0.0 && cpu <= cores * longest + 0.02, "{case}");
        }
        assert!(report["worker_peak_rss_mib"].as_f64().is_some_and(|m| m > 0.0));
    }

    // The throwaway database was dropped.
    let db = report["database"].as_str().unwrap();
    assert!(db.starts_with("userexport_bench_"), "{db}");
    use sea_orm::{ConnectionTrait, Statement};
    let admin = sea_orm::Database::connect(&svc.postgres_admin_url).await.expect("admin connection");
    let row = admin
        .query_one_raw(Statement::from_string(
            admin.get_database_backend(),
            format!("SELECT COUNT(*) AS n FROM pg_database WHERE datname = '{db}'"),
        ))
        .await
        .expect("query pg_database")
        .expect("row");
    assert_eq!(row.try_get::<i64>("", "n").unwrap(), 0, "{db} still exists");
    let _ = admin.close().await;
}
