//! The CLI's QUIC client: one connection, one stream per request.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use metrom_protocol::codec::{self, FrameError};
use metrom_protocol::identity::{IdentityBundle, IdentityError, default_identity_path};
use metrom_protocol::messages::api::{ApiError, ApiRequest, ApiResponse, Call, ErrorKind, Reply};
use metrom_protocol::tls::Timing;
use metrom_protocol::{CONTROLLER_SERVER_NAME, PROTOCOL_VERSION};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a CLI call failed; each says what to do.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "no identity: pass --identity FILE, set METROM_IDENTITY, or put one at ~/.config/metrom/identity \
         (`metrom-controller init` writes the first admin identity; `metrom user add` makes more)"
    )]
    NoIdentity,
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error("controller address '{0}' in the identity does not resolve")]
    Resolve(String, #[source] std::io::Error),
    #[error("cannot open a UDP socket")]
    Socket(#[source] std::io::Error),
    #[error("TLS setup")]
    Tls(#[from] metrom_protocol::tls::TlsError),
    #[error(
        "cannot reach the controller at {addr}: no answer within {secs}s; is metrom-controller running there and is UDP port {port} open?",
        secs = CONNECT_TIMEOUT.as_secs(),
        port = addr.port()
    )]
    Timeout { addr: SocketAddr },
    #[error("the controller at {addr} refused the connection: {reason}")]
    Refused { addr: SocketAddr, reason: String },
    #[error("connection to the controller failed")]
    Connect(#[from] quinn::ConnectError),
    #[error("the connection to the controller broke: {0}")]
    Stream(String),
    #[error("{0}")]
    Api(#[from] ApiError),
}

impl ClientError {
    /// Exit code for this failure.
    pub fn exit_code(&self) -> i32 {
        match self {
            ClientError::Api(e) => e.kind.exit_code(),
            ClientError::NoIdentity | ClientError::Identity(_) => {
                ErrorKind::InvalidArgument.exit_code()
            }
            _ => ErrorKind::Unavailable.exit_code(),
        }
    }
}

/// Finds the identity file: flag, then `METROM_IDENTITY` (clap fills the flag
/// from it), then `~/.config/metrom/identity`.
pub fn identity_path(flag: Option<&Path>) -> Result<PathBuf, ClientError> {
    if let Some(p) = flag {
        return Ok(p.to_path_buf());
    }
    match default_identity_path() {
        Some(p) if p.exists() => Ok(p),
        _ => Err(ClientError::NoIdentity),
    }
}

/// A connection to the controller.
pub struct Client {
    endpoint: quinn::Endpoint,
    conn: quinn::Connection,
    addr: SocketAddr,
    max_frame: usize,
}

impl Client {
    pub async fn connect(identity: &IdentityBundle) -> Result<Client, ClientError> {
        let addr = tokio::net::lookup_host(&identity.controller)
            .await
            .map_err(|e| ClientError::Resolve(identity.controller.clone(), e))?
            .next()
            .ok_or_else(|| {
                ClientError::Resolve(
                    identity.controller.clone(),
                    std::io::Error::other("no address"),
                )
            })?;
        let bind: SocketAddr = if addr.is_ipv6() {
            "[::]:0".parse().expect("addr")
        } else {
            "0.0.0.0:0".parse().expect("addr")
        };
        let mut endpoint = quinn::Endpoint::client(bind).map_err(ClientError::Socket)?;
        endpoint.set_default_client_config(metrom_protocol::tls::client_config(
            identity,
            Timing::default(),
        )?);
        let connecting = endpoint.connect(addr, CONTROLLER_SERVER_NAME)?;
        let conn = match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
            Err(_) => return Err(ClientError::Timeout { addr }),
            Ok(Err(quinn::ConnectionError::TimedOut)) => return Err(ClientError::Timeout { addr }),
            Ok(Err(e)) => {
                return Err(ClientError::Refused {
                    addr,
                    reason: e.to_string(),
                });
            }
            Ok(Ok(c)) => c,
        };
        Ok(Client {
            endpoint,
            conn,
            addr,
            max_frame: codec::DEFAULT_MAX_FRAME,
        })
    }

    /// Opens a stream and sends the call on it.
    async fn request(
        &self,
        call: Call,
    ) -> Result<(quinn::SendStream, quinn::RecvStream), ClientError> {
        let (mut send, recv) = self
            .conn
            .open_bi()
            .await
            .map_err(|e| self.broken(e.to_string()))?;
        let req = ApiRequest {
            version: PROTOCOL_VERSION,
            call,
        };
        codec::write_message(&mut send, &req, self.max_frame)
            .await
            .map_err(|e| self.frame(e))?;
        Ok((send, recv))
    }

    /// Reads the controller's answer to a request.
    async fn answer(&self, recv: &mut quinn::RecvStream) -> Result<Reply, ClientError> {
        let resp: ApiResponse = codec::read_message(recv, self.max_frame)
            .await
            .map_err(|e| self.frame(e))?
            .ok_or_else(|| {
                self.broken("the controller closed the stream without answering".into())
            })?;
        Ok(resp?)
    }

    /// Sends one call and waits for its answer.
    pub async fn call(&self, call: Call) -> Result<Reply, ClientError> {
        let (mut send, mut recv) = self.request(call).await?;
        let _ = send.finish();
        self.answer(&mut recv).await
    }

    /// Sends a call followed by `size` raw bytes of `file`, reporting how many
    /// bytes were sent, then waits for the answer.
    pub async fn upload(
        &self,
        call: Call,
        file: &Path,
        size: u64,
        progress: impl Fn(u64),
    ) -> Result<Reply, ClientError> {
        use tokio::io::AsyncReadExt;
        let (mut send, mut recv) = self.request(call).await?;
        let mut f = tokio::fs::File::open(file)
            .await
            .map_err(|e| ClientError::Stream(format!("{}: {e}", file.display())))?;
        let mut buf = vec![0u8; 1 << 20];
        let mut sent = 0u64;
        while sent < size {
            let n = f
                .read(&mut buf)
                .await
                .map_err(|e| ClientError::Stream(format!("{}: {e}", file.display())))?;
            if n == 0 {
                return Err(ClientError::Stream(format!(
                    "{} shrank while it was being sent",
                    file.display()
                )));
            }
            let n = n.min((size - sent) as usize);
            if let Err(e) = send.write_all(&buf[..n]).await {
                // The controller may have refused early (e.g. the name exists): read its answer.
                let answer = codec::read_message::<ApiResponse, _>(&mut recv, self.max_frame).await;
                if let Ok(Some(resp)) = answer {
                    return Ok(resp?);
                }
                return Err(self.broken(e.to_string()));
            }
            sent += n as u64;
            progress(sent);
        }
        let _ = send.finish();
        self.answer(&mut recv).await
    }

    /// Closes the connection politely.
    pub async fn close(self) {
        self.conn.close(metrom_protocol::close::NORMAL, b"done");
        let _ = tokio::time::timeout(Duration::from_secs(1), self.endpoint.wait_idle()).await;
    }

    fn frame(&self, e: FrameError) -> ClientError {
        self.broken(e.to_string())
    }

    fn broken(&self, detail: String) -> ClientError {
        match self.conn.close_reason() {
            Some(reason) => ClientError::Refused {
                addr: self.addr,
                reason: reason.to_string(),
            },
            None => ClientError::Stream(detail),
        }
    }
}
