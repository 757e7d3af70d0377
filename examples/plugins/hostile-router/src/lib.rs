//! A deliberately hostile router, for testing the sandbox. It misbehaves
//! when a channel (or, for app publishes, a target) is named:
//!
//! - `loop`: spins forever (the host's time budget must stop it);
//! - `alloc`: allocates without end (the memory cap must stop it);
//! - `trap`: panics, which traps the instance;
//! - `chatty`: writes 200 lines to stdout, then allows (the host must log
//!   them within its rate limit);
//! - `flood`: answers with more data than a call may hand the host (an
//!   8 MiB refusal message, or 200,000 targets): the host must refuse to
//!   copy it out rather than allocate it.
//!
//! Any other name is allowed, so the tests can show the host still serves.

/// The name that asks for an answer too big to take.
pub const FLOOD: &str = "flood";

/// What a name asks this router to do.
pub fn misbehave(name: &str) {
    match name {
        "loop" => {
            let mut spins: u64 = 0;
            loop {
                spins = std::hint::black_box(spins.wrapping_add(1));
            }
        }
        "alloc" => {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                hoard.push(vec![1u8; 1 << 20]);
                std::hint::black_box(&hoard);
            }
        }
        "trap" => panic!("hostile router: trap requested"),
        "chatty" => {
            for line in 0..200 {
                println!("hostile router: chatty line {line}");
            }
        }
        _ => {}
    }
}

#[cfg(target_arch = "wasm32")]
mod component {
    wit_bindgen::generate!({
        path: "../../../wit",
        world: "router-plugin",
    });

    use exports::madx::pusher::router::{ClientPublication, Guest, RouteError, Target};
    use madx::pusher::types::Claims;

    struct Hostile;

    impl Guest for Hostile {
        fn authorize_subscribe(_claims: Claims, channel: String) -> Result<(), RouteError> {
            super::misbehave(&channel);
            if channel == super::FLOOD {
                return Err(RouteError::Forbidden("x".repeat(8 << 20)));
            }
            Ok(())
        }

        fn authorize_publish(
            _claims: Claims,
            channel: String,
            event: String,
        ) -> Result<ClientPublication, RouteError> {
            super::misbehave(&channel);
            if channel == super::FLOOD {
                return Err(RouteError::Forbidden("x".repeat(8 << 20)));
            }
            Ok(ClientPublication { channel, event })
        }

        fn route_publish(target: Target, _event: String) -> Result<Vec<Target>, RouteError> {
            match &target {
                Target::Channel(name) | Target::User(name) | Target::Token(name) => {
                    super::misbehave(name);
                    if name == super::FLOOD {
                        return Ok(vec![target.clone(); 200_000]);
                    }
                }
            }
            Ok(vec![target])
        }
    }

    export!(Hostile);
}
