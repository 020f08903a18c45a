//! Waking idle workers the moment a job is enqueued, instead of at their next poll.
//!
//! [`Queue::enqueue`](crate::Queue::enqueue) sets its queue's [`Wake`], for a worker in the same
//! process (the embedded mode), and on Redis also publishes the task id on `<prefix>:enqueued`; a
//! worker process subscribes to that channel on a connection of its own and sets its [`Wake`] on
//! every message. (apalis-redis 1.0 has a channel of its own, but its push script files every job
//! as scheduled, which skips the publish, so nothing arrives on it.) The 200 ms poll stays as the
//! safety net: a message published while the subscription is down is lost, and the poll finds the
//! job anyway; so do jobs that come back without an enqueue (apalis retries, released leases).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Context;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::task::AtomicWaker;

/// Waits before subscribing again after the subscription failed or ended (Redis restarted).
const RESUBSCRIBE_DELAY: Duration = Duration::from_secs(1);

/// A wake-up for the workers of one queue, shared by the queue's clones: [`Wake::notify`] marks
/// that a job may be waiting and wakes the worker that last asked.
#[derive(Debug, Default)]
pub(crate) struct Wake {
    pending: AtomicBool,
    waker: AtomicWaker,
}

impl Wake {
    /// A job may be waiting: wake the worker (or let its next poll see it).
    pub(crate) fn notify(&self) {
        self.pending.store(true, Ordering::Release);
        self.waker.wake();
    }

    /// Whether [`notify`](Self::notify) was called since the last call; registers `cx` to be woken
    /// by the next one.
    pub(crate) fn take(&self, cx: &Context<'_>) -> bool {
        self.waker.register(cx.waker());
        self.pending.swap(false, Ordering::AcqRel)
    }
}

/// The channel [`Queue::enqueue`](crate::Queue::enqueue) publishes the task ids of the queue with
/// key prefix `prefix` on.
pub(crate) fn enqueued_channel(prefix: &str) -> String {
    format!("{prefix}:enqueued")
}

/// Subscribes to `channel` and notifies `wake` on every message, for ever: after a failure or a
/// lost connection it subscribes again (and notifies once, for what it may have missed).
pub(crate) async fn listen(client: redis::Client, channel: String, wake: Arc<Wake>) {
    let mut failing = false;
    loop {
        let subscribed = async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        match tokio::time::timeout(RESUBSCRIBE_DELAY * 10, subscribed).await {
            Ok(Ok(mut pubsub)) => {
                if failing {
                    tracing::info!("job notifications subscribed again");
                    failing = false;
                }
                wake.notify();
                let mut messages = pubsub.on_message();
                while messages.next().await.is_some() {
                    wake.notify();
                }
                tracing::debug!("job notification subscription ended; subscribing again");
            }
            Ok(Err(e)) if !failing => {
                tracing::warn!(error = %e, "cannot subscribe to job notifications; polling only until it can");
                failing = true;
            }
            Err(_) if !failing => {
                tracing::warn!("subscribing to job notifications timed out; polling only until it can");
                failing = true;
            }
            _ => {}
        }
        tokio::time::sleep(RESUBSCRIBE_DELAY).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::Backend;
    use crate::{Queue, QueueConfig};
    use std::task::{Poll, Waker};
    use userexport_domain::TaskId;

    #[test]
    fn a_notification_is_taken_once() {
        let wake = Wake::default();
        let cx = Context::from_waker(Waker::noop());
        assert!(!wake.take(&cx));
        wake.notify();
        wake.notify();
        assert!(wake.take(&cx));
        assert!(!wake.take(&cx));
    }

    /// Waits (10 s at most, never a timing assertion) until `wake` was notified.
    async fn notified(wake: &Wake, what: &str) {
        let wait = std::future::poll_fn(|cx| if wake.take(cx) { Poll::Ready(()) } else { Poll::Pending });
        tokio::time::timeout(Duration::from_secs(10), wait).await.unwrap_or_else(|_| panic!("no wake-up: {what}"));
    }

    /// A job pushed through another connection (another process's queue, with a wake of its own)
    /// reaches a subscribed listener: the channel is right and the push publishes on it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_job_enqueued_elsewhere_wakes_the_subscriber() {
        let url = std::env::var("USEREXPORT_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
        let prefix = format!("uxwake-{}", ulid::Ulid::new());
        let cfg = QueueConfig::Redis { url: url.clone(), prefix: prefix.clone() };
        let producer = match Queue::connect(&cfg).await {
            Ok(queue) => queue,
            Err(e) if std::env::var("USEREXPORT_TEST_REQUIRE_SERVICES").is_ok_and(|v| v == "1") => {
                panic!("redis at {url} is required: {e}")
            }
            Err(e) => return eprintln!("skipping: redis at {url} unreachable: {e}"),
        };
        let consumer = Queue::connect(&cfg).await.expect("second connection");
        let Backend::Redis { client, .. } = &consumer.backend else { unreachable!("a Redis queue") };
        let listener = tokio::spawn(listen(client.as_ref().clone(), enqueued_channel(&prefix), consumer.wake.clone()));
        notified(&consumer.wake, "subscribed").await;

        producer.enqueue(&TaskId::generate()).await.expect("enqueue");
        notified(&consumer.wake, "the push's notification").await;
        listener.abort();

        let mut conn = client.get_multiplexed_async_connection().await.expect("cleanup connection");
        let keys: Vec<String> =
            redis::cmd("KEYS").arg(format!("{prefix}:*")).query_async(&mut conn).await.expect("keys");
        assert!(!keys.is_empty(), "the job was not pushed under {prefix}");
        let _: () = redis::cmd("DEL").arg(&keys).query_async(&mut conn).await.expect("cleanup");
    }
}
