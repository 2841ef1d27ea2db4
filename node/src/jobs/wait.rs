//! The one way a job thread waits on the node link: for one I/O step (room in the link's
//! outbound queue, the next envelope, the next coordinator round), the job's cancellation, or
//! the node's job deadline, whichever comes first.
//!
//! # Guarantees
//! * Cancellation wins over the deadline, and both win over I/O that is ready at the same
//!   moment, so an aborted job never sends another message.
//! * The deadline is fixed when the job starts (`[limits] job_deadline_secs`); every wait of
//!   the job counts against the same instant.
//! * A closed channel means the link is gone: it ends the job as cancelled, like an abort.

use std::future::Future;
use std::time::Duration;

use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

use crate::NodeError;

/// Waits for one job's I/O on its blocking thread, bounded by the job's cancellation and
/// deadline.
#[derive(Clone)]
pub(crate) struct Waiter {
    job_id: String,
    rt: Handle,
    cancel: CancellationToken,
    deadline: tokio::time::Instant,
    limit: Duration,
}

impl Waiter {
    /// A waiter for job `job_id` whose deadline is `limit` from now. Must be created inside the
    /// tokio runtime that `rt` is a handle to.
    pub(crate) fn new(
        job_id: &str,
        rt: Handle,
        cancel: CancellationToken,
        limit: Duration,
    ) -> Self {
        Waiter {
            job_id: job_id.to_owned(),
            rt,
            cancel,
            deadline: tokio::time::Instant::now() + limit,
            limit,
        }
    }

    /// Blocks the current (non-runtime) thread until `io` yields, the job is cancelled, or the
    /// deadline passes. `io` yields `None` when its channel has closed (the link is gone);
    /// that ends the job as [`NodeError::Cancelled`]. `doing` names what the job was doing,
    /// for the deadline's error, e.g. "waiting for round 2".
    pub(crate) fn until<T>(
        &self,
        doing: impl FnOnce() -> String,
        io: impl Future<Output = Option<T>>,
    ) -> Result<T, NodeError> {
        let cancel = self.cancel.clone();
        let deadline = self.deadline;
        let waited = self.rt.block_on(async move {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => Err(false),
                _ = tokio::time::sleep_until(deadline) => Err(true),
                v = io => v.ok_or(false),
            }
        });
        match waited {
            Ok(v) => Ok(v),
            Err(false) => Err(NodeError::Cancelled),
            Err(true) => Err(NodeError::protocol(
                &self.job_id,
                &format!(
                    "the job did not finish within the node's job deadline of {} s ([limits] \
                     job_deadline_secs); it was {}",
                    self.limit.as_secs(),
                    doing()
                ),
            )),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime")
    }

    /// Runs `f` with a waiter on a blocking thread of a fresh runtime.
    fn with_waiter<T: Send + 'static>(
        limit: Duration,
        f: impl FnOnce(Waiter, CancellationToken) -> T + Send + 'static,
    ) -> T {
        let rt = runtime();
        rt.block_on(async move {
            let cancel = CancellationToken::new();
            let w = Waiter::new("job-1", Handle::current(), cancel.clone(), limit);
            tokio::task::spawn_blocking(move || f(w, cancel))
                .await
                .expect("blocking task")
        })
    }

    #[test]
    fn ready_io_is_returned() {
        let got = with_waiter(Duration::from_secs(60), |w, _| {
            w.until(|| "sending".into(), async { Some(7) })
        });
        assert_eq!(got.unwrap(), 7);
    }

    #[test]
    fn a_closed_channel_ends_the_job_as_cancelled() {
        let got = with_waiter(Duration::from_secs(60), |w, _| {
            w.until(|| "reading".into(), async { None::<u8> })
        });
        assert!(matches!(got, Err(NodeError::Cancelled)), "{got:?}");
    }

    #[test]
    fn cancellation_wins_over_ready_io() {
        let got = with_waiter(Duration::from_secs(60), |w, cancel| {
            cancel.cancel();
            w.until(|| "sending".into(), async { Some(1) })
        });
        assert!(matches!(got, Err(NodeError::Cancelled)), "{got:?}");
    }

    #[test]
    fn the_deadline_names_the_setting_and_what_the_job_was_doing() {
        let err = with_waiter(Duration::from_millis(20), |w, _| {
            // The first wait uses up the whole deadline; later waits fail at once.
            let first = w.until(
                || "waiting for round 1".into(),
                std::future::pending::<Option<()>>(),
            );
            let second = w.until(
                || "sending round 2".into(),
                std::future::pending::<Option<()>>(),
            );
            (first, second)
        });
        let first = err.0.unwrap_err().to_string();
        assert!(first.contains("job-1"), "{first}");
        assert!(first.contains("job_deadline_secs"), "{first}");
        assert!(first.contains("waiting for round 1"), "{first}");
        assert!(err.1.unwrap_err().to_string().contains("sending round 2"));
    }
}
