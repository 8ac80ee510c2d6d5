//! Valet's integration tests: one binary, real peers (the daemon binary, panva/oidc-provider).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail by panicking"
)]

mod accounts;
mod admin;
mod adversarial;
mod canary;
mod cli;
mod client_credentials;
mod device_flow;
mod export;
mod flow;
mod id_tokens;
mod import;
mod lifecycle;
mod mcp;
mod operations;
mod private_key_jwt;
mod providers;
mod references;
mod refresh;
mod replicas;
mod scoping;
mod service_accounts;
mod static_credentials;
mod support;
mod token_exchange;
mod user_assertions;
mod vault;
mod watch;
mod webhooks;
