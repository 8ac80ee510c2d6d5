//! The daemon's signals: SIGTERM (what systemd and Kubernetes send to stop it) or Ctrl-C (SIGINT,
//! for a developer at a terminal), on which `App::run` drains; and SIGHUP, on which the audit
//! file is reopened (after log rotation moved it away).

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

/// Installs the SIGHUP handler (from then on a SIGHUP no longer kills the process). Call it
/// inside the runtime, as early as the daemon starts.
pub fn hangups() -> Option<tokio::signal::unix::Signal> {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!("cannot handle SIGHUP ({e}): rotate the audit file by restarting");
            None
        }
    }
}

/// Reopens the audit file at each SIGHUP (logrotate's `postrotate`, systemd's `ExecReload`)
/// until `stop`.
pub async fn reopen_audit_on_hangup(
    mut hangup: tokio::signal::unix::Signal,
    audit: std::sync::Arc<crate::audit::Audit>,
    stop: impl std::future::Future,
) {
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = hangup.recv() => {}
        }
        let audit_has_file = audit.has_file();
        let audit = audit.clone();
        match tokio::task::spawn_blocking(move || audit.reopen()).await {
            Ok(Ok(())) if audit_has_file => {
                tracing::info!(signal = "SIGHUP", "audit file reopened");
            }
            // Nothing to reopen: the trail goes to the log.
            Ok(Ok(())) => tracing::info!(
                signal = "SIGHUP",
                "no [audit] file is configured: nothing to reopen (configuration changes need a restart)"
            ),
            Ok(Err(e)) => tracing::error!("cannot reopen the audit file: {e}"),
            Err(e) => tracing::error!("cannot reopen the audit file: {e}"),
        }
    }
}
