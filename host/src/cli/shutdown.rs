//! When `mctx-host serve` stops: Ctrl-C, SIGTERM, or a connection to
//! `--shutdown-addr`.
//!
//! `wasmtime serve --shutdown-addr` stops on any connection to a TCP
//! address. Here that address must be a loopback one, and it is one of the
//! host's own addresses, so no tenant reaches it (`run::outbound`). Two
//! more callers could still stop the host that way, and each has its own
//! answer:
//!
//! - **A web page in the operator's browser** can open a connection to
//!   `127.0.0.1:PORT`, but only to send an HTTP request. A connection that
//!   sends anything is therefore not a shutdown request: it gets a 403
//!   saying why, and the host logs it and keeps running. A caller that
//!   connects and closes (or connects and waits, as `wasmtime serve`'s
//!   users do) stops the host.
//! - **Another user of this machine** can connect to any loopback port.
//!   `--shutdown-addr unix:PATH` listens on a Unix socket instead, made
//!   readable and writable by the host's own user only (0600), so only that
//!   user (and root) can ask.

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream, UnixListener};
use tokio::task::JoinSet;
use tracing::Instrument as _;

/// How long a shutdown connection may stay silent before silence counts as
/// the request: a browser sends its request at once.
const SILENCE: Duration = Duration::from_secs(1);

/// Where `--shutdown-addr` listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ShutdownAddr {
    /// `127.0.0.1:PORT` or `[::1]:PORT`, as `wasmtime serve` has it.
    Tcp(SocketAddr),
    /// `unix:PATH`: a socket only the host's user can connect to.
    Unix(PathBuf),
}

impl ShutdownAddr {
    /// Parses `--shutdown-addr`: `unix:PATH`, else a loopback `IP:PORT`.
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        if let Some(path) = text.strip_prefix("unix:") {
            if path.is_empty() {
                return Err("unix: needs a path, e.g. unix:/run/mctx-host/shutdown.sock".into());
            }
            return Ok(ShutdownAddr::Unix(PathBuf::from(path)));
        }
        let address: SocketAddr = text.parse().map_err(|_| {
            format!("{text:?} is neither IP:PORT nor unix:PATH (e.g. 127.0.0.1:8081)")
        })?;
        if !address.ip().to_canonical().is_loopback() {
            return Err(format!(
                "{address}: a connection there stops the host, so it must be a loopback address \
                 (127.0.0.1 or [::1]), reachable from this machine only; or unix:PATH, reachable \
                 by this user only"
            ));
        }
        Ok(ShutdownAddr::Tcp(address))
    }
}

/// A bound `--shutdown-addr` listener.
enum Listener {
    Tcp(TcpListener),
    Unix {
        listener: UnixListener,
        /// Removes the socket file when the host stops.
        _file: SocketFile,
    },
}

/// Removes the Unix socket file it names when dropped.
struct SocketFile(PathBuf);

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A future that resolves on Ctrl-C, SIGTERM, or a shutdown request at
/// `address` (module docs), and the TCP address that listener is bound to,
/// which the caller records as the host's own.
pub(crate) async fn signal(
    address: Option<&ShutdownAddr>,
) -> Result<(impl Future<Output = ()> + use<>, Option<SocketAddr>)> {
    let listener = match address {
        None => None,
        Some(ShutdownAddr::Tcp(address)) => Some(Listener::Tcp(
            TcpListener::bind(address)
                .await
                .with_context(|| format!("--shutdown-addr: cannot listen on {address}"))?,
        )),
        Some(ShutdownAddr::Unix(path)) => Some(bind_unix(path)?),
    };
    let bound = match &listener {
        Some(Listener::Tcp(listener)) => listener.local_addr().ok(),
        _ => None,
    };
    let stop = async move {
        let asked = async {
            match listener {
                Some(listener) => asked_at(listener).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = signals() => {}
            () = asked => tracing::info!("a connection to --shutdown-addr asked to shut down"),
        }
    };
    Ok((stop, bound))
}

/// Binds the Unix socket at `path`, owner-only. A socket left by a host
/// that did not stop cleanly is replaced; any other file there is not.
fn bind_unix(path: &std::path::Path) -> Result<Listener> {
    use std::os::unix::fs::{FileTypeExt as _, PermissionsExt as _};
    match std::fs::symlink_metadata(path) {
        Ok(found) if found.file_type().is_socket() => std::fs::remove_file(path)
            .with_context(|| format!("--shutdown-addr: cannot replace {}", path.display()))?,
        Ok(_) => bail!(
            "--shutdown-addr: {} exists and is not a socket; refusing to replace it",
            path.display()
        ),
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => {
            return Err(e).with_context(|| format!("--shutdown-addr: {}", path.display()));
        }
    }
    // Owner-only from the first moment: the socket is created under a
    // umask that leaves nobody else a bit (anything created meanwhile by
    // another thread only comes out more private), then its mode is set.
    let listener = {
        let _umask = Umask::set(0o077);
        UnixListener::bind(path)
            .with_context(|| format!("--shutdown-addr: cannot listen on {}", path.display()))?
    };
    let file = SocketFile(path.to_path_buf());
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("--shutdown-addr: cannot make {} 0600", path.display()))?;
    Ok(Listener::Unix {
        listener,
        _file: file,
    })
}

/// The process umask, set for as long as this lives.
struct Umask(libc::mode_t);

impl Umask {
    fn set(mask: libc::mode_t) -> Self {
        // SAFETY: umask only swaps the process's mask; it cannot fail.
        Umask(unsafe { libc::umask(mask) })
    }
}

impl Drop for Umask {
    fn drop(&mut self) {
        // SAFETY: as in `set`.
        unsafe { libc::umask(self.0) };
    }
}

impl Listener {
    /// The next caller: a TCP one to judge, or `None` for a Unix one, whose
    /// connection is the request by itself.
    async fn accept(&self) -> std::io::Result<Option<(TcpStream, SocketAddr)>> {
        match self {
            Listener::Tcp(listener) => listener.accept().await.map(Some),
            Listener::Unix { listener, .. } => listener.accept().await.map(|_| None),
        }
    }
}

/// Resolves once a connection to `listener` asks to shut down: on a Unix
/// socket, any connection; on TCP, one that sends nothing (module docs).
/// Each TCP caller is judged on a task of its own, so one that stays
/// silent does not hold up the next.
async fn asked_at(listener: Listener) {
    let mut judged = JoinSet::new();
    loop {
        tokio::select! {
            Some(Ok(true)) = judged.join_next() => return,
            accepted = listener.accept() => match accepted {
                Ok(None) => return,
                Ok(Some((stream, peer))) => {
                    let span = tracing::info_span!("shutdown caller", %peer);
                    judged.spawn(is_shutdown_request(stream).instrument(span));
                }
                Err(e) => {
                    tracing::warn!("--shutdown-addr: accepting a connection failed: {e}");
                    // Out of descriptors, say: wait before trying again
                    // rather than spin.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
}

/// Whether a TCP caller asked to shut down; one that sent data is told why
/// not (and it is logged).
async fn is_shutdown_request(stream: TcpStream) -> bool {
    let Some(stream) = sends_something(stream).await else {
        return true;
    };
    refuse(stream).await;
    tracing::warn!(
        "a connection to --shutdown-addr sent data (a web page's request?): not a shutdown \
         request, ignored"
    );
    false
}

/// The TCP caller's stream if it sent a byte within [`SILENCE`]; `None`
/// if it closed, went away or stayed silent: a shutdown request.
async fn sends_something(mut stream: TcpStream) -> Option<TcpStream> {
    let mut byte = [0u8; 1];
    match tokio::time::timeout(SILENCE, stream.read(&mut byte)).await {
        Ok(Ok(n)) if n > 0 => Some(stream), // a browser, a scanner
        _ => None, // silent, closed or reset: what `wasmtime serve` callers do
    }
}

/// Tells a caller that sent data why nothing happened, in HTTP since that
/// is most likely what it spoke; bounded, so a caller that does not read
/// cannot hold the task.
async fn refuse(mut stream: TcpStream) {
    const WHY: &str = "a shutdown request is a connection that sends nothing; this one sent \
                       data, so the host keeps running\n";
    let answer = format!(
        "HTTP/1.1 403 Forbidden\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\
         connection: close\r\n\r\n{WHY}",
        WHY.len()
    );
    let answered = async {
        stream.write_all(answer.as_bytes()).await?;
        stream.shutdown().await?;
        // Read what it sent until it closes: closing a socket with unread
        // bytes resets it, and the caller would lose the answer.
        let mut sink = [0u8; 1024];
        while stream.read(&mut sink).await? > 0 {}
        std::io::Result::Ok(())
    };
    let _ = tokio::time::timeout(SILENCE, answered).await;
}

/// Resolves on Ctrl-C or SIGTERM.
async fn signals() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler");
    tokio::select! {
        _ = ctrl_c => {}
        _ = term.recv() => {}
    }
}
