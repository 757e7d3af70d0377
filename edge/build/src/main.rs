//! `madx-edge-build`: the build command of the top-level `spin.toml`.
//!
//! Spin runs one component per route. The edge's is a composition, made
//! here at build time so that every Spin release, SpinKube and Fermyon
//! Cloud run it as an ordinary component (docs/edge.md says why):
//!
//! ```text
//!   madx-edge (HTTP API) --auth, router--> the deployment's plugins
//!        |                                      | store, settings, types
//!        +--------------scope-----------> madx-edge-plugin-host --> Spin Redis, variables
//! ```
//!
//! The plugins are the hosts' choice: `--config` reads the `[plugins]`
//! table of the hosts' configuration file, so one line there swaps a
//! plugin on the hosts and at the edge; `--auth` / `--router` override it.
//! Without either, the built-in components are built and used.

mod compose;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail, ensure};
use clap::Parser;
use serde::Deserialize;

#[derive(Debug, Parser)]
#[command(about = "Build the edge's Spin component with the deployment's plugins")]
struct Args {
    /// The hosts' configuration file: its `[plugins.auth] path` and
    /// `[plugins.router] path` choose the plugins (relative paths start in
    /// the current directory, as for the hosts).
    #[arg(long)]
    config: Option<PathBuf>,
    /// The auth plugin (`.wasm`), over the configuration file's.
    #[arg(long)]
    auth: Option<PathBuf>,
    /// The router plugin (`.wasm`), over the configuration file's.
    #[arg(long)]
    router: Option<PathBuf>,
    /// Where to write the composed component.
    #[arg(long, default_value = "target/edge/madx-edge.wasm")]
    out: PathBuf,
}

/// The part of the hosts' configuration file this tool reads.
#[derive(Debug, Default, Deserialize)]
struct HostConfig {
    #[serde(default)]
    plugins: Plugins,
}

#[derive(Debug, Default, Deserialize)]
struct Plugins {
    #[serde(default)]
    auth: Plugin,
    #[serde(default)]
    router: Plugin,
}

#[derive(Debug, Default, Deserialize)]
struct Plugin {
    path: Option<PathBuf>,
}

/// The workspace this tool belongs to: the parts are built from it.
fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `cargo build` the given packages for wasm32-wasip2 into `target/edge`.
/// Each call is its own build, so that one part's features never leak into
/// another's (the edge's must not pull in a plugin's exports).
fn build_components(packages: &[&str]) -> anyhow::Result<PathBuf> {
    let target_dir = workspace().join("target/edge");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(workspace())
        .args(["build", "--target", "wasm32-wasip2", "--profile", "plugin"])
        .arg("--target-dir")
        .arg(&target_dir);
    for package in packages {
        command.args(["--package", package]);
    }
    // The settings of the cargo that started this tool are for native code.
    for variable in [
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
    ] {
        command.env_remove(variable);
    }
    let status = command.status().context("cannot run cargo")?;
    ensure!(status.success(), "building {packages:?} failed ({status})");
    Ok(target_dir.join("wasm32-wasip2/plugin"))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let configured = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            toml::from_str::<HostConfig>(&text)
                .with_context(|| format!("invalid {}", path.display()))?
                .plugins
        }
        None => Plugins::default(),
    };
    let auth = args.auth.or(configured.auth.path);
    let router = args.router.or(configured.router.path);
    for (kind, path) in [("auth", &auth), ("router", &router)] {
        if let Some(path) = path
            && !path.is_file()
        {
            bail!("the {kind} plugin {} is not a file", path.display());
        }
    }

    let built = build_components(&["madx-edge", "madx-edge-plugin-host"])?;
    let defaults = match (&auth, &router) {
        (Some(_), Some(_)) => None,
        _ => Some(build_components(&["madx-auth", "madx-router"])?),
    };
    let default = |artifact: &str| {
        defaults
            .as_ref()
            .map(|dir| dir.join(artifact))
            .context("the built-in components were not built")
    };
    let parts = compose::Parts {
        edge: built.join("madx_edge.wasm"),
        plugin_host: built.join("madx_edge_plugin_host.wasm"),
        auth: match auth {
            Some(path) => path,
            None => default("madx_auth.wasm")?,
        },
        router: match router {
            Some(path) => path,
            None => default("madx_router.wasm")?,
        },
    };
    let bytes = compose::compose(&parts)?;
    if let Some(dir) = args.out.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    std::fs::write(&args.out, bytes)
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    eprintln!(
        "madx-edge-build: {} (auth {}, router {})",
        args.out.display(),
        parts.auth.display(),
        parts.router.display()
    );
    Ok(())
}
