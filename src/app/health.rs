//! Health follows the store: gRPC health and the providers mirror are kept in step with whether
//! the secret store answers.

use crate::service::ProviderRegistry;
use crate::store::SecretStore;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

const STORE_CHECK_EVERY: Duration = Duration::from_secs(2);

pub(super) async fn set_health(reporter: &HealthReporter, serving: bool) {
    let status = if serving {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    };
    reporter
        .set_service_status("valet.v1.Providers", status)
        .await;
    reporter
        .set_service_status("valet.v1.Credentials", status)
        .await;
}

/// Records in the store that a daemon serves from it (`keyspace::served_marker`), so
/// `valet store copy` will not copy into it; whether that worked. A failure is only logged:
/// serving goes on, and the store watcher tries again.
pub(super) async fn mark_served(store: &Arc<dyn SecretStore>) -> bool {
    match crate::store::MetaRepo::new(store.clone())
        .mark_served()
        .await
    {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!("cannot mark the store as served from (will try again): {e}");
            false
        }
    }
}

/// Polls the store so health follows it: NOT_SERVING while it fails (reason logged once per
/// change), providers loaded as soon as it answers after a failed start, and the store marked
/// as served from once it can be (`marked`: already done).
pub(super) async fn watch_store(
    store: Arc<dyn SecretStore>,
    registry: Arc<ProviderRegistry>,
    reporter: HealthReporter,
    mut marked: bool,
    stop: impl Future,
) {
    tokio::pin!(stop);
    let mut serving = registry.is_loaded();
    loop {
        tokio::select! {
            _ = &mut stop => return,
            () = tokio::time::sleep(STORE_CHECK_EVERY) => {}
        }
        let result = match store.check().await {
            Ok(()) if registry.is_loaded() => Ok(()),
            Ok(()) => match registry.load().await {
                Ok(n) => {
                    tracing::info!(
                        providers = n,
                        "secret store reachable again; providers loaded"
                    );
                    Ok(())
                }
                Err(e) => Err(e.chain()),
            },
            Err(e) => Err(e.to_string()),
        };
        let now = result.is_ok();
        if now && !marked {
            marked = mark_served(&store).await;
        }
        if now != serving {
            match &result {
                Ok(()) => tracing::info!("secret store healthy: serving"),
                Err(reason) => tracing::warn!("secret store unavailable, not serving: {reason}"),
            }
            set_health(&reporter, now).await;
            serving = now;
        }
    }
}
