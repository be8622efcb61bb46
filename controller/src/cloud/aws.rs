//! The AWS EC2 provider: [`CloudProvider`] over `metrom-cloud-aws`.

use std::collections::BTreeMap;
use std::sync::Arc;

use jiff::Timestamp;
use metrom_cloud_aws::{AccountConfig, CallPolicy, Ec2, Ec2Error};

use super::provider::{
    CloudError, CloudErrorKind, CloudProvider, Connector, Instance, InstanceState, LaunchSpec,
    ListScope, ProviderSettings, TAG_CONTROLLER,
};
use crate::store::CloudAccountRecord;

/// Connects accounts whose provider is "aws".
#[derive(Debug, Default)]
pub struct AwsConnector;

#[async_trait::async_trait]
impl Connector for AwsConnector {
    async fn connect(
        &self,
        account: &CloudAccountRecord,
        settings: &ProviderSettings,
    ) -> Result<Arc<dyn CloudProvider>, CloudError> {
        if account.provider != "aws" {
            return Err(CloudError::new(
                CloudErrorKind::Unsupported,
                format!(
                    "cloud account {}: provider '{}' is not supported (supported: aws)",
                    account.name, account.provider
                ),
            ));
        }
        let config = AccountConfig {
            name: account.name.clone(),
            region: account.region.clone(),
            profile: account.profile.clone(),
            endpoint: account.endpoint.clone(),
        };
        let policy = CallPolicy {
            max_attempts: settings.max_attempts,
            initial_backoff: settings.initial_backoff,
            max_backoff: settings.max_backoff,
            ..CallPolicy::default()
        };
        let ec2 = Ec2::connect(&config, policy).await.map_err(convert)?;
        Ok(Arc::new(Aws {
            ec2,
            prices: settings.prices.clone(),
        }))
    }
}

struct Aws {
    ec2: Ec2,
    prices: BTreeMap<String, f64>,
}

#[async_trait::async_trait]
impl CloudProvider for Aws {
    async fn launch(&self, spec: &LaunchSpec) -> Result<Instance, CloudError> {
        let req = metrom_cloud_aws::RunInstance {
            image_id: spec.image.clone(),
            instance_type: spec.instance_type.clone(),
            user_data: spec.user_data.clone(),
            client_token: spec.client_token.clone(),
            tags: spec
                .tags
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            subnet: spec.subnet.clone(),
            security_group: spec.security_group.clone(),
            key_name: spec.key_name.clone(),
        };
        self.ec2
            .run_instance(&req)
            .await
            .map(instance)
            .map_err(convert)
    }

    async fn start(&self, ids: &[String]) -> Result<(), CloudError> {
        self.ec2.start(ids).await.map_err(convert)
    }

    async fn stop(&self, ids: &[String]) -> Result<(), CloudError> {
        self.ec2.stop(ids).await.map_err(convert)
    }

    async fn terminate(&self, ids: &[String]) -> Result<(), CloudError> {
        self.ec2.terminate(ids).await.map_err(convert)
    }

    async fn list(&self, scope: ListScope<'_>) -> Result<Vec<Instance>, CloudError> {
        let filter = match scope {
            ListScope::All => None,
            ListScope::Controller(c) => Some((TAG_CONTROLLER, vec![c.to_string()])),
        };
        Ok(self
            .ec2
            .describe(filter)
            .await
            .map_err(convert)?
            .into_iter()
            .map(instance)
            .collect())
    }

    fn price(&self, instance_type: &str) -> Option<f64> {
        self.prices.get(instance_type).copied()
    }
}

fn instance(i: metrom_cloud_aws::Instance) -> Instance {
    Instance {
        state: InstanceState::parse(&i.state),
        launched_at: i.launch_time.and_then(|s| Timestamp::from_second(s).ok()),
        tags: i.tags.into_iter().collect(),
        id: i.id,
        instance_type: i.instance_type,
        image: i.image_id,
        private_ip: i.private_ip,
        public_ip: i.public_ip,
    }
}

fn convert(e: Ec2Error) -> CloudError {
    let kind = match &e {
        Ec2Error::Credentials { .. } => CloudErrorKind::Credentials,
        Ec2Error::Auth { .. } => CloudErrorKind::Auth,
        Ec2Error::Throttled { .. } => CloudErrorKind::Throttled,
        Ec2Error::Unreachable { .. } => CloudErrorKind::Unreachable,
        Ec2Error::Service { status, .. } if *status >= 500 => CloudErrorKind::ServerError,
        Ec2Error::Service { .. } => CloudErrorKind::Refused,
        Ec2Error::Malformed { .. } => CloudErrorKind::Malformed,
    };
    CloudError::new(kind, e.to_string())
}
