//! Rust bindings of the WIT worlds in `wit/`, generated at compile time.
//!
//! The router world reuses the auth world's `store`, `settings` and `types`
//! bindings, so one set of host implementations serves both.

pub mod auth {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "auth-plugin",
        imports: { default: async },
        exports: { default: async },
    });
}

pub mod router {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "router-plugin",
        imports: { default: async },
        exports: { default: async },
        with: {
            "madx:pusher/store": super::auth::madx::pusher::store,
            "madx:pusher/settings": super::auth::madx::pusher::settings,
            "madx:pusher/types": super::auth::madx::pusher::types,
        },
    });
}

pub use auth::exports::madx::pusher::auth::{AuthError, IssuedToken, OtpParams, TokenRequest};
pub use auth::madx::pusher::types::Claims;
pub use router::exports::madx::pusher::router::{
    ClientPublication, RouteError, Target as RouteTarget,
};
