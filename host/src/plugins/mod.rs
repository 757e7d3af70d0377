//! The plugin runtime: wasmtime running the auth and router components.
//!
//! Each component is compiled once at start-up and pre-instantiated
//! ([`wasmtime::component::InstancePre`] with the pooling allocator); every
//! call then gets a fresh instance in a fresh [`wasmtime::Store`], scoped to
//! one app, so instances are never shared between apps and an instance that
//! trapped is never entered again. Each call runs under a time budget (epoch
//! deadline) and a memory cap; a failing call fails only its own request.

mod auth;
pub mod bindings;
mod compile_cache;
mod embedded;
mod epoch;
mod host_state;
pub mod imports;
mod output;
mod router;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::sync::{Semaphore, SemaphorePermit};
use wasmtime::component::{
    Component, ComponentExportIndex, ComponentNamedList, ComponentType, HasSelf, InstancePre, Lift,
    Linker, Lower,
};
use wasmtime::{
    Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, Trap, UpdateDeadline,
};

pub use auth::AuthPlugin;
pub use host_state::{HostState, PluginSettings};
pub use router::RouterPlugin;

use crate::metrics::Metrics;
use crate::store::{Namespace, Room, StoreBackend};
use compile_cache::CompileCache;
use epoch::{EpochTicker, Running};
use output::PluginLog;

/// Bytes of each instance slot kept mapped between calls (the built-in
/// components use well under this); beyond it, slots are decommitted.
const LINEAR_MEMORY_KEEP_RESIDENT: usize = 2 << 20;
const TABLE_KEEP_RESIDENT: usize = 64 << 10;
/// Decommits flushed together.
const DECOMMIT_BATCH: usize = 32;
/// What one call may hand the host: far above the claims and store values
/// the contract allows (64 globs of 200 bytes, 64 KiB); a `route-publish`
/// answer costs 32 bytes per target plus its name (about 80,000 targets of
/// 20-byte names, 18,000 of 200 bytes).
const HOSTCALL_BYTES: usize = 4 << 20;

/// Sandbox limits applied to every plugin call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SandboxLimits {
    /// Wall-clock budget of one call, host calls (store I/O) included.
    pub call_timeout: Duration,
    /// Linear memory one instance may grow to.
    pub memory_bytes: usize,
    /// Calls running at once; more wait for a free slot.
    pub max_concurrent_calls: u32,
}

impl Default for SandboxLimits {
    fn default() -> Self {
        SandboxLimits {
            call_timeout: Duration::from_millis(1000),
            memory_bytes: 32 << 20,
            max_concurrent_calls: 256,
        }
    }
}

/// Where a component comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ComponentSource {
    /// The default component built into this binary.
    BuiltIn,
    /// A `.wasm` component file chosen by the operator.
    File(PathBuf),
}

/// The wasmtime engine and its limits, shared by every plugin.
pub struct Sandbox {
    engine: Engine,
    /// Compiled components kept on disk, when the operator chose a place.
    compile_cache: Option<CompileCache>,
    /// One compile at a time (start-up, reloads), so the cache's hit count
    /// says which load a hit belongs to.
    compiling: std::sync::Mutex<()>,
    metrics: Arc<Metrics>,
    limits: SandboxLimits,
    slots: Semaphore,
    epoch: EpochTicker,
}

/// What one call holds while it runs: an instance slot, and the epoch
/// clock ticking.
struct CallSlot<'a> {
    _permit: SemaphorePermit<'a>,
    _running: Running<'a>,
}

impl Sandbox {
    /// The engine with its limits; with `compile_cache`, compiled
    /// components are kept in that directory (see `compile_cache.rs`).
    pub fn new(
        limits: SandboxLimits,
        compile_cache: Option<&Path>,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Arc<Sandbox>> {
        let instances = limits.max_concurrent_calls.max(1);
        let mut pool = PoolingAllocationConfig::default();
        // A Rust component holds a few core instances (its module plus
        // canonical-ABI shims) and one memory; leave headroom.
        pool.total_component_instances(instances)
            .total_core_instances(instances * 8)
            .total_memories(instances * 2)
            .total_tables(instances * 8)
            .max_memory_size(limits.memory_bytes);
        // Every call gets a fresh instance, so slot reuse is the hot path.
        // Resetting a slot with madvise costs a TLB shootdown on every core
        // and page faults on the next call; instead reset only the pages a
        // call dirtied (pagemap scan, Linux 6.7+), in place, and batch what
        // still has to be decommitted.
        pool.pagemap_scan(wasmtime::Enabled::Auto)
            .linear_memory_keep_resident(LINEAR_MEMORY_KEEP_RESIDENT)
            .table_keep_resident(TABLE_KEEP_RESIDENT)
            .decommit_batch_size(DECOMMIT_BATCH);

        let compile_cache = compile_cache.map(CompileCache::open).transpose()?;
        let mut config = wasmtime::Config::new();
        config
            .epoch_interruption(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
            .cache(compile_cache.as_ref().map(|cache| cache.cache().clone()));
        let engine = Engine::new(&config)
            .map_err(anyhow::Error::from)
            .context("cannot start the WebAssembly engine")?;
        let epoch = EpochTicker::start(&engine)?;

        Ok(Arc::new(Sandbox {
            engine,
            compile_cache,
            compiling: std::sync::Mutex::new(()),
            metrics,
            limits,
            slots: Semaphore::new(instances as usize),
            epoch,
        }))
    }

    /// Read and compile a component; errors name the file. Compiling takes
    /// seconds for a large component (an interpreter built in), so a caller
    /// that needs one twice (`plugin check`: its imports, then its load)
    /// compiles it once and passes it on.
    pub fn compile(&self, kind: PluginKind, source: &ComponentSource) -> anyhow::Result<Component> {
        let name = source.describe(kind);
        let bytes = match source {
            ComponentSource::BuiltIn => kind.built_in().to_vec(),
            ComponentSource::File(path) => {
                std::fs::read(path).with_context(|| format!("cannot read the {name}"))?
            }
        };
        let _one_at_a_time = self
            .compiling
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(cache) = &self.compile_cache {
            cache.recheck()?;
        }
        let started = Instant::now();
        let hits_before = self.compile_cache.as_ref().map(CompileCache::hits);
        let component = Component::from_binary(&self.engine, &bytes)
            .map_err(anyhow::Error::from)
            .with_context(|| format!("the {name} is not a valid WebAssembly component"))?;
        let took_ms = started.elapsed().as_millis() as u64;
        let from_cache = match (&self.compile_cache, hits_before) {
            (Some(cache), Some(before)) => cache.hits() > before,
            _ => false,
        };
        if from_cache {
            tracing::info!(component = %name, took_ms, "loaded from the compile cache");
        } else {
            tracing::info!(component = %name, took_ms, "compiled");
        }
        Ok(component)
    }

    /// Check a compiled component against a world's linker.
    fn pre_instantiate(
        &self,
        kind: PluginKind,
        source: &ComponentSource,
        component: &Component,
        linker: &Linker<HostState>,
    ) -> anyhow::Result<wasmtime::component::InstancePre<HostState>> {
        let name = source.describe(kind);
        linker
            .instantiate_pre(component)
            .map_err(anyhow::Error::from)
            .with_context(|| {
                format!(
                    "the {name} needs imports this host does not provide \
                     (it must target the world madx:pusher/{}@0.1.0)",
                    kind.world()
                )
            })
    }

    /// The linker every component of `kind` is instantiated with: WASI 0.2
    /// (with nothing granted) and the world's `madx:pusher` imports.
    fn linker(&self, kind: PluginKind) -> anyhow::Result<Linker<HostState>> {
        let mut linker = Linker::new(&self.engine);
        host_state::add_wasi_to_linker(&mut linker).map_err(anyhow::Error::from)?;
        kind.add_world(&mut linker).map_err(anyhow::Error::from)?;
        Ok(linker)
    }

    /// A fresh store for one call, with the budget and memory cap applied.
    async fn store(
        &self,
        namespace: Namespace,
        settings: PluginSettings,
    ) -> (Store<HostState>, CallSlot<'_>) {
        // The semaphore is never closed, so acquiring cannot fail.
        let permit = match self.slots.acquire().await {
            Ok(permit) => permit,
            Err(_) => unreachable!("the plugin call semaphore is never closed"),
        };
        let state = HostState::new(namespace, settings, self.limits.memory_bytes);
        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| &mut state.limits);
        // What one call may hand the host (an export's answer, an import's
        // arguments), counted as the host would hold it once copied out;
        // without it the host would copy out anything the guest's memory
        // holds, many times over for strings the guest's lists share.
        store.set_hostcall_fuel(HOSTCALL_BYTES);
        // Every tick the guest yields its worker thread (calls run on the
        // async runtime, never blocking it for more than a tick), and is
        // interrupted once its wall-clock budget is spent. Host calls
        // (store I/O) count against the same budget.
        let budget_ends = Instant::now() + self.limits.call_timeout;
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| {
            Ok(if Instant::now() >= budget_ends {
                UpdateDeadline::Interrupt
            } else {
                UpdateDeadline::YieldCustom(1, Box::pin(tokio::task::yield_now()))
            })
        });
        let slot = CallSlot {
            _permit: permit,
            _running: self.epoch.call_started(),
        };
        (store, slot)
    }

    /// A component's imports, each with whether the linker its plugins are
    /// instantiated with provides it.
    pub fn imports(
        &self,
        kind: PluginKind,
        component: &Component,
    ) -> anyhow::Result<Vec<imports::Import>> {
        let linker = self.linker(kind)?;
        Ok(imports::probe(&self.engine, &linker, component))
    }
}

/// The kinds of plugin the host runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PluginKind {
    Auth,
    Router,
}

impl PluginKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PluginKind::Auth => "auth",
            PluginKind::Router => "router",
        }
    }

    pub fn world(self) -> &'static str {
        match self {
            PluginKind::Auth => "auth-plugin",
            PluginKind::Router => "router-plugin",
        }
    }

    /// Add the world's imports (`store`, `settings`, `types`) to a linker.
    fn add_world(self, linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
        match self {
            PluginKind::Auth => {
                bindings::auth::AuthPlugin::add_to_linker::<_, HasSelf<_>>(linker, |state| state)
            }
            PluginKind::Router => {
                bindings::router::RouterPlugin::add_to_linker::<_, HasSelf<_>>(linker, |state| {
                    state
                })
            }
        }
    }

    fn built_in(self) -> &'static [u8] {
        match self {
            PluginKind::Auth => embedded::AUTH,
            PluginKind::Router => embedded::ROUTER,
        }
    }
}

impl ComponentSource {
    /// How logs and errors name the component.
    pub fn describe(&self, kind: PluginKind) -> String {
        match self {
            ComponentSource::BuiltIn => format!("built-in {} component", kind.as_str()),
            ComponentSource::File(path) => {
                format!("{} component {}", kind.as_str(), path.display())
            }
        }
    }
}

/// A plugin call that failed on the host side of the contract: the guest
/// trapped, ran out of time or memory, or could not be instantiated. The
/// request that made the call fails; everything else carries on.
#[derive(Debug, thiserror::Error)]
#[error("{component}: {call} failed: {reason}")]
pub struct PluginFailure {
    pub component: String,
    pub call: &'static str,
    pub reason: String,
}

impl PluginFailure {
    fn new(component: &str, call: &'static str, error: &wasmtime::Error) -> Self {
        let reason = match error.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => "ran past its time budget".to_owned(),
            Some(trap) => format!("trapped: {trap}"),
            // The root cause names the limit or failure; the rest is a
            // backtrace into the guest.
            None => error.root_cause().to_string(),
        };
        let failure = PluginFailure {
            component: component.to_owned(),
            call,
            reason,
        };
        tracing::warn!(component, call, reason = %failure.reason, "plugin call failed");
        failure
    }
}

/// What every loaded plugin holds besides its world's functions: the
/// pre-instantiated component, where its calls run, what they may reach,
/// and its name.
pub(crate) struct PluginCore {
    sandbox: Arc<Sandbox>,
    pre: InstancePre<HostState>,
    kind: PluginKind,
    store: StoreBackend,
    settings: PluginSettings,
    name: String,
    /// Where the component's stdout and stderr go.
    log: PluginLog,
}

impl PluginCore {
    /// Check the configured component, compiled, against the linker of its
    /// kind.
    fn load(
        sandbox: &Arc<Sandbox>,
        kind: PluginKind,
        store: StoreBackend,
        config: &PluginConfig,
        component: &Component,
    ) -> anyhow::Result<PluginCore> {
        let linker = sandbox.linker(kind)?;
        let pre = sandbox.pre_instantiate(kind, &config.source, component, &linker)?;
        Ok(PluginCore {
            sandbox: sandbox.clone(),
            pre,
            kind,
            store,
            settings: config.settings.clone(),
            name: config.source.describe(kind),
            log: PluginLog::default(),
        })
    }

    /// The function `name` of the component's `madx:pusher/<kind>`
    /// interface.
    fn export(&self, component: &Component, name: &'static str) -> anyhow::Result<Export> {
        let interface = format!("madx:pusher/{}@0.1.0", self.kind.as_str());
        let index = component
            .get_export_index(None, &interface)
            .and_then(|interface| component.get_export_index(Some(&interface), name))
            .ok_or_else(|| self.missing_export(format_args!("no function {name}")))?;
        Ok(Export { name, index })
    }

    /// The error for a component that lacks its world's export.
    fn missing_export(&self, error: impl std::fmt::Display) -> anyhow::Error {
        anyhow::anyhow!(
            "the {} does not export madx:pusher/{}@0.1.0 as the {} world requires: {error}",
            self.name,
            self.kind.as_str(),
            self.kind.world()
        )
    }

    /// A fresh store for one `call` on behalf of `app_id`, and its call
    /// slot. The plugin's store operations must finish within three
    /// quarters of its time budget, so a hung store is reported as the
    /// store's failure with time left for the plugin to say so.
    async fn store_for(
        &self,
        app_id: &str,
        call: &'static str,
    ) -> (Store<HostState>, CallSlot<'_>) {
        let room = match (self.kind, call) {
            (PluginKind::Auth, "verify" | "touch" | "revoke") => Room::Reserved,
            _ => Room::General,
        };
        let deadline = tokio::time::Instant::now() + self.sandbox.limits.call_timeout * 3 / 4;
        let namespace = Namespace::new(
            self.store.clone(),
            app_id,
            self.kind.as_str(),
            room,
            deadline,
        );
        self.sandbox.store(namespace, self.settings.clone()).await
    }

    /// One call of `export` with `params` on a fresh instance for
    /// `app_id`, counted and timed; the function's one result. Only that
    /// function's type is checked against the component, where the
    /// generated bindings check every function of the world on every
    /// instance (0.4-0.65 µs a call, docs/benchmarks.md). A trap or a spent
    /// budget is the plugin's failure.
    async fn call<P, R>(&self, app_id: &str, export: &Export, params: P) -> Result<R, PluginFailure>
    where
        P: ComponentNamedList + Lower + Send + Sync,
        R: ComponentType + Lift + Send + Sync + 'static,
    {
        let started = Instant::now();
        let call = export.name;
        let (mut store, _slot) = self.store_for(app_id, call).await;
        let result = async {
            let instance = self.pre.instantiate_async(&mut store).await?;
            let function = instance.get_typed_func::<P, (R,)>(&mut store, &export.index)?;
            let (answer,) = function.call_async(&mut store, params).await?;
            Ok(answer)
        }
        .await;
        // Logged before the failure, which the output (a panic message)
        // often explains.
        let dropped = self
            .log
            .emit(&self.name, app_id, call, &store.data().output);
        self.sandbox
            .metrics
            .plugin_log_lines_dropped(self.kind.as_str(), dropped);
        let result = result.map_err(|error| self.failure(call, &error));
        self.record(call, started, result)
    }

    fn failure(&self, call: &'static str, error: &wasmtime::Error) -> PluginFailure {
        PluginFailure::new(&self.name, call, error)
    }

    /// Count a finished call and its duration.
    fn record<T>(
        &self,
        call: &'static str,
        started: Instant,
        result: Result<T, PluginFailure>,
    ) -> Result<T, PluginFailure> {
        self.sandbox
            .metrics
            .plugin_call(self.kind.as_str(), call, started, result.is_ok());
        result
    }
}

/// A function a world exports, found in the component once, at load; its
/// name is the call's name in logs and metrics.
struct Export {
    name: &'static str,
    index: ComponentExportIndex,
}

/// Both plugins, ready to serve calls.
pub struct Plugins {
    pub auth: AuthPlugin,
    pub router: RouterPlugin,
}

/// What the host loads at start-up.
#[derive(Debug, Clone)]
pub struct PluginConfig {
    pub source: ComponentSource,
    pub settings: PluginSettings,
}

impl Plugins {
    /// Compile and check both components; an error names the file and what
    /// does not fit.
    pub fn load(
        sandbox: &Arc<Sandbox>,
        store: StoreBackend,
        auth: &PluginConfig,
        router: &PluginConfig,
    ) -> anyhow::Result<Plugins> {
        Ok(Plugins {
            auth: AuthPlugin::load(sandbox, store.clone(), auth)?,
            router: RouterPlugin::load(sandbox, store, router)?,
        })
    }
}
