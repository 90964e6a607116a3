//! What lives in each request's `Store`, and the linker every function shares.

use runway_cap_config::ConfigHost;
use runway_cap_kv::{KvHost, KvView};
use runway_cap_outbound::OutboundHooks;
use runway_cap_sql::SqlHost;
use wasmtime::Engine;
use wasmtime::component::{Linker, ResourceTable};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::limits::MemoryLimiter;

/// Per-request state: WASI contexts that grant nothing beyond what the release configures,
/// the resource table, the memory limiter, and the release's capabilities (each checked
/// against its policy on every call).
pub(crate) struct InstanceState {
    pub(crate) wasi: WasiCtx,
    pub(crate) http: WasiHttpCtx,
    pub(crate) table: ResourceTable,
    pub(crate) limiter: MemoryLimiter,
    pub(crate) hooks: OutboundHooks,
    pub(crate) sql: SqlHost,
    pub(crate) kv: KvHost,
    pub(crate) config: ConfigHost,
    pub(crate) cpu: crate::cpu::CpuThrottle,
}

impl WasiView for InstanceState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for InstanceState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

/// Links all of WASI 0.2 (cli, clocks, filesystem, io, random, sockets), wasi:http, and
/// the capabilities a policy can grant: `runway:platform/sql`, `wasi:keyvalue`, `wasi:config`.
///
/// Toolchains import more than the proxy world (Rust's std imports `wasi:cli/environment`,
/// componentize-js imports sockets and filesystem). Linking them keeps those components
/// deployable; the per-request `WasiCtx` grants nothing through them: no preopened
/// directories, no sockets, no inherited environment. Version matching is semver-based,
/// so components mixing 0.2.x minor versions link against the one implementation.
pub(crate) fn linker(engine: &Engine) -> wasmtime::Result<Linker<InstanceState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
    runway_cap_sql::add_to_linker(&mut linker, |state: &mut InstanceState| &mut state.sql)?;
    runway_cap_kv::add_to_linker(&mut linker, |state: &mut InstanceState| KvView {
        host: &state.kv,
        table: &mut state.table,
    })?;
    runway_cap_config::add_to_linker(&mut linker, |state: &mut InstanceState| &mut state.config)?;
    Ok(linker)
}
