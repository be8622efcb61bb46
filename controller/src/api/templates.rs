//! template push / list / show / versions / pull.

use jiff::Timestamp;
use metrom_protocol::messages::api::{
    ApiError, ApiResponse, ParamView, Reply, TemplateDetail, TemplatePushed, TemplateSummary,
    TemplateVersionView,
};
use metrom_protocol::messages::env::TemplateFile;
use metrom_protocol::template::{self, RuntimePref, Template};

use super::{Caller, durable, store_err};
use crate::envs::SECRET_MASK;
use crate::state::Controller;
use crate::store::{TemplateRecord, TemplateVersionMeta, TemplateVersionRecord};

pub(super) async fn push(
    ctrl: &Controller,
    caller: &Caller,
    files: Vec<TemplateFile>,
) -> ApiResponse {
    for f in &files {
        template::check_file_path(&f.path).map_err(|e| ApiError::invalid(e.to_string()))?;
    }
    let t = template::parse(files).map_err(|e| ApiError::invalid(e.to_string()))?;
    check_image(ctrl, &t)?;
    crate::policy::levels::check_template(&ctrl.config.policies, &t.manifest.policies)
        .map_err(|e| ApiError::invalid(format!("template {}: {e}", t.manifest.name)))?;
    let name = t.manifest.name.clone();
    let version = t.digest.clone();
    let existing = ctrl.store.templates.get(&name).map_err(store_err)?;
    if let Some(rec) = &existing
        && rec.owner != caller.name
        && !caller.is_admin()
    {
        return Err(ApiError::denied(format!(
            "template {name} belongs to {}; push your variant under another name (change `name` in metrom.toml)",
            rec.owner
        )));
    }
    let key = format!("{name}@{version}");
    let created = !ctrl
        .store
        .template_versions
        .contains(&key)
        .map_err(store_err)?;
    if created {
        let rec = TemplateVersionRecord {
            name: name.clone(),
            version: version.clone(),
            files: t.files.clone(),
        };
        ctrl.store
            .template_versions
            .put(&key, &rec)
            .map_err(store_err)?;
    }
    let meta = TemplateVersionMeta {
        version: version.clone(),
        pushed_at: Timestamp::now(),
        pushed_by: caller.name.clone(),
    };
    let description = t.manifest.description.clone();
    let owner = caller.name.clone();
    let res = ctrl
        .store
        .templates
        .update(&name, |rec| -> Result<Option<TemplateRecord>, ()> {
            let mut rec = rec.unwrap_or_else(|| TemplateRecord {
                name: name.clone(),
                description: description.clone(),
                owner: owner.clone(),
                versions: Vec::new(),
            });
            // The latest version is the most recently pushed content.
            rec.versions.retain(|v| v.version != version);
            rec.versions.push(meta.clone());
            rec.description = description.clone();
            Ok(Some(rec))
        })
        .map_err(store_err)?;
    let _ = res;
    durable(ctrl).await?;
    Ok(Reply::TemplatePushed(TemplatePushed {
        name,
        version,
        created,
    }))
}

pub(super) fn list(ctrl: &Controller) -> ApiResponse {
    let all = ctrl.store.templates.list().map_err(store_err)?;
    Ok(Reply::Templates(
        all.into_iter()
            .map(|(_, t)| TemplateSummary {
                latest: t.latest().version.clone(),
                updated_at: t.latest().pushed_at,
                versions: t.versions.len() as u32,
                name: t.name,
                description: t.description,
                owner: t.owner,
            })
            .collect(),
    ))
}

pub(super) fn versions(ctrl: &Controller, name: &str) -> ApiResponse {
    let rec = get(ctrl, name)?;
    let latest = rec.latest().version.clone();
    Ok(Reply::TemplateVersions(
        rec.versions
            .iter()
            .map(|v| TemplateVersionView {
                version: v.version.clone(),
                pushed_at: v.pushed_at,
                pushed_by: v.pushed_by.clone(),
                latest: v.version == latest,
            })
            .collect(),
    ))
}

pub(super) fn show(ctrl: &Controller, name: &str, version: Option<&str>) -> ApiResponse {
    let (rec, meta) = resolve(ctrl, name, version)?;
    let t = load(ctrl, &rec.name, &meta.version)?;
    let m = &t.manifest;
    let detail = TemplateDetail {
        name: rec.name.clone(),
        version: meta.version.clone(),
        description: m.description.clone(),
        pushed_at: meta.pushed_at,
        pushed_by: meta.pushed_by.clone(),
        latest: rec.latest().version == meta.version,
        runtime: m.runtime.iter().map(runtime_name).collect(),
        image: m.image.clone(),
        resources: m.resources,
        ports: m
            .ports
            .iter()
            .map(|p| format!("{} {}/{}", p.name, p.port, p.protocol))
            .collect(),
        packages: m.packages.clone(),
        repos: m.repos.iter().map(|r| r.to_string()).collect(),
        params: m
            .params
            .iter()
            .map(|(k, p)| ParamView {
                name: k.clone(),
                default: p.default.as_ref().map(|d| {
                    if p.secret {
                        SECRET_MASK.to_string()
                    } else {
                        d.clone()
                    }
                }),
                description: p.description.clone(),
                required: p.default.is_none(),
                secret: p.secret,
            })
            .collect(),
        services: t
            .compose
            .services
            .iter()
            .map(|(n, s)| format!("{n}: {}", s.summary()))
            .collect(),
        policies: m.policies.summary(),
        files: t
            .files
            .iter()
            .map(|f| (f.path.clone(), f.contents.len() as u64))
            .collect(),
    };
    Ok(Reply::Template(detail))
}

pub(super) fn pull(ctrl: &Controller, name: &str, version: Option<&str>) -> ApiResponse {
    let (rec, meta) = resolve(ctrl, name, version)?;
    let v = ctrl
        .store
        .template_versions
        .get(&format!("{}@{}", rec.name, meta.version))
        .map_err(store_err)?
        .ok_or_else(|| ApiError::internal("template files missing from the store"))?;
    Ok(Reply::TemplateFiles {
        name: v.name,
        version: v.version,
        files: v.files,
    })
}

/// A template and one of its versions: a digest, a unique prefix of one, or
/// None / "latest" for the latest.
pub fn resolve(
    ctrl: &Controller,
    name: &str,
    version: Option<&str>,
) -> Result<(TemplateRecord, TemplateVersionMeta), ApiError> {
    let rec = get(ctrl, name)?;
    let meta = match version {
        None | Some("latest") => rec.latest().clone(),
        Some(v) => {
            let want = v.strip_prefix("sha256:").unwrap_or(v);
            let hits: Vec<&TemplateVersionMeta> = rec
                .versions
                .iter()
                .filter(|m| m.version.trim_start_matches("sha256:").starts_with(want))
                .collect();
            match hits.as_slice() {
                [one] => (*one).clone(),
                [] => {
                    return Err(ApiError::not_found(format!(
                        "template {name} has no version {v}; see `metrom template versions {name}`"
                    )));
                }
                _ => {
                    return Err(ApiError::invalid(format!(
                        "version {v} of template {name} is ambiguous; give more digits"
                    )));
                }
            }
        }
    };
    Ok((rec, meta))
}

/// Parses a stored template version.
pub fn load(ctrl: &Controller, name: &str, version: &str) -> Result<Template, ApiError> {
    let v = ctrl
        .store
        .template_versions
        .get(&format!("{name}@{version}"))
        .map_err(store_err)?
        .ok_or_else(|| {
            ApiError::internal(format!(
                "template {name}@{version} is missing from the store"
            ))
        })?;
    template::parse(v.files)
        .map_err(|e| ApiError::internal(format!("stored template no longer parses: {e}")))
}

fn get(ctrl: &Controller, name: &str) -> Result<TemplateRecord, ApiError> {
    ctrl.store
        .templates
        .get(name)
        .map_err(store_err)?
        .ok_or_else(|| {
            ApiError::not_found(format!("no template {name}; see `metrom template list`"))
        })
}

fn runtime_name(r: &RuntimePref) -> String {
    match r {
        RuntimePref::Kvm => "kvm",
        RuntimePref::Docker => "docker",
        RuntimePref::Cloud => "cloud",
    }
    .to_string()
}

/// A template whose VMs boot from a base image needs that image imported,
/// or, when it may run in the cloud, mapped to a machine image by a cloud
/// account.
fn check_image(ctrl: &Controller, t: &Template) -> Result<(), ApiError> {
    let needs_image = t
        .manifest
        .runtime
        .iter()
        .any(|r| matches!(r, RuntimePref::Kvm | RuntimePref::Cloud));
    let Some(image) = &t.manifest.image else {
        return Ok(());
    };
    if !needs_image || ctrl.store.images.contains(image).map_err(store_err)? {
        return Ok(());
    }
    let cloud_ok = t.manifest.runtime.contains(&RuntimePref::Cloud);
    let mapped = cloud_ok
        && ctrl
            .store
            .cloud_accounts
            .values()
            .map_err(store_err)?
            .iter()
            .any(|a| a.image_map.contains_key(image));
    if mapped {
        return Ok(());
    }
    let line = t
        .files
        .iter()
        .find(|f| f.path == "metrom.toml")
        .and_then(|f| {
            String::from_utf8_lossy(&f.contents)
                .lines()
                .position(|l| l.trim_start().starts_with("image") && l.contains('='))
                .map(|i| format!(" line {}", i + 1))
        })
        .unwrap_or_default();
    let or_map = if cloud_ok {
        format!(" (or map it for the cloud: metrom cloud add … --image-map {image}=ami-…)")
    } else {
        String::new()
    };
    Err(ApiError::invalid(format!(
        "template {}: metrom.toml{line}: key 'image': base image '{image}' is not in the image store; \
         import it first (metrom image import FILE --name {image}){or_map} or see `metrom image list`",
        t.manifest.name
    )))
}
