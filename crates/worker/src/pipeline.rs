//! The streaming export pipeline: keyset pages → encoder → bounded channel → upload.
//!
//! Three stages run concurrently: the store's reader task (a snapshot `COPY` on Postgres, decoded
//! into users), the encoder on the calling task, and the uploader on its own task; bounded channels
//! between them apply back-pressure. Memory is bounded by a few pages of users plus at most
//! `CHANNEL_PARTS + 2` part buffers, which the uploader hands back to the encoder after each upload
//! (so that steady state allocates no part buffers, and the allocator keeps no freed ones around).
//!
//! The multipart upload is started (through an [`UploadStarter`]) when the first part is full: an
//! export whose whole output fits in one part uploads nothing here and comes back as
//! [`PipelineOutcome::Whole`], for the caller to store in one request instead of three.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tracing::Instrument;
use userexport_domain::{ExportSpec, ProjectId};
use userexport_export::ExportEncoder;
use userexport_storage::{StorageError, Upload};
use userexport_store::Store;

use crate::error::WorkerError;

/// Parts buffered between the encoder and the uploader.
const CHANNEL_PARTS: usize = 1;

/// Tunables of one pipeline run.
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    /// Users per keyset page.
    pub page_size: u64,
    /// Minimum size of every part but the last (S3 needs ≥ 5 MiB; we use 8 MiB).
    pub part_size: usize,
    /// How often the observer hears about progress.
    pub progress_every: Duration,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self { page_size: 256, part_size: 8 * 1024 * 1024, progress_every: Duration::from_secs(2) }
    }
}

/// Progress of a running export.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PipelineProgress {
    /// Users encoded.
    pub rows: u64,
    /// Output bytes handed to the uploader.
    pub bytes: u64,
}

/// What the observer wants after a progress report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Keep going.
    Continue,
    /// Stop: the client cancelled.
    Cancel,
    /// Stop: another worker owns the task now.
    LostLease,
}

/// Receives progress reports and decides whether to go on.
#[async_trait]
pub trait ProgressObserver: Send {
    /// Called at most every `progress_every`, between pages, and once more after the last
    /// output byte is handed to the uploader, so a cancel that arrived during a short export is
    /// seen before the upload is completed.
    async fn on_progress(&mut self, progress: PipelineProgress) -> Result<Control, WorkerError>;
}

/// Starts the multipart upload once the output turns out to need more than one part.
#[async_trait]
pub trait UploadStarter: Send {
    /// Starts the upload; `None` when the export must stop instead (another worker owns the task
    /// now). On an error nothing is left open.
    async fn start(&mut self) -> Result<Option<Box<dyn Upload>>, WorkerError>;
}

/// Result of a pipeline run. An upload is handed back so the caller completes or aborts it.
pub enum PipelineOutcome {
    /// Every user was encoded and uploaded in parts; `upload` still has to be completed.
    Finished {
        /// Final counts.
        progress: PipelineProgress,
        /// The upload, all parts sent.
        upload: Box<dyn Upload>,
    },
    /// Every user was encoded and the whole output is smaller than one part: no upload was
    /// started; the caller stores `body` as the object in one request.
    Whole {
        /// Final counts.
        progress: PipelineProgress,
        /// The whole file.
        body: Bytes,
    },
    /// Stopped early on the observer's (or the starter's) request; `upload`, if one was started,
    /// should be aborted.
    Stopped {
        /// Why.
        control: Control,
        /// The unfinished upload, if one was started.
        upload: Option<Box<dyn Upload>>,
    },
}

type UploaderHandle = tokio::task::JoinHandle<(Box<dyn Upload>, Result<(), StorageError>)>;

/// A running uploader: where to send parts, where uploaded part buffers come back, and its task.
struct Uploader {
    tx: mpsc::Sender<Bytes>,
    recycled: mpsc::Receiver<Vec<u8>>,
    handle: UploaderHandle,
}

/// Starts the uploader.
fn spawn_uploader(mut upload: Box<dyn Upload>) -> Uploader {
    let (tx, mut rx) = mpsc::channel::<Bytes>(CHANNEL_PARTS);
    let (recycle_tx, recycle_rx) = mpsc::channel::<Vec<u8>>(CHANNEL_PARTS + 2);
    let uploader = async move {
        let mut busy = Duration::ZERO;
        let mut parts = 0u32;
        while let Some(part) = rx.recv().await {
            let started = Instant::now();
            let len = part.len();
            let keep = part.clone();
            if let Err(e) = upload.put_part(part).await {
                return (upload, Err(e));
            }
            // The upload dropped its references: the buffer is ours again, for the encoder to reuse.
            if let Ok(buf) = keep.try_into_mut() {
                let _ = recycle_tx.try_send(Vec::from(buf));
            }
            let took = started.elapsed();
            busy += took;
            parts += 1;
            metrics::histogram!("userexport_upload_part_seconds").record(took.as_secs_f64());
            tracing::debug!(bytes = len, "part uploaded");
        }
        tracing::info!(parts, uploading = busy.as_secs_f64(), "all parts uploaded");
        (upload, Ok(()))
    }
    // Its log lines belong to the attempt (task_id, attempt).
    .instrument(tracing::Span::current());
    let handle = tokio::spawn(uploader);
    Uploader { tx, recycled: recycle_rx, handle }
}

/// Streams the project's users matching `spec` into an upload that `starter` starts when the
/// first part is full.
///
/// On error a started upload is aborted here; on success or stop it is returned to the caller.
pub async fn run_pipeline(
    store: &Store,
    project: &ProjectId,
    spec: &ExportSpec,
    starter: &mut dyn UploadStarter,
    cfg: &PipelineConfig,
    observer: &mut dyn ProgressObserver,
) -> Result<PipelineOutcome, WorkerError> {
    let mut uploader = None;
    let result = encode_into(store, project, spec, cfg, observer, starter, &mut uploader).await;
    let Some(Uploader { tx, recycled, handle }) = uploader else {
        return match result? {
            Encoded::Whole(progress, body) => Ok(PipelineOutcome::Whole { progress, body: Bytes::from(body) }),
            Encoded::Stopped(control) => Ok(PipelineOutcome::Stopped { control, upload: None }),
            Encoded::Done(_) => Err(WorkerError::Internal("parts were sent without an upload".into())),
        };
    };
    drop((tx, recycled));
    let (upload, sent) = match handle.await {
        Ok(pair) => pair,
        Err(join) => return Err(WorkerError::Internal(format!("uploader task failed: {join}"))),
    };
    let outcome = match (result, sent) {
        (Ok(_), Err(e)) | (Err(WorkerError::UploaderGone), Err(e)) => Err(WorkerError::Storage(e)),
        (Err(e), _) => Err(e),
        (Ok(Encoded::Done(progress)), Ok(())) => return Ok(PipelineOutcome::Finished { progress, upload }),
        (Ok(Encoded::Stopped(control)), Ok(())) => {
            return Ok(PipelineOutcome::Stopped { control, upload: Some(upload) });
        }
        (Ok(Encoded::Whole(..)), Ok(())) => Err(WorkerError::Internal("a whole file with an upload started".into())),
    };
    if let Err(abort_err) = upload.abort().await {
        tracing::warn!(error = %abort_err, "aborting the upload after a failure also failed");
    }
    outcome
}

enum Encoded {
    /// Every part was handed to the uploader.
    Done(PipelineProgress),
    /// Nothing was uploaded: the whole output, smaller than a part.
    Whole(PipelineProgress, Vec<u8>),
    Stopped(Control),
}

/// Hands `part` to the uploader, starting the upload (and the uploader) first if this is the first
/// part. `Some(control)` when the starter says stop.
async fn send_part(
    part: Vec<u8>,
    starter: &mut dyn UploadStarter,
    uploader: &mut Option<Uploader>,
) -> Result<Option<Control>, WorkerError> {
    let up = match uploader {
        Some(up) => up,
        None => match starter.start().await? {
            Some(upload) => uploader.insert(spawn_uploader(upload)),
            None => return Ok(Some(Control::LostLease)),
        },
    };
    up.tx.send(Bytes::from(part)).await.map_err(|_| WorkerError::UploaderGone)?;
    Ok(None)
}

async fn encode_into(
    store: &Store,
    project: &ProjectId,
    spec: &ExportSpec,
    cfg: &PipelineConfig,
    observer: &mut dyn ProgressObserver,
    starter: &mut dyn UploadStarter,
    uploader: &mut Option<Uploader>,
) -> Result<Encoded, WorkerError> {
    let mut encoder = ExportEncoder::new(spec);
    let mut progress = PipelineProgress::default();
    let limit = spec.limit().unwrap_or(u64::MAX);
    let parts = encoder.user_parts();
    let mut pages = store.stream_users(project.clone(), spec.filter().clone(), cfg.page_size, spec.limit(), parts);
    let mut last_report = Instant::now();
    // Where the encoder's time goes: waiting for users, waiting for the uploader, the rest encoding.
    let started = Instant::now();
    let mut waited_read = Duration::ZERO;
    let mut waited_upload = Duration::ZERO;
    loop {
        let asked = Instant::now();
        let next = pages.next().await;
        waited_read += asked.elapsed();
        let Some(page) = next else { break };
        let page = page?;
        for user in &page {
            if progress.rows >= limit {
                break;
            }
            encoder.push(user)?;
            progress.rows += 1;
            if encoder.buffered_len() >= cfg.part_size {
                let spare = uploader.as_mut().and_then(|up| up.recycled.try_recv().ok()).unwrap_or_default();
                let part = encoder.take_reusing(spare);
                progress.bytes += part.len() as u64;
                let sending = Instant::now();
                if let Some(stop) = send_part(part, starter, uploader).await? {
                    return Ok(Encoded::Stopped(stop));
                }
                waited_upload += sending.elapsed();
            }
        }
        // The reader decodes the next users into these users' buffers.
        pages.recycle(page);
        if last_report.elapsed() >= cfg.progress_every {
            last_report = Instant::now();
            match observer.on_progress(progress).await? {
                Control::Continue => {}
                stop => return Ok(Encoded::Stopped(stop)),
            }
        }
        if progress.rows >= limit {
            break;
        }
    }
    drop(pages);
    let tail = encoder.finish()?;
    progress.bytes += tail.len() as u64;
    // Without an upload the tail is the whole file; it goes out after the last word below.
    let whole = match uploader {
        None => Some(tail),
        Some(_) if tail.is_empty() => None,
        Some(up) => {
            let sending = Instant::now();
            up.tx.send(Bytes::from(tail)).await.map_err(|_| WorkerError::UploaderGone)?;
            waited_upload += sending.elapsed();
            None
        }
    };
    let total = started.elapsed();
    // The last word before the caller completes the upload: a cancel or a lost lease since the
    // last report stops the export here (one store round trip per export).
    let last_word = observer.on_progress(progress).await?;
    tracing::info!(
        rows = progress.rows,
        bytes = progress.bytes,
        seconds = total.as_secs_f64(),
        waiting_for_users = waited_read.as_secs_f64(),
        waiting_for_uploads = waited_upload.as_secs_f64(),
        encoding = total.saturating_sub(waited_read + waited_upload).as_secs_f64(),
        "all users encoded"
    );
    match (last_word, whole) {
        (Control::Continue, Some(body)) => Ok(Encoded::Whole(progress, body)),
        (Control::Continue, None) => Ok(Encoded::Done(progress)),
        (stop, _) => Ok(Encoded::Stopped(stop)),
    }
}
