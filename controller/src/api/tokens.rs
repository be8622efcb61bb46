//! token create / list / revoke.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use metrom_protocol::messages::api::{ApiError, ApiResponse, Reply, TokenCreated, TokenView};
use metrom_protocol::token::JoinToken;

use super::{Caller, durable, store_err};
use crate::state::Controller;
use crate::store::TokenRecord;

const MIN_TTL: Duration = Duration::from_secs(1);
const MAX_TTL: Duration = Duration::from_secs(365 * 86_400);
const MAX_USES: u32 = 100_000;

pub(super) async fn create(
    ctrl: &Controller,
    caller: &Caller,
    ttl: Duration,
    uses: u32,
    labels: BTreeMap<String, String>,
) -> ApiResponse {
    if !(MIN_TTL..=MAX_TTL).contains(&ttl) {
        return Err(ApiError::invalid("--ttl must be between 1s and 365d"));
    }
    if uses == 0 || uses > MAX_USES {
        return Err(ApiError::invalid(format!(
            "--uses must be between 1 and {MAX_USES}"
        )));
    }
    for (k, v) in &labels {
        check_label(k, v)?;
    }
    let token = JoinToken::generate(ctrl.pki.ca_pin());
    let now = Timestamp::now();
    let expires_at =
        now + SignedDuration::try_from(ttl).map_err(|_| ApiError::invalid("--ttl too large"))?;
    let record = TokenRecord {
        id: token.id.clone(),
        secret_hash: JoinToken::secret_hash(&token.secret),
        created_at: now,
        created_by: caller.name.clone(),
        expires_at,
        uses,
        used: 0,
        labels,
        revoked_at: None,
    };
    ctrl.store
        .tokens
        .put(&token.id, &record)
        .map_err(store_err)?;
    durable(ctrl).await?;
    Ok(Reply::TokenCreated(TokenCreated {
        id: token.id.clone(),
        token: token.to_string(),
        expires_at,
        uses,
        controller: ctrl.advertise.clone(),
    }))
}

pub(super) fn list(ctrl: &Controller) -> ApiResponse {
    let now = Timestamp::now();
    let tokens = ctrl.store.tokens.list().map_err(store_err)?;
    Ok(Reply::Tokens(
        tokens
            .into_iter()
            .map(|(_, t)| TokenView {
                state: t.state(now).to_string(),
                id: t.id,
                created_at: t.created_at,
                created_by: t.created_by,
                expires_at: t.expires_at,
                uses: t.uses,
                used: t.used,
                labels: t.labels,
            })
            .collect(),
    ))
}

pub(super) async fn revoke(ctrl: &Controller, id: &str) -> ApiResponse {
    let now = Timestamp::now();
    let res = ctrl
        .store
        .tokens
        .update(id, |rec| match rec {
            Some(t) if t.revoked_at.is_some() => Err(ApiError::precondition(format!(
                "token {id} is already revoked"
            ))),
            Some(mut t) => {
                t.revoked_at = Some(now);
                Ok(Some(t))
            }
            None => Err(ApiError::not_found(format!(
                "no token {id}; see `metrom token list`"
            ))),
        })
        .map_err(store_err)?;
    res?;
    durable(ctrl).await?;
    Ok(Reply::Done {
        message: format!("token {id} revoked: it can no longer be used to join"),
    })
}

/// Label keys and values: what Kubernetes allows, roughly — short, printable, no spaces.
pub fn check_label(key: &str, value: &str) -> Result<(), ApiError> {
    let ok = |s: &str, max: usize| {
        s.len() <= max
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_./".contains(&b))
    };
    if key.is_empty() || !ok(key, 63) {
        return Err(ApiError::invalid(format!(
            "label key '{key}': use 1-63 letters, digits, '-', '_', '.' or '/'"
        )));
    }
    if !ok(value, 63) {
        return Err(ApiError::invalid(format!(
            "label {key}='{value}': values use up to 63 letters, digits, '-', '_', '.' or '/'"
        )));
    }
    Ok(())
}
