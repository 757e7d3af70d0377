//! Builds the default plugins (`components/auth`, `components/router`) and
//! leaves them in `OUT_DIR`, where `src/plugins/embedded.rs` embeds them into
//! the binary. A newcomer runs `cargo build` and gets a single
//! self-contained executable.
//!
//! Both are built for `wasm32-unknown-unknown` and made components here:
//! without the WASI world that `wasm32-wasip2` links into every component
//! (auth imports only WASI's wall clock and random), each fresh instance
//! costs about a third less (docs/benchmarks.md).

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The default plugins: package and artifact.
const PLUGINS: [(&str, &str); 2] = [("madx-auth", "madx_auth"), ("madx-router", "madx_router")];
/// Built as core modules, then made components by [`componentize`].
const TARGET: &str = "wasm32-unknown-unknown";
/// Shadow stack of the default components (see [`build`]).
const GUEST_STACK_BYTES: usize = 128 << 10;
/// A directory holding `madx_auth.wasm` and `madx_router.wasm` to embed
/// instead of building them.
const PREBUILT_VARIABLE: &str = "MADX_PREBUILT_PLUGINS";

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let workspace = manifest_dir
        .parent()
        .expect("host/ lives inside the workspace")
        .to_path_buf();
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("set by cargo"));

    for watched in ["wit", "components", "Cargo.lock"] {
        println!(
            "cargo:rerun-if-changed={}",
            workspace.join(watched).display()
        );
    }

    // Components built beforehand: for a host build by a toolchain that has
    // no wasm32 targets (the nightly one `scripts/fuzz` uses).
    println!("cargo:rerun-if-env-changed={PREBUILT_VARIABLE}");
    if let Some(prebuilt) = env::var_os(PREBUILT_VARIABLE) {
        let prebuilt = PathBuf::from(prebuilt);
        for (_, artifact) in PLUGINS {
            let file = prebuilt.join(format!("{artifact}.wasm"));
            println!("cargo:rerun-if-changed={}", file.display());
            copy(&file, &out_dir.join(format!("{artifact}.wasm")));
        }
        return;
    }

    // The nested build needs a target directory of its own: the outer cargo
    // holds the lock on the main one for as long as this script runs.
    let target_root = env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("target"));
    let plugin_target = target_root.join("plugins");

    build(&workspace, &plugin_target);
    let built = plugin_target.join(TARGET).join("plugin");
    for (_, artifact) in PLUGINS {
        componentize(
            &built.join(format!("{artifact}.wasm")),
            &out_dir.join(format!("{artifact}.wasm")),
        );
    }
}

/// Build the default plugins' core modules with the `plugin` profile.
fn build(workspace: &Path, plugin_target: &Path) {
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(workspace)
        .args(["build", "--target", TARGET, "--profile", "plugin"])
        .arg("--target-dir")
        .arg(plugin_target);
    for (package, _) in PLUGINS {
        command.args(["--package", package]);
    }
    // Settings meant for the host build must not leak into the guest build
    // (clippy's wrapper, host RUSTFLAGS, an explicit host target).
    for variable in [
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_BUILD_RUSTFLAGS",
    ] {
        command.env_remove(variable);
    }
    // A 128 KiB shadow stack instead of the linker's 1 MiB: the host
    // resets every page of an instance's memory between calls (a walk of
    // the page table over all of it, docs/benchmarks.md), and these
    // components' deepest call needs a few KiB. An overflow traps (the
    // stack sits below the data), it corrupts nothing.
    command.env(
        "CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUSTFLAGS",
        format!("-Clink-arg=-zstack-size={GUEST_STACK_BYTES}"),
    );

    let status = command.status().unwrap_or_else(|error| {
        panic!("could not run cargo to build the default plugins: {error}")
    });
    if !status.success() {
        panic!(
            "building the default plugins for {TARGET} failed (see above). If the \
             target is missing, run `rustup toolchain install` in the repository \
             root: it reads rust-toolchain.toml and adds it."
        );
    }
}

/// Make a component of a core module whose WIT world wit-bindgen embedded
/// in it (the `component-type` custom section), as `wasm-tools component
/// new` does.
fn componentize(module: &Path, component: &Path) {
    let bytes = std::fs::read(module)
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", module.display()));
    let encoded = wit_component::ComponentEncoder::default()
        .validate(true)
        .module(&bytes)
        .and_then(|encoder| encoder.encode())
        .unwrap_or_else(|error| {
            panic!("cannot make a component of {}: {error:?}", module.display())
        });
    std::fs::write(component, encoded)
        .unwrap_or_else(|error| panic!("cannot write {}: {error}", component.display()));
}

fn copy(from: &Path, to: &Path) {
    if let Err(error) = std::fs::copy(from, to) {
        panic!(
            "cannot copy {} to {}: {error}",
            from.display(),
            to.display()
        );
    }
}
