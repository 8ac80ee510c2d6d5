//! Valet's performance bar, measured side by side in one run and reported as ratios (never as
//! timed assertions: these machines are shared and noisy). `cargo bench` runs it in full; under
//! `cargo test` it runs a small smoke pass so it cannot rot.
//!
//! - cached `Authenticate` / `Resolve` throughput and p99 vs a no-op gRPC call on the same server
//!   (`grpc.health.v1.Health/Check`, the floor of the transport);
//! - cached handout vs reading a token straight from a Vault API server (RustyVault);
//! - N concurrent requests on one expired grant → provider refreshes;
//! - pending flows: daemon memory per flow and flow-start rate;
//! - the embedded store's read and write latency at 1,000, 100,000 and 1,000,000 records.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a benchmark fails by panicking"
)]
#![allow(clippy::print_stdout, reason = "a benchmark reports on stdout")]

#[path = "../tests/it/support/mod.rs"]
#[allow(
    dead_code,
    reason = "the harness is shared with the tests; the bench uses part of it"
)]
mod support;

use std::future::Future;
use std::time::{Duration, Instant};
use support::daemon::AGENT_KEY;
use support::rvault::RustyVault;
use support::{Fixture, token};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use valet::pb;

struct Sizes {
    calls: usize,
    concurrency: usize,
    herd: usize,
    flows: usize,
    /// Record counts the embedded store is measured at.
    records: &'static [usize],
}

struct Run {
    per_sec: f64,
    p50: Duration,
    p99: Duration,
}

/// Runs `calls` calls of `op` with `concurrency` in flight; throughput and latency percentiles.
async fn measure<F, Fut>(calls: usize, concurrency: usize, op: F) -> Run
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let per_worker = calls / concurrency;
    let start = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let op = op.clone();
            tokio::spawn(async move {
                let mut lat = Vec::with_capacity(per_worker);
                for _ in 0..per_worker {
                    let t = Instant::now();
                    op().await;
                    lat.push(t.elapsed());
                }
                lat
            })
        })
        .collect();
    let mut all = Vec::with_capacity(calls);
    for w in workers {
        all.extend(w.await.unwrap());
    }
    let elapsed = start.elapsed();
    all.sort_unstable();
    let pct = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)];
    Run {
        per_sec: all.len() as f64 / elapsed.as_secs_f64(),
        p50: pct(0.50),
        p99: pct(0.99),
    }
}

fn row(name: &str, r: &Run, floor: &Run) {
    println!(
        "{name:<34} {:>10.0}/s  p50 {:>8.1?}  p99 {:>8.1?}  throughput {:>5.2}x  p99 {:>5.2}x",
        r.per_sec,
        r.p50,
        r.p99,
        r.per_sec / floor.per_sec,
        r.p99.as_secs_f64() / floor.p99.as_secs_f64()
    );
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let sizes = if full {
        Sizes {
            calls: 20_000,
            concurrency: 64,
            herd: 1_000,
            flows: 100_000,
            records: &[1_000, 100_000, 1_000_000],
        }
    } else {
        Sizes {
            calls: 200,
            concurrency: 4,
            herd: 20,
            flows: 200,
            records: &[100, 1_000],
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run(&sizes));
    rt.block_on(store_scaling(sizes.records, sizes.calls));
}

/// The embedded store's read and write latency as it grows: each size is filled in bulk, then
/// `samples` reads and overwrites of random records are timed one at a time.
async fn store_scaling(sizes: &[usize], samples: usize) {
    use std::sync::Arc;
    use valet::store::{Cas, EmbeddedStore, SecretStore as _};
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
    // A grant-sized value.
    let value = || zeroize::Zeroizing::new(vec![b'v'; 400]);
    let key = |i: usize| format!("grants/bench/{i:09}/=");
    println!(
        "== embedded store: one record read and one write as the store grows ({samples} each)"
    );
    let mut filled = 0;
    for &n in sizes {
        while filled < n {
            let end = (filled + 10_000).min(n);
            let batch = (filled..end).map(|i| (key(i), value())).collect();
            store.put_many(batch).await.unwrap();
            filled = end;
        }
        let pick = move || key(rand_index(n));
        let s = store.clone();
        let read = measure(samples, 1, move || {
            let s = s.clone();
            async move {
                s.get(&pick()).await.unwrap().unwrap();
            }
        })
        .await;
        let s = store.clone();
        let write = measure(samples, 1, move || {
            let s = s.clone();
            async move {
                s.put(&pick(), value(), Cas::Any).await.unwrap();
            }
        })
        .await;
        let mib = std::fs::metadata(dir.path().join("store.redb"))
            .map(|m| m.len() as f64 / 1_048_576.0)
            .unwrap_or(0.0);
        println!(
            "{n:>9} records ({mib:>6.0} MiB)  read p50 {:>8.1?} p99 {:>8.1?}  write p50 {:>8.1?} p99 {:>8.1?}",
            read.p50, read.p99, write.p50, write.p99
        );
    }
    println!();
}

/// A pseudo-random index below `n` (the benchmark needs spread, not secrecy).
fn rand_index(n: usize) -> usize {
    use std::sync::atomic::{AtomicU64, Ordering};
    static STATE: AtomicU64 = AtomicU64::new(0x9E37_79B9_7F4A_7C15);
    let mut x = STATE.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed);
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    (x % n as u64) as usize
}

async fn run(s: &Sizes) {
    let f = Fixture::new().await;
    f.oidc_provider("idp", "basic-client").await;
    let granted = f
        .authorize(AGENT_KEY, Fixture::request("idp", "alice", ""))
        .await;
    let channel = f.valet.raw_channel().await;
    let creds = f.valet.credentials(AGENT_KEY).await;

    let health = HealthClient::new(channel);
    let reference = match f
        .authenticate(
            AGENT_KEY,
            pb::AuthenticateRequest {
                handout: pb::Handout::Reference as i32,
                ..Fixture::request("idp", "alice", "")
            },
        )
        .await
        .result
    {
        Some(pb::authenticate_response::Result::Reference(r)) => r.reference,
        other => panic!("expected a reference: {other:?}"),
    };
    // One caller at a time, then many: the handout against the transport floor at each.
    let mut by_concurrency = Vec::new();
    for concurrency in [1, s.concurrency] {
        let h = health.clone();
        let floor = measure(s.calls, concurrency, move || {
            let mut h = h.clone();
            async move {
                h.check(HealthCheckRequest {
                    service: String::new(),
                })
                .await
                .unwrap();
            }
        })
        .await;
        let c = creds.clone();
        let auth = measure(s.calls, concurrency, move || {
            let mut c = c.clone();
            async move {
                c.authenticate(Fixture::request("idp", "alice", ""))
                    .await
                    .unwrap();
            }
        })
        .await;
        let (c, reference) = (creds.clone(), reference.clone());
        let resolve = measure(s.calls, concurrency, move || {
            let mut c = c.clone();
            let reference = reference.clone();
            async move {
                c.resolve(pb::ResolveRequest {
                    reference,
                    min_ttl_seconds: 0,
                })
                .await
                .unwrap();
            }
        })
        .await;
        by_concurrency.push((concurrency, floor, auth, resolve));
    }

    // What an agent would do without Valet: read the token from a Vault API server.
    let rv = RustyVault::start().await;
    let http = reqwest::Client::new();
    let url = format!("{}/v1/secret/bench/token", rv.address);
    http.post(&url)
        .header("X-Vault-Token", &rv.root_token)
        .json(&serde_json::json!({ "access_token": granted.access_token }))
        .send()
        .await
        .unwrap();
    let root = rv.root_token.clone();
    let vault = measure(s.calls, s.concurrency, move || {
        let (http, url, root) = (http.clone(), url.clone(), root.clone());
        async move {
            let r = http
                .get(&url)
                .header("X-Vault-Token", root)
                .send()
                .await
                .unwrap();
            assert!(r.status().is_success());
            r.bytes().await.unwrap();
        }
    })
    .await;

    for (concurrency, floor, auth, resolve) in &by_concurrency {
        println!(
            "\n== cached handout vs the transport floor ({} calls, {concurrency} in flight)",
            s.calls
        );
        row("grpc.health Check (floor)", floor, floor);
        row("Credentials/Authenticate (cached)", auth, floor);
        row("Credentials/Resolve (cached)", resolve, floor);
    }
    let (_, floor, auth, _) = by_concurrency.last().expect("measured");
    println!(
        "\n== cached handout vs reading the token from Vault (RustyVault KV v1, {} in flight)",
        s.concurrency
    );
    row("Vault API read (no Valet)", &vault, floor);
    println!(
        "Authenticate is {:.1}x the throughput of a Vault read; p99 {:.2}x",
        auth.per_sec / vault.per_sec,
        auth.p99.as_secs_f64() / vault.p99.as_secs_f64()
    );

    // A thundering herd on one expired grant.
    f.idp.delay_token(1000).await;
    let before = f.idp.token_requests().await;
    let herd = (0..s.herd).map(|_| {
        let mut c = creds.clone();
        async move {
            token(
                c.authenticate(pb::AuthenticateRequest {
                    min_ttl_seconds: 7200,
                    ..Fixture::request("idp", "alice", "")
                })
                .await
                .unwrap()
                .into_inner(),
            )
        }
    });
    let t = Instant::now();
    let tokens = futures::future::join_all(herd).await;
    let refreshes = f.idp.token_requests().await - before;
    f.idp.delay_token(0).await;
    println!(
        "\n== {} concurrent requests on one expired grant: {refreshes} provider refresh(es), {} distinct tokens, {:.1?}",
        s.herd,
        tokens
            .iter()
            .map(|t| &t.access_token)
            .collect::<std::collections::HashSet<_>>()
            .len(),
        t.elapsed()
    );

    // Pending flows: distinct users so the per-user bound does not apply.
    let rss_before = f.valet.rss_kib();
    let t = Instant::now();
    let per_worker = s.flows / s.concurrency;
    let workers: Vec<_> = (0..s.concurrency)
        .map(|w| {
            let mut c = creds.clone();
            tokio::spawn(async move {
                for i in 0..per_worker {
                    c.authenticate(Fixture::request("idp", &format!("user-{w}-{i}"), ""))
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for w in workers {
        w.await.unwrap();
    }
    let elapsed = t.elapsed();
    let started = per_worker * s.concurrency;
    let rss_after = f.valet.rss_kib();
    println!(
        "\n== {started} pending flows: {:.0} flow starts/s, daemon RSS {} KiB → {} KiB ({:.0} bytes per flow)\n",
        started as f64 / elapsed.as_secs_f64(),
        rss_before,
        rss_after,
        (rss_after.saturating_sub(rss_before) * 1024) as f64 / started as f64
    );
}
