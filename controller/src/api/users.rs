//! user add / list / remove / set-role. A user's role lives in the store and
//! is read on every request, so changing it needs no new certificate;
//! removing a user revokes every certificate of theirs at once.

use jiff::{SignedDuration, Timestamp};
use metrom_protocol::close;
use metrom_protocol::identity::IdentityBundle;
use metrom_protocol::ids::Principal;
use metrom_protocol::messages::api::{
    ApiError, ApiResponse, Reply, UserAdd, UserCreated, UserView,
};
use tracing::info;

use super::{Caller, durable, store_err};
use crate::policy::POLICY_USER;
use crate::state::Controller;
use crate::store::{Desired, RevokedCert, Role, UserRecord};

pub(super) async fn add(ctrl: &Controller, req: UserAdd) -> ApiResponse {
    check_name("user", &req.name)?;
    let role = parse_role(&req.role)?;
    if let Some(g) = &req.group {
        check_name("group", g)?;
    }
    for k in &req.ssh_keys {
        check_ssh_key(k)?;
    }
    if ctrl.store.users.contains(&req.name).map_err(store_err)? {
        return Err(ApiError::conflict(format!(
            "user {} already exists; see `metrom user list`",
            req.name
        )));
    }
    let principal = Principal::User(req.name.clone());
    let (issued, key_pem) = ctrl
        .pki
        .issue_with_key(&principal, ctrl.config.user_cert_validity)
        .map_err(|e| {
            tracing::error!("issuing a user certificate: {}", crate::error_chain(&e));
            ApiError::internal("could not issue the certificate; see the controller log")
        })?;
    let record = UserRecord {
        name: req.name.clone(),
        role,
        created_at: Timestamp::now(),
        cert_serials: vec![issued.serial_hex],
        group: req.group.clone(),
        ssh_keys: req.ssh_keys.clone(),
    };
    // Only one creator wins if two admins add the same name at once.
    let res = ctrl
        .store
        .users
        .update(&req.name, |cur| match cur {
            Some(_) => Err(()),
            None => Ok(Some(record.clone())),
        })
        .map_err(store_err)?;
    if res.is_err() {
        return Err(ApiError::conflict(format!(
            "user {} already exists; see `metrom user list`",
            req.name
        )));
    }
    durable(ctrl).await?;
    let bundle = IdentityBundle {
        controller: ctrl.advertise.clone(),
        principal: principal.common_name(),
        ca_cert: ctrl.pki.ca_pem().to_string(),
        cert: issued.cert_pem,
        key: key_pem,
    };
    let identity = toml::to_string_pretty(&bundle).expect("identity bundle serializes");
    info!(user = %req.name, role = role.as_str(), "user added");
    Ok(Reply::UserCreated(UserCreated {
        user: view(ctrl, &record),
        identity,
    }))
}

pub(super) fn list(ctrl: &Controller) -> ApiResponse {
    let users = ctrl.store.users.list().map_err(store_err)?;
    Ok(Reply::Users(
        users.iter().map(|(_, u)| view(ctrl, u)).collect(),
    ))
}

/// Revokes every certificate of the user (recorded, then refused by the TLS
/// layer), closes their live connections, and forgets them.
pub(super) async fn remove(ctrl: &Controller, caller: &Caller, name: &str) -> ApiResponse {
    let user = get(ctrl, name)?;
    if name == caller.name {
        return Err(ApiError::precondition(
            "you cannot remove yourself; another admin can",
        ));
    }
    if user.role == Role::Admin && admins(ctrl)? <= 1 {
        return Err(ApiError::precondition(format!(
            "{name} is the last admin; make someone else admin first"
        )));
    }
    let now = Timestamp::now();
    // Kept until any certificate of theirs would have expired anyway.
    let not_after = now
        .checked_add(SignedDuration::try_from(ctrl.config.user_cert_validity).unwrap_or_default())
        .unwrap_or(Timestamp::MAX);
    for serial in &user.cert_serials {
        let cert = RevokedCert {
            principal: format!("user:{name}"),
            revoked_at: now,
            not_after,
        };
        ctrl.store.revoked.put(serial, &cert).map_err(store_err)?;
    }
    ctrl.store.users.remove(name).map_err(store_err)?;
    durable(ctrl).await?;
    for serial in &user.cert_serials {
        if let Ok(bytes) = hex::decode(serial) {
            ctrl.revoked.revoke(bytes);
        }
    }
    ctrl.disconnect_user(name, close::REVOKED, "this user was removed by an admin");
    let owned = owned_envs(ctrl, name)?;
    info!(user = %name, "user removed and certificates revoked");
    let envs = match owned {
        0 => String::new(),
        n => format!(
            "; their {n} environment(s) keep running under owner {name} \
             (delete them with `metrom env delete NAME`)"
        ),
    };
    Ok(Reply::Done {
        message: format!(
            "user {name} removed: their certificate is revoked and their connections are closed{envs}"
        ),
    })
}

pub(super) async fn set_role(
    ctrl: &Controller,
    caller: &Caller,
    name: &str,
    role: &str,
) -> ApiResponse {
    let role = parse_role(role)?;
    let user = get(ctrl, name)?;
    if user.role == Role::Admin && role != Role::Admin && admins(ctrl)? <= 1 {
        return Err(ApiError::precondition(format!(
            "{name} is the last admin; make someone else admin first"
        )));
    }
    let res = ctrl
        .store
        .users
        .update(name, |cur| match cur {
            Some(mut u) => {
                u.role = role;
                Ok(Some(u))
            }
            None => Err(not_found(name)),
        })
        .map_err(store_err)?;
    res?;
    durable(ctrl).await?;
    let note = if name == caller.name {
        " (yours: it applies from your next command)"
    } else {
        ""
    };
    Ok(Reply::Done {
        message: format!(
            "user {name} is now {}{note}; it takes effect on their next request, with the same identity",
            role.as_str()
        ),
    })
}

/// Parses a role name, saying which exist.
pub fn parse_role(s: &str) -> Result<Role, ApiError> {
    Role::parse(s).ok_or_else(|| {
        ApiError::invalid(format!(
            "unknown role '{s}': use admin, developer or viewer"
        ))
    })
}

fn view(ctrl: &Controller, u: &UserRecord) -> UserView {
    UserView {
        name: u.name.clone(),
        role: u.role.as_str().into(),
        group: u.group.clone(),
        created_at: u.created_at,
        certificates: u.cert_serials.len() as u32,
        ssh_keys: u.ssh_keys.len() as u32,
        environments: owned_envs(ctrl, &u.name).unwrap_or(0),
    }
}

fn owned_envs(ctrl: &Controller, name: &str) -> Result<u32, ApiError> {
    Ok(ctrl
        .store
        .envs
        .list()
        .map_err(store_err)?
        .iter()
        .filter(|(_, r)| r.owner == name && r.desired != Desired::Deleted)
        .count() as u32)
}

fn admins(ctrl: &Controller) -> Result<usize, ApiError> {
    Ok(ctrl
        .store
        .users
        .list()
        .map_err(store_err)?
        .iter()
        .filter(|(_, u)| u.role == Role::Admin)
        .count())
}

fn get(ctrl: &Controller, name: &str) -> Result<UserRecord, ApiError> {
    ctrl.store
        .users
        .get(name)
        .map_err(store_err)?
        .ok_or_else(|| not_found(name))
}

fn not_found(name: &str) -> ApiError {
    ApiError::not_found(format!("no user {name}; see `metrom user list`"))
}

/// User and group names: 1–32 of `a-z 0-9 . _ -`, starting with a letter.
/// "policy" is reserved: the audit log records policy actions under it.
fn check_name(what: &str, name: &str) -> Result<(), ApiError> {
    let b = name.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= 32
        && b[0].is_ascii_lowercase()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"._-".contains(c));
    if !ok {
        return Err(ApiError::invalid(format!(
            "{what} name '{name}': use 1-32 lowercase letters, digits, '.', '_' and '-', starting with a letter"
        )));
    }
    if what == "user" && name == POLICY_USER {
        return Err(ApiError::invalid(format!(
            "user name '{name}' is reserved for the policy engine's actions; choose another"
        )));
    }
    Ok(())
}

/// One OpenSSH public key line.
fn check_ssh_key(k: &str) -> Result<(), ApiError> {
    const TYPES: [&str; 6] = [
        "ssh-ed25519",
        "ssh-rsa",
        "ecdsa-sha2-nistp256",
        "ecdsa-sha2-nistp384",
        "ecdsa-sha2-nistp521",
        "sk-ssh-ed25519@openssh.com",
    ];
    let mut parts = k.split_whitespace();
    let ok = !k.contains('\n')
        && parts.next().is_some_and(|t| TYPES.contains(&t))
        && parts.next().is_some_and(|b| b.len() >= 16);
    if ok {
        Ok(())
    } else {
        let shown: String = k.chars().take(40).collect();
        Err(ApiError::invalid(format!(
            "'{shown}…' is not an OpenSSH public key (a line such as \"ssh-ed25519 AAAA… you@host\"; give the .pub file)"
        )))
    }
}
