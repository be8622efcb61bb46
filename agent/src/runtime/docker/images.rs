//! The images an environment's services run: present locally, loaded from a
//! `docker save` archive the controller holds, or pulled from the registry —
//! in that order. Compose images that name no registry are qualified with the
//! template's `registry`, else agent.toml's `registry`, else the site's.

use std::collections::HashMap;
use std::path::Path;

use bollard::query_parameters::{CreateImageOptions, ImportImageOptions, TagImageOptions};
use futures::StreamExt;
use metrom_protocol::messages::env::{DockerArchiveRef, EnvSpec};
use metrom_protocol::template::Compose;
use tracing::info;

use super::{DockerRuntime, api_error, docker_message, is_not_found};
use crate::runtime::{Progress, RuntimeError};
use crate::transfer::{self, Artifact};

/// The registry for images that name none, and whether it is plain HTTP.
pub fn registry_for(
    template_registry: Option<&str>,
    rt: &DockerRuntime,
    spec: &EnvSpec,
) -> Option<(String, bool)> {
    if let Some(r) = template_registry {
        return Some((
            r.to_string(),
            rt.settings.registry_insecure || spec.site.registry_insecure,
        ));
    }
    if let Some(r) = &rt.settings.registry {
        return Some((r.clone(), rt.settings.registry_insecure));
    }
    spec.site
        .registry
        .clone()
        .map(|r| (r, spec.site.registry_insecure))
}

/// Makes every image of `compose` (already qualified) present locally.
/// Nothing else is created here, so a missing image leaves nothing behind.
pub async fn ensure(
    rt: &DockerRuntime,
    spec: &EnvSpec,
    compose: &Compose,
    written: &HashMap<String, String>,
    registry: Option<&(String, bool)>,
    progress: &Progress,
) -> Result<(), RuntimeError> {
    for image in compose.images() {
        if present(rt, image).await? {
            continue;
        }
        let as_written = written.get(image).map(String::as_str).unwrap_or(image);
        let archive = spec
            .docker_archives
            .iter()
            .find_map(|a| a.provides(image).or(a.provides(as_written)).map(|r| (a, r)));
        match archive {
            Some((a, reference)) => load_archive(rt, a, reference, image, progress).await?,
            None => pull(rt, image, registry, progress).await?,
        }
    }
    Ok(())
}

async fn present(rt: &DockerRuntime, image: &str) -> Result<bool, RuntimeError> {
    match rt.docker.inspect_image(image).await {
        Ok(_) => Ok(true),
        Err(e) if is_not_found(&e) => Ok(false),
        Err(e) => Err(api_error(&format!("image {image}"), e)),
    }
}

/// `name:tag` with `:latest` added when the reference has neither tag nor digest.
fn with_tag(image: &str) -> String {
    let last = image.rsplit('/').next().unwrap_or(image);
    if last.contains(':') || last.contains('@') {
        image.to_string()
    } else {
        format!("{image}:latest")
    }
}

async fn pull(
    rt: &DockerRuntime,
    image: &str,
    registry: Option<&(String, bool)>,
    progress: &Progress,
) -> Result<(), RuntimeError> {
    let from = match registry {
        Some((r, _)) if image.starts_with(&format!("{r}/")) => format!("registry {r}"),
        _ => match image.split_once('/') {
            Some((host, _)) if host.contains(['.', ':']) || host == "localhost" => {
                format!("registry {host}")
            }
            _ => "Docker Hub (no registry is configured: set registry in agent.toml, the template or the controller's [site])".to_string(),
        },
    };
    progress.say(format!("pulling {image} from {from}"));
    info!(image, "pulling from {from}");
    let options = CreateImageOptions {
        from_image: Some(with_tag(image)),
        ..Default::default()
    };
    let mut stream = rt.docker.create_image(Some(options), None, None);
    let mut layers: HashMap<String, (i64, i64)> = HashMap::new();
    let mut last_pct = u64::MAX;
    while let Some(item) = stream.next().await {
        let info = match item {
            Ok(i) => i,
            Err(e) => {
                let mut why = docker_message(&e);
                if let Some((r, true)) = registry
                    && why.contains("HTTP response to HTTPS client")
                {
                    why.push_str(&format!(
                            " (registry {r} is plain HTTP: add it to dockerd's insecure-registries in /etc/docker/daemon.json)"
                        ));
                }
                let message = format!("cannot pull image {image} from {from}: {why}");
                return Err(match e {
                    bollard::errors::Error::DockerResponseServerError { .. }
                    | bollard::errors::Error::DockerStreamError { .. } => {
                        RuntimeError::Failed(message)
                    }
                    other => api_error(&message, other),
                });
            }
        };
        if let (Some(id), Some(detail)) = (&info.id, &info.progress_detail)
            && info.status.as_deref() == Some("Downloading")
            && let (Some(cur), Some(total)) = (detail.current, detail.total)
        {
            layers.insert(id.clone(), (cur, total));
        }
        if (info.status.as_deref() == Some("Download complete")
            || info.status.as_deref() == Some("Pull complete"))
            && let Some(id) = &info.id
            && let Some(l) = layers.get_mut(id)
        {
            l.0 = l.1;
        }
        let (cur, total) = layers
            .values()
            .fold((0i64, 0i64), |(c, t), (lc, lt)| (c + lc, t + lt));
        if total > 0 {
            let pct = (cur.max(0) as u64 * 100) / total as u64;
            if pct / 10 != last_pct / 10 {
                last_pct = pct;
                progress.say(format!(
                    "pulling {image}: {pct}% of {}",
                    human_bytes(total as u64)
                ));
            }
        }
    }
    Ok(())
}

/// Fetches an archive from the controller, loads it into dockerd and tags
/// `reference` (what the archive holds) as `image` (what the service runs).
async fn load_archive(
    rt: &DockerRuntime,
    archive: &DockerArchiveRef,
    reference: &str,
    image: &str,
    progress: &Progress,
) -> Result<(), RuntimeError> {
    let hex = archive.digest.trim_start_matches("sha256:");
    let path = rt.dir.join("archives").join(hex);
    progress.say(format!(
        "fetching image archive {} ({}) for {image} from the controller",
        short(&archive.digest),
        human_bytes(archive.size)
    ));
    transfer::fetch(
        &rt.link,
        Artifact::DockerArchive,
        &archive.digest,
        archive.size,
        &path,
        progress,
    )
    .await
    .map_err(|e| {
        RuntimeError::Failed(format!(
            "image {image}: fetching archive {} from the controller: {}",
            short(&archive.digest),
            crate::error_chain(&e)
        ))
    })?;
    progress.say(format!("loading image archive {}", short(&archive.digest)));
    let result = load_file(rt, &path).await;
    let _ = tokio::fs::remove_file(&path).await;
    result.map_err(|e| match e {
        RuntimeError::Failed(m) => RuntimeError::Failed(format!("image {image}: {m}")),
        other => other,
    })?;
    if reference != image {
        let (repo, tag) = split_tag(&with_tag(image));
        rt.docker
            .tag_image(
                reference,
                Some(TagImageOptions {
                    repo: Some(repo),
                    tag: Some(tag),
                }),
            )
            .await
            .map_err(|e| api_error(&format!("tagging {reference} as {image}"), e))?;
    }
    info!(image, archive = %archive.digest, "loaded from an archive");
    Ok(())
}

async fn load_file(rt: &DockerRuntime, path: &Path) -> Result<(), RuntimeError> {
    let file = tokio::fs::File::open(path)
        .await
        .map_err(|e| RuntimeError::Failed(format!("{}: {e}", path.display())))?;
    let chunks = futures::stream::unfold(file, |mut f| async move {
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0u8; 1 << 20];
        match f.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok::<_, std::io::Error>(bytes::Bytes::from(buf)), f))
            }
            Err(e) => Some((Err(e), f)),
        }
    });
    let mut out = rt
        .docker
        .import_image_stream(ImportImageOptions::default(), chunks, None);
    while let Some(item) = out.next().await {
        if let Err(e) = item {
            return Err(match e {
                bollard::errors::Error::DockerResponseServerError { .. }
                | bollard::errors::Error::DockerStreamError { .. } => RuntimeError::Failed(
                    format!("Docker could not load the archive: {}", docker_message(&e)),
                ),
                other => api_error("loading an image archive", other),
            });
        }
    }
    Ok(())
}

/// `repo:tag` → (`repo`, `tag`).
fn split_tag(image: &str) -> (String, String) {
    match image.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => (repo.to_string(), tag.to_string()),
        _ => (image.to_string(), "latest".to_string()),
    }
}

fn short(digest: &str) -> &str {
    &digest[..digest.len().min(19)]
}

pub fn human_bytes(n: u64) -> String {
    const MIB: f64 = 1024.0 * 1024.0;
    if n as f64 >= MIB {
        format!("{:.1} MiB", n as f64 / MIB)
    } else {
        format!("{:.0} KiB", (n as f64 / 1024.0).ceil())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_get_a_tag() {
        assert_eq!(with_tag("busybox"), "busybox:latest");
        assert_eq!(with_tag("127.0.0.1:5000/a/b"), "127.0.0.1:5000/a/b:latest");
        assert_eq!(with_tag("127.0.0.1:5000/a/b:1"), "127.0.0.1:5000/a/b:1");
        assert_eq!(with_tag("a@sha256:00"), "a@sha256:00");
        assert_eq!(
            split_tag("127.0.0.1:5000/a/b:1"),
            ("127.0.0.1:5000/a/b".into(), "1".into())
        );
    }
}
