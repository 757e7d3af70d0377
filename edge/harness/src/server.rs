//! Spin's HTTP trigger, as far as the edge needs it: requests whose path
//! matches one of the component's routes go to a fresh instance of the
//! component (`wasi:http/incoming-handler`), everything else is a bare 404,
//! as Spin answers unmatched routes.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::BodyExt as _;
use http_body_util::combinators::UnsyncBoxBody;
use hyper::server::conn::http1;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Config, Engine, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

use crate::manifest::{Manifest, Resolved, route_matches};
use crate::spin::{self, SpinState};

/// A compiled component, ready to serve with any variables.
#[derive(Clone)]
pub struct EdgeApp {
    engine: Engine,
    component: Component,
}

impl EdgeApp {
    /// Compile the `.wasm` at `path`.
    pub fn compile(path: &Path) -> anyhow::Result<EdgeApp> {
        let engine = Engine::new(&Config::new())?;
        let component = Component::from_file(&engine, path)
            .map_err(|error| anyhow::anyhow!("cannot load {}: {error:?}", path.display()))?;
        Ok(EdgeApp { engine, component })
    }

    /// Compile the file `component`'s `source` names in `manifest`, after
    /// running its build command.
    pub fn build(manifest: &Manifest, component: &str) -> anyhow::Result<EdgeApp> {
        manifest.build(component)?;
        EdgeApp::compile(&manifest.source(component)?)
    }
}

/// The state of one instance: WASI, WASI HTTP and Spin's interfaces.
struct InstanceState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    hooks: NoOutboundHttp,
    table: ResourceTable,
    spin: SpinState,
}

impl WasiView for InstanceState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for InstanceState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

/// The edge makes no outbound HTTP requests; any attempt is denied, as
/// Spin denies hosts missing from `allowed_outbound_hosts`.
struct NoOutboundHttp;

impl WasiHttpHooks for NoOutboundHttp {
    fn send_request(
        &mut self,
        _request: http::Request<wasmtime_wasi_http::WasiBody>,
        _options: Option<wasmtime_wasi_http::RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
    ) -> Box<
        dyn Future<
                Output = wasmtime_wasi_http::Result<(
                    http::Response<wasmtime_wasi_http::WasiBody>,
                    Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
                )>,
            > + Send,
    > {
        Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) })
    }
}

type ResponseBody = UnsyncBoxBody<Bytes, anyhow::Error>;

/// What serves each request.
struct Trigger {
    pre: ProxyPre<InstanceState>,
    component: Arc<Resolved>,
}

/// [`Edge::start`]'s future.
pub type Starting<'a> = Pin<Box<dyn Future<Output = anyhow::Result<Edge>> + Send + 'a>>;

/// The component served over HTTP on a loopback port; stops when dropped.
pub struct Edge {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Edge {
    /// Serve `component` of `manifest` (compiled in `app`) on `listen`, with
    /// the application variables `variables`.
    ///
    /// Boxed here: an `async fn`'s state machine is compiled, like generic
    /// code, in every crate that polls it, and this one holds the HTTP
    /// trigger and wasmtime's WASI bindings. Boxed, the binary and the
    /// tests link this crate's copy (their rebuilds: 32 -> 4 s, 39 -> 14 s).
    pub fn start<'a>(
        app: &'a EdgeApp,
        manifest: &'a Manifest,
        component: &'a str,
        variables: &'a HashMap<String, String>,
        listen: SocketAddr,
    ) -> Starting<'a> {
        Box::pin(Edge::launch(app, manifest, component, variables, listen))
    }

    async fn launch(
        app: &EdgeApp,
        manifest: &Manifest,
        component: &str,
        variables: &HashMap<String, String>,
        listen: SocketAddr,
    ) -> anyhow::Result<Edge> {
        let resolved = Arc::new(manifest.resolve(component, variables)?);
        let mut linker: Linker<InstanceState> = Linker::new(&app.engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
        spin::add_to_linker(&mut linker, |state| &mut state.spin)?;
        let pre = linker
            .instantiate_pre(&app.component)
            .map_err(|error| anyhow::anyhow!("{error:?}"))
            .context("the component imports something Spin's HTTP trigger does not give it")?;
        let trigger = Arc::new(Trigger {
            pre: ProxyPre::new(pre).map_err(|error| anyhow::anyhow!("{error:?}"))?,
            component: resolved,
        });
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(accept(listener, trigger));
        Ok(Edge { addr, task })
    }

    /// `http://127.0.0.1:PORT`
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serve until the task ends (the binary's `main`).
    pub async fn wait(mut self) {
        let _ = (&mut self.task).await;
    }
}

impl Drop for Edge {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept(listener: TcpListener, trigger: Arc<Trigger>) {
    loop {
        let (stream, client) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors, say: wait instead of spinning.
                eprintln!("madx-edge-harness: accept failed: {error}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let trigger = trigger.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let trigger = trigger.clone();
                async move { trigger.handle(request, client).await }
            });
            if let Err(error) = http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                eprintln!("madx-edge-harness: connection from {client}: {error}");
            }
        });
    }
}

impl Trigger {
    async fn handle(
        &self,
        mut request: hyper::Request<hyper::body::Incoming>,
        client: SocketAddr,
    ) -> anyhow::Result<hyper::Response<ResponseBody>> {
        let path = request.uri().path().to_owned();
        let Some(route) = self
            .component
            .routes
            .iter()
            .find(|route| route_matches(route, &path))
            .cloned()
        else {
            return Ok(plain(404, ""));
        };
        add_spin_headers(&mut request, &route, &path, client);
        match self.call(request).await {
            Ok(response) => Ok(response),
            Err(error) => {
                // Spin answers a failed instance with a bare 500.
                eprintln!(
                    "madx-edge-harness: {} failed: {error:?}",
                    self.component.name
                );
                Ok(plain(500, ""))
            }
        }
    }

    /// A fresh instance for one request, as Spin runs one.
    async fn call(
        &self,
        request: hyper::Request<hyper::body::Incoming>,
    ) -> anyhow::Result<hyper::Response<ResponseBody>> {
        let state = InstanceState {
            wasi: WasiCtx::builder().inherit_stdout().inherit_stderr().build(),
            http: WasiHttpCtx::new(),
            hooks: NoOutboundHttp,
            table: ResourceTable::new(),
            spin: SpinState {
                component: self.component.clone(),
                table: ResourceTable::new(),
            },
        };
        let mut store = Store::new(self.pre.engine(), state);
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let request = store
            .data_mut()
            .http()
            .new_incoming_request(Scheme::Http, request)?;
        let out = store.data_mut().http().new_response_outparam(sender)?;
        let pre = self.pre.clone();
        let task = tokio::spawn(async move {
            let proxy = pre.instantiate_async(&mut store).await?;
            proxy
                .wasi_http_incoming_handler()
                .call_handle(&mut store, request, out)
                .await
        });
        match receiver.await {
            Ok(Ok(response)) => {
                Ok(response.map(|body| body.map_err(anyhow::Error::from).boxed_unsync()))
            }
            Ok(Err(code)) => Err(anyhow::anyhow!(
                "the component answered with an error: {code:?}"
            )),
            Err(_) => {
                let outcome = task.await?;
                Err(match outcome {
                    Ok(()) => anyhow::anyhow!("the component never set a response"),
                    Err(error) => anyhow::anyhow!("{error:?}"),
                })
            }
        }
    }
}

/// The request headers Spin adds for a component.
fn add_spin_headers(
    request: &mut hyper::Request<hyper::body::Incoming>,
    route: &str,
    path: &str,
    client: SocketAddr,
) {
    let raw_route = route.to_owned();
    let component_route = route.strip_suffix("/...").unwrap_or(route).to_owned();
    let path_info = path
        .strip_prefix(&component_route)
        .unwrap_or_default()
        .to_owned();
    let full_url = format!(
        "http://{}{}",
        request
            .headers()
            .get(hyper::header::HOST)
            .and_then(|host| host.to_str().ok())
            .unwrap_or("localhost"),
        request
            .uri()
            .path_and_query()
            .map_or(path, |path| path.as_str())
    );
    for (name, value) in [
        ("spin-full-url", full_url),
        ("spin-path-info", path_info),
        ("spin-matched-route", raw_route.clone()),
        ("spin-raw-component-route", raw_route),
        ("spin-component-route", component_route),
        ("spin-base-path", "/".to_owned()),
        ("spin-client-addr", client.to_string()),
    ] {
        if let Ok(value) = hyper::header::HeaderValue::from_str(&value) {
            request.headers_mut().insert(name, value);
        }
    }
}

fn plain(status: u16, body: &'static str) -> hyper::Response<ResponseBody> {
    let mut response = hyper::Response::new(
        http_body_util::Full::new(Bytes::from_static(body.as_bytes()))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *response.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or_default();
    response
}
