//! Command-line interface (clap). Wiring only: every command calls into [`crate::app`].

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::config::ConfigArgs;

/// userexport — asynchronous user exports speaking the Authgear, Auth0 and Descope APIs.
#[derive(Debug, Parser)]
#[command(name = "userexport", version, about, long_about = None)]
pub struct Cli {
    /// Settings shared by every command (flags > USEREXPORT_* env > --config file > defaults).
    #[command(flatten)]
    pub config: ConfigArgs,
    /// What to do; defaults to `up`.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Embedded all-in-one: API + worker, SQLite, SQLite queue, local files. The default.
    Up,
    /// API server only.
    Serve,
    /// Export worker only (plus the retention sweeper and queue reconciler).
    Worker(WorkerArgs),
    /// Run database migrations.
    Migrate,
    /// Manage projects.
    #[command(subcommand)]
    Project(ProjectCommand),
    /// Manage users.
    #[command(subcommand)]
    Users(UsersCommand),
    /// Manage admin signing keys (JWT).
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Issue admin tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// One-shot local export to a file, with a progress bar.
    Export(ExportArgs),
    /// Benchmark: seeds a throwaway Postgres database and times `COPY` against full exports run by
    /// a separate worker process (needs Postgres, Redis and S3 settings).
    Bench(BenchArgs),
}

/// `userexport worker` options.
#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// Jobs processed at once by this process.
    #[arg(long)]
    pub concurrency: Option<usize>,
}

/// `userexport project …`
#[derive(Debug, Subcommand)]
pub enum ProjectCommand {
    /// Create a project; prints its id and a management key (shown once).
    Create {
        /// Display name.
        #[arg(long)]
        name: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List projects.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// `userexport users …`
#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// Insert deterministic fake users (unicode, commas, quotes, newlines, formula-like values).
    Seed {
        /// Project id.
        #[arg(long)]
        project: String,
        /// How many users.
        #[arg(long)]
        count: u64,
        /// Population seed: the same seed and offset give the same users.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Index of the first generated user (default: the project's current user count).
        #[arg(long)]
        offset: Option<u64>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// `userexport keys …`
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create an RS256 key pair: writes the private key (PEM), stores only the public key, prints the kid.
    Create {
        /// Project id.
        #[arg(long)]
        project: String,
        /// Where to write the private key (created with mode 0600; refuses to overwrite).
        #[arg(long)]
        out: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// `userexport token …`
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Print an admin JWT for the JWT dialects (Authgear admin API, Auth0 Management API).
    Mint {
        /// Project id.
        #[arg(long)]
        project: String,
        /// Lifetime, e.g. `15m`, `1h`.
        #[arg(long, default_value = "1h", value_parser = crate::config::parse_duration)]
        ttl: Duration,
        /// Sign with this private key (from `keys create`) instead of the project's server-held key.
        #[arg(long, requires = "kid")]
        key: Option<PathBuf>,
        /// Key id of `--key`.
        #[arg(long, requires = "key")]
        kid: Option<String>,
        /// Print `{"token": …}`.
        #[arg(long)]
        json: bool,
    },
}

/// `userexport export …`
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Project id.
    #[arg(long)]
    pub project: String,
    /// `csv` or `ndjson`.
    #[arg(long, default_value = "csv")]
    pub format: String,
    /// A field as `/json/pointer` or `/json/pointer=Header`; repeatable. Default: the view's defaults.
    #[arg(long = "field")]
    pub fields: Vec<String>,
    /// `authgear`, `auth0` or `descope`.
    #[arg(long, default_value = "authgear")]
    pub view: String,
    /// Filters as JSON, e.g. `{"statuses":["enabled"]}`.
    #[arg(long)]
    pub filters: Option<String>,
    /// Gzip the output.
    #[arg(long)]
    pub gzip: bool,
    /// Do not prefix formula-like CSV cells with `'`.
    #[arg(long)]
    pub no_formula_guard: bool,
    /// Output file.
    #[arg(long)]
    pub out: PathBuf,
    /// Print a JSON summary instead of the progress bar.
    #[arg(long)]
    pub json: bool,
}

/// `userexport bench` options.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// How many fake users to seed into the throwaway database.
    #[arg(long, default_value_t = 1_000_000)]
    pub users: u64,
    /// Population seed of the fake users.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Rounds of measurements (both anchors, then the three exports, per round); the table shows
    /// medians, so that one noisy run does not decide a ratio.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub runs: u32,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
}
