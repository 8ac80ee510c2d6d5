//! Watch streams open per caller, each caller held to its `max_watches`: a stream without a
//! deadline lives until its caller goes away, so a loop opening them would otherwise pile up
//! memory until the daemon is killed.

use super::Error;
use crate::domain::Caller;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

/// How many watch streams each caller holds open, and whether the daemon is closing them all
/// (shutting down).
#[derive(Debug)]
pub(super) struct Watches {
    held: Mutex<HashMap<String, u32>>,
    closing: tokio::sync::watch::Sender<bool>,
}

impl Default for Watches {
    fn default() -> Self {
        Self {
            held: Mutex::default(),
            closing: tokio::sync::watch::Sender::new(false),
        }
    }
}

/// One open watch stream of a caller; frees its place when dropped (the stream ended or its
/// caller went away).
#[derive(Debug)]
pub struct WatchSlot {
    watches: Arc<Watches>,
    caller: String,
}

impl WatchSlot {
    /// Resolves once the daemon closes every watch (it is shutting down); a stream then ends,
    /// saying so, rather than holding the shutdown for its whole grace period.
    pub fn closing(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        self.watches.closing()
    }
}

impl Watches {
    /// A place for one more of `caller`'s streams, unless it holds its `max_watches` already.
    pub(super) fn open(self: &Arc<Self>, caller: &Caller) -> Result<WatchSlot, Error> {
        let mut open = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        let held = open.entry(caller.name.clone()).or_default();
        if caller.max_watches > 0 && *held >= caller.max_watches {
            return Err(Error::Exhausted(format!(
                "this caller holds {held} open watch streams, its max_watches: close one (or give watches a deadline) before opening another"
            )));
        }
        *held += 1;
        Ok(WatchSlot {
            watches: self.clone(),
            caller: caller.name.clone(),
        })
    }

    /// Resolves once the daemon closes every watch and long poll (it is shutting down), at once
    /// if it has.
    pub(super) fn closing(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut closing = self.closing.subscribe();
        async move {
            let _ = closing.wait_for(|c| *c).await;
        }
    }

    /// Ends every watch stream and long poll (shutdown): each says the daemon is shutting down.
    pub(super) fn close_all(&self) {
        self.closing.send_replace(true);
    }

    /// The streams `caller` holds open.
    #[cfg(test)]
    fn held(&self, caller: &str) -> u32 {
        let open = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        open.get(caller).copied().unwrap_or(0)
    }
}

impl Drop for WatchSlot {
    fn drop(&mut self) {
        let mut open = self
            .watches
            .held
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(held) = open.get_mut(&self.caller) {
            *held = held.saturating_sub(1);
            if *held == 0 {
                open.remove(&self.caller);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Role;

    #[test]
    fn a_caller_holds_at_most_its_max_watches_and_a_closed_one_frees_its_place() {
        let watches = Arc::new(Watches::default());
        let mut agent = Caller::api_key("agent-a", Role::Agent);
        agent.max_watches = 2;
        let first = watches.open(&agent).unwrap();
        let _second = watches.open(&agent).unwrap();
        let Err(Error::Exhausted(why)) = watches.open(&agent) else {
            panic!("a third stream was opened");
        };
        assert!(why.contains("max_watches"), "{why}");
        // Another caller's streams are its own.
        let mut other = Caller::api_key("agent-b", Role::Agent);
        other.max_watches = 2;
        let _theirs = watches.open(&other).unwrap();
        drop(first);
        assert_eq!(watches.held("agent-a"), 1);
        let _again = watches.open(&agent).unwrap();
        // 0: no limit.
        let unlimited = Caller::api_key("ops", Role::Admin);
        let many: Vec<_> = (0..100)
            .map(|_| watches.open(&unlimited).unwrap())
            .collect();
        assert_eq!(watches.held("ops"), 100);
        drop(many);
        assert_eq!(watches.held("ops"), 0);
    }
}
