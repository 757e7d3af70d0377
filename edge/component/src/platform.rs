//! What the edge needs from Spin: variables and Redis commands.
//!
//! The request handling is written against [`Platform`], so it reads the
//! same in the component (Spin's imports, in `spin.rs`) and in unit tests.

/// One value of a Redis reply, as Spin's `execute` hands it over: nested
/// arrays arrive flattened, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Nil,
    Status(String),
    Int(i64),
    Bytes(Vec<u8>),
}

/// Spin's host interfaces, as far as the edge uses them.
pub trait Platform {
    /// A component variable; `None` when the manifest does not define it.
    fn variable(&self, name: &str) -> Result<Option<String>, String>;

    /// Run one Redis command against the Redis at `address`.
    fn redis(&self, address: &str, command: &str, args: &[&[u8]]) -> Result<Vec<Reply>, String>;
}
