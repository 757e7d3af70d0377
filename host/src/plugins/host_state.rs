//! The per-call state of a plugin instance and the host side of the
//! interfaces the plugins import (`store`, `settings`, and WASI).

use std::collections::BTreeMap;
use std::sync::Arc;

use wasmtime::component::Linker;
use wasmtime::{StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::clocks::{WasiClocks, WasiClocksCtx, WasiClocksCtxView};
use wasmtime_wasi::p2::bindings::{clocks, random};
use wasmtime_wasi::random::{WasiRandom, WasiRandomCtx};
use wasmtime_wasi::{ResourceTable, WasiCtx, WasiCtxView, WasiView};

use super::bindings::auth::madx::pusher::{settings, store, types};
use super::output::CallOutput;
use crate::store::{Namespace, StoreError};

/// Operator-given settings of one plugin (`[plugins.<kind>.settings]`).
pub type PluginSettings = Arc<BTreeMap<String, String>>;

/// Everything one plugin call can reach. Built fresh for every call and
/// dropped with it, so nothing leaks between calls, apps or plugins.
pub struct HostState {
    /// WASI with no capabilities granted: no files, sockets, environment or
    /// arguments. Guests get clocks and randomness only (served from the
    /// two contexts below). Built on the guest's first other WASI call
    /// (stdout, stderr, a refused file or socket): building one seeds two
    /// random generators and allocates a dozen boxes, and most calls make
    /// none.
    wasi: Option<WasiCtx>,
    /// The clocks and randomness on their own, also built on first use:
    /// the built-in auth component reads the clock on every `verify`, and
    /// a whole WASI context for that doubled what the clock costs.
    clocks: Option<WasiClocksCtx>,
    random: Option<WasiRandomCtx>,
    /// What the guest writes to stdout and stderr, logged after the call.
    pub(super) output: CallOutput,
    table: ResourceTable,
    pub(super) limits: StoreLimits,
    store: Namespace,
    settings: PluginSettings,
}

impl HostState {
    pub fn new(store: Namespace, settings: PluginSettings, memory_bytes: usize) -> Self {
        let output = CallOutput::default();
        HostState {
            wasi: None,
            clocks: None,
            random: None,
            output,
            table: ResourceTable::new(),
            limits: StoreLimitsBuilder::new()
                .memory_size(memory_bytes)
                .instances(64)
                .trap_on_grow_failure(true)
                .build(),
            store,
            settings,
        }
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        let output = &self.output;
        let ctx = self.wasi.get_or_insert_with(|| {
            WasiCtx::builder()
                .stdout(output.clone())
                .stderr(output.clone())
                .build()
        });
        WasiCtxView {
            ctx,
            table: &mut self.table,
        }
    }
}

impl HostState {
    fn clocks(&mut self) -> WasiClocksCtxView<'_> {
        WasiClocksCtxView {
            ctx: self.clocks.get_or_insert_with(WasiClocksCtx::default),
            table: &mut self.table,
        }
    }

    fn random(&mut self) -> &mut WasiRandomCtx {
        self.random.get_or_insert_with(WasiRandomCtx::default)
    }
}

/// Add WASI 0.2 to a linker, every interface with nothing granted, the
/// clocks and randomness served from [`HostState`]'s own small contexts
/// rather than a whole WASI context (which stays for the rest: stdout
/// and stderr, and the refusals of everything else).
pub(super) fn add_wasi_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    wasmtime_wasi::p2::add_to_linker_async(linker)?;
    linker.allow_shadowing(true);
    clocks::wall_clock::add_to_linker::<_, WasiClocks>(linker, HostState::clocks)?;
    clocks::monotonic_clock::add_to_linker::<_, WasiClocks>(linker, HostState::clocks)?;
    random::random::add_to_linker::<_, WasiRandom>(linker, HostState::random)?;
    random::insecure::add_to_linker::<_, WasiRandom>(linker, HostState::random)?;
    random::insecure_seed::add_to_linker::<_, WasiRandom>(linker, HostState::random)?;
    linker.allow_shadowing(false);
    Ok(())
}

impl types::Host for HostState {}

impl From<StoreError> for store::StoreError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Unavailable(message) | StoreError::Full(message) => {
                store::StoreError::Unavailable(message)
            }
            StoreError::InvalidArgument(message) => store::StoreError::InvalidArgument(message),
        }
    }
}

impl store::Host for HostState {
    async fn get(&mut self, key: String) -> Result<Option<Vec<u8>>, store::StoreError> {
        Ok(self.store.get(&key).await?)
    }

    async fn set(
        &mut self,
        key: String,
        value: Vec<u8>,
        ttl_ms: u64,
    ) -> Result<(), store::StoreError> {
        Ok(self.store.set(&key, &value, ttl_ms).await?)
    }

    async fn set_if_absent(
        &mut self,
        key: String,
        value: Vec<u8>,
        ttl_ms: u64,
    ) -> Result<bool, store::StoreError> {
        Ok(self.store.set_if_absent(&key, &value, ttl_ms).await?)
    }

    async fn touch(&mut self, key: String, ttl_ms: u64) -> Result<bool, store::StoreError> {
        Ok(self.store.touch(&key, ttl_ms).await?)
    }

    async fn delete(&mut self, key: String) -> Result<bool, store::StoreError> {
        Ok(self.store.delete(&key).await?)
    }

    async fn increment(
        &mut self,
        key: String,
        delta: u64,
        ttl_ms: u64,
    ) -> Result<u64, store::StoreError> {
        Ok(self.store.increment(&key, delta, ttl_ms).await?)
    }

    async fn decrement(&mut self, key: String, delta: u64) -> Result<u64, store::StoreError> {
        Ok(self.store.decrement(&key, delta).await?)
    }
}

impl settings::Host for HostState {
    async fn get(&mut self, name: String) -> Option<String> {
        self.settings.get(&name).cloned()
    }
}
