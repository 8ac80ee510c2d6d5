//! The one typed gRPC client for a running daemon: one channel, the caller's API key sent as
//! `authorization: Bearer <key>` on every call, and the generated stubs on top. The CLI and the
//! integration tests both use it, so both reach the daemon the way an agent does.

use crate::pb::credentials_client::CredentialsClient;
use crate::pb::providers_client::ProvidersClient;
use anyhow::Context as _;
use std::fmt;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// A channel whose requests carry the caller's API key.
pub type AuthedChannel = InterceptedService<Channel, BearerKey>;

/// Adds `authorization: Bearer <key>` to every request. Without a key it adds nothing, so the
/// daemon answers `UNAUTHENTICATED` as it would to any caller that forgot one.
#[derive(Clone)]
pub struct BearerKey(Option<MetadataValue<Ascii>>);

impl Interceptor for BearerKey {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

impl fmt::Debug for BearerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let key = if self.0.is_some() {
            "(redacted)"
        } else {
            "(none)"
        };
        f.debug_tuple("BearerKey").field(&key).finish()
    }
}

/// The innermost cause of a connection failure (`Connection refused (os error 111)`): the layers
/// above it repeat one another's words.
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

/// A connection to a daemon with both services' stubs. Cloning is cheap: the stubs share the
/// channel, which multiplexes calls over one HTTP/2 connection.
#[derive(Clone)]
pub struct Client {
    server: String,
    key: BearerKey,
    providers: ProvidersClient<AuthedChannel>,
    credentials: CredentialsClient<AuthedChannel>,
}

/// The files a TLS connection uses: the CA that signed the daemon's certificate (none: the
/// system's trusted roots, for a daemon behind a publicly trusted certificate), and for mTLS the
/// client certificate and key.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub ca: Option<std::path::PathBuf>,
    pub identity: Option<(std::path::PathBuf, std::path::PathBuf)>,
}

impl Client {
    /// Connects to the daemon at `server` (e.g. `http://127.0.0.1:50051`). Every call sends `key`
    /// as a bearer token; `None` sends no key. Errors say what to check, for a person at a shell.
    pub async fn connect(server: &str, key: Option<&str>) -> anyhow::Result<Self> {
        anyhow::ensure!(
            server.contains("://") || server.starts_with("unix:"),
            "--server (VALET_SERVER) must be a URL with its scheme, like http://{server}"
        );
        let channel = Channel::from_shared(server.to_owned())
            .context("--server must be a URL like http://127.0.0.1:50051")?
            .connect()
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "cannot reach valet at {server} (is `valet serve` running?): {}",
                    root_cause(&e)
                )
            })?;
        Self::over(channel, server, key)
    }

    /// Like `connect`, over TLS to an `https://` server: trusting `tls.ca` (else the system's
    /// roots), and presenting a client certificate (mTLS) when one is given.
    pub async fn connect_tls(
        server: &str,
        key: Option<&str>,
        tls: &TlsFiles,
    ) -> anyhow::Result<Self> {
        use tonic::transport::{Certificate, ClientTlsConfig, Identity};
        let read = |p: &std::path::Path| {
            std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))
        };
        let mut config = match &tls.ca {
            Some(ca) => ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read(ca)?)),
            None => ClientTlsConfig::new().with_native_roots(),
        };
        if let Some((cert, key)) = &tls.identity {
            config = config.identity(Identity::from_pem(read(cert)?, read(key)?));
        }
        let channel = Channel::from_shared(server.to_owned())
            .context("--server must be a URL like https://valet.example:50051")?
            .tls_config(config)
            .context("the TLS settings are not usable")?
            .connect()
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "cannot reach valet at {server} over TLS (is it running with grpc_tls, and does --tls-ca (or the system's roots, without it) trust its certificate?): {}",
                    root_cause(&e)
                )
            })?;
        Self::over(channel, server, key)
    }

    fn over(channel: Channel, server: &str, key: Option<&str>) -> anyhow::Result<Self> {
        // An empty key (`VALET_KEY=`) is no key: the daemon then says one is missing.
        let key = match key.filter(|k| !k.is_empty()) {
            Some(k) => {
                // HTTP allows bytes beyond ASCII in a header (a pasted `…`); the daemon would
                // only say the header is malformed.
                let printable = k.bytes().all(|b| b.is_ascii_graphic());
                let mut v: MetadataValue<Ascii> = format!("Bearer {k}")
                    .parse()
                    .ok()
                    .filter(|_| printable)
                    .context(
                        "the API key holds characters a gRPC header cannot carry (a trailing newline, a pasted `…`? keys are printable ASCII)",
                    )?;
                // Keeps the key out of HTTP/2 header compression tables.
                v.set_sensitive(true);
                Some(v)
            }
            None => None,
        };
        let key = BearerKey(key);
        Ok(Self {
            server: server.to_owned(),
            providers: ProvidersClient::with_interceptor(channel.clone(), key.clone()),
            credentials: CredentialsClient::with_interceptor(channel, key.clone()),
            key,
        })
    }

    /// The `Providers` service (admin key).
    pub fn providers(&self) -> ProvidersClient<AuthedChannel> {
        self.providers.clone()
    }

    /// The `Credentials` service.
    pub fn credentials(&self) -> CredentialsClient<AuthedChannel> {
        self.credentials.clone()
    }
}

// Hand-written so the key can never reach a log line; the stubs add nothing worth showing.
impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("server", &self.server)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn debug_never_shows_the_key() {
        let channel = Channel::from_static("http://127.0.0.1:1").connect_lazy();
        let client = Client::over(channel, "http://127.0.0.1:1", Some("key-canary-7")).unwrap();
        let shown = format!("{client:?}");
        assert!(!shown.contains("key-canary-7"), "{shown}");
        assert!(shown.contains("(redacted)"), "{shown}");
    }
}
