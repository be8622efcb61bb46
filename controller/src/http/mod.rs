//! The HTTPS endpoint (TCP, default 7444) for boxes that are not hosts yet:
//! `install.sh` and `uninstall.sh`, the agent binaries per architecture with
//! their SHA-256, and a read-only check of a join token. It is served with
//! the controller's own server certificate, so the `--pinnedpubkey` of a join
//! command makes curl talk to this controller only. Nothing here needs a
//! client certificate and nothing here changes state: joining itself happens
//! on the QUIC endpoint.

mod agents;
mod pin;
mod routes;
mod scripts;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use metrom_protocol::messages::api::InstallerInfo;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};

pub use agents::{AgentBinaries, LookupError, parse_checksum};
pub use pin::{PinError, pin_of_spki, spki_pin};
pub use scripts::{Fill, INSTALL_SH, UNINSTALL_SH, fill, sh_quote};

use crate::state::Controller;

/// Default TCP port of the HTTPS endpoint.
pub const DEFAULT_HTTPS_PORT: u16 = 7444;
/// A peer has this long to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// ... and this long to send a request's headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once; more wait in the kernel's backlog.
const MAX_CONNECTIONS: usize = 256;
/// How long requests in flight may finish at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Why the HTTPS endpoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("cannot listen on TCP {addr} (https_listen); free the port or set another")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS configuration of the HTTPS endpoint")]
    Tls(#[from] rustls::Error),
    #[error(transparent)]
    Pin(#[from] PinError),
    #[error("agent_binaries_dir {0} is not a directory")]
    AgentDir(PathBuf),
}

/// What the request handlers share.
pub(crate) struct Site {
    pub pin: String,
    /// `https://HOST:PORT` to write into scripts when a request names no Host.
    pub url: String,
    pub agents: AgentBinaries,
}

/// A bound, not yet serving, HTTPS endpoint.
pub struct Endpoint {
    listener: TcpListener,
    tls: TlsAcceptor,
    site: Arc<Site>,
}

impl Endpoint {
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

/// Binds the HTTPS endpoint on `https_listen` and records the bound address
/// in the controller (a port 0 in the configuration becomes a real one).
pub async fn bind(ctrl: &Controller) -> Result<Endpoint, HttpError> {
    if let Some(dir) = &ctrl.config.agent_binaries_dir
        && !dir.is_dir()
    {
        return Err(HttpError::AgentDir(dir.clone()));
    }
    let mut tls = rustls::ServerConfig::builder_with_provider(metrom_protocol::tls::provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(ctrl.pki.server_chain(), ctrl.pki.server_key())?;
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let addr = ctrl.config.https_listen;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| HttpError::Bind { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| HttpError::Bind { addr, source })?;
    let _ = ctrl.https_addr.set(bound);
    let site = Site {
        pin: spki_pin(&ctrl.pki.server_cert_der())?,
        url: https_url(ctrl),
        agents: AgentBinaries::for_this_controller(ctrl.config.agent_binaries_dir.clone()),
    };
    let served = site.agents.served();
    if served.is_empty() {
        warn!(
            "the HTTPS endpoint has no agent binary to serve: put metrom-agent beside metrom-controller, \
             or metrom-agent-<arch> files into agent_binaries_dir"
        );
    }
    info!(
        listen = %bound,
        url = %site.url,
        agents = %served.join(","),
        "HTTPS endpoint for the installer"
    );
    Ok(Endpoint {
        listener,
        tls: TlsAcceptor::from(Arc::new(tls)),
        site: Arc::new(site),
    })
}

/// Serves until `shutdown` completes, then lets requests in flight finish
/// (for up to a few seconds).
pub async fn run(ctrl: Arc<Controller>, endpoint: Endpoint, shutdown: impl Future<Output = ()>) {
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    tokio::pin!(shutdown);
    loop {
        let (tcp, remote) = tokio::select! {
            accepted = endpoint.listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off a little.
                    warn!("https: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            debug!(%remote, "https: too many connections, closing this one");
            continue;
        };
        let (tls, site, ctrl) = (endpoint.tls.clone(), endpoint.site.clone(), ctrl.clone());
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let _slot = slot;
            let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    debug!(%remote, "https: TLS handshake failed: {e}");
                    return;
                }
                Err(_) => {
                    debug!(%remote, "https: TLS handshake timed out");
                    return;
                }
            };
            let service = service_fn(move |req| {
                let (site, ctrl) = (site.clone(), ctrl.clone());
                async move { Ok::<_, Infallible>(routes::handle(&site, &ctrl, req, remote).await) }
            });
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = watcher.watch(conn).await {
                debug!(%remote, "https: connection ended: {e}");
            }
        });
    }
    drop(endpoint.listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        info!("https: requests still running at shutdown were cut off");
    }
    debug!("https endpoint stopped");
}

/// The HTTPS endpoint's address and pin, and the QUIC address to join.
pub fn installer_info(ctrl: &Controller) -> Result<InstallerInfo, PinError> {
    Ok(InstallerInfo {
        url: https_url(ctrl),
        pin: spki_pin(&ctrl.pki.server_cert_der())?,
        controller: ctrl.advertise.clone(),
    })
}

/// `https://HOST:PORT` boxes use: `https_advertise`, or the host of
/// `advertise` with the port the endpoint listens on.
pub fn https_url(ctrl: &Controller) -> String {
    let port = ctrl
        .https_addr
        .get()
        .map(|a| a.port())
        .unwrap_or(ctrl.config.https_listen.port());
    advertised_url(
        ctrl.config.https_advertise.as_deref(),
        &ctrl.advertise,
        port,
    )
}

/// The pure part of [`https_url`].
pub fn advertised_url(https_advertise: Option<&str>, advertise: &str, port: u16) -> String {
    if let Some(a) = https_advertise {
        return format!("https://{a}");
    }
    let host = advertise
        .rsplit_once(':')
        .map(|(h, _)| h)
        .unwrap_or(advertise);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.contains(':') {
        format!("https://[{host}]:{port}")
    } else {
        format!("https://{host}:{port}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_url_comes_from_https_advertise_or_the_quic_advertise_host() {
        assert_eq!(
            advertised_url(None, "ctl.lan:7443", 7444),
            "https://ctl.lan:7444"
        );
        assert_eq!(
            advertised_url(None, "[fd00::5]:7443", 9000),
            "https://[fd00::5]:9000"
        );
        assert_eq!(
            advertised_url(Some("gw.example:443"), "ctl.lan:7443", 7444),
            "https://gw.example:443"
        );
    }
}
