//! Use cases over the ports. `Credentials` is what agents reach through the transport; it
//! authorizes every call (`policy`) and composes the parts that own state: the token broker
//! (`broker` with its `cache` and the `refresher`), consent `flows`, and `references`. The
//! credential `kind` seam dispatches on a provider's kind; `providers` administers them. `Error`
//! is the one transport-agnostic error and its one classification.

pub mod acted_on;
mod ahead;
mod binding;
mod broker;
mod cache;
mod challenges;
mod credentials;
mod device;
mod error;
mod flows;
mod kind;
pub mod policy;
mod providers;
mod references;
mod refresher;
mod replicas;
pub(crate) mod tasks;
mod watches;

pub use ahead::AheadSettings;
pub use broker::{AccessToken, GrantInfo, GrantQuery, MAX_PAGE};
pub use credentials::{
    AuthRequest, CallbackDone, Credentials, GrantChanges, Limits, Outcome, Parts, ProviderDeleted,
    Resolved, SubjectToken,
};
pub use error::{Class, Error, Reason};
pub use kind::{CallbackParams, ProviderRevocation};
pub use providers::ProviderRegistry;
pub use references::ReferenceError;
pub(crate) use references::ReferenceKeys;
pub use watches::WatchSlot;
#[cfg(test)]
mod tests;
