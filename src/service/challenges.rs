//! The cap on scope challenges: an API (an MCP server) that answers `insufficient_scope` again
//! after every consent would otherwise send its user through consent forever. Each (grant,
//! scopes) may start at most `MAX` consents from a challenge within `WINDOW`; a retry that joins
//! the consent already waiting starts none.

use super::Error;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const MAX: u32 = 3;
const WINDOW: Duration = Duration::from_secs(600);
/// Entries kept before expired ones are dropped.
const SWEEP_AT: usize = 10_000;

/// Consents started in the window, when the window began, and the last flow's auth id.
type Started = (u32, Instant, String);

#[derive(Debug, Default)]
pub(super) struct ChallengeCap {
    started: Mutex<HashMap<String, Started>>,
}

impl ChallengeCap {
    /// Refuses a challenge whose consent already ran `MAX` times in the window, unless the last
    /// one still `waiting` (by its auth id): a retry then joins it.
    pub(super) fn check(&self, key: &str, waiting: impl Fn(&str) -> bool) -> Result<(), Error> {
        let now = Instant::now();
        let map = self.started.lock().unwrap_or_else(|p| p.into_inner());
        match map.get(key) {
            Some((n, since, last))
                if *n >= MAX && now.duration_since(*since) < WINDOW && !waiting(last) =>
            {
                Err(Error::Exhausted(format!(
                    "the API asked for these scopes {MAX} times within {} minutes after consent was started for them; it may not accept what the provider grants (check the provider's scopes, or wait)",
                    WINDOW.as_secs() / 60
                )))
            }
            _ => Ok(()),
        }
    }

    /// Records the consent flow `auth_id` a challenge was answered with; the same flow again (a
    /// retry joined it) is not another consent.
    pub(super) fn started(&self, key: String, auth_id: &str) {
        let now = Instant::now();
        let mut map = self.started.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= SWEEP_AT {
            map.retain(|_, (_, since, _)| now.duration_since(*since) < WINDOW);
        }
        let entry = map.entry(key).or_insert((0, now, String::new()));
        if now.duration_since(entry.1) >= WINDOW {
            *entry = (0, now, String::new());
        }
        if entry.2 != auth_id {
            entry.0 += 1;
            auth_id.clone_into(&mut entry.2);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_challenge_starts_at_most_three_consents() {
        let cap = ChallengeCap::default();
        // Retries that join the waiting consent count once.
        for _ in 0..5 {
            assert!(cap.check("idp/alice/=/files:read", |_| false).is_ok());
            cap.started("idp/alice/=/files:read".into(), "a0");
        }
        for n in 1..MAX {
            assert!(cap.check("idp/alice/=/files:read", |_| false).is_ok());
            cap.started("idp/alice/=/files:read".into(), &format!("a{n}"));
        }
        let e = cap.check("idp/alice/=/files:read", |_| false).unwrap_err();
        assert!(e.to_string().contains("3 times"), "{e}");
        // While the last consent waits, a retry may join it.
        assert!(cap.check("idp/alice/=/files:read", |id| id == "a2").is_ok());
        assert!(
            cap.check("idp/bob/=/files:read", |_| false).is_ok(),
            "per grant"
        );
    }
}
