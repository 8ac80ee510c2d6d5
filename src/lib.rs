//! Valet: a credential vault daemon for AI agents.
//!
//! Agents ask over gRPC for a credential to act for a user at a provider; Valet runs the OAuth
//! consent flow, keeps the long-lived secrets in a [`store::SecretStore`], and hands out only
//! short-lived access tokens. See ARCHITECTURE.md for the map of this crate.

pub mod app;
pub mod assertion;
pub mod audit;
pub mod cli;
pub mod client;
pub mod clock;
pub mod config;
pub mod domain;
pub mod export;
pub mod fuzzing;
pub mod jwt;
pub mod mcp;
pub mod metrics;
pub mod net;
pub mod oauth;
pub mod ops;
pub mod pb;
pub mod pending;
pub mod profile;
pub mod secret;
pub mod service;
pub mod signal;
pub mod store;
pub mod telemetry;
pub mod transport;
pub mod webhooks;

pub use app::App;
pub use config::Config;

/// Installs the process-wide rustls crypto provider. The dependency set links both ring and
/// aws-lc-rs, so rustls cannot pick one by itself; every binary and test harness calls this first.
pub fn install_crypto_provider() {
    // Err means one is already installed, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}
