//! One tier's turn: admit (gates), call (possibly substituted or delayed), conclude
//! (verdicts and bookkeeping), and the hedged turn that races a slow tier against the rest
//! of the walk.

use super::*;

impl Cascade {
    /// Tier `i`'s turn with hedging: wait up to `after` for it; if it is still running (and
    /// the hedge budget allows), race it against the walk of the following tiers and serve the
    /// first acceptable answer. Both attempts are in the trail; a call that loses the race is
    /// cancelled and its policies observe it as `hedged` (a breaker may count it).
    pub(super) async fn hedged_turn(&self, i: usize, after: Duration, walk: &Walk<'_>) -> Walked {
        let tier = &self.tiers[i];
        let sequential = |entry: TrailEntry, answer: Option<Prediction>| async move {
            match answer {
                Some(p) => (vec![entry], Some((i, p))),
                None => {
                    let (rest, served) = self.walk_from(i + 1, walk).await;
                    (std::iter::once(entry).chain(rest).collect(), served)
                }
            }
        };
        let admitted = match self.admit(tier, walk) {
            Ok(admitted) => admitted,
            Err(skipped) => return sequential(*skipped, None).await,
        };
        let mut own = None;
        let seen = tier.view(walk.request, walk.lowered, &mut own);
        let started = Instant::now();
        let mut primary = Box::pin(call(&admitted, seen));
        // tokio's timers round up to the next millisecond (a 0.5 ms hedge would start after
        // ~2 ms); async-io's timer thread wakes with sub-millisecond precision.
        let finished_first = tokio::select! {
            report = &mut primary => Some(report),
            _ = async_io::Timer::after(after) => None,
        };
        if let Some(report) = finished_first {
            drop(primary);
            shadow(tier, walk, seen, &report);
            let (entry, answer) = conclude(tier, admitted, report);
            return sequential(entry, answer).await;
        }
        if !tier.policies.hedge.as_ref().is_some_and(|h| h.try_start()) {
            let report = primary.await;
            shadow(tier, walk, seen, &report);
            let (entry, answer) = conclude(tier, admitted, report);
            return sequential(entry, answer).await;
        }
        let mark = |mut rest: Vec<TrailEntry>| {
            if let Some(first) = rest.first_mut() {
                first.hedged = true;
            }
            rest
        };
        let mut hedged = self.walk_from(i + 1, walk);
        tokio::select! {
            report = &mut primary => {
                drop(primary);
                shadow(tier, walk, seen, &report);
                match conclude(tier, admitted, report) {
                    (entry, Some(p)) => {
                        // The tier answered first: the hedge is cancelled.
                        drop(hedged);
                        let next = &self.tiers[i + 1];
                        let mut cancelled = TrailEntry::new(&next.config.name, next.version());
                        cancelled.step = Step::Cancelled;
                        cancelled.hedged = true;
                        cancelled.message = Some(format!(
                            "hedge cancelled: \"{}\" answered first",
                            tier.config.name
                        ));
                        (vec![entry, cancelled], Some((i, p)))
                    }
                    (entry, None) => {
                        let (rest, served) = hedged.await;
                        (std::iter::once(entry).chain(mark(rest)).collect(), served)
                    }
                }
            },
            (rest, served) = &mut hedged => match served {
                Some(served) => {
                    drop(primary);
                    let winner = &self.tiers[served.0].config.name;
                    let reason = FallbackReason::Hedged {
                        detail: format!(
                            "ran {} us; hedged after {} us, \"{winner}\" answered first",
                            started.elapsed().as_micros(),
                            after.as_micros()
                        ),
                    };
                    let cancelled = cancel(tier, admitted, started.elapsed(), reason);
                    (std::iter::once(cancelled).chain(mark(rest)).collect(), Some(served))
                }
                None => {
                    // Nothing below answered: the slow tier is the last hope.
                    let report = primary.await;
                    shadow(tier, walk, seen, &report);
                    let (entry, answer) = conclude(tier, admitted, report);
                    (std::iter::once(entry).chain(mark(rest)).collect(), answer.map(|p| (i, p)))
                }
            },
        }
    }

    /// One tier's turn: gates, the call, verdicts, bookkeeping.
    pub(super) async fn try_tier(
        &self,
        tier: &CascadeTier,
        walk: &Walk<'_>,
    ) -> (TrailEntry, Option<Prediction>) {
        match self.admit(tier, walk) {
            Ok(admitted) => {
                let mut own = None;
                let seen = tier.view(walk.request, walk.lowered, &mut own);
                let report = call(&admitted, seen).await;
                shadow(tier, walk, seen, &report);
                conclude(tier, admitted, report)
            }
            Err(skipped) => (*skipped, None),
        }
    }

    /// Runs the tier's gates: an admitted call (with the sandbox to run, its deadline and the
    /// gates' tickets), or the trail entry of a skipped tier.
    fn admit<'t>(
        &self,
        tier: &'t CascadeTier,
        walk: &Walk<'_>,
    ) -> Result<Admitted<'t>, Box<TrailEntry>> {
        let entry = TrailEntry::new(&tier.config.name, tier.version());
        let sandbox = match &tier.sandbox {
            Ok(s) => s,
            Err(e) => {
                return Err(Box::new(entry.fell_back(FallbackReason::LoadFailed {
                    detail: e.to_string(),
                })));
            }
        };
        let remaining = self.budget.saturating_sub(walk.started.elapsed());
        let ctx = CallContext {
            request: walk.request,
            remaining,
            now: self.clock.now(),
        };
        let policies = &tier.policies;
        match policies.admit(&ctx) {
            Ok(tickets) => Ok(Admitted {
                entry,
                sandbox: policies.sandbox(&ctx, sandbox),
                deadline: Duration::from_millis(tier.config.limits.deadline_ms).min(remaining),
                delay: policies.delay(&ctx),
                tickets,
            }),
            Err(reason) => Err(Box::new(entry.fell_back(reason))),
        }
    }
}

/// A call its gates let through.
struct Admitted<'t> {
    entry: TrailEntry,
    sandbox: &'t Sandbox,
    deadline: Duration,
    delay: Duration,
    tickets: Vec<crate::policy::Ticket>,
}

/// Makes the call (after any injected delay, which counts against the deadline).
async fn call(admitted: &Admitted<'_>, request: &TierRequest) -> crate::sandbox::CallReport {
    let (sandbox, deadline, delay) = (admitted.sandbox, admitted.deadline, admitted.delay);
    if delay.is_zero() {
        return sandbox.predict(request, deadline).await;
    }
    let started = Instant::now();
    tokio::time::sleep(delay.min(deadline)).await;
    let mut report = match deadline.checked_sub(started.elapsed()) {
        Some(left) if !left.is_zero() => sandbox.predict(request, left).await,
        _ => crate::sandbox::CallReport {
            result: Err(FallbackReason::Deadline {
                deadline_us: deadline.as_micros() as u64,
            }),
            elapsed: Duration::ZERO,
            fuel_used: 0,
            logs_dropped: 0,
        },
    };
    report.elapsed = started.elapsed();
    report
}

/// Hands a finished call's outcome to the tier's shadow, if it has one (never waits). The
/// candidate gets the request as the live tier `seen` it (its `features` allowlist applies).
fn shadow(
    tier: &CascadeTier,
    walk: &Walk<'_>,
    seen: &TierRequest,
    report: &crate::sandbox::CallReport,
) {
    if let Some(shadow) = &tier.shadow {
        shadow.offer(&walk.request.id, seen, &report.result, report.elapsed);
    }
}

/// Judges a finished call, hands the outcome to the tier's policies, and writes its entry.
fn conclude(
    tier: &CascadeTier,
    admitted: Admitted<'_>,
    report: crate::sandbox::CallReport,
) -> (TrailEntry, Option<Prediction>) {
    let policies = &tier.policies;
    let verdict = match report.result {
        Ok(TierOutcome::Answer(p)) => policies.judge(&p).map(|()| p),
        Ok(TierOutcome::Abstain(reason)) => Err(FallbackReason::Abstained { reason }),
        Err(reason) => Err(reason),
    };
    policies.observe(
        admitted.tickets,
        &CallRecord {
            called: true,
            elapsed: report.elapsed,
            verdict: verdict.as_ref().map(|_| ()),
        },
    );
    let entry = TrailEntry {
        step: Step::FellThrough,
        elapsed_us: report.elapsed.as_micros() as u64,
        fuel_used: report.fuel_used,
        logs_dropped: report.logs_dropped,
        ..admitted.entry
    };
    match verdict {
        Ok(p) => (
            TrailEntry {
                step: Step::Served,
                ..entry
            },
            Some(p),
        ),
        Err(reason) => (entry.fell_back(reason), None),
    }
}

/// Records a call cancelled because a hedge answered first.
fn cancel(
    tier: &CascadeTier,
    admitted: Admitted<'_>,
    elapsed: Duration,
    reason: FallbackReason,
) -> TrailEntry {
    tier.policies.observe(
        admitted.tickets,
        &CallRecord {
            called: true,
            elapsed,
            verdict: Err(&reason),
        },
    );
    let mut entry = admitted.entry.fell_back(reason);
    entry.step = Step::Cancelled;
    entry.elapsed_us = elapsed.as_micros() as u64;
    entry
}
