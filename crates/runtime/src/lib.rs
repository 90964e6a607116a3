//! The execution mechanism: one wasmtime engine, compiled code cached by artifact digest, a
//! prepared instance per release, and a fresh store and instance for every request.
//!
//! `runway-runtime` enforces a function's memory size (a resource limiter that also records
//! the high-water mark) and timeout (epoch interruption with an async yield, plus a
//! wall-clock deadline that covers host calls), and returns an explicit [`Outcome`] from
//! every invocation. It decides nothing about routes, pricing or storage: the server passes
//! policy in and persists what comes out. Nothing is recorded as a side effect of `Drop`.

mod artifact;
mod cpu;
mod invoke;
mod limits;
mod output;
mod state;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use wasmtime::component::Linker;
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

pub use artifact::{ArtifactError, CacheMiss, CompiledArtifact, LoadedFrom, Prepared};
pub use artifact::{ComponentInterfaces, component_interfaces};
pub use cpu::{CPU_PERIOD, CpuShare, DEFAULT_FULL_CORE_BYTES};
pub use invoke::{Capabilities, FailedInvocation, Limits, Outcome, ResponseBody, Status};
use state::InstanceState;
/// The error a request body may fail with while the guest reads it.
pub use wasmtime_wasi_http::Error as BodyError;

/// How the engine is set up on this node.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Where compiled code is cached, one file per artifact digest.
    pub cache_dir: PathBuf,
    /// Instances that may exist at once across all functions (pooling allocator slots).
    pub max_instances: u32,
    /// The largest linear memory any function may be given, in bytes.
    pub max_memory_bytes: u64,
    /// Linear memory kept mapped between instances in one slot, in bytes.
    pub memory_keep_resident: u64,
    /// Table memory kept mapped between instances in one slot, in bytes.
    pub table_keep_resident: u64,
    /// Largest component accepted, in bytes.
    pub max_artifact_bytes: u64,
    /// Bytes of stdout and of stderr kept per invocation; the rest is counted and dropped.
    pub output_capture_bytes: usize,
    /// Memory size that buys one full core; smaller functions get a proportional share
    /// ([`CpuShare::for_memory`]). 0 turns CPU shares off.
    pub cpu_full_core_bytes: u64,
}

impl RuntimeConfig {
    /// Defaults for a node whose cache lives in `cache_dir`.
    pub fn new(cache_dir: PathBuf) -> RuntimeConfig {
        RuntimeConfig {
            cache_dir,
            max_instances: 1000,
            max_memory_bytes: 4 << 30,
            memory_keep_resident: 2 << 20,
            table_keep_resident: 512 << 10,
            max_artifact_bytes: 100 << 20,
            output_capture_bytes: 64 << 10,
            cpu_full_core_bytes: DEFAULT_FULL_CORE_BYTES,
        }
    }
}

/// Failures setting up the engine.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// wasmtime refused the engine configuration.
    #[error("cannot configure the WebAssembly engine: {0:#}")]
    Engine(wasmtime::Error),
    /// The compile cache folder could not be created.
    #[error("cannot create the compile cache folder {path}: {source}")]
    CacheDir {
        /// The folder.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// How often the epoch advances: the granularity of timeouts and of cooperative yields.
pub const EPOCH_TICK: Duration = Duration::from_millis(1);

/// The engine, its linker and the epoch ticker; shared by every function on the node.
pub struct Runtime {
    engine: Engine,
    linker: Linker<InstanceState>,
    config: RuntimeConfig,
    ticker_stop: Arc<AtomicBool>,
}

impl Runtime {
    /// Builds the engine (Cranelift, async, pooling allocator, epoch interruption) and
    /// starts the epoch ticker thread.
    pub fn new(config: RuntimeConfig) -> Result<Runtime, RuntimeError> {
        std::fs::create_dir_all(&config.cache_dir).map_err(|source| RuntimeError::CacheDir {
            path: config.cache_dir.clone(),
            source,
        })?;
        let mut pooling = PoolingAllocationConfig::default();
        pooling
            .total_component_instances(config.max_instances)
            // Components from componentize-js/-py hold several core instances, memories and
            // tables each; these per-component ceilings fit them with room to spare.
            .total_core_instances(config.max_instances * 4)
            .total_memories(config.max_instances * 2)
            .total_tables(config.max_instances * 4)
            .max_core_instances_per_component(64)
            .max_memories_per_component(8)
            .max_tables_per_component(32)
            .table_elements(100_000)
            .max_memory_size(config.max_memory_bytes as usize)
            .linear_memory_keep_resident(config.memory_keep_resident as usize)
            .table_keep_resident(config.table_keep_resident as usize);
        let mut wasm = Config::new();
        wasm.epoch_interruption(true)
            .wasm_component_model(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pooling));
        let engine = Engine::new(&wasm).map_err(RuntimeError::Engine)?;
        let linker = state::linker(&engine).map_err(RuntimeError::Engine)?;
        let ticker_stop = Arc::new(AtomicBool::new(false));
        spawn_epoch_ticker(engine.clone(), ticker_stop.clone());
        Ok(Runtime {
            engine,
            linker,
            config,
            ticker_stop,
        })
    }

    /// The node configuration this runtime was built with.
    pub fn config(&self) -> &RuntimeConfig {
        &self.config
    }

    /// The CPU share of a function of `memory_bytes` on this node (`unthrottled`: a full core).
    pub fn cpu_share(&self, memory_bytes: u64, unthrottled: bool) -> CpuShare {
        if unthrottled {
            return CpuShare::Unthrottled;
        }
        CpuShare::for_memory(memory_bytes, self.config.cpu_full_core_bytes)
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}

fn spawn_epoch_ticker(engine: Engine, stop: Arc<AtomicBool>) {
    std::thread::Builder::new()
        .name("runway-epoch".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(EPOCH_TICK);
                engine.increment_epoch();
            }
        })
        .expect("spawning the epoch ticker thread");
}
