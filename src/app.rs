//! Builds the service's parts from [`Settings`] and runs them: `up` (embedded all-in-one), `serve`
//! (API) and `worker`. Integration tests use the same functions.

use std::net::TcpListener;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use tokio::sync::watch;
use userexport_api::{ApiSettings, AppState};
use userexport_domain::Project;
use userexport_queue::{Queue, QueueConfig, WorkerOptions};
use userexport_storage::{LocalFsStore, ObjectStore, S3Config, S3Store};
use userexport_store::Store;
use userexport_worker::{ExportWorker, MaintenanceSettings, PipelineConfig, WorkerSettings};

use crate::config::{QueueSettings, Settings, StorageSettings};

/// The shared state every process role is built from.
#[derive(Clone)]
pub struct Components {
    /// Database.
    pub store: Store,
    /// Job queue.
    pub queue: Queue,
    /// Object store for export files.
    pub storage: Arc<dyn ObjectStore>,
    /// Set in local-files mode: verifies `/downloads/…` URLs.
    pub local_files: Option<Arc<LocalFsStore>>,
}

/// Connects to the database (running migrations), the queue and the object store.
pub async fn build(settings: &Settings) -> anyhow::Result<Components> {
    std::fs::create_dir_all(&settings.data_dir)
        .with_context(|| format!("cannot create the data directory {}", settings.data_dir.display()))?;
    let store = Store::connect(&settings.database_url).await.context("cannot connect to the database")?;
    store.migrate().await.context("database migrations failed")?;
    let queue_cfg = match &settings.queue {
        QueueSettings::Redis { url, prefix } => QueueConfig::Redis { url: url.clone(), prefix: prefix.clone() },
        QueueSettings::Sqlite { url, prefix } => QueueConfig::Sqlite { url: url.clone(), prefix: prefix.clone() },
    };
    let queue = Queue::connect(&queue_cfg).await.context("cannot connect to the queue")?;
    let (storage, local_files): (Arc<dyn ObjectStore>, _) = match &settings.storage {
        StorageSettings::S3 { endpoint, bucket, region, access_key_id, secret_access_key, force_path_style } => {
            let s3 = S3Store::new(&S3Config {
                endpoint: endpoint.clone(),
                bucket: bucket.clone(),
                region: region.clone(),
                access_key_id: access_key_id.clone(),
                secret_access_key: secret_access_key.clone(),
                force_path_style: *force_path_style,
            });
            s3.ensure_bucket().await.context("cannot reach or create the S3 bucket")?;
            (Arc::new(s3), None)
        }
        StorageSettings::Local { dir } => {
            let secret = settings.signing_secret()?;
            let local = Arc::new(LocalFsStore::new(dir.clone(), settings.public_url.clone(), secret));
            // Like the S3 bucket above: a fresh data directory is ready (`/readyz`) before any export.
            local
                .ensure_root()
                .await
                .with_context(|| format!("cannot create the files directory {}", dir.display()))?;
            (local.clone(), Some(local))
        }
    };
    Ok(Components { store, queue, storage, local_files })
}

/// Worker settings derived from the service settings.
pub fn worker_settings(settings: &Settings) -> WorkerSettings {
    WorkerSettings {
        lease: settings.lease,
        download_url_ttl: settings.download_url_ttl,
        retention: settings.retention,
        pipeline: PipelineConfig::default(),
        ..WorkerSettings::default()
    }
}

/// API settings derived from the service settings. The key of Auth0-dialect access tokens
/// (`POST /oauth/token`) is derived from the signing secret, so every API replica configured with
/// the same `USEREXPORT_SIGNING_SECRET` accepts the others' tokens.
pub fn api_settings(settings: &Settings) -> anyhow::Result<ApiSettings> {
    let secret = settings.signing_secret().context("cannot load the signing secret")?;
    Ok(ApiSettings {
        max_body_bytes: settings.max_body_bytes,
        auth0_token_key: userexport_api::dialect::auth0::TokenKey::derive(&secret),
        rate_limit: settings.rate_limit.map(|n| userexport_api::rate_limit::ProjectRateLimit::new(n, n)),
        ..ApiSettings::default()
    })
}

/// A shutdown signal that several tasks can wait on.
#[derive(Clone)]
pub struct Shutdown(watch::Receiver<bool>);

impl Shutdown {
    /// A trigger and its signal.
    pub fn new() -> (watch::Sender<bool>, Shutdown) {
        let (tx, rx) = watch::channel(false);
        (tx, Shutdown(rx))
    }

    /// Resolves once shutdown is triggered (or the trigger is dropped).
    pub async fn wait(mut self) {
        while !*self.0.borrow() {
            if self.0.changed().await.is_err() {
                return;
            }
        }
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn os_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the process");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutdown requested; finishing in-flight work");
}

/// Starts the API on `listener`; returns the running server.
pub fn start_api(settings: &Settings, c: &Components, listener: TcpListener) -> anyhow::Result<actix_web::dev::Server> {
    let state = AppState {
        store: c.store.clone(),
        storage: c.storage.clone(),
        local_files: c.local_files.clone(),
        queue: c.queue.clone(),
        settings: api_settings(settings)?,
    };
    userexport_api::run(listener, state).context("cannot start the HTTP server")
}

/// Starts a worker process's own metrics endpoint on `listener`: `GET /metrics` (the process's
/// Prometheus text, with the queue depth sampled at scrape time) and `GET /healthz`. Stop the
/// returned server with `ServerHandle::stop`.
pub fn start_worker_metrics(listener: TcpListener, queue: Queue) -> anyhow::Result<actix_web::dev::Server> {
    use actix_web::{App, HttpServer, web};
    userexport_api::ops::metrics_handle();
    userexport_worker::metric::describe();
    async fn metrics(queue: web::Data<Queue>) -> actix_web::HttpResponse {
        userexport_api::ops::record_queue_depth(&queue).await;
        userexport_api::ops::metrics_response()
    }
    let queue = web::Data::new(queue);
    let server = HttpServer::new(move || {
        App::new()
            .app_data(queue.clone())
            .route("/metrics", web::get().to(metrics))
            .route("/healthz", web::get().to(userexport_api::ops::healthz))
    })
    .workers(1)
    .disable_signals()
    .shutdown_timeout(5)
    .listen(listener)
    .context("cannot start the worker metrics server")?
    .run();
    Ok(server)
}

/// Runs the worker (and maintenance) until `shutdown`.
pub async fn run_worker(
    settings: &Settings,
    c: &Components,
    concurrency: usize,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    // The recorder serves `/metrics` of this process (the API's in `up`, the worker's own port in
    // `worker`); installing it here makes the worker's metrics count even before a scrape.
    userexport_api::ops::metrics_handle();
    userexport_worker::metric::describe();
    let worker = ExportWorker {
        store: c.store.clone(),
        storage: c.storage.clone(),
        settings: worker_settings(settings),
        name: Queue::worker_name(),
    };
    let maintenance = MaintenanceSettings {
        interval: settings.sweep_interval,
        pending_grace: settings.pending_grace,
        keep_done: settings.queue_keep_done,
    };
    let m = tokio::spawn(userexport_worker::run_maintenance(
        worker.clone(),
        c.queue.clone(),
        maintenance,
        shutdown.clone().wait(),
    ));
    let opts = WorkerOptions { concurrency: concurrency.max(1), ..WorkerOptions::default() };
    let result = userexport_worker::run(worker, c.queue.clone(), opts, shutdown.wait()).await;
    let _ = m.await;
    result.context("the worker stopped unexpectedly")
}

/// `userexport serve`.
pub async fn serve(settings: Settings) -> anyhow::Result<()> {
    let c = build(&settings).await?;
    let listener = TcpListener::bind(settings.bind).with_context(|| format!("cannot listen on {}", settings.bind))?;
    tracing::info!(addr = %listener.local_addr()?, "API listening");
    let server = start_api(&settings, &c, listener)?;
    let handle = server.handle();
    tokio::spawn(async move {
        os_signal().await;
        handle.stop(true).await;
    });
    server.await.context("HTTP server error")
}

/// `userexport worker`, with its own `/metrics` on `worker_metrics_bind` when set.
pub async fn worker(settings: Settings, concurrency: Option<usize>) -> anyhow::Result<()> {
    let c = build(&settings).await?;
    let metrics = match settings.worker_metrics_bind {
        Some(addr) => {
            let listener =
                TcpListener::bind(addr).with_context(|| format!("cannot listen on {addr} (worker metrics)"))?;
            tracing::info!(addr = %listener.local_addr()?, "worker metrics listening");
            let server = start_worker_metrics(listener, c.queue.clone())?;
            let handle = server.handle();
            tokio::spawn(server);
            Some(handle)
        }
        None => None,
    };
    let (tx, shutdown) = Shutdown::new();
    tokio::spawn(async move {
        os_signal().await;
        let _ = tx.send(true);
    });
    tracing::info!("worker started");
    let result = run_worker(&settings, &c, concurrency.unwrap_or(settings.worker_concurrency), shutdown).await;
    if let Some(handle) = metrics {
        handle.stop(true).await;
    }
    result
}

/// `userexport up`: API + worker in one process; bootstraps a dev project on first start.
pub async fn up(settings: Settings) -> anyhow::Result<()> {
    let c = build(&settings).await?;
    let listener = TcpListener::bind(settings.bind).with_context(|| format!("cannot listen on {}", settings.bind))?;
    let base = settings.public_url.trim_end_matches('/').to_owned();
    bootstrap_dev_project(&c, &settings.data_dir, &base).await?;
    let server = start_api(&settings, &c, listener)?;
    let handle = server.handle();
    let (tx, shutdown) = Shutdown::new();
    let worker_settings = settings.clone();
    let worker_components = c.clone();
    let worker_shutdown = shutdown.clone();
    let worker = tokio::spawn(async move {
        run_worker(&worker_settings, &worker_components, worker_settings.worker_concurrency, worker_shutdown).await
    });
    tokio::spawn(async move {
        os_signal().await;
        let _ = tx.send(true);
        handle.stop(true).await;
    });
    server.await.context("HTTP server error")?;
    shutdown.wait().await;
    worker.await.context("worker task panicked")?
}

/// Credentials of the embedded dev project, kept in the data directory (mode 0600).
#[derive(serde::Serialize, serde::Deserialize)]
struct DevCredentials {
    project_id: String,
    management_key: String,
}

async fn bootstrap_dev_project(c: &Components, data_dir: &Path, base: &str) -> anyhow::Result<()> {
    let path = data_dir.join("dev-credentials.json");
    let projects = c.store.list_projects().await?;
    let (creds, fresh) = if projects.is_empty() {
        let (project, key): (Project, String) = c.store.create_project("dev").await?;
        let users: Vec<_> = (0..1000).map(|i| userexport_domain::fake::user(1, i)).collect();
        c.store.insert_users(&project.id, &users).await?;
        let creds = DevCredentials { project_id: project.id.to_string(), management_key: key };
        crate::config::write_private_file(&path, serde_json::to_string_pretty(&creds)?.as_bytes())?;
        (creds, true)
    } else {
        match std::fs::read(&path).ok().and_then(|b| serde_json::from_slice::<DevCredentials>(&b).ok()) {
            Some(creds) => (creds, false),
            None => {
                println!(
                    "userexport is running at {base} (projects exist; no dev credentials file at {}).",
                    path.display()
                );
                return Ok(());
            }
        }
    };
    let auth = format!("Authorization: Bearer {}:{}", creds.project_id, creds.management_key);
    println!();
    if fresh {
        println!("Created dev project {} with 1000 demo users.", creds.project_id);
        println!("Its management key is saved in {} (mode 0600).", path.display());
    } else {
        println!("Dev project {} (credentials in {}).", creds.project_id, path.display());
    }
    println!();
    println!("Create an export (Authgear API):");
    println!(
        "  curl -s -X POST {base}/_api/admin/users/export -H '{auth}' -H 'Content-Type: application/json' -d '{{\"format\":\"csv\"}}'"
    );
    println!("Poll it (paste the id from the answer):");
    println!("  curl -s {base}/_api/admin/users/export/TASK_ID -H '{auth}'");
    println!("Download the file (paste download_url from the answer):");
    println!("  curl -s -o users.csv 'DOWNLOAD_URL'");
    println!();
    println!("Native API: POST {base}/v1/exports with {{\"format\":\"ndjson\"}}; GET {base}/v1/exports/TASK_ID");
    println!();
    Ok(())
}
