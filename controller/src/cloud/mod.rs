//! The cloud broker: environments on public (or private, EC2-compatible)
//! cloud capacity behind the same templates, and every instance of the
//! configured regions kept visible and priced.
//!
//! - `provider.rs`: the [`CloudProvider`] seam; `aws.rs` (EC2, feature
//!   `aws`) and `fake.rs` (in memory) implement it.
//! - `placement.rs`: account, instance type and image for a template (pure).
//! - `decide.rs`: what one environment needs, from its record and its
//!   instances (pure).
//! - `reconcile.rs`: the task: takes no input; each pass re-reads the
//!   environments, lists the instances and acts; the next pass is the retry.
//! - `launch.rs`: the launch request: tags, client token, and the kvm
//!   runtime's cloud-init user-data.
//! - `inventory.rs`: the last listing of every account, classified as
//!   Metrom's, orphan or foreign, with cost per hour.

#[cfg(feature = "aws")]
pub mod aws;
pub mod config;
pub mod decide;
pub mod fake;
pub mod inventory;
pub mod launch;
pub mod placement;
pub mod provider;
pub mod reconcile;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::Notify;

pub use config::CloudConfig;
pub use placement::CloudPlacement;
pub use provider::{CloudError, CloudErrorKind, CloudProvider, Connector};

use crate::store::CloudAccountRecord;

/// A connected provider and the account record it was made from.
type Connected = (CloudAccountRecord, Arc<dyn CloudProvider>);

/// The broker's state in the controller.
pub struct Cloud {
    /// The `metrom:controller` tag value: the cluster's name.
    pub controller_id: String,
    connector: Arc<dyn Connector>,
    /// Connected providers by account name, with the record they were made from.
    providers: tokio::sync::Mutex<HashMap<String, Connected>>,
    pub(crate) inventory: Mutex<inventory::Inventory>,
    /// Wakes the cloud reconciler.
    pub nudge: Notify,
    /// One pass at a time (the task's, or `cloud sync`'s).
    pass_lock: tokio::sync::Mutex<()>,
    last_full: Mutex<Option<Instant>>,
}

impl Cloud {
    pub fn new(controller_id: String, connector: Arc<dyn Connector>) -> Cloud {
        Cloud {
            controller_id,
            connector,
            providers: Default::default(),
            inventory: Default::default(),
            nudge: Notify::new(),
            pass_lock: Default::default(),
            last_full: Mutex::new(None),
        }
    }

    /// The connector this build has: AWS with the `aws` feature.
    pub fn default_connector() -> Arc<dyn Connector> {
        #[cfg(feature = "aws")]
        {
            Arc::new(aws::AwsConnector)
        }
        #[cfg(not(feature = "aws"))]
        {
            Arc::new(NoProviders)
        }
    }

    /// The provider of an account, connected once and kept while the
    /// account's record stays the same.
    pub async fn provider(
        &self,
        account: &CloudAccountRecord,
        config: &CloudConfig,
    ) -> Result<Arc<dyn CloudProvider>, CloudError> {
        let mut providers = self.providers.lock().await;
        if let Some((rec, p)) = providers.get(&account.name)
            && rec == account
        {
            return Ok(p.clone());
        }
        let p = self
            .connector
            .connect(account, &config.provider_settings())
            .await?;
        providers.insert(account.name.clone(), (account.clone(), p.clone()));
        Ok(p)
    }

    /// Connects without keeping the provider (to check a new account).
    pub async fn probe(
        &self,
        account: &CloudAccountRecord,
        config: &CloudConfig,
    ) -> Result<Arc<dyn CloudProvider>, CloudError> {
        self.connector
            .connect(account, &config.provider_settings())
            .await
    }

    /// Forgets a removed account.
    pub async fn forget(&self, account: &str) {
        self.providers.lock().await.remove(account);
        self.inventory
            .lock()
            .expect("inventory lock")
            .accounts
            .remove(account);
    }

    fn full_sync_due(&self, interval: std::time::Duration) -> bool {
        self.last_full
            .lock()
            .expect("last full lock")
            .is_none_or(|t| t.elapsed() >= interval)
    }

    fn full_sync_done(&self) {
        *self.last_full.lock().expect("last full lock") = Some(Instant::now());
    }
}

/// A build without any provider compiled in.
#[cfg(not(feature = "aws"))]
struct NoProviders;

#[cfg(not(feature = "aws"))]
#[async_trait::async_trait]
impl Connector for NoProviders {
    async fn connect(
        &self,
        account: &CloudAccountRecord,
        _settings: &provider::ProviderSettings,
    ) -> Result<Arc<dyn CloudProvider>, CloudError> {
        Err(CloudError::new(
            CloudErrorKind::Unsupported,
            format!(
                "cloud account {}: this metrom-controller was built without the '{}' provider (cargo feature `aws`)",
                account.name, account.provider
            ),
        ))
    }
}
