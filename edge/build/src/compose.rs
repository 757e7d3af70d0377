//! The composition: which export of which part fills which import.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, anyhow};
use wac_graph::types::Package;
use wac_graph::{CompositionGraph, EncodeOptions, NodeId, PackageId};

/// The four `.wasm` files of the edge.
pub struct Parts {
    pub edge: PathBuf,
    pub plugin_host: PathBuf,
    pub auth: PathBuf,
    pub router: PathBuf,
}

/// What the plugin host serves: the plugins' imports and the edge's scope.
const TYPES: &str = "madx:pusher/types@0.1.0";
const STORE: &str = "madx:pusher/store@0.1.0";
const SETTINGS: &str = "madx:pusher/settings@0.1.0";
const SCOPE: &str = "madx:edge/scope@0.1.0";
/// What the plugins export.
const AUTH: &str = "madx:pusher/auth@0.1.0";
const ROUTER: &str = "madx:pusher/router@0.1.0";
/// What Spin calls.
const HTTP_HANDLER: &str = "wasi:http/incoming-handler@0.2.0";

fn register(graph: &mut CompositionGraph, name: &str, path: &Path) -> anyhow::Result<PackageId> {
    let package = Package::from_file(name, None, path, graph.types_mut())
        .with_context(|| format!("{} is not a WebAssembly component", path.display()))?;
    graph
        .register_package(package)
        .with_context(|| format!("cannot use {}", path.display()))
}

/// The names `package` imports.
fn imports(graph: &CompositionGraph, package: PackageId) -> Vec<String> {
    graph.types()[graph[package].ty()]
        .imports
        .keys()
        .cloned()
        .collect()
}

/// Export `name` of `instance`, with `what` in the error if it has none.
fn export_of(
    graph: &mut CompositionGraph,
    instance: NodeId,
    name: &str,
    what: &str,
) -> anyhow::Result<NodeId> {
    graph
        .alias_instance_export(instance, name)
        .map_err(|error| anyhow!("{what} does not export {name}: {error}"))
}

/// Fill every import of `instance` that `provided` names; the rest (WASI,
/// Spin's interfaces) stay imports of the composition, for Spin to fill.
fn plug(
    graph: &mut CompositionGraph,
    instance: NodeId,
    package: PackageId,
    provided: &[(&str, NodeId)],
    what: &str,
) -> anyhow::Result<()> {
    for import in imports(graph, package) {
        if let Some((_, node)) = provided.iter().find(|(name, _)| *name == import) {
            graph
                .set_instantiation_argument(instance, &import, *node)
                .map_err(|error| anyhow!("{what}: cannot fill its import {import}: {error}"))?;
        }
    }
    Ok(())
}

/// One component: the edge with its plugins, exporting Spin's HTTP handler.
pub fn compose(parts: &Parts) -> anyhow::Result<Vec<u8>> {
    let mut graph = CompositionGraph::new();
    let edge = register(&mut graph, "madx:edge-api", &parts.edge)?;
    let plugin_host = register(&mut graph, "madx:edge-plugin-host", &parts.plugin_host)?;
    let auth = register(&mut graph, "madx:auth-plugin", &parts.auth)?;
    let router = register(&mut graph, "madx:router-plugin", &parts.router)?;

    let host = graph.instantiate(plugin_host);
    let mut served = Vec::new();
    for name in [TYPES, STORE, SETTINGS, SCOPE] {
        served.push((name, export_of(&mut graph, host, name, "the plugin host")?));
    }

    let auth_what = format!("the auth plugin {}", parts.auth.display());
    let auth_instance = graph.instantiate(auth);
    plug(&mut graph, auth_instance, auth, &served, &auth_what)?;
    let auth_export = export_of(&mut graph, auth_instance, AUTH, &auth_what)?;

    let router_what = format!("the router plugin {}", parts.router.display());
    let router_instance = graph.instantiate(router);
    plug(&mut graph, router_instance, router, &served, &router_what)?;
    let router_export = export_of(&mut graph, router_instance, ROUTER, &router_what)?;

    let edge_instance = graph.instantiate(edge);
    served.push((AUTH, auth_export));
    served.push((ROUTER, router_export));
    plug(
        &mut graph,
        edge_instance,
        edge,
        &served,
        "the edge component",
    )?;
    let handler = export_of(
        &mut graph,
        edge_instance,
        HTTP_HANDLER,
        "the edge component",
    )?;
    graph
        .export(handler, HTTP_HANDLER)
        .map_err(|error| anyhow!("cannot export {HTTP_HANDLER}: {error}"))?;

    graph
        .encode(EncodeOptions::default())
        .map_err(|error| anyhow!("cannot encode the composition: {error:#}"))
}
