//! Work that must finish once begun: a refresh whose rotated refresh token is not stored yet, a
//! consent's code exchange, a provider's deletion, the RPCs that change what is stored. It runs
//! on a task of its own, so a caller that goes away (a browser closed, a gRPC deadline) does not
//! cut it off, and on one tracker, which shutdown waits for within its grace period (`settled`).

use super::Error;
use std::sync::LazyLock;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

static MUST_FINISH: LazyLock<TaskTracker> = LazyLock::new(TaskTracker::new);

/// Runs `work` on its own task, in the current span (a request's trace goes on), and waits for
/// it. A task that ended without an answer (it panicked) is an internal error.
pub(crate) async fn detached<T: Send + 'static>(
    context: &'static str,
    work: impl Future<Output = T> + Send + 'static,
) -> Result<T, Error> {
    let work = work.in_current_span();
    MUST_FINISH.spawn(work).await.map_err(|e| Error::Internal {
        context,
        source: Some(Box::new(e)),
    })
}

/// Resolves once no `detached` work is running: at shutdown, after the servers stopped taking
/// calls, so a code exchange whose browser already left still stores its grant, and a refresh
/// its rotated token.
pub(crate) async fn settled() {
    MUST_FINISH.close();
    MUST_FINISH.wait().await;
}
