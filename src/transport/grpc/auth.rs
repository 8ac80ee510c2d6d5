//! Caller authentication: `authorization: Bearer <api key>` metadata checked against configured
//! SHA-256 hashes in constant time, or on the Unix socket the peer's uid; then the caller's rate
//! limit. The interceptor attaches a `Caller` (role, agent binding, user assertion) to the
//! request; refusals are recorded in the audit trail.

use crate::domain::{AgentBinding, Caller, Presented, Role};
use crate::secret::SecretString;

/// The gRPC metadata carrying a user assertion (a JWT from the operator's identity provider).
pub const USER_ASSERTION: &str = "x-valet-user-assertion";
use crate::secret::sha256;
use std::sync::Arc;
use subtle::ConstantTimeEq;
use tonic::{Request, Status};

/// A configured API key: its hash, never the key.
#[derive(Debug, Clone)]
pub struct CallerKey {
    pub name: String,
    pub role: Role,
    pub key_sha256: [u8; 32],
    pub agents: AgentBinding,
    pub require_user_assertion: bool,
    /// Requests per second (bursts of twice that); 0: unlimited.
    pub rate_limit: u32,
    /// Watch streams open at once; 0: unlimited.
    pub max_watches: u32,
    /// On the Unix socket, the peer uid that is this caller.
    pub unix_uid: Option<u32>,
    /// The verified client-certificate SAN (URI or DNS) that is this caller.
    pub tls_identity: Option<String>,
    /// The caller's key being rotated out (`previous_key_sha256`): calls with it are counted,
    /// so the operator sees when no agent uses it any more.
    pub previous: bool,
}

impl CallerKey {
    /// The caller this entry is, identified by `credential`.
    fn caller(&self, credential: crate::domain::Credential) -> Caller {
        let mut caller =
            Caller::api_key(self.name.clone(), self.role).with_agents(self.agents.clone());
        caller.requires_user_assertion = self.require_user_assertion;
        caller.credential = credential;
        caller.max_watches = self.max_watches;
        caller
    }
}

/// The URI and DNS subject alternative names of a (verified) client certificate.
fn cert_names(der: &[u8]) -> Vec<String> {
    use x509_parser::extensions::GeneralName;
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return Vec::new();
    };
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::URI(u) => Some((*u).to_owned()),
            GeneralName::DNSName(d) => Some((*d).to_owned()),
            _ => None,
        })
        .collect()
}

/// A token bucket per caller.
#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: std::time::Instant,
}

#[derive(Debug, Clone)]
pub struct CallerAuth {
    keys: Arc<[CallerKey]>,
    buckets: Arc<std::sync::Mutex<std::collections::HashMap<String, Bucket>>>,
    /// Where refused calls are recorded (and calls with a previous key counted).
    audit: Option<Arc<crate::audit::Audit>>,
    /// Callers whose previous key was used since the start (each logged once).
    previous_used: Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
}

impl CallerAuth {
    pub fn new(keys: Vec<CallerKey>) -> Self {
        Self {
            keys: keys.into(),
            buckets: Arc::default(),
            audit: None,
            previous_used: Arc::default(),
        }
    }

    /// Records refused calls (unknown keys, rate limits) in `audit`.
    pub fn with_audit(self, audit: Arc<crate::audit::Audit>) -> Self {
        Self {
            audit: Some(audit),
            ..self
        }
    }

    fn refused(&self, caller: &str, status: Status, request_id: String) -> Status {
        let outcome = match status.code() {
            // Not RESOURCE_EXHAUSTED, which methods also answer (a pending-flow quota) after
            // they were counted as calls: the denied-call alert adds these refusals to the
            // calls, as it does UNAUTHENTICATED ones.
            tonic::Code::ResourceExhausted => "RATE_LIMITED",
            _ => "UNAUTHENTICATED",
        };
        // A request line as for every call (the method is not known before the caller is):
        // an agent deployed with a wrong key is found in the request log.
        tracing::info!(
            target: "valet::request",
            method = "-",
            caller,
            outcome,
            request_id = request_id.as_str(),
            "rpc"
        );
        if let Some(a) = &self.audit {
            a.record("Refused", caller, crate::audit::Subject::default(), outcome);
        }
        status
    }

    /// Takes one request from `name`'s bucket (`rate` per second, bursts of `2 × rate`).
    fn admit(&self, name: &str, rate: u32) -> bool {
        if rate == 0 {
            return true;
        }
        let (rate, burst) = (f64::from(rate), 2.0 * f64::from(rate));
        let now = std::time::Instant::now();
        let take = |b: &mut Bucket| {
            b.tokens = (b.tokens + now.duration_since(b.at).as_secs_f64() * rate).min(burst);
            b.at = now;
            let admitted = b.tokens >= 1.0;
            if admitted {
                b.tokens -= 1.0;
            }
            admitted
        };
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(b) = buckets.get_mut(name) {
            return take(b);
        }
        // A caller's first request: its name is copied once, not on every call.
        let mut b = Bucket {
            tokens: burst,
            at: now,
        };
        let admitted = take(&mut b);
        buckets.insert(name.to_owned(), b);
        admitted
    }

    /// The caller whose key hashes to the presented key's hash. Every configured key is compared,
    /// so the time taken does not depend on which one matched.
    pub fn identify(&self, presented: &str) -> Option<Caller> {
        self.identify_with_rate(presented).map(|(c, _)| c)
    }

    /// The caller a verified client certificate names (its URI or DNS SAN).
    fn identify_cert(&self, der: &[u8]) -> Option<(Caller, u32)> {
        let names = cert_names(der);
        let k = self.keys.iter().find(|k| {
            k.tls_identity
                .as_ref()
                .is_some_and(|id| names.iter().any(|n| n == id))
        })?;
        Some((
            k.caller(crate::domain::Credential::ClientCertificate),
            k.rate_limit,
        ))
    }

    /// The caller a Unix-socket peer running as `uid` is.
    fn identify_uid(&self, uid: u32) -> Option<(Caller, u32)> {
        let k = self.keys.iter().find(|k| k.unix_uid == Some(uid))?;
        Some((k.caller(crate::domain::Credential::UnixPeer), k.rate_limit))
    }

    fn identify_with_rate(&self, presented: &str) -> Option<(Caller, u32)> {
        let hash = sha256(presented.as_bytes());
        let mut found = None;
        for k in self.keys.iter() {
            if bool::from(k.key_sha256.ct_eq(&hash)) {
                found = Some(k);
            }
        }
        let k = found?;
        if k.previous {
            self.previous_key_used(&k.name);
        }
        Some((k.caller(crate::domain::Credential::ApiKey), k.rate_limit))
    }

    /// A call with `caller`'s previous key: counted (`valet_previous_key_calls_total`), and
    /// logged the first time since the start, so the operator knows when the old key can go.
    fn previous_key_used(&self, caller: &str) {
        if let Some(a) = &self.audit {
            a.metrics().previous_key_call(caller);
        }
        let mut used = self
            .previous_used
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !used.contains(caller) {
            used.insert(caller.to_owned());
            tracing::warn!(
                caller,
                "a call with this caller's previous key (previous_key_sha256): remove it from the config once valet_previous_key_calls_total stops growing"
            );
        }
    }
}

/// The client's `x-request-id` when it is 1-64 of `[A-Za-z0-9._-]` (anything else is input, not
/// a log field), else a new random one.
fn request_id<T>(req: &Request<T>) -> String {
    req.metadata()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            (1..=64).contains(&v.len())
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        })
        .map_or_else(crate::telemetry::new_request_id, str::to_owned)
}

impl tonic::service::Interceptor for CallerAuth {
    fn call(&mut self, req: Request<()>) -> Result<Request<()>, Status> {
        self.admit_request(req)
            .map_err(|(caller, status, request_id)| self.refused(&caller, status, request_id))
    }
}

impl CallerAuth {
    /// The request with its caller attached, or who was refused (`-`: unknown), why, and the
    /// request's id (for its request line).
    fn admit_request(&self, mut req: Request<()>) -> Result<Request<()>, (String, Status, String)> {
        let unknown = |s: Status| ("-".to_owned(), s, request_id(&req));
        let peer_uid = req
            .extensions()
            .get::<tonic::transport::server::UdsConnectInfo>()
            .and_then(|i| i.peer_cred)
            .map(|c| c.uid());
        let cert = req.peer_certs().and_then(|c| c.first().map(|c| c.to_vec()));
        let (mut caller, rate) = match (req.metadata().get("authorization"), peer_uid) {
            (None, _) if cert.is_some() => cert
                .as_deref()
                .and_then(|der| self.identify_cert(der))
                .ok_or_else(|| {
                    unknown(Status::unauthenticated(
                        "this client certificate names no caller's tls_identity: send an API key or configure one",
                    ))
                })?,
            (None, Some(uid)) => self.identify_uid(uid).ok_or_else(|| {
                unknown(Status::unauthenticated(
                    "this socket peer's uid is no caller's unix_uid: send an API key or configure one",
                ))
            })?,
            (None, None) => {
                return Err(unknown(Status::unauthenticated(
                    "missing API key: send metadata `authorization: Bearer <key>`",
                )));
            }
            (Some(header), _) => {
                let key = header
                    .to_str()
                    .ok()
                    .and_then(|v| v.strip_prefix("Bearer "))
                    .ok_or_else(|| {
                        unknown(Status::unauthenticated(
                            "malformed authorization metadata: expected `Bearer <key>`",
                        ))
                    })?;
                self.identify_with_rate(key.trim())
                    .ok_or_else(|| unknown(Status::unauthenticated("unknown API key")))?
            }
        };
        if !self.admit(&caller.name, rate) {
            // The bucket holds a request again after 1/rate seconds.
            let after = std::time::Duration::from_secs_f64(1.0 / f64::from(rate.max(1)));
            let status = super::status::with_retry(
                &crate::service::Error::Exhausted(format!(
                    "this caller's rate limit ({rate} requests per second) is exceeded; retry shortly"
                )),
                Some(after),
            );
            return Err((caller.name, status, request_id(&req)));
        }
        caller.user_assertion = req
            .metadata()
            .get(USER_ASSERTION)
            .and_then(|v| v.to_str().ok())
            .map(|v| Presented(SecretString::from(v.trim().to_owned())));
        caller.request_id = request_id(&req);
        req.extensions_mut().insert(caller);
        Ok(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifies_by_hash() {
        let auth = CallerAuth::new(vec![CallerKey {
            name: "ops".into(),
            role: Role::Admin,
            key_sha256: sha256(b"k1"),
            agents: AgentBinding::Any,
            require_user_assertion: false,
            rate_limit: 2,
            max_watches: 3,
            unix_uid: None,
            tls_identity: None,
            previous: false,
        }]);
        assert_eq!(auth.identify("k1").unwrap().name, "ops");
        assert_eq!(auth.identify("k1").unwrap().max_watches, 3);
        assert!(auth.identify("k2").is_none());
        assert!(auth.identify("").is_none());
    }

    #[test]
    fn a_caller_beyond_its_rate_is_refused_until_its_bucket_refills() {
        let auth = CallerAuth::new(Vec::new());
        let admitted = (0..10).filter(|_| auth.admit("ops", 2)).count();
        assert_eq!(admitted, 4, "a burst of twice the rate");
        assert!(auth.admit("other", 2), "buckets are per caller");
        assert!(auth.admit("anyone", 0), "0 is unlimited");
        std::thread::sleep(std::time::Duration::from_millis(600));
        assert!(auth.admit("ops", 2), "refilled");
    }
}
