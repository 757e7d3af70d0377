//! Builds the default plugins (`components/auth`, `components/router`) and
//! leaves them in `OUT_DIR`, where `src/plugins/embedded.rs` embeds them into
//! the binary. A newcomer runs `cargo build` and gets a single
//! self-contained executable.
//!
//! The auth component is built for `wasm32-wasip2` (it reads the clock and
//! randomness through WASI). The router needs no WASI at all, so it is built
//! for `wasm32-unknown-unknown` and made a component here: without the WASI
//! world that `wasm32-wasip2` links into every component, each fresh
//! instance costs about a third less (docs/benchmarks.md).

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A default plugin: its package, its artifact's name and its target.
struct Plugin {
    package: &'static str,
    artifact: &'static str,
    target: &'static str,
}

/// A core module for this target is made a component by [`componentize`].
const CORE_TARGET: &str = "wasm32-unknown-unknown";

const PLUGINS: [Plugin; 2] = [
    Plugin {
        package: "madx-auth",
        artifact: "madx_auth",
        target: "wasm32-wasip2",
    },
    Plugin {
        package: "madx-router",
        artifact: "madx_router",
        target: CORE_TARGET,
    },
];
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
        for plugin in &PLUGINS {
            let file = prebuilt.join(format!("{}.wasm", plugin.artifact));
            println!("cargo:rerun-if-changed={}", file.display());
            copy(&file, &out_dir.join(format!("{}.wasm", plugin.artifact)));
        }
        return;
    }

    // The nested build needs a target directory of its own: the outer cargo
    // holds the lock on the main one for as long as this script runs.
    let target_root = env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("target"));
    let plugin_target = target_root.join("plugins");

    for plugin in &PLUGINS {
        build(&workspace, &plugin_target, plugin);
        let built = plugin_target
            .join(plugin.target)
            .join("plugin")
            .join(format!("{}.wasm", plugin.artifact));
        let embedded = out_dir.join(format!("{}.wasm", plugin.artifact));
        if plugin.target == CORE_TARGET {
            componentize(&built, &embedded);
        } else {
            copy(&built, &embedded);
        }
    }
}

/// Build one plugin for its target with the `plugin` profile.
fn build(workspace: &Path, plugin_target: &Path, plugin: &Plugin) {
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(workspace)
        .args(["build", "--target", plugin.target, "--profile", "plugin"])
        .args(["--package", plugin.package])
        .arg("--target-dir")
        .arg(plugin_target);
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
            "building {} for {} failed (see above). If the target is missing, \
             run `rustup toolchain install` in the repository root: it reads \
             rust-toolchain.toml and adds wasm32-wasip2 and wasm32-unknown-unknown.",
            plugin.package, plugin.target
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
