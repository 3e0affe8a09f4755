//! Policies: every reason to skip a tier, stop a call or refuse an answer, one module each,
//! all with the same shape ([`TierPolicy`]):
//!
//! - a **gate** before the call ([`TierPolicy::admit`]): go (holding a [`Ticket`] for the
//!   length of the call) or skip the tier with a [`FallbackReason`] — [`budget`],
//!   [`breaker`], [`ood`], [`bulkhead`];
//! - a **wrapper** around the call ([`TierPolicy::substitute`], [`TierPolicy::delay`]): run
//!   another sandbox in the tier's place, or wait first — [`chaos`]; hedging ([`hedge`]) races the next tiers against a slow call and
//!   the prediction cache ([`cache`]) sits in front of the whole cascade;
//! - a **verdict** after the call ([`TierPolicy::judge`]): accept the answer or fall through —
//!   [`acceptance`], [`confidence`];
//! - bookkeeping of the outcome ([`TierPolicy::observe`]) — [`breaker`], [`hedge`].
//!
//! [`TierPolicies`] holds one tier's policies in the order they run; the cascade walk is a
//! short loop over it. Adding a trigger means adding a module here and its config section.
//!
//! State that outlives a request (breaker windows, hedging latency) lives in [`memory`], keyed
//! by the tier's name and plugin digest, so it survives the hot swap of another tier and
//! resets when this tier's plugin changes. Time comes from an injected [`clock::Clock`], so
//! tests and `tierhost eval` drive it deterministically.
use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

use crate::guest::Prediction;
use crate::reason::FallbackReason;
use crate::request::Request;
use crate::sandbox::Sandbox;

pub mod acceptance;
pub mod breaker;
pub mod budget;
pub mod bulkhead;
pub mod cache;
pub mod chaos;
pub mod clock;
pub mod confidence;
pub mod hedge;
pub mod memory;
pub mod ood;

/// What a policy sees of one tier call.
pub struct CallContext<'a> {
    /// The request.
    pub request: &'a Request,
    /// What is left of the request budget.
    pub remaining: Duration,
    /// The cascade's clock (see [`clock`]).
    pub now: Duration,
}

/// How an admitted turn ended, as the policies that admitted it see it.
pub struct CallRecord<'a> {
    /// Whether the tier was called (false when a later gate skipped it).
    pub called: bool,
    /// Wall time of the call (zero when not called).
    pub elapsed: Duration,
    /// `Ok` when the answer was served, else why the tier fell through or was skipped.
    pub verdict: Result<(), &'a FallbackReason>,
}

/// Whatever a gate holds while the call runs (a bulkhead permit, a breaker probe slot). It is
/// dropped when the turn ends, whether or not the call happened, so a slot is never leaked.
#[derive(Default)]
pub struct Ticket(Option<Box<dyn Any + Send + Sync>>);

impl std::fmt::Debug for Ticket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Ticket(..)"
        } else {
            "Ticket(none)"
        })
    }
}

impl Ticket {
    /// A ticket holding nothing.
    pub fn none() -> Self {
        Self(None)
    }

    /// A ticket holding `value` until the turn ends.
    pub fn holding<T: Any + Send + Sync>(value: T) -> Self {
        Self(Some(Box::new(value)))
    }

    /// The value a policy put in its own ticket.
    pub fn take<T: Any>(self) -> Option<T> {
        self.0?.downcast::<T>().ok().map(|b| *b)
    }
}

/// One trigger of the cascade. Every method has a do-nothing default: a gate implements
/// `admit`, a verdict `judge`, a wrapper `substitute`, bookkeeping `observe`.
pub trait TierPolicy: Send + Sync {
    /// Name shown in logs (`breaker`, `ood`, ...).
    fn name(&self) -> &'static str;

    /// Before the call: go with a ticket, or skip the tier with a reason.
    fn admit(&self, _ctx: &CallContext<'_>) -> Result<Ticket, FallbackReason> {
        Ok(Ticket::none())
    }

    /// Around the call: a sandbox to run instead of the tier's own.
    fn substitute(&self, _ctx: &CallContext<'_>) -> Option<&Sandbox> {
        None
    }

    /// Around the call: time to wait before calling (injected latency). The wait counts
    /// against the call's deadline.
    fn delay(&self, _ctx: &CallContext<'_>) -> Duration {
        Duration::ZERO
    }

    /// After the call: whether the tier's answer may be served.
    fn judge(&self, _prediction: &Prediction) -> Result<(), FallbackReason> {
        Ok(())
    }

    /// After the turn: the outcome of a turn this policy admitted, with its ticket back.
    fn observe(&self, _ticket: Ticket, _record: &CallRecord<'_>) {}
}

/// One tier's policies, in the order they run, plus typed handles to the ones the cascade and
/// the server talk to directly.
pub struct TierPolicies {
    list: Vec<Arc<dyn TierPolicy>>,
    /// The bulkhead (always present).
    pub bulkhead: Arc<bulkhead::Bulkhead>,
    /// The circuit breaker, when `[tier.breaker]` is set.
    pub breaker: Option<Arc<breaker::Breaker>>,
    /// Hedging, when `[tier.hedge]` is set.
    pub hedge: Option<Arc<hedge::Hedge>>,
    /// The chaos wrapper, when `[tier.chaos]` is set.
    chaos: Option<Arc<chaos::Chaos>>,
}

impl TierPolicies {
    /// Builds the list: gates (budget, breaker, OOD, bulkhead), the chaos wrapper, verdicts
    /// (acceptance, confidence), then hedging's bookkeeping.
    pub fn new(
        bulkhead: Arc<bulkhead::Bulkhead>,
        breaker: Option<Arc<breaker::Breaker>>,
        ood: Option<Arc<ood::OodGuard>>,
        chaos: Option<Arc<chaos::Chaos>>,
        acceptance: Arc<acceptance::Acceptance>,
        confidence: Arc<confidence::MinConfidence>,
        hedge: Option<Arc<hedge::Hedge>>,
    ) -> Self {
        let mut list: Vec<Arc<dyn TierPolicy>> = vec![Arc::new(budget::Budget)];
        if let Some(b) = &breaker {
            list.push(b.clone());
        }
        if let Some(o) = ood {
            list.push(o);
        }
        list.push(bulkhead.clone());
        if let Some(c) = &chaos {
            list.push(c.clone());
        }
        list.push(acceptance);
        list.push(confidence);
        if let Some(h) = &hedge {
            list.push(h.clone());
        }
        Self {
            list,
            bulkhead,
            breaker,
            hedge,
            chaos,
        }
    }

    /// Runs every gate in order. When one skips the tier, the gates that had already admitted
    /// it observe the skip (a breaker may count it) and give their tickets back.
    pub fn admit(&self, ctx: &CallContext<'_>) -> Result<Vec<Ticket>, FallbackReason> {
        let mut tickets = Vec::with_capacity(self.list.len());
        for policy in &self.list {
            match policy.admit(ctx) {
                Ok(ticket) => tickets.push(ticket),
                Err(reason) => {
                    let record = CallRecord {
                        called: false,
                        elapsed: Duration::ZERO,
                        verdict: Err(&reason),
                    };
                    for (policy, ticket) in self.list.iter().zip(tickets) {
                        policy.observe(ticket, &record);
                    }
                    return Err(reason);
                }
            }
        }
        Ok(tickets)
    }

    /// The sandbox to call: the tier's own unless a wrapper substitutes one.
    pub fn sandbox<'a>(&'a self, ctx: &CallContext<'_>, own: &'a Sandbox) -> &'a Sandbox {
        self.list
            .iter()
            .find_map(|p| p.substitute(ctx))
            .unwrap_or(own)
    }

    /// Injected latency before the call (the sum over wrappers).
    pub fn delay(&self, ctx: &CallContext<'_>) -> Duration {
        self.list.iter().map(|p| p.delay(ctx)).sum()
    }

    /// Runs every verdict in order; the first refusal wins.
    pub fn judge(&self, prediction: &Prediction) -> Result<(), FallbackReason> {
        self.list.iter().try_for_each(|p| p.judge(prediction))
    }

    /// Hands the outcome of a call to every policy, with the tickets from [`Self::admit`].
    pub fn observe(&self, tickets: Vec<Ticket>, record: &CallRecord<'_>) {
        for (policy, ticket) in self.list.iter().zip(tickets) {
            policy.observe(ticket, record);
        }
    }

    /// The sandbox chaos injection substitutes, if any.
    pub fn chaos_sandbox(&self) -> Option<&Sandbox> {
        self.chaos.as_ref()?.sandbox.as_ref()
    }

    /// Names of the policies, in order (shown by `tierhost check`).
    pub fn names(&self) -> Vec<&'static str> {
        self.list.iter().map(|p| p.name()).collect()
    }
}
