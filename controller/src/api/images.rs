//! image import / list / delete: VM base images, stored content-addressed in
//! `DATA_DIR/images/<sha256 hex>`.

use std::io::Write;
use std::path::{Path, PathBuf};

use jiff::Timestamp;
use metrom_protocol::messages::api::{ApiError, ApiResponse, ImageView, Reply};
use metrom_protocol::messages::env::EnvState;
use sha2::{Digest, Sha256};

use super::{Caller, durable, store_err};
use crate::state::Controller;
use crate::store::{Desired, ImageRecord};

/// The first bytes of a qcow2 file.
pub const QCOW2_MAGIC: &[u8; 4] = b"QFI\xfb";

/// The folder of the image store.
pub fn dir(ctrl: &Controller) -> PathBuf {
    ctrl.data_dir.join("images")
}

/// The file of an image with this digest (`sha256:<hex>`).
pub fn path_of(ctrl: &Controller, digest: &str) -> PathBuf {
    dir(ctrl).join(digest.trim_start_matches("sha256:"))
}

/// Moves a received upload into the content-addressed store under its digest
/// (a blob already there is the same bytes: the upload is dropped).
pub fn keep_blob(ctrl: &Controller, tmp: &Path, digest: &str) -> Result<(), ApiError> {
    let path = path_of(ctrl, digest);
    if path.exists() {
        let _ = std::fs::remove_file(tmp);
    } else if let Err(e) = std::fs::rename(tmp, &path) {
        let _ = std::fs::remove_file(tmp);
        return Err(ApiError::internal(format!("image store: {e}")));
    }
    Ok(())
}

/// Receives `size` bytes from the request stream into the image store.
pub(super) async fn import(
    ctrl: &Controller,
    caller: &Caller,
    name: &str,
    size: u64,
    format: &str,
    recv: &mut quinn::RecvStream,
) -> ApiResponse {
    check_name(name)?;
    if !matches!(format, "qcow2" | "raw") {
        return Err(ApiError::invalid(format!(
            "image format '{format}': use qcow2 or raw"
        )));
    }
    if ctrl.store.images.contains(name).map_err(store_err)? {
        return Err(ApiError::conflict(format!(
            "image {name} already exists; delete it first (metrom image delete {name}) or choose another name"
        )));
    }
    let dir = dir(ctrl);
    std::fs::create_dir_all(&dir)
        .map_err(|e| ApiError::internal(format!("image store {}: {e}", dir.display())))?;
    let tmp = dir.join(format!(
        ".incoming-{}",
        metrom_protocol::ids::random_string(8)
    ));
    let result = receive(recv, &tmp, size).await;
    let (digest, head) = match result {
        Ok(r) => r,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    let is_qcow2 = head.starts_with(QCOW2_MAGIC);
    if format == "qcow2" && !is_qcow2 {
        let _ = std::fs::remove_file(&tmp);
        return Err(ApiError::invalid(format!(
            "{name} is not a qcow2 image (no qcow2 header); import it with --format raw"
        )));
    }
    if format == "raw" && is_qcow2 {
        let _ = std::fs::remove_file(&tmp);
        return Err(ApiError::invalid(format!(
            "{name} is a qcow2 image; import it with --format qcow2"
        )));
    }
    keep_blob(ctrl, &tmp, &digest)?;
    let rec = ImageRecord {
        name: name.to_string(),
        digest,
        size,
        format: format.to_string(),
        imported_at: Timestamp::now(),
        imported_by: caller.name.clone(),
    };
    ctrl.store.images.put(name, &rec).map_err(store_err)?;
    durable(ctrl).await?;
    Ok(Reply::Image(image_view(ctrl, rec)?))
}

pub(super) fn list(ctrl: &Controller) -> ApiResponse {
    let images = ctrl.store.images.list().map_err(store_err)?;
    let views = images
        .into_iter()
        .map(|(_, i)| image_view(ctrl, i))
        .collect::<Result<_, _>>()?;
    Ok(Reply::Images(views))
}

pub(super) async fn delete(ctrl: &Controller, name: &str) -> ApiResponse {
    let Some(rec) = ctrl.store.images.get(name).map_err(store_err)? else {
        return Err(ApiError::not_found(format!(
            "no image {name}; see `metrom image list`"
        )));
    };
    let users = users_of(ctrl, &rec.name)?;
    if !users.is_empty() {
        return Err(ApiError::precondition(format!(
            "image {name} is in use by {} environment(s): {}; delete or rebuild them first",
            users.len(),
            users.join(", ")
        )));
    }
    ctrl.store.images.remove(name).map_err(store_err)?;
    durable(ctrl).await?;
    let shared = ctrl
        .store
        .images
        .list()
        .map_err(store_err)?
        .iter()
        .any(|(_, i)| i.digest == rec.digest);
    if !shared {
        let _ = std::fs::remove_file(path_of(ctrl, &rec.digest));
    }
    Ok(Reply::Done {
        message: format!("image {name} deleted"),
    })
}

/// Names of the environments (not deleted) that boot from an image.
fn users_of(ctrl: &Controller, name: &str) -> Result<Vec<String>, ApiError> {
    Ok(ctrl
        .store
        .envs
        .list()
        .map_err(store_err)?
        .into_iter()
        .filter(|(_, e)| {
            e.state != EnvState::Deleted
                && e.desired != Desired::Deleted
                && e.image.as_ref().is_some_and(|i| i.name == name)
        })
        .map(|(_, e)| e.name)
        .collect())
}

fn image_view(ctrl: &Controller, i: ImageRecord) -> Result<ImageView, ApiError> {
    let used_by = users_of(ctrl, &i.name)?.len() as u32;
    Ok(ImageView {
        name: i.name,
        digest: i.digest,
        size: i.size,
        format: i.format,
        imported_at: i.imported_at,
        imported_by: i.imported_by,
        used_by,
    })
}

/// Streams `size` bytes into `path`, hashing them; returns the digest and the first bytes.
pub(super) async fn receive(
    recv: &mut quinn::RecvStream,
    path: &std::path::Path,
    size: u64,
) -> Result<(String, Vec<u8>), ApiError> {
    let disk = |e: std::io::Error| {
        if e.raw_os_error() == Some(libc::ENOSPC) {
            ApiError::precondition("the controller's disk is full; nothing was kept".to_string())
        } else {
            ApiError::internal(format!("image store: {e}"))
        }
    };
    let mut file = std::fs::File::create(path).map_err(disk)?;
    let mut hasher = Sha256::new();
    let mut head = Vec::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut got: u64 = 0;
    while got < size {
        let want = ((size - got) as usize).min(buf.len());
        let n = recv
            .read(&mut buf[..want])
            .await
            .map_err(|e| {
                ApiError::invalid(format!("upload broken after {got} of {size} bytes: {e}"))
            })?
            .unwrap_or(0);
        if n == 0 {
            return Err(ApiError::invalid(format!(
                "upload ended after {got} of {size} bytes; nothing was kept"
            )));
        }
        if head.len() < 16 {
            head.extend_from_slice(&buf[..n.min(16 - head.len())]);
        }
        hasher.update(&buf[..n]);
        file.write_all(&buf[..n]).map_err(disk)?;
        got += n as u64;
    }
    file.sync_all().map_err(disk)?;
    Ok((format!("sha256:{}", hex::encode(hasher.finalize())), head))
}

/// Image names: 1–64 characters, lowercase letters, digits, '-', '_' and '.'.
pub(super) fn check_name(name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(format!(
            "image name '{name}': use 1-64 lowercase letters, digits, '-', '_' or '.'"
        )))
    }
}
