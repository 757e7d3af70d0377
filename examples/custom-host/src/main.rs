//! A host of its own for madx-pusher's auth component, written with nothing
//! but the WIT (`wit/`) and wasmtime: it implements the `store` and
//! `settings` imports with a map, issues a token, and checks a connection
//! string twice (the second use must be refused).
//!
//! `cargo run -p madx-example-custom-host -- path/to/auth.wasm`

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, anyhow, bail};
use totp_rs::{Algorithm, Secret, TOTP};
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{Engine, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

wasmtime::component::bindgen!({
    path: "../../wit",
    world: "auth-plugin",
    imports: { default: async },
    exports: { default: async },
});

use exports::madx::pusher::auth::{AuthError, TokenRequest};
use madx::pusher::store::StoreError;

/// Everything a call can reach: WASI without capabilities, and a map with
/// expiry as the store.
struct Host {
    wasi: WasiCtx,
    table: ResourceTable,
    entries: HashMap<String, (Vec<u8>, Instant)>,
}

impl Host {
    fn live(&mut self, key: &str) -> Option<&mut (Vec<u8>, Instant)> {
        let now = Instant::now();
        self.entries.retain(|_, (_, expires)| *expires > now);
        self.entries.get_mut(key)
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
        Ok(self.live(&key).map(|(value, _)| value.clone()))
    }

    async fn set(&mut self, key: String, value: Vec<u8>, ttl_ms: u64) -> Result<(), StoreError> {
        let expires = Instant::now() + Duration::from_millis(ttl_ms);
        self.entries.insert(key, (value, expires));
        Ok(())
    }

    async fn set_if_absent(
        &mut self,
        key: String,
        value: Vec<u8>,
        ttl_ms: u64,
    ) -> Result<bool, StoreError> {
        if self.live(&key).is_some() {
            return Ok(false);
        }
        self.set(key, value, ttl_ms).await?;
        Ok(true)
    }

    async fn touch(&mut self, key: String, ttl_ms: u64) -> Result<bool, StoreError> {
        match self.live(&key) {
            Some((_, expires)) => {
                *expires = Instant::now() + Duration::from_millis(ttl_ms);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    async fn delete(&mut self, key: String) -> Result<bool, StoreError> {
        let existed = self.live(&key).is_some();
        self.entries.remove(&key);
        Ok(existed)
    }

    async fn increment(&mut self, key: String, delta: u64, ttl_ms: u64) -> Result<u64, StoreError> {
        let (current, expires) = match self.live(&key) {
            Some((value, expires)) => {
                let text = String::from_utf8_lossy(value);
                let current = text
                    .parse::<u64>()
                    .map_err(|_| StoreError::InvalidArgument("not a counter".into()))?;
                (current, *expires)
            }
            None => (0, Instant::now() + Duration::from_millis(ttl_ms)),
        };
        let next = current + delta;
        self.entries
            .insert(key, (next.to_string().into_bytes(), expires));
        Ok(next)
    }

    async fn decrement(&mut self, key: String, delta: u64) -> Result<u64, StoreError> {
        let Some((value, _)) = self.live(&key) else {
            return Ok(0);
        };
        let current = String::from_utf8_lossy(value)
            .parse::<u64>()
            .map_err(|_| StoreError::InvalidArgument("not a counter".into()))?;
        let next = current.saturating_sub(delta);
        if next == 0 {
            self.entries.remove(&key);
        } else {
            *value = next.to_string().into_bytes();
        }
        Ok(next)
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let path = std::env::args()
        .nth(1)
        .context("usage: custom-host path/to/auth.wasm")?;
    let engine = Engine::default();
    let component = Component::from_file(&engine, &path)
        .map_err(|error| anyhow!("{error:#}"))
        .with_context(|| format!("cannot load {path}"))?;
    let mut linker = Linker::new(&engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(|error| anyhow!("{error:#}"))?;
    AuthPlugin::add_to_linker::<_, HasSelf<_>>(&mut linker, |host| host)
        .map_err(|error| anyhow!("{error:#}"))?;
    let pre = AuthPluginPre::new(
        linker
            .instantiate_pre(&component)
            .map_err(|e| anyhow!("{e:#}"))?,
    )
    .map_err(|error| anyhow!("{error:#}"))?;

    // One store for this short session; the real host makes one per call.
    let mut store = Store::new(
        &engine,
        Host {
            wasi: WasiCtx::builder().build(),
            table: ResourceTable::new(),
            entries: HashMap::new(),
        },
    );
    let auth = pre
        .instantiate_async(&mut store)
        .await
        .map_err(|error| anyhow!("{error:#}"))?;
    let api = auth.madx_pusher_auth();

    let request = TokenRequest {
        user_id: Some("alice".into()),
        channels: vec!["news.*".into()],
        publish: vec![],
        ttl_secs: Some(600),
    };
    let token = api
        .call_issue(&mut store, &request)
        .await
        .map_err(|error| anyhow!("{error:#}"))?
        .map_err(|error| anyhow!("issue refused: {error:?}"))?;
    println!("issued {} ({:?})", token.access_id, token.otp);

    let code = current_code(
        &token.secret_seed,
        &token.otp.algorithm,
        token.otp.digits,
        token.otp.period_secs,
    )?;
    let claims = api
        .call_verify(&mut store, &token.access_id, &code)
        .await
        .map_err(|error| anyhow!("{error:#}"))?
        .map_err(|error| anyhow!("verify refused: {error:?}"))?;
    println!(
        "verified: user {:?}, channels {:?}",
        claims.user_id, claims.channels
    );

    match api
        .call_verify(&mut store, &token.access_id, &code)
        .await
        .map_err(|error| anyhow!("{error:#}"))?
    {
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
