//! audit, report usage.

use jiff::{SignedDuration, Timestamp};
use metrom_protocol::messages::api::{ApiError, ApiResponse, Reply};

use super::{Caller, store_err};
use crate::state::Controller;
use crate::store::Role;

/// Default period of the usage report.
const DEFAULT_REPORT_DAYS: i64 = 30;

/// The audit log; developers see only their own entries.
pub(super) fn list(
    ctrl: &Controller,
    caller: &Caller,
    user: Option<&str>,
    since: Option<Timestamp>,
    limit: u32,
) -> ApiResponse {
    let user = match (caller.role, user) {
        (Role::Developer, Some(u)) if u != caller.name => {
            return Err(ApiError::denied(format!(
                "{} is a developer and may read only their own audit entries",
                caller.name
            )));
        }
        (Role::Developer, _) => Some(caller.name.as_str()),
        (_, u) => u,
    };
    let entries = crate::audit::list(ctrl, user, since, limit as usize).map_err(store_err)?;
    Ok(Reply::Audit(entries))
}

/// The usage report; developers get their own environments' usage.
pub(super) fn usage(ctrl: &Controller, caller: &Caller, since: Option<Timestamp>) -> ApiResponse {
    let until = Timestamp::now();
    let since = since.unwrap_or_else(|| {
        until
            .checked_sub(SignedDuration::from_hours(24 * DEFAULT_REPORT_DAYS))
            .unwrap_or(Timestamp::UNIX_EPOCH)
    });
    if since > until {
        return Err(ApiError::invalid("--since is in the future"));
    }
    let owner = (caller.role == Role::Developer).then_some(caller.name.as_str());
    let report = crate::usage::report(ctrl, since, until, owner).map_err(store_err)?;
    Ok(Reply::Usage(report))
}
