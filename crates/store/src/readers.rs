//! Threads that read export snapshots, kept between exports together with their connections.
//!
//! An export's `COPY` is read on a thread of its own, with a current-thread runtime and a Postgres
//! connection of its own (see [`Store::stream_users`](crate::Store::stream_users) for why). Opening
//! that connection took 90 ms on the development machine (TCP, TLS, a new server backend), which was
//! a third of a 20,000-user export. So a reader thread does not end with its export: it keeps its
//! runtime and its connection and waits [`IDLE`] for the next export of the same [`Store`], then
//! closes the connection and ends. A connection is kept only after a `COPY` read to its end and a
//! clean `COMMIT`; one that fails on reuse (the server restarted, a proxy closed it) is replaced
//! once ([`crate::stream`]).
//!
//! A thread puts itself back on the idle list *before* its export's consumer sees the end of the
//! stream, so a worker running exports back to back reuses the same threads: at most one thread,
//! and one connection, per export running at once.
//!
//! [`Store`]: crate::Store

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak, mpsc};
use std::time::Duration;

use sea_orm::sqlx::{Connection as _, PgConnection};

/// How long a reader thread waits for another export before it closes its connection and ends.
pub(crate) const IDLE: Duration = Duration::from_secs(30);

/// What a reader thread keeps between exports.
pub(crate) struct ReaderState {
    /// The thread's runtime: the connection's socket belongs to its reactor.
    pub(crate) runtime: tokio::runtime::Runtime,
    /// The connection of the previous export, when it ended cleanly.
    pub(crate) conn: Option<PgConnection>,
}

/// One export's reading, run on a reader thread. It must call `idle` once it no longer needs the
/// thread and before the consumer can see the end of its stream.
pub(crate) type Job = Box<dyn FnOnce(&mut ReaderState, &dyn Fn()) + Send>;

/// The idle reader threads of a store, most recently used last.
type IdleList = Mutex<Vec<(u64, mpsc::Sender<Job>)>>;

/// The reader threads of one [`Store`](crate::Store) (shared by its clones).
pub(crate) struct Readers {
    idle: Arc<IdleList>,
    next_id: AtomicU64,
    /// How long a thread waits for another export ([`IDLE`]).
    wait: Duration,
}

impl Default for Readers {
    fn default() -> Self {
        Self::waiting(IDLE)
    }
}

impl std::fmt::Debug for Readers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner).len();
        f.debug_struct("Readers").field("idle", &idle).finish()
    }
}

impl Readers {
    /// Reader threads that wait `wait` for another export before they end.
    pub(crate) fn waiting(wait: Duration) -> Self {
        Self { idle: Arc::default(), next_id: AtomicU64::new(0), wait }
    }

    /// Runs `job` on the most recently used idle reader thread (whose connection is the one least
    /// likely to have been closed), or on a new thread. Errs only when no thread can be started.
    pub(crate) fn run(&self, mut job: Job) -> std::io::Result<()> {
        loop {
            let idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner).pop();
            let Some((_, thread)) = idle else { break };
            match thread.send(job) {
                Ok(()) => return Ok(()),
                // That thread has ended: try the next one.
                Err(mpsc::SendError(back)) => job = back,
            }
        }
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel();
        // Cannot fail: `rx` is alive.
        let _ = tx.send(job);
        let idle = Arc::downgrade(&self.idle);
        let wait = self.wait;
        std::thread::Builder::new()
            .name("userexport-copy".into())
            .spawn(move || reader_thread(id, (tx, rx), idle, wait, ReaderState { runtime, conn: None }))?;
        Ok(())
    }
}

/// A reader thread: runs jobs until it has waited `wait` for one, or its store is gone.
fn reader_thread(
    id: u64,
    (tx, rx): (mpsc::Sender<Job>, mpsc::Receiver<Job>),
    idle: Weak<IdleList>,
    wait: Duration,
    mut state: ReaderState,
) {
    loop {
        match rx.recv_timeout(wait) {
            Ok(job) => {
                let listed = std::cell::Cell::new(false);
                let become_idle = || {
                    if !listed.replace(true)
                        && let Some(list) = idle.upgrade()
                    {
                        list.lock().unwrap_or_else(PoisonError::into_inner).push((id, tx.clone()));
                    }
                };
                if catch_unwind(AssertUnwindSafe(|| job(&mut state, &become_idle))).is_err() {
                    // The job's consumer has been told (its stream sender was dropped after an error
                    // was sent, see `stream`); a connection in an unknown state is not kept.
                    state.conn = None;
                }
                become_idle();
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let Some(list) = idle.upgrade() else { break };
                let mut list = list.lock().unwrap_or_else(PoisonError::into_inner);
                match list.iter().position(|(listed, _)| *listed == id) {
                    Some(at) => {
                        list.remove(at);
                        break;
                    }
                    // Taken off the list a moment ago: a job is on its way.
                    None => continue,
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    if let Some(conn) = state.conn.take() {
        // Within the runtime: the timeout needs its timer, the connection its reactor.
        let _ = state.runtime.block_on(async { tokio::time::timeout(Duration::from_secs(5), conn.close()).await });
    }
}
