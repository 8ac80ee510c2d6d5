//! tracing set-up: text or JSON lines on stderr (stdout carries the `valet listening` line and the
//! one-time admin key, which scripts read).

use crate::config::LogFormat;
use tracing_subscriber::EnvFilter;

pub fn init(format: LogFormat, level: &str) {
    let filter = EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(true);
    // Err: a subscriber is already installed (tests embedding the app); keep that one.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        // Event fields at the top level of each line, where log pipelines look for them.
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
