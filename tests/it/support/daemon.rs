//! The daemon under test: the real `valet` binary, configured by a TOML file in a temp dir,
//! listening on 127.0.0.1:0. Its stderr (the logs) is captured for the canary checks.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use tonic::transport::Channel;
use valet::client::{AuthedChannel, Client};
use valet::pb::credentials_client::CredentialsClient;
use valet::pb::providers_client::ProvidersClient;

pub(crate) const ADMIN_KEY: &str = "test-admin-key-canary-1";
pub(crate) const AGENT_KEY: &str = "test-agent-key-canary-2";
pub(crate) const OTHER_AGENT_KEY: &str = "test-agent-key-canary-3";

#[derive(Clone)]
pub(crate) struct ValetOptions {
    pub flow_ttl_seconds: u64,
    pub log_level: String,
    /// Reuse this HTTP address (restarts keep the redirect URI registered at the provider).
    pub http_listen: Option<SocketAddr>,
    /// Replaces `store = "embedded"`; e.g. `store = "vault"`.
    pub store: String,
    /// Appended after everything else (sections such as `[vault]`).
    pub extra_toml: String,
    /// Top-level settings, before any table (e.g. `grpc_socket = "…"`).
    pub top_toml: String,
    /// `[flows] max_pending`; one caller may hold half of it.
    pub max_pending: usize,
    /// `[log] format`; empty leaves the default (JSON lines, stderr not being a terminal).
    pub log_format: &'static str,
    /// `[provider_http] allow_private_networks`: the peers listen on loopback.
    pub allow_private_networks: bool,
    /// The logs go to a file read only when asked for, as a log collector would take them,
    /// rather than through a pipe this process drains (the benchmark: a reader on its cores
    /// would be counted against every call that logs).
    pub logs_to_file: bool,
    /// A program the daemon runs under, with its arguments (the benchmark's instruction
    /// counts: `valgrind --tool=callgrind`); empty: none.
    pub wrapper: Vec<&'static str>,
}

impl Default for ValetOptions {
    fn default() -> Self {
        Self {
            flow_ttl_seconds: 600,
            log_level: "info".into(),
            http_listen: None,
            store: r#"store = "embedded""#.into(),
            extra_toml: String::new(),
            top_toml: String::new(),
            max_pending: 100_000,
            log_format: "text",
            allow_private_networks: true,
            logs_to_file: false,
            wrapper: Vec::new(),
        }
    }
}

pub(crate) struct Valet {
    child: Option<Child>,
    pub grpc_url: String,
    pub http_addr: SocketAddr,
    pub dir: Arc<tempfile::TempDir>,
    logs: Arc<Mutex<String>>,
    /// Where the logs go instead, with `logs_to_file`.
    log_file: Option<std::path::PathBuf>,
    opts: ValetOptions,
}

fn hash(key: &str) -> String {
    hex::encode(valet::secret::sha256(key.as_bytes()))
}

impl Valet {
    pub(crate) fn start(opts: ValetOptions) -> Self {
        Self::start_in(Arc::new(tempfile::tempdir().unwrap()), opts)
    }

    /// Starts the daemon with `dir/data` as its data directory (which may already hold a store).
    pub(crate) fn start_in(dir: Arc<tempfile::TempDir>, opts: ValetOptions) -> Self {
        let config = format!(
            r#"data_dir = "{data}"
{store}
{top}
grpc_listen = "127.0.0.1:0"
http_listen = "{http}"
shutdown_grace_seconds = 5

[log]
level = "{level}"
{format}

[flows]
ttl_seconds = {ttl}
max_pending = {max_pending}

[provider_http]
allow_private_networks = {private}

[[callers]]
name = "ops"
role = "admin"
key_sha256 = "{admin}"
# Tests and benchmarks measure the daemon, not the per-caller limiter.
rate_limit = 0

[[callers]]
name = "agent-a"
role = "agent"
key_sha256 = "{agent}"
agents = ["planner", "writer", "research-*"]
rate_limit = 0

[[callers]]
name = "agent-b"
role = "agent"
key_sha256 = "{other}"
agents = ["reviewer"]
rate_limit = 0

{extra}
"#,
            data = dir.path().join("data").display(),
            http = opts
                .http_listen
                .map_or_else(|| "127.0.0.1:0".to_owned(), |a| a.to_string()),
            store = opts.store,
            extra = opts.extra_toml,
            top = opts.top_toml,
            max_pending = opts.max_pending,
            level = opts.log_level,
            format = if opts.log_format.is_empty() {
                String::new()
            } else {
                format!("format = \"{}\"", opts.log_format)
            },
            ttl = opts.flow_ttl_seconds,
            private = opts.allow_private_networks,
            admin = hash(ADMIN_KEY),
            agent = hash(AGENT_KEY),
            other = hash(OTHER_AGENT_KEY),
        );
        let path = dir.path().join("valet.toml");
        std::fs::write(&path, config).unwrap();
        let log_file = opts.logs_to_file.then(|| dir.path().join("valet.log"));
        let mut command = match opts.wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(env!("CARGO_BIN_EXE_valet"));
                c
            }
            None => Command::new(env!("CARGO_BIN_EXE_valet")),
        };
        let mut child = command
            .arg("serve")
            .arg("--config")
            .arg(&path)
            .env_remove("VALET_CONFIG")
            .stdout(Stdio::piped())
            .stderr(log_file.as_ref().map_or_else(Stdio::piped, |p| {
                Stdio::from(std::fs::File::create(p).unwrap())
            }))
            .spawn()
            .unwrap();
        let logs = Arc::new(Mutex::new(String::new()));
        if let Some(mut stderr) = child.stderr.take() {
            let sink = logs.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 8192];
                while let Ok(n) = stderr.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    sink.lock()
                        .unwrap()
                        .push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            });
        }
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        let (grpc, http) = loop {
            line.clear();
            if stdout.read_line(&mut line).unwrap() == 0 {
                let status = child.wait().unwrap();
                let logs = read_logs(log_file.as_deref(), &logs);
                panic!("valet exited ({status}) before listening; logs:\n{logs}");
            }
            if let Some(rest) = line.trim().strip_prefix("valet listening ") {
                let mut parts = rest.split(' ');
                let grpc = parts
                    .next()
                    .unwrap()
                    .strip_prefix("grpc=")
                    .unwrap()
                    .to_owned();
                let http = parts
                    .next()
                    .unwrap()
                    .strip_prefix("http=")
                    .unwrap()
                    .to_owned();
                break (grpc, http);
            }
        };
        std::thread::spawn(move || for _ in stdout.lines() {});
        Self {
            child: Some(child),
            grpc_url: format!("http://{grpc}"),
            http_addr: http.parse().unwrap(),
            dir,
            logs,
            log_file,
            opts,
        }
    }

    /// The daemon's open file descriptors (Linux).
    #[allow(
        dead_code,
        reason = "used by the tests, not by benches/handout.rs, which shares this harness"
    )]
    pub(crate) fn open_fds(&self) -> usize {
        let pid = self.child.as_ref().expect("running").id();
        std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count)
    }

    /// The daemon's process id (signals; the benchmarks' CPU accounting).
    pub(crate) fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// The daemon's resident memory in KiB (Linux), for the benchmarks.
    #[allow(
        dead_code,
        reason = "used by benches/handout.rs, which shares this harness"
    )]
    pub(crate) fn rss_kib(&self) -> u64 {
        super::rss_kib(self.child.as_ref().expect("running").id())
    }

    pub(crate) fn callback_url(&self, provider_id: &str) -> String {
        format!("http://{}/oauth/callback/{provider_id}", self.http_addr)
    }

    /// The log once it holds `needle` (lines arrive from the daemon's log writer a moment after
    /// what logged them), or as it is after five seconds.
    pub(crate) async fn logs_once_they_contain(&self, needle: &str) -> String {
        for _ in 0..100 {
            let logs = self.logs();
            if logs.contains(needle) {
                return logs;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        self.logs()
    }

    pub(crate) fn logs(&self) -> String {
        read_logs(self.log_file.as_deref(), &self.logs)
    }

    /// The `/metrics` exposition.
    pub(crate) async fn metrics(&self) -> String {
        reqwest::get(format!("http://{}/metrics", self.http_addr))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// The value of one exposed sample, `series` as the exposition writes it (name and labels).
    pub(crate) async fn sample(&self, series: &str) -> Option<f64> {
        let text = self.metrics().await;
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
    }

    /// A client on its own connection.
    async fn client(&self, key: Option<&str>) -> Client {
        Client::connect(&self.grpc_url, key).await.unwrap()
    }

    pub(crate) async fn providers(&self) -> ProvidersClient<AuthedChannel> {
        self.providers_as(ADMIN_KEY).await
    }

    pub(crate) async fn providers_as(&self, key: &str) -> ProvidersClient<AuthedChannel> {
        self.client(Some(key)).await.providers()
    }

    pub(crate) async fn credentials(&self, key: &str) -> CredentialsClient<AuthedChannel> {
        self.client(Some(key)).await.credentials()
    }

    /// Credentials without an API key.
    pub(crate) async fn raw_credentials(&self) -> CredentialsClient<AuthedChannel> {
        self.client(None).await.credentials()
    }

    /// A bare channel, for services outside `valet.v1` (health).
    pub(crate) async fn raw_channel(&self) -> Channel {
        Channel::from_shared(self.grpc_url.clone())
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    /// Sends SIGTERM (the daemon starts shutting down) without waiting for the exit.
    pub(crate) fn terminate(&self) {
        let sent = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(sent.success(), "kill -TERM failed");
    }

    /// Sends SIGTERM and waits for the exit.
    pub(crate) fn stop(&mut self) -> ExitStatus {
        self.terminate();
        let mut child = self.child.take().expect("already stopped");
        child.wait().unwrap()
    }

    /// Kills the daemon with SIGKILL: no shutdown and no flush, as a crash or the OOM killer.
    pub(crate) fn kill(&mut self) {
        let mut child = self.child.take().expect("already stopped");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// Stops and starts again on the same data directory and HTTP address.
    pub(crate) fn restart(mut self) -> Self {
        let status = self.stop();
        assert!(status.success(), "valet exited with {status}");
        self.start_again()
    }

    /// Starts a stopped daemon again on the same data directory and HTTP address.
    pub(crate) fn start_again(self) -> Self {
        assert!(self.child.is_none(), "stop it first");
        let opts = ValetOptions {
            http_listen: Some(self.http_addr),
            ..self.opts.clone()
        };
        Self::start_in(self.dir.clone(), opts)
    }
}

impl Drop for Valet {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The daemon's logs so far: from its log file (`logs_to_file`), else as drained from its stderr.
fn read_logs(file: Option<&std::path::Path>, drained: &Mutex<String>) -> String {
    file.map_or_else(
        || drained.lock().unwrap().clone(),
        |p| std::fs::read_to_string(p).unwrap_or_default(),
    )
}
