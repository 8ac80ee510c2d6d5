//! Consent binding (the AgentCore `CompleteResourceTokenAuth` pattern): for providers with a
//! `consent_return_url`, a consent that came back through the callback is parked here instead of
//! being stored; the browser goes to the operator's app with a one-time session, and the app's
//! `CompleteAuthorization(session, user_id)` stores it only if its signed-in user is the flow's.
//! Parked consents live in memory, bounded, and fail closed at the flow's deadline.

use super::Error;
use super::broker::Consented;
use crate::pending::{FlowFailure, FlowOutcome, Taken};
use crate::secret::{random_token, sha256};
use std::collections::HashMap;
use std::sync::Mutex;
use tokio::time::Instant;

/// A consent waiting for the operator's app.
#[derive(Debug)]
pub(crate) struct Parked {
    pub taken: Taken,
    pub consented: Consented,
    pub deadline: Instant,
}

#[derive(Debug)]
pub(crate) struct Bindings {
    /// sha256(session) → parked consent; the session itself is never kept.
    parked: Mutex<HashMap<[u8; 32], Parked>>,
    max: usize,
}

impl Bindings {
    pub(crate) fn new(max: usize) -> Self {
        Self {
            parked: Mutex::default(),
            max,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Parked>> {
        self.parked.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Parks a consent until `deadline`; returns the one-time session for the return URL.
    pub(crate) fn park(
        &self,
        taken: Taken,
        consented: Consented,
        deadline: Instant,
    ) -> Result<String, Box<(Taken, Error)>> {
        let mut parked = self.lock();
        let now = Instant::now();
        parked.retain(|_, p| {
            let live = now < p.deadline;
            if !live {
                p.taken.finish(FlowOutcome::Failed(FlowFailure::Expired));
            }
            live
        });
        if parked.len() >= self.max {
            return Err(Box::new((
                taken,
                Error::Exhausted("too many consents are waiting for CompleteAuthorization".into()),
            )));
        }
        let session = match random_token(32) {
            Ok(s) => s,
            Err(_) => return Err(Box::new((taken, Error::internal("the system RNG failed")))),
        };
        parked.insert(
            sha256(session.as_bytes()),
            Parked {
                taken,
                consented,
                deadline,
            },
        );
        Ok(session)
    }

    /// Takes the consent `session` names, once.
    pub(crate) fn take(&self, session: &str) -> Option<Parked> {
        if session.is_empty() || session.len() > 128 {
            return None;
        }
        self.lock().remove(&sha256(session.as_bytes()))
    }
}
