//! Enrollment on ALPN `metrom-join/1`. The token is checked and consumed, the
//! host recorded and its certificate issued; a refused join stores nothing.

use std::sync::Arc;

use jiff::Timestamp;
use metrom_protocol::codec::{self, FrameError};
use metrom_protocol::ids::{HostId, Principal};
use metrom_protocol::messages::join::{JoinAccepted, JoinRefused, JoinRequest, JoinResponse};
use metrom_protocol::token::{JoinToken, constant_time_eq};
use metrom_protocol::{check_version, close};
use tracing::{info, warn};

use super::FIRST_FRAME_TIMEOUT;
use crate::state::Controller;
use crate::store::{HostRecord, TokenRecord};

/// Join requests are small; anything bigger is hostile.
const MAX_JOIN_FRAME: usize = 64 * 1024;

pub(super) async fn serve(ctrl: Arc<Controller>, conn: quinn::Connection) {
    let remote = conn.remote_address();
    let (mut send, mut recv) =
        match tokio::time::timeout(FIRST_FRAME_TIMEOUT, conn.accept_bi()).await {
            Ok(Ok(s)) => s,
            _ => {
                conn.close(close::PROTOCOL, b"no join request");
                return;
            }
        };
    let frame = match tokio::time::timeout(
        FIRST_FRAME_TIMEOUT,
        codec::read_frame(&mut recv, MAX_JOIN_FRAME),
    )
    .await
    {
        Ok(Ok(Some(f))) => f,
        Ok(Ok(None)) => {
            conn.close(close::PROTOCOL, b"no join request");
            return;
        }
        Ok(Err(e)) => {
            info!(%remote, "join: bad frame: {e}");
            conn.close(close::PROTOCOL, format!("bad join frame: {e}").as_bytes());
            return;
        }
        Err(_) => {
            conn.close(close::PROTOCOL, b"join request timed out");
            return;
        }
    };
    let response = match answer(&ctrl, &frame).await {
        Ok(accepted) => {
            info!(%remote, host_id = %accepted.host_id, "host joined");
            JoinResponse::Accepted(accepted)
        }
        Err(JoinError::Protocol(e)) => {
            info!(%remote, "join: malformed request: {e}");
            conn.close(
                close::PROTOCOL,
                format!("malformed join request: {e}").as_bytes(),
            );
            return;
        }
        Err(JoinError::Refused(reason)) => {
            info!(%remote, "join refused: {reason}");
            JoinResponse::Refused(JoinRefused { reason })
        }
    };
    if codec::write_message(&mut send, &response, MAX_JOIN_FRAME)
        .await
        .is_ok()
    {
        let _ = send.finish();
        // Let the agent read the answer and close; don't wait forever.
        let _ = tokio::time::timeout(FIRST_FRAME_TIMEOUT, conn.closed()).await;
    }
    conn.close(close::NORMAL, b"");
}

enum JoinError {
    Protocol(FrameError),
    Refused(String),
}

async fn answer(ctrl: &Controller, frame: &[u8]) -> Result<JoinAccepted, JoinError> {
    let version = codec::peek_version(frame).map_err(JoinError::Protocol)?;
    check_version(version).map_err(|e| JoinError::Refused(e.to_string()))?;
    let req: JoinRequest = codec::decode(frame).map_err(JoinError::Protocol)?;
    let host_id = HostId::generate();
    let principal = Principal::Host(host_id.clone());
    let issued = ctrl
        .pki
        .issue_for_csr(&req.csr_pem, &principal, ctrl.config.host_cert_validity)
        .map_err(|e| JoinError::Refused(crate::error_chain(&e)))?;
    let now = Timestamp::now();
    let hostname = sanitize_hostname(&req.hostname);

    // First consume a use of the token (compare-and-swap on its record): a
    // refused join writes nothing. Then record the host. A crash between the
    // two costs one use of the token; it never admits a host without one.
    let consumed = ctrl.store.tokens.update(&req.token_id, |token| {
        let mut token = check_token(token, &req.token_id, &req.secret, now)?;
        token.used += 1;
        Ok(Some(token))
    });
    let token = match consumed {
        Ok(Ok(Some(token))) => token,
        Ok(Ok(None)) => unreachable!("update returns the new record"),
        Ok(Err(reason)) => return Err(JoinError::Refused(reason)),
        Err(e) => {
            warn!("join: store failure: {}", crate::error_chain(&e));
            return Err(JoinError::Refused(
                "the controller could not record the join; try again".into(),
            ));
        }
    };
    let record = HostRecord {
        id: host_id.clone(),
        name: hostname,
        labels: token.labels.clone(),
        facts: Default::default(),
        joined_at: now,
        token_id: token.id.clone(),
        cert_serials: vec![issued.serial_hex.clone()],
        cert_not_after: issued.not_after,
        cordoned: false,
        revoked_at: None,
        last_seen: None,
        last_address: None,
    };
    if let Err(e) = ctrl.store.hosts.put(host_id.as_str(), &record) {
        warn!("join: store failure: {}", crate::error_chain(&e));
        return Err(JoinError::Refused(
            "the controller could not record the join; try again".into(),
        ));
    }
    if let Err(e) = ctrl.store.flush().await {
        warn!("join: store flush failure: {}", crate::error_chain(&e));
        return Err(JoinError::Refused(
            "the controller could not record the join; try again".into(),
        ));
    }
    Ok(JoinAccepted {
        host_id,
        cert_pem: issued.cert_pem,
        ca_pem: ctrl.pki.ca_pem().to_string(),
    })
}

/// Whether a token admits this request at `now`; the reason says what to do if not.
pub(crate) fn check_token(
    token: Option<TokenRecord>,
    id: &str,
    secret: &str,
    now: Timestamp,
) -> Result<TokenRecord, String> {
    let Some(token) = token else {
        return Err(format!(
            "join token {id} is not known to this controller; ask the operator for a new one (metrom token create)"
        ));
    };
    if !constant_time_eq(&JoinToken::secret_hash(secret), &token.secret_hash) {
        return Err(format!(
            "join token {id}: the secret does not match; copy the whole token again"
        ));
    }
    if let Some(at) = token.revoked_at {
        return Err(format!(
            "join token {id} was revoked at {at}; ask the operator for a new one"
        ));
    }
    if token.used >= token.uses {
        return Err(format!(
            "join token {id} is used up ({} of {} uses); ask the operator for a new one",
            token.used, token.uses
        ));
    }
    if now >= token.expires_at {
        return Err(format!(
            "join token {id} expired at {}; ask the operator for a new one",
            token.expires_at
        ));
    }
    Ok(token)
}

/// Hostnames are shown to operators; keep them printable and short.
fn sanitize_hostname(name: &str) -> String {
    let clean: String = name
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
        .take(64)
        .collect();
    if clean.is_empty() {
        "unnamed".into()
    } else {
        clean
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn token(uses: u32, used: u32, expires_in: i64) -> TokenRecord {
        let now = Timestamp::now();
        TokenRecord {
            id: "abcdefgh".into(),
            secret_hash: JoinToken::secret_hash("s3cret"),
            created_at: now,
            created_by: "admin".into(),
            expires_at: now + jiff::SignedDuration::from_secs(expires_in),
            uses,
            used,
            labels: BTreeMap::new(),
            revoked_at: None,
        }
    }

    #[test]
    fn token_checks_say_why() {
        let now = Timestamp::now();
        assert!(check_token(Some(token(1, 0, 60)), "abcdefgh", "s3cret", now).is_ok());
        let e = check_token(None, "abcdefgh", "s3cret", now).unwrap_err();
        assert!(e.contains("not known"), "{e}");
        let e = check_token(Some(token(1, 0, 60)), "abcdefgh", "wrong", now).unwrap_err();
        assert!(e.contains("secret does not match"), "{e}");
        let e = check_token(Some(token(1, 1, 60)), "abcdefgh", "s3cret", now).unwrap_err();
        assert!(e.contains("used up"), "{e}");
        let e = check_token(Some(token(1, 0, -1)), "abcdefgh", "s3cret", now).unwrap_err();
        assert!(e.contains("expired"), "{e}");
        let mut revoked = token(1, 0, 60);
        revoked.revoked_at = Some(now);
        let e = check_token(Some(revoked), "abcdefgh", "s3cret", now).unwrap_err();
        assert!(e.contains("revoked"), "{e}");
    }

    #[test]
    fn hostnames_are_sanitized() {
        assert_eq!(sanitize_hostname("box-1.lan"), "box-1.lan");
        assert_eq!(sanitize_hostname("\u{1b}[31mevil"), "31mevil");
        assert_eq!(sanitize_hostname(""), "unnamed");
    }
}
