//! Components of this workspace, built for `wasm32-wasip2` the way the
//! host's build script builds the default ones.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The workspace root.
pub fn workspace() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("test-support lives one level below the workspace")
}

/// Build `packages` (workspace members) for `wasm32-wasip2` with the
/// `plugin` profile into `target_dir` (relative to the workspace), and
/// return their `.wasm` files in order. A test's own build settings are
/// not passed on: they are for native code.
pub fn build_component_set(packages: &[&str], target_dir: &Path) -> Vec<PathBuf> {
    let target_dir = workspace().join(target_dir);
    let mut command = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    command
        .current_dir(workspace())
        .args([
            "build",
            "--quiet",
            "--target",
            "wasm32-wasip2",
            "--profile",
            "plugin",
        ])
        .arg("--target-dir")
        .arg(&target_dir);
    for package in packages {
        command.args(["--package", package]);
    }
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
    let status = command.status().expect("run cargo");
    assert!(status.success(), "building {packages:?} failed");
    packages
        .iter()
        .map(|package| {
            target_dir
                .join("wasm32-wasip2/plugin")
                .join(format!("{}.wasm", package.replace('-', "_")))
        })
        .collect()
}

/// One component, in the directory the host's build script uses
/// (`<target>/plugins`), so a test rebuilds nothing the host build made.
pub fn build_component(package: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target"))
        .join("plugins");
    build_component_set(&[package], &target)
        .pop()
        .expect("one component")
}
