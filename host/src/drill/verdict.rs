//! The verdict on one answer of a drill ([`check_answer`]); the tests also judge the cells
//! those verdicts make up ([`Cell::judge`](crate::drill::Cell::judge)).
use std::time::Duration;

use serde::Serialize;

use crate::answer::{Answer, Decision, Step};
use crate::cascade::SAFE_DEFAULT;
use crate::drill::{Fault, GATE_KINDS};

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
    /// The key of this outcome in a cell's `seen` counts.
    pub fn label(self) -> &'static str {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::answer::{ServedBy, TrailEntry};
    use crate::drill::{Cell, CellStatus};
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
                config_digest: String::new(),
            },
            degraded: true,
            elapsed_us: 100,
            cache: None,
            escalation: None,
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

    /// The verdict on a request the primary fell through with `reason` and the rules served,
    /// answered after `elapsed`, in a drill that gave the primary `fault`.
    fn primary_fell(reason: FallbackReason, fault: Fault, elapsed: Duration) -> RequestVerdict {
        let a = answer(vec![fell("primary", reason), served("rules")], "rules");
        check_answer(&a, "primary", fault, elapsed, LIMIT)
    }

    /// The verdict on a request the primary served, in a drill that gave `tier` `fault`.
    fn primary_served(tier: &str, fault: Fault) -> RequestVerdict {
        let a = answer(vec![served("primary")], "primary");
        check_answer(&a, tier, fault, FAST, LIMIT)
    }

    fn trap() -> FallbackReason {
        FallbackReason::Trap {
            message: "unreachable".into(),
        }
    }

    #[test]
    fn the_right_reason_within_budget_passes() {
        let v = primary_fell(trap(), Fault::Trap, FAST);
        assert!(v.problems.is_empty(), "{:?}", v.problems);
        let cell = Cell::judge(Fault::Trap, &[v]);
        assert_eq!(cell.status, CellStatus::Pass);
        assert_eq!(cell.mark(), "✓");
    }

    #[test]
    fn a_trail_with_the_wrong_reason_is_a_gap() {
        let ok = primary_fell(trap(), Fault::Trap, FAST);
        let memory = FallbackReason::MemoryLimit {
            requested: 1 << 30,
            limit: 1 << 24,
        };
        let wrong = primary_fell(memory, Fault::Trap, FAST);
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
        let slow = primary_fell(trap(), Fault::Trap, Duration::from_millis(151));
        assert_eq!(slow.problems[0].0, "over-budget");
        // The faulted tier served: the fault was not caught.
        let leaked = primary_served("primary", Fault::Nan);
        assert_eq!(leaked.seen, Seen::Served);
        assert!(!leaked.problems.is_empty());
        // An earlier tier served: fine, but a cell of only those is untested.
        let earlier = primary_served("rules", Fault::Trap);
        assert_eq!(earlier.seen, Seen::NotReached);
        assert!(earlier.problems.is_empty());
        assert_eq!(
            Cell::judge(Fault::Trap, std::slice::from_ref(&earlier)).status,
            CellStatus::Untested
        );
        // Turned away by the OOD guard: not exercised, not a gap.
        let ood = FallbackReason::OutOfDistribution { detail: "x".into() };
        let gated = primary_fell(ood, Fault::Hang, FAST);
        assert!(gated.problems.is_empty());
        let deadline = FallbackReason::Deadline { deadline_us: 20 };
        let loop_by_deadline = primary_fell(deadline, Fault::Loop, FAST);
        let cell = Cell::judge(Fault::Loop, &[earlier, gated, loop_by_deadline]);
        assert_eq!(
            (cell.status, cell.exercised, cell.gated, cell.not_reached),
            (CellStatus::Pass, 1, 1, 1)
        );
    }
}
