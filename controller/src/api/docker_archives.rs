//! image import --docker / list / delete: `docker save` archives for sites
//! without a registry. Stored content-addressed beside the VM images
//! (`DATA_DIR/images/<sha256 hex>`); the image references they hold are read
//! from the archive's `manifest.json` at import. Environments on the Docker
//! runtime get the archives that provide their images in their spec
//! (`EnvSpec::docker_archives`), and agents fetch them on demand.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use jiff::Timestamp;
use metrom_protocol::messages::api::{ApiError, ApiResponse, DockerArchiveView, Reply};
use metrom_protocol::messages::env::DockerArchiveRef;

use super::images::{check_name, dir, keep_blob, path_of, receive};
use super::{Caller, durable, store_err};
use crate::state::Controller;
use crate::store::{DockerArchiveRecord, StoreError};

/// The largest `manifest.json` read from an archive.
const MAX_MANIFEST: u64 = 4 * 1024 * 1024;

/// Receives `size` bytes of a `docker save` archive into the image store.
pub(super) async fn import(
    ctrl: &Controller,
    caller: &Caller,
    name: &str,
    size: u64,
    recv: &mut quinn::RecvStream,
) -> ApiResponse {
    check_name(name)?;
    if ctrl
        .store
        .docker_archives
        .contains(name)
        .map_err(store_err)?
    {
        return Err(ApiError::conflict(format!(
            "docker archive {name} already exists; delete it first (metrom image delete --docker {name}) or choose another name"
        )));
    }
    let dir = dir(ctrl);
    std::fs::create_dir_all(&dir)
        .map_err(|e| ApiError::internal(format!("image store {}: {e}", dir.display())))?;
    let tmp = dir.join(format!(
        ".incoming-{}",
        metrom_protocol::ids::random_string(8)
    ));
    let (digest, _) = match receive(recv, &tmp, size).await {
        Ok(r) => r,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    let images = match repo_tags(&tmp) {
        Ok(i) if !i.is_empty() => i,
        Ok(_) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(ApiError::invalid(format!(
                "{name}: the archive holds no tagged image (its manifest.json has no RepoTags); \
                 save it by name: docker save -o FILE repo:tag"
            )));
        }
        Err(why) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(ApiError::invalid(format!(
                "{name} is not a `docker save` archive: {why}"
            )));
        }
    };
    keep_blob(ctrl, &tmp, &digest)?;
    let rec = DockerArchiveRecord {
        name: name.to_string(),
        digest,
        size,
        images,
        imported_at: Timestamp::now(),
        imported_by: caller.name.clone(),
    };
    ctrl.store
        .docker_archives
        .put(name, &rec)
        .map_err(store_err)?;
    durable(ctrl).await?;
    Ok(Reply::DockerArchive(view(rec)))
}

pub(super) fn list(ctrl: &Controller) -> ApiResponse {
    let archives = ctrl.store.docker_archives.list().map_err(store_err)?;
    Ok(Reply::DockerArchives(
        archives.into_iter().map(|(_, a)| view(a)).collect(),
    ))
}

pub(super) async fn delete(ctrl: &Controller, name: &str) -> ApiResponse {
    let Some(rec) = ctrl.store.docker_archives.get(name).map_err(store_err)? else {
        return Err(ApiError::not_found(format!(
            "no docker archive {name}; see `metrom image list --docker`"
        )));
    };
    ctrl.store.docker_archives.remove(name).map_err(store_err)?;
    durable(ctrl).await?;
    let shared = ctrl
        .store
        .docker_archives
        .list()
        .map_err(store_err)?
        .iter()
        .any(|(_, a)| a.digest == rec.digest)
        || ctrl
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
        message: format!("docker archive {name} deleted"),
    })
}

/// The archives that provide any of `images`, for an environment's spec.
pub fn providing(ctrl: &Controller, images: &[&str]) -> Result<Vec<DockerArchiveRef>, StoreError> {
    let mut out: Vec<DockerArchiveRef> = Vec::new();
    for (_, a) in ctrl.store.docker_archives.list()? {
        let r = DockerArchiveRef {
            digest: a.digest,
            size: a.size,
            images: a.images,
        };
        if images.iter().any(|i| r.provides(i).is_some()) && !out.contains(&r) {
            out.push(r);
        }
    }
    Ok(out)
}

fn view(a: DockerArchiveRecord) -> DockerArchiveView {
    DockerArchiveView {
        name: a.name,
        digest: a.digest,
        size: a.size,
        images: a.images,
        imported_at: a.imported_at,
        imported_by: a.imported_by,
    }
}

/// The `RepoTags` of every image in a `docker save` archive (a tar file with
/// `manifest.json` at its root).
pub fn repo_tags(path: &Path) -> Result<Vec<String>, String> {
    let mut file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let manifest = tar_member(&mut file, "manifest.json")?
        .ok_or_else(|| "it has no manifest.json".to_string())?;
    #[derive(serde::Deserialize)]
    struct Entry {
        #[serde(rename = "RepoTags", default)]
        repo_tags: Option<Vec<String>>,
    }
    let entries: Vec<Entry> = serde_json::from_slice(&manifest)
        .map_err(|e| format!("its manifest.json is not what docker save writes: {e}"))?;
    let mut tags: Vec<String> = Vec::new();
    for t in entries
        .into_iter()
        .flat_map(|e| e.repo_tags.unwrap_or_default())
    {
        if !tags.contains(&t) {
            tags.push(t);
        }
    }
    Ok(tags)
}

/// Reads one member of a tar file by name (ustar, pax and GNU long names).
fn tar_member<F: Read + Seek>(file: &mut F, wanted: &str) -> Result<Option<Vec<u8>>, String> {
    let mut header = [0u8; 512];
    let mut long_name: Option<String> = None;
    loop {
        match file.read_exact(&mut header) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return Err("it is not a tar file (it ends inside a header)".into());
            }
            Err(e) => return Err(e.to_string()),
        }
        if header.iter().all(|b| *b == 0) {
            return Ok(None);
        }
        let stored = octal(&header[148..156]);
        let sum: u64 = header
            .iter()
            .enumerate()
            .map(|(i, b)| {
                if (148..156).contains(&i) {
                    32
                } else {
                    *b as u64
                }
            })
            .sum();
        if stored != sum {
            return Err("it is not a tar file (bad header checksum)".into());
        }
        let size = octal(&header[124..136]);
        let kind = header[156];
        let padded = size.div_ceil(512) * 512;
        let name = long_name.take().unwrap_or_else(|| {
            let base = cstr(&header[0..100]);
            let prefix = if &header[257..262] == b"ustar" {
                cstr(&header[345..500])
            } else {
                String::new()
            };
            if prefix.is_empty() {
                base
            } else {
                format!("{prefix}/{base}")
            }
        });
        let name = name.trim_start_matches("./").to_string();
        match kind {
            b'x' | b'L' if size <= MAX_MANIFEST => {
                let data = read_n(file, size)?;
                file.seek(SeekFrom::Current((padded - size) as i64))
                    .map_err(|e| e.to_string())?;
                long_name = if kind == b'L' {
                    Some(cstr(&data))
                } else {
                    pax_path(&data)
                };
            }
            b'0' | 0 if name == wanted => {
                if size > MAX_MANIFEST {
                    return Err(format!("its {wanted} is larger than {MAX_MANIFEST} bytes"));
                }
                return read_n(file, size).map(Some);
            }
            _ => {
                file.seek(SeekFrom::Current(padded as i64))
                    .map_err(|e| e.to_string())?;
            }
        }
    }
}

fn read_n<F: Read>(file: &mut F, n: u64) -> Result<Vec<u8>, String> {
    let mut data = vec![0u8; n as usize];
    file.read_exact(&mut data)
        .map_err(|_| "it ends inside a member".to_string())?;
    Ok(data)
}

fn octal(field: &[u8]) -> u64 {
    field
        .iter()
        .skip_while(|b| **b == b' ')
        .take_while(|b| (b'0'..=b'7').contains(*b))
        .fold(0, |n, b| n * 8 + (b - b'0') as u64)
}

fn cstr(field: &[u8]) -> String {
    let end = field.iter().position(|b| *b == 0).unwrap_or(field.len());
    String::from_utf8_lossy(&field[..end]).into_owned()
}

/// The `path` record of a pax extended header (`<len> path=<value>\n`).
fn pax_path(data: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(data);
    text.lines().find_map(|l| {
        let (_, record) = l.split_once(' ')?;
        record.strip_prefix("path=").map(str::to_string)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ustar file with the given members.
    fn tar(members: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, data) in members {
            let mut h = [0u8; 512];
            h[..name.len()].copy_from_slice(name.as_bytes());
            h[100..107].copy_from_slice(b"0000644");
            h[124..135].copy_from_slice(format!("{:011o}", data.len()).as_bytes());
            h[156] = b'0';
            h[257..262].copy_from_slice(b"ustar");
            h[148..156].copy_from_slice(b"        ");
            let sum: u32 = h.iter().map(|b| *b as u32).sum();
            h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
            out.extend_from_slice(&h);
            out.extend_from_slice(data);
            out.resize(out.len().div_ceil(512) * 512, 0);
        }
        out.resize(out.len() + 1024, 0);
        out
    }

    #[test]
    fn repo_tags_come_from_the_manifest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.tar");
        let manifest = br#"[{"Config":"c.json","RepoTags":["team/app:1","team/app:latest"],"Layers":[]},{"Config":"d.json","RepoTags":null,"Layers":[]}]"#;
        std::fs::write(
            &path,
            tar(&[
                ("abc/layer.tar", &[1u8; 700][..]),
                ("manifest.json", manifest),
            ]),
        )
        .unwrap();
        assert_eq!(
            repo_tags(&path).unwrap(),
            vec!["team/app:1".to_string(), "team/app:latest".to_string()]
        );
    }

    #[test]
    fn other_files_are_refused_with_a_reason() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.tar");
        std::fs::write(&path, tar(&[("hello.txt", b"hi")])).unwrap();
        assert!(repo_tags(&path).unwrap_err().contains("no manifest.json"));
        std::fs::write(&path, vec![7u8; 2000]).unwrap();
        assert!(repo_tags(&path).unwrap_err().contains("not a tar file"));
    }
}
