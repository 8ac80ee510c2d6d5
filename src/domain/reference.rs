//! A reference record: what the store keeps about an issued reference (never the reference).

use super::{GrantKey, Scopes};
use serde::{Deserialize, Serialize};

/// A reference as stored, under the keyed hash of its id.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReferenceRecord {
    pub grant: GrantKey,
    pub scopes: Scopes,
    /// The caller (API key name) it was issued to.
    pub owner: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub single_use: bool,
    #[serde(default)]
    pub used: bool,
}

impl ReferenceRecord {
    /// Whether `caller` may still use it at `now`.
    pub fn live_for(&self, caller: &str, now: i64) -> bool {
        self.owner == caller && self.expires_at > now && !self.used
    }
}
