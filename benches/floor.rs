//! The wasmtime floor: the same component called through wasmtime directly, with the least setup
//! a call needs and no tierhost code. Its own bindings of `wit/tier.wit`, a plain store (a
//! capability-free WASI context and a resource table, nothing else: no memory limiter, no
//! fuel, no epoch callback, no stderr capture), the host imports answering with nothing. The
//! engine matches tierhost's except for fuel and epoch interruption, which a floor cannot have:
//! the same pooling allocator, copy-on-write memory images and keep-resident sizes
//! (`host/src/engine.rs`), so the difference to tierhost is its own per-call work.
use std::time::{Duration, Instant};

use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

wasmtime::component::bindgen!({
    world: "tier",
    path: "wit",
    exports: { default: async },
});

use self::tierhost::tier::host as wit_host;
use self::tierhost::tier::types as wit;

/// A plain store's data.
pub struct Plain {
    wasi: WasiCtx,
    table: ResourceTable,
}

impl WasiView for Plain {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl wit::Host for Plain {}

impl wit_host::Host for Plain {
    fn log(&mut self, _level: wit_host::LogLevel, _message: String) {}
    fn params(&mut self) -> Vec<wit_host::Param> {
        Vec::new()
    }
    fn model(&mut self) -> Vec<u8> {
        Vec::new()
    }
}

fn plain_store(engine: &Engine, limits: bool) -> Store<Plain> {
    let mut store = Store::new(
        engine,
        Plain {
            wasi: WasiCtx::builder().build(),
            table: ResourceTable::new(),
        },
    );
    if limits {
        // What enforcing fuel and a deadline needs at the least: fuel to burn and an epoch
        // deadline far away (no callback).
        store.set_fuel(u64::MAX / 2).expect("fuel is enabled");
        store.set_epoch_deadline(u64::MAX / 2);
    }
    store
}

/// A component ready to call at the floor.
pub struct Floor {
    engine: Engine,
    pre: TierPre<Plain>,
    limits: bool,
}

const MIB: usize = 1024 * 1024;

impl Floor {
    /// Compiles `wasm` on a floor engine and pre-instantiates it. With `limits`, the engine
    /// also instruments for fuel and epoch interruption (what tierhost's limits need), so the
    /// cost of the limits themselves can be told apart from the cost of tierhost's code.
    pub fn new(wasm: &[u8], limits: bool) -> wasmtime::Result<Self> {
        let mut pool = PoolingAllocationConfig::new();
        pool.total_component_instances(16)
            .total_core_instances(16 * 16)
            .total_memories(16)
            .total_tables(16 * 8)
            .total_stacks(16)
            .max_core_instances_per_component(16)
            .max_memories_per_component(1)
            .max_tables_per_component(8)
            .max_memory_size(16 * MIB)
            .linear_memory_keep_resident(2 * MIB)
            .table_keep_resident(64 * 1024)
            .pagemap_scan(wasmtime::Enabled::Auto);
        let mut config = Config::new();
        config
            .wasm_component_model(true)
            .wasm_backtrace_max_frames(None)
            .consume_fuel(limits)
            .epoch_interruption(limits)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config)?;
        let component = Component::new(&engine, wasm)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        Tier::add_to_linker::<Plain, HasSelf<Plain>>(&mut linker, |s| s)?;
        let pre = TierPre::new(linker.instantiate_pre(&component)?)?;
        Ok(Self {
            engine,
            pre,
            limits,
        })
    }

    /// One call on a fresh store and instance; returns the answer's label.
    pub async fn call_fresh(&self, request: &wit::Request) -> String {
        call_warm(&mut self.warm().await, request).await
    }

    /// A store and instance to call repeatedly.
    pub async fn warm(&self) -> (Store<Plain>, Tier) {
        let mut store = plain_store(&self.engine, self.limits);
        let instance = self
            .pre
            .instantiate_async(&mut store)
            .await
            .expect("floor instantiates");
        (store, instance)
    }
}

fn label(result: wasmtime::Result<Result<wit::Outcome, wit::TierError>>) -> String {
    match result.expect("floor call returns") {
        Ok(wit::Outcome::Answer(p)) => p.label,
        other => panic!("the floor's tier did not answer: {other:?}"),
    }
}

/// One call on a warm instance.
pub async fn call_warm(warm: &mut (Store<Plain>, Tier), request: &wit::Request) -> String {
    let (store, instance) = warm;
    label(instance.call_predict(store, request).await)
}

/// `request` in the floor's own WIT types (the floor has its own bindings, so it cannot use
/// tierhost's lowering).
pub fn lower(request: &::tierhost::Request) -> wit::Request {
    use ::tierhost::FeatureValue as F;
    wit::Request {
        id: request.id.clone(),
        features: request
            .features
            .iter()
            .map(|(name, value)| wit::Feature {
                name: name.clone(),
                value: match value {
                    F::Null => wit::Value::Null,
                    F::Bool(b) => wit::Value::Boolean(*b),
                    F::Integer(i) => wit::Value::Integer(*i),
                    F::Float(x) => wit::Value::Float(*x),
                    F::Text(s) => wit::Value::Text(s.clone()),
                },
            })
            .collect(),
    }
}

/// Times an async call `iterations` times after `warmup` untimed ones.
pub async fn time_async<F, Fut, R>(warmup: usize, iterations: usize, mut f: F) -> Vec<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = R>,
{
    let mut samples = Vec::with_capacity(iterations);
    for i in 0..warmup + iterations {
        let t = Instant::now();
        std::hint::black_box(f().await);
        if i >= warmup {
            samples.push(t.elapsed());
        }
    }
    samples
}
