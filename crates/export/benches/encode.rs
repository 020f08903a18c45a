//! Throughput of [`ExportEncoder`]: `cargo bench -p userexport-export`.
//!
//! Encodes 200,000 fake users (`fake::user(1, i)`, generated up front so only encoding is timed) as
//! CSV with the 41 Authgear default fields, CSV with 5 fields, and whole-record NDJSON, draining the
//! output in 8 MiB parts as the worker does, and prints users/s and MB/s for each. Set
//! `USEREXPORT_BENCH_USERS` to change the number of users, and `USEREXPORT_BENCH_CASES` (e.g.
//! `csv-41-fields`) to run only the cases whose names contain one of its comma-separated words —
//! handy under `valgrind --tool=callgrind`, whose instruction counts repeat run after run.

use std::hint::black_box;
use std::time::Instant;

use userexport_domain::{ExportFormat, ExportSpec, JsonPointer, User, fake};
use userexport_export::ExportEncoder;

const PART: usize = 8 << 20;

fn run(name: &str, spec: &ExportSpec, users: &[User]) {
    let start = Instant::now();
    let mut enc = ExportEncoder::new(spec);
    let mut bytes = 0usize;
    for u in users {
        enc.push(u).expect("encode");
        if enc.buffered_len() >= PART {
            bytes += black_box(enc.take()).len();
        }
    }
    bytes += black_box(enc.finish().expect("finish")).len();
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{name:<14} {:>9} users in {secs:>6.2} s  {:>10.0} users/s  {:>7.1} MB/s  ({:.1} MB)",
        users.len(),
        users.len() as f64 / secs,
        bytes as f64 / 1e6 / secs,
        bytes as f64 / 1e6,
    );
}

fn main() {
    let n: u64 = std::env::var("USEREXPORT_BENCH_USERS").ok().and_then(|v| v.parse().ok()).unwrap_or(200_000);
    let users: Vec<User> = (0..n).map(|i| fake::user(1, i)).collect();

    let csv41 = ExportSpec::builder(ExportFormat::Csv).build().expect("spec");
    let mut b = ExportSpec::builder(ExportFormat::Csv);
    for p in ["/sub", "/email", "/name", "/created_at", "/disabled"] {
        b = b.field(JsonPointer::parse(p).expect("pointer"), None);
    }
    let csv5 = b.build().expect("spec");
    let ndjson = ExportSpec::builder(ExportFormat::Ndjson).build().expect("spec");

    let only = std::env::var("USEREXPORT_BENCH_CASES").unwrap_or_default();
    let wanted = |name: &str| only.is_empty() || only.split(',').any(|w| name.contains(w.trim()));
    for (name, spec) in [("csv-41-fields", &csv41), ("csv-5-fields", &csv5), ("ndjson", &ndjson)] {
        if wanted(name) {
            run(name, spec, &users);
        }
    }
}
