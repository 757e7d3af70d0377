//! A host of its own for madx-pusher's auth component, written with nothing
//! but the WIT (`wit/`) and wasmtime: it implements the `store` and
//! `settings` imports with a map, issues a token, and checks a connection
//! string twice (the second use must be refused).
//!
//! It keeps the sandbox an embedder needs, as madx-pusher's own host does:
//! a fresh instance in a fresh store for every call (no state survives a
//! call, nothing is shared between users), a time budget per call (epoch
//! deadline) and a cap on linear memory. A component that loops or
//! allocates without end fails its call, never the host.
//!
//! `custom-host [--budget-ms 1000] [--memory-mib 32] [--user-id alice] path/to/auth.wasm`

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, anyhow, bail};
use clap::Parser;
use totp_rs::{Algorithm, Secret, TOTP};
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{Config, Engine, ResourceLimiter, Store, Trap};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

wasmtime::component::bindgen!({
    path: "../../wit",
    world: "auth-plugin",
    imports: { default: async },
    exports: { default: async },
});

use exports::madx::pusher::auth::{AuthError, IssuedToken, TokenRequest};
use madx::pusher::store::StoreError;
use madx::pusher::types::Claims;

#[derive(Parser)]
#[command(about = "Issue a token with an auth component and check a connection string twice")]
struct Args {
    /// The auth component (.wasm).
    component: PathBuf,
    /// Time budget of one call, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    budget_ms: u64,
    /// Cap on one instance's linear memory, in MiB.
    #[arg(long, default_value_t = 32)]
    memory_mib: usize,
    /// The user the token is for.
    #[arg(long, default_value = "alice")]
    user_id: String,
}

/// How often the engine's epoch advances: the resolution of the budget.
const EPOCH_TICK: Duration = Duration::from_millis(10);

/// The store's entries with their expiry; outlives every call.
type Entries = Arc<Mutex<HashMap<String, (Vec<u8>, Instant)>>>;

/// What one call can reach: WASI without capabilities, the shared map as
/// the store, and its memory cap.
struct Host {
    wasi: WasiCtx,
    table: ResourceTable,
    entries: Entries,
    memory_cap: usize,
    memory_cap_hit: bool,
}

impl Host {
    /// The live entries (expired ones are dropped first).
    fn entries(&self) -> MutexGuard<'_, HashMap<String, (Vec<u8>, Instant)>> {
        let mut entries = self
            .entries
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let now = Instant::now();
        entries.retain(|_, (_, expires)| *expires > now);
        entries
    }
}

/// Refuse growth past the cap, and remember it so the failure can say why.
impl ResourceLimiter for Host {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_cap {
            self.memory_cap_hit = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 10_000)
    }
}

impl WasiView for Host {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl madx::pusher::types::Host for Host {}

impl madx::pusher::settings::Host for Host {
    async fn get(&mut self, _name: String) -> Option<String> {
        None
    }
}

impl madx::pusher::store::Host for Host {
    async fn get(&mut self, key: String) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.entries().get(&key).map(|(value, _)| value.clone()))
    }

    async fn set(&mut self, key: String, value: Vec<u8>, ttl_ms: u64) -> Result<(), StoreError> {
        let expires = Instant::now() + Duration::from_millis(ttl_ms);
        self.entries().insert(key, (value, expires));
        Ok(())
    }

    async fn set_if_absent(
        &mut self,
        key: String,
        value: Vec<u8>,
        ttl_ms: u64,
    ) -> Result<bool, StoreError> {
        let mut entries = self.entries();
        if entries.contains_key(&key) {
            return Ok(false);
        }
        let expires = Instant::now() + Duration::from_millis(ttl_ms);
        entries.insert(key, (value, expires));
        Ok(true)
    }

    async fn touch(&mut self, key: String, ttl_ms: u64) -> Result<bool, StoreError> {
        match self.entries().get_mut(&key) {
            Some((_, expires)) => {
                *expires = Instant::now() + Duration::from_millis(ttl_ms);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    async fn delete(&mut self, key: String) -> Result<bool, StoreError> {
        Ok(self.entries().remove(&key).is_some())
    }

    async fn increment(&mut self, key: String, delta: u64, ttl_ms: u64) -> Result<u64, StoreError> {
        let mut entries = self.entries();
        let (current, expires) = match entries.get(&key) {
            Some((value, expires)) => (counter(value)?, *expires),
            None => (0, Instant::now() + Duration::from_millis(ttl_ms)),
        };
        let next = current
            .checked_add(delta)
            .filter(|&next| next <= MAX_COUNTER)
            .ok_or_else(|| StoreError::InvalidArgument("past the counter's maximum".into()))?;
        entries.insert(key, (next.to_string().into_bytes(), expires));
        Ok(next)
    }

    async fn decrement(&mut self, key: String, delta: u64) -> Result<u64, StoreError> {
        let mut entries = self.entries();
        let Some((value, _)) = entries.get_mut(&key) else {
            return Ok(0);
        };
        let next = counter(value)?.saturating_sub(delta);
        if next == 0 {
            entries.remove(&key);
        } else {
            *value = next.to_string().into_bytes();
        }
        Ok(next)
    }
}

/// The most a counter holds on every store (wit/store.wit).
const MAX_COUNTER: u64 = i64::MAX as u64;

/// A counter as wit/store.wit defines one (as Redis counts): decimal
/// digits with no sign and no leading zero, at most `MAX_COUNTER`.
fn counter(value: &[u8]) -> Result<u64, StoreError> {
    let canonical = match value {
        [b'0'] => true,
        [b'1'..=b'9', rest @ ..] => rest.iter().all(u8::is_ascii_digit),
        _ => false,
    };
    std::str::from_utf8(value)
        .ok()
        .filter(|_| canonical)
        .and_then(|text| text.parse().ok())
        .filter(|&count| count <= MAX_COUNTER)
        .ok_or_else(|| StoreError::InvalidArgument("not a counter".into()))
}

/// The compiled component and the limits every call runs under.
struct Sandbox {
    engine: Engine,
    pre: AuthPluginPre<Host>,
    entries: Entries,
    budget_ticks: u64,
    memory_cap: usize,
}

impl Sandbox {
    fn new(args: &Args) -> anyhow::Result<Sandbox> {
        let mut config = Config::new();
        config.epoch_interruption(true);
        let engine = Engine::new(&config).map_err(|error| anyhow!("{error:#}"))?;
        let component = Component::from_file(&engine, &args.component)
            .map_err(|error| anyhow!("{error:#}"))
            .with_context(|| format!("cannot load {}", args.component.display()))?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(|error| anyhow!("{error:#}"))?;
        AuthPlugin::add_to_linker::<_, HasSelf<_>>(&mut linker, |host| host)
            .map_err(|error| anyhow!("{error:#}"))?;
        // Link once; each call only instantiates.
        let pre = linker
            .instantiate_pre(&component)
            .and_then(AuthPluginPre::new)
            .map_err(|error| anyhow!("{error:#}"))?;

        // The budget is counted in epoch ticks; a thread advances them.
        let ticker = engine.weak();
        std::thread::spawn(move || {
            while let Some(engine) = ticker.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        });
        let tick_ms = EPOCH_TICK.as_millis() as u64;
        Ok(Sandbox {
            engine,
            pre,
            entries: Entries::default(),
            budget_ticks: args.budget_ms.div_ceil(tick_ms).max(1),
            memory_cap: args.memory_mib << 20,
        })
    }

    /// A fresh store and instance for one call, with its deadline and cap.
    async fn instance(&self) -> anyhow::Result<(Store<Host>, AuthPlugin)> {
        let mut store = Store::new(
            &self.engine,
            Host {
                wasi: WasiCtx::builder().build(),
                table: ResourceTable::new(),
                entries: self.entries.clone(),
                memory_cap: self.memory_cap,
                memory_cap_hit: false,
            },
        );
        store.limiter(|host| host);
        store.set_epoch_deadline(self.budget_ticks);
        let instance = self
            .pre
            .instantiate_async(&mut store)
            .await
            .map_err(|error| anyhow!("{error:#}"))?;
        Ok((store, instance))
    }

    async fn issue(
        &self,
        request: &TokenRequest,
    ) -> anyhow::Result<Result<IssuedToken, AuthError>> {
        let (mut store, auth) = self.instance().await?;
        let answer = auth
            .madx_pusher_auth()
            .call_issue(&mut store, request)
            .await;
        answer.map_err(|error| self.failure("issue", &store, error))
    }

    async fn verify(
        &self,
        access_id: &str,
        code: &str,
    ) -> anyhow::Result<Result<Claims, AuthError>> {
        let (mut store, auth) = self.instance().await?;
        let answer = auth
            .madx_pusher_auth()
            .call_verify(&mut store, access_id, code)
            .await;
        answer.map_err(|error| self.failure("verify", &store, error))
    }

    /// Why a call failed, in the operator's words.
    fn failure(&self, call: &str, store: &Store<Host>, error: wasmtime::Error) -> anyhow::Error {
        let why = if error.downcast_ref::<Trap>() == Some(&Trap::Interrupt) {
            format!(
                "ran past its budget of {} ms",
                self.budget_ticks * EPOCH_TICK.as_millis() as u64
            )
        } else if store.data().memory_cap_hit {
            format!("hit its memory cap of {} MiB", self.memory_cap >> 20)
        } else {
            format!("trapped: {error:#}")
        };
        anyhow!("the {call} call {why}; the instance was dropped")
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let sandbox = Sandbox::new(&args)?;

    let request = TokenRequest {
        user_id: Some(args.user_id.clone()),
        channels: vec!["news.*".into()],
        publish: vec![],
        ttl_secs: Some(600),
    };
    let token = sandbox
        .issue(&request)
        .await?
        .map_err(|error| anyhow!("issue refused: {error:?}"))?;
    println!("issued {} ({:?})", token.access_id, token.otp);

    let code = current_code(
        &token.secret_seed,
        &token.otp.algorithm,
        token.otp.digits,
        token.otp.period_secs,
    )?;
    let claims = sandbox
        .verify(&token.access_id, &code)
        .await?
        .map_err(|error| anyhow!("verify refused: {error:?}"))?;
    println!(
        "verified: user {:?}, channels {:?}",
        claims.user_id, claims.channels
    );

    // A new instance, so only the store remembers the first use.
    match sandbox.verify(&token.access_id, &code).await? {
        Err(AuthError::OtpReused) => println!("second use refused: otp-reused"),
        other => bail!("the second use of a code must be refused, got {other:?}"),
    }
    Ok(())
}

/// The current code, from the parameters the component announced.
fn current_code(seed: &str, algorithm: &str, digits: u8, period: u32) -> anyhow::Result<String> {
    let algorithm = match algorithm {
        "SHA1" => Algorithm::SHA1,
        "SHA256" => Algorithm::SHA256,
        "SHA512" => Algorithm::SHA512,
        other => bail!("unknown algorithm {other}"),
    };
    let secret = Secret::Encoded(seed.to_owned())
        .to_bytes()
        .map_err(|_| anyhow!("the secret seed is not base32"))?;
    let totp = TOTP::new_unchecked(algorithm, usize::from(digits), 0, u64::from(period), secret);
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    Ok(totp.generate(now))
}
