//! The spec an agent receives for an environment: everything it needs to run
//! it, so the agent never has to call back for the template or settings.

use metrom_protocol::messages::env::{
    DockerArchiveRef, EnvSpec, Power, RuntimeKind, TemplateSnapshot,
};

use crate::state::Controller;
use crate::store::{Desired, EnvRecord, StoreError};

/// Why a spec could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("template {name}@{version} is missing from the store")]
    MissingTemplate { name: String, version: String },
}

pub fn build(ctrl: &Controller, r: &EnvRecord) -> Result<EnvSpec, SpecError> {
    let key = format!("{}@{}", r.template, r.version);
    let version =
        ctrl.store
            .template_versions
            .get(&key)?
            .ok_or_else(|| SpecError::MissingTemplate {
                name: r.template.clone(),
                version: r.version.clone(),
            })?;
    let docker_archives = docker_archives(ctrl, r, &version.files)?;
    let ssh_keys = ctrl
        .store
        .users
        .get(&r.owner)?
        .map(|u| u.ssh_keys)
        .unwrap_or_default();
    Ok(EnvSpec {
        env_id: r.id.clone(),
        name: r.name.clone(),
        owner: r.owner.clone(),
        generation: r.generation,
        build: r.build,
        power: if r.desired == Desired::Stopped {
            Power::Stopped
        } else {
            Power::Running
        },
        runtime: r.runtime,
        resources: r.resources,
        template: TemplateSnapshot {
            name: version.name,
            version: version.version,
            files: version.files,
        },
        params: r
            .params
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        image: r.image.clone(),
        ssh_keys,
        site: ctrl.config.site.clone(),
        docker_archives,
    })
}

/// The `docker save` archives that provide images of the environment's
/// compose file, for the Docker runtime (the agent loads one when it lacks
/// the image). A compose file that does not parse gets none: the agent
/// reports the template error itself.
fn docker_archives(
    ctrl: &Controller,
    r: &EnvRecord,
    files: &[metrom_protocol::messages::env::TemplateFile],
) -> Result<Vec<DockerArchiveRef>, SpecError> {
    if r.runtime != RuntimeKind::Docker {
        return Ok(Vec::new());
    }
    let Ok(compose) =
        metrom_protocol::template::parse(files.to_vec()).and_then(|t| t.compose_for(&r.params))
    else {
        return Ok(Vec::new());
    };
    Ok(crate::api::docker_archives::providing(
        ctrl,
        &compose.images(),
    )?)
}
