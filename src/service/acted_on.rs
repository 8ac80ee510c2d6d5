//! The grant a call turned out to act on, when its request did not name one (`Resolve` names
//! only a reference): the use case notes it, and the transport's audit, request line and metrics
//! name it, whether the call then succeeded or failed. Task-local, so it follows the one call.

use crate::domain::GrantKey;
use std::cell::RefCell;

tokio::task_local! {
    static ACTED_ON: RefCell<Option<GrantKey>>;
}

/// Runs `call`, and returns with its result the grant it noted (`note`), if any.
pub async fn track<T>(call: impl Future<Output = T>) -> (T, Option<GrantKey>) {
    ACTED_ON
        .scope(RefCell::new(None), async {
            let out = call.await;
            (out, ACTED_ON.with(|g| g.borrow_mut().take()))
        })
        .await
}

/// Notes that the running call acts on `grant` (nothing outside `track`).
pub(super) fn note(grant: &GrantKey) {
    let _ = ACTED_ON.try_with(|g| *g.borrow_mut() = Some(grant.clone()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_noted_grant_comes_back_with_the_result_and_only_to_its_call() {
        let key = GrantKey {
            provider: crate::domain::ProviderId::parse("idp").unwrap(),
            user: crate::domain::UserId::parse("alice").unwrap(),
            agent: None,
            account: None,
        };
        let (out, got) = track(async {
            note(&key);
            7
        })
        .await;
        assert_eq!((out, got), (7, Some(key.clone())));
        let (_, none) = track(async {}).await;
        assert_eq!(none, None);
        // Outside a tracked call it is a no-op.
        note(&key);
    }
}
