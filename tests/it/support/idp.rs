//! The OpenID provider peer: panva/oidc-provider under node, from `tests/peers/oidc`.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

pub(crate) struct Idp {
    child: Child,
    pub issuer: String,
    http: reqwest::Client,
}

pub(crate) const POST_CLIENT: &str = "post-client";

pub(crate) fn secret_of(client: &str) -> String {
    format!("{client}-secret-canary-0123456789")
}

fn peer_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/peers/oidc")
}

impl Idp {
    /// Starts a provider whose clients accept `redirect_uris`.
    pub(crate) fn start(redirect_uris: &[String]) -> Self {
        let dir = peer_dir();
        assert!(
            dir.join("node_modules/oidc-provider").exists(),
            "the OpenID provider peer is not installed: run `npm ci --prefix tests/peers/oidc` \
             (./tests/run.sh does this) with Node.js >= 20"
        );
        let opts = serde_json::json!({ "redirect_uris": redirect_uris }).to_string();
        let mut child = Command::new("node")
            .arg("provider.mjs")
            .arg(opts)
            .current_dir(&dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot run `node`: install Node.js >= 20 to run the integration tests");
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        let mut out = BufReader::new(stdout);
        out.read_line(&mut line).unwrap();
        // Keep draining: a closed pipe would kill node with EPIPE on its next console line.
        std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
        let issuer = line
            .trim()
            .strip_prefix("oidc-provider listening ")
            .unwrap_or_else(|| panic!("unexpected provider output: {line:?}"))
            .to_owned();
        Self {
            child,
            issuer,
            http: reqwest::Client::new(),
        }
    }

    pub(crate) async fn stats(&self) -> serde_json::Value {
        self.http
            .get(format!("{}/__test/stats", self.issuer))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Successful refresh-token grants so far.
    pub(crate) async fn refreshes(&self) -> u64 {
        self.stats().await["grants"]["refresh_token"]
            .as_u64()
            .unwrap_or(0)
    }

    /// Asserts the provider never saw a refresh token presented twice (reuse revokes the grant).
    pub(crate) async fn assert_no_refresh_token_reuse(&self) {
        let stats = self.stats().await;
        assert!(
            stats["grants"]["refresh_token:invalid_grant"].is_null(),
            "a refresh token was presented twice: {stats}"
        );
    }

    pub(crate) async fn token_requests(&self) -> u64 {
        self.stats().await["token_requests"].as_u64().unwrap()
    }

    /// Makes the token endpoint answer `status` (0 restores it).
    pub(crate) async fn fail_token(&self, status: u16) {
        self.control(&format!("fail-token?status={status}")).await;
    }

    /// The token endpoint answers `status` with `Retry-After: retry_after` until reset.
    pub(crate) async fn fail_token_retry_after(&self, status: u16, retry_after: u32) {
        self.control(&format!(
            "fail-token?status={status}&retry_after={retry_after}"
        ))
        .await;
    }

    async fn control(&self, what: &str) {
        let r = self
            .http
            .get(format!("{}/__test/{what}", self.issuer))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{what}: {}", r.status());
    }

    /// The URL of the peer's MCP server double `name` (`mcp`, `mcp2`, or a refusal double such as
    /// `mcp-nopkce`; see `tests/peers/oidc/provider.mjs`).
    pub(crate) fn mcp_url(&self, name: &str) -> String {
        format!("{}/{name}", self.issuer)
    }

    /// Calls the MCP server double `name` with `token` as the bearer.
    pub(crate) async fn call_mcp(&self, name: &str, token: &str) -> reqwest::Response {
        self.http
            .post(self.mcp_url(name))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    /// Sets the MCP doubles' behaviour (`require_scope=…`, `no_header=1`, `reset=1`).
    pub(crate) async fn mcp_settings(&self, query: &str) {
        self.control(&format!("mcp?{query}")).await;
    }

    /// Makes the token endpoint answer `ms` milliseconds late.
    pub(crate) async fn delay_token(&self, ms: u64) {
        self.control(&format!("delay-token?ms={ms}")).await;
    }

    pub(crate) async fn tamper_nonce(&self, on: bool) {
        self.control(&format!("tamper-nonce?on={}", u8::from(on)))
            .await;
    }

    /// Userinfo with the access token: proves the provider honours it.
    pub(crate) async fn userinfo(&self, access_token: &str) -> reqwest::Response {
        self.http
            .get(format!("{}/me", self.issuer))
            .bearer_auth(access_token)
            .send()
            .await
            .unwrap()
    }

    /// RFC 7662 introspection as `client`.
    pub(crate) async fn introspect(&self, client: &str, token: &str) -> serde_json::Value {
        self.http
            .post(format!("{}/token/introspection", self.issuer))
            .basic_auth(client, Some(secret_of(client)))
            .form(&[("token", token)])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

impl Drop for Idp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
