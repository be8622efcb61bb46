//! The fake runtime: instances are records in a JSON file in the agent's data
//! directory, so — like real VMs — they outlive an agent restart. It serves
//! the controller's lifecycle tests and demos on machines without KVM or
//! Docker. It counts how often each environment's instance was created, so
//! tests can prove that retries and restarts never made a second one.
//!
//! Activity is whatever the test says: `fake-activity.json` in the data
//! directory maps an environment's name (or id) to
//! `{"cpu_percent": 50, "net_bytes_per_sec": 0}`; the counters of a running
//! instance grow at those rates (an instance not listed is idle).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use metrom_protocol::ids::EnvId;
use metrom_protocol::messages::env::{EnvDetail, EnvSpec, Power, RuntimeKind};
use serde::{Deserialize, Serialize};

use super::{Counters, Observed, Progress, Runtime, RuntimeError};

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
/// The activity rates tests write.
pub const ACTIVITY_FILE: &str = "fake-activity.json";

/// Activity rates of one fake instance.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct FakeRates {
    pub cpu_percent: f64,
    pub net_bytes_per_sec: u64,
}

pub struct FakeRuntime {
    path: PathBuf,
    /// How long `create` takes.
    delay: Duration,
    state: Mutex<BTreeMap<EnvId, FakeInstance>>,
    /// Activity counters of running instances and when they were last advanced.
    counters: Mutex<HashMap<EnvId, (Instant, Counters)>>,
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
            counters: Mutex::new(HashMap::new()),
        }
    }

    /// The rates `fake-activity.json` gives an environment (by name, then id).
    fn rates(&self, spec: &EnvSpec) -> FakeRates {
        let Some(dir) = self.path.parent() else {
            return FakeRates::default();
        };
        let map: BTreeMap<String, FakeRates> = std::fs::read(dir.join(ACTIVITY_FILE))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        map.get(&spec.name)
            .or_else(|| map.get(spec.env_id.as_str()))
            .copied()
            .unwrap_or_default()
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

    async fn counters(&self, spec: &EnvSpec) -> Result<Option<Counters>, RuntimeError> {
        let running = self
            .state
            .lock()
            .expect("fake lock")
            .get(&spec.env_id)
            .is_some_and(|i| i.running && i.build > 0);
        let mut counters = self.counters.lock().expect("fake counters lock");
        if !running {
            counters.remove(&spec.env_id);
            return Ok(None);
        }
        let rates = self.rates(spec);
        let now = Instant::now();
        let (last, c) = counters
            .entry(spec.env_id.clone())
            .or_insert((now, Counters::default()));
        let secs = now.duration_since(*last).as_secs_f64();
        c.cpu_ns += (secs * rates.cpu_percent / 100.0 * 1e9) as u64;
        c.net_bytes += (secs * rates.net_bytes_per_sec as f64) as u64;
        *last = now;
        Ok(Some(*c))
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

    #[tokio::test]
    async fn counters_grow_at_the_rates_the_activity_file_gives() {
        let dir = tempfile::tempdir().unwrap();
        let rt = FakeRuntime::open(dir.path(), Duration::ZERO);
        let s = spec("e-busy", 1);
        assert_eq!(rt.counters(&s).await.unwrap(), None, "no instance");
        rt.create(&s, &Progress::none()).await.unwrap();
        assert_eq!(rt.counters(&s).await.unwrap(), Some(Counters::default()));
        std::fs::write(
            dir.path().join(ACTIVITY_FILE),
            r#"{"dev": {"cpu_percent": 50, "net_bytes_per_sec": 1000}}"#,
        )
        .unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let c = rt.counters(&s).await.unwrap().unwrap();
        assert!(c.cpu_ns >= 90_000_000, "{c:?}");
        assert!(c.net_bytes >= 180, "{c:?}");
        rt.stop(&s).await.unwrap();
        assert_eq!(rt.counters(&s).await.unwrap(), None, "stopped");
    }
}
