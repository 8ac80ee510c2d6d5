//! The quickstart as a new user runs it: the `valet` CLI against a running daemon.

use crate::support::Fixture;
use crate::support::daemon::{ADMIN_KEY, AGENT_KEY};
use crate::support::idp::secret_of;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

fn cli(f: &Fixture, key: &str) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_valet"));
    c.env("VALET_SERVER", &f.valet.grpc_url)
        .env("VALET_KEY", key);
    c
}

fn run(mut c: Command) -> String {
    succeeded(c.output().unwrap())
}

/// A finished command's stdout, once it is known to have succeeded (else its output is shown).
fn succeeded(out: std::process::Output) -> String {
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// Runs a command expected to fail: what it wrote to stderr.
fn fails(mut c: Command) -> String {
    let out = c.output().unwrap();
    assert!(
        !out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `valet auth --reference` for alice at `provider`, as the agent key.
fn auth_reference(f: &Fixture, provider: &str) -> Command {
    let mut by_ref = cli(f, AGENT_KEY);
    by_ref.args(["auth", "--provider", provider, "--user", "alice"]);
    by_ref.arg("--reference");
    by_ref
}

/// The reference `valet auth --reference` printed for alice at `provider`.
fn a_reference(f: &Fixture, provider: &str) -> String {
    run(auth_reference(f, provider))
        .lines()
        .find_map(|l| l.strip_prefix("reference:  "))
        .expect("a reference is printed")
        .to_owned()
}

/// `valet auth --reference` for alice at `provider`, then `valet resolve -` of the reference it
/// printed, given on stdin (not in the arguments `ps` shows): what `resolve` printed.
fn resolve_through_a_reference(f: &Fixture, provider: &str) -> String {
    use std::io::Write as _;
    let reference = a_reference(f, provider);
    let mut resolve = cli(f, AGENT_KEY);
    resolve
        .args(["resolve", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = resolve.spawn().unwrap();
    writeln!(child.stdin.take().unwrap(), "{reference}").unwrap();
    succeeded(child.wait_with_output().unwrap())
}

/// `valet provider create ID --kind oidc` at the test OpenID provider with `scopes`: its output.
fn create_oidc(f: &Fixture, id: &str, scopes: &[&str]) -> String {
    let mut create = cli(f, ADMIN_KEY);
    create
        .args(["provider", "create", id, "--kind", "oidc"])
        .args([
            "--client-id",
            "basic-client",
            "--client-secret-env",
            "IDP_SECRET",
        ])
        .args(["--issuer", &f.idp.issuer])
        .env("IDP_SECRET", secret_of("basic-client"));
    for scope in scopes {
        create.args(["--scope", scope]);
    }
    run(create)
}

/// `valet auth` for `user` at `provider`, consented in the test browser from the link it shows:
/// its stdout and stderr, and the link.
async fn auth_with_consent(f: &Fixture, provider: &str, user: &str) -> (String, String, String) {
    let mut auth = cli(f, AGENT_KEY);
    auth.args(["auth", "--provider", provider, "--user", user])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = auth.spawn().unwrap();
    let mut prompt = BufReader::new(child.stderr.take().unwrap()).lines();
    let url = loop {
        let line = prompt.next().expect("an auth URL").unwrap();
        if let Some(u) = line.trim().strip_prefix("http") {
            break format!("http{u}");
        }
    };
    f.browser.consent(&url, user).await;
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let stderr: Vec<String> = prompt.map(Result::unwrap).collect();
    (
        String::from_utf8(out.stdout).unwrap(),
        stderr.join("\n"),
        url,
    )
}

#[tokio::test]
async fn quickstart_provider_auth_grants_revoke() {
    let f = Fixture::new().await;
    let out = create_oidc(&f, "idp", &["openid", "email"]);
    assert!(
        out.contains(&f.valet.callback_url("idp")),
        "shows the redirect URI: {out}"
    );
    assert!(out.contains("client_secret:     (set)") && !out.contains(&secret_of("basic-client")));
    // Discovery found the revocation endpoint, and it is shown.
    assert!(
        out.contains(&format!("revocation_url:    {}/", f.idp.issuer)),
        "{out}"
    );

    // The prompt is on stderr, so `TOKEN=$(valet auth …)` captures only the result.
    let (stdout, _, url) = auth_with_consent(&f, "idp", "alice").await;
    assert!(
        !stdout.contains("Open this URL") && !stdout.contains(&url),
        "{stdout}"
    );
    let rest: Vec<String> = stdout.lines().map(str::to_owned).collect();
    let token = rest
        .iter()
        .find_map(|l| l.strip_prefix("access_token: "))
        .expect("the token is printed");
    // A date a person reads, and how far away it is.
    let expires = rest
        .iter()
        .find(|l| l.starts_with("expires_at:"))
        .expect("the expiry is printed");
    assert!(
        expires.contains("Z (in ") && expires.contains('T'),
        "{expires}"
    );
    assert!(f.idp.userinfo(token).await.status().is_success());

    // References: the grant exists, so the reference comes at once; resolve turns it into a token.
    let out = resolve_through_a_reference(&f, "idp");
    assert!(
        out.contains("header:       Authorization: Bearer "),
        "{out}"
    );
    let resolved = out
        .lines()
        .find_map(|l| l.strip_prefix("access_token: "))
        .unwrap();
    assert!(f.idp.userinfo(resolved).await.status().is_success());

    let mut grants = cli(&f, AGENT_KEY);
    grants.args(["grants", "--user", "alice"]);
    let out = run(grants);
    assert!(
        out.contains("idp\tuser=alice") && out.contains("active"),
        "{out}"
    );
    assert!(
        out.contains("\tsubject=") && out.contains("updated_at=20"),
        "{out}"
    );
    assert!(!out.contains(token));
    // Filters narrow the list: by status, agent and account.
    for (filter, found) in [
        (["--status", "active"], true),
        (["--status", "needs-reauth"], false),
        (["--agent", "writer"], false),
        (["--account", "work"], false),
        (["--provider", "idp"], true),
    ] {
        let mut grants = cli(&f, AGENT_KEY);
        grants.args(["grants", "--user", "alice"]).args(filter);
        let out = run(grants);
        assert_eq!(out.contains("idp\tuser=alice"), found, "{filter:?}: {out}");
        assert_eq!(out.trim() == "no grants", !found, "{filter:?}: {out}");
    }
    // A mistyped provider is said, not taken for one without grants.
    let mut typo = cli(&f, AGENT_KEY);
    typo.args(["grants", "--user", "alice", "--provider", "ipd"]);
    let err = fails(typo);
    assert!(err.contains("no provider 'ipd' is configured"), "{err}");
    // An agent this key may not act as is refused, as when acting for it, not an empty list.
    let mut other = cli(&f, AGENT_KEY);
    other.args(["grants", "--user", "alice", "--agent", "someone-else"]);
    let err = fails(other);
    assert!(
        err.contains("may not act as agent_id \"someone-else\"") && err.contains("[[callers]]"),
        "{err}"
    );
    let mut bad = cli(&f, AGENT_KEY);
    bad.args(["grants", "--status", "expired"]);
    let out = bad.output().unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("possible values: active, needs-reauth"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let mut revoke = cli(&f, AGENT_KEY);
    revoke.args(["revoke", "--provider", "idp", "--user", "alice"]);
    let out = run(revoke);
    assert_eq!(out.lines().next(), Some("revoked"), "{out}");
    assert!(
        out.contains("the provider revoked the tokens too"),
        "the issuer advertises its revocation endpoint: {out}"
    );

    // A missing key says what to do.
    let mut nokey = cli(&f, "");
    nokey.env_remove("VALET_KEY").args(["provider", "list"]);
    let out = nokey.output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--key or VALET_KEY"));
}

#[tokio::test]
async fn provider_profiles_are_listed_and_create_from_one_with_a_variable() {
    let f = Fixture::new().await;
    let mut list = cli(&f, ADMIN_KEY);
    list.args(["provider", "profiles"]);
    let out = run(list);
    for name in [
        "github",
        "github-app",
        "google",
        "microsoft",
        "slack",
        "salesforce",
        "notion",
    ] {
        assert!(
            out.lines().any(|l| l.starts_with(name)),
            "{name} missing: {out}"
        );
    }
    assert!(out.contains("--var tenant="), "variables are shown: {out}");

    // One profile shown: what the provider does differently, which Valet handles.
    let mut one = cli(&f, ADMIN_KEY);
    one.args(["provider", "profiles", "shopify"]);
    let out = run(one);
    for said in [
        "variables:            --var shop=…",
        "token header:         X-Shopify-Access-Token",
        "exchange params:      expiring=1",
    ] {
        assert!(out.contains(said), "{said}: {out}");
    }
    // Another name of a provider finds its profile.
    let mut other = cli(&f, ADMIN_KEY);
    other.args(["provider", "profiles", "twitter"]);
    let err = fails(other);
    assert!(err.contains("did you mean \"x\""), "{err}");

    // The microsoft profile against the real OpenID provider (issuer given, tenant filled).
    let mut create = cli(&f, ADMIN_KEY);
    create
        .args(["provider", "create", "entra", "--profile", "microsoft"])
        .args([
            "--var",
            "tenant=contoso.onmicrosoft.com",
            "--issuer",
            &f.idp.issuer,
        ])
        .args([
            "--client-id",
            "basic-client",
            "--client-secret-env",
            "IDP_SECRET",
        ])
        .env("IDP_SECRET", secret_of("basic-client"));
    let out = run(create);
    assert!(out.contains("profile:           microsoft"), "{out}");
    assert!(
        out.contains(&format!("issuer:            {}", f.idp.issuer)),
        "{out}"
    );

    // A missing variable is refused with the field and writes nothing.
    let mut bad = cli(&f, ADMIN_KEY);
    bad.args(["provider", "create", "entra2", "--profile", "microsoft"])
        .args(["--client-id", "x", "--client-secret-env", "IDP_SECRET"])
        .env("IDP_SECRET", "s");
    let out = bad.output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("profile_vars") && err.contains("tenant"),
        "{err}"
    );
    // An empty secret is named as such (the daemon would take it for "keep the stored one"),
    // and two sources of it are a usage error.
    let mut empty = cli(&f, ADMIN_KEY);
    empty
        .args(["provider", "create", "entra2", "--profile", "microsoft"])
        .args(["--var", "tenant=t", "--client-id", "x"])
        .args(["--client-secret-env", "IDP_SECRET"])
        .env("IDP_SECRET", "");
    let err = fails(empty);
    assert!(
        err.contains("environment variable IDP_SECRET holds nothing"),
        "{err}"
    );
    let mut both = cli(&f, ADMIN_KEY);
    both.args(["provider", "create", "entra2", "--client-id", "x"])
        .args([
            "--client-secret-env",
            "IDP_SECRET",
            "--client-secret-file",
            "/x",
        ]);
    let out = both.output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let mut get = cli(&f, ADMIN_KEY);
    get.args(["provider", "get", "entra2"]);
    assert!(
        !get.output().unwrap().status.success(),
        "nothing was written"
    );
}

/// `valet provider profiles | head -1`: when the reader has gone, the command ends quietly (exit
/// 0, nothing on stderr) instead of panicking. The pipe's read end is closed before the command
/// starts, so every write it makes fails.
#[test]
fn output_into_a_closed_pipe_ends_the_command_quietly() {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = Command::new(env!("CARGO_BIN_EXE_valet"))
        .args(["provider", "profiles"])
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{:?}: {stderr}", out.status);
    assert!(stderr.is_empty(), "nothing on stderr, got: {stderr}");
}

/// `valet key new --name --role` prints a `[[callers]]` entry the daemon's config accepts,
/// holding the key's hash; an entry the daemon would refuse is refused before a key is shown.
#[test]
fn key_new_prints_a_callers_entry_the_config_accepts() {
    let valet = env!("CARGO_BIN_EXE_valet");
    let out = std::process::Command::new(valet)
        .args(["key", "new", "--name", "planner", "--role", "agent"])
        .args(["--agent", "planner", "--agent", "research-*"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let key = text
        .lines()
        .find_map(|l| l.strip_prefix("key:        "))
        .expect("the key is printed");
    let hash = hex::encode(ring::digest::digest(&ring::digest::SHA256, key.as_bytes()));
    let entry: String = text
        .lines()
        .skip_while(|l| *l != "[[callers]]")
        .take_while(|l| !l.is_empty())
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(
        entry,
        format!(
            "[[callers]]\nname = \"planner\"\nrole = \"agent\"\nkey_sha256 = \"{hash}\"\nagents = [\"planner\", \"research-*\"]\n"
        )
    );
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("valet.toml");
    std::fs::write(&config, &entry).unwrap();
    let check = std::process::Command::new(valet)
        .args(["check-config", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );

    // The reserved name: the daemon's own message, and no key.
    let refused = std::process::Command::new(valet)
        .args(["key", "new", "--name", "admin", "--role", "admin"])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(refused.stdout.is_empty(), "no key is shown");
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("is reserved for the admin key") && err.contains("nothing was made"),
        "{err}"
    );
}

/// An OpenID provider drops `offline_access` from a consent without `prompt=consent` (OpenID
/// Connect Core section 11): the CLI says it is missing and what to change, on stderr.
#[tokio::test]
async fn a_dropped_offline_access_gets_a_hint_at_prompt_consent() {
    let f = Fixture::new().await;
    create_oidc(&f, "idp", &["openid", "offline_access"]);
    let (stdout, stderr, _) = auth_with_consent(&f, "idp", "alice").await;
    assert!(stdout.contains("missing:      offline_access"), "{stdout}");
    assert!(
        stderr.contains("hint:") && stderr.contains("--param prompt=consent"),
        "{stderr}"
    );
}

/// A `--min-ttl` longer than the provider's tokens live (the test provider's: an hour) is not
/// met by any token: the refreshed one is printed with a note saying so; a shorter one, none.
#[tokio::test]
async fn a_min_ttl_longer_than_the_tokens_live_is_noted() {
    let f = Fixture::new().await;
    create_oidc(&f, "idp", &["openid", "offline_access"]);
    auth_with_consent(&f, "idp", "alice").await;
    let auth = |min_ttl: &str| {
        let mut auth = cli(&f, AGENT_KEY);
        auth.args([
            "auth",
            "--provider",
            "idp",
            "--user",
            "alice",
            "--min-ttl",
            min_ttl,
        ]);
        let out = auth.output().unwrap();
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let long = auth("7200");
    assert!(
        long.contains("note: this token lives") && long.contains("less than --min-ttl 7200s"),
        "{long}"
    );
    assert!(!auth("60").contains("note:"));
}

/// What agents may receive and how long references last are set from the command line and
/// shown by `provider get`; an agent's `valet auth` for a token is refused, `--reference` works.
#[tokio::test]
async fn a_reference_only_provider_from_the_command_line() {
    let f = Fixture::new().await;
    let mut create = cli(&f, ADMIN_KEY);
    create
        .args(["provider", "create", "refs", "--kind", "oidc"])
        .args(["--client-id", "basic-client", "--client-secret-env", "S"])
        .args(["--issuer", &f.idp.issuer])
        .args([
            "--handout",
            "reference-only",
            "--reference-ttl-seconds",
            "3600",
        ])
        .env("S", secret_of("basic-client"));
    let out = run(create);
    assert!(out.contains("handout:           references only"), "{out}");
    let mut get = cli(&f, ADMIN_KEY);
    get.args(["provider", "get", "refs"]);
    let out = run(get);
    assert!(
        out.contains("references only") && out.contains("reference_ttl:     references last 1h 0m"),
        "{out}"
    );
    let mut by_token = cli(&f, AGENT_KEY);
    by_token.args(["auth", "--provider", "refs", "--user", "alice"]);
    let err = fails(by_token);
    assert!(
        err.contains("PermissionDenied") && err.contains("REFERENCE"),
        "{err}"
    );
    // Back to tokens and references alike; a lifetime beyond the limit is refused.
    let mut update = cli(&f, ADMIN_KEY);
    update.args(["provider", "update", "refs", "--handout", "any"]);
    assert!(!run(update).contains("references only"));
    let mut too_long = cli(&f, ADMIN_KEY);
    too_long.args([
        "provider",
        "update",
        "refs",
        "--reference-ttl-seconds",
        "999999999",
    ]);
    let err = fails(too_long);
    assert!(err.contains("reference_ttl_seconds"), "{err}");
}

/// A static API key stored from standard input (`--value-file -`), never echoed, and applied by
/// `resolve`; an empty or blank input is refused and stores nothing; another agent's empty slot,
/// a reference revoked twice and an agent key on an operator command each get a clear message.
#[tokio::test]
async fn credential_put_reads_the_value_from_standard_input() {
    use std::io::Write as _;
    let f = Fixture::new().await;
    let mut create = cli(&f, ADMIN_KEY);
    create.args(["provider", "create", "keyed", "--kind", "api-key"]);
    create.args(["--location", "header", "--credential-name", "X-API-Key"]);
    run(create);
    let put = |provider: &str, value: &'static str| {
        let mut put = cli(&f, AGENT_KEY);
        put.args([
            "credential",
            "put",
            "--provider",
            provider,
            "--user",
            "alice",
        ])
        .args(["--value-file", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = put.spawn().unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(value.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };

    for blank in ["\n", "   \n"] {
        let refused = put("keyed", blank);
        assert!(!refused.status.success());
        let err = String::from_utf8_lossy(&refused.stderr);
        assert!(
            err.contains("InvalidArgument") && err.contains("value: is empty"),
            "{err}"
        );
    }
    let err = fails(auth_reference(&f, "keyed"));
    assert!(
        err.contains("valet credential put"),
        "nothing was stored: {err}"
    );

    let stored = put("keyed", "canary-api-key\n");
    let text = String::from_utf8_lossy(&stored.stdout);
    assert!(stored.status.success(), "{text}");
    assert!(
        text.contains("stored the credential") && !text.contains("canary-api-key"),
        "{text}"
    );
    let out = resolve_through_a_reference(&f, "keyed");
    assert!(out.contains("X-API-Key: canary-api-key"), "{out}");
    // `credential put` of alice's value at keyed, from an environment variable.
    let put_env = |slot: [&str; 2], var: &str, value: &str| {
        let mut put = cli(&f, AGENT_KEY);
        put.args([
            "credential",
            "put",
            "--provider",
            "keyed",
            "--user",
            "alice",
        ])
        .args(slot)
        .args(["--value-env", var])
        .env(var, value);
        run(put)
    };
    // A secret pasted where its variable's name or its file's path belongs is not echoed back
    // (onto a terminal, into a CI log); the error names the flag and says what it takes.
    let pasted = "sk-live-canary-pasted-secret";
    for (flag, what) in [
        ("--value-env", "the variable's name"),
        ("--value-file", "a file's path"),
    ] {
        let mut put = cli(&f, AGENT_KEY);
        put.args([
            "credential",
            "put",
            "--provider",
            "keyed",
            "--user",
            "alice",
        ])
        .args([flag, pasted]);
        let err = fails(put);
        assert!(
            err.contains(flag) && err.contains(what) && !err.contains(pasted),
            "{err}"
        );
    }
    for flag in ["--client-secret-env", "--client-secret-file"] {
        let mut create = cli(&f, ADMIN_KEY);
        create
            .args(["provider", "create", "pasted", "--kind", "oidc"])
            .args(["--client-id", "basic-client", "--issuer", &f.idp.issuer])
            .args([flag, pasted]);
        let err = fails(create);
        assert!(err.contains(flag) && !err.contains(pasted), "{err}");
    }
    // One agent's own value: the confirmation names the agent.
    let out = put_env(["--agent", "planner"], "PLANNER_KEY", "planner-canary");
    assert!(
        out.contains("for alice (agent planner only) at keyed"),
        "{out}"
    );
    // Another of alice's accounts gets its own value.
    let text = put_env(["--account", "work"], "WORK_KEY", "canary-work-key");
    assert!(
        text.contains("alice (account work)") && !text.contains("canary-work-key"),
        "{text}"
    );
    let work = crate::support::token(
        f.authenticate(
            AGENT_KEY,
            valet::pb::AuthenticateRequest {
                account: "work".into(),
                ..Fixture::request("keyed", "alice", "")
            },
        )
        .await,
    );
    assert_eq!(work.access_token, "canary-work-key");
    // A query parameter is shown as it is sent.
    let mut create = cli(&f, ADMIN_KEY);
    create.args(["provider", "create", "by-query", "--kind", "api-key"]);
    create.args(["--location", "query", "--credential-name", "appid"]);
    run(create);
    let mut again = cli(&f, ADMIN_KEY);
    again.args(["provider", "create", "by-query", "--kind", "api-key"]);
    again.args(["--location", "query", "--credential-name", "appid"]);
    let err = fails(again);
    assert!(
        err.contains("already exists") && err.contains("valet provider update"),
        "{err}"
    );
    let mut list = cli(&f, ADMIN_KEY);
    list.args(["provider", "list"]);
    let out = run(list);
    let rows: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows[0],
        ["PROVIDER", "KIND", "NAME", "REDIRECT", "URI"],
        "{out}"
    );
    assert!(
        rows.contains(&vec!["by-query", "api-key", "by-query", "-"]),
        "{out}"
    );
    let mut get = cli(&f, ADMIN_KEY);
    get.args(["provider", "get", "by-query"]);
    let out = run(get);
    assert!(
        out.contains("kind:              api-key") && out.contains("egress_hosts:      any ("),
        "{out}"
    );
    let mut update = cli(&f, ADMIN_KEY);
    update.args(["provider", "update", "by-query"]);
    let out = run(update);
    assert!(
        out.starts_with("nothing to change for provider by-query"),
        "{out}"
    );
    let mut update = cli(&f, ADMIN_KEY);
    update.args([
        "provider",
        "update",
        "by-query",
        "--egress-host",
        "api.example",
    ]);
    let out = run(update);
    assert!(out.contains("egress_hosts:      api.example"), "{out}");
    assert!(put("by-query", "query-canary\n").status.success());
    let out = resolve_through_a_reference(&f, "by-query");
    assert!(out.contains("query:        appid=query-canary"), "{out}");
    // The list can be dropped again (any host), and a parameter removed by name.
    let mut update = cli(&f, ADMIN_KEY);
    update.args(["provider", "update", "by-query", "--no-egress-hosts"]);
    assert!(run(update).contains("egress_hosts:      any ("));
    create_oidc(&f, "with-param", &["openid"]);
    let mut update = cli(&f, ADMIN_KEY);
    update.args([
        "provider",
        "update",
        "with-param",
        "--param",
        "prompt=consent",
    ]);
    assert!(run(update).contains("param:             prompt=consent"));
    let unset = || {
        let mut unset = cli(&f, ADMIN_KEY);
        unset.args([
            "provider",
            "update",
            "with-param",
            "--unset-param",
            "prompt",
        ]);
        unset
    };
    assert!(!run(unset()).contains("prompt=consent"));
    let err = fails(unset());
    assert!(err.contains("no such parameter"), "{err}");
    // A profile's parameter cannot be removed: said, nothing sent.
    let mut notion = cli(&f, ADMIN_KEY);
    notion
        .args(["provider", "create", "n", "--profile", "notion"])
        .args(["--client-id", "c", "--client-secret-env", "S"])
        .env("S", "s");
    run(notion);
    let mut unset = cli(&f, ADMIN_KEY);
    unset.args(["provider", "update", "n", "--unset-param", "owner"]);
    let err = fails(unset);
    assert!(
        err.contains("the profile \"notion\" sets it") && err.contains("--param owner="),
        "{err}"
    );

    // Another agent's slot is empty, and the error says whose slot was looked in.
    let mut other = cli(&f, ADMIN_KEY);
    other.args(["auth", "--provider", "keyed", "--user", "alice"]);
    other.args(["--agent", "other"]);
    let err = fails(other);
    assert!(
        err.contains("user 'alice', agent 'other'") && err.contains("valet credential put"),
        "{err}"
    );

    // Revoking a reference twice: the second time fails, saying there is no such reference.
    let reference = a_reference(&f, "keyed");
    let revoke = || {
        let mut revoke = cli(&f, AGENT_KEY);
        revoke.args(["revoke", "--reference", &reference]);
        revoke
    };
    assert_eq!(run(revoke()).lines().next(), Some("revoked"));
    let again = fails(revoke());
    assert!(again.contains("no such reference"), "{again}");
    // No grant for bob (a mistyped user): a failure that says where to look.
    let mut nobody = cli(&f, AGENT_KEY);
    nobody.args(["revoke", "--provider", "keyed", "--user", "bob"]);
    let out = fails(nobody);
    assert!(
        out.contains("no such grant (an agent's own grant needs --agent")
            && out.contains("valet grants --user bob"),
        "{out}"
    );
    // An empty reference is refused by the command line, not taken for a grant's revocation.
    let mut empty = cli(&f, AGENT_KEY);
    empty.args(["revoke", "--reference", ""]);
    let out = empty.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("--reference"), "{err}");

    // An agent key on an operator command: the daemon's reason, and no misleading hint.
    let mut list = cli(&f, AGENT_KEY);
    list.args(["provider", "list"]);
    let err = fails(list);
    assert!(
        err.contains("PermissionDenied") && err.contains("needs an admin API key"),
        "{err}"
    );
    assert!(!err.contains("hint"), "{err}");

    // Deleting the provider says what went with it.
    let mut delete = cli(&f, ADMIN_KEY);
    delete.args(["provider", "delete", "keyed"]);
    assert_eq!(
        run(delete).trim(),
        "deleted provider keyed and its 3 grants",
        "alice's default and work accounts, and planner's own"
    );
}

/// `VALET_SERVER` mistakes a new user makes, each explained: a bare address (as grpcurl takes
/// it) needs its scheme, an https:// one a CA, a port nobody listens on says so once, and the
/// daemon's HTTP port is not its gRPC one.
#[tokio::test]
async fn server_address_mistakes_are_explained() {
    let grants = |server: &str| {
        let mut grants = Command::new(env!("CARGO_BIN_EXE_valet"));
        grants.args(["grants", "--user", "alice"]);
        grants
            .env("VALET_SERVER", server)
            .env("VALET_KEY", AGENT_KEY);
        grants.env_remove("VALET_TLS_CA");
        fails(grants)
    };
    let err = grants("127.0.0.1:50051");
    assert!(
        err.contains("like http://127.0.0.1:50051") && !err.contains("is `valet serve` running"),
        "{err}"
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = grants(&format!("http://127.0.0.1:{port}"));
    assert!(
        err.contains("is `valet serve` running") && err.matches("Connection refused").count() == 1,
        "{err}"
    );
    let f = Fixture::new().await;
    let err = grants(&format!("http://{}", f.valet.http_addr));
    assert!(
        err.contains("hint: is --server (VALET_SERVER) the gRPC address"),
        "{err}"
    );
    // https:// without --tls-ca trusts the system's roots; a daemon without grpc_tls is not
    // reached that way, and the message says what to check.
    let err = grants(&f.valet.grpc_url.replace("http://", "https://"));
    assert!(
        err.contains("over TLS") && err.contains("--tls-ca"),
        "{err}"
    );
}

/// What a newcomer gets wrong first: a connection flag after a group's subcommand is taken,
/// a field the daemon names is translated to the flag that sets it, and a pasted key with a
/// character a header cannot carry is said to be that.
#[tokio::test]
async fn connection_flags_go_anywhere_and_refusals_name_the_flag() {
    let f = Fixture::new().await;
    create_oidc(&f, "idp", &[]);
    let mut list = Command::new(env!("CARGO_BIN_EXE_valet"));
    list.args([
        "provider",
        "list",
        "--server",
        &f.valet.grpc_url,
        "--key",
        ADMIN_KEY,
    ])
    .env_remove("VALET_SERVER")
    .env_remove("VALET_KEY");
    assert!(run(list).contains("idp"));
    let mut no_user = cli(&f, AGENT_KEY);
    no_user.args(["auth", "--provider", "idp"]);
    let err = fails(no_user);
    assert!(
        err.contains("user_id") && err.contains("hint: `user_id` is given with --user"),
        "{err}"
    );
    let mut pasted = cli(&f, "valet_3q2\u{2026}");
    pasted.args(["grants", "--user", "alice"]);
    let err = fails(pasted);
    assert!(err.contains("a gRPC header cannot carry"), "{err}");
}
