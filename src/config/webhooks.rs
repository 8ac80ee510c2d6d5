//! `[[webhooks]]`: where lifecycle notifications go (`crate::webhooks`), each signed with its
//! own secret, read from a file (never written in the config).

use super::raw::RawWebhook;
use crate::secret::{ExposeSecret as _, read_private_file};
use crate::webhooks::{EVENTS, Webhook};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct WebhookConfig {
    pub hook: Webhook,
    pub secret_file: PathBuf,
}

/// Shortest secret accepted (bytes).
const MIN_SECRET: usize = 16;

pub(super) fn validate(
    raw: &[RawWebhook],
    dev: bool,
    errors: &mut Vec<String>,
) -> Vec<WebhookConfig> {
    let mut out = Vec::new();
    for (i, w) in raw.iter().enumerate() {
        let at = format!("webhooks[{i}]");
        let url = match url::Url::parse(&w.url) {
            Ok(u) if u.scheme() == "https" => Some(u),
            Ok(u) if u.scheme() == "http" && (dev || crate::net::loopback_host(&u)) => Some(u),
            Ok(_) => {
                errors.push(format!(
                    "{at}.url must be https (plain http only to loopback, or in dev mode)"
                ));
                None
            }
            Err(_) => {
                errors.push(format!("{at}.url is not an absolute URL"));
                None
            }
        };
        // Held to the rule of every secret file: not open to others.
        let secret = match read_private_file(Path::new(&w.secret_file), &format!("{at} secret")) {
            Ok(s) if s.expose_secret().len() >= MIN_SECRET => Some(s),
            Ok(_) => {
                errors.push(format!(
                    "{at}.secret_file {} holds fewer than {MIN_SECRET} characters (e.g. `openssl rand -hex 32`)",
                    w.secret_file
                ));
                None
            }
            Err(e) => {
                errors.push(e);
                None
            }
        };
        for e in &w.events {
            if !EVENTS.contains(&e.as_str()) {
                errors.push(format!(
                    "{at}.events: {e:?} is not an event ({})",
                    EVENTS.join(", ")
                ));
            }
        }
        if let (Some(url), Some(secret)) = (url, secret) {
            out.push(WebhookConfig {
                hook: Webhook {
                    url,
                    secret,
                    events: w.events.clone(),
                },
                secret_file: PathBuf::from(&w.secret_file),
            });
        }
    }
    out
}

/// `[[webhooks]]`, as TOML (the secret's file, never the secret).
pub(super) fn render(hooks: &[WebhookConfig], s: &mut String) {
    for w in hooks {
        let _ = writeln!(
            s,
            "\n[[webhooks]]\nurl = \"{}\"\nsecret_file = \"{}\"\nevents = {:?}",
            w.hook.url,
            w.secret_file.display(),
            w.hook.events
        );
    }
}
