//! Provider profiles: data files (`profiles/*.toml`) that describe how one real OAuth provider
//! deviates from the RFCs, so an operator can create a provider by naming a profile and giving
//! only a client id and secret (plus variables such as a Microsoft tenant).
//!
//! This module owns the schema, its validation and the catalogue (the profiles built into the
//! binary plus an operator's directory). It does no network I/O; the token endpoint adapters read
//! the settings.

use crate::domain::TokenAuthMethod;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use url::Url;

/// How a list of scopes is joined into, or split out of, one string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Separator {
    Space,
    Comma,
    /// Splits on commas and whitespace alike. Only meaningful for reading a response: providers
    /// that document commas sometimes answer with spaces, and the reverse.
    #[default]
    Any,
}

impl Separator {
    /// Joins scopes for an authorization request. `Any` joins with a space, the RFC's separator.
    pub fn join<S: AsRef<str>>(self, scopes: &[S]) -> String {
        let sep = match self {
            Self::Comma => ",",
            Self::Space | Self::Any => " ",
        };
        scopes
            .iter()
            .map(AsRef::as_ref)
            .collect::<Vec<_>>()
            .join(sep)
    }

    /// Splits a `scope` string from a token response, dropping empty entries.
    pub fn split(self, scopes: &str) -> Vec<&str> {
        let parts: Vec<&str> = match self {
            Self::Space => scopes.split_whitespace().collect(),
            Self::Comma => scopes.split(',').map(str::trim).collect(),
            Self::Any => scopes
                .split(|c: char| c == ',' || c.is_whitespace())
                .collect(),
        };
        parts.into_iter().filter(|s| !s.is_empty()).collect()
    }
}

/// How the token request body is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenRequestFormat {
    /// `application/x-www-form-urlencoded`, as RFC 6749 says.
    #[default]
    Form,
    /// A JSON object with the same parameters (Notion, Atlassian).
    Json,
}

/// Whether endpoints are listed in the profile or discovered from an OpenID issuer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProfileKind {
    OAuth2,
    Oidc,
}

/// One validated provider profile. Fields mirror the TOML schema of `profiles/*.toml`, with the
/// defaults applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Profile {
    pub name: String,
    pub title: String,
    pub docs: String,
    pub kind: ProfileKind,
    /// Present for `OAuth2`; may contain `{variables}` until [`Profile::instantiate`].
    pub auth_url: Option<String>,
    pub token_url: Option<String>,
    /// Present for `Oidc`.
    pub issuer: Option<String>,
    /// An RFC 7009 endpoint; absent where the provider revokes some other way.
    pub revocation_url: Option<String>,
    pub token_auth_method: TokenAuthMethod,
    pub default_scopes: Vec<String>,
    /// The authorization parameter that carries scopes (`user_scope` for Slack user tokens).
    pub scope_param: String,
    /// How scopes are joined in the authorization request (`Space` or `Comma`, never `Any`).
    pub scope_separator: Separator,
    /// How the token response's `scope` is split.
    pub granted_scope_separator: Separator,
    pub token_request: TokenRequestFormat,
    /// Object in the token response holding `access_token` and friends; `None`: the top level.
    /// The answer to a refresh that has no such object is read at its top (Slack).
    pub token_path: Option<String>,
    /// A boolean in the response that is `false` on errors sent with HTTP 200.
    pub ok_field: Option<String>,
    /// Dotted paths, from the top of the response, of non-secret fields kept with the grant.
    pub metadata: Vec<String>,
    /// Lifetime of access tokens whose response has no `expires_in`; 0: they do not expire.
    pub token_lifetime_seconds: u32,
    /// The provider revokes refresh tokens left unused: grants are refreshed in the background
    /// after this long (the provider's `keep_alive_seconds` unless set); 0: no keep-alive.
    pub keep_alive_seconds: u32,
    /// Variables the operator must supply; empty after [`Profile::instantiate`].
    pub variables: Vec<String>,
    pub extra_auth_params: BTreeMap<String, String>,
    /// Granted scope → the scope asked for, where a provider answers with another name (Google:
    /// `https://www.googleapis.com/auth/userinfo.email` for `email`).
    pub scope_aliases: BTreeMap<String, String>,
    /// Scopes the provider grants without listing them in a token response's `scope`, counted
    /// as granted when a refresh token comes with the answer (Entra: `offline_access`).
    pub unlisted_scopes: Vec<String>,
    /// Callback query parameters kept with the grant (Intuit: `realmId`).
    pub callback_metadata: Vec<String>,
    /// Error codes that, answering a refresh, mean the refresh token is dead, besides
    /// `invalid_grant` (X: `invalid_request`).
    pub invalid_grant_errors: Vec<String>,
    /// Parameters added to the authorization-code exchange (Shopify: `expiring = "1"`).
    pub extra_exchange_params: BTreeMap<String, String>,
    /// The header access tokens go in, as they are, instead of `Authorization: Bearer`
    /// (Shopify: `X-Shopify-Access-Token`).
    pub token_header: Option<String>,
}

/// A profile that failed to load, naming the profile, the offending field and (when it came from
/// a file) the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("profile {profile:?}{}: {field}: {reason}", file_suffix(.file))]
pub struct ProfileError {
    /// The profile's name as the file stem gives it (`*` for a directory that cannot be read).
    pub profile: String,
    /// A schema field; `file` for I/O errors, `toml` for a syntax error whose key is unclear.
    pub field: String,
    pub reason: String,
    pub file: Option<PathBuf>,
}

/// Every profile in a directory that did not load, so one run of check-config lists them all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
pub struct ProfileErrors(pub Vec<ProfileError>);

impl From<ProfileError> for ProfileErrors {
    fn from(e: ProfileError) -> Self {
        Self(vec![e])
    }
}

fn file_suffix(file: &Option<PathBuf>) -> String {
    match file {
        Some(path) => format!(" ({})", path.display()),
        None => String::new(),
    }
}

impl ProfileError {
    fn new(profile: &str, field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            profile: profile.to_owned(),
            field: field.into(),
            reason: reason.into(),
            file: None,
        }
    }

    fn in_file(mut self, path: &Path) -> Self {
        self.file = Some(path.to_path_buf());
        self
    }
}

/// Authorization parameters the flow sets itself; a profile may not override them.
const RESERVED_AUTH_PARAMS: &[&str] = &[
    "response_type",
    "client_id",
    "redirect_uri",
    "scope",
    "state",
    "nonce",
    "code_challenge",
    "code_challenge_method",
];

/// What an authorization-code exchange (and its client authentication) sends itself.
const RESERVED_EXCHANGE_PARAMS: &[&str] = &[
    "grant_type",
    "code",
    "redirect_uri",
    "code_verifier",
    "client_id",
    "client_secret",
    "client_assertion",
    "client_assertion_type",
    "resource",
    "scope",
];

/// Stand-in for every variable while validating URL templates: a valid variable value that
/// cannot change the shape of the URL.
const DUMMY_VARIABLE_VALUE: &str = "example";

/// Operator files larger than this are refused before reading; a profile is a few hundred bytes.
const MAX_FILE_BYTES: u64 = 64 * 1024;

/// The serde mirror of a profile file. Every field is optional here so that a missing required
/// field is reported by validation, naming the field, rather than by serde.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProfile {
    name: Option<String>,
    title: Option<String>,
    docs: Option<String>,
    kind: Option<ProfileKind>,
    auth_url: Option<String>,
    token_url: Option<String>,
    issuer: Option<String>,
    revocation_url: Option<String>,
    #[serde(default)]
    token_auth_method: TokenAuthMethod,
    #[serde(default)]
    default_scopes: Vec<String>,
    scope_param: Option<String>,
    scope_separator: Option<Separator>,
    granted_scope_separator: Option<Separator>,
    #[serde(default)]
    token_request: TokenRequestFormat,
    token_path: Option<String>,
    ok_field: Option<String>,
    #[serde(default)]
    metadata: Vec<String>,
    #[serde(default)]
    token_lifetime_seconds: u32,
    #[serde(default)]
    keep_alive_seconds: u32,
    #[serde(default)]
    variables: Vec<String>,
    #[serde(default)]
    extra_auth_params: BTreeMap<String, String>,
    #[serde(default)]
    scope_aliases: BTreeMap<String, String>,
    #[serde(default)]
    unlisted_scopes: Vec<String>,
    #[serde(default)]
    callback_metadata: Vec<String>,
    #[serde(default)]
    invalid_grant_errors: Vec<String>,
    #[serde(default)]
    extra_exchange_params: BTreeMap<String, String>,
    token_header: Option<String>,
}

/// Parses and validates one profile. `name_hint` is the file stem, which the `name` field must
/// equal; errors carry no file (the catalogue adds it).
pub fn parse(name_hint: &str, source: &str) -> Result<Profile, ProfileError> {
    let raw: RawProfile = toml::from_str(source).map_err(|e| {
        let line = e
            .span()
            .map(|span| format!(" (line {})", line_of(source, span.start)))
            .unwrap_or_default();
        ProfileError::new(
            name_hint,
            field_of_toml_error(source, &e),
            format!("{}{line}", e.message()),
        )
    })?;
    validate(name_hint, raw)
}

fn validate(hint: &str, raw: RawProfile) -> Result<Profile, ProfileError> {
    let fail = |field: &str, reason: String| ProfileError::new(hint, field, reason);

    let name = raw.name.ok_or_else(|| fail("name", "is required".into()))?;
    if !is_profile_name(&name) {
        return Err(fail("name", "must be 1-64 characters of [a-z0-9_-]".into()));
    }
    if name != hint {
        return Err(fail(
            "name",
            format!("{name:?} must equal the file stem {hint:?}"),
        ));
    }

    let title = raw
        .title
        .ok_or_else(|| fail("title", "is required".into()))?;
    if title.trim().is_empty() || title.chars().count() > 200 || title.chars().any(char::is_control)
    {
        return Err(fail("title", "must be 1-200 printable characters".into()));
    }

    let docs = raw.docs.ok_or_else(|| fail("docs", "is required".into()))?;
    check_https(&docs).map_err(|r| fail("docs", r))?;

    let kind = raw
        .kind
        .ok_or_else(|| fail("kind", "is required (\"oauth2\" or \"oidc\")".into()))?;

    let mut variables = Vec::new();
    for v in raw.variables {
        if !is_variable_name(&v) {
            return Err(fail(
                "variables",
                format!("{v:?} must be 1-32 characters of [a-z0-9_], starting with a letter"),
            ));
        }
        if variables.contains(&v) {
            return Err(fail("variables", format!("{v:?} is declared twice")));
        }
        variables.push(v);
    }

    match kind {
        ProfileKind::OAuth2 => {
            for (field, value) in [("auth_url", &raw.auth_url), ("token_url", &raw.token_url)] {
                if value.is_none() {
                    return Err(fail(field, "is required for kind \"oauth2\"".into()));
                }
            }
            if raw.issuer.is_some() {
                return Err(fail(
                    "issuer",
                    "must be absent for kind \"oauth2\" (use kind \"oidc\")".into(),
                ));
            }
        }
        ProfileKind::Oidc => {
            if raw.issuer.is_none() {
                return Err(fail("issuer", "is required for kind \"oidc\"".into()));
            }
            for (field, value) in [("auth_url", &raw.auth_url), ("token_url", &raw.token_url)] {
                if value.is_some() {
                    return Err(fail(
                        field,
                        "must be absent for kind \"oidc\" (endpoints come from the issuer's \
                         discovery document)"
                            .into(),
                    ));
                }
            }
        }
    }

    let mut used = BTreeSet::new();
    for (field, value) in [
        ("auth_url", &raw.auth_url),
        ("token_url", &raw.token_url),
        ("issuer", &raw.issuer),
        ("revocation_url", &raw.revocation_url),
    ] {
        let Some(template) = value else { continue };
        let names = placeholders(template).map_err(|r| fail(field, r))?;
        for n in names {
            if !variables.iter().any(|v| v == n) {
                return Err(fail(
                    field,
                    format!("uses {{{n}}}, which is not declared in `variables`"),
                ));
            }
            used.insert(n.to_owned());
        }
        let probe = substitute(template, &|_| Some(DUMMY_VARIABLE_VALUE));
        check_https(&probe).map_err(|r| fail(field, r))?;
    }
    if let Some(unused) = variables.iter().find(|v| !used.contains(*v)) {
        return Err(fail(
            "variables",
            format!("{unused:?} is declared but no URL uses {{{unused}}}"),
        ));
    }

    let scope_param = raw.scope_param.unwrap_or_else(|| "scope".to_owned());
    if !is_param_name(&scope_param) {
        return Err(fail(
            "scope_param",
            "must be 1-64 characters of [A-Za-z0-9_]".into(),
        ));
    }
    if scope_param != "scope" && is_reserved_param(&scope_param) {
        return Err(fail(
            "scope_param",
            format!("{scope_param:?} is set by the flow itself"),
        ));
    }

    let scope_separator = raw.scope_separator.unwrap_or(Separator::Space);
    if scope_separator == Separator::Any {
        return Err(fail(
            "scope_separator",
            "must be \"space\" or \"comma\" (\"any\" only applies to reading a response)".into(),
        ));
    }
    let granted_scope_separator = raw.granted_scope_separator.unwrap_or(Separator::Any);

    for s in &raw.default_scopes {
        let bad_char = |c: char| {
            c.is_whitespace() || c.is_control() || (scope_separator == Separator::Comma && c == ',')
        };
        if s.is_empty() || s.chars().any(bad_char) {
            return Err(fail(
                "default_scopes",
                format!("{s:?} must be non-empty and contain no whitespace or separator"),
            ));
        }
    }

    for (field, value) in [("token_path", &raw.token_path), ("ok_field", &raw.ok_field)] {
        if let Some(path) = value {
            check_path(path).map_err(|r| fail(field, r))?;
        }
    }

    for s in &raw.unlisted_scopes {
        if crate::domain::Scopes::parse("unlisted_scopes", &[s]).is_err() {
            return Err(fail(
                "unlisted_scopes",
                format!("{s:?} is not a scope (visible ASCII, no spaces)"),
            ));
        }
    }

    for m in &raw.metadata {
        check_path(m).map_err(|r| fail("metadata", r))?;
        // Metadata is handed to agents; a secret named here would leak past the vault.
        if let Some(seg) = m.split('.').find(|seg| names_secret(seg)) {
            return Err(fail(
                "metadata",
                format!("{m:?} names a secret ({seg:?}); only non-secret fields may be kept"),
            ));
        }
    }

    for name in &raw.callback_metadata {
        if !is_extra_param_name(name) {
            return Err(fail(
                "callback_metadata",
                format!("{name:?} must be 1-64 characters of [A-Za-z0-9_.-]"),
            ));
        }
        // A value from the browser must not stand in for one the token endpoint gives.
        if raw.metadata.contains(name) {
            return Err(fail(
                "callback_metadata",
                format!(
                    "{name:?} is in metadata too: a token response's field is not taken from the callback"
                ),
            ));
        }
        // The flow's own parameters, and anything that may be a credential, are never kept.
        if CALLBACK_PARAMS.iter().any(|p| p.eq_ignore_ascii_case(name)) || names_secret(name) {
            return Err(fail(
                "callback_metadata",
                format!(
                    "{name:?} is part of the flow or a secret; only non-secret values may be kept"
                ),
            ));
        }
    }

    for entry in &raw.invalid_grant_errors {
        // `code`, or `code: text` that the error_description must hold too.
        let (code, text) = entry.split_once(": ").unwrap_or((entry, ""));
        if code.is_empty()
            || code.len() > 64
            || !code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
        {
            return Err(fail(
                "invalid_grant_errors",
                format!(
                    "{entry:?} is not an OAuth error code (1-64 of [a-z_]), optionally followed by \": \" and text its error_description holds"
                ),
            ));
        }
        if entry.contains(": ")
            && (text.is_empty() || text.len() > 128 || text.chars().any(char::is_control))
        {
            return Err(fail(
                "invalid_grant_errors",
                format!(
                    "the description text after {code:?} must be 1-128 characters, none a control character"
                ),
            ));
        }
        // A refused client is the operator's to fix: it must never mark every grant dead.
        if matches!(code, "invalid_client" | "unauthorized_client") {
            return Err(fail(
                "invalid_grant_errors",
                format!(
                    "{code:?} says the client is refused, not the grant; it cannot mean a dead refresh token"
                ),
            ));
        }
    }

    for (key, value) in &raw.extra_auth_params {
        if !is_extra_param_name(key) {
            return Err(fail(
                "extra_auth_params",
                format!("{key:?} must be 1-64 characters of [A-Za-z0-9_.-]"),
            ));
        }
        if is_reserved_param(key) || key.eq_ignore_ascii_case(&scope_param) {
            return Err(fail(
                "extra_auth_params",
                format!("{key:?} is set by the flow itself and cannot be overridden"),
            ));
        }
        if value.chars().any(char::is_control) {
            return Err(fail(
                "extra_auth_params",
                format!("the value of {key:?} contains a control character"),
            ));
        }
    }

    for (key, value) in &raw.extra_exchange_params {
        if !is_extra_param_name(key) {
            return Err(fail(
                "extra_exchange_params",
                format!("{key:?} must be 1-64 characters of [A-Za-z0-9_.-]"),
            ));
        }
        if RESERVED_EXCHANGE_PARAMS
            .iter()
            .any(|r| r.eq_ignore_ascii_case(key))
        {
            return Err(fail(
                "extra_exchange_params",
                format!("{key:?} is set by the exchange itself and cannot be overridden"),
            ));
        }
        if value.chars().any(char::is_control) || value.len() > 256 {
            return Err(fail(
                "extra_exchange_params",
                format!(
                    "the value of {key:?} must be at most 256 characters, none a control character"
                ),
            ));
        }
    }

    if let Some(header) = &raw.token_header {
        let token_char = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
        if header.is_empty() || header.len() > 64 || !header.bytes().all(token_char) {
            return Err(fail(
                "token_header",
                format!("{header:?} is not an HTTP header name"),
            ));
        }
        // Headers that frame, route or carry the connection, or another credential, are not a
        // token's place.
        let reserved = [
            "host",
            "cookie",
            "content-length",
            "content-type",
            "transfer-encoding",
            "connection",
            "keep-alive",
            "te",
            "trailer",
            "upgrade",
        ];
        if reserved.iter().any(|r| header.eq_ignore_ascii_case(r))
            || header.to_ascii_lowercase().starts_with("proxy-")
        {
            return Err(fail(
                "token_header",
                format!("{header:?} frames or routes the request; a token cannot go there"),
            ));
        }
        if header.eq_ignore_ascii_case("authorization") {
            return Err(fail(
                "token_header",
                "Authorization is where tokens go without it (as Bearer); leave token_header out"
                    .into(),
            ));
        }
    }

    Ok(Profile {
        name,
        title,
        docs,
        kind,
        auth_url: raw.auth_url,
        token_url: raw.token_url,
        issuer: raw.issuer,
        revocation_url: raw.revocation_url,
        token_auth_method: raw.token_auth_method,
        default_scopes: raw.default_scopes,
        scope_param,
        scope_separator,
        granted_scope_separator,
        token_request: raw.token_request,
        token_path: raw.token_path,
        ok_field: raw.ok_field,
        metadata: raw.metadata,
        token_lifetime_seconds: raw.token_lifetime_seconds,
        keep_alive_seconds: raw.keep_alive_seconds,
        variables,
        extra_auth_params: raw.extra_auth_params,
        scope_aliases: raw.scope_aliases,
        unlisted_scopes: raw.unlisted_scopes,
        callback_metadata: raw.callback_metadata,
        invalid_grant_errors: raw.invalid_grant_errors,
        extra_exchange_params: raw.extra_exchange_params,
        token_header: raw.token_header,
    })
}

impl Profile {
    /// The profile with `{var}` replaced from `vars`; errors name the missing or unknown variable.
    /// Every declared variable must be given and nothing else; values are 1-128 characters of
    /// `[A-Za-z0-9._-]` (not `.` or `..`), so a value can fill a path segment but never add one.
    /// The host text a URL template adds right after `{name}` (`.myshopify.com` in
    /// `https://{shop}.myshopify.com/admin`), when the variable fills part of a host name: a
    /// value that already ends with it would name another host.
    fn added_after(&self, name: &str) -> Option<String> {
        let placeholder = format!("{{{name}}}");
        [
            &self.auth_url,
            &self.token_url,
            &self.issuer,
            &self.revocation_url,
        ]
        .into_iter()
        .flatten()
        .find_map(|template| {
            let at = template.find(&placeholder)?;
            let before = &template[..at];
            let in_host = before
                .find("://")
                .is_some_and(|scheme| !before[scheme + 3..].contains('/'));
            let after = &template[at + placeholder.len()..];
            let host_rest = &after[..after.find(['/', ':', '{']).unwrap_or(after.len())];
            (in_host && host_rest.starts_with('.')).then(|| host_rest.to_owned())
        })
    }

    pub fn instantiate(&self, vars: &BTreeMap<String, String>) -> Result<Profile, ProfileError> {
        let fail = |reason: String| ProfileError::new(&self.name, "variables", reason);
        if let Some(unknown) = vars.keys().find(|k| !self.variables.contains(k)) {
            return Err(fail(if self.variables.is_empty() {
                format!("unknown variable {unknown:?}: this profile takes none")
            } else {
                format!(
                    "unknown variable {unknown:?}: this profile takes {}",
                    self.variables.join(", ")
                )
            }));
        }
        for name in &self.variables {
            let value = vars
                .get(name)
                .ok_or_else(|| fail(format!("missing variable {name:?}")))?;
            // A variable completed into a host name by the text after it is one label of that
            // name: a URL or the whole host given instead is answered with the label to give.
            if let Some(added) = self.added_after(name) {
                let host = value
                    .split_once("://")
                    .map_or(value.as_str(), |(_, rest)| rest)
                    .split('/')
                    .next()
                    .unwrap_or_default();
                if let Some(label) = host.strip_suffix(added.as_str()) {
                    return Err(fail(format!(
                        "{name:?}: {value:?} names the whole host; the profile adds {added:?} after it: give {label:?}"
                    )));
                }
                if host.contains('.') || value.contains("://") {
                    return Err(fail(format!(
                        "{name:?}: {value:?} must be one label of a host name, which the profile completes with {added:?} (\"acme\" for acme{added})"
                    )));
                }
            }
            check_variable_value(value).map_err(|r| fail(format!("{name:?}: {r}")))?;
        }

        let mut out = self.clone();
        for (field, slot) in [
            ("auth_url", &mut out.auth_url),
            ("token_url", &mut out.token_url),
            ("issuer", &mut out.issuer),
            ("revocation_url", &mut out.revocation_url),
        ] {
            if let Some(template) = slot {
                let url = substitute(template, &|n| vars.get(n).map(String::as_str));
                // Validation already proved the shape; this re-check guards the real values.
                check_https(&url).map_err(|r| ProfileError::new(&self.name, field, r))?;
                *template = url;
            }
        }
        out.variables.clear();
        Ok(out)
    }
}

/// The built-in profiles plus, optionally, an operator's own, by name.
#[derive(Debug, Clone)]
pub struct Catalogue {
    profiles: BTreeMap<String, Profile>,
}

/// The profiles shipped in the binary. Listed by hand so a new file is a reviewed change, and so
/// the binary never depends on the working directory.
const BUILTIN: &[(&str, &str)] = &[
    ("asana", include_str!("../profiles/asana.toml")),
    ("atlassian", include_str!("../profiles/atlassian.toml")),
    ("box", include_str!("../profiles/box.toml")),
    ("dropbox", include_str!("../profiles/dropbox.toml")),
    ("github", include_str!("../profiles/github.toml")),
    ("github-app", include_str!("../profiles/github-app.toml")),
    ("gitlab", include_str!("../profiles/gitlab.toml")),
    ("google", include_str!("../profiles/google.toml")),
    ("hubspot", include_str!("../profiles/hubspot.toml")),
    ("linear", include_str!("../profiles/linear.toml")),
    ("microsoft", include_str!("../profiles/microsoft.toml")),
    ("notion", include_str!("../profiles/notion.toml")),
    ("quickbooks", include_str!("../profiles/quickbooks.toml")),
    ("salesforce", include_str!("../profiles/salesforce.toml")),
    ("shopify", include_str!("../profiles/shopify.toml")),
    ("slack", include_str!("../profiles/slack.toml")),
    ("x", include_str!("../profiles/x.toml")),
    ("zoom", include_str!("../profiles/zoom.toml")),
];

impl Catalogue {
    /// The profiles shipped in the binary (`profiles/*.toml` via include_str!, listed explicitly).
    pub fn builtin() -> Result<Catalogue, ProfileError> {
        let mut profiles = BTreeMap::new();
        for (name, source) in BUILTIN {
            let path = PathBuf::from(format!("profiles/{name}.toml"));
            let profile = parse(name, source).map_err(|e| e.in_file(&path))?;
            profiles.insert(profile.name.clone(), profile);
        }
        Ok(Catalogue { profiles })
    }

    /// Builtin plus every `*.toml` in `dir` (an operator's own; same name overrides a builtin);
    /// errors name the file, every file that does not load. Subdirectories and other files are
    /// ignored.
    pub fn with_dir(dir: &Path) -> Result<Catalogue, ProfileErrors> {
        let mut catalogue = Self::builtin()?;
        let dir_error = |reason: String| ProfileError::new("*", "file", reason).in_file(dir);
        let entries = std::fs::read_dir(dir)
            .map_err(|e| dir_error(format!("cannot read the profile directory: {e}")))?;
        let mut paths = Vec::new();
        for entry in entries {
            let entry =
                entry.map_err(|e| dir_error(format!("cannot read the profile directory: {e}")))?;
            let path = entry.path();
            if path.extension().is_some_and(|ext| ext == "toml") && path.is_file() {
                paths.push(path);
            }
        }
        // Sorted so the errors' order does not depend on directory order.
        paths.sort();
        let mut failed = Vec::new();
        for path in paths {
            match load_file(&path) {
                Ok(profile) => {
                    catalogue.profiles.insert(profile.name.clone(), profile);
                }
                Err(e) => failed.push(e),
            }
        }
        if failed.is_empty() {
            Ok(catalogue)
        } else {
            Err(ProfileErrors(failed))
        }
    }

    pub fn get(&self, name: &str) -> Option<&Profile> {
        self.profiles.get(name)
    }

    /// Why `name` is no profile, with the one whose title names it, if any ("twitter": x).
    pub fn unknown(&self, name: &str) -> String {
        let wanted = name.to_ascii_lowercase();
        let titled = (wanted.len() >= 3)
            .then(|| {
                self.iter()
                    .find(|p| p.title.to_ascii_lowercase().contains(&wanted))
            })
            .flatten();
        match titled {
            Some(p) => format!(
                "no profile named {name:?}; did you mean {:?} ({})? `valet provider profiles` lists them",
                p.name, p.title
            ),
            None => format!("no profile named {name:?}: `valet provider profiles` lists them"),
        }
    }

    /// Every profile, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = &Profile> {
        self.profiles.values()
    }
}

fn load_file(path: &Path) -> Result<Profile, ProfileError> {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let fail = |reason: String| ProfileError::new(&stem, "file", reason).in_file(path);
    let len = std::fs::metadata(path)
        .map_err(|e| fail(format!("cannot read: {e}")))?
        .len();
    if len > MAX_FILE_BYTES {
        return Err(fail(format!(
            "is {len} bytes; profiles are limited to {MAX_FILE_BYTES}"
        )));
    }
    let source = std::fs::read_to_string(path).map_err(|e| fail(format!("cannot read: {e}")))?;
    parse(&stem, &source).map_err(|e| e.in_file(path))
}

fn is_profile_name(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

fn is_variable_name(s: &str) -> bool {
    (1..=32).contains(&s.len())
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

fn is_param_name(s: &str) -> bool {
    (1..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn is_extra_param_name(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// The callback's own parameters (RFC 6749 section 4.1.2, RFC 9207's `iss`).
const CALLBACK_PARAMS: [&str; 6] = [
    "state",
    "code",
    "error",
    "error_description",
    "error_uri",
    "iss",
];

fn is_reserved_param(s: &str) -> bool {
    RESERVED_AUTH_PARAMS
        .iter()
        .any(|r| r.eq_ignore_ascii_case(s))
}

/// A response field that holds a credential: `access_token`, `refresh_token`, `id_token`,
/// `client_secret` and anything else ending in `token` or `secret` (nothing an agent should be
/// handed as metadata is named that way).
fn names_secret(segment: &str) -> bool {
    let s = segment.to_ascii_lowercase();
    s.ends_with("token") || s.ends_with("secret")
}

/// A dotted path into a JSON response: non-empty segments of `[A-Za-z0-9_]`.
fn check_path(path: &str) -> Result<(), String> {
    let ok = !path.is_empty()
        && path.split('.').all(|seg| {
            !seg.is_empty() && seg.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{path:?} must be a dotted path of non-empty [A-Za-z0-9_] segments"
        ))
    }
}

fn check_variable_value(value: &str) -> Result<(), String> {
    let charset_ok = (1..=128).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    // `.` and `..` would survive the charset yet move a URL path once normalised.
    if !charset_ok || value == "." || value == ".." {
        return Err(format!(
            "{value:?} must be 1-128 characters of [A-Za-z0-9._-] (and not \".\" or \"..\")"
        ));
    }
    Ok(())
}

/// Checks an absolute https URL with a host, no credentials and no fragment.
fn check_https(s: &str) -> Result<(), String> {
    let url = Url::parse(s).map_err(|_| "must be an https URL".to_owned())?;
    if url.scheme() != "https" || url.host_str().is_none_or(str::is_empty) {
        return Err("must be an https URL".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not carry credentials".into());
    }
    if url.fragment().is_some() {
        return Err("must not have a fragment".into());
    }
    Ok(())
}

/// The `{name}` placeholders of a template, in order; refuses stray or empty braces.
fn placeholders(template: &str) -> Result<Vec<&str>, String> {
    let mut names = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find(['{', '}']) {
        if rest[open..].starts_with('}') {
            return Err("has a `}` without a matching `{`".into());
        }
        let after = &rest[open + 1..];
        let close = after
            .find('}')
            .ok_or_else(|| "has a `{` without a matching `}`".to_owned())?;
        let name = &after[..close];
        if !is_variable_name(name) {
            return Err(format!("has a malformed placeholder {{{name}}}"));
        }
        names.push(name);
        rest = &after[close + 1..];
    }
    Ok(names)
}

/// Replaces each `{name}` that `lookup` knows; the template is already known to be well formed.
fn substitute<'v>(template: &str, lookup: &dyn Fn(&str) -> Option<&'v str>) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        match after.find('}') {
            Some(close) => {
                let name = &after[..close];
                match lookup(name) {
                    Some(value) => out.push_str(value),
                    None => {
                        out.push('{');
                        out.push_str(name);
                        out.push('}');
                    }
                }
                rest = &after[close + 1..];
            }
            None => {
                out.push_str(&rest[open..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

fn line_of(source: &str, offset: usize) -> usize {
    source
        .get(..offset)
        .map_or(1, |before| before.matches('\n').count() + 1)
}

/// The schema field a TOML error is about. toml reports a byte span, not a key, so the key is
/// read back from the source: the `[table]` or `key =` line at or above the span.
fn field_of_toml_error(source: &str, err: &toml::de::Error) -> String {
    if let Some(rest) = err.message().strip_prefix("unknown field `")
        && let Some(end) = rest.find('`')
    {
        return rest[..end].to_owned();
    }
    let Some(span) = err.span() else {
        return "toml".into();
    };
    let mut table: Option<&str> = None;
    let mut key: Option<&str> = None;
    let mut offset = 0;
    for line in source.split_inclusive('\n') {
        if offset > span.start {
            break;
        }
        offset += line.len();
        let trimmed = line.trim();
        if trimmed.starts_with('#') || trimmed.is_empty() {
            continue;
        }
        if let Some(header) = trimmed.strip_prefix('[') {
            table = header.split(']').next().map(str::trim);
            key = None;
        } else if let Some(k) = key_of_line(trimmed) {
            key = Some(k);
        }
    }
    table.or(key).unwrap_or("toml").to_owned()
}

/// The key of a `key = value` line, or `None` for a continuation line of a multi-line value.
fn key_of_line(line: &str) -> Option<&str> {
    let (key, _) = line.split_once('=')?;
    let key = key.trim();
    let quoted = key.starts_with('"') || key.starts_with('\'');
    let closed = key.len() >= 2 && (key.ends_with('"') || key.ends_with('\''));
    let plain = key
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'"' | b'\''));
    if key.is_empty() || !plain || quoted != closed {
        return None;
    }
    Some(key.trim_matches(['"', '\'']))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
name = "acme"
title = "Acme"
docs = "https://acme.example/docs"
kind = "oauth2"
auth_url = "https://acme.example/authorize"
token_url = "https://acme.example/token"
"#;

    fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn every_builtin_profile_loads_and_validates() {
        let catalogue = Catalogue::builtin().expect("builtin profiles validate");
        let names: Vec<&str> = catalogue.iter().map(|p| p.name.as_str()).collect();
        for expected in [
            "github",
            "github-app",
            "google",
            "microsoft",
            "slack",
            "notion",
            "salesforce",
            "atlassian",
            "dropbox",
            "gitlab",
            "linear",
            "hubspot",
            "zoom",
        ] {
            assert!(names.contains(&expected), "missing builtin {expected}");
        }
        let mut sorted = names.clone();
        sorted.sort_unstable();
        assert_eq!(names, sorted, "iter() is sorted by name");

        for profile in catalogue.iter() {
            // Every builtin instantiates once its variables are given.
            let given: BTreeMap<_, _> = profile
                .variables
                .iter()
                .map(|v| (v.clone(), "example".to_owned()))
                .collect();
            let concrete = profile.instantiate(&given).expect("instantiates");
            for url in [
                &concrete.auth_url,
                &concrete.token_url,
                &concrete.issuer,
                &concrete.revocation_url,
            ]
            .into_iter()
            .flatten()
            {
                assert!(!url.contains('{'), "{}: {url}", profile.name);
            }
        }
    }

    #[test]
    fn builtin_quirks_are_as_documented() {
        let c = Catalogue::builtin().expect("builtin profiles validate");
        let get = |n: &str| c.get(n).expect(n).clone();

        // Providers that revoke idle refresh tokens keep their grants alive.
        assert_eq!(get("google").keep_alive_seconds, 30 * 86_400);
        assert_eq!(get("microsoft").keep_alive_seconds, 7 * 86_400);
        assert_eq!(get("github").keep_alive_seconds, 0);
        // Entra never lists offline_access in a token response.
        assert_eq!(get("microsoft").unlisted_scopes, ["offline_access"]);

        let slack = get("slack");
        assert_eq!(slack.scope_param, "user_scope");
        assert_eq!(slack.scope_separator, Separator::Comma);
        assert_eq!(slack.token_path.as_deref(), Some("authed_user"));
        assert_eq!(slack.ok_field.as_deref(), Some("ok"));
        assert!(slack.metadata.contains(&"team.id".to_owned()));
        assert!(slack.metadata.contains(&"authed_user.id".to_owned()));

        let notion = get("notion");
        assert_eq!(notion.token_request, TokenRequestFormat::Json);
        assert_eq!(notion.token_auth_method, TokenAuthMethod::ClientSecretBasic);
        assert_eq!(
            notion.extra_auth_params.get("owner").map(String::as_str),
            Some("user")
        );

        let github = get("github");
        assert_eq!(github.granted_scope_separator, Separator::Comma);
        assert_eq!(github.token_lifetime_seconds, 0);

        let google = get("google");
        assert_eq!(google.kind, ProfileKind::Oidc);
        assert_eq!(
            google.issuer.as_deref(),
            Some("https://accounts.google.com")
        );
        assert_eq!(
            google
                .extra_auth_params
                .get("access_type")
                .map(String::as_str),
            Some("offline")
        );

        let microsoft = get("microsoft");
        assert_eq!(microsoft.variables, vec!["tenant".to_owned()]);

        assert_eq!(get("quickbooks").callback_metadata, ["realmId"]);
        assert_eq!(
            get("x").invalid_grant_errors,
            ["invalid_request: Value passed for the token was invalid"]
        );
        let shopify = get("shopify");
        assert_eq!(
            shopify.token_header.as_deref(),
            Some("X-Shopify-Access-Token")
        );
        assert_eq!(
            shopify
                .extra_exchange_params
                .get("expiring")
                .map(String::as_str),
            Some("1")
        );

        let salesforce = get("salesforce");
        assert!(salesforce.metadata.contains(&"instance_url".to_owned()));
        assert!(salesforce.token_lifetime_seconds > 0);
    }

    #[test]
    fn a_minimal_profile_gets_the_defaults() {
        let p = parse("acme", MINIMAL).expect("valid");
        assert_eq!(p.token_auth_method, TokenAuthMethod::ClientSecretBasic);
        assert_eq!(p.scope_param, "scope");
        assert_eq!(p.scope_separator, Separator::Space);
        assert_eq!(p.granted_scope_separator, Separator::Any);
        assert_eq!(p.token_request, TokenRequestFormat::Form);
        assert_eq!(p.token_lifetime_seconds, 0);
        assert!(p.token_path.is_none() && p.metadata.is_empty());
    }

    /// Each case: a change to the minimal profile, and the field the error must name.
    #[test]
    fn a_broken_profile_is_refused_naming_it_and_the_field() {
        let cases: &[(&str, &str, &str)] = &[
            ("unknown key", "colour = \"blue\"\n", "colour"),
            (
                "http URL",
                "revocation_url = \"http://acme.example/revoke\"\n",
                "revocation_url",
            ),
            (
                "credentials in a URL",
                "revocation_url = \"https://u:p@acme.example/revoke\"\n",
                "revocation_url",
            ),
            (
                "undeclared variable",
                "revocation_url = \"https://acme.example/{region}/revoke\"\n",
                "revocation_url",
            ),
            ("unused variable", "variables = [\"region\"]\n", "variables"),
            (
                "secret metadata",
                "metadata = [\"team.id\", \"authed_user.access_token\"]\n",
                "metadata",
            ),
            (
                "refresh token as metadata",
                "metadata = [\"refresh_token\"]\n",
                "metadata",
            ),
            (
                "id token as metadata",
                "metadata = [\"id_token\"]\n",
                "metadata",
            ),
            (
                "client secret as metadata",
                "metadata = [\"client_secret\"]\n",
                "metadata",
            ),
            (
                "a *token as metadata",
                "metadata = [\"bot.token\"]\n",
                "metadata",
            ),
            (
                "empty metadata path",
                "metadata = [\"team..id\"]\n",
                "metadata",
            ),
            (
                "reserved extra param",
                "[extra_auth_params]\nredirect_uri = \"https://evil.example\"\n",
                "extra_auth_params",
            ),
            (
                "extra param overriding scope_param",
                "scope_param = \"user_scope\"\n[extra_auth_params]\nuser_scope = \"admin\"\n",
                "extra_auth_params",
            ),
            (
                "reserved scope_param",
                "scope_param = \"state\"\n",
                "scope_param",
            ),
            (
                "\"any\" to join scopes",
                "scope_separator = \"any\"\n",
                "scope_separator",
            ),
            (
                "unknown enum value",
                "token_request = \"xml\"\n",
                "token_request",
            ),
            (
                "wrong type",
                "default_scopes = \"repo\"\n",
                "default_scopes",
            ),
            (
                "negative lifetime",
                "token_lifetime_seconds = -1\n",
                "token_lifetime_seconds",
            ),
            (
                "scope with a space",
                "default_scopes = [\"a b\"]\n",
                "default_scopes",
            ),
            (
                "unlisted scope with a space",
                "unlisted_scopes = [\"offline access\"]\n",
                "unlisted_scopes",
            ),
            (
                "the flow's own callback parameter kept",
                "callback_metadata = [\"code\"]\n",
                "callback_metadata",
            ),
            (
                "a secret-looking callback parameter kept",
                "callback_metadata = [\"session_token\"]\n",
                "callback_metadata",
            ),
            (
                "a callback parameter also read from the token response",
                "metadata = [\"instance_url\"]\ncallback_metadata = [\"instance_url\"]\n",
                "callback_metadata",
            ),
            (
                "a callback parameter that is not a name",
                "callback_metadata = [\"realm id\"]\n",
                "callback_metadata",
            ),
            (
                "an exchange parameter the exchange sets",
                "[extra_exchange_params]\ncode_verifier = \"x\"\n",
                "extra_exchange_params",
            ),
            (
                "a token header that is not a header name",
                "token_header = \"X Token\"\n",
                "token_header",
            ),
            (
                "a framing header as the token header",
                "token_header = \"Transfer-Encoding\"\n",
                "token_header",
            ),
            (
                "a proxy's header as the token header",
                "token_header = \"Proxy-Authorization\"\n",
                "token_header",
            ),
            (
                "Authorization as the token header",
                "token_header = \"authorization\"\n",
                "token_header",
            ),
            (
                "a client error as a dead refresh token, with a description",
                "invalid_grant_errors = [\"unauthorized_client: revoked\"]\n",
                "invalid_grant_errors",
            ),
            (
                "a client error as a dead refresh token",
                "invalid_grant_errors = [\"invalid_client\"]\n",
                "invalid_grant_errors",
            ),
            (
                "an error code that is not one",
                "invalid_grant_errors = [\"Invalid Request\"]\n",
                "invalid_grant_errors",
            ),
            (
                "issuer on oauth2",
                "issuer = \"https://acme.example\"\n",
                "issuer",
            ),
            (
                "bad token_path",
                "token_path = \"authed user\"\n",
                "token_path",
            ),
        ];
        for (what, extra, field) in cases {
            // Top-level keys must precede the first table, so append after MINIMAL.
            let source = format!("{MINIMAL}{extra}");
            let err = parse("acme", &source).expect_err(what);
            assert_eq!(err.profile, "acme", "{what}");
            assert_eq!(err.field, *field, "{what}: {err}");
            let shown = err.to_string();
            assert!(shown.starts_with("profile \"acme\": "), "{what}: {shown}");
        }
    }

    #[test]
    fn required_fields_and_the_name_are_checked() {
        let err = parse("other", MINIMAL).expect_err("name differs from stem");
        assert_eq!(
            (err.profile.as_str(), err.field.as_str()),
            ("other", "name")
        );

        let err = parse("acme", &MINIMAL.replace("title = \"Acme\"\n", "")).expect_err("no title");
        assert_eq!(err.field, "title");

        let err = parse(
            "acme",
            &MINIMAL.replace("https://acme.example/token", "ftp://x"),
        )
        .expect_err("ftp");
        assert_eq!(err.field, "token_url");

        let oidc = MINIMAL.replace("kind = \"oauth2\"", "kind = \"oidc\"");
        let err = parse("acme", &oidc).expect_err("oidc with endpoints");
        assert_eq!(err.field, "issuer");
        let oidc = format!(
            "{}issuer = \"https://acme.example\"\n",
            oidc.replace("auth_url = \"https://acme.example/authorize\"\n", "")
        );
        let err = parse("acme", &oidc).expect_err("oidc with token_url");
        assert_eq!(err.field, "token_url");

        let err = parse("acme", "name = \"acme\"\ntitle = ").expect_err("syntax");
        assert_eq!(err.profile, "acme");
    }

    #[test]
    fn the_error_names_the_file() {
        let source = r#"
name = "microsoft"
title = "Microsoft"
docs = "https://learn.microsoft.com/"
kind = "oidc"
issuer = "http://login.microsoftonline.com/{tenant}/v2.0"
variables = ["tenant"]
"#;
        let err = parse("microsoft", source)
            .expect_err("http issuer")
            .in_file(Path::new("profiles/microsoft.toml"));
        assert_eq!(
            err.to_string(),
            "profile \"microsoft\" (profiles/microsoft.toml): issuer: must be an https URL"
        );
    }

    #[test]
    fn instantiate_substitutes_the_microsoft_tenant() {
        let c = Catalogue::builtin().expect("builtin profiles validate");
        let ms = c.get("microsoft").expect("microsoft");
        assert!(ms.issuer.as_deref().is_some_and(|i| i.contains("{tenant}")));

        let p = ms
            .instantiate(&vars(&[("tenant", "contoso.onmicrosoft.com")]))
            .expect("valid tenant");
        assert_eq!(
            p.issuer.as_deref(),
            Some("https://login.microsoftonline.com/contoso.onmicrosoft.com/v2.0")
        );
        assert!(p.variables.is_empty());

        let err = ms.instantiate(&BTreeMap::new()).expect_err("missing");
        assert_eq!(err.field, "variables");
        assert!(err.reason.contains("\"tenant\""), "{err}");

        for bad in ["a/../b", "..", ".", "", "x?y=1", "x#y", "a b", "ténant"] {
            let err = ms.instantiate(&vars(&[("tenant", bad)])).expect_err(bad);
            assert!(err.reason.contains("\"tenant\""), "{bad}: {err}");
        }

        let err = ms
            .instantiate(&vars(&[("tenant", "common"), ("region", "eu")]))
            .expect_err("unknown");
        assert!(err.reason.contains("\"region\""), "{err}");

        let github = c.get("github").expect("github");
        assert_eq!(github.instantiate(&BTreeMap::new()).as_ref(), Ok(github));
        // A provider's other name finds its profile; anything else says where the list is.
        assert!(
            c.unknown("twitter").contains("did you mean \"x\""),
            "{}",
            c.unknown("twitter")
        );
        assert!(
            c.unknown("Intuit").contains("\"quickbooks\""),
            "{}",
            c.unknown("Intuit")
        );
        assert!(
            !c.unknown("zz").contains("did you mean"),
            "{}",
            c.unknown("zz")
        );
        assert!(github.instantiate(&vars(&[("tenant", "x")])).is_err());
    }

    /// A variable filling part of a host name (`{shop}.myshopify.com`) given with the part the
    /// profile adds (the store's whole domain) would name another host: refused, saying what to
    /// give. A path variable is not held to it.
    #[test]
    fn a_host_variable_given_with_the_host_the_profile_adds_is_refused() {
        let c = Catalogue::builtin().expect("builtin profiles validate");
        let shopify = c.get("shopify").expect("shopify");
        let p = shopify
            .instantiate(&vars(&[("shop", "acme")]))
            .expect("the store's subdomain");
        assert_eq!(
            p.token_url.as_deref(),
            Some("https://acme.myshopify.com/admin/oauth/access_token")
        );
        for whole in ["acme.myshopify.com", "https://acme.myshopify.com/"] {
            let err = shopify
                .instantiate(&vars(&[("shop", whole)]))
                .expect_err("the whole domain");
            assert_eq!(err.field, "variables");
            assert!(
                err.reason.contains("\".myshopify.com\"") && err.reason.contains("give \"acme\""),
                "{err}"
            );
        }
        // A custom domain is not a store's myshopify label (it would name another host).
        let err = shopify
            .instantiate(&vars(&[("shop", "shop.acme.com")]))
            .expect_err("a custom domain");
        assert!(err.reason.contains("one label"), "{err}");
        let ms = c.get("microsoft").expect("microsoft");
        assert!(
            ms.instantiate(&vars(&[("tenant", "contoso.onmicrosoft.com")]))
                .is_ok()
        );
    }

    #[test]
    fn with_dir_adds_operator_profiles_and_overrides_builtins() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("acme.toml"), MINIMAL).expect("write");
        let github = Catalogue::builtin()
            .expect("builtin")
            .get("github")
            .expect("github")
            .clone();
        let own_github = format!(
            "name = \"github\"\ntitle = \"GitHub Enterprise\"\ndocs = \"{}\"\nkind = \"oauth2\"\n\
             auth_url = \"https://ghe.example/login/oauth/authorize\"\n\
             token_url = \"https://ghe.example/login/oauth/access_token\"\n",
            github.docs
        );
        std::fs::write(dir.path().join("github.toml"), own_github).expect("write");
        std::fs::write(dir.path().join("notes.txt"), "not a profile").expect("write");

        let c = Catalogue::with_dir(dir.path()).expect("valid dir");
        assert_eq!(c.get("acme").map(|p| p.title.as_str()), Some("Acme"));
        assert_eq!(
            c.get("github").map(|p| p.title.as_str()),
            Some("GitHub Enterprise")
        );
        assert_eq!(
            c.iter().count(),
            Catalogue::builtin().expect("builtin").iter().count() + 1
        );
    }

    #[test]
    fn every_broken_operator_file_is_named_by_its_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("acme.toml");
        std::fs::write(
            &path,
            MINIMAL.replace("https://acme.example/token", "http://x/token"),
        )
        .expect("write");
        let other = dir.path().join("zz.toml");
        std::fs::write(&other, "name = \"zz\"\nkind = \"oauth3\"\n").expect("write");
        let err = Catalogue::with_dir(dir.path()).expect_err("broken");
        let [first, second] = &err.0[..] else {
            panic!("both files: {err}")
        };
        assert_eq!(first.file.as_deref(), Some(path.as_path()));
        assert_eq!(first.field, "token_url");
        assert_eq!(second.file.as_deref(), Some(other.as_path()));
        for p in [&path, &other] {
            assert!(err.to_string().contains(&p.display().to_string()), "{err}");
        }

        let missing = dir.path().join("nope");
        let err = Catalogue::with_dir(&missing).expect_err("no dir");
        assert_eq!(err.0[0].file.as_deref(), Some(missing.as_path()));
    }

    #[test]
    fn separators_join_and_split() {
        assert_eq!(Separator::Comma.join(&["a", "b"]), "a,b");
        assert_eq!(Separator::Space.join(&["a", "b"]), "a b");
        assert_eq!(Separator::Comma.split("repo, gist,"), vec!["repo", "gist"]);
        assert_eq!(Separator::Space.split(" a  b "), vec!["a", "b"]);
        assert_eq!(Separator::Any.split("a,b c"), vec!["a", "b", "c"]);
    }

    #[test]
    fn placeholders_are_well_formed() {
        assert_eq!(placeholders("https://x/{a}/{b_1}"), Ok(vec!["a", "b_1"]));
        assert!(placeholders("https://x/{a").is_err());
        assert!(placeholders("https://x/a}").is_err());
        assert!(placeholders("https://x/{}").is_err());
        assert!(placeholders("https://x/{A}").is_err());
        assert_eq!(
            substitute("https://x/{a}/y", &|n| (n == "a").then_some("v")),
            "https://x/v/y"
        );
    }
}
