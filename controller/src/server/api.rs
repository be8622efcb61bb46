//! The CLI's connection: one request per bidirectional stream.

use std::sync::Arc;

use metrom_protocol::codec::{self, FrameError};
use metrom_protocol::messages::api::{ApiError, ApiRequest, ApiResponse, ErrorKind};
use metrom_protocol::{check_version, close};
use tracing::{Instrument, debug, info};

use super::FIRST_FRAME_TIMEOUT;
use crate::api::{self, Caller};
use crate::state::Controller;

pub(super) async fn serve(ctrl: Arc<Controller>, conn: quinn::Connection, user: String) {
    ctrl.user_conns
        .lock()
        .expect("user conns lock")
        .entry(user.clone())
        .or_default()
        .push(conn.clone());
    let span = tracing::info_span!("api", user = %user);
    async {
        loop {
            match conn.accept_bi().await {
                Ok((send, recv)) => {
                    let ctrl = ctrl.clone();
                    let user = user.clone();
                    tokio::spawn(
                        async move { handle_stream(ctrl, user, send, recv).await }
                            .in_current_span(),
                    );
                }
                Err(e) => {
                    super::log_connection_end("CLI connection", &e);
                    break;
                }
            }
        }
    }
    .instrument(span)
    .await;
    let mut conns = ctrl.user_conns.lock().expect("user conns lock");
    if let Some(list) = conns.get_mut(&user) {
        list.retain(|c| c.stable_id() != conn.stable_id());
        if list.is_empty() {
            conns.remove(&user);
        }
    }
}

async fn handle_stream(
    ctrl: Arc<Controller>,
    user: String,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) {
    let max = ctrl.config.max_frame_bytes;
    let frame =
        match tokio::time::timeout(FIRST_FRAME_TIMEOUT, codec::read_frame(&mut recv, max)).await {
            Ok(Ok(Some(f))) => f,
            Ok(Ok(None)) => return,
            Ok(Err(e)) => {
                info!("bad request frame: {e}");
                let _ = send.reset(close::PROTOCOL);
                return;
            }
            Err(_) => {
                let _ = send.reset(close::PROTOCOL);
                return;
            }
        };
    let response: ApiResponse = match parse(&frame) {
        Ok(req) => {
            let caller = match Caller::lookup(&ctrl, &user) {
                Ok(c) => c,
                Err(e) => {
                    let _ = codec::write_message(&mut send, &ApiResponse::Err(e), max).await;
                    let _ = send.finish();
                    return;
                }
            };
            debug!(call = ?std::mem::discriminant(&req.call), "request");
            api::dispatch(&ctrl, &caller, req.call, &mut recv).await
        }
        Err(e) => Err(e),
    };
    match codec::write_message(&mut send, &response, max).await {
        Ok(()) => {
            let _ = send.finish();
        }
        Err(FrameError::TooLarge { len, max }) => {
            let err: ApiResponse = Err(ApiError::internal(format!(
                "the answer ({len} bytes) exceeds the maximum frame size ({max}); narrow the request"
            )));
            let _ = codec::write_message(&mut send, &err, max).await;
            let _ = send.finish();
        }
        Err(e) => debug!("could not send response: {e}"),
    }
}

fn parse(frame: &[u8]) -> Result<ApiRequest, ApiError> {
    let version = codec::peek_version(frame)
        .map_err(|e| ApiError::invalid(format!("malformed request: {e}")))?;
    check_version(version).map_err(|e| ApiError::new(ErrorKind::VersionMismatch, e.to_string()))?;
    codec::decode::<ApiRequest>(frame).map_err(|e| {
        ApiError::invalid(format!(
            "malformed request ({e}); is the CLI newer than the controller?"
        ))
    })
}
