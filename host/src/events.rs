//! Fallback events: one structured `tracing` event per step down the cascade and, when
//! configured, one JSON line per event in an audit file.
//!
//! Events are emitted once the request is answered, so each one can name both the next tier
//! and the tier that finally served (with its version and output).
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::Serialize;

use crate::answer::{Answer, Decision};
use crate::escalation::RedactedFeatures;

/// One step down the cascade, as written to the audit file.
#[derive(Serialize)]
pub struct FallbackEvent<'a> {
    /// RFC 3339 time of the event.
    pub time: String,
    /// Cascade name.
    pub cascade: &'a str,
    /// Request id.
    pub request_id: &'a str,
    /// Tier that did not serve.
    pub from_tier: &'a str,
    /// Its plugin version.
    pub from_version: Option<&'a str>,
    /// Reason kind (`out-of-fuel`, `low-confidence`, ...).
    pub reason: &'static str,
    /// Human-readable reason.
    pub detail: String,
    /// The next tier tried (`safe-default` after the last).
    pub to_tier: &'a str,
    /// Tier that finally served the request.
    pub served_by: &'a str,
    /// Its plugin version.
    pub served_version: Option<&'a str>,
    /// The served decision.
    pub output: &'a Decision,
    /// The request's features, without those `[escalation]` redacts.
    pub features: RedactedFeatures<'a>,
}

/// An append-only JSON-lines audit file with size-based rotation: when the file would pass
/// `max_bytes`, it becomes `<file>.1` (older ones shift up to `<file>.<keep>`, the oldest is
/// deleted) and a new file is started. Lines are flushed after every request, so a crash loses
/// nothing that was answered.
pub struct AuditLog {
    path: PathBuf,
    max_bytes: u64,
    keep: u32,
    file: Mutex<AuditFile>,
}

struct AuditFile {
    writer: std::io::BufWriter<std::fs::File>,
    written: u64,
}

impl AuditLog {
    /// Opens (creating or appending) the audit file.
    pub fn open(path: &Path, max_bytes: u64, keep: u32) -> std::io::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        Ok(Self {
            path: path.to_path_buf(),
            max_bytes,
            keep,
            file: Mutex::new(Self::open_file(path)?),
        })
    }

    fn open_file(path: &Path) -> std::io::Result<AuditFile> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        let written = file.metadata()?.len();
        Ok(AuditFile {
            writer: std::io::BufWriter::new(file),
            written,
        })
    }

    /// Where the audit file is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Flushes buffered lines (also done after every request).
    pub fn flush(&self) -> std::io::Result<()> {
        match self.file.lock() {
            Ok(mut f) => f.writer.flush(),
            Err(_) => Ok(()),
        }
    }

    fn rotate(&self, file: &mut AuditFile) -> std::io::Result<()> {
        file.writer.flush()?;
        let numbered = |n: u32| PathBuf::from(format!("{}.{n}", self.path.display()));
        if self.keep == 0 {
            std::fs::remove_file(&self.path)?;
        } else {
            let _ = std::fs::remove_file(numbered(self.keep));
            for n in (1..self.keep).rev() {
                if numbered(n).exists() {
                    std::fs::rename(numbered(n), numbered(n + 1))?;
                }
            }
            std::fs::rename(&self.path, numbered(1))?;
        }
        *file = Self::open_file(&self.path)?;
        Ok(())
    }

    /// Appends one JSON line (breaker transitions and other policy events).
    pub fn write_record<T: Serialize>(&self, record: &T) {
        self.write(std::slice::from_ref(record));
    }

    fn write<T: Serialize>(&self, events: &[T]) {
        let Ok(mut file) = self.file.lock() else {
            return;
        };
        let mut buf = Vec::with_capacity(512 * events.len());
        for event in events {
            if serde_json::to_writer(&mut buf, event).is_ok() {
                buf.push(b'\n');
            }
        }
        let result = (|| {
            if file.written > 0 && file.written + buf.len() as u64 > self.max_bytes {
                self.rotate(&mut file)?;
            }
            file.writer.write_all(&buf)?;
            file.written += buf.len() as u64;
            file.writer.flush()
        })();
        if let Err(error) = result {
            tracing::error!(path = %self.path.display(), %error, "cannot write the audit log");
        }
    }
}

/// The current time in RFC 3339 with milliseconds, as written in audit lines.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

/// Emits the fallback events of one answered request.
pub fn emit_fallbacks(
    cascade: &str,
    answer: &Answer,
    features: RedactedFeatures<'_>,
    audit: Option<&AuditLog>,
) {
    let served_version = answer.served_by.version.as_deref();
    let mut events = Vec::new();
    for (i, entry) in answer.trail.iter().enumerate() {
        let Some(reason) = &entry.reason else {
            continue;
        };
        let to_tier = answer
            .trail
            .get(i + 1)
            .map_or(crate::cascade::SAFE_DEFAULT, |next| next.tier.as_str());
        tracing::warn!(
            target: "tierhost::fallback",
            cascade,
            request_id = %answer.request_id,
            from_tier = %entry.tier,
            reason = reason.kind(),
            detail = %reason,
            to_tier,
            served_by = %answer.served_by.tier,
            "fallback"
        );
        if audit.is_some() {
            events.push(FallbackEvent {
                time: now_rfc3339(),
                cascade,
                request_id: &answer.request_id,
                from_tier: &entry.tier,
                from_version: entry.version.as_deref(),
                reason: reason.kind(),
                detail: reason.to_string(),
                to_tier,
                served_by: &answer.served_by.tier,
                served_version,
                output: &answer.decision,
                features,
            });
        }
    }
    if let (Some(audit), false) = (audit, events.is_empty()) {
        audit.write(&events);
    }
}
