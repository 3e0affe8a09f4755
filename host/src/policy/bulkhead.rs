//! The per-tier bulkhead (`max_concurrent`): calls of a tier in flight at once. Past it the
//! tier is skipped with `shed` instead of queueing, so a tier stuck in slow calls cannot hold
//! every instance slot or make requests wait.
use std::sync::Arc;

use tokio::sync::Semaphore;

use super::{CallContext, Ticket, TierPolicy};
use crate::reason::FallbackReason;

/// One permit per call in flight.
#[derive(Debug)]
pub struct Bulkhead {
    slots: Arc<Semaphore>,
    max: usize,
}

impl Bulkhead {
    /// A bulkhead of `max` concurrent calls.
    pub fn new(max: usize) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(max)),
            max,
        }
    }

    /// Calls in flight right now.
    pub fn in_flight(&self) -> usize {
        self.max - self.slots.available_permits()
    }
}

impl TierPolicy for Bulkhead {
    fn name(&self) -> &'static str {
        "bulkhead"
    }

    fn admit(&self, _ctx: &CallContext<'_>) -> Result<Ticket, FallbackReason> {
        match self.slots.clone().try_acquire_owned() {
            Ok(permit) => Ok(Ticket::holding(permit)),
            Err(_) => Err(FallbackReason::Shed {
                detail: format!("tier has {} calls in flight (max_concurrent)", self.max),
            }),
        }
    }
}
