//! The breaker's state machine, driven by a manual clock.
use super::*;
use crate::policy::clock::ManualClock;
use crate::request::Request;
use std::sync::Mutex as StdMutex;

#[derive(Default)]
struct Recorder(StdMutex<Vec<(BreakerState, BreakerState)>>);
impl PolicyObserver for Recorder {
    fn breaker_transition(&self, _tier: &str, from: BreakerState, to: BreakerState) {
        self.0.lock().unwrap().push((from, to));
    }
}

fn breaker(config: BreakerConfig) -> (Breaker, Arc<ManualClock>, Arc<Recorder>) {
    let clock = Arc::new(ManualClock::new());
    let recorder = Arc::new(Recorder::default());
    let core = Arc::new(BreakerCore::new(&config));
    let b = Breaker::new(
        config,
        core,
        clock.clone(),
        BreakerEvents {
            cascade: Arc::from("c"),
            tier: Arc::from("t"),
            audit: None,
            observer: Some(recorder.clone()),
        },
    );
    (b, clock, recorder)
}

fn config() -> BreakerConfig {
    BreakerConfig {
        window_calls: 10,
        minimum_calls: 4,
        failure_rate: 0.5,
        open_ms: 1_000,
        open_backoff: 2.0,
        open_max_ms: Some(3_000),
        half_open_calls: 2,
        ..BreakerConfig::default()
    }
}

/// Admits one call at the clock's time and records `reason` (None: served).
fn call(b: &Breaker, clock: &ManualClock, reason: Option<FallbackReason>) -> Result<(), String> {
    let request = Request::new("r", vec![]);
    let ctx = CallContext {
        request: &request,
        remaining: Duration::from_millis(100),
        now: clock.now(),
    };
    let ticket = b.admit(&ctx).map_err(|r| r.kind().to_string())?;
    let record = CallRecord {
        called: true,
        elapsed: Duration::from_micros(10),
        verdict: match &reason {
            Some(r) => Err(r),
            None => Ok(()),
        },
    };
    b.observe(ticket, &record);
    Ok(())
}

fn trap() -> Option<FallbackReason> {
    Some(FallbackReason::Trap {
        message: "x".into(),
    })
}

#[test]
fn every_transition_trips_deterministically() {
    let (b, clock, rec) = breaker(config());
    // Closed: 3 failures are below minimum_calls; the 4th call (a success) makes 3/4.
    for _ in 0..3 {
        call(&b, &clock, trap()).unwrap();
    }
    assert_eq!(b.state(), BreakerState::Closed);
    call(&b, &clock, None).unwrap();
    // closed -> open
    assert_eq!(b.state(), BreakerState::Open);
    assert_eq!(call(&b, &clock, None), Err("breaker-open".into()));
    clock.advance(Duration::from_millis(999));
    assert_eq!(call(&b, &clock, None), Err("breaker-open".into()));
    // open -> half-open after open_ms; a failed probe round reopens (half-open -> open).
    clock.advance(Duration::from_millis(1));
    call(&b, &clock, trap()).unwrap();
    assert_eq!(b.state(), BreakerState::HalfOpen);
    call(&b, &clock, None).unwrap();
    assert_eq!(b.state(), BreakerState::Open, "1 of 2 probes failed = 50%");
    // Backoff: the second open lasts 2 s.
    clock.advance(Duration::from_millis(1_999));
    assert_eq!(call(&b, &clock, None), Err("breaker-open".into()));
    clock.advance(Duration::from_millis(1));
    call(&b, &clock, None).unwrap();
    assert_eq!(b.state(), BreakerState::HalfOpen);
    call(&b, &clock, None).unwrap();
    // half-open -> closed
    assert_eq!(b.state(), BreakerState::Closed);
    use BreakerState::*;
    assert_eq!(
        *rec.0.lock().unwrap(),
        vec![
            (Closed, Open),
            (Open, HalfOpen),
            (HalfOpen, Open),
            (Open, HalfOpen),
            (HalfOpen, Closed)
        ]
    );
}

#[test]
fn half_open_admits_only_its_probes_and_gives_back_unused_slots() {
    let (b, clock, _) = breaker(BreakerConfig {
        minimum_calls: 1,
        ..config()
    });
    call(&b, &clock, trap()).unwrap();
    assert_eq!(b.state(), BreakerState::Open);
    clock.advance(Duration::from_millis(1_000));
    let request = Request::new("r", vec![]);
    let ctx = CallContext {
        request: &request,
        remaining: Duration::from_millis(100),
        now: clock.now(),
    };
    let first = b.admit(&ctx).unwrap();
    let second = b.admit(&ctx).unwrap();
    assert_eq!(b.admit(&ctx).unwrap_err().kind(), "breaker-open");
    // A probe skipped by a later gate (not counted) frees its slot.
    drop(second);
    let third = b.admit(&ctx).unwrap();
    drop((first, third));
    assert_eq!(b.state(), BreakerState::HalfOpen);
}

#[test]
fn counts_only_the_configured_kinds_and_slow_calls() {
    let (b, clock, _) = breaker(config());
    let low = || {
        Some(FallbackReason::LowConfidence {
            confidence: 0.1,
            min_confidence: 0.5,
        })
    };
    for _ in 0..10 {
        call(&b, &clock, low()).unwrap();
    }
    assert_eq!(
        b.state(),
        BreakerState::Closed,
        "low confidence is not a fault by default"
    );
    let (b, clock, _) = breaker(BreakerConfig {
        failure_on: vec!["low-confidence".into()],
        ..config()
    });
    for _ in 0..4 {
        call(&b, &clock, low()).unwrap();
    }
    assert_eq!(b.state(), BreakerState::Open, "outcome-aware");
    let (b, clock, _) = breaker(BreakerConfig {
        slow_call_ms: Some(1),
        ..config()
    });
    let request = Request::new("r", vec![]);
    for _ in 0..4 {
        let ctx = CallContext {
            request: &request,
            remaining: Duration::from_millis(100),
            now: clock.now(),
        };
        let ticket = b.admit(&ctx).unwrap();
        b.observe(
            ticket,
            &CallRecord {
                called: true,
                elapsed: Duration::from_millis(5),
                verdict: Ok(()),
            },
        );
    }
    assert_eq!(
        b.state(),
        BreakerState::Open,
        "slow answers count as failures"
    );
}

#[test]
fn results_from_an_older_state_are_not_counted() {
    let (b, clock, _) = breaker(BreakerConfig {
        minimum_calls: 1,
        half_open_calls: 1,
        ..config()
    });
    let request = Request::new("r", vec![]);
    let ctx = CallContext {
        request: &request,
        remaining: Duration::from_millis(100),
        now: clock.now(),
    };
    let slow = b.admit(&ctx).unwrap();
    call(&b, &clock, trap()).unwrap();
    assert_eq!(b.state(), BreakerState::Open);
    // The call admitted while closed answers after the breaker opened: ignored.
    b.observe(
        slow,
        &CallRecord {
            called: true,
            elapsed: Duration::ZERO,
            verdict: Ok(()),
        },
    );
    assert_eq!(b.state(), BreakerState::Open);
}

#[test]
fn time_window_forgets_old_calls() {
    let (b, clock, _) = breaker(BreakerConfig {
        window: WindowKind::Time,
        window_s: 10,
        ..config()
    });
    for _ in 0..3 {
        call(&b, &clock, trap()).unwrap();
    }
    clock.advance(Duration::from_secs(10));
    call(&b, &clock, trap()).unwrap();
    assert_eq!(
        b.state(),
        BreakerState::Closed,
        "the first 3 fell out of the window"
    );
    for _ in 0..3 {
        call(&b, &clock, trap()).unwrap();
    }
    assert_eq!(b.state(), BreakerState::Open);
}

#[test]
fn operators_can_force_and_release() {
    let (b, clock, rec) = breaker(config());
    assert_eq!(b.force(BreakerMode::Open), BreakerState::ForcedOpen);
    assert_eq!(call(&b, &clock, None), Err("breaker-open".into()));
    assert_eq!(b.force(BreakerMode::Closed), BreakerState::ForcedClosed);
    for _ in 0..10 {
        call(&b, &clock, trap()).unwrap();
    }
    assert_eq!(
        b.state(),
        BreakerState::ForcedClosed,
        "nothing counted while forced"
    );
    assert_eq!(b.force(BreakerMode::Automatic), BreakerState::Closed);
    assert_eq!(rec.0.lock().unwrap().len(), 3);
}

#[test]
fn bad_values_name_the_field() {
    let bad = |c: BreakerConfig| c.validate().unwrap_err().0;
    assert_eq!(
        bad(BreakerConfig {
            failure_rate: 0.0,
            ..config()
        }),
        "failure_rate"
    );
    assert_eq!(
        bad(BreakerConfig {
            minimum_calls: 11,
            ..config()
        }),
        "minimum_calls"
    );
    assert_eq!(
        bad(BreakerConfig {
            open_backoff: 0.5,
            ..config()
        }),
        "open_backoff"
    );
    assert_eq!(
        bad(BreakerConfig {
            open_max_ms: Some(10),
            ..config()
        }),
        "open_max_ms"
    );
    assert_eq!(
        bad(BreakerConfig {
            failure_on: vec!["bogus".into()],
            ..config()
        }),
        "failure_on"
    );
    assert!(BreakerConfig::default().validate().is_ok());
}
