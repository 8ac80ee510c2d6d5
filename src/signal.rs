//! The daemon's shutdown signal: SIGTERM (what systemd and Kubernetes send to stop it) or Ctrl-C
//! (SIGINT, for a developer at a terminal). `App::run` drains when this resolves.

/// Installs the handlers at once (a SIGTERM that arrives before the daemon announces itself must
/// stop it cleanly, not kill it with the default action), and resolves at the first SIGTERM or
/// Ctrl-C, logging which one came so that a stop in the logs can be told apart from a crash.
/// Call it inside the runtime.
pub fn shutdown() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let term = signal(SignalKind::terminate());
    let interrupt = signal(SignalKind::interrupt());
    async move {
        let signal = match (term, interrupt) {
            (Ok(mut term), Ok(mut interrupt)) => tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = interrupt.recv() => "SIGINT",
            },
            (Ok(mut term), Err(_)) => {
                term.recv().await;
                "SIGTERM"
            }
            (Err(_), Ok(mut interrupt)) => {
                interrupt.recv().await;
                "SIGINT"
            }
            // No handler could be installed: the default actions still stop the process.
            (Err(_), Err(_)) => std::future::pending().await,
        };
        tracing::info!(signal, "shutdown requested");
    }
}
