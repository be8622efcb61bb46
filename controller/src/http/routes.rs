//! The HTTPS endpoint's requests: [`route`] decides (pure), [`handle`] answers.
//! Every refusal is a plain-text line saying what to do, as the installer
//! shows it to the person at the box.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE, HOST};
use hyper::{Method, Request, Response, StatusCode};
use jiff::Timestamp;
use metrom_protocol::token::JoinToken;
use tokio::io::AsyncReadExt;
use tracing::{debug, info};

use super::Site;
use super::scripts::{Fill, INSTALL_SH, UNINSTALL_SH, fill};
use crate::state::Controller;

pub(super) type Body = BoxBody<Bytes, std::io::Error>;

/// A join token is short; anything longer is not one.
const MAX_TOKEN_BODY: usize = 1024;

/// What a request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Route {
    Index,
    Install,
    Uninstall,
    Agent { arch: String },
    AgentSha256 { arch: String },
    TokenCheck,
    NotFound,
    MethodNotAllowed(&'static str),
}

/// Decides what `method path` asks for.
pub(super) fn route(method: &Method, path: &str) -> Route {
    let get = |r: Route| {
        if method == Method::GET || method == Method::HEAD {
            r
        } else {
            Route::MethodNotAllowed("GET")
        }
    };
    match path {
        "/" => get(Route::Index),
        "/install.sh" => get(Route::Install),
        "/uninstall.sh" => get(Route::Uninstall),
        "/token/check" if method == Method::POST => Route::TokenCheck,
        "/token/check" => Route::MethodNotAllowed("POST"),
        _ => match path
            .strip_prefix("/agent/")
            .and_then(|rest| rest.split_once('/'))
        {
            Some((arch, "metrom-agent")) => get(Route::Agent { arch: arch.into() }),
            Some((arch, "metrom-agent.sha256")) => get(Route::AgentSha256 { arch: arch.into() }),
            _ => Route::NotFound,
        },
    }
}

/// Answers one request.
pub(super) async fn handle(
    site: &Arc<Site>,
    ctrl: &Controller,
    req: Request<Incoming>,
    remote: SocketAddr,
) -> Response<Body> {
    let r = route(req.method(), req.uri().path());
    debug!(%remote, method = %req.method(), path = req.uri().path(), "https request");
    match r {
        Route::Index => text(
            StatusCode::OK,
            "Metrom controller: the installer's endpoint.\n\
             GET  /install.sh                         the host installer (see `metrom host join-command`)\n\
             GET  /uninstall.sh                       removes the agent from a host\n\
             GET  /agent/<arch>/metrom-agent          the agent binary (x86_64, aarch64, …)\n\
             GET  /agent/<arch>/metrom-agent.sha256   its SHA-256\n\
             POST /token/check                        is this join token (the body) usable?\n",
        ),
        Route::Install => {
            let url = request_url(&req).unwrap_or_else(|| site.url.clone());
            let f = Fill {
                url: &url,
                pin: &site.pin,
                controller: &ctrl.advertise,
            };
            script(fill(INSTALL_SH, &f))
        }
        Route::Uninstall => script(UNINSTALL_SH.to_string()),
        Route::Agent { arch } => match site.agents.find(&arch) {
            Ok(path) => {
                info!(%remote, arch, path = %path.display(), "serving the agent binary");
                file(path).await
            }
            Err(e) => text(StatusCode::NOT_FOUND, &format!("{e}\n")),
        },
        Route::AgentSha256 { arch } => match site.agents.find(&arch) {
            Ok(path) => {
                let s = site.clone();
                let sum = tokio::task::spawn_blocking(move || s.agents.sha256(&path)).await;
                match sum.expect("checksum task panicked") {
                    Ok(sum) => text(StatusCode::OK, &format!("{sum}  metrom-agent\n")),
                    Err(e) => {
                        tracing::error!("{}", crate::error_chain(&e));
                        text(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            &format!(
                                "the controller cannot give the agent binary's checksum: {}; tell its operator\n",
                                crate::error_chain(&e)
                            ),
                        )
                    }
                }
            }
            Err(e) => text(StatusCode::NOT_FOUND, &format!("{e}\n")),
        },
        Route::TokenCheck => {
            let body = match Limited::new(req.into_body(), MAX_TOKEN_BODY)
                .collect()
                .await
            {
                Ok(b) => b.to_bytes(),
                Err(_) => {
                    return text(
                        StatusCode::BAD_REQUEST,
                        "send the join token (mtj1.…) as the request body\n",
                    );
                }
            };
            let (status, message) = check_token(ctrl, &String::from_utf8_lossy(&body));
            text(status, &format!("{message}\n"))
        }
        Route::NotFound => text(
            StatusCode::NOT_FOUND,
            "not found: this endpoint serves /install.sh, /uninstall.sh and /agent/<arch>/metrom-agent[.sha256]\n",
        ),
        Route::MethodNotAllowed(allowed) => {
            let mut r = text(
                StatusCode::METHOD_NOT_ALLOWED,
                &format!("use {allowed} here\n"),
            );
            r.headers_mut()
                .insert(hyper::header::ALLOW, allowed.parse().expect("static"));
            r
        }
    }
}

/// Whether a join token would be accepted now, without using it: the
/// installer asks before it changes anything on the box.
pub(crate) fn check_token(ctrl: &Controller, text: &str) -> (StatusCode, String) {
    let token = match JoinToken::parse(text) {
        Ok(t) => t,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("{e}; copy the whole line from `metrom host join-command` again"),
            );
        }
    };
    if token.ca_pin != ctrl.pki.ca_pin() {
        return (
            StatusCode::FORBIDDEN,
            format!(
                "join token {} was made by another Metrom controller (its CA pin differs from this one's); \
                 ask this controller's operator for a line (metrom host join-command)",
                token.id
            ),
        );
    }
    let record = match ctrl.store.tokens.get(&token.id) {
        Ok(r) => r,
        Err(e) => {
            tracing::error!("store: {}", crate::error_chain(&e));
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the controller's store failed; try again, or tell its operator".into(),
            );
        }
    };
    let now = Timestamp::now();
    match crate::server::check_token(record, &token.id, &token.secret, now) {
        Ok(t) => (
            StatusCode::OK,
            format!(
                "join token {} is valid until {} ({} of {} uses left)",
                t.id,
                t.expires_at,
                t.uses - t.used,
                t.uses
            ),
        ),
        Err(reason) => (StatusCode::FORBIDDEN, reason),
    }
}

/// `https://<Host header>` when the header looks like a host and port.
fn request_url(req: &Request<Incoming>) -> Option<String> {
    let host = req.headers().get(HOST)?.to_str().ok()?;
    let ok = !host.is_empty()
        && host.len() <= 255
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b));
    ok.then(|| format!("https://{host}"))
}

fn text(status: StatusCode, body: &str) -> Response<Body> {
    let mut r = Response::new(full(body.to_string()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        "text/plain; charset=utf-8".parse().expect("static"),
    );
    r
}

fn script(body: String) -> Response<Body> {
    let mut r = Response::new(full(body));
    r.headers_mut()
        .insert(CONTENT_TYPE, "text/x-shellscript".parse().expect("static"));
    r
}

fn full(body: String) -> Body {
    Full::new(Bytes::from(body))
        .map_err(|never| match never {})
        .boxed()
}

/// Streams a file, 64 KiB at a time.
async fn file(path: PathBuf) -> Response<Body> {
    let f = match tokio::fs::File::open(&path).await {
        Ok(f) => f,
        Err(e) => {
            tracing::error!(path = %path.display(), "cannot open the agent binary: {e}");
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the controller cannot read its agent binary; tell its operator\n",
            );
        }
    };
    let len = f.metadata().await.map(|m| m.len()).ok();
    let stream = futures::stream::try_unfold(f, |mut f| async move {
        let mut buf = vec![0u8; 1 << 16];
        let n = f.read(&mut buf).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.truncate(n);
        Ok(Some((Frame::data(Bytes::from(buf)), f)))
    });
    let mut r = Response::new(BodyExt::boxed(StreamBody::new(stream)));
    r.headers_mut().insert(
        CONTENT_TYPE,
        "application/octet-stream".parse().expect("static"),
    );
    if let Some(len) = len {
        r.headers_mut().insert(CONTENT_LENGTH, len.into());
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let get = |p: &str| route(&Method::GET, p);
        assert_eq!(get("/install.sh"), Route::Install);
        assert_eq!(get("/uninstall.sh"), Route::Uninstall);
        assert_eq!(get("/"), Route::Index);
        assert_eq!(
            get("/agent/x86_64/metrom-agent"),
            Route::Agent {
                arch: "x86_64".into()
            }
        );
        assert_eq!(
            get("/agent/aarch64/metrom-agent.sha256"),
            Route::AgentSha256 {
                arch: "aarch64".into()
            }
        );
        assert_eq!(get("/agent/x86_64/other"), Route::NotFound);
        assert_eq!(get("/agent/x86_64"), Route::NotFound);
        assert_eq!(get("/etc/passwd"), Route::NotFound);
        assert_eq!(route(&Method::POST, "/token/check"), Route::TokenCheck);
        assert_eq!(get("/token/check"), Route::MethodNotAllowed("POST"));
        assert_eq!(
            route(&Method::POST, "/install.sh"),
            Route::MethodNotAllowed("GET")
        );
        assert_eq!(route(&Method::HEAD, "/install.sh"), Route::Install);
    }
}
