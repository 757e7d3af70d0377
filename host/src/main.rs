//! The `madx-pusher` command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use madx_pusher::check::{InputFlags, Inputs, Profile};
use madx_pusher::config::{Config, Overrides};
use madx_pusher::plugins::ComponentSource;
use madx_pusher::server::{ComponentRejected, Server};
use tracing_subscriber::EnvFilter;

/// Many small, short-lived allocations on the worker threads (requests,
/// frames, futures): mimalloc's thread-local pages serve them with less CPU
/// and less memory per socket than the C library's arenas
/// (docs/benchmarks.md, "mimalloc").
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "madx-pusher", version, about = "Real-time push service")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the push service.
    Serve(Box<ServeArgs>),
    /// Work with plugin components.
    #[command(subcommand)]
    Plugin(PluginCommand),
}

#[derive(Subcommand)]
enum PluginCommand {
    /// Check components against this host and the WIT contract, with inputs
    /// you set. One line per check; exit status 0 only when none fails.
    Check(Box<CheckArgs>),
}

#[derive(clap::Args)]
#[command(after_help = "\
Profiles: `contract` checks what wit/ promises, which any correct component \
passes whatever its policy (a token request your component accepts, one-time \
codes, revoke, ttl bounds, typed answers for odd names); `default-policy` checks \
the built-in components' own rules. The check file sets the token request, \
settings and what the router must allow or forbid; see docs/plugins.md, \
\"Checking a component\".")]
struct CheckArgs {
    /// An auth component (.wasm), or `built-in`.
    #[arg(long, value_name = "PATH")]
    auth: Option<PathBuf>,
    /// A router component (.wasm), or `built-in`.
    #[arg(long, value_name = "PATH")]
    router: Option<PathBuf>,
    /// Which checks to run (repeatable) [default: contract].
    #[arg(long = "profile", value_name = "PROFILE", value_enum)]
    profiles: Vec<Profile>,
    /// Keep compiled components in DIR (as `serve --compile-cache`), so
    /// checking an unchanged component again does not compile it.
    #[arg(long, env = "MADX_COMPILE_CACHE", value_name = "DIR")]
    compile_cache: Option<PathBuf>,
    #[command(flatten)]
    inputs: InputFlags,
}

#[derive(clap::Args)]
struct ServeArgs {
    /// TOML configuration file.
    #[arg(long, env = "MADX_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long, env = "MADX_LISTEN")]
    listen: Option<SocketAddr>,
    /// Public base URL that token responses build `ws_url` from.
    #[arg(long, env = "MADX_PUBLIC_URL")]
    public_url: Option<String>,
    /// Auth component (.wasm) replacing the built-in one.
    #[arg(long, env = "MADX_AUTH_COMPONENT")]
    auth_component: Option<PathBuf>,
    /// Router component (.wasm) replacing the built-in one.
    #[arg(long, env = "MADX_ROUTER_COMPONENT")]
    router_component: Option<PathBuf>,
    /// Directory where compiled components are kept, so a restart or a
    /// reload loads an unchanged component without compiling it (a new or
    /// empty directory, created owner-only; docs/plugins.md).
    #[arg(long, env = "MADX_COMPILE_CACHE", value_name = "DIR")]
    compile_cache: Option<PathBuf>,
    /// PEM certificate chain: serve https and wss.
    #[arg(long, env = "MADX_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, env = "MADX_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// An app as ID:KEY:SECRET (repeatable; MADX_APPS takes a comma list).
    #[arg(long = "app", env = "MADX_APPS", value_delimiter = ',')]
    apps: Vec<String>,
    /// Bearer token that opens GET /metrics (at least 16 characters).
    #[arg(long, env = "MADX_OPERATOR_TOKEN")]
    operator_token: Option<String>,
    /// Where tokens and history live: "memory" (this process, the default),
    /// "file:DIR" (this process, kept across restarts), a redis:// URL
    /// shared by every node, or a Redis Cluster's seed nodes as
    /// redis-cluster://host:port,host:port.
    #[arg(long, env = "MADX_STORE")]
    store: Option<String>,
    /// Prefix of every Redis key, so deployments can share one Redis
    /// (default "madx").
    #[arg(long, env = "MADX_STORE_PREFIX")]
    store_prefix: Option<String>,
    /// Log lines as JSON objects instead of text.
    #[arg(long, env = "MADX_LOG_JSON")]
    log_json: bool,
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Serve(args) => serve_command(*args),
        Command::Plugin(PluginCommand::Check(args)) => check_command(*args),
    }
}

fn check_command(args: CheckArgs) -> ExitCode {
    init_logging(false);
    if args.auth.is_none() && args.router.is_none() {
        eprintln!("madx-pusher plugin check: give --auth PATH and/or --router PATH");
        return ExitCode::from(2);
    }
    let inputs = match Inputs::resolve(args.inputs) {
        Ok(inputs) => inputs,
        Err(error) => {
            eprintln!("madx-pusher plugin check: {error:#}");
            return ExitCode::from(2);
        }
    };
    let profiles = if args.profiles.is_empty() {
        vec![Profile::Contract]
    } else {
        args.profiles
    };
    let source = |path: PathBuf| {
        if path.as_os_str() == "built-in" {
            ComponentSource::BuiltIn
        } else {
            ComponentSource::File(path)
        }
    };
    let (auth, router) = (args.auth.map(source), args.router.map(source));
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("madx-pusher: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let report = runtime.block_on(madx_pusher::check::run(
        auth.as_ref(),
        router.as_ref(),
        &profiles,
        &inputs,
        args.compile_cache.as_deref(),
    ));
    println!("{}", report.summary());
    if report.failed() == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn serve_command(args: ServeArgs) -> ExitCode {
    init_logging(args.log_json);

    let overrides = Overrides {
        config: args.config,
        listen: args.listen,
        public_url: args.public_url,
        auth_component: args.auth_component,
        router_component: args.router_component,
        compile_cache: args.compile_cache,
        tls_cert: args.tls_cert,
        tls_key: args.tls_key,
        apps: args.apps,
        operator_token: args.operator_token,
        store: args.store,
        store_prefix: args.store_prefix,
    };
    let config = match Config::load(overrides) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("madx-pusher: {error:#}");
            return ExitCode::from(2);
        }
    };

    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("madx-pusher: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("madx-pusher: {error:#}");
            if error.downcast_ref::<ComponentRejected>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let server = Server::bind(config).await?;
    print_banner(&server);
    server.serve(Box::pin(shutdown_signal())).await
}

/// The first line is what scripts and tests wait for.
fn print_banner(server: &Server) {
    let base = server.base_url();
    println!(
        "madx-pusher {} listening on {base}",
        env!("CARGO_PKG_VERSION")
    );
    let state = server.state();
    println!(
        "plugins: {}, {}",
        state.plugins().auth.name(),
        state.plugins().router.name()
    );
    if state.config.demo {
        let app = &state.config.apps[0];
        println!();
        println!("No app configured: serving the demo app.");
        println!(
            "  app id: {}  key: {}  secret: {}",
            app.id, app.key, app.secret
        );
        println!(
            "  These credentials are public. Configure your own apps before exposing this port."
        );
        println!();
        println!("Get a token:");
        if state.config.auth.source == ComponentSource::BuiltIn {
            // The built-in component's request format and code parameters.
            println!(
                "  curl -s -u {}:{} -d '{{\"user_id\":\"alice\",\"channels\":[\"news.*\"]}}' {base}/v1/tokens",
                app.key, app.secret
            );
            println!(
                "Then open the token's ws_url with &access_id=...&otp=<6-digit TOTP of secret_seed>."
            );
        } else {
            // A custom component decides what a request holds and which
            // codes it takes; the token announces them.
            println!(
                "  curl -s -u {}:{} -d '{{...}}' {base}/v1/tokens",
                app.key, app.secret
            );
            println!(
                "Then open the token's ws_url with &access_id=...&otp=<TOTP of secret_seed, as the token's otp parameters say>."
            );
        }
    }
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = interrupt => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(_) => {
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}

fn init_logging(json: bool) {
    let filter = EnvFilter::try_from_env("MADX_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Colour codes only for a person at a terminal, not in log files.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}
