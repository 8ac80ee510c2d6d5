//! Valet's performance bar, measured side by side in one run and reported as ratios (never as
//! timed assertions: these machines are shared and noisy). `cargo bench` runs it in full; under
//! `cargo test` it runs a small smoke pass so it cannot rot.
//!
//! - cached `Authenticate` / `Resolve` throughput and p99 vs a no-op gRPC call on the same server
//!   (`grpc.health.v1.Health/Check`, the floor of the transport);
//! - cached handout vs reading a token straight from a Vault API server (RustyVault);
//! - N concurrent requests on one expired grant → provider refreshes;
//! - the same over the Unix socket (a sidecar) against loopback TCP;
//! - N concurrent requests on one expired grant spread over three replicas sharing a Vault KV v2
//!   store (the Vault API double) → provider refreshes;
//! - pending flows: daemon memory per flow and flow-start rate;
//! - the embedded store at 1,000, 100,000 and 1,000,000 grants: read and write latency, then the
//!   daemon on that store: start-up time, resident memory, a `ListGrants` page and a revoke.
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
use support::daemon::{ADMIN_KEY, AGENT_KEY};
use support::rvault::RustyVault;
use support::{Fixture, Valet, ValetOptions, cpu_time, rss_kib, token, unix_channel};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use valet::pb;

struct Sizes {
    calls: usize,
    concurrency: usize,
    herd: usize,
    flows: usize,
    /// References of the grant the revoke section revokes.
    references: usize,
    /// Record counts the embedded store is measured at.
    records: &'static [usize],
    /// The sections to run (`cargo bench -- flows store`); empty: all.
    only: Vec<String>,
}

/// The sections, in the order they run. `instructions` runs only when named: it needs valgrind
/// and takes minutes.
const SECTIONS: [&str; 7] = [
    "handout",
    "herd",
    "flows",
    "revoke",
    "replicas",
    "store",
    "instructions",
];

impl Sizes {
    fn wants(&self, section: &str) -> bool {
        let named = self.only.iter().any(|s| s == section);
        named || (self.only.is_empty() && section != "instructions")
    }
}

struct Run {
    per_sec: f64,
    p50: Duration,
    p99: Duration,
    /// CPU time per call: the server's (all its threads) and this load generator's. Steadier
    /// than throughput on a shared machine, and it says which side a cost is on.
    server_cpu: Duration,
    client_cpu: Duration,
    /// Times per call the server's threads were put on a CPU: a wake-up (and a context switch)
    /// each, which costs several microseconds on a virtual machine.
    server_wakes: f64,
}

/// Runs `calls` calls of `op` with `concurrency` in flight against the server process `server`;
/// throughput, latency percentiles and CPU per call.
async fn measure<F, Fut>(calls: usize, concurrency: usize, server: u32, op: F) -> Run
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let per_worker = calls / concurrency;
    let cpu = || (cpu_time(Some(server)), cpu_time(None));
    let (server_before, client_before) = cpu();
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
    let (server_after, client_after) = cpu();
    all.sort_unstable();
    let pct = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)];
    let n = u32::try_from(all.len()).unwrap();
    Run {
        per_sec: all.len() as f64 / elapsed.as_secs_f64(),
        p50: pct(0.50),
        p99: pct(0.99),
        server_cpu: server_after.0.saturating_sub(server_before.0) / n,
        client_cpu: client_after.0.saturating_sub(client_before.0) / n,
        server_wakes: server_after.1.saturating_sub(server_before.1) as f64 / f64::from(n),
    }
}

/// Rounds the cached handout and its floor are measured in, interleaved.
const ROUNDS: usize = 9;

/// Each figure's median over the rounds.
fn median(runs: Vec<Run>) -> Run {
    let mid = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let secs = |f: fn(&Run) -> Duration| mid(runs.iter().map(|r| f(r).as_secs_f64()).collect());
    Run {
        per_sec: mid(runs.iter().map(|r| r.per_sec).collect()),
        p50: Duration::from_secs_f64(secs(|r| r.p50)),
        p99: Duration::from_secs_f64(secs(|r| r.p99)),
        server_cpu: Duration::from_secs_f64(secs(|r| r.server_cpu)),
        client_cpu: Duration::from_secs_f64(secs(|r| r.client_cpu)),
        server_wakes: mid(runs.iter().map(|r| r.server_wakes).collect()),
    }
}

fn row(name: &str, r: &Run, floor: &Run) {
    println!(
        "{name:<34} {:>8.0}/s  p50 {:>8.1?}  p99 {:>8.1?}  throughput {:>5.2}x  p99 {:>5.2}x  CPU/call server {:>5.1}µs client {:>5.1}µs  server wake-ups/call {:>4.2}",
        r.per_sec,
        r.p50,
        r.p99,
        r.per_sec / floor.per_sec,
        r.p99.as_secs_f64() / floor.p99.as_secs_f64(),
        r.server_cpu.as_secs_f64() * 1e6,
        r.client_cpu.as_secs_f64() * 1e6,
        r.server_wakes,
    );
}

/// The floor's call on `client` (a health client over TCP or the Unix socket), for `measure`:
/// a no-op gRPC call.
macro_rules! health_check {
    ($client:expr) => {{
        let h = $client.clone();
        move || {
            let mut h = h.clone();
            async move {
                h.check(HealthCheckRequest {
                    service: String::new(),
                })
                .await
                .unwrap();
            }
        }
    }};
}

/// A cached `Authenticate` for alice at provider `idp` on `client`, for `measure`.
macro_rules! authenticate {
    ($client:expr) => {{
        let c = $client.clone();
        move || {
            let mut c = c.clone();
            async move {
                c.authenticate(Fixture::request("idp", "alice", ""))
                    .await
                    .unwrap();
            }
        }
    }};
}

/// A `Resolve` of `reference` on `client`, for `measure`.
macro_rules! resolve {
    ($client:expr, $reference:expr) => {{
        let (c, r) = ($client.clone(), $reference.clone());
        move || {
            let (mut c, reference) = (c.clone(), r.clone());
            async move {
                c.resolve(pb::ResolveRequest {
                    reference,
                    min_ttl_seconds: 0,
                    target_url: String::new(),
                })
                .await
                .unwrap();
            }
        }
    }};
}

/// A reference to alice's grant at `idp`, which the agent key holds.
async fn alices_reference(f: &Fixture) -> String {
    support::reference(
        f.authenticate(
            AGENT_KEY,
            pb::AuthenticateRequest {
                handout: pb::Handout::Reference as i32,
                ..Fixture::request("idp", "alice", "")
            },
        )
        .await,
    )
    .reference
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let only: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    if let Some(unknown) = only.iter().find(|s| !SECTIONS.contains(&s.as_str())) {
        panic!("no bench section `{unknown}`: the sections are {SECTIONS:?}");
    }
    let sizes = if full {
        Sizes {
            calls: 45_000,
            concurrency: 64,
            herd: 1_000,
            flows: 100_000,
            references: 15_000,
            records: &[1_000, 100_000, 1_000_000],
            only,
        }
    } else {
        Sizes {
            calls: 200,
            concurrency: 4,
            herd: 20,
            flows: 200,
            references: 100,
            records: &[100, 1_000],
            only,
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run(&sizes));
    if sizes.wants("replicas") {
        rt.block_on(replica_storm(sizes.herd));
    }
    if sizes.wants("store") {
        rt.block_on(store_scaling(sizes.records, sizes.calls.min(20_000)));
    }
    if sizes.wants("instructions") {
        rt.block_on(instructions(sizes.calls.min(2_000)));
    }
}

/// Instructions the daemon executes per call (`valgrind --tool=callgrind`, read from the
/// running daemon with `callgrind_control`), the cached handout against the floor: a figure a
/// noisy machine does not move, for telling whether a change to the handout path made it
/// cheaper. It counts the daemon's threads (the audit and log writers too), not the time a
/// call takes: system calls and wake-ups cost nothing here.
async fn instructions(calls: usize) {
    if std::process::Command::new("callgrind_control")
        .arg("--version")
        .output()
        .is_err()
    {
        panic!(
            "the instructions section runs the daemon under valgrind: install it (apt-get install valgrind)"
        );
    }
    println!("== instructions per call in the daemon (callgrind; {calls} calls each)");
    let f = Fixture::with(ValetOptions {
        wrapper: vec![
            "valgrind",
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
        ],
        // As the handout section: the production default, JSON lines at `info`.
        log_format: "",
        logs_to_file: true,
        ..Default::default()
    })
    .await;
    f.oidc_provider("idp", "basic-client").await;
    f.authorize(AGENT_KEY, Fixture::request("idp", "alice", ""))
        .await;
    let reference = alices_reference(&f).await;
    let pid = f.valet.pid();
    let health = HealthClient::new(f.valet.raw_channel().await);
    let creds = f.valet.credentials(AGENT_KEY).await;
    // Everything the daemon's threads executed so far.
    let executed = move || -> u64 {
        let out = std::process::Command::new("callgrind_control")
            .args(["-e", "Ir", &pid.to_string()])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                let count = l.trim().strip_prefix("Th ")?.split_whitespace().nth(1)?;
                count.replace(',', "").parse::<u64>().ok()
            })
            .sum()
    };
    // The calls of one operation: warmed up, then counted once the writers that gather the
    // log and audit lines (50 ms) have done their share.
    async fn count<F, Fut>(
        calls: usize,
        concurrency: usize,
        pid: u32,
        op: F,
        executed: &impl Fn() -> u64,
    ) -> f64
    where
        F: Fn() -> Fut + Clone + Send + 'static,
        Fut: Future<Output = ()> + Send,
    {
        measure(concurrency * 10, concurrency, pid, op.clone()).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let before = executed();
        measure(calls, concurrency, pid, op).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        (executed() - before) as f64 / calls as f64
    }
    for concurrency in [1, 64] {
        let floor = count(calls, concurrency, pid, health_check!(health), &executed).await;
        let auth = count(calls, concurrency, pid, authenticate!(creds), &executed).await;
        let resolve = count(
            calls,
            concurrency,
            pid,
            resolve!(creds, reference),
            &executed,
        )
        .await;
        println!(
            "{concurrency:>2} in flight: grpc.health Check (floor) {floor:>8.0}  Authenticate {auth:>8.0} ({:.2}x the floor's)  Resolve {resolve:>8.0} ({:.2}x)",
            auth / floor,
            resolve / floor
        );
    }
    println!();
}

/// A live grant of provider `bench` for user `i`, as the daemon stores it.
fn bench_grant(i: usize) -> (String, zeroize::Zeroizing<Vec<u8>>) {
    use valet::domain::{Grant, GrantKey, GrantStatus, ProviderId, Scopes, UserId};
    let key = GrantKey {
        provider: ProviderId::parse("bench").unwrap(),
        user: UserId::parse(&format!("user-{i:09}")).unwrap(),
        agent: None,
        account: None,
    };
    let grant = Grant {
        key: key.clone(),
        scopes: Scopes::parse("scopes", &["read", "write"]).unwrap(),
        subject: Some(format!("subject-{i}")),
        refresh_token: Some(format!("bench-refresh-token-{i:09}-0123456789abcdef").into()),
        status: GrantStatus::Active,
        created_at: 1_760_000_000,
        updated_at: 1_760_000_000,
        refreshing: None,
        access_token: None,
        token_type: None,
        expires_at: 0,
        declined: Scopes::default(),
        metadata: std::collections::BTreeMap::new(),
        consented_at: 0,
        email: None,
    };
    (
        valet::store::keyspace::grant(&key),
        zeroize::Zeroizing::new(serde_json::to_vec(&grant).unwrap()),
    )
}

/// The embedded store as it grows: one store per size, each filled in bulk with grants; then, in
/// `ROUNDS` interleaved rounds over the sizes (each figure is its median round, so a burst of
/// noise on this shared machine does not land on one size), timed one at a time: reads of random
/// records from the database itself (each store opened without its cache of records in use),
/// cold, then again once every record was read (redb's page cache warm, as in a daemon that has
/// run for a while), then, each store opened as the daemon opens it, reads of `IN_USE` grants in use and
/// overwrites of random records. Then a daemon is started on each store (start-up time to `valet listening`, resident memory) and a
/// `ListGrants` page and a revoke are timed through it.
async fn store_scaling(sizes: &[usize], samples: usize) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use valet::store::{Cas, EmbeddedStore, SecretStore as _};
    let key = |i: usize| bench_grant(i).0;
    let value = |i: usize| bench_grant(i).1;
    println!(
        "== embedded store: one record read and one write as the store grows ({samples} each, in {ROUNDS} interleaved rounds)"
    );
    struct Sized {
        n: usize,
        dir: Arc<tempfile::TempDir>,
        /// Database reads: random grants (a slice per round), read through a store opened
        /// without its cache of records in use, so each walks redb's B-tree, whose pages redb
        /// loads from the file (the OS's page cache) unless an earlier read did: in the smallest
        /// store every page is loaded after a few reads; in the largest the upper levels are
        /// after a few rounds, and nearly every read loads its leaf. What a read of a grant not
        /// in use costs a daemon that has been running for a while.
        cold: Arc<Vec<String>>,
        /// The grants in use, the same number at every size (all of the smallest store), loaded
        /// once before the rounds, as a running daemon keeps reading its agents' grants (served
        /// from the store's cache of records in use while they stay in it): only the store's
        /// size differs between sizes, not how many grants are hot.
        hot: Arc<Vec<String>>,
        /// Database reads, cold then warm, a read of a grant in use, a write.
        runs: [Vec<Run>; 4],
        /// This process's resident memory grown by reading every record once (redb's page
        /// cache, up to its 1 GiB), in KiB.
        warmed_kib: u64,
    }
    let mut stores = Vec::new();
    for &n in sizes {
        let dir = Arc::new(tempfile::tempdir().unwrap());
        let store = EmbeddedStore::open(&dir.path().join("data")).unwrap();
        for start in (0..n).step_by(10_000) {
            let batch = (start..(start + 10_000).min(n)).map(bench_grant).collect();
            store.put_many(batch).await.unwrap();
        }
        // Distinct grants, spread evenly over the store.
        let in_use = IN_USE.min(n);
        let hot: Vec<String> = (0..in_use).map(|i| key(i * (n / in_use))).collect();
        stores.push(Sized {
            n,
            dir,
            cold: Arc::new((0..samples).map(|_| key(rand_index(n))).collect()),
            hot: Arc::new(hot),
            runs: Default::default(),
            warmed_kib: 0,
        });
    }
    // Reads of `keys` from `from` on, one after another.
    let reads = |store: &Arc<EmbeddedStore>, keys: &Arc<Vec<String>>, from: usize| {
        let (store, keys) = (store.clone(), keys.clone());
        let next = Arc::new(AtomicUsize::new(from));
        move || {
            let (s, keys, next) = (store.clone(), keys.clone(), next.clone());
            async move {
                let i = next.fetch_add(1, Ordering::Relaxed);
                s.get(&keys[i % keys.len()]).await.unwrap().unwrap();
            }
        }
    };
    let per_round = (samples / ROUNDS).max(1);
    // A data directory is open in one store at a time (its lock): the database's own reads
    // first, on every size, then the store as the daemon opens it.
    let open = |s: &Sized, cached: bool| {
        let data = s.dir.path().join("data");
        Arc::new(if cached {
            EmbeddedStore::open(&data).unwrap()
        } else {
            EmbeddedStore::open_without_record_cache(&data).unwrap()
        })
    };
    let databases: Vec<_> = stores.iter().map(|s| open(s, false)).collect();
    for round in 0..ROUNDS {
        for (s, database) in stores.iter_mut().zip(&databases) {
            let cold = reads(database, &s.cold, round * per_round);
            s.runs[0].push(measure(per_round, 1, std::process::id(), cold).await);
        }
    }
    // A daemon that has run for a while: every record read once, so redb's page cache holds
    // what fits of the database (1 GiB by default), then the same random reads again.
    for (s, database) in stores.iter_mut().zip(&databases) {
        let before = rss_kib(std::process::id());
        for i in 0..s.n {
            database.get(&key(i)).await.unwrap().unwrap();
        }
        s.warmed_kib = rss_kib(std::process::id()).saturating_sub(before);
    }
    for round in 0..ROUNDS {
        for (s, database) in stores.iter_mut().zip(&databases) {
            let warm = reads(database, &s.cold, round * per_round);
            s.runs[1].push(measure(per_round, 1, std::process::id(), warm).await);
        }
    }
    drop(databases);
    let mut opened = Vec::new();
    for s in &stores {
        let store = open(s, true);
        // The grants in use are in its cache, as in a daemon whose agents keep using them.
        for k in s.hot.iter() {
            store.get(k).await.unwrap().unwrap();
        }
        opened.push(store);
    }
    for _ in 0..ROUNDS {
        for (s, store) in stores.iter_mut().zip(&opened) {
            let hot = reads(store, &s.hot, 0);
            s.runs[2].push(measure(per_round, 1, std::process::id(), hot).await);
            let (store, n) = (store.clone(), s.n);
            let write = measure(per_round, 1, std::process::id(), move || {
                let s = store.clone();
                async move {
                    let i = rand_index(n);
                    s.put(&key(i), value(i), Cas::Any).await.unwrap();
                }
            })
            .await;
            s.runs[3].push(write);
        }
    }
    // The daemon takes the directory lock: the stores must be closed first.
    drop(opened);
    let mut daemon = Vec::new();
    for s in stores {
        let [database_read, warm_read, read, write] = s.runs.map(median);
        let mib = std::fs::metadata(s.dir.path().join("data/store.redb"))
            .map(|m| m.len() as f64 / 1_048_576.0)
            .unwrap_or(0.0);
        println!(
            "{:>9} records ({mib:>6.0} MiB)  read p50 {:>8.1?} p99 {:>8.1?}  database read p50 {:>8.1?} p99 {:>8.1?}  warm p50 {:>8.1?} p99 {:>8.1?} (+{} MiB)  write p50 {:>8.1?} p99 {:>8.1?}",
            s.n,
            read.p50,
            read.p99,
            database_read.p50,
            database_read.p99,
            warm_read.p50,
            warm_read.p99,
            s.warmed_kib / 1024,
            write.p50,
            write.p99
        );
        daemon.push((s.n, on_the_daemon(s.dir, s.n, samples).await));
    }
    println!(
        "\n== the daemon on the embedded store: start-up, memory, a ListGrants page (100 grants), a revoke"
    );
    for (n, d) in daemon {
        println!(
            "{n:>9} grants  start-up {:>7.1?}  RSS {:>6} KiB  ListGrants p50 {:>8.1?} p99 {:>8.1?}  revoke p50 {:>8.1?} p99 {:>8.1?}",
            d.start_up, d.rss_kib, d.list.p50, d.list.p99, d.revoke.p50, d.revoke.p99
        );
    }
    println!();
}

struct OnDaemon {
    start_up: Duration,
    rss_kib: u64,
    list: Run,
    revoke: Run,
}

/// Starts the daemon on `dir`'s store of `n` grants and times it; revokes `samples / 10` of them
/// (returned, for the caller to put back).
async fn on_the_daemon(
    dir: std::sync::Arc<tempfile::TempDir>,
    n: usize,
    samples: usize,
) -> OnDaemon {
    let t = Instant::now();
    let valet = Valet::start_in(dir, ValetOptions::default());
    let start_up = t.elapsed();
    let rss_kib = valet.rss_kib();
    // The provider the grants belong to.
    valet
        .providers()
        .await
        .create_provider(pb::CreateProviderRequest {
            provider: Some(pb::Provider {
                provider_id: "bench".into(),
                kind: pb::ProviderKind::Oauth2 as i32,
                client_id: "bench-client".into(),
                client_secret: "bench-client-secret".into(),
                auth_url: "https://bench.invalid/authorize".into(),
                token_url: "https://bench.invalid/token".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    let admin = valet.credentials(ADMIN_KEY).await;
    let c = admin.clone();
    let list = measure((samples / 20).max(10), 1, valet.pid(), move || {
        let mut c = c.clone();
        async move {
            let page = c
                .list_grants(pb::ListGrantsRequest {
                    provider_id: "bench".into(),
                    page_size: 100,
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            assert_eq!(page.grants.len(), 100);
        }
    })
    .await;
    let revokes = (samples / 10).min(n / 10).max(1);
    let spread = move |k: usize| k * (n / revokes) + n / revokes / 2;
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let c = admin.clone();
    let revoke = measure(revokes, 1, valet.pid(), move || {
        let (mut c, next) = (c.clone(), next.clone());
        async move {
            // Spread over the store, each grant once.
            let k = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let i = spread(k);
            let answer = c
                .revoke(pb::RevokeRequest {
                    provider_id: "bench".into(),
                    user_id: format!("user-{i:09}"),
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            assert!(answer.revoked, "grant {i} was there to revoke");
        }
    })
    .await;
    let mut valet = valet;
    assert!(valet.stop().success());
    OnDaemon {
        start_up,
        rss_kib,
        list,
        revoke,
    }
}

/// A refresh storm spread over three replicas on one Vault KV v2 store (the Vault API double):
/// provider refreshes (the bar: one) and the time until every caller has its token.
async fn replica_storm(herd: usize) {
    let d = support::vault::VaultDouble::start("secret").await;
    let (f, opts) = support::vault::replica_with_grant(&d).await;
    let (b, c) = (Valet::start(opts.clone()), Valet::start(opts));
    let replicas = [
        f.valet.credentials(AGENT_KEY).await,
        b.credentials(AGENT_KEY).await,
        c.credentials(AGENT_KEY).await,
    ];
    let before = f.idp.token_requests().await;
    // The provider takes 500 ms to answer, so the storm arrives while the refresh is in flight.
    f.idp.delay_token(500).await;
    let calls = (0..herd).map(|i| {
        let mut creds = replicas[i % 3].clone();
        async move {
            token(
                creds
                    .authenticate(Fixture::refresh_request("idp", "alice", ""))
                    .await
                    .unwrap()
                    .into_inner(),
            )
        }
    });
    let t = Instant::now();
    let tokens = futures::future::join_all(calls).await;
    let took = t.elapsed();
    let refreshes = f.idp.token_requests().await - before;
    f.idp.delay_token(0).await;
    println!(
        "== {herd} requests on one expired grant over three replicas (Vault KV v2 double, provider answers in 500 ms): {refreshes} provider refresh(es), {} distinct tokens, all served in {took:.1?}\n",
        tokens
            .iter()
            .map(|t| &t.access_token)
            .collect::<std::collections::HashSet<_>>()
            .len(),
    );
}

/// How many distinct grants are in use (read again and again) in the store benchmark, at every
/// size: all of the smallest store.
const IN_USE: usize = 1_000;

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
    if !["handout", "herd", "flows", "revoke"]
        .iter()
        .any(|x| s.wants(x))
    {
        return;
    }
    // The daemon also listens on a Unix socket, where this process's uid is a sidecar caller.
    let socket_dir = tempfile::tempdir().unwrap();
    let socket = socket_dir.path().join("valet.sock");
    let uid = {
        use std::os::unix::fs::MetadataExt as _;
        std::fs::metadata(socket_dir.path()).unwrap().uid()
    };
    let f = Fixture::with(ValetOptions {
        top_toml: format!("grpc_socket = \"{}\"", socket.display()),
        extra_toml: format!(
            "[[callers]]\nname = \"sidecar\"\nrole = \"agent\"\nkey_sha256 = \"{}\"\nunix_uid = {uid}\nrate_limit = 0\n",
            "cd".repeat(32)
        ),
        // The production default: JSON lines at `info`. `VALET_BENCH_LOG_LEVEL=warn` measures
        // without the request and audit lines.
        log_format: "",
        logs_to_file: true,
        log_level: std::env::var("VALET_BENCH_LOG_LEVEL").unwrap_or_else(|_| "info".into()),
        // One caller starts them all (and a few before), and may hold half of the table.
        max_pending: 4 * s.flows.max(1000),
        ..Default::default()
    })
    .await;
    f.oidc_provider("idp", "basic-client").await;
    let granted = f
        .authorize(AGENT_KEY, Fixture::request("idp", "alice", ""))
        .await;
    let channel = f.valet.raw_channel().await;
    let creds = f.valet.credentials(AGENT_KEY).await;

    let health = HealthClient::new(channel);
    let unix = unix_channel(socket).await;
    let unix_health = HealthClient::new(unix.clone());
    let unix_creds = pb::credentials_client::CredentialsClient::new(unix);
    let pid = f.valet.pid();
    if s.wants("handout") {
        let reference = alices_reference(&f).await;
        // One caller at a time, then many: the handout against the transport floor at each. The
        // three are measured in interleaved rounds and each reported by its median round, so a
        // burst of noise on this shared machine does not land on one side of a ratio.
        let mut by_concurrency = Vec::new();
        for concurrency in [1, s.concurrency] {
            let (mut floors, mut auths, mut resolves) = (Vec::new(), Vec::new(), Vec::new());
            let (mut unix_floors, mut unix_auths) = (Vec::new(), Vec::new());
            // The same two operations over TCP and over the Unix socket.
            for _ in 0..ROUNDS {
                let calls = s.calls / ROUNDS;
                floors.push(measure(calls, concurrency, pid, health_check!(health)).await);
                auths.push(measure(calls, concurrency, pid, authenticate!(creds)).await);
                resolves.push(measure(calls, concurrency, pid, resolve!(creds, reference)).await);
            }
            for _ in 0..ROUNDS {
                let calls = s.calls / ROUNDS;
                unix_floors
                    .push(measure(calls, concurrency, pid, health_check!(unix_health)).await);
                unix_auths.push(measure(calls, concurrency, pid, authenticate!(unix_creds)).await);
            }
            by_concurrency.push((
                concurrency,
                median(floors),
                median(auths),
                median(resolves),
                median(unix_floors),
                median(unix_auths),
            ));
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
        let vault = measure(s.calls, s.concurrency, rv.pid(), move || {
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

        for (concurrency, floor, auth, resolve, unix_floor, unix_auth) in &by_concurrency {
            println!(
                "\n== cached handout vs the transport floor ({} calls, {concurrency} in flight; ratios to the TCP floor)",
                s.calls
            );
            row("grpc.health Check (floor)", floor, floor);
            row("Credentials/Authenticate (cached)", auth, floor);
            row("Credentials/Resolve (cached)", resolve, floor);
            row("Unix socket: grpc.health Check", unix_floor, floor);
            row("Unix socket: Authenticate", unix_auth, floor);
        }
        let (_, floor, auth, ..) = by_concurrency.last().expect("measured");
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
    }
    if s.wants("herd") {
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
    }
    if s.wants("flows") {
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
    if s.wants("revoke") {
        revoke_with_references(&f, s.references).await;
    }
}

/// Revoking one grant that has `n` references (one per agent session, as they pile up): the
/// references are found through the grant's index and deleted in batches, so this stays well
/// under a second at 15,000. Afterwards none of them resolves.
async fn revoke_with_references(f: &Fixture, n: usize) {
    f.authorize(AGENT_KEY, Fixture::request("idp", "carol", ""))
        .await;
    let creds = f.valet.credentials(AGENT_KEY).await;
    let t = Instant::now();
    let issuers: Vec<_> = (0..16)
        .map(|w| {
            let mut c = creds.clone();
            tokio::spawn(async move {
                let mut references = Vec::new();
                for _ in (w..n).step_by(16) {
                    let answer = c
                        .authenticate(pb::AuthenticateRequest {
                            handout: pb::Handout::Reference as i32,
                            ..Fixture::request("idp", "carol", "")
                        })
                        .await
                        .unwrap()
                        .into_inner();
                    references.push(support::reference(answer).reference);
                }
                references
            })
        })
        .collect();
    let mut references = Vec::new();
    for issuer in issuers {
        references.extend(issuer.await.unwrap());
    }
    let issued = t.elapsed();
    let mut admin = f.valet.credentials(ADMIN_KEY).await;
    let t = Instant::now();
    let answer = admin
        .revoke(pb::RevokeRequest {
            provider_id: "idp".into(),
            user_id: "carol".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let revoked_in = t.elapsed();
    assert!(answer.revoked);
    // Every one of them is refused now.
    let references = std::sync::Arc::new(references);
    let checkers: Vec<_> = (0..16)
        .map(|w| {
            let (mut c, references) = (creds.clone(), references.clone());
            tokio::spawn(async move {
                for reference in references.iter().skip(w).step_by(16) {
                    let refused = c
                        .resolve(pb::ResolveRequest {
                            reference: reference.clone(),
                            min_ttl_seconds: 0,
                            target_url: String::new(),
                        })
                        .await;
                    assert!(
                        refused.is_err(),
                        "a reference of the revoked grant resolved"
                    );
                }
            })
        })
        .collect();
    for checker in checkers {
        checker.await.unwrap();
    }
    println!(
        "== revoking a grant with {} references: {revoked_in:.1?} (issuing them took {issued:.1?})\n",
        references.len()
    );
}
