//! The launch request of an environment's instance: the kvm runtime's
//! cloud-init user-data (same template, same provisioning), Metrom's tags,
//! and a client token that makes a retried launch harmless.

use std::collections::BTreeMap;
use std::io::Write;

use metrom_protocol::cloudinit::{self, GuestSettings};

use super::CloudPlacement;
use super::provider::{
    LaunchSpec, TAG_BUILD, TAG_CONTROLLER, TAG_ENV, TAG_NAME, TAG_OWNER, TAG_TEMPLATE,
};
use crate::envs::spec;
use crate::state::Controller;
use crate::store::{CloudAccountRecord, EnvRecord};

/// EC2 takes at most 16 KiB of user-data (before base64).
pub const MAX_USER_DATA: usize = 16 * 1024;

/// Why an environment's instance cannot be described to the cloud.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error(transparent)]
    Spec(#[from] spec::SpecError),
    #[error("template {template}: {source}")]
    Template {
        template: String,
        /// Boxed: a template error is large and this one is rare.
        #[source]
        source: Box<metrom_protocol::template::TemplateError>,
    },
    #[error(
        "the cloud-init user-data of {name} is {size} bytes compressed; EC2 takes at most 16 KiB: make the template's files smaller"
    )]
    TooLarge { name: String, size: usize },
}

/// The request for the environment's current build.
pub fn spec(
    ctrl: &Controller,
    env: &EnvRecord,
    placement: &CloudPlacement,
    account: &CloudAccountRecord,
) -> Result<LaunchSpec, LaunchError> {
    let s = spec::build(ctrl, env)?;
    let template_err = |source| LaunchError::Template {
        template: env.template.clone(),
        source: Box::new(source),
    };
    let t = metrom_protocol::template::parse(s.template.files.clone()).map_err(template_err)?;
    let guest = GuestSettings::from_site(&s.site, &t);
    let seed = cloudinit::seed(&s, &t, &guest).map_err(template_err)?;
    let user_data = user_data(&env.name, seed.user_data)?;
    Ok(LaunchSpec {
        image: placement.image.clone(),
        instance_type: placement.instance_type.clone(),
        user_data,
        client_token: client_token(env),
        tags: tags(env, &ctrl.cloud.controller_id),
        subnet: account.subnet.clone(),
        security_group: account.security_group.clone(),
        key_name: account.key_name.clone(),
    })
}

/// `metrom-<env id>-<build>`: the same for every retry of one build's launch.
pub fn client_token(env: &EnvRecord) -> String {
    format!("metrom-{}-{}", env.id, env.build)
}

/// The tags every instance of an environment carries.
pub fn tags(env: &EnvRecord, controller: &str) -> BTreeMap<String, String> {
    [
        (TAG_ENV, env.id.to_string()),
        (TAG_OWNER, env.owner.clone()),
        (TAG_CONTROLLER, controller.to_string()),
        (TAG_BUILD, env.build.to_string()),
        (TAG_TEMPLATE, env.template.clone()),
        (TAG_NAME, env.name.clone()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// The user-data as is, or gzipped when larger than EC2 takes (cloud-init
/// recognises gzip).
fn user_data(name: &str, text: String) -> Result<Vec<u8>, LaunchError> {
    if text.len() <= MAX_USER_DATA {
        return Ok(text.into_bytes());
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(text.as_bytes()).expect("writing to memory");
    let packed = gz.finish().expect("writing to memory");
    if packed.len() > MAX_USER_DATA {
        return Err(LaunchError::TooLarge {
            name: name.to_string(),
            size: packed.len(),
        });
    }
    Ok(packed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_user_data_is_gzipped_and_too_large_refused() {
        assert_eq!(
            user_data("a", "#cloud-config\n".into()).unwrap(),
            b"#cloud-config\n"
        );
        let big = format!("#cloud-config\n{}", "x".repeat(40_000));
        let packed = user_data("a", big).unwrap();
        assert_eq!(&packed[..2], &[0x1f, 0x8b]);
        let mut noise = String::new();
        let mut x: u64 = 1;
        for _ in 0..40_000 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            noise.push(char::from(b'a' + (x >> 59) as u8 % 26));
        }
        let err = user_data("a", noise).unwrap_err().to_string();
        assert!(err.contains("at most 16 KiB"), "{err}");
    }
}
