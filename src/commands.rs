//! The administrative commands: projects, users, keys, tokens and the one-shot export.

use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use async_trait::async_trait;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use userexport_domain::{ExportFormat, ExportSpec, JsonPointer, ProjectId, SigningKeyId, UserFilter, UserView, fake};
use userexport_storage::{StorageError, Upload};
use userexport_store::Store;
use userexport_worker::{
    Control, PipelineConfig, PipelineOutcome, PipelineProgress, ProgressObserver, UploadStarter, WorkerError,
};

use crate::cli::ExportArgs;

fn parse_project(s: &str) -> anyhow::Result<ProjectId> {
    ProjectId::parse(s).map_err(|e| anyhow::anyhow!("{e}"))
}

async fn existing_project(store: &Store, s: &str) -> anyhow::Result<ProjectId> {
    let id = parse_project(s)?;
    match store.get_project(&id).await? {
        Some(p) => Ok(p.id),
        None => bail!("no project with id {id}; create one with `userexport project create --name NAME`"),
    }
}

/// `project create`.
pub async fn project_create(store: &Store, name: &str, as_json: bool) -> anyhow::Result<()> {
    if name.trim().is_empty() {
        bail!("--name must not be empty");
    }
    let (project, key) = store.create_project(name).await?;
    if as_json {
        println!("{}", json!({"project_id": project.id, "name": project.name, "management_key": key}));
    } else {
        println!("project_id:     {}", project.id);
        println!("management_key: {key}");
        println!("(the management key is shown only once; store it now)");
    }
    Ok(())
}

/// `project list`.
pub async fn project_list(store: &Store, as_json: bool) -> anyhow::Result<()> {
    let projects = store.list_projects().await?;
    if as_json {
        println!("{}", serde_json::to_string(&projects)?);
    } else {
        for p in projects {
            println!("{}  {}  {}", p.id, p.created_at.to_rfc3339(), p.name);
        }
    }
    Ok(())
}

/// `users seed`.
pub async fn users_seed(
    store: &Store,
    project: &str,
    count: u64,
    seed: u64,
    offset: Option<u64>,
    as_json: bool,
) -> anyhow::Result<()> {
    let project = existing_project(store, project).await?;
    let offset = match offset {
        Some(o) => o,
        None => {
            store
                .count_users(
                    &project,
                    &UserFilter { test_users: userexport_domain::TestUsers::Include, ..Default::default() },
                )
                .await?
        }
    };
    let started = Instant::now();
    let bar = (!as_json).then(|| progress_bar(count, "seeding"));
    seed_users(store, &project, seed, offset, count, |done| {
        if let Some(b) = &bar {
            b.set_position(done);
        }
    })
    .await?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let secs = started.elapsed().as_secs_f64();
    let rate = count as f64 / secs.max(1e-9);
    if as_json {
        println!(
            "{}",
            json!({"project_id": project, "inserted": count, "seed": seed, "offset": offset, "seconds": secs, "users_per_second": rate.round()})
        );
    } else {
        println!(
            "inserted {count} users into {project} in {secs:.2}s ({rate:.0} users/s; seed {seed}, offset {offset})"
        );
    }
    Ok(())
}

/// What [`seed_users`] inserted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seeded {
    /// Users inserted.
    pub inserted: u64,
    /// How many of them are test users (excluded from exports by default).
    pub test_users: u64,
}

/// Users inserted per [`Store::insert_users`] call by [`seed_users`].
pub const SEED_CHUNK: u64 = 20_000;

/// Inserts the deterministic fake users `offset..offset + count` of population `seed`
/// ([`fake::user`]) into `project`, in chunks of [`SEED_CHUNK`]; calls `progress` with the number
/// inserted so far after each chunk.
pub async fn seed_users(
    store: &Store,
    project: &ProjectId,
    seed: u64,
    offset: u64,
    count: u64,
    mut progress: impl FnMut(u64),
) -> anyhow::Result<Seeded> {
    let mut done = 0;
    let mut test_users = 0;
    while done < count {
        let n = SEED_CHUNK.min(count - done);
        let start = offset + done;
        // Generating is CPU work; do it off the async runtime's worker threads.
        let users =
            tokio::task::spawn_blocking(move || (start..start + n).map(|i| fake::user(seed, i)).collect::<Vec<_>>())
                .await
                .context("user generator panicked")?;
        test_users += users.iter().filter(|u| u.test).count() as u64;
        store.insert_users(project, &users).await.with_context(|| format!("inserting users {start}..{}", start + n))?;
        done += n;
        progress(done);
    }
    Ok(Seeded { inserted: done, test_users })
}

/// `keys create`.
pub async fn keys_create(store: &Store, project: &str, out: &std::path::Path, as_json: bool) -> anyhow::Result<()> {
    let project = existing_project(store, project).await?;
    if out.exists() {
        bail!("{} already exists; refusing to overwrite a private key", out.display());
    }
    let (kid, private_pem, public_jwk) = userexport_api::auth::generate_signing_key()?;
    crate::config::write_private_file(out, private_pem.as_bytes())?;
    store.add_signing_key(&project, &kid, &public_jwk).await?;
    if as_json {
        println!("{}", json!({"project_id": project, "kid": kid, "private_key_file": out}));
    } else {
        println!("kid: {kid}");
        println!("private key written to {} (mode 0600); only the public key is stored", out.display());
    }
    Ok(())
}

/// `token mint`.
pub async fn token_mint(
    store: &Store,
    data_dir: &std::path::Path,
    project: &str,
    ttl: Duration,
    key: Option<&std::path::Path>,
    kid: Option<&str>,
    as_json: bool,
) -> anyhow::Result<()> {
    let project = existing_project(store, project).await?;
    let (kid, pem) = match (key, kid) {
        (Some(path), Some(kid)) => {
            let kid = SigningKeyId::parse(kid).map_err(|e| anyhow::anyhow!("{e}"))?;
            let pem = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
            (kid, pem)
        }
        _ => local_signing_key(store, data_dir, &project).await?,
    };
    let token = userexport_api::auth::mint_token(&project, &kid, &pem, ttl)?;
    if as_json {
        println!("{}", json!({"token": token}));
    } else {
        println!("{token}");
    }
    Ok(())
}

/// The signing key `token mint` uses when no `--key` is given: `<data_dir>/keys/<project>.json`
/// (mode 0600), created and registered on first use. Only its public half is in the database.
async fn local_signing_key(
    store: &Store,
    data_dir: &std::path::Path,
    project: &ProjectId,
) -> anyhow::Result<(SigningKeyId, String)> {
    #[derive(serde::Serialize, serde::Deserialize)]
    struct KeyFile {
        kid: String,
        private_pem: String,
    }
    let path = data_dir.join("keys").join(format!("{project}.json"));
    if let Ok(bytes) = std::fs::read(&path) {
        let file: KeyFile =
            serde_json::from_slice(&bytes).with_context(|| format!("{} is not a key file", path.display()))?;
        let kid = SigningKeyId::parse(&file.kid).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        if store.signing_keys(project).await?.iter().any(|(k, _)| *k == kid) {
            return Ok((kid, file.private_pem));
        }
    }
    let (kid, private_pem, public_jwk) = userexport_api::auth::generate_signing_key()?;
    let file = KeyFile { kid: kid.to_string(), private_pem };
    crate::config::write_private_file(&path, &serde_json::to_vec_pretty(&file)?)?;
    store.add_signing_key(project, &kid, &public_jwk).await?;
    Ok((kid, file.private_pem))
}

pub(crate) fn progress_bar(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{what} [{{elapsed_precise}}] {{wide_bar}} {{pos}}/{{len}} users ({{per_sec}}, ETA {{eta}})"
        ))
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

struct BarObserver(Option<ProgressBar>);

#[async_trait]
impl ProgressObserver for BarObserver {
    async fn on_progress(&mut self, p: PipelineProgress) -> Result<Control, WorkerError> {
        if let Some(b) = &self.0 {
            b.set_position(p.rows);
        }
        Ok(Control::Continue)
    }
}

/// Parses `--field /pointer[=Header]`.
fn parse_field(s: &str) -> anyhow::Result<(JsonPointer, Option<String>)> {
    let (ptr, name) = match s.split_once('=') {
        Some((p, n)) => (p, Some(n.to_owned())),
        None => (s, None),
    };
    Ok((JsonPointer::parse(ptr)?, name))
}

/// `export`: the worker's pipeline into a local file.
pub async fn export(store: &Store, args: &ExportArgs) -> anyhow::Result<()> {
    let project = existing_project(store, &args.project).await?;
    let format = ExportFormat::from_str(&args.format).map_err(|e| anyhow::anyhow!(e))?;
    let view = UserView::from_str(&args.view).map_err(|e| anyhow::anyhow!(e))?;
    let filter: UserFilter = match &args.filters {
        Some(s) => serde_json::from_str(s).context("--filters is not a valid filter object")?,
        None => UserFilter::default(),
    };
    let mut b =
        ExportSpec::builder(format).view(view).filter(filter).gzip(args.gzip).formula_guard(!args.no_formula_guard);
    for f in &args.fields {
        let (ptr, name) = parse_field(f)?;
        b = b.field(ptr, name);
    }
    let spec = b.build()?;
    let out = std::path::absolute(&args.out)?;
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let total = store.count_users(&project, spec.filter()).await?;
    let mut starter = FileStarter(Some(FileUpload::create(&out).await?));
    let started = Instant::now();
    let mut observer = BarObserver((!args.json).then(|| progress_bar(total, "exporting")));
    let cfg = PipelineConfig { progress_every: Duration::from_millis(200), ..PipelineConfig::default() };
    let outcome = userexport_worker::run_pipeline(store, &project, &spec, &mut starter, &cfg, &mut observer).await?;
    let progress = match outcome {
        PipelineOutcome::Finished { progress, upload } => {
            upload.complete().await?;
            progress
        }
        PipelineOutcome::Whole { progress, body } => {
            let mut upload = Box::new(starter.0.take().context("the export file was handed out twice")?);
            upload.put_part(body).await?;
            upload.complete().await?;
            progress
        }
        PipelineOutcome::Stopped { upload, .. } => {
            if let Some(upload) = upload.or_else(|| starter.0.take().map(|f| Box::new(f) as Box<dyn Upload>)) {
                upload.abort().await?;
            }
            bail!("the export stopped early");
        }
    };
    if let Some(b) = observer.0 {
        b.finish_and_clear();
    }
    let secs = started.elapsed().as_secs_f64();
    if args.json {
        println!("{}", json!({"file": out, "rows": progress.rows, "bytes": progress.bytes, "seconds": secs}));
    } else {
        println!("wrote {} users ({} bytes) to {} in {secs:.2}s", progress.rows, progress.bytes, out.display());
    }
    Ok(())
}

/// Hands the export file's upload to the pipeline when it fills its first part.
struct FileStarter(Option<FileUpload>);

#[async_trait]
impl UploadStarter for FileStarter {
    async fn start(&mut self) -> Result<Option<Box<dyn Upload>>, WorkerError> {
        let upload = self.0.take().ok_or_else(|| WorkerError::Internal("the export file was started twice".into()))?;
        Ok(Some(Box::new(upload)))
    }
}

/// An [`Upload`] into a local file: written to `<file>.partial`, renamed into place on completion.
struct FileUpload {
    file: tokio::fs::File,
    partial: std::path::PathBuf,
    target: std::path::PathBuf,
    bytes: u64,
}

impl FileUpload {
    async fn create(target: &std::path::Path) -> anyhow::Result<Self> {
        let mut partial = target.as_os_str().to_owned();
        partial.push(".partial");
        let partial = std::path::PathBuf::from(partial);
        let file =
            tokio::fs::File::create(&partial).await.with_context(|| format!("cannot create {}", partial.display()))?;
        Ok(Self { file, partial, target: target.to_owned(), bytes: 0 })
    }
}

fn io_err(source: std::io::Error) -> StorageError {
    StorageError::Io { op: "write export file", source }
}

#[async_trait]
impl Upload for FileUpload {
    fn upload_id(&self) -> Option<&str> {
        None
    }

    async fn put_part(&mut self, data: bytes::Bytes) -> Result<(), StorageError> {
        use tokio::io::AsyncWriteExt;
        self.file.write_all(&data).await.map_err(io_err)?;
        self.bytes += data.len() as u64;
        Ok(())
    }

    async fn complete(mut self: Box<Self>) -> Result<u64, StorageError> {
        use tokio::io::AsyncWriteExt;
        self.file.flush().await.map_err(io_err)?;
        self.file.sync_all().await.map_err(io_err)?;
        tokio::fs::rename(&self.partial, &self.target).await.map_err(io_err)?;
        Ok(self.bytes)
    }

    async fn abort(self: Box<Self>) -> Result<(), StorageError> {
        let _ = tokio::fs::remove_file(&self.partial).await;
        Ok(())
    }
}
