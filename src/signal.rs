//! The daemon's shutdown signal: SIGTERM (what systemd and Kubernetes send to stop it) or Ctrl-C
//! (SIGINT, for a developer at a terminal). `App::run` drains when this resolves.

/// Resolves at the first SIGTERM or Ctrl-C, and logs which one came, so a stop in the logs
/// can be told apart from a crash.
pub async fn shutdown() {
    let ctrl_c = tokio::signal::ctrl_c();
    let signal = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = ctrl_c => "SIGINT",
                _ = term.recv() => "SIGTERM",
            }
        }
        // Without a SIGTERM handler, Ctrl-C still stops the daemon cleanly.
        Err(_) => {
            let _ = ctrl_c.await;
            "SIGINT"
        }
    };
    tracing::info!(signal, "shutdown requested");
}
