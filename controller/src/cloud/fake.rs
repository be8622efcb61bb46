//! An in-memory cloud for unit tests of the layers above the provider:
//! instances with states and tags, client-token idempotency, and failures to
//! inject. Transitions happen at once (`pending` on launch, `running` on the
//! next list), like a fast EC2.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use jiff::Timestamp;

use super::provider::{
    CloudError, CloudErrorKind, CloudProvider, Connector, Instance, InstanceState, LaunchSpec,
    ListScope, ProviderSettings, TAG_CONTROLLER,
};
use crate::store::CloudAccountRecord;

/// The fake cloud; clones share their instances.
#[derive(Clone, Default)]
pub struct FakeCloud {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Default)]
struct Inner {
    instances: BTreeMap<String, Instance>,
    user_data: HashMap<String, Vec<u8>>,
    tokens: HashMap<String, String>,
    next: u64,
    /// Calls to fail, by name ("launch", "list", …), and with what.
    failures: HashMap<&'static str, Vec<CloudError>>,
    prices: BTreeMap<String, f64>,
    calls: Vec<String>,
}

impl FakeCloud {
    pub fn new() -> FakeCloud {
        FakeCloud::default()
    }

    /// Makes the next call named `call` fail with `err` (queued, in order).
    pub fn fail_next(&self, call: &'static str, err: CloudError) {
        self.lock().failures.entry(call).or_default().push(err);
    }

    /// Every instance, terminated ones included.
    pub fn instances(&self) -> Vec<Instance> {
        self.lock().instances.values().cloned().collect()
    }

    pub fn user_data(&self, id: &str) -> Option<Vec<u8>> {
        self.lock().user_data.get(id).cloned()
    }

    /// An instance made outside Metrom (by hand, by another tool).
    pub fn add_outside(&self, tags: &[(&str, &str)]) -> String {
        let mut g = self.lock();
        g.next += 1;
        let id = format!("i-outside{:08x}", g.next);
        let inst = Instance {
            id: id.clone(),
            state: InstanceState::Running,
            instance_type: "t3.micro".into(),
            image: "ami-outside".into(),
            launched_at: Some(Timestamp::now()),
            tags: tags
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            private_ip: None,
            public_ip: None,
        };
        g.instances.insert(id.clone(), inst);
        id
    }

    /// Changes an instance's state behind Metrom's back.
    pub fn set_state(&self, id: &str, state: InstanceState) {
        if let Some(i) = self.lock().instances.get_mut(id) {
            i.state = state;
        }
    }

    /// The calls made so far ("launch", "stop i-…", …).
    pub fn calls(&self) -> Vec<String> {
        self.lock().calls.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("fake cloud lock")
    }

    fn check(&self, call: &'static str, detail: String) -> Result<(), CloudError> {
        let mut g = self.lock();
        g.calls.push(format!("{call}{detail}"));
        match g.failures.get_mut(call) {
            Some(q) if !q.is_empty() => Err(q.remove(0)),
            _ => Ok(()),
        }
    }

    fn set_all(&self, ids: &[String], from: &[InstanceState], to: InstanceState) {
        let mut g = self.lock();
        for id in ids {
            if let Some(i) = g.instances.get_mut(id)
                && from.contains(&i.state)
            {
                i.state = to;
                if to == InstanceState::Pending {
                    i.launched_at = Some(Timestamp::now());
                }
            }
        }
    }

    fn known(&self, ids: &[String]) -> Result<(), CloudError> {
        let g = self.lock();
        match ids.iter().find(|id| !g.instances.contains_key(*id)) {
            Some(id) => Err(CloudError::new(
                CloudErrorKind::Refused,
                format!("InvalidInstanceID.NotFound: {id}"),
            )),
            None => Ok(()),
        }
    }
}

#[async_trait::async_trait]
impl CloudProvider for FakeCloud {
    async fn launch(&self, spec: &LaunchSpec) -> Result<Instance, CloudError> {
        self.check("launch", String::new())?;
        let mut g = self.lock();
        if let Some(id) = g.tokens.get(&spec.client_token).cloned() {
            return Ok(g.instances[&id].clone());
        }
        g.next += 1;
        let id = format!("i-fake{:012x}", g.next);
        let inst = Instance {
            id: id.clone(),
            state: InstanceState::Pending,
            instance_type: spec.instance_type.clone(),
            image: spec.image.clone(),
            launched_at: Some(Timestamp::now()),
            tags: spec.tags.clone(),
            private_ip: Some(format!("10.0.0.{}", g.next % 250 + 1)),
            public_ip: None,
        };
        g.tokens.insert(spec.client_token.clone(), id.clone());
        g.user_data.insert(id.clone(), spec.user_data.clone());
        g.instances.insert(id, inst.clone());
        Ok(inst)
    }

    async fn start(&self, ids: &[String]) -> Result<(), CloudError> {
        self.check("start", format!(" {}", ids.join(",")))?;
        self.known(ids)?;
        self.set_all(ids, &[InstanceState::Stopped], InstanceState::Pending);
        Ok(())
    }

    async fn stop(&self, ids: &[String]) -> Result<(), CloudError> {
        self.check("stop", format!(" {}", ids.join(",")))?;
        self.known(ids)?;
        self.set_all(
            ids,
            &[InstanceState::Pending, InstanceState::Running],
            InstanceState::Stopped,
        );
        Ok(())
    }

    async fn terminate(&self, ids: &[String]) -> Result<(), CloudError> {
        self.check("terminate", format!(" {}", ids.join(",")))?;
        self.known(ids)?;
        self.set_all(
            ids,
            &[
                InstanceState::Pending,
                InstanceState::Running,
                InstanceState::Stopping,
                InstanceState::Stopped,
            ],
            InstanceState::Terminated,
        );
        Ok(())
    }

    async fn list(&self, scope: ListScope<'_>) -> Result<Vec<Instance>, CloudError> {
        self.check("list", String::new())?;
        let mut g = self.lock();
        let mut out = Vec::new();
        for i in g.instances.values_mut() {
            if i.state == InstanceState::Pending {
                i.state = InstanceState::Running;
            }
            let wanted = match scope {
                ListScope::All => true,
                ListScope::Controller(c) => i.tag(TAG_CONTROLLER) == Some(c),
            };
            if wanted {
                out.push(i.clone());
            }
        }
        Ok(out)
    }

    fn price(&self, instance_type: &str) -> Option<f64> {
        self.lock().prices.get(instance_type).copied()
    }
}

/// Hands out the same fake for every account.
#[derive(Clone, Default)]
pub struct FakeConnector {
    pub cloud: FakeCloud,
}

#[async_trait::async_trait]
impl Connector for FakeConnector {
    async fn connect(
        &self,
        _account: &CloudAccountRecord,
        settings: &ProviderSettings,
    ) -> Result<Arc<dyn CloudProvider>, CloudError> {
        self.cloud.lock().prices = settings.prices.clone();
        Ok(Arc::new(self.cloud.clone()))
    }
}
