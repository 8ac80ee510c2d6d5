//! `[provider_http]`: timeouts for Valet's own calls to providers (token endpoint, discovery),
//! so a slow provider cannot hold a caller's request forever.

use super::raw::RawProviderHttp;
use super::{Config, Setting};
use std::fmt::Write as _;
use std::time::Duration;

/// The validated section; `Config` holds these fields flat.
pub(super) struct ProviderHttp {
    pub connect_timeout: Duration,
    pub timeout: Duration,
    pub allow_private_networks: bool,
}

const CONNECT_TIMEOUT: Setting = Setting::new("provider_http.connect_timeout_seconds", 5, 1, 120);
const TIMEOUT: Setting = Setting::new("provider_http.timeout_seconds", 15, 1, 300);

/// Validates the section; every value out of range goes to `errors`.
/// `dev`: private networks are allowed unless the file says otherwise.
pub(super) fn validate(p: &RawProviderHttp, dev: bool, errors: &mut Vec<String>) -> ProviderHttp {
    ProviderHttp {
        connect_timeout: CONNECT_TIMEOUT.secs(p.connect_timeout_seconds, errors),
        timeout: TIMEOUT.secs(p.timeout_seconds, errors),
        allow_private_networks: p.allow_private_networks.unwrap_or(dev),
    }
}

/// `[provider_http]`, as TOML.
pub(super) fn render(c: &Config, s: &mut String) {
    let _ = writeln!(
        s,
        "\n[provider_http]\nconnect_timeout_seconds = {}\ntimeout_seconds = {}\nallow_private_networks = {}",
        c.provider_connect_timeout.as_secs(),
        c.provider_timeout.as_secs(),
        c.allow_private_networks
    );
}
