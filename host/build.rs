//! Builds the default plugins (`components/auth`, `components/router`) for
//! `wasm32-wasip2` and leaves them in `OUT_DIR`, where `src/plugins/embedded.rs`
//! embeds them into the binary. A newcomer runs `cargo build` and gets a
//! single self-contained executable.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

const PLUGINS: [(&str, &str); 2] = [("madx-auth", "madx_auth"), ("madx-router", "madx_router")];
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
    // no wasm32-wasip2 target (the nightly one `scripts/fuzz` uses).
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

    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(&workspace)
        .args(["build", "--target", "wasm32-wasip2", "--profile", "plugin"])
        .arg("--target-dir")
        .arg(&plugin_target);
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

    let status = command.status().unwrap_or_else(|error| {
        panic!("could not run cargo to build the default plugins: {error}")
    });
    if !status.success() {
        panic!(
            "building the default plugins for wasm32-wasip2 failed (see above). \
             If the target is missing, run `rustup toolchain install` in the \
             repository root: it reads rust-toolchain.toml and adds wasm32-wasip2."
        );
    }

    let built = plugin_target.join("wasm32-wasip2").join("plugin");
    for (_, artifact) in PLUGINS {
        copy(
            &built.join(format!("{artifact}.wasm")),
            &out_dir.join(format!("{artifact}.wasm")),
        );
    }
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
