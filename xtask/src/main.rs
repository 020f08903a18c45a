//! Project automation for userexport.
//!
//! `cargo xtask test` is the single command that runs every test: it makes sure PostgreSQL and Redis
//! answer (starting local servers when it can), starts a throwaway s3s-fs S3 server, exports the
//! `USEREXPORT_TEST_*` variables and runs `cargo test --workspace --locked` with them.
//!
//! Each preparation step is one `prepare_*` function that receives the [`TestEnv`] handed to
//! `cargo test` and adds the variables (and, if it starts a process, the guard) it provides. New
//! prerequisites — a Python venv with SDK packages, `node_modules`, a Chromium binary — are added
//! the same way: write `fn prepare_x(env: &mut TestEnv) -> Result<()>` and call it from
//! [`cmd_test`].

use std::collections::BTreeMap;
use std::collections::hash_map::RandomState;
use std::ffi::OsString;
use std::fs;
use std::hash::{BuildHasher, Hasher};
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, ExitStatus, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail};

/// Default PostgreSQL URL used by the tests (trust auth on a local server).
const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
/// Default Redis URL used by the tests.
const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";
/// The s3s-fs release the tests are written against (0.15+ needs a newer Rust).
const S3S_FS_VERSION: &str = "0.14.1";
/// Prefix of the temporary directories holding s3s-fs data, used to clean up after killed runs.
const S3_TMP_PREFIX: &str = "userexport-xtask-s3-";
/// How long a local PostgreSQL may take to accept connections after being started.
const POSTGRES_START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a local Redis may take to answer PING after being started.
const REDIS_START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long s3s-fs may take to answer HTTP after being started.
const S3_START_TIMEOUT: Duration = Duration::from_secs(10);
/// The auth0-python release the Auth0 SDK tests drive (PyPI).
const AUTH0_PYTHON_VERSION: &str = "6.8.0";

/// The Descope Python SDK release the Descope SDK tests drive (PyPI).
const DESCOPE_PYTHON_VERSION: &str = "2.16.0";
/// The `auth0` Node release the Auth0 SDK tests drive (npm).
const AUTH0_NODE_VERSION: &str = "7.1.0";

const USAGE: &str = "\
Usage: cargo xtask <COMMAND> [ARGS...]

Commands:
  test [CARGO TEST ARGS...]  Check/start PostgreSQL and Redis, start a throwaway s3s-fs, then run
                             `cargo test --workspace --locked` with the USEREXPORT_TEST_* variables.
                             Extra arguments go to `cargo test`, e.g. `cargo xtask test -p userexport-store`
                             or `cargo xtask test -- --nocapture`.
  bench [BENCH ARGS...]      Check/start PostgreSQL and Redis, start a throwaway s3s-fs with its data
                             on tmpfs (/dev/shm) when the largest export fits in a quarter of the
                             available memory, else in the temp directory on disk
                             (USEREXPORT_BENCH_S3_DIR chooses), build the release binary and run
                             `userexport bench` against them,
                             e.g. `cargo xtask bench --users 1000000 --runs 5`.
  help                       Print this message.

Environment:
  USEREXPORT_TEST_DATABASE_URL  PostgreSQL for tests (default postgres://postgres@127.0.0.1:5432/postgres)
  USEREXPORT_TEST_REDIS_URL     Redis for tests (default redis://127.0.0.1:6379)
  (the SDK tests need python3 and npm; the SDKs are installed once under target/sdk/)
  (the console browser test needs /usr/bin/chromium and /usr/bin/chromedriver; when missing they are
   installed with `apt-get install -y chromium chromium-driver`, through sudo unless run as root)
  CI=true                       Also print tool versions first.
";

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let command = args.next();
    let rest: Vec<String> = args.collect();
    match command.as_deref() {
        Some("test") => match cmd_test(&rest) {
            Ok(code) => code,
            Err(err) => {
                eprintln!("xtask: error: {err:#}");
                ExitCode::FAILURE
            }
        },
        Some("bench") => match cmd_bench(&rest) {
            Ok(code) => code,
            Err(err) => {
                eprintln!("xtask: error: {err:#}");
                ExitCode::FAILURE
            }
        },
        Some("help" | "-h" | "--help") => {
            print!("{USAGE}");
            ExitCode::SUCCESS
        }
        Some(other) => {
            eprintln!("xtask: unknown command `{other}`\n");
            eprint!("{USAGE}");
            ExitCode::from(2)
        }
        None => {
            eprint!("{USAGE}");
            ExitCode::from(2)
        }
    }
}

/// Variables (and running helper processes) handed to the `cargo test` process.
///
/// Dropping it stops the helper processes it owns.
#[derive(Default)]
struct TestEnv {
    vars: BTreeMap<String, String>,
    s3: Option<S3Server>,
}

impl TestEnv {
    fn set(&mut self, key: &str, value: impl Into<String>) {
        self.vars.insert(key.to_owned(), value.into());
    }
}

/// `cargo xtask test`: prepares every service, then runs the workspace tests.
fn cmd_test(cargo_args: &[String]) -> Result<ExitCode> {
    let root = repo_root();
    if is_ci() {
        print_tool_versions();
    }
    let mut env = TestEnv::default();
    prepare_postgres(&mut env)?;
    prepare_redis(&mut env)?;
    prepare_s3(&mut env, &std::env::temp_dir())?;
    prepare_sdks(&mut env, &root)?;
    prepare_chromium(&mut env)?;
    // Further prerequisites are added here as `prepare_*(&mut env)?` calls.
    env.set("USEREXPORT_TEST_REQUIRE_SERVICES", "1");

    let status = run_cargo_test(&root, cargo_args, &env)?;
    drop(env); // stop s3s-fs and remove its data before reporting
    Ok(exit_code_of(status))
}

/// `cargo xtask bench`: prepares Postgres, Redis and s3s-fs as for the tests, builds the release
/// binary and runs `userexport bench` with the given arguments against them.
///
/// Where s3s-fs keeps its data: [`bench_s3_dir`].
fn cmd_bench(bench_args: &[String]) -> Result<ExitCode> {
    let root = repo_root();
    let mut env = TestEnv::default();
    prepare_postgres(&mut env)?;
    prepare_redis(&mut env)?;
    let s3_base = bench_s3_dir(bench_args);
    prepare_s3(&mut env, &s3_base)?;

    let var = |key: &str| env.vars.get(key).cloned().unwrap_or_default();
    let settings = [
        ("USEREXPORT_DATABASE_URL", var("USEREXPORT_TEST_DATABASE_URL")),
        ("USEREXPORT_REDIS_URL", var("USEREXPORT_TEST_REDIS_URL")),
        ("USEREXPORT_S3_ENDPOINT", var("USEREXPORT_TEST_S3_ENDPOINT")),
        ("USEREXPORT_S3_REGION", var("USEREXPORT_TEST_S3_REGION")),
        ("USEREXPORT_S3_ACCESS_KEY_ID", var("USEREXPORT_TEST_S3_ACCESS_KEY_ID")),
        ("USEREXPORT_S3_SECRET_ACCESS_KEY", var("USEREXPORT_TEST_S3_SECRET_ACCESS_KEY")),
        ("USEREXPORT_S3_BUCKET", format!("bench-{}", random_hex(4))),
    ];
    // `cargo run` builds the release binary where cargo keeps it (`CARGO_TARGET_DIR` included).
    let run = ["run", "--release", "--locked", "-p", "userexport", "--", "bench"];
    step(&format!("cargo {} {}", run.join(" "), shell_words(bench_args)));
    let status = Command::new(cargo_bin())
        .args(run)
        .args(bench_args)
        .current_dir(&root)
        .envs(settings)
        .status()
        .context("running cargo run")?;
    drop(env); // stop s3s-fs and remove its data
    Ok(exit_code_of(status))
}

/// Bytes of the largest object a bench export writes, per seeded user (NDJSON with the full
/// Authgear record: ~0.82 KB per exported user, rounded up).
const BENCH_BYTES_PER_USER: u64 = 900;

/// The directory s3s-fs keeps the bench's objects in, said on stderr with the reason.
///
/// `USEREXPORT_BENCH_S3_DIR` when set. Otherwise tmpfs (`/dev/shm`) when the largest object fits in
/// a quarter of the memory available now (1M users: ~0.9 GB), so that an export to the test server
/// does not write to the disk Postgres reads from; the system's temp directory (on disk) when it
/// does not (10M users: ~9 GB): on tmpfs the objects, the table (~0.9 KB per user) and the anchors'
/// files do not fit in memory together on a 24 GiB machine, and the kernel reclaims pages on the
/// processes' own time. s3s-fs does not fsync, so on disk its files sit in the page cache, which
/// the kernel can write back and drop (at 1M users the exports measured no slower there).
fn bench_s3_dir(bench_args: &[String]) -> PathBuf {
    if let Some(dir) = std::env::var_os("USEREXPORT_BENCH_S3_DIR") {
        let dir = PathBuf::from(dir);
        info(&format!("s3s-fs data in {} (USEREXPORT_BENCH_S3_DIR)", dir.display()));
        return dir;
    }
    let shm = Path::new("/dev/shm");
    let largest = bench_users(bench_args).saturating_mul(BENCH_BYTES_PER_USER);
    let gb = |b: u64| b as f64 / 1e9;
    let (dir, why) = match mem_available_bytes() {
        _ if !shm.is_dir() => (std::env::temp_dir(), "there is no /dev/shm".to_owned()),
        None => (std::env::temp_dir(), "the available memory is unknown (no /proc/meminfo)".to_owned()),
        Some(a) => {
            let fits = largest <= a / 4;
            let dir = if fits { shm.to_path_buf() } else { std::env::temp_dir() };
            let verb = if fits { "fits" } else { "does not fit" };
            (
                dir,
                format!(
                    "the largest object (~{:.1} GB) {verb} in a quarter of the {:.1} GB of memory available",
                    gb(largest),
                    gb(a)
                ),
            )
        }
    };
    let medium = if dir == shm { "on tmpfs" } else { "on disk" };
    info(&format!(
        "s3s-fs data in {} {medium}: {why}; USEREXPORT_BENCH_S3_DIR chooses another directory",
        dir.display()
    ));
    dir
}

/// The `--users N` (or `--users=N`) of the bench's arguments, or the bench's default (1,000,000).
/// Only chooses where s3s-fs keeps its data: a value `userexport bench` rejects is rejected there.
fn bench_users(bench_args: &[String]) -> u64 {
    let mut args = bench_args.iter();
    while let Some(arg) = args.next() {
        let value = match arg.strip_prefix("--users") {
            Some("") => args.next().map(String::as_str),
            Some(rest) => rest.strip_prefix('='),
            None => None,
        };
        if let Some(n) = value.and_then(|v| v.parse().ok()) {
            return n;
        }
    }
    1_000_000
}

/// `MemAvailable` from `/proc/meminfo`, in bytes.
fn mem_available_bytes() -> Option<u64> {
    let meminfo = fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

// ---------------------------------------------------------------------------------------------
// Vendor SDKs (Python venv and node_modules under target/sdk, reused between runs)
// ---------------------------------------------------------------------------------------------

/// Installs auth0-python and descope into `target/sdk/venv` and the `auth0` npm package into `target/sdk/node`
/// (each skipped when the right version is already there) and exports `USEREXPORT_TEST_PYTHON`,
/// `USEREXPORT_TEST_NODE` and `USEREXPORT_TEST_NODE_PATH` for the SDK tests in `tests/e2e/{auth0,descope}.rs`.
fn prepare_sdks(env: &mut TestEnv, root: &Path) -> Result<()> {
    step("vendor SDKs (Auth0, Descope)");
    let sdk = root.join("target").join("sdk");
    fs::create_dir_all(&sdk).with_context(|| format!("creating {}", sdk.display()))?;

    let venv = sdk.join("venv");
    let python = venv.join("bin").join("python");
    let wanted = [("auth0-python", AUTH0_PYTHON_VERSION), ("descope", DESCOPE_PYTHON_VERSION)];
    let missing: Vec<String> = wanted
        .iter()
        .filter(|(dist, version)| python_package_version(&python, dist).as_deref() != Some(*version))
        .map(|(dist, version)| format!("{dist}=={version}"))
        .collect();
    if missing.is_empty() {
        ok(&format!("auth0-python {AUTH0_PYTHON_VERSION}, descope {DESCOPE_PYTHON_VERSION} in {}", venv.display()));
    } else {
        if !is_executable(&python) {
            let python3 = find_on_path("python3").ok_or_else(|| {
                anyhow!("python3 is not on PATH; the SDK tests need Python >= 3.10 with the venv module")
            })?;
            run_step(Command::new(&python3).args(["-m", "venv", "--clear"]).arg(&venv), "python3 -m venv")?;
        }
        info(&format!("installing {} into {}", missing.join(", "), venv.display()));
        run_step(
            Command::new(&python)
                .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check"])
                .args(&missing),
            "pip install",
        )?;
        ok(&missing.join(", "));
    }
    env.set("USEREXPORT_TEST_PYTHON", python.to_string_lossy());

    let node_dir = sdk.join("node");
    let modules = node_dir.join("node_modules");
    let node = find_on_path("node")
        .ok_or_else(|| anyhow!("node is not on PATH; the Auth0 SDK tests need Node.js ^20.19, ^22.12 or >= 24"))?;
    if npm_package_version(&modules, "auth0").as_deref() == Some(AUTH0_NODE_VERSION) {
        ok(&format!("auth0 {AUTH0_NODE_VERSION} in {}", modules.display()));
    } else {
        let npm = find_on_path("npm").ok_or_else(|| anyhow!("npm is not on PATH; install Node.js with npm"))?;
        fs::create_dir_all(&node_dir).with_context(|| format!("creating {}", node_dir.display()))?;
        info(&format!("installing auth0 {AUTH0_NODE_VERSION} into {}", modules.display()));
        run_step(
            Command::new(&npm)
                .args(["install", "--no-audit", "--no-fund", "--no-save", "--prefix"])
                .arg(&node_dir)
                .arg(format!("auth0@{AUTH0_NODE_VERSION}")),
            "npm install auth0",
        )?;
        ok(&format!("auth0 {AUTH0_NODE_VERSION}"));
    }
    env.set("USEREXPORT_TEST_NODE", node.to_string_lossy());
    env.set("USEREXPORT_TEST_NODE_PATH", modules.to_string_lossy());
    Ok(())
}

/// The installed version of a Python distribution, asked through the given interpreter.
fn python_package_version(python: &Path, dist: &str) -> Option<String> {
    if !is_executable(python) {
        return None;
    }
    let script = format!("import importlib.metadata as m; print(m.version({dist:?}))");
    let output = Command::new(python).args(["-c", &script]).stderr(Stdio::null()).output().ok()?;
    output.status.success().then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// The `version` of `<modules>/<package>/package.json`.
fn npm_package_version(modules: &Path, package: &str) -> Option<String> {
    let manifest = fs::read_to_string(modules.join(package).join("package.json")).ok()?;
    json_string_field(&manifest, "version")
}

/// The first top-level-looking `"key": "value"` string in a JSON document (enough for
/// `package.json`, whose `version` comes before any nested object).
fn json_string_field(json: &str, key: &str) -> Option<String> {
    let at = json.find(&format!("\"{key}\""))? + key.len() + 2;
    let rest = json[at..].trim_start().strip_prefix(':')?.trim_start().strip_prefix('"')?;
    Some(rest[..rest.find('"')?].to_owned())
}

/// Runs an installation command; fails with its name and exit status.
fn run_step(cmd: &mut Command, what: &str) -> Result<()> {
    let status = cmd.status().with_context(|| format!("cannot run {what}"))?;
    if !status.success() {
        bail!("{what} failed ({status}); see its output above");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Chromium and chromedriver (the console browser test, tests/e2e/console.rs)
// ---------------------------------------------------------------------------------------------

/// Debian's `chromium` package binary.
const CHROMIUM: &str = "/usr/bin/chromium";
/// Debian's `chromium-driver` package binary.
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// The Debian packages providing [`CHROMIUM`] and [`CHROMEDRIVER`].
const CHROMIUM_PACKAGES: [&str; 2] = ["chromium", "chromium-driver"];

/// Ensures `/usr/bin/chromium` and `/usr/bin/chromedriver` exist, installing Debian's `chromium` and
/// `chromium-driver` with apt-get when they do not (`sudo` unless we are root; `apt-get update`
/// and a second try when the first install fails, e.g. on a fresh image without package lists),
/// and exports `USEREXPORT_TEST_CHROMIUM` and `USEREXPORT_TEST_CHROMEDRIVER`.
fn prepare_chromium(env: &mut TestEnv) -> Result<()> {
    step("Chromium and chromedriver (console browser test)");
    let binaries = [(CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")];
    let missing = || -> Vec<String> {
        binaries
            .iter()
            .filter(|(path, _)| !is_executable(Path::new(path)))
            .map(|(path, package)| format!("{path} (package {package})"))
            .collect()
    };
    let before = missing();
    if before.is_empty() {
        ok(&browser_versions());
    } else {
        info(&format!("missing {}; installing: apt-get install -y {}", before.join(", "), CHROMIUM_PACKAGES.join(" ")));
        if let Err(err) = apt_install(&CHROMIUM_PACKAGES) {
            bail!(
                "{err:#}\nThe console browser test needs {}. Install the Debian packages yourself \
                 (`sudo apt-get install chromium chromium-driver`) and run `cargo xtask test` again.",
                before.join(" and ")
            );
        }
        let after = missing();
        if !after.is_empty() {
            bail!(
                "apt-get installed {} but {} is still missing; the console browser test needs both binaries",
                CHROMIUM_PACKAGES.join(" "),
                after.join(" and ")
            );
        }
        ok(&browser_versions());
    }
    env.set("USEREXPORT_TEST_CHROMIUM", CHROMIUM);
    env.set("USEREXPORT_TEST_CHROMEDRIVER", CHROMEDRIVER);
    Ok(())
}

/// `apt-get install -y --no-install-recommends PACKAGES`, after `apt-get update` if the first try
/// fails.
fn apt_install(packages: &[&str]) -> Result<()> {
    if find_on_path("apt-get").is_none() {
        bail!("apt-get is not available, so {} cannot be installed automatically", packages.join(" "));
    }
    let root = is_root();
    if !root && find_on_path("sudo").is_none() {
        bail!("installing {} needs root, and sudo is not available", packages.join(" "));
    }
    let apt_get = |args: &[&str]| -> Result<ExitStatus> {
        let mut cmd = if root {
            Command::new("apt-get")
        } else {
            let mut sudo = Command::new("sudo");
            sudo.arg("apt-get");
            sudo
        };
        cmd.args(args).env("DEBIAN_FRONTEND", "noninteractive");
        cmd.status().with_context(|| format!("running {}apt-get {}", if root { "" } else { "sudo " }, args.join(" ")))
    };
    let install: Vec<&str> =
        ["install", "-y", "--no-install-recommends"].into_iter().chain(packages.iter().copied()).collect();
    if apt_get(&install)?.success() {
        return Ok(());
    }
    info("apt-get install failed; refreshing the package lists (apt-get update) and trying again");
    let update = apt_get(&["update"])?;
    if !update.success() {
        bail!("apt-get update failed ({update})");
    }
    let status = apt_get(&install)?;
    if !status.success() {
        bail!("apt-get install -y {} failed ({status}); see its output above", packages.join(" "));
    }
    Ok(())
}

/// True when this process runs as root (effective uid 0).
fn is_root() -> bool {
    let from_proc = fs::read_to_string("/proc/self/status").ok().and_then(|status| {
        let line = status.lines().find(|l| l.starts_with("Uid:"))?;
        line.split_whitespace().nth(2).map(|euid| euid == "0")
    });
    from_proc.unwrap_or_else(|| {
        Command::new("id").arg("-u").output().map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0").unwrap_or(false)
    })
}

/// `Chromium X, ChromeDriver Y` for the log.
fn browser_versions() -> String {
    let version = |bin: &str| tool_version(Path::new(bin)).unwrap_or_else(|| format!("{bin} (version unknown)"));
    format!("{}; {}", version(CHROMIUM), version(CHROMEDRIVER))
}

// ---------------------------------------------------------------------------------------------
// Step 1: PostgreSQL
// ---------------------------------------------------------------------------------------------

/// Ensures PostgreSQL answers at `USEREXPORT_TEST_DATABASE_URL`, starting the local cluster if needed.
fn prepare_postgres(env: &mut TestEnv) -> Result<()> {
    let url = env_or("USEREXPORT_TEST_DATABASE_URL", DEFAULT_DATABASE_URL);
    let target = HostPort::parse(&url, 5432)
        .with_context(|| format!("USEREXPORT_TEST_DATABASE_URL={} is not a URL", redact_url(&url)))?;
    step(&format!("PostgreSQL at {target}"));
    if postgres_ready(&target) {
        ok("accepting connections");
    } else {
        let etc = Path::new("/etc/postgresql");
        if !(target.is_loopback() && etc.is_dir()) {
            bail!(
                "PostgreSQL is not reachable at {target} (USEREXPORT_TEST_DATABASE_URL={}).\n\
                 Provide one: install it (`apt-get install postgresql`) and start it \
                 (`pg_ctlcluster <version> main start`), or point USEREXPORT_TEST_DATABASE_URL at a \
                 running server where user `postgres` may create databases.",
                redact_url(&url)
            );
        }
        let version = newest_cluster_version(etc)?;
        info(&format!("not running; starting it: pg_ctlcluster --skip-systemctl-redirect {version} main start"));
        let status = Command::new("pg_ctlcluster")
            .args(["--skip-systemctl-redirect", &version, "main", "start"])
            .status()
            .context("running pg_ctlcluster (is postgresql-common installed?)")?;
        if !status.success() {
            info(&format!("pg_ctlcluster exited with {status}; waiting for the server anyway"));
        }
        if !wait_until(POSTGRES_START_TIMEOUT, || postgres_ready(&target)) {
            bail!(
                "PostgreSQL {version}/main did not accept connections at {target} within {}s; \
                 see /var/log/postgresql/postgresql-{version}-main.log",
                POSTGRES_START_TIMEOUT.as_secs()
            );
        }
        ok("started");
    }
    env.set("USEREXPORT_TEST_DATABASE_URL", url);
    Ok(())
}

/// TCP reachability plus `pg_isready` when that tool is installed.
fn postgres_ready(target: &HostPort) -> bool {
    if tcp_connect(target).is_err() {
        return false;
    }
    if find_on_path("pg_isready").is_none() {
        return true;
    }
    Command::new("pg_isready")
        .args(["-q", "-h", &target.host, "-p", &target.port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// The highest-numbered cluster version under `/etc/postgresql` that has a `main` cluster.
fn newest_cluster_version(etc: &Path) -> Result<String> {
    let mut versions: Vec<(Vec<u64>, String)> = fs::read_dir(etc)
        .with_context(|| format!("reading {}", etc.display()))?
        .filter_map(|entry| entry.ok())
        .filter(|entry| entry.path().join("main").is_dir())
        .filter_map(|entry| entry.file_name().into_string().ok())
        .filter_map(|name| {
            let key: Option<Vec<u64>> = name.split('.').map(|p| p.parse().ok()).collect();
            key.map(|k| (k, name))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, name)| name).ok_or_else(|| {
        anyhow!("{} has no <version>/main cluster; create one with `pg_createcluster <version> main`", etc.display())
    })
}

// ---------------------------------------------------------------------------------------------
// Step 2: Redis
// ---------------------------------------------------------------------------------------------

/// Ensures Redis answers PING at `USEREXPORT_TEST_REDIS_URL`, starting a local `redis-server` if needed.
fn prepare_redis(env: &mut TestEnv) -> Result<()> {
    let url = env_or("USEREXPORT_TEST_REDIS_URL", DEFAULT_REDIS_URL);
    let target = HostPort::parse(&url, 6379)
        .with_context(|| format!("USEREXPORT_TEST_REDIS_URL={} is not a URL", redact_url(&url)))?;
    step(&format!("Redis at {target}"));
    let tls = url.starts_with("rediss://");
    let auth = url_credentials(&url);
    let ready = || {
        if tls {
            // PING needs TLS there; a TCP connect is the check we can do with std only.
            tcp_connect(&target).is_ok()
        } else {
            redis_ping(&target, auth.as_ref()).is_ok()
        }
    };
    if ready() {
        ok("PONG");
    } else {
        let Some(redis_server) = find_on_path("redis-server") else {
            bail!(
                "Redis is not reachable at {target} (USEREXPORT_TEST_REDIS_URL={}) and `redis-server` \
                 is not installed.\nProvide one: `apt-get install redis-server`, or point \
                 USEREXPORT_TEST_REDIS_URL at a running server.",
                redact_url(&url)
            );
        };
        if !target.is_loopback() {
            bail!(
                "Redis is not reachable at {target} (USEREXPORT_TEST_REDIS_URL={}); start it there or \
                 unset the variable to use a local redis-server",
                redact_url(&url)
            );
        }
        for dir in ["/var/lib/redis", "/var/log/redis"] {
            fs::create_dir_all(dir).with_context(|| format!("creating {dir}"))?;
        }
        let port = target.port.to_string();
        let args = [
            "--daemonize",
            "yes",
            "--bind",
            "127.0.0.1",
            "-::1",
            "--port",
            &port,
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            "/var/lib/redis",
            "--logfile",
            "/var/log/redis/ci.log",
        ];
        info(&format!("not running; starting it: redis-server {}", shell_words(&args)));
        let status = Command::new(&redis_server)
            .args(args)
            .status()
            .with_context(|| format!("running {}", redis_server.display()))?;
        if !status.success() {
            bail!("redis-server exited with {status}; see /var/log/redis/ci.log");
        }
        if !wait_until(REDIS_START_TIMEOUT, ready) {
            bail!(
                "redis-server did not answer PING at {target} within {}s; see /var/log/redis/ci.log",
                REDIS_START_TIMEOUT.as_secs()
            );
        }
        ok("started");
    }
    env.set("USEREXPORT_TEST_REDIS_URL", url);

    // The fault suite kills and restarts a Redis of its own (tests/faults/redis_restarted.rs).
    let server = match find_on_path("redis-server") {
        Some(path) => path,
        None => {
            info("`redis-server` (for the Redis-restart fault test) is not installed; installing it with apt-get");
            apt_install(&["redis-server"]).context("installing redis-server for the fault suite")?;
            find_on_path("redis-server").context("redis-server is still not on PATH after installing it")?
        }
    };
    env.set("USEREXPORT_TEST_REDIS_SERVER", server.display().to_string());
    Ok(())
}

/// Sends (AUTH and) PING over plain RESP and expects `+PONG`.
fn redis_ping(target: &HostPort, auth: Option<&(String, String)>) -> Result<()> {
    let mut stream = tcp_connect(target)?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.set_write_timeout(Some(Duration::from_secs(2)))?;
    if let Some((user, password)) = auth {
        let mut parts = vec!["AUTH"];
        if !user.is_empty() {
            parts.push(user);
        }
        parts.push(password);
        stream.write_all(&resp_command(&parts))?;
        let reply = read_line(&mut stream)?;
        if !reply.starts_with("+OK") {
            bail!("AUTH refused: {reply}");
        }
    }
    stream.write_all(b"PING\r\n")?;
    let reply = read_line(&mut stream)?;
    if reply.starts_with("+PONG") { Ok(()) } else { bail!("unexpected PING reply: {reply}") }
}

/// Encodes a command as a RESP array of bulk strings.
fn resp_command(parts: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", parts.len()).into_bytes();
    for part in parts {
        out.extend_from_slice(format!("${}\r\n", part.len()).as_bytes());
        out.extend_from_slice(part.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Reads one CRLF-terminated line (without the terminator).
fn read_line(stream: &mut TcpStream) -> Result<String> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while !line.ends_with(b"\r\n") {
        if stream.read(&mut byte)? == 0 {
            break;
        }
        line.push(byte[0]);
        if line.len() > 4096 {
            break;
        }
    }
    Ok(String::from_utf8_lossy(&line).trim_end().to_owned())
}

// ---------------------------------------------------------------------------------------------
// Step 3: s3s-fs
// ---------------------------------------------------------------------------------------------

/// A running s3s-fs process and its temporary directory; both are removed on drop.
struct S3Server {
    child: Child,
    dir: PathBuf,
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Installs s3s-fs if needed, starts it on a free loopback port with fresh credentials and its data
/// in a new directory under `base`, and exports the `USEREXPORT_TEST_S3_*` variables.
fn prepare_s3(env: &mut TestEnv, base: &Path) -> Result<()> {
    step(&format!("s3s-fs {S3S_FS_VERSION}"));
    let bin = match find_s3s_fs() {
        Some(bin) => bin,
        None => install_s3s_fs()?,
    };
    match tool_version(&bin) {
        Some(v) if v.contains(S3S_FS_VERSION) => {}
        Some(v) => info(&format!("warning: {} reports `{v}`, tests target {S3S_FS_VERSION}", bin.display())),
        None => info(&format!("warning: {} --version failed", bin.display())),
    }
    remove_stale_s3_dirs(base);

    let dir = base.join(format!("{S3_TMP_PREFIX}{}-{}", std::process::id(), random_hex(4)));
    let data = dir.join("data");
    fs::create_dir_all(&data).with_context(|| format!("creating {}", data.display()))?;
    let log_path = dir.join("s3s-fs.log");
    let log = fs::File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
    let port = free_port()?;
    let access_key = format!("xtask{}", random_hex(8));
    let secret_key = random_hex(20);
    let child = Command::new(&bin)
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["--access-key", &access_key, "--secret-key", &secret_key])
        .arg(&data)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    // From here on the guard owns the process and the directory.
    let mut server = S3Server { child, dir };
    let target = HostPort { host: "127.0.0.1".into(), port };
    let started = Instant::now();
    loop {
        if http_answers(&target) {
            break;
        }
        if let Some(status) = server.child.try_wait()? {
            bail!("s3s-fs exited with {status} during start-up:\n{}", read_tail(&log_path));
        }
        if started.elapsed() > S3_START_TIMEOUT {
            bail!(
                "s3s-fs did not answer HTTP on {target} within {}s:\n{}",
                S3_START_TIMEOUT.as_secs(),
                read_tail(&log_path)
            );
        }
        sleep(Duration::from_millis(50));
    }
    ok(&format!("listening on http://{target} (pid {}, data {})", server.child.id(), data.display()));

    env.set("USEREXPORT_TEST_S3_ENDPOINT", format!("http://{target}"));
    env.set("USEREXPORT_TEST_S3_ACCESS_KEY_ID", access_key);
    env.set("USEREXPORT_TEST_S3_SECRET_ACCESS_KEY", secret_key);
    env.set("USEREXPORT_TEST_S3_REGION", "us-east-1");
    env.set("USEREXPORT_TEST_S3FS_BIN", bin.to_string_lossy());
    env.s3 = Some(server);
    Ok(())
}

/// `s3s-fs` on PATH, else in `$CARGO_HOME/bin` or `~/.cargo/bin`; always an absolute path.
fn find_s3s_fs() -> Option<PathBuf> {
    find_on_path("s3s-fs").or_else(|| cargo_bin_dirs().into_iter().map(|dir| dir.join("s3s-fs")).find(|p| p.is_file()))
}

fn cargo_bin_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(home) = std::env::var_os("CARGO_HOME") {
        dirs.push(PathBuf::from(home).join("bin"));
    }
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(PathBuf::from(home).join(".cargo").join("bin"));
    }
    dirs
}

fn install_s3s_fs() -> Result<PathBuf> {
    info(&format!(
        "not installed; running `cargo install s3s-fs --version {S3S_FS_VERSION} --features binary --locked` \
         (a release build, takes ~2-3 min)"
    ));
    let status = Command::new(cargo_bin())
        .args(["install", "s3s-fs", "--version", S3S_FS_VERSION, "--features", "binary", "--locked"])
        .status()
        .context("running cargo install s3s-fs")?;
    if !status.success() {
        bail!("`cargo install s3s-fs --version {S3S_FS_VERSION} --features binary --locked` failed ({status})");
    }
    find_s3s_fs().ok_or_else(|| {
        anyhow!("s3s-fs was installed but is neither on PATH nor in ~/.cargo/bin; set CARGO_HOME or PATH")
    })
}

/// Removes s3s-fs directories left by runs that were killed (their xtask pid no longer exists).
fn remove_stale_s3_dirs(base: &Path) {
    let Ok(entries) = fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(S3_TMP_PREFIX)) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// A loopback port that was free a moment ago.
fn free_port() -> Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("binding 127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// True when an HTTP server answers `GET /` with any status line.
fn http_answers(target: &HostPort) -> bool {
    let attempt = || -> Result<bool> {
        let mut stream = tcp_connect(target)?;
        stream.set_read_timeout(Some(Duration::from_secs(1)))?;
        write!(stream, "GET / HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\n\r\n")?;
        let mut head = [0u8; 8];
        stream.read_exact(&mut head)?;
        Ok(head.starts_with(b"HTTP/1."))
    };
    attempt().unwrap_or(false)
}

fn read_tail(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(20)..].join("\n");
    if tail.is_empty() { "(no output)".into() } else { tail }
}

// ---------------------------------------------------------------------------------------------
// Step 4: cargo test
// ---------------------------------------------------------------------------------------------

/// Runs `cargo test [--workspace] --locked ARGS` from the repository root with the prepared env,
/// streaming its output.
fn run_cargo_test(root: &Path, cargo_args: &[String], env: &TestEnv) -> Result<ExitStatus> {
    let args = cargo_test_args(cargo_args);
    step(&format!("cargo {}", shell_words(&args)));
    for (key, value) in &env.vars {
        let shown = if key.contains("SECRET") { "<redacted>".to_owned() } else { redact_url(value) };
        info(&format!("{key}={shown}"));
    }
    Command::new(cargo_bin()).args(&args).current_dir(root).envs(&env.vars).status().context("running cargo test")
}

/// `test --workspace --locked` followed by the user's arguments; `--workspace` is left out when
/// packages are selected explicitly (cargo would otherwise ignore `-p`).
fn cargo_test_args(extra: &[String]) -> Vec<String> {
    let before_separator = extra.iter().take_while(|a| a.as_str() != "--");
    let selects_packages = before_separator
        .clone()
        .any(|a| a == "-p" || a == "--package" || a.starts_with("--package=") || (a.starts_with("-p") && a.len() > 2));
    let mut args = vec!["test".to_owned()];
    if !selects_packages {
        args.push("--workspace".to_owned());
    }
    if !extra.iter().take_while(|a| a.as_str() != "--").any(|a| a == "--locked") {
        args.push("--locked".to_owned());
    }
    // Report every failing test binary, not just the first.
    if !extra.iter().take_while(|a| a.as_str() != "--").any(|a| a == "--no-fail-fast") {
        args.push("--no-fail-fast".to_owned());
    }
    args.extend(extra.iter().cloned());
    args
}

fn exit_code_of(status: ExitStatus) -> ExitCode {
    match status.code() {
        Some(0) => ExitCode::SUCCESS,
        Some(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        None => {
            #[cfg(unix)]
            {
                use std::os::unix::process::ExitStatusExt;
                if let Some(signal) = status.signal() {
                    return ExitCode::from(u8::try_from(128 + signal).unwrap_or(1));
                }
            }
            ExitCode::FAILURE
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// Host and port taken from a service URL.
#[derive(Debug, Clone, PartialEq, Eq)]
struct HostPort {
    host: String,
    port: u16,
}

impl HostPort {
    /// Minimal `scheme://[user[:pass]@]host[:port][/path][?query]` parser (IPv6 in brackets).
    fn parse(url: &str, default_port: u16) -> Result<HostPort> {
        let (_, rest) = url.split_once("://").ok_or_else(|| anyhow!("missing `scheme://`"))?;
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        let host_port = authority.rsplit_once('@').map_or(authority, |(_, hp)| hp);
        let (host, port) = if let Some(bracketed) = host_port.strip_prefix('[') {
            let (host, after) = bracketed.split_once(']').ok_or_else(|| anyhow!("unclosed `[` in host"))?;
            (host, after.strip_prefix(':'))
        } else {
            match host_port.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (host_port, None),
            }
        };
        let port = match port {
            Some(p) if !p.is_empty() => p.parse().with_context(|| format!("bad port `{p}`"))?,
            _ => default_port,
        };
        let host = if host.is_empty() { "localhost" } else { host };
        Ok(HostPort { host: host.to_owned(), port })
    }

    fn is_loopback(&self) -> bool {
        self.host == "localhost" || self.host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
    }
}

impl std::fmt::Display for HostPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Connects to the first address of `target` that accepts within one second.
fn tcp_connect(target: &HostPort) -> Result<TcpStream> {
    let addrs: Vec<SocketAddr> = (target.host.as_str(), target.port).to_socket_addrs()?.collect();
    let mut last = None;
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
            Ok(stream) => return Ok(stream),
            Err(err) => last = Some(err),
        }
    }
    Err(last.map_or_else(|| anyhow!("{target} resolves to no address"), Into::into))
}

/// `(user, password)` from a URL's userinfo when it has a password.
fn url_credentials(url: &str) -> Option<(String, String)> {
    let (_, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let (userinfo, _) = authority.rsplit_once('@')?;
    let (user, password) = userinfo.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

/// The URL with any password in its userinfo replaced by `***`.
fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) if userinfo.contains(':') => {
            let user = userinfo.split_once(':').map_or("", |(u, _)| u);
            format!("{scheme}://{user}:***@{host}{tail}")
        }
        _ => url.to_owned(),
    }
}

/// Polls `check` every 250 ms until it holds or `timeout` passes.
fn wait_until(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let started = Instant::now();
    loop {
        if check() {
            return true;
        }
        if started.elapsed() > timeout {
            return false;
        }
        sleep(Duration::from_millis(250));
    }
}

/// Absolute path of an executable found on PATH.
fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
        .map(|p| if p.is_absolute() { p } else { std::env::current_dir().map(|d| d.join(&p)).unwrap_or(p) })
}

fn is_executable(path: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    }
    #[cfg(not(unix))]
    {
        path.is_file()
    }
}

/// Hex string of `bytes` random bytes (std-only: SipHash keyed from the OS RNG, plus time and pid).
fn random_hex(bytes: usize) -> String {
    let mut out = String::with_capacity(bytes * 2);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let mut counter = 0u64;
    while out.len() < bytes * 2 {
        let mut hasher = RandomState::new().build_hasher();
        hasher.write_u128(nanos);
        hasher.write_u32(std::process::id());
        hasher.write_u64(counter);
        counter += 1;
        for byte in hasher.finish().to_le_bytes() {
            if out.len() < bytes * 2 {
                out.push_str(&format!("{byte:02x}"));
            }
        }
    }
    out
}

/// The repository root (the parent of this crate's directory).
fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."))
}

/// The cargo that runs us (`$CARGO`), else `cargo` from PATH.
fn cargo_bin() -> OsString {
    std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into())
}

fn env_or(key: &str, default: &str) -> String {
    std::env::var(key).ok().filter(|v| !v.is_empty()).unwrap_or_else(|| default.to_owned())
}

fn is_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// First line of `<bin> --version`.
fn tool_version(bin: &Path) -> Option<String> {
    let output = Command::new(bin).arg("--version").stderr(Stdio::null()).output().ok()?;
    if !output.status.success() {
        return None;
    }
    String::from_utf8_lossy(&output.stdout).lines().next().map(str::to_owned)
}

fn print_tool_versions() {
    step("tool versions (CI)");
    let cargo = PathBuf::from(cargo_bin());
    let tools: [(&str, Option<PathBuf>); 5] = [
        ("cargo", Some(cargo)),
        ("rustc", Some(PathBuf::from("rustc"))),
        ("psql", find_on_path("psql")),
        ("redis-server", find_on_path("redis-server")),
        ("s3s-fs", find_s3s_fs()),
    ];
    for (name, bin) in tools {
        let version = bin.as_deref().and_then(tool_version);
        info(&format!("{name}: {}", version.as_deref().unwrap_or("not installed")));
    }
}

fn shell_words<S: AsRef<str>>(args: &[S]) -> String {
    args.iter()
        .map(|a| {
            let a = a.as_ref();
            if a.is_empty() {
                "\"\"".to_owned()
            } else if a.contains(char::is_whitespace) {
                format!("'{a}'")
            } else {
                a.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn step(what: &str) {
    println!("xtask: ==> {what}");
}

fn ok(what: &str) {
    println!("xtask:     ok: {what}");
}

fn info(what: &str) {
    println!("xtask:     {what}");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn parses_host_and_port_from_service_urls() {
        let hp = |u, d| HostPort::parse(u, d).unwrap();
        assert_eq!(
            hp("postgres://postgres@127.0.0.1:5432/postgres", 1),
            HostPort { host: "127.0.0.1".into(), port: 5432 }
        );
        assert_eq!(
            hp("postgresql://u:p@db.example/x?sslmode=disable", 5432),
            HostPort { host: "db.example".into(), port: 5432 }
        );
        assert_eq!(hp("redis://127.0.0.1", 6379), HostPort { host: "127.0.0.1".into(), port: 6379 });
        assert_eq!(hp("redis://:secret@[::1]:6380/0", 6379), HostPort { host: "::1".into(), port: 6380 });
        assert_eq!(hp("postgres:///db", 5432), HostPort { host: "localhost".into(), port: 5432 });
        assert!(HostPort::parse("127.0.0.1:5432", 5432).is_err());
        assert!(HostPort::parse("redis://h:notaport", 6379).is_err());
    }

    #[test]
    fn bench_users_reads_the_users_argument_or_the_default() {
        assert_eq!(bench_users(&strings(&[])), 1_000_000);
        assert_eq!(bench_users(&strings(&["--runs", "1", "--users", "10000000"])), 10_000_000);
        assert_eq!(bench_users(&strings(&["--users=20000", "--json"])), 20_000);
        // Not a number: the bench itself rejects it; here the default stands.
        assert_eq!(bench_users(&strings(&["--users", "many"])), 1_000_000);
        assert_eq!(bench_users(&strings(&["--users-x", "5"])), 1_000_000);
        assert_eq!(bench_users(&strings(&["--users"])), 1_000_000);
    }

    #[test]
    fn loopback_detection() {
        for host in ["localhost", "127.0.0.1", "::1"] {
            assert!(HostPort { host: host.into(), port: 1 }.is_loopback(), "{host}");
        }
        assert!(!HostPort { host: "db.internal".into(), port: 1 }.is_loopback());
        assert_eq!(HostPort { host: "::1".into(), port: 6379 }.to_string(), "[::1]:6379");
    }

    #[test]
    fn redacts_passwords_only() {
        assert_eq!(redact_url("redis://:hunter2@127.0.0.1:6379/0"), "redis://:***@127.0.0.1:6379/0");
        assert_eq!(redact_url("postgres://me:pw@h/db"), "postgres://me:***@h/db");
        assert_eq!(redact_url("postgres://postgres@h/db"), "postgres://postgres@h/db");
        assert_eq!(redact_url("http://127.0.0.1:9000"), "http://127.0.0.1:9000");
        assert_eq!(url_credentials("redis://u:p@h"), Some(("u".into(), "p".into())));
        assert_eq!(url_credentials("redis://h:1"), None);
    }

    #[test]
    fn cargo_test_arguments() {
        assert_eq!(cargo_test_args(&[]), strings(&["test", "--workspace", "--locked", "--no-fail-fast"]));
        assert_eq!(
            cargo_test_args(&strings(&["-p", "userexport-store"])),
            strings(&["test", "--locked", "--no-fail-fast", "-p", "userexport-store"])
        );
        assert_eq!(cargo_test_args(&strings(&["-puserexport-store"]))[..2], strings(&["test", "--locked"]));
        assert_eq!(
            cargo_test_args(&strings(&["--", "-p"])),
            strings(&["test", "--workspace", "--locked", "--no-fail-fast", "--", "-p"])
        );
        assert_eq!(
            cargo_test_args(&strings(&["--locked", "--no-fail-fast"])),
            strings(&["test", "--workspace", "--locked", "--no-fail-fast"])
        );
    }

    #[test]
    fn package_json_versions() {
        let manifest = r#"{
  "name": "auth0",
  "version" : "7.1.0",
  "dependencies": {"jose": "^4.13.2"}
}"#;
        assert_eq!(json_string_field(manifest, "version").as_deref(), Some("7.1.0"));
        assert_eq!(json_string_field(manifest, "name").as_deref(), Some("auth0"));
        assert_eq!(json_string_field(manifest, "missing"), None);
        assert_eq!(json_string_field(r#"{"version": 7}"#, "version"), None);
    }

    #[test]
    fn resp_encoding() {
        assert_eq!(resp_command(&["AUTH", "pw"]), b"*2\r\n$4\r\nAUTH\r\n$2\r\npw\r\n".to_vec());
    }

    #[test]
    fn random_hex_has_requested_length_and_varies() {
        let a = random_hex(20);
        assert_eq!(a.len(), 40);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, random_hex(20));
    }

    #[test]
    fn picks_newest_cluster_with_main() {
        let dir = std::env::temp_dir().join(format!("xtask-pg-test-{}", random_hex(6)));
        for v in ["9.6", "15", "13"] {
            fs::create_dir_all(dir.join(v).join("main")).unwrap();
        }
        fs::create_dir_all(dir.join("16")).unwrap(); // no main cluster
        assert_eq!(newest_cluster_version(&dir).unwrap(), "15");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn exit_codes_follow_cargo() {
        let status = Command::new("sh").args(["-c", "exit 3"]).status().unwrap();
        assert_eq!(exit_code_of(status), ExitCode::from(3));
    }
}
