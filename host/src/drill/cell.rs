//! The verdict on one (tier, fault) cell of the matrix, from the verdicts on its requests
//! ([`Cell::judge`]).
use std::collections::BTreeMap;

use serde::Serialize;

use crate::drill::{Fault, GATE_KINDS, RequestVerdict, Seen};

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
