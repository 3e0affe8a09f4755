//! `tierhost drill`: fire drills for a cascade's fallbacks. For every tier and every fault
//! kind, a copy of the cascade is loaded with that one tier broken on purpose, the sample
//! requests are replayed, and each answer is checked: answered (or explicitly abstained),
//! within the request budget plus the service's grace, and with the faulted tier's trail entry
//! naming the right reason. The result is a tier × fault matrix.
//!
//! - `faults`: the fault catalogue ([`Fault`]) and the drill's config copies ([`drill_base`],
//!   [`faulted`]). Faults are injected with the tier's own `[tier.chaos]` (so they happen for
//!   real inside the tier's sandbox and limits), except the load failure, which points the
//!   tier at a file that is not a component;
//! - `verdict`: the verdict on one answer ([`check_answer`]);
//! - `cell`: the verdict on one (tier, fault) cell ([`Cell::judge`]);
//! - `render`: the report as text ([`render`]; the JSON is the serialized [`DrillReport`]);
//! - `demo`: `tierhost demo`, the smallest drill: the embedded fraud cascade, healthy and with
//!   its primary stuck in a loop ([`demo`]);
//! - `samples`: the sample requests ([`Samples`]);
//! - this module: the run ([`run`]) and its report ([`DrillReport`]).
//!
//! Why: an untested fallback that activates under pressure is worse than no fallback
//! (reference article 000). A drill proves each step down works before production needs it.
mod cell;
mod demo;
mod faults;
mod render;
mod samples;
mod verdict;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::Serialize;

pub use cell::{Cell, CellStatus, MAX_LISTED_REQUESTS, RequestProblem};
pub use demo::{Demo, DemoRun, demo};
pub use faults::{Fault, GATE_KINDS, drill_base, faulted};
pub use render::render;
pub use samples::{SampleSource, Samples, default_samples, parse_requests, read_requests};
pub use verdict::{RequestVerdict, Seen, check_answer};

use crate::cascade::Cascade;
use crate::config::Config;
use crate::engine::TierEngine;
use crate::error::{ConfigError, RequestError};
use crate::eval::EvalError;
use crate::service::BUDGET_GRACE;

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
    /// The labeled CSV of the sample requests cannot be read.
    #[error(transparent)]
    Data(#[from] EvalError),
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
/// on `engine` (components compile once and are reused from its cache), replaying the sample
/// requests one at a time.
pub async fn run(
    engine: &TierEngine,
    config: &Config,
    samples: &Samples,
) -> Result<DrillReport, DrillError> {
    let Samples {
        source: samples_source,
        requests: samples,
    } = samples;
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
        samples: samples_source.clone(),
        requests: samples.len(),
        budget_ms: config.cascade.budget_ms,
        grace_ms: BUDGET_GRACE.as_millis() as u64,
        removed,
        faults: Fault::ALL
            .iter()
            .map(|f| FaultSpec {
                fault: *f,
                injected_as: f.injected_as(),
                expect: f.expected().to_vec(),
            })
            .collect(),
        tiers,
        gaps,
    })
}
