//! `tierhost drill`: fire drills for a cascade's fallbacks. For every tier and every fault
//! kind, a copy of the cascade is loaded with that one tier broken on purpose, the sample
//! requests are replayed, and each answer is checked: answered (or explicitly abstained),
//! within the request budget plus the service's grace, and with the faulted tier's trail entry
//! naming the right reason. The result is a tier × fault matrix.
//!
//! This module owns the fault catalogue ([`Fault`]), the drill's config copies, the verdict on
//! one answer ([`check_answer`]) and on one cell ([`Cell::judge`]), and the report (text table
//! and JSON). Faults are injected with the tier's own `[tier.chaos]` (so they happen for real
//! inside the tier's sandbox and limits), except the load failure, which points the tier at a
//! file that is not a component.
//!
//! Why: an untested fallback that activates under pressure is worse than no fallback
//! (reference article 000). A drill proves each step down works before production needs it.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::answer::{Answer, Decision, Step};
use crate::cascade::{Cascade, SAFE_DEFAULT};
use crate::config::{ChaosConfig, Config, PluginSource};
use crate::engine::TierEngine;
use crate::error::{ConfigError, RequestError};
use crate::policy::chaos::ChaosMode;
use crate::request::Request;
use crate::service::BUDGET_GRACE;

/// One kind of fault the drill injects into a tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Fault {
    /// `loop {}`: burns CPU until a limit stops it.
    Loop,
    /// Allocates until the memory limit refuses.
    MemoryBomb,
    /// Executes `unreachable`.
    Trap,
    /// Unbounded recursion.
    StackOverflow,
    /// Blocks in a WASI sleep for an hour.
    Hang,
    /// Answers with a NaN score.
    Nan,
    /// Answers with a reason twice the tier's `max_output_bytes`.
    OversizedOutput,
    /// Abstains.
    Abstain,
    /// The tier's plugin is a file that is not a component.
    LoadFailure,
}

/// Reason kinds that skip a tier before it is called for reasons that have nothing to do with
/// the injected fault: the request is legitimately not this tier's (its OOD guard). Such a
/// request did not exercise the fault; it is counted as "gated", not as a gap.
pub const GATE_KINDS: [&str; 1] = ["out-of-distribution"];

impl Fault {
    /// Every fault, in matrix column order.
    pub const ALL: [Fault; 9] = [
        Self::Loop,
        Self::MemoryBomb,
        Self::Trap,
        Self::StackOverflow,
        Self::Hang,
        Self::Nan,
        Self::OversizedOutput,
        Self::Abstain,
        Self::LoadFailure,
    ];

    /// Column name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Loop => "loop",
            Self::MemoryBomb => "memory-bomb",
            Self::Trap => "trap",
            Self::StackOverflow => "stack-overflow",
            Self::Hang => "hang",
            Self::Nan => "nan",
            Self::OversizedOutput => "oversized-output",
            Self::Abstain => "abstain",
            Self::LoadFailure => "load-failure",
        }
    }

    /// The `builtin:chaos` mode that produces the fault (none for the load failure, which is
    /// injected by replacing the plugin).
    pub fn chaos_mode(self) -> Option<ChaosMode> {
        Some(match self {
            Self::Loop => ChaosMode::InfiniteLoop,
            Self::MemoryBomb => ChaosMode::MemoryBomb,
            Self::Trap => ChaosMode::Trap,
            Self::StackOverflow => ChaosMode::Recursion,
            Self::Hang => ChaosMode::Sleep,
            Self::Nan => ChaosMode::Nan,
            Self::OversizedOutput => ChaosMode::HugeReason,
            Self::Abstain => ChaosMode::Abstain,
            Self::LoadFailure => return None,
        })
    }

    /// The reason kinds the faulted tier's trail entry may carry. A loop is stopped by fuel,
    /// or by the deadline when the tier's fuel outlasts it; every other fault has one right
    /// reason (README, "Fallback reasons").
    pub fn expected(self) -> &'static [&'static str] {
        match self {
            Self::Loop => &["out-of-fuel", "deadline"],
            Self::MemoryBomb => &["memory-limit"],
            Self::Trap => &["trap"],
            Self::StackOverflow => &["stack-overflow"],
            Self::Hang => &["deadline"],
            Self::Nan | Self::OversizedOutput => &["invalid-output"],
            Self::Abstain => &["abstained"],
            Self::LoadFailure => &["load-failed"],
        }
    }
}

/// Why a drill could not run (a failing cell is not an error: it is in the report).
#[derive(Debug, thiserror::Error)]
pub enum DrillError {
    /// A sample file cannot be read.
    // The I/O error is part of the message, not a chained source, so `{:#}` prints it once.
    #[error("{path}: cannot read: {error}")]
    Read {
        /// The file.
        path: PathBuf,
        /// I/O error.
        error: std::io::Error,
    },
    /// A line of a sample file is not a valid request.
    #[error("{path}:{line}: {error}")]
    Sample {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        error: RequestError,
    },
    /// No sample requests to replay.
    #[error("no sample requests: {0}")]
    NoSamples(String),
    /// The scratch directory for the corrupt plugin cannot be made.
    #[error("cannot write the corrupt plugin for the load-failure drill in {path}: {error}")]
    Scratch {
        /// Where.
        path: PathBuf,
        /// I/O error.
        error: std::io::Error,
    },
    /// The cascade (or a drill copy of it) does not load.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A tier does not load even without an injected fault.
    #[error("tier \"{tier}\" does not load: {error} (fix the cascade first: `tierhost check`)")]
    Load {
        /// The tier.
        tier: String,
        /// The load error.
        error: String,
    },
}

/// Reads JSON-lines requests (blank lines skipped).
pub fn read_requests(path: &Path) -> Result<Vec<Request>, DrillError> {
    let text = std::fs::read_to_string(path).map_err(|error| DrillError::Read {
        path: path.to_path_buf(),
        error,
    })?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            Request::from_json(l).map_err(|error| DrillError::Sample {
                path: path.to_path_buf(),
                line: i + 1,
                error,
            })
        })
        .collect()
}

/// The default sample set: the config's `cascade.check_samples`, resolved.
pub fn default_samples(config: &Config) -> Result<PathBuf, DrillError> {
    config
        .cascade
        .check_samples
        .as_ref()
        .map(|p| config.resolve(p))
        .ok_or_else(|| {
            DrillError::NoSamples(format!(
                "{} has no cascade.check_samples; pass --samples FILE.jsonl or --data FILE.csv",
                config.source.display()
            ))
        })
}

/// What the faulted tier's trail entry said about one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "outcome", content = "kind")]
pub enum Seen {
    /// No entry: an earlier tier served the request.
    NotReached,
    /// The faulted tier served it (the fault was not caught).
    Served,
    /// The tier did not serve, for this reason kind.
    Reason(&'static str),
}

impl Seen {
    fn label(self) -> &'static str {
        match self {
            Self::NotReached => "not-reached",
            Self::Served => "served",
            Self::Reason(kind) => kind,
        }
    }
}

/// The verdict on one answer of a drill.
#[derive(Debug, Clone, Serialize)]
pub struct RequestVerdict {
    /// The request.
    pub request_id: String,
    /// What the faulted tier's entry recorded.
    pub seen: Seen,
    /// Wall time of the request as the caller saw it, in microseconds.
    pub elapsed_us: u64,
    /// Everything wrong with the answer (empty: it passed). Each is `(tag, message)`; the tag
    /// is what the matrix cell shows.
    pub problems: Vec<(String, String)>,
}

/// Checks one answer of a drill in which `tier` carries `fault`: the request must be answered
/// (or explicitly abstained) by another tier or the safe default, within `limit`, and the
/// faulted tier's entry (if the walk got that far) must carry one of the fault's expected
/// reasons or a gate's ([`GATE_KINDS`]).
pub fn check_answer(
    answer: &Answer,
    tier: &str,
    fault: Fault,
    elapsed: Duration,
    limit: Duration,
) -> RequestVerdict {
    let mut problems = Vec::new();
    let entry = answer.trail.iter().find(|e| e.tier == tier);
    let seen = match entry {
        None => Seen::NotReached,
        Some(e) => match &e.reason {
            Some(reason) => Seen::Reason(reason.kind()),
            None if e.step == Step::Served => Seen::Served,
            // A trail entry without a reason that did not serve (a hedge cancelled without
            // one) cannot happen with hedging off; treat it as a gap rather than guess.
            None => Seen::Reason("no-reason"),
        },
    };
    match seen {
        Seen::NotReached if answer.served_by.tier == SAFE_DEFAULT => problems.push((
            "not-tried".into(),
            format!("tier \"{tier}\" is missing from the trail, yet the safe default answered"),
        )),
        Seen::NotReached => {}
        Seen::Served => problems.push((
            "served".into(),
            format!("tier \"{tier}\" served the request: the injected fault was not caught"),
        )),
        Seen::Reason(kind) if fault.expected().contains(&kind) || GATE_KINDS.contains(&kind) => {}
        Seen::Reason(kind) => problems.push((
            kind.into(),
            format!(
                "tier \"{tier}\" recorded {kind}, expected {}{}",
                fault.expected().join(" or "),
                entry
                    .and_then(|e| e.message.as_deref())
                    .map(|m| format!(" ({})", clip(m, 160)))
                    .unwrap_or_default()
            ),
        )),
    }
    if answer.served_by.tier == tier && seen != Seen::Served {
        problems.push((
            "served".into(),
            format!("the answer names the faulted tier \"{tier}\" as its server"),
        ));
    }
    // The cascade cannot fail by construction; the drill checks the answer anyway, because a
    // drill that trusts what it is testing proves nothing.
    match &answer.decision {
        Decision::Answer { label, .. } if label.is_empty() => {
            problems.push(("bad-answer".into(), "the answer has an empty label".into()));
        }
        Decision::Abstain { reason } if reason.is_empty() => {
            problems.push(("bad-answer".into(), "the abstention gives no reason".into()))
        }
        _ => {}
    }
    if elapsed > limit {
        problems.push((
            "over-budget".into(),
            format!(
                "answered after {:.1} ms, over the budget + grace of {} ms",
                elapsed.as_secs_f64() * 1e3,
                limit.as_millis()
            ),
        ));
    }
    RequestVerdict {
        request_id: answer.request_id.clone(),
        seen,
        elapsed_us: elapsed.as_micros() as u64,
        problems,
    }
}

fn clip(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}...", &text[..at]),
        None => text.to_string(),
    }
}

/// How a cell of the matrix came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CellStatus {
    /// Every request passed and at least one called the faulted tier.
    Pass,
    /// At least one request failed a check.
    Gap,
    /// Every request passed, but none called the faulted tier (earlier tiers served them
    /// all, or its OOD guard turned them away): the fallback was not exercised, which is a gap
    /// of the drill itself.
    Untested,
}

/// One (tier, fault) cell.
#[derive(Debug, Clone, Serialize)]
pub struct Cell {
    /// The fault injected.
    pub fault: Fault,
    /// The verdict.
    pub status: CellStatus,
    /// Requests replayed.
    pub requests: usize,
    /// Requests that called the faulted tier (or, for a load failure, reached it).
    pub exercised: usize,
    /// Requests an earlier tier served.
    pub not_reached: usize,
    /// Requests the tier's gates turned away before the call ([`GATE_KINDS`]).
    pub gated: usize,
    /// What the faulted tier's entry recorded, by outcome, over every request.
    pub seen: BTreeMap<String, usize>,
    /// The slowest request, in microseconds.
    pub max_elapsed_us: u64,
    /// Failed requests in all.
    pub failed: usize,
    /// What the failed requests showed (a reason kind, `served`, `over-budget`, ...), each
    /// once, in order of first appearance: what the matrix cell shows.
    pub failed_as: Vec<String>,
    /// What was wrong with the first [`MAX_LISTED_REQUESTS`] failed requests.
    pub problems: Vec<RequestProblem>,
}

/// A failed request of a cell.
#[derive(Debug, Clone, Serialize)]
pub struct RequestProblem {
    /// The request.
    pub request_id: String,
    /// What the matrix shows for it.
    pub tag: String,
    /// What was wrong.
    pub problem: String,
}

/// Failed requests whose problems are listed per cell; the rest are counted.
pub const MAX_LISTED_REQUESTS: usize = 5;

impl Cell {
    /// Judges a cell from the verdicts on its requests.
    pub fn judge(fault: Fault, verdicts: &[RequestVerdict]) -> Self {
        let mut seen = BTreeMap::new();
        let (mut exercised, mut not_reached, mut gated, mut failed) = (0, 0, 0, 0);
        let (mut problems, mut failed_as) = (Vec::new(), Vec::new());
        for v in verdicts {
            *seen.entry(v.seen.label().to_string()).or_insert(0) += 1;
            match v.seen {
                Seen::NotReached => not_reached += 1,
                Seen::Reason(kind) if GATE_KINDS.contains(&kind) => gated += 1,
                _ => exercised += 1,
            }
            if v.problems.is_empty() {
                continue;
            }
            failed += 1;
            for (tag, problem) in &v.problems {
                if !failed_as.contains(tag) {
                    failed_as.push(tag.clone());
                }
                if failed <= MAX_LISTED_REQUESTS {
                    problems.push(RequestProblem {
                        request_id: v.request_id.clone(),
                        tag: tag.clone(),
                        problem: problem.clone(),
                    });
                }
            }
        }
        let status = if failed > 0 {
            CellStatus::Gap
        } else if exercised == 0 {
            CellStatus::Untested
        } else {
            CellStatus::Pass
        };
        Self {
            fault,
            status,
            requests: verdicts.len(),
            exercised,
            not_reached,
            gated,
            seen,
            max_elapsed_us: verdicts.iter().map(|v| v.elapsed_us).max().unwrap_or(0),
            failed,
            failed_as,
            problems,
        }
    }

    /// The matrix cell: `✓`, or `✗` with what was seen on the failing requests.
    pub fn mark(&self) -> String {
        match self.status {
            CellStatus::Pass => "✓".into(),
            CellStatus::Untested => "✗ untested".into(),
            CellStatus::Gap => format!("✗ {}", self.failed_as.join(",")),
        }
    }
}

/// One tier's row of the matrix.
#[derive(Debug, Clone, Serialize)]
pub struct TierRow {
    /// Tier name.
    pub tier: String,
    /// One cell per fault, in [`Fault::ALL`] order.
    pub cells: Vec<Cell>,
}

/// The whole drill.
#[derive(Debug, Clone, Serialize)]
pub struct DrillReport {
    /// Cascade name.
    pub cascade: String,
    /// Config file.
    pub config: PathBuf,
    /// Where the sample requests came from.
    pub samples: String,
    /// Requests replayed per cell.
    pub requests: usize,
    /// The cascade's request budget, in ms.
    pub budget_ms: u64,
    /// Grace past the budget a request may take (the service's), in ms.
    pub grace_ms: u64,
    /// Policies removed from the drill's copies so every request reaches the faulted tier.
    pub removed: Vec<String>,
    /// The faults, with their chaos mode and expected reasons, in column order.
    pub faults: Vec<FaultSpec>,
    /// One row per tier.
    pub tiers: Vec<TierRow>,
    /// Cells that are not ✓.
    pub gaps: usize,
}

/// A fault as the report describes it.
#[derive(Debug, Clone, Serialize)]
pub struct FaultSpec {
    /// Column name.
    pub fault: Fault,
    /// How it is injected: a `builtin:chaos` mode, or `corrupt plugin`.
    pub injected_as: String,
    /// Expected reason kinds of the faulted tier.
    pub expect: Vec<&'static str>,
}

/// The cascade as the drill runs it: no breakers, hedging or cache (each would, correctly,
/// stop calling a failing tier or answer without it, and the drill must see the tier's own
/// reason on every request), no configured chaos (the drill injects its own), no audit file
/// (a drill must not write production logs). Returns the copy and what was removed.
pub fn drill_base(config: &Config) -> (Config, Vec<String>) {
    let mut base = config.clone();
    let mut removed = Vec::new();
    if base.cache.take().is_some() {
        removed.push("[cache]".to_string());
    }
    if base.cascade.audit_log.take().is_some() {
        removed.push("cascade.audit_log".to_string());
    }
    for tier in &mut base.tiers {
        for (section, present) in [
            ("breaker", tier.breaker.take().is_some()),
            ("hedge", tier.hedge.take().is_some()),
            ("chaos", tier.chaos.take().is_some()),
        ] {
            if present {
                removed.push(format!("tier \"{}\".{section}", tier.name));
            }
        }
    }
    (base, removed)
}

/// The drill copy of `base` with tier `index` carrying `fault`; `corrupt` is the file a
/// load failure points the tier at.
pub fn faulted(base: &Config, index: usize, fault: Fault, corrupt: &Path) -> Config {
    let mut config = base.clone();
    if let Some(tier) = config.tiers.get_mut(index) {
        match fault.chaos_mode() {
            Some(mode) => {
                let mut params = toml::Table::new();
                if fault == Fault::OversizedOutput {
                    // Twice the tier's output limit: clearly oversized, yet cheap enough to
                    // build within the tier's fuel (a fixed 10 MB reason runs out of fuel
                    // first under default limits, and the output guard would go untested).
                    let bytes = tier.limits.max_output_bytes.saturating_mul(2);
                    params.insert(
                        "bytes".into(),
                        toml::Value::Integer(i64::try_from(bytes).unwrap_or(i64::MAX)),
                    );
                }
                tier.chaos = Some(ChaosConfig {
                    params,
                    ..ChaosConfig::new(mode, 1.0)
                });
            }
            None => tier.plugin = PluginSource::File(corrupt.to_path_buf()),
        }
    }
    config
}

/// A private directory that is removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Result<Self, DrillError> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path =
            std::env::temp_dir().join(format!("tierhost-drill-{}-{nanos}", std::process::id()));
        // create_dir (not _all) fails if the name exists, so nothing pre-placed is reused.
        std::fs::create_dir(&path).map_err(|error| DrillError::Scratch {
            path: path.clone(),
            error,
        })?;
        Ok(Self(path))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Bytes of the corrupt plugin: the wasm magic and a component-layer version, then garbage,
/// as a truncated or mangled upload would look.
const CORRUPT_PLUGIN: &[u8] = b"\0asm\x0d\0\x01\0tierhost drill: this is not a component";

/// Runs the drill: every tier × every [`Fault`], each on a fresh copy of the cascade loaded
/// on `engine` (components compile once and are reused from its cache), replaying `samples`
/// one at a time.
pub async fn run(
    engine: &TierEngine,
    config: &Config,
    samples_source: &str,
    samples: &[Request],
) -> Result<DrillReport, DrillError> {
    if samples.is_empty() {
        return Err(DrillError::NoSamples(format!("{samples_source} is empty")));
    }
    let (base, removed) = drill_base(config);
    // The healthy copy must load completely: a tier that is already broken would make every
    // cell below it meaningless.
    let healthy = Cascade::with_engine(engine.clone(), &base).await?;
    if let Some((tier, error)) = healthy.load_errors().first() {
        return Err(DrillError::Load {
            tier: tier.to_string(),
            error: error.to_string(),
        });
    }
    drop(healthy);

    let scratch = Scratch::new()?;
    let corrupt = scratch.0.join("corrupt.wasm");
    std::fs::write(&corrupt, CORRUPT_PLUGIN).map_err(|error| DrillError::Scratch {
        path: corrupt.clone(),
        error,
    })?;
    let limit = Duration::from_millis(config.cascade.budget_ms) + BUDGET_GRACE;
    let mut tiers = Vec::with_capacity(base.tiers.len());
    for (index, tier) in base.tiers.iter().enumerate() {
        let mut cells = Vec::with_capacity(Fault::ALL.len());
        for fault in Fault::ALL {
            let drill = faulted(&base, index, fault, &corrupt);
            let cascade = Cascade::with_engine(engine.clone(), &drill).await?;
            if let Some((other, error)) = cascade
                .load_errors()
                .into_iter()
                .find(|(name, _)| fault != Fault::LoadFailure || *name != tier.name)
            {
                // Chaos loads `builtin:chaos` alongside the tier: if that fails, the drill
                // cannot run, and saying so beats a matrix of false gaps.
                return Err(DrillError::Load {
                    tier: other.to_string(),
                    error: format!("{error} (while injecting {})", fault.name()),
                });
            }
            let mut verdicts = Vec::with_capacity(samples.len());
            for request in samples {
                let started = Instant::now();
                let answer = cascade.predict(request).await;
                verdicts.push(check_answer(
                    &answer,
                    &tier.name,
                    fault,
                    started.elapsed(),
                    limit,
                ));
            }
            cells.push(Cell::judge(fault, &verdicts));
        }
        tiers.push(TierRow {
            tier: tier.name.clone(),
            cells,
        });
    }
    let gaps = tiers
        .iter()
        .flat_map(|t| &t.cells)
        .filter(|c| c.status != CellStatus::Pass)
        .count();
    Ok(DrillReport {
        cascade: config.cascade.name.clone(),
        config: config.source.clone(),
        samples: samples_source.to_string(),
        requests: samples.len(),
        budget_ms: config.cascade.budget_ms,
        grace_ms: BUDGET_GRACE.as_millis() as u64,
        removed,
        faults: Fault::ALL
            .iter()
            .map(|f| FaultSpec {
                fault: *f,
                injected_as: match (f, f.chaos_mode()) {
                    (Fault::OversizedOutput, Some(m)) => {
                        format!("chaos mode {m}, bytes = 2 x max_output_bytes")
                    }
                    (_, Some(m)) => format!("chaos mode {m}"),
                    (_, None) => "corrupt plugin (not a component)".into(),
                },
                expect: f.expected().to_vec(),
            })
            .collect(),
        tiers,
        gaps,
    })
}

/// The report as text: the matrix, what each fault recorded, and one line per gap.
pub fn render(report: &DrillReport) -> String {
    let mut out = format!(
        "tierhost drill: cascade \"{}\" ({}), {} request{} from {}\n",
        report.cascade,
        report.config.display(),
        report.requests,
        if report.requests == 1 { "" } else { "s" },
        report.samples
    );
    out.push_str(&format!(
        "each cell: one tier broken on purpose, every request answered within {} ms + {} ms grace, \
         the broken tier's trail entry naming the right reason\n",
        report.budget_ms, report.grace_ms
    ));
    out.push_str(
        "off in the drill (so every request that gets that far calls the broken tier): \
         breakers, hedging, the prediction cache, configured chaos, the audit file",
    );
    if report.removed.is_empty() {
        out.push_str("; none configured\n\n");
    } else {
        out.push_str(&format!("; removed: {}\n\n", report.removed.join(", ")));
    }

    let mut header = vec!["tier".to_string(), "reached".to_string()];
    header.extend(Fault::ALL.iter().map(|f| f.name().to_string()));
    let mut rows = vec![header];
    for row in &report.tiers {
        let mut line = vec![row.tier.clone(), reached(row, report.requests)];
        line.extend(row.cells.iter().map(Cell::mark));
        rows.push(line);
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    for row in &rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }

    out.push_str("\nrecorded by the broken tier (requests that reached it):\n");
    let recorded: Vec<[String; 4]> = Fault::ALL
        .iter()
        .enumerate()
        .map(|(i, fault)| {
            let mut totals: BTreeMap<&str, usize> = BTreeMap::new();
            let mut slowest = 0;
            for cell in report.tiers.iter().filter_map(|row| row.cells.get(i)) {
                for (kind, n) in &cell.seen {
                    if kind != "not-reached" {
                        *totals.entry(kind).or_insert(0) += n;
                    }
                }
                slowest = slowest.max(cell.max_elapsed_us);
            }
            let seen: Vec<String> = totals.iter().map(|(k, n)| format!("{k} x{n}")).collect();
            [
                fault.name().to_string(),
                format!("expect {}", fault.expected().join("|")),
                format!(
                    "seen {}",
                    if seen.is_empty() {
                        "-".to_string()
                    } else {
                        seen.join(", ")
                    }
                ),
                format!("slowest request {:.1} ms", slowest as f64 / 1e3),
            ]
        })
        .collect();
    let widths: Vec<usize> = (0..4)
        .map(|i| {
            recorded
                .iter()
                .map(|r| r[i].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for line in &recorded {
        let cells: Vec<String> = line
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(&format!("  {}\n", cells.join("  ").trim_end()));
    }

    let cells = report.tiers.len() * Fault::ALL.len();
    if report.gaps == 0 {
        out.push_str(&format!("\nall {cells} cells ✓\n"));
        return out;
    }
    out.push_str(&format!("\ngaps: {} of {cells} cells\n", report.gaps));
    for row in &report.tiers {
        let untested: Vec<&Cell> = row
            .cells
            .iter()
            .filter(|c| c.status == CellStatus::Untested)
            .collect();
        if let Some(first) = untested.first() {
            let names: Vec<&str> = untested.iter().map(|c| c.fault.name()).collect();
            out.push_str(&format!(
                "  ✗ {} × {}: untested: no request called the tier ({} served by an earlier \
                 tier, {} turned away by its gates); add samples that fall through to it\n",
                row.tier,
                names.join(", "),
                first.not_reached,
                first.gated
            ));
        }
        for cell in row.cells.iter().filter(|c| c.status == CellStatus::Gap) {
            let mut listed: Vec<String> = cell
                .problems
                .iter()
                .map(|p| format!("{}: {}", p.request_id, p.problem))
                .collect();
            let unlisted = cell.failed.saturating_sub(MAX_LISTED_REQUESTS);
            if unlisted > 0 {
                listed.push(format!("and {unlisted} more failed requests"));
            }
            out.push_str(&format!(
                "  ✗ {} × {}: {} of {} requests failed: {}\n",
                row.tier,
                cell.fault.name(),
                cell.failed,
                cell.requests,
                listed.join("; ")
            ));
        }
    }
    out
}

/// Requests that reached a tier (the same in every cell of its row, since the tiers before
/// it are healthy; shown as a range if timing made them differ).
fn reached(row: &TierRow, requests: usize) -> String {
    let counts: Vec<usize> = row
        .cells
        .iter()
        .map(|c| c.requests - c.not_reached)
        .collect();
    let (lo, hi) = (
        counts.iter().copied().min().unwrap_or(0),
        counts.iter().copied().max().unwrap_or(0),
    );
    if lo == hi {
        format!("{lo}/{requests}")
    } else {
        format!("{lo}-{hi}/{requests}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::answer::{ServedBy, TrailEntry};
    use crate::reason::FallbackReason;

    fn answer(trail: Vec<TrailEntry>, served_by: &str) -> Answer {
        Answer {
            request_id: "r1".into(),
            decision: Decision::Answer {
                label: "allow".into(),
                score: 0.1,
                confidence: 0.9,
                reasons: vec![],
            },
            served_by: ServedBy {
                tier: served_by.into(),
                plugin: None,
                version: None,
                sha256: None,
            },
            degraded: true,
            elapsed_us: 100,
            cache: None,
            trail,
        }
    }

    fn fell(tier: &str, reason: FallbackReason) -> TrailEntry {
        let mut e = TrailEntry::new(tier, None).fell_back(reason);
        e.step = Step::FellThrough;
        e
    }

    fn served(tier: &str) -> TrailEntry {
        let mut e = TrailEntry::new(tier, None);
        e.step = Step::Served;
        e
    }

    const FAST: Duration = Duration::from_millis(1);
    const LIMIT: Duration = Duration::from_millis(150);

    fn trap() -> FallbackReason {
        FallbackReason::Trap {
            message: "unreachable".into(),
        }
    }

    #[test]
    fn the_right_reason_within_budget_passes() {
        let a = answer(vec![fell("primary", trap()), served("rules")], "rules");
        let v = check_answer(&a, "primary", Fault::Trap, FAST, LIMIT);
        assert!(v.problems.is_empty(), "{:?}", v.problems);
        let cell = Cell::judge(Fault::Trap, &[v]);
        assert_eq!(cell.status, CellStatus::Pass);
        assert_eq!(cell.mark(), "✓");
    }

    #[test]
    fn a_trail_with_the_wrong_reason_is_a_gap() {
        let ok = check_answer(
            &answer(vec![fell("primary", trap()), served("rules")], "rules"),
            "primary",
            Fault::Trap,
            FAST,
            LIMIT,
        );
        let wrong = check_answer(
            &answer(
                vec![
                    fell(
                        "primary",
                        FallbackReason::MemoryLimit {
                            requested: 1 << 30,
                            limit: 1 << 24,
                        },
                    ),
                    served("rules"),
                ],
                "rules",
            ),
            "primary",
            Fault::Trap,
            FAST,
            LIMIT,
        );
        assert_eq!(wrong.seen, Seen::Reason("memory-limit"));
        assert_eq!(wrong.problems.len(), 1);
        let cell = Cell::judge(Fault::Trap, &[ok, wrong]);
        assert_eq!(cell.status, CellStatus::Gap);
        assert_eq!(cell.failed, 1);
        assert_eq!(cell.mark(), "✗ memory-limit");
        assert_eq!(cell.seen["trap"], 1);
        assert_eq!(cell.seen["memory-limit"], 1);
    }

    #[test]
    fn slow_served_and_unreached_requests_are_judged() {
        // Right reason but past the budget + grace.
        let slow = check_answer(
            &answer(vec![fell("primary", trap()), served("rules")], "rules"),
            "primary",
            Fault::Trap,
            Duration::from_millis(151),
            LIMIT,
        );
        assert_eq!(slow.problems[0].0, "over-budget");
        // The faulted tier served: the fault was not caught.
        let leaked = check_answer(
            &answer(vec![served("primary")], "primary"),
            "primary",
            Fault::Nan,
            FAST,
            LIMIT,
        );
        assert_eq!(leaked.seen, Seen::Served);
        assert!(!leaked.problems.is_empty());
        // An earlier tier served: fine, but a cell of only those is untested.
        let earlier = check_answer(
            &answer(vec![served("primary")], "primary"),
            "rules",
            Fault::Trap,
            FAST,
            LIMIT,
        );
        assert_eq!(earlier.seen, Seen::NotReached);
        assert!(earlier.problems.is_empty());
        assert_eq!(
            Cell::judge(Fault::Trap, std::slice::from_ref(&earlier)).status,
            CellStatus::Untested
        );
        // Turned away by the OOD guard: not exercised, not a gap.
        let gated = check_answer(
            &answer(
                vec![
                    fell(
                        "primary",
                        FallbackReason::OutOfDistribution { detail: "x".into() },
                    ),
                    served("rules"),
                ],
                "rules",
            ),
            "primary",
            Fault::Hang,
            FAST,
            LIMIT,
        );
        assert!(gated.problems.is_empty());
        let loop_by_deadline = check_answer(
            &answer(
                vec![
                    fell("primary", FallbackReason::Deadline { deadline_us: 20 }),
                    served("rules"),
                ],
                "rules",
            ),
            "primary",
            Fault::Loop,
            FAST,
            LIMIT,
        );
        let cell = Cell::judge(Fault::Loop, &[earlier, gated, loop_by_deadline]);
        assert_eq!(
            (cell.status, cell.exercised, cell.gated, cell.not_reached),
            (CellStatus::Pass, 1, 1, 1)
        );
    }

    #[test]
    fn drill_copies_strip_memory_and_inject_one_fault() {
        let toml = "[cache]\n[[tier]]\nname = \"a\"\nplugin = \"builtin:rules\"\n\
                    [tier.breaker]\n[[tier]]\nname = \"b\"\nplugin = \"builtin:rules\"\n";
        let config = Config::parse(toml, Path::new("t.toml"), Path::new(".")).unwrap();
        let (base, removed) = drill_base(&config);
        assert_eq!(removed, vec!["[cache]", "tier \"a\".breaker"]);
        assert!(base.cache.is_none() && base.tiers[0].breaker.is_none());
        let hang = faulted(&base, 1, Fault::Hang, Path::new("/x"));
        assert_eq!(
            hang.tiers[1].chaos.as_ref().map(|c| c.mode),
            Some(ChaosMode::Sleep)
        );
        assert!(hang.tiers[0].chaos.is_none());
        let broken = faulted(&base, 0, Fault::LoadFailure, Path::new("/x/corrupt.wasm"));
        assert_eq!(
            broken.tiers[0].plugin,
            PluginSource::File("/x/corrupt.wasm".into())
        );
        assert!(broken.tiers[0].chaos.is_none());
        let big = faulted(&base, 0, Fault::OversizedOutput, Path::new("/x"));
        let chaos = big.tiers[0]
            .chaos
            .as_ref()
            .map(|c| (c.mode, c.params["bytes"].as_integer()));
        assert_eq!(chaos, Some((ChaosMode::HugeReason, Some(2 * 16_384))));
    }
}
