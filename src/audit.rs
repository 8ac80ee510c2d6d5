//! The audit trail: one JSON line per security-relevant call (who did what, for which provider,
//! user and agent, with which outcome), hash-chained so that a removed, reordered or edited line
//! is detected (`valet audit verify FILE`). Users appear only as a keyed hash (HMAC-SHA256 under
//! a deployment key kept in the store, so replicas agree); no token, reference, code or secret is
//! ever recorded. Written to its own append-only 0600 file (`[audit] file`) or, by default, to the
//! log under target `valet::audit`.
//!
//! Each line: `{"ts", "event", "caller", "provider", "user", "agent", "outcome", "prev", "hash"}`
//! where `hash` = SHA-256 of `prev` followed by the line's JSON without `hash` (hex), and `prev`
//! is the previous line's `hash` (64 zeros for the first).

use crate::clock::Clock;
use ring::hmac;
use serde_json::Value;
use std::io::{BufRead as _, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What an event is about. Empty fields are left out of the line.
#[derive(Debug, Default, Clone, Copy)]
pub struct Subject<'a> {
    pub provider: &'a str,
    pub user: &'a str,
    pub agent: &'a str,
}

impl<'a> Subject<'a> {
    /// A grant's ids (or a flow's, which names them before its grant exists).
    pub fn of(
        provider: &'a crate::domain::ProviderId,
        user: &'a crate::domain::UserId,
        agent: Option<&'a crate::domain::AgentId>,
    ) -> Self {
        Self {
            provider: provider.as_str(),
            user: user.as_str(),
            agent: agent.map_or("", |a| a.as_str()),
        }
    }
}

/// A grant's lifecycle change, for `WatchGrants` (ids and the kind of change, never a token).
/// Derived from the audit events, so watchers and the trail never disagree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantChange {
    pub kind: GrantChangeKind,
    pub provider: String,
    pub user: String,
    /// Empty: the user-wide grant.
    pub agent: String,
    /// Unix seconds.
    pub at: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantChangeKind {
    Created,
    Refreshed,
    NeedsReauth,
    Revoked,
    RefreshFailed,
    /// The provider's maximum grant age is near: the user should consent again.
    ReauthDue,
}

/// Which audit events are grant changes.
fn grant_change(event: &str, outcome: &str) -> Option<GrantChangeKind> {
    Some(match (event, outcome) {
        ("FlowCompleted", "ok") | ("AccountReplaced", _) => GrantChangeKind::Created,
        ("GrantRefreshed", "ok") => GrantChangeKind::Refreshed,
        ("GrantRefreshed", "REAUTHORIZATION_REQUIRED") => GrantChangeKind::NeedsReauth,
        ("GrantRefreshed", _) => GrantChangeKind::RefreshFailed,
        ("Revoke", "revoked") => GrantChangeKind::Revoked,
        ("GrantReauthDue", _) => GrantChangeKind::ReauthDue,
        _ => return None,
    })
}

/// Grant changes a slow watcher may fall behind by before it is told how many it missed.
const WATCH_BACKLOG: usize = 4096;

/// One event on its way to the writer thread, its strings in one allocation (it is made on
/// every call's path).
#[derive(Debug)]
struct Event {
    ts: i64,
    /// The parts (`EVENT` … `OUTCOME`), one after another.
    text: String,
    ends: [usize; 6],
}

const EVENT: usize = 0;
const CALLER: usize = 1;
const PROVIDER: usize = 2;
const AGENT: usize = 3;
const USER: usize = 4;
const OUTCOME: usize = 5;

impl Event {
    fn new(ts: i64, parts: [&str; 6]) -> Self {
        let mut text = String::with_capacity(parts.iter().map(|p| p.len()).sum());
        let mut ends = [0; 6];
        for (end, part) in ends.iter_mut().zip(parts) {
            text.push_str(part);
            *end = text.len();
        }
        Self { ts, text, ends }
    }

    fn part(&self, i: usize) -> &str {
        let start = i.checked_sub(1).map_or(0, |before| self.ends[before]);
        &self.text[start..self.ends[i]]
    }
}

enum Message {
    Event(Event),
    /// Answered once everything sent before it is written.
    Flush(std::sync::mpsc::SyncSender<()>),
    /// Reopen the file by its path (it was moved away by log rotation); answered once done.
    Reopen(std::sync::mpsc::SyncSender<std::io::Result<()>>),
}

/// Queued events beyond this make `record` wait for the writer (backpressure, never loss).
const QUEUE: usize = 65_536;
/// How long the writer lets events gather after a batch: long enough that a lone caller's calls
/// (one every ~200 µs) wake the writer once in hundreds of events, not once in tens (measured:
/// 0.15 more daemon wake-ups per call than a no-op call at 5 ms, none at 50 ms); short enough that
/// the trail stays current.
const BATCH_WINDOW: std::time::Duration = std::time::Duration::from_millis(50);

/// The audit sink. `record` only queues the event: hashing, chaining and writing happen on one
/// writer thread, so a handout never waits on the trail.
pub struct Audit {
    path: Option<PathBuf>,
    tx: Option<std::sync::mpsc::SyncSender<Message>>,
    writer: Option<std::thread::JoinHandle<()>>,
    user_key: Arc<OnceLock<hmac::Key>>,
    clock: Arc<dyn Clock>,
    metrics: Arc<crate::metrics::Metrics>,
    /// Grant changes, for `WatchGrants` (sent only while someone watches).
    grants: tokio::sync::broadcast::Sender<GrantChange>,
}

impl std::fmt::Debug for Audit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Audit")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// How the end of an existing trail was found (and mended) at open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tail {
    /// Ends with a whole line (or there is no file yet).
    Whole,
    /// The last event was whole but its newline was never written: added.
    Terminated,
    /// A torn last line (a write cut short by a crash or a full disk), never a whole event, of
    /// this many bytes: cut off, so the next event starts a line of its own.
    Cut(u64),
    /// A torn last line the file would not let be cut (append-only, `chattr +a`): ended with a
    /// newline instead, so at least the events after it are whole lines.
    Fenced(u64),
}

/// Mends the end of the trail at `path` so the next event starts a line of its own. Reads
/// only, and opens for writing only when the end needs mending.
fn mend_tail(path: &Path) -> std::io::Result<Tail> {
    use std::io::{Read as _, Seek as _, SeekFrom};
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Tail::Whole),
        Err(e) => return Err(e),
    };
    let len = file.metadata()?.len();
    let mut end = len;
    let mut block = vec![0u8; 64 * 1024];
    // Back from the end, a block at a time, to the last newline.
    while end > 0 {
        let n = usize::try_from(end).map_or(block.len(), |e| e.min(block.len()));
        let start = end - n as u64;
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut block[..n])?;
        if let Some(i) = block[..n].iter().rposition(|&b| b == b'\n') {
            end = start + i as u64 + 1;
            break;
        }
        end = start;
    }
    let torn = len - end;
    if torn == 0 {
        return Ok(Tail::Whole);
    }
    let newline = || -> std::io::Result<()> {
        std::fs::OpenOptions::new()
            .append(true)
            .open(path)?
            .write_all(b"\n")
    };
    // An event is at most a few hundred bytes: a longer tail is no whole event.
    if torn <= 64 * 1024 {
        let mut tail = Vec::new();
        file.seek(SeekFrom::Start(end))?;
        file.read_to_end(&mut tail)?;
        if serde_json::from_slice::<Value>(&tail).is_ok_and(|v| v["hash"].is_string()) {
            newline()?;
            return Ok(Tail::Terminated);
        }
    }
    match std::fs::OpenOptions::new().write(true).open(path) {
        Ok(f) => {
            f.set_len(end)?;
            Ok(Tail::Cut(torn))
        }
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            newline()?;
            Ok(Tail::Fenced(torn))
        }
        Err(e) => Err(e),
    }
}

/// The trail's file, appended to (created 0600).
fn open_trail(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
}

/// The `hash` of the last line of an existing trail, to continue its chain.
fn last_hash(path: &Path) -> std::io::Result<String> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(GENESIS.into()),
        Err(e) => return Err(e),
    };
    let mut last = GENESIS.to_owned();
    for line in std::io::BufReader::new(file).lines() {
        let line = line?;
        if let Some(h) = serde_json::from_str::<Value>(&line)
            .ok()
            .and_then(|v| v["hash"].as_str().map(str::to_owned))
        {
            last = h;
        }
    }
    Ok(last)
}

/// The log target of audit events when the trail goes to the log. Their message is the trail's
/// JSON line, which a JSON log line carries as the object in its `audit` member
/// (`telemetry::json`).
pub const LOG_TARGET: &str = "valet::audit";

/// Users whose hashes the writer keeps: the same users recur, and the keyed hash was a third of
/// an event's cost. Forgotten all at once when full.
const USERS_KEPT: usize = 4096;

/// A line without its `hash`, as `verify` re-serializes it: members in the order of a JSON
/// object read back (sorted by name), empty ids left out.
#[derive(serde::Serialize)]
struct Body<'a> {
    #[serde(skip_serializing_if = "str::is_empty")]
    agent: &'a str,
    caller: &'a str,
    event: &'a str,
    outcome: &'a str,
    prev: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    provider: &'a str,
    ts: i64,
    #[serde(skip_serializing_if = "str::is_empty")]
    user: &'a str,
}

/// The writer thread: turns events into chained lines, in order.
struct Writer {
    prev: String,
    path: Option<PathBuf>,
    file: Option<std::io::BufWriter<std::fs::File>>,
    user_key: Arc<OnceLock<hmac::Key>>,
    /// The line being written (one buffer, reused for every event).
    line: Vec<u8>,
    /// Users' keyed hashes, by user id.
    users: std::collections::HashMap<String, String>,
    metrics: Arc<crate::metrics::Metrics>,
    /// Events lost since the file last failed (a full disk): said once when it fails and once
    /// when it takes writes again, not once per event.
    lost: Option<u64>,
}

impl Writer {
    fn write(&mut self, e: Event) {
        let user = self.user_hash(e.part(USER));
        let body = Body {
            agent: e.part(AGENT),
            caller: e.part(CALLER),
            event: e.part(EVENT),
            outcome: e.part(OUTCOME),
            prev: &self.prev,
            provider: e.part(PROVIDER),
            ts: e.ts,
            user: &user,
        };
        self.line.clear();
        // Writing strings and an integer into memory cannot fail; were it to, it is said.
        if let Err(e) = serde_json::to_writer(&mut self.line, &body) {
            tracing::error!("cannot write an audit line: {e}");
            return;
        }
        let hash = link_hash(&self.prev, &self.line);
        // The body with `hash` as its last member (`verify` re-serializes without it).
        self.line.pop();
        for part in [b",\"hash\":\"".as_slice(), hash.as_bytes(), b"\"}"] {
            self.line.extend_from_slice(part);
        }
        self.prev = hash;
        match &mut self.file {
            Some(f) => {
                self.line.push(b'\n');
                if let Err(e) = f.write_all(&self.line) {
                    self.failed(1, &e);
                }
            }
            None => {
                let text = std::str::from_utf8(&self.line).unwrap_or_default();
                tracing::info!(target: LOG_TARGET, message = text);
            }
        }
    }

    /// The keyed hash of a user id (none for none): stable per deployment, not reversible
    /// without the key.
    fn user_hash(&mut self, user: &str) -> String {
        if user.is_empty() {
            return String::new();
        }
        let Some(key) = self.user_key.get() else {
            return "unkeyed".into();
        };
        if let Some(hash) = self.users.get(user) {
            return hash.clone();
        }
        if self.users.len() >= USERS_KEPT {
            self.users.clear();
        }
        let hash = crate::secret::hex(&hmac::sign(key, user.as_bytes()).as_ref()[..16]);
        self.users.insert(user.to_owned(), hash.clone());
        hash
    }

    /// The file refused a write: `lost` events are gone (none when they wait in the buffer).
    fn failed(&mut self, lost: u64, e: &std::io::Error) {
        self.metrics.audit_events_lost(lost);
        self.metrics.audit_file_failing(true);
        match &mut self.lost {
            Some(n) => *n += lost,
            None => {
                tracing::error!(
                    "cannot write to the audit file; events are lost once its buffer is full, until it takes writes again: {e}"
                );
                self.lost = Some(lost);
            }
        }
    }

    fn flush(&mut self) {
        let Some(f) = &mut self.file else {
            return;
        };
        match f.flush() {
            // Kept in the buffer for a later flush.
            Err(e) => self.failed(0, &e),
            Ok(()) => match self.lost.take() {
                None => {}
                Some(0) => self.metrics.audit_file_failing(false),
                Some(lost) => {
                    self.metrics.audit_file_failing(false);
                    tracing::warn!(
                        lost,
                        "the audit file takes writes again after losing events; `valet audit verify` stops at the gap"
                    );
                }
            },
        }
    }

    /// Flushes and closes the file; what it still refuses is lost, and counted.
    fn close(&mut self) {
        self.flush();
        if let Some(f) = self.file.take() {
            let (_, unwritten) = f.into_parts();
            if let Ok(rest) = unwritten {
                let lines = rest.iter().filter(|&&b| b == b'\n').count();
                if lines > 0 {
                    self.failed(
                        lines as u64,
                        &std::io::Error::other("closed with events unwritten"),
                    );
                    tracing::error!(
                        lost = lines,
                        "the audit file was closed with events it did not take; `valet audit verify` stops at the gap"
                    );
                }
            }
        }
    }

    /// Flushes and closes the file, and opens the one now at its path (a new one when log
    /// rotation moved it away). The chain goes on: the new file's first line follows the old
    /// file's last, so `verify` takes the files in order as one trail.
    fn reopen(&mut self) -> std::io::Result<()> {
        let Some(path) = self.path.clone() else {
            return Ok(());
        };
        let next = open_trail(&path)?;
        self.close();
        self.file = Some(std::io::BufWriter::new(next));
        Ok(())
    }

    fn run(mut self, rx: std::sync::mpsc::Receiver<Message>) {
        while let Ok(m) = rx.recv() {
            let mut next = Some(m);
            while next.is_some() {
                // Everything queued is written before the file is flushed once.
                while let Some(m) = next.take() {
                    match m {
                        Message::Event(e) => self.write(e),
                        Message::Flush(done) => {
                            self.flush();
                            let _ = done.send(());
                        }
                        Message::Reopen(done) => {
                            let _ = done.send(self.reopen());
                        }
                    }
                    next = rx.try_recv().ok();
                }
                self.flush();
                // Let a burst's events gather: a sender wakes the writer only when it waits
                // in `recv`, so under load this is one wake-up per window, not per event.
                std::thread::sleep(BATCH_WINDOW);
                next = rx.try_recv().ok();
            }
        }
        self.close();
    }
}

impl Audit {
    /// To `path` (created 0600, appended to, its chain continued), or to the log. Every event
    /// is also counted in `metrics`.
    pub fn open(
        path: Option<&Path>,
        clock: Arc<dyn Clock>,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> std::io::Result<Self> {
        let (prev, file) = match path {
            Some(p) => {
                match mend_tail(p)? {
                    Tail::Whole => {}
                    Tail::Terminated => tracing::warn!(
                        "the audit file's last event had no newline (a write cut short); added it"
                    ),
                    Tail::Cut(bytes) => tracing::warn!(
                        bytes,
                        "the audit file ended in a torn line (a write cut short); cut it off so the trail verifies"
                    ),
                    Tail::Fenced(bytes) => tracing::error!(
                        bytes,
                        "the audit file ends in a torn line (a write cut short) it does not let be cut (append-only?); ended it with a newline: `valet audit verify` stops at that line"
                    ),
                }
                let prev = last_hash(p)?;
                (prev, Some(std::io::BufWriter::new(open_trail(p)?)))
            }
            None => (GENESIS.to_owned(), None),
        };
        let user_key = Arc::new(OnceLock::new());
        let writer = Writer {
            prev,
            path: path.map(Path::to_path_buf),
            file,
            user_key: user_key.clone(),
            line: Vec::with_capacity(512),
            users: std::collections::HashMap::new(),
            metrics: metrics.clone(),
            lost: None,
        };
        let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE);
        let writer = std::thread::Builder::new()
            .name("valet-audit".into())
            .spawn(move || writer.run(rx))?;
        Ok(Self {
            path: path.map(Path::to_path_buf),
            tx: Some(tx),
            writer: Some(writer),
            user_key,
            clock,
            metrics,
            grants: tokio::sync::broadcast::Sender::new(WATCH_BACKLOG),
        })
    }

    /// Whether the trail goes to a file of its own (`[audit] file`), not the log.
    pub fn has_file(&self) -> bool {
        self.path.is_some()
    }

    /// Closes the file and opens the one at its path again, after log rotation moved it away
    /// (SIGHUP); events go on in order, none lost. Without a file, nothing to do.
    pub fn reopen(&self) -> std::io::Result<()> {
        let (done, wait) = std::sync::mpsc::sync_channel(1);
        match &self.tx {
            Some(tx) if tx.send(Message::Reopen(done)).is_ok() => wait.recv().unwrap_or(Ok(())),
            _ => Ok(()),
        }
    }

    /// Grant changes from now on.
    pub fn watch_grants(&self) -> tokio::sync::broadcast::Receiver<GrantChange> {
        self.grants.subscribe()
    }

    /// Sets the key users are hashed under (once; later calls are ignored).
    pub fn set_user_key(&self, key: &[u8]) {
        let _ = self.user_key.set(hmac::Key::new(hmac::HMAC_SHA256, key));
    }

    /// The metrics the events are counted in (durations are observed through it too).
    pub fn metrics(&self) -> &crate::metrics::Metrics {
        &self.metrics
    }

    /// Counts an open watch stream until the guard drops.
    pub fn stream_opened(&self) -> crate::metrics::StreamGuard {
        self.metrics.stream_opened()
    }

    /// Counts one event and queues it for the trail.
    pub fn record(&self, event: &str, caller: &str, subject: Subject<'_>, outcome: &str) {
        self.metrics.event(event, subject.provider, outcome);
        if self.grants.receiver_count() > 0
            && !subject.provider.is_empty()
            && !subject.user.is_empty()
            && let Some(kind) = grant_change(event, outcome)
        {
            // Err: the last watcher just left.
            let _ = self.grants.send(GrantChange {
                kind,
                provider: subject.provider.to_owned(),
                user: subject.user.to_owned(),
                agent: subject.agent.to_owned(),
                at: self.clock.now_unix(),
            });
        }
        let mut parts = [""; 6];
        parts[EVENT] = event;
        parts[CALLER] = caller;
        parts[PROVIDER] = subject.provider;
        parts[AGENT] = subject.agent;
        parts[USER] = subject.user;
        parts[OUTCOME] = outcome;
        let e = Event::new(self.clock.now_unix(), parts);
        if let Some(tx) = &self.tx {
            let _ = tx.send(Message::Event(e));
        }
    }

    /// Waits until every event recorded so far is written.
    pub fn flush(&self) {
        let (done, wait) = std::sync::mpsc::sync_channel(1);
        if let Some(tx) = &self.tx
            && tx.send(Message::Flush(done)).is_ok()
        {
            let _ = wait.recv();
        }
    }
}

impl Drop for Audit {
    fn drop(&mut self) {
        // Closing the queue lets the writer drain it and end.
        self.tx.take();
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

/// SHA-256 (hex) of `prev` followed by the line without its `hash`.
fn link_hash(prev: &str, body: &[u8]) -> String {
    let mut d = ring::digest::Context::new(&ring::digest::SHA256);
    d.update(prev.as_bytes());
    d.update(body);
    crate::secret::hex(d.finish().as_ref())
}

/// What `verify` found in an intact trail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Events (lines) in all the files.
    pub events: usize,
    /// The last line's hash: kept somewhere else, it lets a later check tell that the trail
    /// still reaches it (a chain without a key cannot show on its own that its end was cut off
    /// or that it was rebuilt whole).
    pub last_hash: String,
    /// Files after the first that start a new chain: the daemon started on a new, empty file
    /// (rotated while it was stopped), so nothing links them to the file before.
    pub new_chains: Vec<PathBuf>,
}

/// Checks a trail's chain across `files`, oldest first (a trail rotated into several files is
/// one chain), from `after` (the hash of the line before the first file's first line, when the
/// files before it are gone; default: the trail's start); returns what it holds, or the first
/// broken line.
pub fn verify(files: &[&Path], after: Option<&str>) -> Result<Verified, String> {
    let mut prev = after.unwrap_or(GENESIS).to_owned();
    let mut events = 0;
    let mut new_chains = Vec::new();
    for (f, path) in files.iter().enumerate() {
        let at = |no: usize| {
            if files.len() > 1 {
                format!("{} line {no}", path.display())
            } else {
                format!("line {no}")
            }
        };
        let file = std::fs::File::open(path)
            .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
            let no = i + 1;
            let line = line.map_err(|e| format!("{}: cannot read: {e}", at(no)))?;
            // A first line that is no event: most likely the wrong file.
            let not_an_event = |what: &str| {
                let hint = if no == 1 {
                    " (is this the file `[audit] file` names? the daemon's log is not an audit trail)"
                } else {
                    ""
                };
                format!("{}: {what}{hint}", at(no))
            };
            let Ok(Value::Object(mut fields)) = serde_json::from_str::<Value>(&line) else {
                return Err(not_an_event("not a JSON object"));
            };
            let hash = fields
                .remove("hash")
                .and_then(|h| h.as_str().map(str::to_owned))
                .ok_or_else(|| not_an_event("no hash"))?;
            let linked = fields.get("prev").and_then(Value::as_str);
            if f > 0 && no == 1 && linked == Some(GENESIS) && prev != GENESIS {
                // The daemon started on a new file: a chain of its own.
                new_chains.push(path.to_path_buf());
                prev = GENESIS.to_owned();
            }
            if linked != Some(prev.as_str()) {
                return Err(match (f, no) {
                    (0, 1) => format!(
                        "{}: does not start a trail: lines before it were removed, or the file \
                         continues an earlier one (rotated): give the earlier files first, \
                         oldest first, or the last hash of the file before it with --after",
                        at(no)
                    ),
                    (_, 1) => format!(
                        "{}: does not follow the last line of {} (a line or a file is missing, \
                         or the files are out of order: oldest first)",
                        at(no),
                        files[f - 1].display()
                    ),
                    _ => format!(
                        "{}: does not follow line {} (a line was removed, reordered or inserted)",
                        at(no),
                        no - 1
                    ),
                });
            }
            if link_hash(&prev, Value::Object(fields).to_string().as_bytes()) != hash {
                return Err(format!("{}: its content was changed", at(no)));
            }
            prev = hash;
            events += 1;
        }
    }
    Ok(Verified {
        events,
        last_hash: prev,
        new_chains,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    fn count(path: &Path) -> Result<usize, String> {
        verify(&[path], None).map(|v| v.events)
    }

    #[test]
    fn events_a_full_disk_refuses_are_counted_and_the_trail_goes_on_when_it_has_room() {
        let dir = tempfile::tempdir().unwrap();
        let (path, old) = (
            dir.path().join("audit.jsonl"),
            dir.path().join("audit.jsonl.1"),
        );
        let metrics = Arc::new(crate::metrics::Metrics::new());
        let sample = |name: &str| {
            let text = metrics.render();
            let line = text
                .lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
                .unwrap_or_else(|| panic!("{name} not exported:\n{text}"))
                .to_owned();
            line.parse::<u64>().unwrap()
        };
        let lost = || sample("valet_audit_events_lost_total");
        let failing = || sample("valet_audit_file_failing");
        let clock = Arc::new(ManualClock::at(1_800_000_000));
        let audit = Audit::open(Some(&path), clock, metrics.clone()).unwrap();
        audit.record("Authenticate", "agent-a", Subject::default(), "token");
        audit.flush();
        assert_eq!((lost(), failing()), (0, 0));
        // The disk fills: the file at the path now refuses every write.
        std::fs::rename(&path, &old).unwrap();
        std::os::unix::fs::symlink("/dev/full", &path).unwrap();
        audit.reopen().unwrap();
        // One event: kept in the buffer, nothing lost yet, but the file is failing.
        audit.record("Resolve", "agent-a", Subject::default(), "ok");
        audit.flush();
        assert_eq!((lost(), failing()), (0, 1));
        for _ in 0..199 {
            audit.record("Resolve", "agent-a", Subject::default(), "ok");
        }
        audit.flush();
        let refused = lost();
        assert!(refused > 0, "a full buffer loses events");
        assert_eq!(failing(), 1);
        // Room again: those still buffered are lost too, and counted; then events are written.
        std::fs::remove_file(&path).unwrap();
        audit.reopen().unwrap();
        assert_eq!(lost(), 200);
        audit.record("Revoke", "ops", Subject::default(), "ok");
        audit.flush();
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 1);
        assert_eq!(failing(), 0, "writes again");
        // The gap shows: the chain does not go on from the first file's last event.
        assert_eq!(count(&old), Ok(1));
        let gap = verify(&[&old, &path], None).unwrap_err();
        assert!(gap.contains("line 1"), "{gap}");
    }

    #[test]
    fn a_rotated_trail_goes_on_in_a_new_file_and_verifies_as_one() {
        let dir = tempfile::tempdir().unwrap();
        let (path, old) = (
            dir.path().join("audit.jsonl"),
            dir.path().join("audit.jsonl.1"),
        );
        let clock = Arc::new(ManualClock::at(1_800_000_000));
        let audit = Audit::open(Some(&path), clock, Arc::default()).unwrap();
        audit.record("Authenticate", "agent-a", Subject::default(), "token");
        audit.record("Resolve", "agent-a", Subject::default(), "ok");
        audit.flush();
        // logrotate: move the file away, then SIGHUP.
        std::fs::rename(&path, &old).unwrap();
        audit.reopen().unwrap();
        audit.record("Revoke", "ops", Subject::default(), "ok");
        audit.flush();
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 1);
        let both = verify(&[&old, &path], None).unwrap();
        assert_eq!((both.events, both.new_chains.len()), (3, 0));
        let last: Value =
            serde_json::from_str(std::fs::read_to_string(&path).unwrap().trim()).unwrap();
        assert_eq!(both.last_hash, last["hash"].as_str().unwrap());
        let alone = verify(&[&path], None).unwrap_err();
        assert!(
            alone.contains("line 1: does not start a trail") && alone.contains("--after"),
            "{alone}"
        );
        // The older files deleted (logrotate's `rotate N`): from the last hash kept of them.
        let kept = verify(&[&old], None).unwrap().last_hash;
        assert_eq!(verify(&[&path], Some(&kept)).unwrap().events, 1);
        assert!(verify(&[&path], Some(GENESIS)).is_err());
        let swapped = verify(&[&path, &old], None).unwrap_err();
        assert!(swapped.contains("does not start a trail"), "{swapped}");
        // A file of another trail before it: the link is missing.
        let other = dir.path().join("other.jsonl");
        let clock = Arc::new(ManualClock::at(1_800_000_050));
        let trail = Audit::open(Some(&other), clock, Arc::default()).unwrap();
        trail.record("Resolve", "agent-b", Subject::default(), "ok");
        trail.flush();
        let gap = verify(&[&other, &path], None).unwrap_err();
        assert!(
            gap.contains("audit.jsonl line 1: does not follow the last line of")
                && gap.contains("other.jsonl"),
            "{gap}"
        );
        // Rotated while the daemon was stopped: it starts the new file as a new chain, which
        // verify accepts at a file's start and names.
        drop(audit);
        let (older, fresh) = (
            dir.path().join("audit.jsonl.2"),
            dir.path().join("new.jsonl"),
        );
        std::fs::rename(&path, &older).unwrap();
        let audit = Audit::open(
            Some(&fresh),
            Arc::new(ManualClock::at(1_800_000_100)),
            Arc::default(),
        )
        .unwrap();
        audit.record("Resolve", "agent-a", Subject::default(), "ok");
        audit.flush();
        let three = verify(&[&old, &older, &fresh], None).unwrap();
        assert_eq!((three.events, three.new_chains), (4, vec![fresh.clone()]));
    }

    #[test]
    fn a_line_is_written_as_verify_reads_it_back_whatever_its_characters() {
        let odd = "quote\" back\\ tab\t nl\n nul\u{0} bell\u{7} é 🦀 \u{2028}";
        for (agent, provider, user) in [(odd, odd, odd), ("", "", ""), ("a", "", "u")] {
            let body = Body {
                agent,
                caller: odd,
                event: "Authenticate",
                outcome: odd,
                prev: GENESIS,
                provider,
                ts: -5,
                user,
            };
            let written = serde_json::to_vec(&body).unwrap();
            let read: Value = serde_json::from_slice(&written).unwrap();
            assert_eq!(read.to_string().into_bytes(), written);
        }
    }

    #[test]
    fn an_events_parts_come_back_as_they_went_in() {
        let e = Event::new(7, ["Revoke", "", "github", "é🦀", "alice", "ok"]);
        let parts: Vec<&str> = (EVENT..=OUTCOME).map(|i| e.part(i)).collect();
        assert_eq!(parts, ["Revoke", "", "github", "é🦀", "alice", "ok"]);
    }

    #[test]
    fn grant_changes_come_from_the_audit_events() {
        use GrantChangeKind as K;
        assert_eq!(grant_change("FlowCompleted", "ok"), Some(K::Created));
        assert_eq!(grant_change("FlowCompleted", "ACCESS_DENIED"), None);
        assert_eq!(grant_change("AccountReplaced", "ok"), Some(K::Created));
        assert_eq!(grant_change("GrantRefreshed", "ok"), Some(K::Refreshed));
        assert_eq!(
            grant_change("GrantRefreshed", "REAUTHORIZATION_REQUIRED"),
            Some(K::NeedsReauth)
        );
        assert_eq!(
            grant_change("GrantRefreshed", "unavailable"),
            Some(K::RefreshFailed)
        );
        assert_eq!(grant_change("Revoke", "revoked"), Some(K::Revoked));
        assert_eq!(grant_change("Revoke", "nothing_to_revoke"), None);
        assert_eq!(grant_change("Authenticate", "token"), None);
    }

    #[test]
    fn a_trail_verifies_and_every_edit_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let clock = Arc::new(ManualClock::at(1_800_000_000));
        let audit = Audit::open(Some(&path), clock.clone(), Arc::default()).unwrap();
        audit.set_user_key(b"deployment key");
        let who = Subject {
            provider: "github",
            user: "alice@example.com",
            agent: "planner",
        };
        audit.record("Authenticate", "agent-a", who, "token");
        audit.record("Revoke", "agent-b", who, "PERMISSION_DENIED");
        drop(audit);
        // Reopened, the chain continues.
        let audit = Audit::open(Some(&path), clock.clone(), Arc::default()).unwrap();
        audit.record("Resolve", "agent-a", Subject::default(), "ok");
        audit.flush();
        assert_eq!(count(&path), Ok(3));
        // A write cut short (a crash, a full disk) leaves a torn line: cut off on the next open,
        // and the trail goes on verifying.
        let whole = std::fs::read(&path).unwrap();
        let mut torn = whole.clone();
        torn.extend_from_slice(br#"{"caller":"ops","event":"Authe"#);
        std::fs::write(&path, &torn).unwrap();
        let audit = Audit::open(Some(&path), clock.clone(), Arc::default()).unwrap();
        drop(audit);
        assert_eq!(std::fs::read(&path).unwrap(), whole);
        let audit = Audit::open(Some(&path), clock.clone(), Arc::default()).unwrap();
        audit.record("Resolve", "agent-a", Subject::default(), "ok");
        audit.flush();
        assert_eq!(count(&path), Ok(4));
        // A trail that is one torn line only is cut to nothing.
        let lone = dir.path().join("lone.jsonl");
        std::fs::write(&lone, "{\"caller\"").unwrap();
        assert_eq!(mend_tail(&lone).unwrap(), Tail::Cut(9));
        assert_eq!(std::fs::read(&lone).unwrap(), b"");
        assert_eq!(mend_tail(&lone).unwrap(), Tail::Whole);
        // A whole last event whose newline was never written is kept, and ended.
        let whole = std::fs::read(&path).unwrap();
        std::fs::write(&path, &whole[..whole.len() - 1]).unwrap();
        assert_eq!(mend_tail(&path).unwrap(), Tail::Terminated);
        assert_eq!(std::fs::read(&path).unwrap(), whole);
        assert_eq!(count(&path), Ok(4));
        // A file that may not be cut (append-only, here read-only to this process): the torn
        // line gets its newline instead, unless even that is refused.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let fenced = dir.path().join("fenced.jsonl");
            std::fs::write(&fenced, "{\"caller\"").unwrap();
            std::fs::set_permissions(&fenced, std::fs::Permissions::from_mode(0o400)).unwrap();
            // Root may write anyway: then it is cut like any other.
            match mend_tail(&fenced) {
                Ok(Tail::Cut(9)) => assert_eq!(std::fs::read(&fenced).unwrap(), b""),
                Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::PermissionDenied),
                other => panic!("{other:?}"),
            }
        }
        let whole = std::fs::read(&path).unwrap();
        let mut text_lines = String::from_utf8(whole).unwrap();
        // Only the fourth event is dropped to rebuild the three-event trail the checks below use.
        let cut = text_lines[..text_lines.len() - 1].rfind('\n').unwrap() + 1;
        text_lines.truncate(cut);
        std::fs::write(&path, &text_lines).unwrap();
        assert_eq!(count(&path), Ok(3));
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains("alice"), "users are hashed: {text}");
        // Keyed, the same for each event of the user (the second from the writer's memory).
        let key = hmac::Key::new(hmac::HMAC_SHA256, b"deployment key");
        let alice = hex::encode(&hmac::sign(&key, b"alice@example.com").as_ref()[..16]);
        assert_eq!(text.matches(&format!("\"user\":\"{alice}\"")).count(), 2);
        let lines: Vec<&str> = text.lines().collect();
        let check = |lines: Vec<String>| {
            std::fs::write(&path, lines.join("\n") + "\n").unwrap();
            count(&path)
        };
        let owned = |l: &[&str]| l.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let removed = check(owned(&[lines[0], lines[2]])).unwrap_err();
        assert!(removed.contains("line 2"), "{removed}");
        let edited = owned(&lines)
            .into_iter()
            .map(|l| l.replace("PERMISSION_DENIED", "ok"))
            .collect();
        let edited = check(edited).unwrap_err();
        assert!(
            edited.contains("line 2: its content was changed"),
            "{edited}"
        );
        assert_eq!(check(owned(&lines)), Ok(3));
        // The daemon's log given instead of the trail.
        let log = r#"{"timestamp":"2026-12-04T05:00:00Z","level":"INFO","message":"rpc"}"#;
        let wrong = check(vec![log.to_owned()]).unwrap_err();
        assert!(
            wrong.starts_with("line 1: no hash") && wrong.contains("[audit] file"),
            "{wrong}"
        );
        let plain = check(vec!["valet listening grpc=127.0.0.1:50051".to_owned()]).unwrap_err();
        assert!(plain.contains("not a JSON object (is this"), "{plain}");
    }
}
