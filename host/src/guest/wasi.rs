//! The WASI a tier gets: no capabilities, clocks frozen at zero, timers that follow the frozen
//! clock, randomness seeded per request.
use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::StdRng;
use wasmtime::component::Linker;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxBuilder};

use super::{CallState, MAX_RANDOM_BYTES};

/// The monotonic-clock interface as wasmtime-wasi defines it (guests importing any 0.2.x
/// version resolve to it).
const MONOTONIC_CLOCK: &str = "wasi:clocks/monotonic-clock@0.2.12";

/// Timers that follow the frozen clock. wasmtime-wasi's `subscribe-duration` and
/// `subscribe-instant` fire in real time even when the clocks are frozen, so a tier could count
/// polls until a timer fires and measure time. Here a timer that is due at the frozen "now"
/// (a zero duration, or an instant not after 0) is ready at once; any other never fires, so a
/// tier that sleeps or waits on a timer runs into its deadline.
pub(super) fn frozen_timers(linker: &mut Linker<CallState>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let mut clock = linker.instance(MONOTONIC_CLOCK)?;
    clock.func_wrap(
        "subscribe-duration",
        |mut store: wasmtime::StoreContextMut<'_, CallState>, (nanos,): (u64,)| {
            frozen_timer(store.data_mut(), nanos == 0).map(|r| (r,))
        },
    )?;
    clock.func_wrap(
        "subscribe-instant",
        |mut store: wasmtime::StoreContextMut<'_, CallState>, (when,): (u64,)| {
            frozen_timer(store.data_mut(), when == 0).map(|r| (r,))
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

fn frozen_timer(
    state: &mut CallState,
    due: bool,
) -> wasmtime::Result<wasmtime::component::Resource<wasmtime_wasi::p2::DynPollable>> {
    let timer = state.table.push(FrozenTimer {
        due,
        yielded: false,
    })?;
    wasmtime_wasi::p2::subscribe(&mut state.table, timer)
}

/// A timer on the frozen clock: ready at once when due (after one yield, so a guest polling
/// in a loop cannot starve the runtime), never otherwise.
struct FrozenTimer {
    due: bool,
    yielded: bool,
}

impl wasmtime_wasi::p2::Pollable for FrozenTimer {
    fn ready<'a, 'b>(
        &'a mut self,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'b>>
    where
        'a: 'b,
        Self: 'b,
    {
        Box::pin(async move {
            if !self.due {
                std::future::pending::<()>().await;
            }
            if !self.yielded {
                self.yielded = true;
                tokio::task::yield_now().await;
            }
        })
    }
}

/// Clocks frozen at zero: tiers see the UNIX epoch and a monotonic clock that never moves.
struct FrozenClock;

impl HostWallClock for FrozenClock {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }
    fn now(&self) -> Duration {
        Duration::ZERO
    }
}

impl HostMonotonicClock for FrozenClock {
    fn resolution(&self) -> u64 {
        1_000_000_000
    }
    fn now(&self) -> u64 {
        0
    }
}

pub(super) fn wasi_ctx(seed: u64, stderr: MemoryOutputPipe) -> WasiCtx {
    WasiCtxBuilder::new()
        .stderr(stderr)
        .wall_clock(FrozenClock)
        .monotonic_clock(FrozenClock)
        .secure_random(StdRng::seed_from_u64(seed))
        .insecure_random(StdRng::seed_from_u64(seed.rotate_left(17)))
        .insecure_random_seed(u128::from(seed))
        .max_random_size(MAX_RANDOM_BYTES)
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .build()
}
