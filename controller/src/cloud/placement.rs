//! Where a cloud environment goes: which account, which instance type,
//! which machine image. Pure: the accounts and the table come in.

use metrom_protocol::messages::env::Resources;
use serde::{Deserialize, Serialize};

use super::config::InstanceType;
use crate::store::CloudAccountRecord;

/// An environment's place in a cloud, recorded on the environment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CloudPlacement {
    pub account: String,
    pub provider: String,
    pub region: String,
    pub instance_type: String,
    /// The machine image (AMI) the instance boots.
    pub image: String,
    /// Price per hour of the type when it was chosen.
    #[serde(default)]
    pub hourly: f64,
    /// The instance of the current build, once launched.
    #[serde(default)]
    pub instance_id: Option<String>,
    /// The build `instance_id` runs.
    #[serde(default)]
    pub instance_build: u64,
    /// A launch was sent for the current build (it may exist even if no
    /// answer came back).
    #[serde(default)]
    pub launch_sent: bool,
    /// No provider call for this environment before then (after a failure).
    #[serde(default)]
    pub retry_at: Option<jiff::Timestamp>,
    /// Addresses of the instance, as last listed.
    #[serde(default)]
    pub addresses: Vec<String>,
}

impl CloudPlacement {
    /// `aws:ACCOUNT/REGION`, as env list and show print the place.
    pub fn place(&self) -> String {
        format!("{}:{}/{}", self.provider, self.account, self.region)
    }
}

/// Why no cloud account can take an environment.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CloudPlaceError {
    #[error(
        "no cloud account is configured (an admin adds one with `metrom cloud add aws NAME --region R --image-map IMAGE=ami-…`)"
    )]
    NoAccount,
    #[error(
        "no instance type in controller.toml [[cloud.instance_types]] has {vcpus} vCPUs and {memory_mb} MiB (largest: {largest}); add a larger type"
    )]
    NoInstanceType {
        vcpus: u32,
        memory_mb: u64,
        largest: String,
    },
    #[error(
        "the template needs base image '{image}', which no cloud account maps to a machine image (accounts: {accounts}); add it with `metrom cloud add … --image-map {image}=ami-…` (remove and add the account again to change its map)"
    )]
    NoImage { image: String, accounts: String },
    #[error("the template names no base image (`image` in metrom.toml), which a cloud VM needs")]
    NoTemplateImage,
}

/// The smallest instance type with at least these vCPUs and memory: fewest
/// vCPUs, then least memory, then cheapest, then by name.
pub fn instance_type(
    table: &[InstanceType],
    want: Resources,
) -> Result<&InstanceType, CloudPlaceError> {
    table
        .iter()
        .filter(|t| t.vcpus >= want.vcpus && t.memory_mb() >= want.memory_mb)
        .min_by(|a, b| {
            (a.vcpus, a.memory_mb())
                .cmp(&(b.vcpus, b.memory_mb()))
                .then(a.hourly.total_cmp(&b.hourly))
                .then(a.name.cmp(&b.name))
        })
        .ok_or_else(|| CloudPlaceError::NoInstanceType {
            vcpus: want.vcpus,
            memory_mb: want.memory_mb,
            largest: table
                .iter()
                .max_by_key(|t| (t.vcpus, t.memory_mb()))
                .map(|t| format!("{} with {} vCPUs, {}", t.name, t.vcpus, t.memory))
                .unwrap_or_else(|| "none".into()),
        })
}

/// Chooses the account (the first by name whose image map has the
/// template's image) and the instance type.
pub fn place(
    accounts: &[CloudAccountRecord],
    table: &[InstanceType],
    image: Option<&str>,
    want: Resources,
) -> Result<CloudPlacement, CloudPlaceError> {
    if accounts.is_empty() {
        return Err(CloudPlaceError::NoAccount);
    }
    let image = image.ok_or(CloudPlaceError::NoTemplateImage)?;
    let t = instance_type(table, want)?;
    let mut sorted: Vec<&CloudAccountRecord> = accounts.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    let (account, ami) = sorted
        .iter()
        .find_map(|a| a.image_map.get(image).map(|ami| (*a, ami)))
        .ok_or_else(|| CloudPlaceError::NoImage {
            image: image.to_string(),
            accounts: sorted
                .iter()
                .map(|a| a.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        })?;
    Ok(CloudPlacement {
        account: account.name.clone(),
        provider: account.provider.clone(),
        region: account.region.clone(),
        instance_type: t.name.clone(),
        image: ami.clone(),
        hourly: t.hourly,
        instance_id: None,
        instance_build: 0,
        launch_sent: false,
        retry_at: None,
        addresses: vec![],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloud::config::CloudConfig;

    fn account(name: &str, images: &[(&str, &str)]) -> CloudAccountRecord {
        CloudAccountRecord {
            name: name.into(),
            provider: "aws".into(),
            region: "eu-west-1".into(),
            profile: None,
            endpoint: None,
            subnet: None,
            security_group: None,
            key_name: None,
            image_map: images
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            added_at: jiff::Timestamp::now(),
            added_by: "admin".into(),
        }
    }

    fn res(vcpus: u32, memory_mb: u64) -> Resources {
        Resources {
            vcpus,
            memory_mb,
            disk_gb: 10,
        }
    }

    #[test]
    fn the_smallest_type_that_fits_is_chosen() {
        let table = CloudConfig::default().instance_types;
        assert_eq!(instance_type(&table, res(1, 512)).unwrap().name, "t3.micro");
        assert_eq!(
            instance_type(&table, res(2, 4096)).unwrap().name,
            "t3.medium"
        );
        assert_eq!(
            instance_type(&table, res(2, 4097)).unwrap().name,
            "t3.large"
        );
        assert_eq!(
            instance_type(&table, res(3, 1024)).unwrap().name,
            "t3.xlarge"
        );
        let err = instance_type(&table, res(64, 512 * 1024))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("m5.16xlarge") && err.contains("[[cloud.instance_types]]"),
            "{err}"
        );
    }

    #[test]
    fn the_first_account_mapping_the_image_is_chosen() {
        let table = CloudConfig::default().instance_types;
        let accounts = vec![
            account("b", &[("debian-12", "ami-b")]),
            account("a", &[("ubuntu", "ami-u")]),
            account("c", &[("debian-12", "ami-c")]),
        ];
        let p = place(&accounts, &table, Some("debian-12"), res(2, 2048)).unwrap();
        assert_eq!((p.account.as_str(), p.image.as_str()), ("b", "ami-b"));
        assert_eq!(p.instance_type, "t3.small");
        assert_eq!(p.place(), "aws:b/eu-west-1");
        let err = place(&accounts, &table, Some("alpine"), res(1, 512)).unwrap_err();
        assert!(err.to_string().contains("--image-map alpine=ami-"), "{err}");
        assert_eq!(
            place(&[], &table, Some("x"), res(1, 512)).unwrap_err(),
            CloudPlaceError::NoAccount
        );
    }
}
