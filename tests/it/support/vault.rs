//! A Vault API double for KV v2 (no Vault or OpenBao binary can be installed here). Response
//! shapes follow Vault's API documentation: the `request_id`/`lease_id` envelope, KV v2 `data` +
//! `metadata` with versions, the 400 check-and-set error, 403 permission denied, 503 sealed,
//! `sys/health`, token lookup/renew and AppRole login. Knobs let tests seal it, expire tokens and
//! fail writes.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};

#[derive(Default)]
struct Inner {
    /// mount-relative path → versions (index + 1 = version); `None` marks nothing.
    secrets: BTreeMap<String, Vec<Value>>,
    tokens: HashSet<String>,
    approle: Option<(String, String)>,
    sealed: bool,
    fail_writes: u32,
    skip_writes: u32,
    issued: u32,
    writes: u32,
    renewals: u32,
    refuse_renewals: bool,
    ttl: u64,
    kubernetes: Option<(String, String)>,
}

#[derive(Clone)]
pub(crate) struct VaultDouble {
    inner: Arc<Mutex<Inner>>,
    pub address: String,
    pub mount: String,
}

pub(crate) const ROOT_TOKEN: &str = "double-root-token-canary";

fn envelope(data: Value) -> Value {
    json!({
        "request_id": "6f1b4c5e-0000-4000-8000-000000000000",
        "lease_id": "",
        "renewable": false,
        "lease_duration": 0,
        "data": data,
        "wrap_info": null,
        "warnings": null,
        "auth": null
    })
}

fn errors(status: StatusCode, msg: &str) -> Response {
    (status, axum::Json(json!({ "errors": [msg] }))).into_response()
}

fn auth_block(token: &str) -> Value {
    json!({
        "request_id": "6f1b4c5e-0000-4000-8000-000000000001",
        "lease_id": "", "renewable": false, "lease_duration": 0,
        "data": null, "wrap_info": null, "warnings": null,
        "auth": {
            "client_token": token, "accessor": "acc", "policies": ["valet"],
            "token_policies": ["valet"], "metadata": {}, "lease_duration": 3600,
            "renewable": true, "entity_id": "", "token_type": "service", "orphan": true
        }
    })
}

impl VaultDouble {
    pub(crate) async fn start(mount: &str) -> Self {
        Self::start_on(mount, "127.0.0.1:0").await
    }

    pub(crate) async fn start_on(mount: &str, addr: &str) -> Self {
        let mut inner = Inner {
            ttl: 3600,
            ..Inner::default()
        };
        inner.tokens.insert(ROOT_TOKEN.into());
        let double = Self {
            inner: Arc::new(Mutex::new(inner)),
            address: String::new(),
            mount: mount.into(),
        };
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let address = format!("http://{}", listener.local_addr().unwrap());
        let app = Router::new()
            .route("/v1/{*path}", axum::routing::any(handle))
            .with_state(double.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { address, ..double }
    }

    pub(crate) fn seal(&self, sealed: bool) {
        self.inner.lock().unwrap().sealed = sealed;
    }

    /// Every issued token stops working (as when its TTL ran out).
    pub(crate) fn expire_tokens(&self) {
        self.inner.lock().unwrap().tokens.clear();
    }

    pub(crate) fn enable_approle(&self, role_id: &str, secret_id: &str) {
        self.inner.lock().unwrap().approle = Some((role_id.into(), secret_id.into()));
    }

    /// After `skip` more successful writes, the next `n` writes answer 503.
    pub(crate) fn fail_writes(&self, skip: u32, n: u32) {
        let mut s = self.inner.lock().unwrap();
        s.skip_writes = skip;
        s.fail_writes = n;
    }

    /// Accepts Kubernetes logins for `role` with the service-account `jwt`.
    pub(crate) fn enable_kubernetes(&self, role: &str, jwt: &str) {
        self.inner.lock().unwrap().kubernetes = Some((role.into(), jwt.into()));
    }

    /// The TTL token lookups report.
    pub(crate) fn set_ttl(&self, seconds: u64) {
        self.inner.lock().unwrap().ttl = seconds;
    }

    /// Renewals answer 403 (as for a token past its max TTL).
    pub(crate) fn refuse_renewals(&self, on: bool) {
        self.inner.lock().unwrap().refuse_renewals = on;
    }

    pub(crate) fn renewals(&self) -> u32 {
        self.inner.lock().unwrap().renewals
    }

    pub(crate) fn logins(&self) -> u32 {
        self.inner.lock().unwrap().issued
    }

    pub(crate) fn writes(&self) -> u32 {
        self.inner.lock().unwrap().writes
    }

    /// Every stored value, for checks that nothing is kept in clear where it should not be.
    pub(crate) fn dump(&self) -> String {
        serde_json::to_string(&self.inner.lock().unwrap().secrets).unwrap()
    }
}

async fn handle(
    State(d): State<VaultDouble>,
    method: Method,
    Path(path): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut s = d.inner.lock().unwrap();
    if path == "sys/health" {
        return if s.sealed {
            (
                StatusCode::SERVICE_UNAVAILABLE,
                axum::Json(json!({"initialized": true, "sealed": true, "standby": false})),
            )
                .into_response()
        } else {
            axum::Json(json!({"initialized": true, "sealed": false, "standby": false, "version": "1.15.0-double"})).into_response()
        };
    }
    if s.sealed {
        return errors(StatusCode::SERVICE_UNAVAILABLE, "Vault is sealed");
    }
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let login_ok = match path.as_str() {
        "auth/approle/login" => Some(s.approle.as_ref().is_some_and(|(r, sec)| {
            body["role_id"] == r.as_str() && body["secret_id"] == sec.as_str()
        })),
        "auth/kubernetes/login" => Some(s.kubernetes.as_ref().is_some_and(|(role, jwt)| {
            body["role"] == role.as_str() && body["jwt"] == jwt.as_str()
        })),
        _ => None,
    };
    if let Some(ok) = login_ok {
        if !ok {
            return errors(StatusCode::BAD_REQUEST, "invalid role or secret ID");
        }
        s.issued += 1;
        let token = format!("double-login-token-{}", s.issued);
        s.tokens.insert(token.clone());
        return axum::Json(auth_block(&token)).into_response();
    }
    let token = headers
        .get("x-vault-token")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !s.tokens.contains(token) {
        return errors(StatusCode::FORBIDDEN, "permission denied");
    }
    match (method.as_str(), path.as_str()) {
        ("GET", "auth/token/lookup-self") => {
            return axum::Json(envelope(json!({
                "accessor": "acc", "creation_time": 0, "creation_ttl": 3600, "display_name": "double",
                "entity_id": "", "expire_time": null, "explicit_max_ttl": 0, "id": token,
                "identity_policies": null, "issue_time": null, "meta": null, "num_uses": 0,
                "orphan": true, "path": "auth/token/create", "policies": ["valet"],
                "renewable": true, "role": null, "ttl": s.ttl
            })))
            .into_response();
        }
        ("POST" | "PUT", "auth/token/renew-self") => {
            if s.refuse_renewals {
                return errors(StatusCode::FORBIDDEN, "permission denied");
            }
            s.renewals += 1;
            return axum::Json(auth_block(token)).into_response();
        }
        _ => {}
    }
    let data_prefix = format!("{}/data/", d.mount);
    let meta_prefix = format!("{}/metadata/", d.mount);
    let list = method.as_str() == "LIST" || query.as_deref() == Some("list=true");
    if let Some(key) = path.strip_prefix(&data_prefix) {
        match method.as_str() {
            "GET" => match s
                .secrets
                .get(key)
                .and_then(|v| v.last().map(|d| (d.clone(), v.len())))
            {
                None => errors(StatusCode::NOT_FOUND, ""),
                Some((data, version)) => axum::Json(envelope(json!({
                    "data": data,
                    "metadata": {"created_time": "2026-01-01T00:00:00Z", "custom_metadata": null,
                                 "deletion_time": "", "destroyed": false, "version": version}
                })))
                .into_response(),
            },
            "POST" | "PUT" => {
                if s.skip_writes > 0 {
                    s.skip_writes -= 1;
                } else if s.fail_writes > 0 {
                    s.fail_writes -= 1;
                    return errors(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "storage backend unavailable",
                    );
                }
                let current = s.secrets.get(key).map_or(0, Vec::len) as u64;
                if let Some(cas) = body["options"]["cas"].as_u64()
                    && cas != current
                {
                    return errors(
                        StatusCode::BAD_REQUEST,
                        "check-and-set parameter did not match the current version",
                    );
                }
                s.writes += 1;
                s.secrets
                    .entry(key.to_owned())
                    .or_default()
                    .push(body["data"].clone());
                axum::Json(envelope(json!({
                    "created_time": "2026-01-01T00:00:00Z", "custom_metadata": null,
                    "deletion_time": "", "destroyed": false, "version": current + 1
                })))
                .into_response()
            }
            _ => errors(StatusCode::METHOD_NOT_ALLOWED, "unsupported"),
        }
    } else if let Some(key) = path
        .strip_prefix(&meta_prefix)
        .or_else(|| (path == format!("{}/metadata", d.mount)).then_some(""))
    {
        if list {
            let dir = if key.is_empty() || key.ends_with('/') {
                key.to_owned()
            } else {
                format!("{key}/")
            };
            let mut keys: Vec<String> = s
                .secrets
                .keys()
                .filter_map(|k| k.strip_prefix(&dir))
                .map(|rest| match rest.find('/') {
                    Some(i) => rest[..=i].to_owned(),
                    None => rest.to_owned(),
                })
                .collect();
            keys.dedup();
            if keys.is_empty() {
                return errors(StatusCode::NOT_FOUND, "");
            }
            return axum::Json(envelope(json!({ "keys": keys }))).into_response();
        }
        if method == Method::DELETE {
            s.secrets.remove(key);
            return StatusCode::NO_CONTENT.into_response();
        }
        errors(StatusCode::METHOD_NOT_ALLOWED, "unsupported")
    } else {
        errors(StatusCode::NOT_FOUND, "no handler for route")
    }
}

/// Daemon options for a Vault store at `address` (KV `kv`) with the `[vault.auth]` body `auth`.
pub(crate) fn options(address: &str, kv: u8, auth: &str) -> super::ValetOptions {
    super::ValetOptions {
        store: r#"store = "vault""#.into(),
        extra_toml: format!(
            "[vault]\naddress = \"{address}\"\nkv_version = {kv}\nmount = \"secret\"\nprefix = \"valet/\"\ntimeout_seconds = 5\n\n[vault.auth]\n{auth}\n"
        ),
        ..Default::default()
    }
}

/// A daemon on the double (KV v2, root token) holding alice's grant at the OpenID provider, and
/// its options, to start more replicas like it.
pub(crate) async fn replica_with_grant(d: &VaultDouble) -> (super::Fixture, super::ValetOptions) {
    let opts = options(&d.address, 2, &token_auth(ROOT_TOKEN));
    let f = super::Fixture::with(opts.clone()).await;
    f.oidc_provider("idp", "basic-client").await;
    f.authorize(
        super::daemon::AGENT_KEY,
        super::Fixture::request("idp", "alice", ""),
    )
    .await;
    (f, opts)
}

pub(crate) fn token_auth(token: &str) -> String {
    format!("method = \"token\"\ntoken = \"{token}\"")
}
