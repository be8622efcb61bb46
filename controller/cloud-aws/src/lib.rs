//! The EC2 calls Metrom's cloud broker makes, over `aws-sdk-ec2`.
//!
//! Plain types in, plain types out: the controller's `CloudProvider` adapts
//! them, so the SDK's generic code is compiled here once and not in every
//! rebuild of the controller.
//!
//! - TLS: rustls with the ring provider (no aws-lc), trusting the system's
//!   roots; plain `http://` endpoints (private or test servers) work too.
//! - Credentials: the standard sources only, in the standard order —
//!   `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`(/`AWS_SESSION_TOKEN`) from
//!   the environment, then the shared files (`~/.aws/credentials`,
//!   `~/.aws/config`, `AWS_PROFILE`); with a profile given, that profile
//!   only. No instance metadata lookups: nothing leaves for a link-local
//!   address. Credential values are never formatted into errors or logs.
//! - Retries: the SDK's standard strategy, bounded — exponential backoff with
//!   jitter on throttling (`RequestLimitExceeded`, `Throttling`, …), on 5xx
//!   answers and on transport errors.

mod error;

use std::time::Duration;

use aws_config::environment::EnvironmentVariableCredentialsProvider;
use aws_config::meta::credentials::CredentialsProviderChain;
use aws_config::profile::ProfileFileCredentialsProvider;
use aws_config::provider_config::ProviderConfig;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_sdk_ec2::config::retry::RetryConfig;
use aws_sdk_ec2::config::timeout::TimeoutConfig;
use aws_sdk_ec2::config::{BehaviorVersion, Region, SharedHttpClient};
use aws_sdk_ec2::types::{Filter, InstanceType, ResourceType, Tag, TagSpecification};
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
use base64::Engine;

pub use error::Ec2Error;

/// Where and as whom to call EC2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountConfig {
    /// Metrom's name of the account (for messages).
    pub name: String,
    pub region: String,
    /// A profile of the shared AWS files; `None`: environment, then the default profile.
    pub profile: Option<String>,
    /// A private or test endpoint (`https://ec2.internal.example`, `http://127.0.0.1:5000`).
    pub endpoint: Option<String>,
}

/// Retries and timeouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallPolicy {
    /// Attempts per call, the first included (at least 1).
    pub max_attempts: u32,
    /// First backoff; doubles per attempt, with jitter.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    pub connect_timeout: Duration,
    /// One attempt.
    pub attempt_timeout: Duration,
}

impl Default for CallPolicy {
    fn default() -> Self {
        CallPolicy {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(20),
            connect_timeout: Duration::from_secs(5),
            attempt_timeout: Duration::from_secs(30),
        }
    }
}

/// One instance to launch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunInstance {
    pub image_id: String,
    pub instance_type: String,
    /// cloud-init user-data (base64-encoded here, as EC2 wants it; at most 16 KiB).
    pub user_data: Vec<u8>,
    /// Idempotency token: a retried call with the same token launches nothing new.
    pub client_token: String,
    pub tags: Vec<(String, String)>,
    pub subnet: Option<String>,
    pub security_group: Option<String>,
    pub key_name: Option<String>,
}

/// An instance as DescribeInstances shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    pub id: String,
    /// pending, running, shutting-down, terminated, stopping, stopped.
    pub state: String,
    pub instance_type: String,
    pub image_id: String,
    /// Unix seconds.
    pub launch_time: Option<i64>,
    pub tags: Vec<(String, String)>,
    pub private_ip: Option<String>,
    pub public_ip: Option<String>,
}

/// A connected EC2 client for one account and region.
#[derive(Debug, Clone)]
pub struct Ec2 {
    client: aws_sdk_ec2::Client,
    account: String,
    endpoint: String,
}

impl Ec2 {
    /// Builds the client and checks that credentials can be found (without
    /// calling AWS). Credentials are refreshed by their provider as needed.
    pub async fn connect(account: &AccountConfig, policy: CallPolicy) -> Result<Ec2, Ec2Error> {
        let http = http_client();
        let region = Region::new(account.region.clone());
        let provider_config = ProviderConfig::default()
            .with_http_client(http.clone())
            .with_region(Some(region.clone()));
        let credentials = credentials(account, &provider_config);
        if let Err(e) = credentials.provide_credentials().await {
            return Err(Ec2Error::Credentials {
                account: account.name.clone(),
                profile: account.profile.clone(),
                detail: error::chain(&e),
            });
        }
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(policy.connect_timeout)
            .operation_attempt_timeout(policy.attempt_timeout)
            .build();
        let retry = RetryConfig::standard()
            .with_max_attempts(policy.max_attempts.max(1))
            .with_initial_backoff(policy.initial_backoff)
            .with_max_backoff(policy.max_backoff);
        let mut conf = aws_sdk_ec2::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(region)
            .credentials_provider(credentials)
            .http_client(http)
            .retry_config(retry)
            .timeout_config(timeouts);
        if let Some(e) = &account.endpoint {
            conf = conf.endpoint_url(e);
        }
        Ok(Ec2 {
            client: aws_sdk_ec2::Client::from_conf(conf.build()),
            account: account.name.clone(),
            endpoint: account
                .endpoint
                .clone()
                .unwrap_or_else(|| format!("https://ec2.{}.amazonaws.com", account.region)),
        })
    }

    /// RunInstances for one instance.
    pub async fn run_instance(&self, req: &RunInstance) -> Result<Instance, Ec2Error> {
        let tags = TagSpecification::builder()
            .resource_type(ResourceType::Instance)
            .set_tags(Some(
                req.tags
                    .iter()
                    .map(|(k, v)| Tag::builder().key(k).value(v).build())
                    .collect(),
            ))
            .build();
        let out = self
            .client
            .run_instances()
            .image_id(&req.image_id)
            .instance_type(InstanceType::from(req.instance_type.as_str()))
            .min_count(1)
            .max_count(1)
            .user_data(base64::engine::general_purpose::STANDARD.encode(&req.user_data))
            .client_token(&req.client_token)
            .tag_specifications(tags)
            .set_subnet_id(req.subnet.clone())
            .set_security_group_ids(req.security_group.clone().map(|g| vec![g]))
            .set_key_name(req.key_name.clone())
            .send()
            .await
            .map_err(|e| self.error("RunInstances", e))?;
        out.instances()
            .first()
            .map(instance)
            .ok_or_else(|| Ec2Error::Malformed {
                account: self.account.clone(),
                call: "RunInstances",
                detail: "the answer lists no instance".into(),
            })
    }

    pub async fn start(&self, ids: &[String]) -> Result<(), Ec2Error> {
        self.client
            .start_instances()
            .set_instance_ids(Some(ids.to_vec()))
            .send()
            .await
            .map_err(|e| self.error("StartInstances", e))?;
        Ok(())
    }

    pub async fn stop(&self, ids: &[String]) -> Result<(), Ec2Error> {
        self.client
            .stop_instances()
            .set_instance_ids(Some(ids.to_vec()))
            .send()
            .await
            .map_err(|e| self.error("StopInstances", e))?;
        Ok(())
    }

    pub async fn terminate(&self, ids: &[String]) -> Result<(), Ec2Error> {
        self.client
            .terminate_instances()
            .set_instance_ids(Some(ids.to_vec()))
            .send()
            .await
            .map_err(|e| self.error("TerminateInstances", e))?;
        Ok(())
    }

    /// Every instance of the region, or only those whose tag `key` has one
    /// of `values`; all pages.
    pub async fn describe(
        &self,
        tag: Option<(&str, Vec<String>)>,
    ) -> Result<Vec<Instance>, Ec2Error> {
        let mut req = self.client.describe_instances().max_results(500);
        if let Some((key, values)) = tag {
            req = req.filters(
                Filter::builder()
                    .name(format!("tag:{key}"))
                    .set_values(Some(values))
                    .build(),
            );
        }
        let mut pages = req.into_paginator().send();
        let mut out = Vec::new();
        // Bounded: EC2 pages are at most 1000 instances; 1000 pages is far
        // beyond any region's limit.
        for _ in 0..1000 {
            let Some(page) = pages.next().await else {
                break;
            };
            let page = page.map_err(|e| self.error("DescribeInstances", e))?;
            for r in page.reservations() {
                out.extend(r.instances().iter().map(instance));
            }
        }
        Ok(out)
    }

    /// The endpoint calls go to.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    fn error<E>(&self, call: &'static str, e: aws_sdk_ec2::error::SdkError<E>) -> Ec2Error
    where
        E: aws_sdk_ec2::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        error::classify(&self.account, &self.endpoint, call, e)
    }
}

/// Environment then the default profile, or the named profile only.
fn credentials(account: &AccountConfig, conf: &ProviderConfig) -> SharedCredentialsProvider {
    let profile = |name: Option<&str>| {
        let mut b = ProfileFileCredentialsProvider::builder().configure(conf);
        if let Some(n) = name {
            b = b.profile_name(n);
        }
        b.build()
    };
    match &account.profile {
        Some(p) => SharedCredentialsProvider::new(profile(Some(p))),
        None => SharedCredentialsProvider::new(
            CredentialsProviderChain::first_try(
                "Environment",
                EnvironmentVariableCredentialsProvider::new(),
            )
            .or_else("Profile", profile(None)),
        ),
    }
}

/// HTTPS (and plain HTTP) over rustls with ring.
fn http_client() -> SharedHttpClient {
    aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
        .build_https()
}

fn instance(i: &aws_sdk_ec2::types::Instance) -> Instance {
    Instance {
        id: i.instance_id().unwrap_or_default().to_string(),
        state: i
            .state()
            .and_then(|s| s.name())
            .map(|n| n.as_str().to_string())
            .unwrap_or_else(|| "unknown".into()),
        instance_type: i
            .instance_type()
            .map(|t| t.as_str().to_string())
            .unwrap_or_default(),
        image_id: i.image_id().unwrap_or_default().to_string(),
        launch_time: i.launch_time().map(|t| t.secs()),
        tags: i
            .tags()
            .iter()
            .map(|t| {
                (
                    t.key().unwrap_or_default().to_string(),
                    t.value().unwrap_or_default().to_string(),
                )
            })
            .collect(),
        private_ip: i.private_ip_address().map(String::from),
        public_ip: i.public_ip_address().map(String::from),
    }
}
