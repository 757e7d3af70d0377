//! `madx-edge-harness`: serve a Spin manifest's component like `spin up`,
//! without the Spin CLI.
//!
//! ```sh
//! cargo run --release -p madx-edge-harness -- --listen 127.0.0.1:3000 \
//!     --variable apps=demo:demo-key:demo-secret \
//!     --variable public_url=http://127.0.0.1:8080
//! ```
//!
//! Variables also come from `SPIN_VARIABLE_<NAME>` environment variables,
//! as with `spin up`; `--variable` wins.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;
use madx_edge_harness::{EDGE_COMPONENT, Edge, EdgeApp, Manifest};

#[derive(Parser)]
#[command(
    version,
    about = "Serve a Spin component of madx-pusher without the Spin CLI"
)]
struct Args {
    /// The Spin manifest.
    #[arg(long, default_value = "spin.toml")]
    manifest: PathBuf,
    /// The component to serve.
    #[arg(long, default_value = EDGE_COMPONENT)]
    component: String,
    #[arg(long, default_value = "127.0.0.1:3000")]
    listen: SocketAddr,
    /// An application variable, `NAME=VALUE` (repeatable).
    #[arg(long = "variable", value_name = "NAME=VALUE")]
    variables: Vec<String>,
    /// Do not run the component's build command first.
    #[arg(long)]
    no_build: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let manifest = Manifest::load(&args.manifest)?;
    let mut variables: HashMap<String, String> = std::env::vars()
        .filter_map(|(name, value)| {
            let name = name.strip_prefix("SPIN_VARIABLE_")?.to_ascii_lowercase();
            Some((name, value))
        })
        .collect();
    for pair in &args.variables {
        let (name, value) = pair
            .split_once('=')
            .with_context(|| format!("--variable takes NAME=VALUE, got {pair:?}"))?;
        variables.insert(name.to_owned(), value.to_owned());
    }
    let app = if args.no_build {
        EdgeApp::compile(&manifest.source(&args.component)?)?
    } else {
        EdgeApp::build(&manifest, &args.component)?
    };
    let edge = Edge::start(&app, &manifest, &args.component, &variables, args.listen).await?;
    println!("serving {} on {}", args.component, edge.base());
    edge.wait().await;
    Ok(())
}
