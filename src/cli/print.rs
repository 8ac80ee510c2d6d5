//! How client commands show things to a person: providers, grants, times, and gRPC errors with
//! a hint at what to do next.

use crate::clock::{Clock as _, SystemClock};
use crate::pb;

/// Renders a gRPC error for a person: the message, and what to do for the common cases.
pub(super) fn explain(s: tonic::Status) -> anyhow::Error {
    let hint = match s.code() {
        tonic::Code::Unauthenticated => "\nhint: pass the API key with --key or VALET_KEY",
        tonic::Code::Unavailable if !s.message().contains("retry") => "\nhint: retry shortly",
        tonic::Code::OutOfRange if s.message().contains("message length too large") => {
            "\nhint: the request is larger than the daemon accepts: a value given (a flag, or a file's contents) is too long"
        }
        // What tonic says when an HTTP server that is not gRPC answers.
        tonic::Code::Unimplemented if s.message().contains("HTTP status code 404") => {
            "\nhint: is --server (VALET_SERVER) the gRPC address (grpc_listen)? The HTTP listener serves only callbacks, health and metrics"
        }
        // The connection dropped mid-call: the daemon stopped or restarted.
        tonic::Code::Unknown if s.message().contains("transport error") => {
            "\nhint: the connection to valet was lost (did the daemon stop or restart?); a consent flow being waited for is gone with it: run the command again"
        }
        // Only providers are created by name.
        tonic::Code::AlreadyExists => "\nhint: change it with `valet provider update`",
        _ => "",
    };
    // The daemon's own "invalid argument: " would repeat the code.
    let message = s.message();
    let message = message
        .strip_prefix("invalid argument: ")
        .unwrap_or(message);
    // The daemon names the API's field (`client_secret: is required`); a person typed a flag.
    let flag = match s.code() {
        tonic::Code::InvalidArgument => message
            .split_once(':')
            .and_then(|(field, _)| flag_of(field))
            .map(|(field, flag)| format!("\nhint: `{field}` is given with {flag}")),
        _ => None,
    };
    anyhow::anyhow!(
        "{:?}: {message}{hint}{}",
        s.code(),
        flag.unwrap_or_default()
    )
}

/// The command-line flag that sets an API field, where the two are spelled differently.
fn flag_of(field: &str) -> Option<(&str, &'static str)> {
    let flag = match field {
        "user_id" => "--user",
        "agent_id" => "--agent",
        "provider_id" => "--provider (or the provider's id)",
        "client_secret" => "--client-secret-env or --client-secret-file",
        "private_key" => "--private-key-file",
        "scopes" | "default_scopes" => "--scope",
        "egress_hosts" => "--egress-host",
        "mcp_server_url" => "--mcp-server",
        "credential_location" => "--location",
        "extra_auth_params" => "--param",
        "handout_policy" => "--handout",
        "token_url" => "--token-url",
        "auth_url" => "--auth-url",
        "revocation_url" => "--revocation-url",
        "device_authorization_url" => "--device-authorization-url",
        "client_id" => "--client-id",
        "value" => "--value-env or --value-file",
        _ => return None,
    };
    Some((field, flag))
}

/// A Unix time as a UTC date with how far away it is, since that is what a person wants to
/// know: `2026-12-03T21:27:34Z (in 9m 59s)`.
pub(super) fn when(unix: i64) -> String {
    if unix == 0 {
        return "never (no lifetime was given)".into();
    }
    let out = date(unix);
    let left = unix - SystemClock.now_unix();
    let away = span(left.unsigned_abs());
    if left >= 0 {
        format!("{out} (in {away})")
    } else {
        format!("{out} ({away} ago)")
    }
}

/// A Unix time as an RFC 3339 UTC date: `2026-12-03T21:27:34Z`.
fn date(unix: i64) -> String {
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = crate::clock::write_rfc3339(&mut out, unix.max(0).unsigned_abs(), None);
    out
}

/// A duration in the two largest units a person reads: `42s`, `9m 59s`, `3h 12m`, `2d 4h`.
pub(super) fn span(secs: u64) -> String {
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m {}s", secs / 60, secs % 60),
        3600..86_400 => format!("{}h {}m", secs / 3600, secs / 60 % 60),
        _ => format!("{}d {}h", secs / 86_400, secs / 3600 % 24),
    }
}

/// A provider's kind as `valet provider create --kind` spells it.
pub(super) fn kind_name(kind: i32) -> &'static str {
    match pb::ProviderKind::try_from(kind) {
        Ok(pb::ProviderKind::Oidc) => "oidc",
        Ok(pb::ProviderKind::ClientCredentials) => "client-credentials",
        Ok(pb::ProviderKind::ApiKey) => "api-key",
        Ok(pb::ProviderKind::HttpBasic) => "http-basic",
        Ok(pb::ProviderKind::HttpBearer) => "http-bearer",
        Ok(pb::ProviderKind::ServiceAccount) => "service-account",
        Ok(pb::ProviderKind::Mcp) => "mcp",
        _ => "oauth2",
    }
}

/// Where a provider's credentials may be sent (`Resolve`'s `target_url`).
fn print_egress(p: &pb::Provider) {
    if p.egress_hosts.is_empty() {
        println!(
            "egress_hosts:      any (a target URL is not checked; limit it with --egress-host)"
        );
    } else {
        println!("egress_hosts:      {}", p.egress_hosts.join(" "));
    }
}

pub(super) fn print_provider(p: &pb::Provider) {
    let kind = kind_name(p.kind);
    let method = match pb::TokenAuthMethod::try_from(p.token_auth_method) {
        Ok(pb::TokenAuthMethod::ClientSecretPost) => "client_secret_post",
        Ok(pb::TokenAuthMethod::PrivateKeyJwt) => "private_key_jwt",
        _ => "client_secret_basic",
    };
    println!("provider_id:       {}", p.provider_id);
    println!("name:              {}", p.name);
    println!("kind:              {kind}");
    if !p.profile.is_empty() {
        // With the variables it was given (`--var`), sorted.
        let mut vars: Vec<String> = p
            .profile_vars
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        vars.sort();
        if vars.is_empty() {
            println!("profile:           {}", p.profile);
        } else {
            println!("profile:           {} ({})", p.profile, vars.join(", "));
        }
    }
    if matches!(kind, "api-key" | "http-basic" | "http-bearer") {
        let location = match pb::CredentialLocation::try_from(p.credential_location) {
            Ok(pb::CredentialLocation::Query) => "query parameter",
            Ok(pb::CredentialLocation::Cookie) => "cookie",
            _ => "header",
        };
        let prefix = if p.credential_prefix.is_empty() {
            String::new()
        } else {
            format!(", the value after {:?}", p.credential_prefix)
        };
        println!(
            "credential:        {location} {}{prefix}",
            p.credential_name
        );
        println!("                   (store values with `valet credential put`)");
        print_egress(p);
        return;
    }
    // A service account without a client of its own authenticates with its assertion alone.
    let has_client = !(kind == "service-account" && p.client_id.is_empty());
    if has_client {
        println!("client_id:         {}", p.client_id);
        println!(
            "client_secret:     {}",
            if p.has_client_secret {
                "(set)"
            } else {
                "(none)"
            }
        );
    }
    if p.has_private_key {
        let kid = if p.key_id.is_empty() {
            String::new()
        } else {
            format!(", kid {}", p.key_id)
        };
        println!("private_key:       (set: {}{kid})", p.key_algorithm);
    }
    if kind == "service-account" {
        println!("assertion_issuer:  {}", p.assertion_issuer);
        if !p.assertion_subject.is_empty() {
            println!("assertion_subject: {}", p.assertion_subject);
        }
        println!("assertion_audience: {}", p.assertion_audience);
        if p.subject_from_user {
            println!("subject_from_user: yes (`--user` is impersonated)");
        }
    }
    if let Some(m) = &p.mcp {
        let how = match pb::McpRegistration::try_from(m.registration) {
            Ok(pb::McpRegistration::MetadataDocument) => {
                "client ID metadata document (the client id is its URL)"
            }
            Ok(pb::McpRegistration::Dynamic) => "dynamic client registration (RFC 7591)",
            _ => "pre-registered (client id given)",
        };
        println!("mcp_server_url:    {}", p.mcp_server_url);
        println!(
            "resource:          {}  (every token is bound to it)",
            m.resource
        );
        println!("registration:      {how}");
        if !m.registration_endpoint.is_empty() {
            println!("registration_endpoint: {}", m.registration_endpoint);
        }
        println!("scopes_supported:  {}", m.scopes_supported.join(" "));
    }
    if !p.issuer.is_empty() {
        println!("issuer:            {}", p.issuer);
    }
    if !p.auth_url.is_empty() {
        println!("auth_url:          {}", p.auth_url);
    }
    println!("token_url:         {}", p.token_url);
    if !p.device_authorization_url.is_empty() {
        println!("device_auth_url:   {}", p.device_authorization_url);
    }
    if p.revocation_url.is_empty() {
        println!("revocation_url:    none (a revoke deletes the grant in Valet only)");
    } else {
        println!("revocation_url:    {}", p.revocation_url);
    }
    if has_client && (p.has_client_secret || p.has_private_key) {
        println!("token_auth_method: {method}");
    } else if has_client && kind != "service-account" {
        println!("token_auth_method: none (a public client: it names itself)");
    }
    if p.token_exchange {
        println!("token_exchange:    yes (RFC 8693)");
    }
    println!("default_scopes:    {}", p.default_scopes.join(" "));
    print_egress(p);
    if p.max_grant_age_seconds > 0 {
        println!(
            "max_grant_age:     users consent again {}s after their last consent",
            p.max_grant_age_seconds
        );
    }
    if p.keep_alive_seconds > 0 {
        println!(
            "keep_alive:        idle grants refreshed every {}s",
            p.keep_alive_seconds
        );
    }
    if p.handout_policy == pb::HandoutPolicy::ReferenceOnly as i32 {
        println!("handout:           references only (agents never receive a token)");
    }
    if p.reference_ttl_seconds > 0 {
        println!(
            "reference_ttl:     references last {}",
            span(u64::from(p.reference_ttl_seconds))
        );
    }
    for (k, v) in &p.extra_auth_params {
        println!("param:             {k}={v}");
    }
    if !p.consent_return_url.is_empty() {
        println!(
            "consent_return_url: {}  (grants are stored after CompleteAuthorization)",
            p.consent_return_url
        );
    }
    if p.consent_flow == pb::ConsentFlow::Device as i32 {
        println!("consent_flow:      device ({})", p.device_authorization_url);
    } else if !p.redirect_uri.is_empty() {
        // An MCP client Valet registered itself (or describes by its metadata document) has
        // its redirect URI there already.
        let registered = p.mcp.as_ref().is_some_and(|m| {
            m.registration != pb::McpRegistration::Unspecified as i32
                && m.registration != pb::McpRegistration::PreRegistered as i32
        });
        let note = if registered {
            "registered by Valet with the authorization server"
        } else {
            "register this at the provider"
        };
        println!("redirect_uri:      {}  ({note})", p.redirect_uri);
    }
}

/// One grant on one tab-separated line, for `grep` and `cut`.
pub(super) fn print_grant(g: &pb::Grant) {
    let status = match pb::GrantStatus::try_from(g.status) {
        Ok(pb::GrantStatus::NeedsReauth) => "needs-reauth",
        _ => "active",
    };
    let agent = if g.agent_id.is_empty() {
        "(all agents)"
    } else {
        &g.agent_id
    };
    let mut extra = String::new();
    if !g.account.is_empty() {
        extra.push_str(&format!("\taccount={}", g.account));
    }
    if !g.subject.is_empty() {
        extra.push_str(&format!("\tsubject={}", g.subject));
    }
    if !g.email.is_empty() {
        extra.push_str(&format!("\temail={}", g.email));
    }
    if !g.declined_scopes.is_empty() {
        extra.push_str(&format!("\tdeclined={}", g.declined_scopes.join(" ")));
    }
    if g.needs_reauth_at > 0 {
        extra.push_str(&format!("\tneeds_reauth_at={}", date(g.needs_reauth_at)));
    }
    let mut metadata: Vec<_> = g.metadata.iter().collect();
    metadata.sort();
    for (k, v) in metadata {
        extra.push_str(&format!("\t{k}={v}"));
    }
    println!(
        "{}\tuser={}\tagent={agent}\t{status}\tscopes={}\tupdated_at={}{extra}",
        g.provider_id,
        g.user_id,
        g.scopes.join(" "),
        date(g.updated_at)
    );
}

/// What a provider profile sets: its endpoints and each way the provider departs from the RFCs
/// that Valet handles for it (`valet provider profiles NAME`).
pub(super) fn profile(p: &crate::profile::Profile) {
    let line = |label: &str, value: &str| println!("{:<22}{value}", format!("{label}:"));
    let list = |v: &[String]| v.join(", ");
    let pairs = |m: &std::collections::BTreeMap<String, String>| {
        m.iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    line("name", &p.name);
    line("title", &p.title);
    line("docs", &p.docs);
    let kind = match p.kind {
        crate::profile::ProfileKind::OAuth2 => "oauth2",
        crate::profile::ProfileKind::Oidc => "oidc",
    };
    line("kind", kind);
    if !p.variables.is_empty() {
        let given: Vec<String> = p.variables.iter().map(|v| format!("--var {v}=…")).collect();
        line("variables", &given.join(" "));
    }
    for (label, url) in [
        ("issuer", &p.issuer),
        ("auth_url", &p.auth_url),
        ("token_url", &p.token_url),
    ] {
        if let Some(u) = url {
            line(label, u);
        }
    }
    line(
        "revocation_url",
        p.revocation_url
            .as_deref()
            .unwrap_or("none (a revoke deletes the grant in Valet only)"),
    );
    line("token_auth_method", p.token_auth_method.as_str());
    if !p.default_scopes.is_empty() {
        line("default_scopes", &p.default_scopes.join(" "));
    }
    if !p.extra_auth_params.is_empty() {
        line("authorize params", &pairs(&p.extra_auth_params));
    }
    if !p.extra_exchange_params.is_empty() {
        line(
            "exchange params",
            &format!(
                "{}  (sent with the code exchange)",
                pairs(&p.extra_exchange_params)
            ),
        );
    }
    if let Some(h) = &p.token_header {
        line(
            "token header",
            &format!("{h}  (the token as it is, not Authorization: Bearer)"),
        );
    }
    if !p.metadata.is_empty() {
        line(
            "metadata",
            &format!("{}  (from the token response)", list(&p.metadata)),
        );
    }
    if !p.callback_metadata.is_empty() {
        line(
            "callback metadata",
            &format!("{}  (from the callback)", list(&p.callback_metadata)),
        );
    }
    if !p.invalid_grant_errors.is_empty() {
        line(
            "dead refresh token",
            &format!(
                "invalid_grant, {}  (answering a refresh: the user consents again)",
                list(&p.invalid_grant_errors)
            ),
        );
    }
    if p.token_lifetime_seconds > 0 {
        line(
            "token lifetime",
            &format!(
                "{} when the answer gives none",
                span(u64::from(p.token_lifetime_seconds))
            ),
        );
    }
    if p.keep_alive_seconds > 0 {
        line(
            "keep-alive",
            &format!(
                "idle grants refreshed every {}",
                span(u64::from(p.keep_alive_seconds))
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_show_the_date_and_how_far_away() {
        assert_eq!(span(42), "42s");
        assert_eq!(span(599), "9m 59s");
        assert_eq!(span(3600 * 3 + 12 * 60 + 5), "3h 12m");
        assert_eq!(span(86_400 * 2 + 3600 * 4 + 1), "2d 4h");
        let now = SystemClock.now_unix();
        let soon = when(now + 600);
        assert!(
            soon.ends_with(" (in 10m 0s)") || soon.ends_with(" (in 9m 59s)"),
            "{soon}"
        );
        assert!(when(now - 7200).ends_with(" (2h 0m ago)"));
        assert!(when(1_798_761_599).starts_with("2026-12-31T23:59:59Z ("));
        assert_eq!(when(0), "never (no lifetime was given)");
    }

    /// What tonic says when the daemon goes away mid-call (`valet auth` waiting for a consent
    /// while the daemon restarts) gets a hint saying so; another unknown error does not.
    #[test]
    fn a_connection_lost_mid_call_is_said() {
        let lost = explain(tonic::Status::unknown("transport error")).to_string();
        assert!(
            lost.contains("connection to valet was lost") && lost.contains("run the command again"),
            "{lost}"
        );
        let other = explain(tonic::Status::unknown("something else")).to_string();
        assert!(!other.contains("hint"), "{other}");
    }
}
