//! What a plugin call costs: the built-in auth `verify` (and `revoke`, about
//! the bare cost of an auth call) and router `authorize-subscribe` through
//! WebAssembly (fresh instance per call, as the host serves them) against
//! the same Rust logic called natively on the same store.
//!
//! `cargo bench -p madx-pusher --bench plugin_calls`
//! (`PLUGIN_CALLS=N` for another number of calls of each kind)
//!
//! `ROUTER_COMPONENT=path/to/router.wasm` adds a row for that router
//! component (for example one written in another language), measured in the
//! same run on the same claims.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use madx_auth_core::tokens::{self, Authority, Backend, StoreFailure};
use madx_auth_core::totp::OtpProfile;
use madx_pusher::metrics::Metrics;
use madx_pusher::plugins::bindings::{Claims, TokenRequest};
use madx_pusher::plugins::{
    AuthPlugin, ComponentSource, PluginConfig, RouterPlugin, Sandbox, SandboxLimits,
};
use madx_pusher::store::{MemoryStore, Room, StoreBackend};
use totp_rs::{Algorithm, Secret, TOTP};

/// Calls of each kind; `PLUGIN_CALLS=30000` makes a run long enough to
/// profile the calls rather than the start-up compile.
const DEFAULT_CALLS: usize = 5_000;

/// The host's memory store seen through the auth rules' `Backend`, so the
/// native run does the same store work as the component.
struct NativeBackend(Arc<MemoryStore>);

fn ms(ttl_ms: u64) -> Duration {
    Duration::from_millis(ttl_ms)
}

impl Backend for NativeBackend {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreFailure> {
        Ok(self.0.get(key))
    }
    fn set(&self, key: &str, value: &[u8], ttl_ms: u64) -> Result<(), StoreFailure> {
        self.0
            .set(key, value, ms(ttl_ms), Room::General)
            .map_err(|e| StoreFailure(e.to_string()))
    }
    fn set_if_absent(&self, key: &str, value: &[u8], ttl_ms: u64) -> Result<bool, StoreFailure> {
        self.0
            .set_if_absent(key, value, ms(ttl_ms), Room::General)
            .map_err(|e| StoreFailure(e.to_string()))
    }
    fn touch(&self, key: &str, ttl_ms: u64) -> Result<bool, StoreFailure> {
        Ok(self.0.touch(key, ms(ttl_ms)))
    }
    fn delete(&self, key: &str) -> Result<bool, StoreFailure> {
        Ok(self.0.delete(key))
    }
    fn increment(&self, key: &str, delta: u64, ttl_ms: u64) -> Result<u64, StoreFailure> {
        self.0
            .increment(key, delta, ms(ttl_ms), Room::General)
            .map_err(|e| StoreFailure(e.to_string()))
    }
    fn decrement(&self, key: &str, delta: u64) -> Result<u64, StoreFailure> {
        self.0
            .decrement(key, delta)
            .map_err(|e| StoreFailure(e.to_string()))
    }
    fn setting(&self, _name: &str) -> Option<String> {
        None
    }
    fn now_unix_secs(&self) -> u64 {
        unix_now()
    }
    fn random_bytes(&self, buf: &mut [u8]) {
        let _ = getrandom::fill(buf);
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or(0)
}

fn code(seed: &str) -> String {
    let secret = Secret::Encoded(seed.to_owned()).to_bytes().unwrap();
    TOTP::new_unchecked(Algorithm::SHA1, 6, 0, 30, secret).generate(unix_now())
}

fn per_call(total: Duration, calls: usize) -> f64 {
    total.as_secs_f64() * 1e6 / calls as f64
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let calls = std::env::var("PLUGIN_CALLS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(DEFAULT_CALLS);
    let sandbox = Sandbox::new(SandboxLimits::default(), None, Arc::new(Metrics::new())).unwrap();
    let memory = MemoryStore::start(10_000_000, 1_000_000);
    let store = StoreBackend::Memory(memory.clone());
    let built_in = PluginConfig {
        source: ComponentSource::BuiltIn,
        settings: Arc::new(BTreeMap::new()),
    };
    let auth = AuthPlugin::load(&sandbox, store.clone(), &built_in).unwrap();
    let router = RouterPlugin::load(&sandbox, store, &built_in).unwrap();

    // Tokens issued beforehand: each verify spends one fresh code.
    let mut wasm_tokens = Vec::with_capacity(calls);
    for _ in 0..calls {
        let request = TokenRequest {
            user_id: Some("bench".into()),
            channels: vec!["news.*".into()],
            publish: vec![],
            ttl_secs: None,
        };
        let token = auth.issue("bench", request).await.unwrap().unwrap();
        let code = code(&token.secret_seed);
        wasm_tokens.push((token.access_id, code));
    }
    let native = NativeBackend(memory.clone());
    let authority = Authority::new(&native, OtpProfile::RFC6238_DEFAULT);
    let native_tokens: Vec<(String, String)> = (0..calls)
        .map(|_| {
            let issued = authority.issue(tokens::Request::default()).unwrap();
            let code = code(&issued.secret_seed);
            (issued.access_id, code)
        })
        .collect();

    let started = Instant::now();
    for (access_id, code) in &wasm_tokens {
        auth.verify("bench", access_id, code)
            .await
            .unwrap()
            .unwrap();
    }
    let wasm_verify = per_call(started.elapsed(), calls);

    let started = Instant::now();
    for (access_id, code) in &native_tokens {
        authority.verify(access_id, code).unwrap();
    }
    let native_verify = per_call(started.elapsed(), calls);

    // About the bare cost of an auth call: one `delete` of a missing key.
    let started = Instant::now();
    for _ in 0..calls {
        let deleted = auth.revoke("bench", "nobody").await.unwrap().unwrap();
        assert!(!deleted);
    }
    let wasm_revoke = per_call(started.elapsed(), calls);

    let claims = Claims {
        access_id: "bench".into(),
        user_id: None,
        channels: vec!["orders.*".into(), "news.*".into()],
        publish: vec![],
        idle_timeout_secs: 7200,
    };
    let started = Instant::now();
    for _ in 0..calls {
        router
            .authorize_subscribe("bench", &claims, "news.sport")
            .await
            .unwrap()
            .unwrap();
    }
    let wasm_router = per_call(started.elapsed(), calls);

    let started = Instant::now();
    for _ in 0..calls {
        madx_router::rules::validate_channel(std::hint::black_box("news.sport")).unwrap();
        assert!(madx_router::rules::any_glob_matches(
            &claims.channels,
            std::hint::black_box("news.sport")
        ));
    }
    let native_router = per_call(started.elapsed(), calls);

    let other_router = match std::env::var_os("ROUTER_COMPONENT") {
        Some(path) => Some(measure_router(&sandbox, &memory, path.into(), &claims, calls).await),
        None => None,
    };

    println!("{calls} calls each, one thread, in-memory store:");
    println!("| call | through Wasm (fresh instance) | native | ratio |");
    println!("|---|---|---|---|");
    println!(
        "| auth verify (TOTP, one-time guard, touch) | {wasm_verify:.1} µs | {native_verify:.2} µs | {:.0}x |",
        wasm_verify / native_verify
    );
    println!("| auth revoke of an unknown id (one delete) | {wasm_revoke:.1} µs | | |");
    println!(
        "| router authorize-subscribe | {wasm_router:.1} µs | {native_router:.3} µs | {:.0}x |",
        wasm_router / native_router
    );
    if let Some((path, compile, per_call)) = other_router {
        println!(
            "| router authorize-subscribe, {} (compiled in {:.1} s) | {per_call:.1} µs | | {:.0}x the built-in router |",
            path.display(),
            compile.as_secs_f64(),
            per_call / wasm_router
        );
    }
}

/// Load a router component from `path` (the time it takes to compile) and
/// time its `authorize-subscribe` (per call, in µs).
async fn measure_router(
    sandbox: &Arc<Sandbox>,
    memory: &Arc<MemoryStore>,
    path: std::path::PathBuf,
    claims: &Claims,
    calls: usize,
) -> (std::path::PathBuf, Duration, f64) {
    let config = PluginConfig {
        source: ComponentSource::File(path.clone()),
        settings: Arc::new(BTreeMap::new()),
    };
    let started = Instant::now();
    let router = RouterPlugin::load(sandbox, StoreBackend::Memory(memory.clone()), &config)
        .expect("load the router component");
    let compile = started.elapsed();
    let started = Instant::now();
    for _ in 0..calls {
        router
            .authorize_subscribe("bench", claims, "news.sport")
            .await
            .unwrap()
            .unwrap();
    }
    (path, compile, per_call(started.elapsed(), calls))
}
