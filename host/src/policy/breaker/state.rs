//! What a breaker is in (closed, open, half-open, forced), what it shows, and the shared core
//! that survives reloads.
use super::*;

/// A breaker's state, as shown in `/v1/tiers`, logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BreakerState {
    /// Calls go through.
    Closed,
    /// Probe calls go through.
    HalfOpen,
    /// The tier is skipped.
    Open,
    /// Held open by an operator.
    ForcedOpen,
    /// Held closed by an operator (calls go through, nothing is counted).
    ForcedClosed,
}

impl BreakerState {
    /// Kebab-case name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::HalfOpen => "half-open",
            Self::Open => "open",
            Self::ForcedOpen => "forced-open",
            Self::ForcedClosed => "forced-closed",
        }
    }

    /// Value of `tierhost_breaker_state`: 0 closed, 1 half-open, 2 open (forced states count
    /// as what they hold).
    pub fn gauge(self) -> i64 {
        match self {
            Self::Closed | Self::ForcedClosed => 0,
            Self::HalfOpen => 1,
            Self::Open | Self::ForcedOpen => 2,
        }
    }
}

/// What an operator asks of a breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BreakerMode {
    /// Hold it open (drills, a known-bad tier).
    Open,
    /// Hold it closed (override a breaker that trips wrongly).
    Closed,
    /// Back to automatic, starting closed with an empty window.
    Automatic,
}

/// One state change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Transition {
    /// State before.
    pub from: BreakerState,
    /// State after.
    pub to: BreakerState,
}

/// A breaker's state and counts, for `/v1/tiers`.
#[derive(Debug, Clone, Serialize)]
pub struct BreakerView {
    /// Current state.
    pub state: BreakerState,
    /// Calls in the window.
    pub window_calls: usize,
    /// Failures in the window.
    pub window_failures: usize,
    /// Failures / calls in the window.
    pub failure_rate: f64,
    /// Time until an open breaker lets probes through, in ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub open_remaining_ms: Option<u64>,
    /// Opens since the last close.
    pub opens_in_a_row: u32,
    /// Transitions since this tier version loaded.
    pub transitions: u64,
}

/// The state that outlives a request (kept in [`super::memory::PolicyMemory`]).
pub struct BreakerCore {
    pub(super) inner: Mutex<Inner>,
}

impl BreakerCore {
    /// A closed breaker.
    pub fn new(config: &BreakerConfig) -> Self {
        Self {
            inner: Mutex::new(Inner {
                phase: Phase::Closed,
                forced: None,
                window: Window::new(config),
                opens_in_a_row: 0,
                epoch: 0,
                transitions: 0,
            }),
        }
    }
}

/// Where transitions are reported.
pub struct BreakerEvents {
    /// Cascade name.
    pub cascade: Arc<str>,
    /// Tier name.
    pub tier: Arc<str>,
    /// The audit file, when configured.
    pub audit: Option<Arc<AuditLog>>,
    /// Metrics.
    pub observer: Option<Arc<dyn PolicyObserver>>,
}
