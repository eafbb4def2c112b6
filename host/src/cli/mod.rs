//! The command line: `serve` (`serve.rs`; `wasmtime serve`'s own flags in
//! `wasmtime.rs`), `token`, and the clients of a running host: `tail`
//! (`tail.rs`), `deploy` and `servers` (`deploy.rs`, over `client.rs`).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};

use crate::base::auth::Sessions;
use crate::base::config::Config;

mod client;
mod deploy;
mod serve;
mod shutdown;
mod tail;
mod wasmtime;
mod watch;

/// A multi-tenant host for wasi:http WebAssembly components, with live logs.
#[derive(Parser, Debug)]
#[command(name = "mctx-host", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve one component (like `wasmtime serve`) or many tenants from a config file.
    ///
    /// Single-component mode: `mctx-host serve app.wasm` sends every request to
    /// the component; the host's own endpoints live under `/.mctx/`.
    ///
    /// Multi-tenant mode: `mctx-host serve --config tenants.toml` routes
    /// `{slug}.{base_domain}` (or `/t/{slug}/` on the base domain) to tenant
    /// `slug`; `/v1/...` picks a version.
    Serve(Box<serve::ServeArgs>),
    /// Mint a session token for a user (to watch their servers' logs).
    ///
    /// The secret comes from MCTX_SESSION_SECRET, else from the config
    /// file's `[auth] session_secret`. Use the token as the `session` cookie
    /// or as `Authorization: Bearer <token>`.
    Token(TokenArgs),
    /// Follow a server's live logs in this terminal (and, with --since, its
    /// kept ones first).
    ///
    /// Connects to `/log-stream/{slug}` with a bearer token, prints entries
    /// as they arrive and reconnects (1 s, 2 s, 4 s … 16 s) when the
    /// connection drops. Exits non-zero on 401/403/404/429. With --since, a
    /// server whose logs are not kept is said on stderr (the host's 409) and
    /// tail goes on live.
    Tail(tail::TailArgs),
    /// Deploy a component as a new version of a server, live at once.
    ///
    /// Uploads to `PUT /api/servers/{slug}/versions/{version}` with a bearer
    /// token of the server's owner or an admin. The host compiles and
    /// checks it as at start (a broken component is refused with the
    /// reason) and requests that arrive after the upload returns run it;
    /// requests in flight finish on the version they started on.
    Deploy(deploy::DeployArgs),
    /// List the servers you own (admins: every server) with their versions.
    Servers(deploy::ServersArgs),
}

#[derive(Args, Debug)]
struct TokenArgs {
    /// The user id (a tenant's `owner`).
    #[arg(long)]
    user: String,
    /// How long the token is valid: 90s, 15m, 1h, 7d.
    #[arg(long, default_value = "1h", value_parser = crate::base::auth::parse_ttl)]
    ttl: Duration,
    /// A tenants file whose `[auth] session_secret` to use.
    #[arg(long, short)]
    config: Option<PathBuf>,
}

impl TokenArgs {
    fn run(self) -> Result<()> {
        let configured = match &self.config {
            Some(path) => Config::load(path)?.auth.session_secret,
            None => None,
        };
        let Some(secret) = session_secret_from_env().or(configured) else {
            anyhow::bail!(
                "no session secret: set MCTX_SESSION_SECRET or pass --config with an [auth] session_secret"
            );
        };
        let sessions = Sessions::new(secret.as_bytes())?;
        println!("{}", sessions.mint(&self.user, self.ttl));
        Ok(())
    }
}

fn session_secret_from_env() -> Option<String> {
    std::env::var("MCTX_SESSION_SECRET")
        .ok()
        .filter(|s| !s.is_empty())
}

impl Cli {
    pub fn run(self) -> Result<()> {
        init_tracing();
        match self.command {
            Command::Serve(args) => {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .enable_all()
                    .build()?;
                runtime.block_on(args.run())
            }
            Command::Token(args) => args.run(),
            Command::Tail(args) => client_runtime()?.block_on(args.run()),
            Command::Deploy(args) => client_runtime()?.block_on(args.run()),
            Command::Servers(args) => client_runtime()?.block_on(args.run()),
        }
    }
}

/// A client command's runtime: one thread is plenty.
fn client_runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        // rustls warns about what clients send (an IP address as SNI, as
        // wrk does): the client's business, not the operator's.
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("mctx_host=info,warn,rustls=error"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}
