//! `[flows]` and `[tokens]`: the bounds on pending consent flows and on how long a handed-out
//! access token must still live.

use super::raw::{RawFlows, RawTokens};
use super::{Config, Setting};
use std::fmt::Write as _;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct FlowConfig {
    pub ttl: Duration,
    pub max_pending: usize,
    pub max_pending_per_user: usize,
    pub wait_default: Duration,
    pub wait_max: Duration,
}

/// The validated sections; `Config` holds the token bounds flat.
pub(super) struct Flows {
    pub flows: FlowConfig,
    pub default_min_ttl: u32,
    pub max_min_ttl: u32,
    pub refresh_ahead: u32,
    pub refresh_ahead_window: u32,
}

const TTL: Setting = Setting::new("flows.ttl_seconds", 600, 1, 3600);
const MAX_PENDING: Setting = Setting::new("flows.max_pending", 100_000, 1, 10_000_000);
const MAX_PENDING_PER_USER: Setting = Setting::new("flows.max_pending_per_user", 16, 1, 10_000);
const WAIT_DEFAULT: Setting = Setting::new("flows.wait_default_seconds", 30, 1, 3600);
const WAIT_MAX: Setting = Setting::new("flows.wait_max_seconds", 300, 1, 3600);
const DEFAULT_MIN_TTL: Setting = Setting::new("tokens.default_min_ttl_seconds", 60, 0, 86_400);
const MAX_MIN_TTL: Setting = Setting::new("tokens.max_min_ttl_seconds", 86_400, 1, 31_536_000);
const REFRESH_AHEAD: Setting = Setting::new("tokens.refresh_ahead_seconds", 300, 0, 86_400);
const REFRESH_AHEAD_WINDOW: Setting =
    Setting::new("tokens.refresh_ahead_window_seconds", 900, 60, 604_800);

/// Validates both sections; every value out of range goes to `errors`.
pub(super) fn validate(f: &RawFlows, t: &RawTokens, errors: &mut Vec<String>) -> Flows {
    let flows = FlowConfig {
        ttl: TTL.secs(f.ttl_seconds, errors),
        max_pending: MAX_PENDING.count(f.max_pending, errors),
        max_pending_per_user: MAX_PENDING_PER_USER.count(f.max_pending_per_user, errors),
        wait_default: WAIT_DEFAULT.secs(f.wait_default_seconds, errors),
        wait_max: WAIT_MAX.secs(f.wait_max_seconds, errors),
    };
    Flows {
        flows,
        default_min_ttl: DEFAULT_MIN_TTL.secs_u32(t.default_min_ttl_seconds, errors),
        max_min_ttl: MAX_MIN_TTL.secs_u32(t.max_min_ttl_seconds, errors),
        refresh_ahead: REFRESH_AHEAD.secs_u32(t.refresh_ahead_seconds, errors),
        refresh_ahead_window: REFRESH_AHEAD_WINDOW.secs_u32(t.refresh_ahead_window_seconds, errors),
    }
}

/// `[flows]` and `[tokens]`, as TOML.
pub(super) fn render(c: &Config, s: &mut String) {
    let f = &c.flows;
    let _ = writeln!(
        s,
        "\n[flows]\nttl_seconds = {}\nmax_pending = {}\nmax_pending_per_user = {}\nwait_default_seconds = {}\nwait_max_seconds = {}",
        f.ttl.as_secs(),
        f.max_pending,
        f.max_pending_per_user,
        f.wait_default.as_secs(),
        f.wait_max.as_secs()
    );
    let _ = writeln!(
        s,
        "\n[tokens]\ndefault_min_ttl_seconds = {}\nmax_min_ttl_seconds = {}\nrefresh_ahead_seconds = {}\nrefresh_ahead_window_seconds = {}",
        c.default_min_ttl, c.max_min_ttl, c.refresh_ahead, c.refresh_ahead_window
    );
}
