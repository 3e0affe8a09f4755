//! The durable review queue: one SQLite file in WAL mode.
//!
//! Writes go through one writer thread that commits whatever has arrived since its last
//! commit in one transaction (group commit): under concurrency a single fsync covers many
//! escalations, so the queue does not serialise the server. A request is answered only after
//! its row is committed (or with a receipt that says it was not). Reading, resolving and
//! exporting use their own connection; `tierhost review` opens the same file while a server
//! runs (WAL readers do not block the writer, writers wait on each other with a busy timeout).
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension, params};
use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use super::{Redaction, escalates};
use crate::answer::{Answer, EscalationProblem, EscalationReceipt};
use crate::config::{EscalationConfig, MAX_LABEL_BYTES, QueueSync};
use crate::request::Request;

/// Schema version written to `PRAGMA user_version`.
const SCHEMA_VERSION: i64 = 1;
/// How long a connection waits for another writer (a reviewer resolving while the server
/// commits) before it reports the database busy.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// The writer counts its own inserts; reviewers resolving from other connections only lower the
/// real count, so it re-counts (an O(pending) query) when the queue looks full, at most this
/// often...
const RECOUNT_WHEN_FULL: Duration = Duration::from_secs(1);
/// ...and this often anyway (another process may write the same file).
const RECOUNT_EVERY: Duration = Duration::from_secs(30);
/// How often the checkpointer moves committed WAL frames into the database file. Checkpoints
/// run on their own connection and thread, so they never stall a commit.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);
/// Longest reviewer note, in bytes.
pub const MAX_NOTE_BYTES: usize = 4096;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS escalations (
    seq           INTEGER PRIMARY KEY,
    id            TEXT    NOT NULL UNIQUE,
    created_ms    INTEGER NOT NULL,
    cascade       TEXT    NOT NULL,
    config_digest TEXT    NOT NULL,
    request_id    TEXT    NOT NULL,
    features      TEXT    NOT NULL,
    decision      TEXT    NOT NULL,
    served_by     TEXT    NOT NULL,
    trail         TEXT    NOT NULL,
    status        TEXT    NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'resolved')),
    label         TEXT,
    note          TEXT,
    resolved_by   TEXT,
    resolved_ms   INTEGER
);
CREATE INDEX IF NOT EXISTS escalations_by_status ON escalations (status, seq);
";

/// What can go wrong with the queue file.
#[derive(Debug, Clone, thiserror::Error)]
pub enum QueueError {
    /// SQLite reported an error (I/O, disk full, not a database, ...).
    #[error("escalation queue {path}: {message}")]
    Store {
        /// The queue file.
        path: PathBuf,
        /// SQLite's message.
        message: String,
    },
    /// The file was written by a newer tierhost.
    #[error(
        "escalation queue {path}: schema version {found}, this tierhost reads version {SCHEMA_VERSION}"
    )]
    Schema {
        /// The queue file.
        path: PathBuf,
        /// Its schema version.
        found: i64,
    },
    /// The writer thread is gone (the service is shutting down).
    #[error("escalation queue {0}: the writer has stopped")]
    Closed(PathBuf),
}

/// Why a resolve was refused.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// No escalation has this id.
    #[error("no escalation `{0}`")]
    NotFound(String),
    /// It was resolved already (the existing resolution is kept).
    #[error("escalation `{}` was already resolved as `{}` by {} at {}", .0.id,
        .0.resolution.as_ref().map_or("", |r| r.label.as_str()),
        .0.resolution.as_ref().and_then(|r| r.by.as_deref()).unwrap_or("an unnamed reviewer"),
        .0.resolution.as_ref().map_or("", |r| r.at.as_str()))]
    AlreadyResolved(Box<Escalation>),
    /// The label or note is not acceptable.
    #[error("{0}")]
    Invalid(String),
    /// The queue file failed.
    #[error(transparent)]
    Store(#[from] QueueError),
}

/// Review status of an escalation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// Waiting for a reviewer.
    Pending,
    /// Labeled by a reviewer.
    Resolved,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Resolved => "resolved",
        }
    }
}

/// A reviewer's decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Resolution {
    /// The label the reviewer gave.
    pub label: String,
    /// Free-text note.
    pub note: Option<String>,
    /// Who resolved it (as they named themselves).
    pub by: Option<String>,
    /// When, RFC 3339.
    pub at: String,
}

/// One escalated request as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Escalation {
    /// Escalation id (a time-ordered UUID).
    pub id: String,
    /// When it was escalated, RFC 3339.
    pub created_at: String,
    /// Seconds since it was escalated.
    pub age_s: f64,
    /// Cascade name.
    pub cascade: String,
    /// Digest of the config that answered (`Config::answer_digest`).
    pub config_digest: String,
    /// The request's id.
    pub request_id: String,
    /// The request's features after redaction, in the caller's order.
    pub features: Features,
    /// The decision the caller got.
    pub decision: serde_json::Value,
    /// Who served that decision (`safe-default` for an abstention).
    pub served_by: String,
    /// Every tier's turn, with why it did not serve.
    pub trail: serde_json::Value,
    /// Pending or resolved.
    pub status: Status,
    /// The reviewer's decision, once resolved.
    pub resolution: Option<Resolution>,
}

/// A JSON object's entries in their stored order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Features(pub Vec<(String, serde_json::Value)>);

impl Serialize for Features {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.iter().map(|(k, v)| (k, v)))
    }
}

impl<'de> Deserialize<'de> for Features {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Entries;
        impl<'de> Visitor<'de> for Entries {
            type Value = Features;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object of features")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Features, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    entries.push(entry);
                }
                Ok(Features(entries))
            }
        }
        deserializer.deserialize_map(Entries)
    }
}

/// Pending items and the age of the oldest.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct QueueStats {
    /// Items waiting for a reviewer.
    pub pending: u64,
    /// Age of the oldest pending item, in seconds (0 when none).
    pub oldest_pending_s: f64,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn rfc3339(ms: i64) -> String {
    let time = UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_millis(time).to_string()
}

/// Opens `path` (creating it and its directory), in WAL mode with the schema in place.
fn open_connection(path: &Path, sync: QueueSync) -> Result<Connection, QueueError> {
    let err = |e: &dyn std::fmt::Display| QueueError::Store {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| err(&e))?;
    }
    let conn = Connection::open(path).map_err(|e| err(&e))?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(|e| err(&e))?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .map_err(|e| err(&e))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(err(&format!(
            "cannot switch to WAL mode (journal_mode is {mode})"
        )));
    }
    let synchronous = match sync {
        QueueSync::Full => "FULL",
        QueueSync::Normal => "NORMAL",
    };
    conn.execute_batch(&format!("PRAGMA synchronous = {synchronous};"))
        .map_err(|e| err(&e))?;
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(|e| err(&e))?;
    if version > SCHEMA_VERSION {
        return Err(QueueError::Schema {
            path: path.to_path_buf(),
            found: version,
        });
    }
    conn.execute_batch(SCHEMA).map_err(|e| err(&e))?;
    conn.execute_batch(&format!("PRAGMA user_version = {SCHEMA_VERSION};"))
        .map_err(|e| err(&e))?;
    Ok(conn)
}

/// Reading, resolving and exporting escalations (what `tierhost review` and the review API
/// use). Opening it never starts a writer; it may run beside a server writing the same file.
pub struct EscalationStore {
    path: PathBuf,
    conn: Mutex<Connection>,
}

const COLUMNS: &str = "id, created_ms, cascade, config_digest, request_id, features, decision, \
                       served_by, trail, status, label, note, resolved_by, resolved_ms";

impl EscalationStore {
    /// Opens (or creates) the queue file.
    pub fn open(path: &Path) -> Result<Self, QueueError> {
        Ok(Self {
            path: path.to_path_buf(),
            conn: Mutex::new(open_connection(path, QueueSync::Full)?),
        })
    }

    /// The queue file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn error(&self, e: impl std::fmt::Display) -> QueueError {
        QueueError::Store {
            path: self.path.clone(),
            message: e.to_string(),
        }
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
    ) -> Result<T, QueueError> {
        let mut conn = self
            .conn
            .lock()
            .map_err(|_| self.error("connection lock poisoned"))?;
        f(&mut conn).map_err(|e| self.error(e))
    }

    /// Items with `status` (all when `None`): pending oldest first, resolved newest first, at
    /// most `limit`.
    pub fn list(
        &self,
        status: Option<Status>,
        limit: usize,
    ) -> Result<Vec<Escalation>, QueueError> {
        let now = now_ms();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self.with(|conn| {
            let (filter, order) = match status {
                Some(Status::Pending) => ("status = ?1", "seq ASC"),
                Some(Status::Resolved) => ("status = ?1", "resolved_ms DESC, seq DESC"),
                None => ("?1 = ?1", "seq ASC"),
            };
            let sql = format!(
                "SELECT {COLUMNS} FROM escalations WHERE {filter} ORDER BY {order} LIMIT ?2"
            );
            let status = status.map_or("", Status::as_str);
            let mut stmt = conn.prepare(&sql)?;
            let rows = stmt.query_map(params![status, limit], Row::read)?;
            rows.collect::<rusqlite::Result<Vec<Row>>>()
        })?;
        rows.into_iter()
            .map(|r| r.decode(now, &self.path))
            .collect()
    }

    /// One item.
    pub fn get(&self, id: &str) -> Result<Option<Escalation>, QueueError> {
        let row = self.with(|conn| {
            conn.query_row(
                &format!("SELECT {COLUMNS} FROM escalations WHERE id = ?1"),
                params![id],
                Row::read,
            )
            .optional()
        })?;
        row.map(|r| r.decode(now_ms(), &self.path)).transpose()
    }

    /// Records a reviewer's label (and note, and name) on a pending item. `labels`, when not
    /// empty, is the set a label must come from.
    pub fn resolve(
        &self,
        id: &str,
        label: &str,
        note: Option<&str>,
        by: Option<&str>,
        labels: &[String],
    ) -> Result<Escalation, ResolveError> {
        let label = label.trim();
        if label.is_empty() || label.len() > MAX_LABEL_BYTES {
            return Err(ResolveError::Invalid(format!(
                "the label must be 1..={MAX_LABEL_BYTES} bytes of text"
            )));
        }
        if !labels.is_empty() && !labels.iter().any(|l| l == label) {
            return Err(ResolveError::Invalid(format!(
                "label `{label}` is not one of the review labels: {}",
                labels.join(", ")
            )));
        }
        if note.is_some_and(|n| n.len() > MAX_NOTE_BYTES) {
            return Err(ResolveError::Invalid(format!(
                "the note is longer than {MAX_NOTE_BYTES} bytes"
            )));
        }
        if by.is_some_and(|b| b.len() > MAX_LABEL_BYTES) {
            return Err(ResolveError::Invalid(format!(
                "the reviewer name is longer than {MAX_LABEL_BYTES} bytes"
            )));
        }
        let note = note.map(str::trim).filter(|n| !n.is_empty());
        let by = by.map(str::trim).filter(|b| !b.is_empty());
        let changed = self.with(|conn| {
            conn.execute(
                "UPDATE escalations SET status = 'resolved', label = ?2, note = ?3, \
                 resolved_by = ?4, resolved_ms = ?5 WHERE id = ?1 AND status = 'pending'",
                params![id, label, note, by, now_ms()],
            )
        })?;
        let item = self
            .get(id)?
            .ok_or_else(|| ResolveError::NotFound(id.to_string()))?;
        if changed == 0 {
            return Err(ResolveError::AlreadyResolved(Box::new(item)));
        }
        Ok(item)
    }

    /// Pending count and the oldest pending item's age.
    pub fn stats(&self) -> Result<QueueStats, QueueError> {
        let (pending, oldest): (i64, Option<i64>) = self.with(|conn| {
            conn.query_row(
                "SELECT count(*), min(created_ms) FROM escalations WHERE status = 'pending'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
        })?;
        Ok(QueueStats {
            pending: pending.max(0) as u64,
            oldest_pending_s: oldest.map_or(0.0, |t| (now_ms() - t).max(0) as f64 / 1000.0),
        })
    }

    /// Checks the file's integrity (`PRAGMA integrity_check`); `Err` with SQLite's report.
    pub fn integrity_check(&self) -> Result<(), QueueError> {
        let report: String =
            self.with(|conn| conn.query_row("PRAGMA integrity_check", [], |r| r.get(0)))?;
        if report == "ok" {
            Ok(())
        } else {
            Err(self.error(format!("integrity check failed: {report}")))
        }
    }
}

/// A row as read, before its JSON columns are decoded.
struct Row {
    id: String,
    created_ms: i64,
    cascade: String,
    config_digest: String,
    request_id: String,
    features: String,
    decision: String,
    served_by: String,
    trail: String,
    status: String,
    label: Option<String>,
    note: Option<String>,
    resolved_by: Option<String>,
    resolved_ms: Option<i64>,
}

impl Row {
    fn read(row: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            id: row.get(0)?,
            created_ms: row.get(1)?,
            cascade: row.get(2)?,
            config_digest: row.get(3)?,
            request_id: row.get(4)?,
            features: row.get(5)?,
            decision: row.get(6)?,
            served_by: row.get(7)?,
            trail: row.get(8)?,
            status: row.get(9)?,
            label: row.get(10)?,
            note: row.get(11)?,
            resolved_by: row.get(12)?,
            resolved_ms: row.get(13)?,
        })
    }

    fn decode(self, now: i64, path: &Path) -> Result<Escalation, QueueError> {
        let corrupt = |what: &str, e: &dyn std::fmt::Display| QueueError::Store {
            path: path.to_path_buf(),
            message: format!("escalation `{}`: {what} is not valid: {e}", self.id),
        };
        let status = match self.status.as_str() {
            "pending" => Status::Pending,
            "resolved" => Status::Resolved,
            other => return Err(corrupt("status", &other)),
        };
        let resolution = match (status, self.label) {
            (Status::Resolved, Some(label)) => Some(Resolution {
                label,
                note: self.note,
                by: self.resolved_by,
                at: rfc3339(self.resolved_ms.unwrap_or(0)),
            }),
            (Status::Resolved, None) => return Err(corrupt("label", &"missing")),
            (Status::Pending, _) => None,
        };
        Ok(Escalation {
            created_at: rfc3339(self.created_ms),
            age_s: (now - self.created_ms).max(0) as f64 / 1000.0,
            features: serde_json::from_str(&self.features).map_err(|e| corrupt("features", &e))?,
            decision: serde_json::from_str(&self.decision).map_err(|e| corrupt("decision", &e))?,
            trail: serde_json::from_str(&self.trail).map_err(|e| corrupt("trail", &e))?,
            id: self.id,
            cascade: self.cascade,
            config_digest: self.config_digest,
            request_id: self.request_id,
            served_by: self.served_by,
            status,
            resolution,
        })
    }
}

/// A row to insert.
struct NewRow {
    id: String,
    created_ms: i64,
    cascade: Arc<str>,
    config_digest: Arc<str>,
    request_id: String,
    features: String,
    decision: String,
    served_by: String,
    trail: String,
}

type Ack = oneshot::Sender<Result<(), EscalationProblemDetail>>;
type EscalationProblemDetail = (EscalationProblem, String);

/// The queue a service writes escalations to: the store plus the group-commit writer thread.
/// Dropping the last handle lets the writer finish what it was given and stop.
pub struct EscalationQueue {
    store: EscalationStore,
    jobs: mpsc::Sender<(NewRow, Ack)>,
    /// Dropping it stops the checkpointer.
    _checkpointer: std::sync::mpsc::Sender<()>,
}

/// Moves committed WAL frames into the database file every [`CHECKPOINT_EVERY`] (passive: it
/// never blocks the writer), until `stop` is dropped; then once more, fully.
fn checkpoint(conn: Connection, path: &Path, stop: std::sync::mpsc::Receiver<()>) {
    let run = |mode: &str| {
        if let Err(error) =
            conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |_| Ok(()))
        {
            tracing::warn!(path = %path.display(), %error, "escalation queue checkpoint failed");
        }
    };
    while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = stop.recv_timeout(CHECKPOINT_EVERY)
    {
        run("PASSIVE");
    }
    run("TRUNCATE");
}

impl EscalationQueue {
    /// Opens (or creates) the queue at `config.queue` (already resolved) and starts its writer.
    pub fn open(path: &Path, config: &EscalationConfig) -> Result<Self, QueueError> {
        let thread_error = |e: std::io::Error| QueueError::Store {
            path: path.to_path_buf(),
            message: format!("cannot start a queue thread: {e}"),
        };
        let writer = open_connection(path, config.sync)?;
        // Checkpoints are the checkpointer's job (below), never a commit's.
        writer
            .execute_batch("PRAGMA wal_autocheckpoint = 0;")
            .map_err(|e| QueueError::Store {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
        let checkpointer = open_connection(path, config.sync)?;
        let store = EscalationStore::open(path)?;
        let (jobs, rx) = mpsc::channel(config.max_batch.saturating_mul(4).max(64));
        let writer = Writer {
            path: path.to_path_buf(),
            conn: writer,
            max_pending: config.max_pending,
            max_batch: config.max_batch,
        };
        std::thread::Builder::new()
            .name("tierhost-escalation".into())
            .spawn(move || writer.run(rx))
            .map_err(thread_error)?;
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let checkpoint_path = path.to_path_buf();
        std::thread::Builder::new()
            .name("tierhost-escalation-checkpoint".into())
            .spawn(move || checkpoint(checkpointer, &checkpoint_path, stopped))
            .map_err(thread_error)?;
        Ok(Self {
            store,
            jobs,
            _checkpointer: stop,
        })
    }

    /// The queue file.
    pub fn path(&self) -> &Path {
        self.store.path()
    }

    /// Reading and resolving.
    pub fn store(&self) -> &EscalationStore {
        &self.store
    }
}

/// The writer thread's state.
struct Writer {
    path: PathBuf,
    conn: Connection,
    max_pending: u64,
    max_batch: usize,
}

impl Writer {
    fn count_pending(&self) -> Option<u64> {
        self.conn
            .query_row(
                "SELECT count(*) FROM escalations WHERE status = 'pending'",
                [],
                |r| r.get::<_, i64>(0),
            )
            .ok()
            .map(|n| n.max(0) as u64)
    }

    fn run(mut self, mut jobs: mpsc::Receiver<(NewRow, Ack)>) {
        let mut pending = self.count_pending().unwrap_or(0);
        let mut counted = Instant::now();
        let mut batch = Vec::with_capacity(self.max_batch);
        while let Some(first) = jobs.blocking_recv() {
            batch.push(first);
            while batch.len() < self.max_batch {
                match jobs.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            // A request that gave up waiting (write_timeout_ms) was answered `not-recorded`:
            // its row is dropped rather than committed behind its back.
            batch.retain(|(_, ack)| !ack.is_closed());
            let wanted = batch.len() as u64;
            let looks_full = pending + wanted > self.max_pending;
            if counted.elapsed() >= RECOUNT_EVERY
                || (looks_full && counted.elapsed() >= RECOUNT_WHEN_FULL)
            {
                pending = self.count_pending().unwrap_or(pending);
                counted = Instant::now();
            }
            let room =
                usize::try_from(self.max_pending.saturating_sub(pending)).unwrap_or(usize::MAX);
            let refused = if batch.len() > room {
                batch.split_off(room)
            } else {
                Vec::new()
            };
            if !refused.is_empty() {
                let detail = format!(
                    "the queue holds {pending} pending escalations (escalation.max_pending = {})",
                    self.max_pending
                );
                for (_, ack) in refused {
                    let _ = ack.send(Err((EscalationProblem::Full, detail.clone())));
                }
            }
            if batch.is_empty() {
                continue;
            }
            match self.insert(&batch) {
                Ok(()) => {
                    pending += batch.len() as u64;
                    for (_, ack) in batch.drain(..) {
                        let _ = ack.send(Ok(()));
                    }
                }
                Err(e) => {
                    let detail = QueueError::Store {
                        path: self.path.clone(),
                        message: e.to_string(),
                    }
                    .to_string();
                    for (_, ack) in batch.drain(..) {
                        let _ = ack.send(Err((EscalationProblem::Failed, detail.clone())));
                    }
                }
            }
        }
    }

    fn insert(&mut self, batch: &[(NewRow, Ack)]) -> rusqlite::Result<()> {
        let tx = self.conn.transaction()?;
        {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO escalations (id, created_ms, cascade, config_digest, request_id, \
                 features, decision, served_by, trail) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )?;
            for (row, _) in batch {
                stmt.execute(params![
                    row.id,
                    row.created_ms,
                    &*row.cascade,
                    &*row.config_digest,
                    row.request_id,
                    row.features,
                    row.decision,
                    row.served_by,
                    row.trail,
                ])?;
            }
        }
        tx.commit()
    }
}

/// A cascade's escalation path: when to escalate, what to store, and the queue.
pub struct Escalator {
    config: EscalationConfig,
    queue: Arc<EscalationQueue>,
    redaction: Arc<Redaction>,
    cascade: Arc<str>,
    config_digest: Arc<str>,
}

impl Escalator {
    /// The escalation path of a cascade named `cascade` whose config has `config_digest`.
    pub(crate) fn new(
        config: EscalationConfig,
        queue: Arc<EscalationQueue>,
        redaction: Arc<Redaction>,
        cascade: Arc<str>,
        config_digest: String,
    ) -> Self {
        Self {
            config,
            queue,
            redaction,
            cascade,
            config_digest: Arc::from(config_digest),
        }
    }

    /// The `[escalation]` section.
    pub(crate) fn config(&self) -> &EscalationConfig {
        &self.config
    }

    /// The queue.
    pub fn queue(&self) -> &Arc<EscalationQueue> {
        &self.queue
    }

    /// Commits `answer`'s request to the queue when it escalates; the receipt says whether it
    /// was recorded. `None` when the answer does not escalate.
    pub(crate) async fn submit(
        &self,
        request: &Request,
        answer: &Answer,
    ) -> Option<EscalationReceipt> {
        self.submit_all(std::iter::once((request, answer)))
            .await
            .pop()
            .flatten()
    }

    /// [`Self::submit`] for many answers: every row is handed to the writer before any commit
    /// is waited for, so they share commits; all within one `write_timeout_ms`.
    pub(crate) async fn submit_all<'a>(
        &self,
        answered: impl Iterator<Item = (&'a Request, &'a Answer)>,
    ) -> Vec<Option<EscalationReceipt>> {
        let timeout = Duration::from_millis(self.config.write_timeout_ms);
        let deadline = tokio::time::Instant::now() + timeout;
        let timed_out = || {
            (
                EscalationProblem::Timeout,
                format!(
                    "not committed within {} ms (escalation.write_timeout_ms); the row is \
                     dropped unless its commit had already begun",
                    timeout.as_millis()
                ),
            )
        };
        let closed = || {
            (
                EscalationProblem::Failed,
                QueueError::Closed(self.queue.path().to_path_buf()).to_string(),
            )
        };
        let mut pending = Vec::new();
        for (request, answer) in answered {
            if !escalates(&self.config, answer) {
                pending.push(None);
                continue;
            }
            let id = uuid::Uuid::now_v7().to_string();
            let row = NewRow {
                id: id.clone(),
                created_ms: now_ms(),
                cascade: self.cascade.clone(),
                config_digest: self.config_digest.clone(),
                request_id: request.id.clone(),
                features: json(&self.redaction.view(&request.features)),
                decision: json(&answer.decision),
                served_by: answer.served_by.tier.clone(),
                trail: json(&answer.trail),
            };
            let (ack, done) = oneshot::channel();
            let sent =
                match tokio::time::timeout_at(deadline, self.queue.jobs.send((row, ack))).await {
                    Ok(Ok(())) => Ok(done),
                    Ok(Err(_)) => Err(closed()),
                    Err(_) => Err(timed_out()),
                };
            pending.push(Some((id, request, sent)));
        }
        let mut receipts = Vec::with_capacity(pending.len());
        for entry in pending {
            let Some((id, request, sent)) = entry else {
                receipts.push(None);
                continue;
            };
            let outcome = match sent {
                Ok(done) => match tokio::time::timeout_at(deadline, done).await {
                    Ok(Ok(result)) => result,
                    Ok(Err(_)) => Err(closed()),
                    Err(_) => Err(timed_out()),
                },
                Err(problem) => Err(problem),
            };
            receipts.push(Some(match outcome {
                Ok(()) => EscalationReceipt::Recorded { id },
                Err((problem, detail)) => {
                    tracing::warn!(
                        target: "tierhost::escalation",
                        cascade = %self.cascade,
                        request_id = %request.id,
                        problem = problem.as_str(),
                        %detail,
                        "escalation not recorded"
                    );
                    EscalationReceipt::NotRecorded { problem, detail }
                }
            }));
        }
        receipts
    }
}

/// One of a row's JSON columns (serializing these types cannot fail: their maps have string
/// keys and serde_json writes non-finite floats as null).
fn json<T: Serialize + ?Sized>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "null".into())
}

/// How `tierhost review export` writes resolved items.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    /// The eval CSV layout: one column per feature, then the label column.
    Csv,
    /// One JSON object per line: id, request id, features, label, note, who and when.
    Jsonl,
}

/// Writes resolved `items` to `out` and returns how many were written. For CSV, `values`
/// maps a label back to the value the training data uses (`phishing` -> `1`, the inverse of
/// eval's `--labels`); a label without a mapping is written as is.
pub fn export(
    items: &[Escalation],
    format: ExportFormat,
    label_column: &str,
    values: &BTreeMap<String, String>,
    out: &mut dyn Write,
) -> std::io::Result<usize> {
    let resolved: Vec<(&Escalation, &Resolution)> = items
        .iter()
        .filter_map(|i| i.resolution.as_ref().map(|r| (i, r)))
        .collect();
    match format {
        ExportFormat::Jsonl => {
            for (item, resolution) in &resolved {
                let line = serde_json::json!({
                    "id": item.id,
                    "request_id": item.request_id,
                    "cascade": item.cascade,
                    "created_at": item.created_at,
                    "features": item.features,
                    "label": resolution.label,
                    "note": resolution.note,
                    "resolved_by": resolution.by,
                    "resolved_at": resolution.at,
                });
                serde_json::to_writer(&mut *out, &line)?;
                out.write_all(b"\n")?;
            }
        }
        ExportFormat::Csv => {
            let mut columns: Vec<&str> = Vec::new();
            for (item, _) in &resolved {
                for (name, _) in &item.features.0 {
                    if name != label_column && !columns.contains(&name.as_str()) {
                        columns.push(name);
                    }
                }
            }
            let mut writer = csv::Writer::from_writer(out);
            let header = columns.iter().copied().chain(std::iter::once(label_column));
            writer.write_record(header).map_err(std::io::Error::other)?;
            for (item, resolution) in &resolved {
                let mut record: Vec<String> = columns
                    .iter()
                    .map(|c| {
                        item.features
                            .0
                            .iter()
                            .find(|(n, _)| n == c)
                            .map_or(String::new(), |(_, v)| cell(v))
                    })
                    .collect();
                record.push(
                    values
                        .get(&resolution.label)
                        .cloned()
                        .unwrap_or_else(|| resolution.label.clone()),
                );
                writer
                    .write_record(&record)
                    .map_err(std::io::Error::other)?;
            }
            writer.flush()?;
        }
    }
    Ok(resolved.len())
}

/// A feature value as a CSV cell (null is empty, text as is, numbers as JSON writes them).
fn cell(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::Null => String::new(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl EscalationQueue {
        /// One row, waited for without a timeout.
        async fn append(&self, row: NewRow, _: Duration) -> Result<(), EscalationProblemDetail> {
            let (ack, done) = oneshot::channel();
            self.jobs.send((row, ack)).await.expect("writer runs");
            done.await.expect("writer answers")
        }
    }

    fn row(id: &str) -> NewRow {
        NewRow {
            id: id.into(),
            created_ms: now_ms(),
            cascade: Arc::from("c"),
            config_digest: Arc::from("d"),
            request_id: format!("r-{id}"),
            features: r#"{"b":1.5,"a":"x"}"#.into(),
            decision: r#"{"outcome":"abstain","reason":"review"}"#.into(),
            served_by: "safe-default".into(),
            trail: "[]".into(),
        }
    }

    #[tokio::test]
    async fn a_full_queue_refuses_with_the_reason_and_a_resolve_makes_room() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.db");
        let mut config = EscalationConfig::new(&path);
        config.max_pending = 2;
        let queue = EscalationQueue::open(&path, &config).unwrap();
        let t = Duration::from_secs(30);
        queue.append(row("1"), t).await.unwrap();
        queue.append(row("2"), t).await.unwrap();
        let (problem, detail) = queue.append(row("3"), t).await.unwrap_err();
        assert_eq!(problem, EscalationProblem::Full);
        assert!(detail.contains("max_pending = 2"), "{detail}");
        let item = queue
            .store()
            .resolve("1", "fraud", Some("n"), Some("ana"), &[])
            .unwrap();
        assert_eq!(item.status, Status::Resolved);
        assert_eq!(item.features.0[0].0, "b", "features keep their order");
        // A full writer re-counts (at most every RECOUNT_WHEN_FULL) and finds the room.
        let started = Instant::now();
        let mut attempt = 0;
        while let Err((problem, _)) = queue.append(row(&format!("3-{attempt}")), t).await {
            assert_eq!(problem, EscalationProblem::Full);
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "no room after a resolve"
            );
            attempt += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let stats = queue.store().stats().unwrap();
        assert_eq!(stats.pending, 2);
        match queue.store().resolve("1", "fraud", None, None, &[]) {
            Err(ResolveError::AlreadyResolved(item)) => {
                assert_eq!(item.resolution.unwrap().by.as_deref(), Some("ana"))
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            queue.store().resolve("nope", "fraud", None, None, &[]),
            Err(ResolveError::NotFound(_))
        ));
        let labels = vec!["fraud".to_string()];
        assert!(matches!(
            queue.store().resolve("2", "other", None, None, &labels),
            Err(ResolveError::Invalid(_))
        ));
        queue.store().integrity_check().unwrap();
    }

    #[test]
    fn a_file_that_is_not_a_queue_is_refused_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.db");
        std::fs::write(&path, vec![b'x'; 8192]).unwrap();
        let err = EscalationStore::open(&path).err().unwrap().to_string();
        assert!(err.contains("q.db"), "{err}");
        let newer = dir.path().join("newer.db");
        Connection::open(&newer)
            .unwrap()
            .execute_batch("PRAGMA user_version = 99;")
            .unwrap();
        let err = EscalationStore::open(&newer).err().unwrap().to_string();
        assert!(err.contains("schema version 99"), "{err}");
    }

    #[test]
    fn csv_export_maps_labels_back_and_keeps_feature_columns() {
        let item = |id: &str, label: &str, features: &str| Escalation {
            id: id.into(),
            created_at: rfc3339(0),
            age_s: 0.0,
            cascade: "c".into(),
            config_digest: "d".into(),
            request_id: id.into(),
            features: serde_json::from_str(features).unwrap(),
            decision: serde_json::Value::Null,
            served_by: "safe-default".into(),
            trail: serde_json::Value::Null,
            status: Status::Resolved,
            resolution: Some(Resolution {
                label: label.into(),
                note: None,
                by: None,
                at: rfc3339(0),
            }),
        };
        let items = vec![
            item("1", "phishing", r#"{"b":1.0,"a":"x,y"}"#),
            item("2", "other", r#"{"a":null,"c":true}"#),
        ];
        let values = BTreeMap::from([("phishing".to_string(), "1".to_string())]);
        let mut out = Vec::new();
        let n = export(&items, ExportFormat::Csv, "label", &values, &mut out).unwrap();
        assert_eq!(n, 2);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "b,a,c,label\n1.0,\"x,y\",,1\n,,true,other\n"
        );
    }
}
