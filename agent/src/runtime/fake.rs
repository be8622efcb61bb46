//! The fake runtime: instances are records in a JSON file in the agent's data
//! directory, so — like real VMs — they outlive an agent restart. It serves
//! the controller's lifecycle tests and demos on machines without KVM or
//! Docker. It counts how often each environment's instance was created, so
//! tests can prove that retries and restarts never made a second one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use metrom_protocol::ids::EnvId;
use metrom_protocol::messages::env::{EnvDetail, EnvSpec, Power, RuntimeKind};
use serde::{Deserialize, Serialize};

use super::{Observed, Progress, Runtime, RuntimeError};

/// One simulated instance.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FakeInstance {
    pub build: u64,
    pub running: bool,
    /// How many times an instance was created for this environment.
    pub creations: u64,
    /// Whether data (volumes, data disk) exists.
    pub data: bool,
}

/// The fake runtime's state file.
pub const STATE_FILE: &str = "fake-runtime.json";

pub struct FakeRuntime {
    path: PathBuf,
    /// How long `create` takes.
    delay: Duration,
    state: Mutex<BTreeMap<EnvId, FakeInstance>>,
}

impl FakeRuntime {
    pub fn open(data_dir: &Path, delay: Duration) -> FakeRuntime {
        let path = data_dir.join(STATE_FILE);
        let state = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        FakeRuntime {
            path,
            delay,
            state: Mutex::new(state),
        }
    }

    /// A snapshot of the instances.
    pub fn instances_now(&self) -> BTreeMap<EnvId, FakeInstance> {
        self.state.lock().expect("fake lock").clone()
    }

    fn update<T>(
        &self,
        f: impl FnOnce(&mut BTreeMap<EnvId, FakeInstance>) -> T,
    ) -> Result<T, RuntimeError> {
        let mut state = self.state.lock().expect("fake lock");
        let out = f(&mut state);
        let bytes = serde_json::to_vec_pretty(&*state).expect("fake state serializes");
        let tmp = self.path.with_extension("tmp");
        std::fs::write(&tmp, bytes)
            .and_then(|_| std::fs::rename(&tmp, &self.path))
            .map_err(|e| {
                RuntimeError::Failed(format!("fake runtime state {}: {e}", self.path.display()))
            })?;
        Ok(out)
    }

    fn detail(spec: &EnvSpec) -> EnvDetail {
        EnvDetail {
            runtime: "fake".into(),
            instance: format!("fake-{}", spec.name),
            addresses: vec!["192.0.2.10".into()],
            ports: vec![],
            services: vec![],
            message: String::new(),
        }
    }
}

#[async_trait]
impl Runtime for FakeRuntime {
    fn kind(&self) -> RuntimeKind {
        RuntimeKind::Fake
    }

    async fn observe(&self, spec: &EnvSpec) -> Result<Observed, RuntimeError> {
        let inst = self
            .state
            .lock()
            .expect("fake lock")
            .get(&spec.env_id)
            .cloned();
        Ok(match inst {
            None => Observed::Missing,
            Some(i) if i.build == 0 => Observed::Missing,
            Some(i) if i.running => Observed::Running {
                build: i.build,
                ready: true,
                detail: Self::detail(spec),
            },
            Some(i) => Observed::Stopped {
                build: i.build,
                detail: Self::detail(spec),
            },
        })
    }

    async fn create(&self, spec: &EnvSpec, progress: &Progress) -> Result<(), RuntimeError> {
        let exists = self
            .state
            .lock()
            .expect("fake lock")
            .get(&spec.env_id)
            .is_some_and(|i| i.build == spec.build);
        if exists {
            return Ok(());
        }
        progress.say("creating the instance");
        tokio::time::sleep(self.delay).await;
        let running = spec.power == Power::Running;
        self.update(|s| {
            let e = s.entry(spec.env_id.clone()).or_insert(FakeInstance {
                build: 0,
                running: false,
                creations: 0,
                data: false,
            });
            e.build = spec.build;
            e.running = running;
            e.creations += 1;
            e.data = true;
        })
    }

    async fn start(&self, spec: &EnvSpec) -> Result<(), RuntimeError> {
        self.update(|s| {
            if let Some(i) = s.get_mut(&spec.env_id) {
                i.running = true;
            }
        })
    }

    async fn stop(&self, spec: &EnvSpec) -> Result<(), RuntimeError> {
        self.update(|s| {
            if let Some(i) = s.get_mut(&spec.env_id) {
                i.running = false;
            }
        })
    }

    async fn destroy(&self, env: &EnvId, keep_data: bool) -> Result<(), RuntimeError> {
        self.update(|s| {
            if keep_data {
                // The instance goes; its data stays for the next build.
                if let Some(i) = s.get_mut(env) {
                    i.build = 0;
                    i.running = false;
                }
            } else {
                s.remove(env);
            }
        })
    }

    async fn instances(&self) -> Result<Vec<EnvId>, RuntimeError> {
        Ok(self
            .state
            .lock()
            .expect("fake lock")
            .iter()
            .filter(|(_, i)| i.build > 0)
            .map(|(k, _)| k.clone())
            .collect())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use metrom_protocol::messages::env::{Resources, SiteSettings, TemplateSnapshot};

    pub(crate) fn spec(id: &str, generation: u64) -> EnvSpec {
        EnvSpec {
            env_id: EnvId::parse(id).unwrap(),
            name: "dev".into(),
            owner: "alice".into(),
            generation,
            build: 1,
            power: Power::Running,
            runtime: RuntimeKind::Fake,
            resources: Resources {
                vcpus: 1,
                memory_mb: 256,
                disk_gb: 1,
            },
            template: TemplateSnapshot {
                name: "minimal".into(),
                version: "sha256:00".into(),
                files: vec![],
            },
            params: vec![],
            image: None,
            ssh_keys: vec![],
            site: SiteSettings::default(),
            docker_archives: vec![],
        }
    }

    #[tokio::test]
    async fn create_is_idempotent_and_state_outlives_the_runtime() {
        let dir = tempfile::tempdir().unwrap();
        let rt = FakeRuntime::open(dir.path(), Duration::ZERO);
        let s = spec("e-one", 1);
        rt.create(&s, &Progress::none()).await.unwrap();
        rt.create(&s, &Progress::none()).await.unwrap();
        assert!(matches!(
            rt.observe(&s).await.unwrap(),
            Observed::Running {
                build: 1,
                ready: true,
                ..
            }
        ));
        let again = FakeRuntime::open(dir.path(), Duration::ZERO);
        assert_eq!(again.instances_now()[&s.env_id].creations, 1);
        again.destroy(&s.env_id, true).await.unwrap();
        assert_eq!(again.observe(&s).await.unwrap(), Observed::Missing);
        assert!(again.instances_now()[&s.env_id].data, "data kept");
        again.destroy(&s.env_id, false).await.unwrap();
        assert!(again.instances_now().is_empty());
    }
}
