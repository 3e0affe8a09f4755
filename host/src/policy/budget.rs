//! The request budget gate: a tier is skipped with `budget-exhausted` when nothing is left of
//! the request's `[cascade] budget_ms`. The call itself gets `min(its deadline, what is left)`,
//! set by the cascade walk.
use super::{CallContext, Ticket, TierPolicy};
use crate::reason::FallbackReason;

/// Skips a tier once the request budget is spent.
#[derive(Debug, Clone, Copy)]
pub struct Budget;

impl TierPolicy for Budget {
    fn name(&self) -> &'static str {
        "budget"
    }

    fn admit(&self, ctx: &CallContext<'_>) -> Result<Ticket, FallbackReason> {
        if ctx.remaining.is_zero() {
            Err(FallbackReason::BudgetExhausted)
        } else {
            Ok(Ticket::none())
        }
    }
}
