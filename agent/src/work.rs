//! The environments this agent runs: commands from the controller go into the
//! ledger (durably, before they are acknowledged), and one worker per
//! environment drives its runtime toward the ledger's spec, reporting every
//! change of state. Workers keep going while the controller is unreachable and
//! start again from the ledger after an agent restart (re-adoption).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use metrom_protocol::codec;
use metrom_protocol::ids::EnvId;
use metrom_protocol::messages::agent::{AgentMessage, Command, CommandReply};
use metrom_protocol::messages::env::{EnvDetail, EnvReport, EnvSpec, EnvState, Power};
use tokio::sync::{Notify, mpsc};
use tracing::{Instrument, info, warn};

use crate::backoff::Backoff;
use crate::ledger::{DeleteOrder, Entry, Ledger};
use crate::runtime::{Observed, Progress, RuntimeError, Runtimes};

/// How often a settled environment is re-observed.
const STEADY_POLL: Duration = Duration::from_secs(10);
/// How often an environment that is coming up is re-observed.
const BUSY_POLL: Duration = Duration::from_millis(500);
const MAX_COMMAND_FRAME: usize = codec::DEFAULT_MAX_FRAME;

/// The next thing to do for one environment, decided from what the ledger
/// asks for and what the runtime observes. Pure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Create,
    /// The instance is from an older build: replace it, keeping data.
    Rebuild,
    Start,
    Stop,
    Destroy {
        keep_data: bool,
    },
    /// Nothing to do: report this state.
    Settle(EnvState, EnvDetail),
}

/// Decides the next step for an environment.
pub fn decide(entry: &Entry, observed: &Observed) -> Step {
    if let Some(order) = entry.delete {
        return Step::Destroy {
            keep_data: order.keep_data,
        };
    }
    let spec = &entry.spec;
    match observed {
        Observed::Missing => Step::Create,
        Observed::Stopped { build, .. }
        | Observed::Running { build, .. }
        | Observed::Failed { build, .. }
            if *build < spec.build =>
        {
            Step::Rebuild
        }
        Observed::Failed { reason, .. } => {
            Step::Settle(EnvState::Failed(reason.clone()), EnvDetail::default())
        }
        Observed::Stopped { detail, .. } => match spec.power {
            Power::Running => Step::Start,
            Power::Stopped => Step::Settle(EnvState::Stopped, detail.clone()),
        },
        Observed::Running { ready, detail, .. } => match (spec.power, ready) {
            (Power::Stopped, _) => Step::Stop,
            (Power::Running, true) => Step::Settle(EnvState::Running, detail.clone()),
            (Power::Running, false) => Step::Settle(EnvState::Provisioning, detail.clone()),
        },
    }
}

/// The agent's environments.
pub struct Work {
    ledger: Ledger,
    runtimes: Runtimes,
    workers: Mutex<HashMap<EnvId, Arc<Notify>>>,
    reporter: Mutex<Option<mpsc::Sender<AgentMessage>>>,
    /// An environment not Running this long after its spec changed is reported Failed.
    provision_timeout: Duration,
}

impl Work {
    pub fn new(ledger: Ledger, runtimes: Runtimes, provision_timeout: Duration) -> Arc<Work> {
        Arc::new(Work {
            ledger,
            runtimes,
            workers: Mutex::new(HashMap::new()),
            reporter: Mutex::new(None),
            provision_timeout,
        })
    }

    /// Starts a worker for every environment in the ledger (re-adoption).
    pub fn start(self: &Arc<Self>) {
        let entries = self.ledger.all();
        if !entries.is_empty() {
            info!(
                count = entries.len(),
                "re-adopting environments from the ledger"
            );
        }
        for e in entries {
            self.wake(&e.spec.env_id);
        }
    }

    /// Runtime kinds this agent offers.
    pub fn runtime_kinds(&self) -> Vec<metrom_protocol::messages::env::RuntimeKind> {
        self.runtimes.kinds()
    }

    pub fn runtimes(&self) -> &Runtimes {
        &self.runtimes
    }

    /// Activity counters of every Running environment whose runtime measures them.
    pub async fn activity_readings(&self) -> Vec<(EnvId, crate::runtime::Counters)> {
        let mut out = Vec::new();
        for e in self.ledger.all() {
            if e.delete.is_some() || e.report.state != EnvState::Running {
                continue;
            }
            let Some(rt) = self.runtimes.get(e.spec.runtime) else {
                continue;
            };
            match rt.counters(&e.spec).await {
                Ok(Some(c)) => out.push((e.spec.env_id.clone(), c)),
                Ok(None) => {}
                Err(err) => {
                    tracing::debug!(env_id = %e.spec.env_id, "no activity counters: {err}")
                }
            }
        }
        out
    }

    /// Every environment's latest report, for Hello.
    pub fn reports(&self) -> Vec<EnvReport> {
        self.ledger.all().into_iter().map(|e| e.report).collect()
    }

    /// A session started: reports go to it.
    pub fn attach(&self, tx: mpsc::Sender<AgentMessage>) {
        *self.reporter.lock().expect("reporter lock") = Some(tx);
    }

    /// The session ended; reports are kept in the ledger and sent with the next Hello.
    pub fn detach(&self) {
        *self.reporter.lock().expect("reporter lock") = None;
    }

    /// Answers one command stream from the controller.
    pub async fn serve_command(
        self: Arc<Self>,
        mut send: quinn::SendStream,
        mut recv: quinn::RecvStream,
    ) {
        let cmd = match codec::read_message::<Command, _>(&mut recv, MAX_COMMAND_FRAME).await {
            Ok(Some(c)) => c,
            Ok(None) => return,
            Err(e) => {
                warn!("bad command from the controller: {e}");
                let _ = send.reset(metrom_protocol::close::PROTOCOL);
                return;
            }
        };
        let reply = self.handle(cmd).await;
        if codec::write_message(&mut send, &reply, MAX_COMMAND_FRAME)
            .await
            .is_ok()
        {
            let _ = send.finish();
        }
    }

    /// Applies a command to the ledger and wakes the environment's worker.
    pub async fn handle(self: &Arc<Self>, cmd: Command) -> CommandReply {
        match cmd {
            Command::Apply(spec) => self.apply(spec),
            Command::Delete {
                env_id,
                generation,
                keep_data,
            } => self.delete(env_id, generation, keep_data).await,
        }
    }

    fn apply(self: &Arc<Self>, spec: EnvSpec) -> CommandReply {
        let env = spec.env_id.clone();
        if let Some(at) = self.ledger.deleted_at(&env)
            && at >= spec.generation
        {
            return CommandReply::Stale {
                env_id: env,
                current_generation: at,
            };
        }
        let existing = self.ledger.get(&env);
        if let Some(e) = &existing {
            let current = e.generation();
            if current > spec.generation {
                return CommandReply::Stale {
                    env_id: env,
                    current_generation: current,
                };
            }
            if current == spec.generation && e.delete.is_none() {
                return CommandReply::Accepted {
                    env_id: env,
                    generation: current,
                };
            }
        }
        if self.runtimes.get(spec.runtime).is_none() {
            return CommandReply::Refused {
                reason: format!(
                    "this host does not offer the {} runtime (it offers: {})",
                    spec.runtime,
                    kinds_text(&self.runtimes)
                ),
            };
        }
        let report = match existing {
            Some(e) => EnvReport {
                generation: spec.generation,
                ..e.report
            },
            None => EnvReport {
                env_id: env.clone(),
                generation: spec.generation,
                build: 0,
                state: EnvState::Provisioning,
                detail: EnvDetail {
                    message: "accepted".into(),
                    ..Default::default()
                },
            },
        };
        let generation = spec.generation;
        if let Err(e) = self.ledger.put(Entry {
            spec,
            delete: None,
            report,
        }) {
            return CommandReply::Refused {
                reason: crate::error_chain(&e),
            };
        }
        self.wake(&env);
        CommandReply::Accepted {
            env_id: env,
            generation,
        }
    }

    async fn delete(
        self: &Arc<Self>,
        env: EnvId,
        generation: u64,
        keep_data: bool,
    ) -> CommandReply {
        if self
            .ledger
            .deleted_at(&env)
            .is_some_and(|at| at >= generation)
        {
            return CommandReply::Accepted {
                env_id: env,
                generation,
            };
        }
        match self.ledger.get(&env) {
            Some(mut e) => {
                if e.generation() > generation {
                    return CommandReply::Stale {
                        env_id: env,
                        current_generation: e.generation(),
                    };
                }
                e.delete = Some(DeleteOrder {
                    generation,
                    keep_data,
                });
                if let Err(err) = self.ledger.put(e) {
                    return CommandReply::Refused {
                        reason: crate::error_chain(&err),
                    };
                }
                self.wake(&env);
            }
            None => {
                // Never ran here (or the ledger was lost): remove any instance a
                // runtime still has, then remember the deletion.
                for rt in self.runtimes.distinct() {
                    if rt
                        .instances()
                        .await
                        .map(|l| l.contains(&env))
                        .unwrap_or(false)
                        && let Err(err) = rt.destroy(&env, keep_data).await
                    {
                        return CommandReply::Refused {
                            reason: err.to_string(),
                        };
                    }
                }
                if let Err(err) = self.ledger.finish_delete(&env, generation) {
                    return CommandReply::Refused {
                        reason: crate::error_chain(&err),
                    };
                }
                self.send(EnvReport {
                    env_id: env.clone(),
                    generation,
                    build: 0,
                    state: EnvState::Deleted,
                    detail: EnvDetail::default(),
                });
            }
        }
        CommandReply::Accepted {
            env_id: env,
            generation,
        }
    }

    /// Wakes (or starts) the worker of an environment.
    fn wake(self: &Arc<Self>, env: &EnvId) {
        let mut workers = self.workers.lock().expect("workers lock");
        if let Some(n) = workers.get(env) {
            n.notify_one();
            return;
        }
        let notify = Arc::new(Notify::new());
        workers.insert(env.clone(), notify.clone());
        let work = self.clone();
        let env = env.clone();
        let span = tracing::info_span!("env", env_id = %env);
        tokio::spawn(async move { work.worker(env, notify).await }.instrument(span));
    }

    /// Drives one environment until it is deleted.
    async fn worker(self: Arc<Self>, env: EnvId, notify: Arc<Notify>) {
        let mut retry = Backoff::new(Duration::from_secs(2), Duration::from_secs(60));
        let mut since = (0u64, Instant::now());
        while let Some(entry) = self.ledger.get(&env) {
            if since.0 != entry.generation() {
                since = (entry.generation(), Instant::now());
            }
            let Some(runtime) = self.runtimes.get(entry.spec.runtime) else {
                let reason = format!(
                    "this host does not offer the {} runtime",
                    entry.spec.runtime
                );
                self.report(&entry, EnvState::Failed(reason), 0, EnvDetail::default());
                notify.notified().await;
                continue;
            };
            let observed = match runtime.observe(&entry.spec).await {
                Ok(o) => o,
                Err(e) => {
                    self.report(
                        &entry,
                        EnvState::Failed(e.to_string()),
                        entry.report.build,
                        entry.report.detail.clone(),
                    );
                    self.pause(&notify, retry.next_delay()).await;
                    continue;
                }
            };
            let built = match &observed {
                Observed::Stopped { build, .. }
                | Observed::Running { build, .. }
                | Observed::Failed { build, .. } => *build,
                Observed::Missing => 0,
            };
            let step = decide(&entry, &observed);
            tracing::trace!(?step, "next step");
            let result = match step {
                Step::Settle(state, detail) => {
                    retry.reset();
                    let busy = state == EnvState::Provisioning;
                    let state = if busy && since.1.elapsed() > self.provision_timeout {
                        EnvState::Failed(format!(
                            "not ready {}s after it was started: {}",
                            self.provision_timeout.as_secs(),
                            if detail.message.is_empty() {
                                "still waiting"
                            } else {
                                &detail.message
                            }
                        ))
                    } else {
                        state
                    };
                    self.report(&entry, state, built, detail);
                    self.pause(&notify, if busy { BUSY_POLL } else { STEADY_POLL })
                        .await;
                    continue;
                }
                Step::Destroy { keep_data } => {
                    self.report(&entry, EnvState::Provisioning, built, msg("deleting"));
                    match runtime.destroy(&env, keep_data).await {
                        Ok(()) => {
                            let generation = entry.generation();
                            if let Err(e) = self.ledger.finish_delete(&env, generation) {
                                warn!("could not record the deletion: {}", crate::error_chain(&e));
                            }
                            info!("deleted");
                            self.send(EnvReport {
                                env_id: env.clone(),
                                generation,
                                build: built,
                                state: EnvState::Deleted,
                                detail: EnvDetail::default(),
                            });
                            break;
                        }
                        Err(e) => Err(e),
                    }
                }
                Step::Create => {
                    self.report(&entry, EnvState::Provisioning, 0, msg("creating"));
                    let progress = self.progress(&entry);
                    runtime.create(&entry.spec, &progress).await
                }
                Step::Rebuild => {
                    self.report(
                        &entry,
                        EnvState::Provisioning,
                        built,
                        msg("rebuilding: replacing the instance, keeping data"),
                    );
                    match runtime.destroy(&env, true).await {
                        Ok(()) => runtime.create(&entry.spec, &self.progress(&entry)).await,
                        Err(e) => Err(e),
                    }
                }
                Step::Start => {
                    self.report(&entry, EnvState::Provisioning, built, msg("starting"));
                    runtime.start(&entry.spec).await
                }
                Step::Stop => {
                    self.report(&entry, EnvState::Provisioning, built, msg("stopping"));
                    runtime.stop(&entry.spec).await
                }
            };
            if let Err(e) = result {
                warn!("step failed: {e}");
                self.report(
                    &entry,
                    EnvState::Failed(e.to_string()),
                    built,
                    EnvDetail::default(),
                );
                let wait = match e {
                    // Retrying cannot help until the spec changes.
                    RuntimeError::Invalid(_) => Duration::from_secs(3600),
                    _ => retry.next_delay(),
                };
                self.pause(&notify, wait).await;
            }
        }
        self.workers.lock().expect("workers lock").remove(&env);
    }

    /// Waits for a new order or the timeout.
    async fn pause(&self, notify: &Notify, wait: Duration) {
        let _ = tokio::time::timeout(wait, notify.notified()).await;
    }

    fn progress(self: &Arc<Self>, entry: &Entry) -> Progress {
        let work = self.clone();
        let entry = entry.clone();
        Progress::new(move |m| {
            work.report(&entry, EnvState::Provisioning, entry.report.build, msg(&m))
        })
    }

    /// Records and sends a report if it differs from the last one.
    fn report(&self, entry: &Entry, state: EnvState, build: u64, detail: EnvDetail) {
        let current = self.ledger.get(&entry.spec.env_id).map(|e| e.report);
        let report = EnvReport {
            env_id: entry.spec.env_id.clone(),
            generation: entry.generation(),
            build,
            state,
            detail,
        };
        if current.as_ref() == Some(&report) {
            return;
        }
        if current.as_ref().map(|c| &c.state) != Some(&report.state) {
            info!(state = %report.state, "state");
        }
        self.ledger.set_report(&report);
        self.send(report);
    }

    fn send(&self, report: EnvReport) {
        if let Some(tx) = self.reporter.lock().expect("reporter lock").as_ref() {
            // A full or closed channel drops the report; the next Hello carries the state.
            let _ = tx.try_send(AgentMessage::EnvStatus(report));
        }
    }
}

fn msg(m: &str) -> EnvDetail {
    EnvDetail {
        message: m.to_string(),
        ..Default::default()
    }
}

fn kinds_text(r: &Runtimes) -> String {
    let k: Vec<String> = r.kinds().iter().map(|k| k.to_string()).collect();
    if k.is_empty() {
        "none".into()
    } else {
        k.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::fake::FakeRuntime;
    use crate::runtime::fake::tests::spec;
    use metrom_protocol::messages::env::RuntimeKind;

    fn entry(power: Power, build: u64) -> Entry {
        let mut s = spec("e-x", 1);
        s.power = power;
        s.build = build;
        Entry {
            report: EnvReport {
                env_id: s.env_id.clone(),
                generation: 1,
                build: 0,
                state: EnvState::Provisioning,
                detail: EnvDetail::default(),
            },
            spec: s,
            delete: None,
        }
    }

    #[test]
    fn decisions() {
        let d = EnvDetail::default();
        assert_eq!(
            decide(&entry(Power::Running, 1), &Observed::Missing),
            Step::Create
        );
        assert_eq!(
            decide(
                &entry(Power::Running, 2),
                &Observed::Running {
                    build: 1,
                    ready: true,
                    detail: d.clone()
                }
            ),
            Step::Rebuild
        );
        assert_eq!(
            decide(
                &entry(Power::Running, 1),
                &Observed::Stopped {
                    build: 1,
                    detail: d.clone()
                }
            ),
            Step::Start
        );
        assert_eq!(
            decide(
                &entry(Power::Stopped, 1),
                &Observed::Running {
                    build: 1,
                    ready: false,
                    detail: d.clone()
                }
            ),
            Step::Stop
        );
        assert_eq!(
            decide(
                &entry(Power::Running, 1),
                &Observed::Running {
                    build: 1,
                    ready: false,
                    detail: d.clone()
                }
            ),
            Step::Settle(EnvState::Provisioning, d.clone())
        );
        assert_eq!(
            decide(
                &entry(Power::Stopped, 1),
                &Observed::Stopped {
                    build: 1,
                    detail: d.clone()
                }
            ),
            Step::Settle(EnvState::Stopped, d.clone())
        );
        let mut del = entry(Power::Running, 1);
        del.delete = Some(DeleteOrder {
            generation: 2,
            keep_data: true,
        });
        assert_eq!(
            decide(&del, &Observed::Missing),
            Step::Destroy { keep_data: true }
        );
    }

    async fn work_with_fake(dir: &std::path::Path) -> (Arc<Work>, Arc<FakeRuntime>) {
        let fake = Arc::new(FakeRuntime::open(dir, Duration::from_millis(10)));
        let mut rts = Runtimes::default();
        rts.insert(RuntimeKind::Fake, fake.clone());
        let work = Work::new(Ledger::open(dir).unwrap(), rts, Duration::from_secs(60));
        work.start();
        (work, fake)
    }

    async fn wait_state(work: &Work, env: &EnvId, want: EnvState) {
        for _ in 0..200 {
            if work
                .reports()
                .iter()
                .any(|r| &r.env_id == env && r.state == want)
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("{env} never reached {want}: {:?}", work.reports());
    }

    #[tokio::test]
    async fn duplicated_and_stale_commands_never_make_a_second_instance() {
        let dir = tempfile::tempdir().unwrap();
        let (work, fake) = work_with_fake(dir.path()).await;
        let s = spec("e-dup", 1);
        for _ in 0..3 {
            assert!(matches!(
                work.handle(Command::Apply(s.clone())).await,
                CommandReply::Accepted { generation: 1, .. }
            ));
        }
        wait_state(&work, &s.env_id, EnvState::Running).await;
        assert_eq!(fake.instances_now()[&s.env_id].creations, 1);

        // Stop (generation 2), then a late duplicate of generation 1 is stale.
        let mut stop = s.clone();
        stop.generation = 2;
        stop.power = Power::Stopped;
        work.handle(Command::Apply(stop)).await;
        assert!(matches!(
            work.handle(Command::Apply(s.clone())).await,
            CommandReply::Stale {
                current_generation: 2,
                ..
            }
        ));
        wait_state(&work, &s.env_id, EnvState::Stopped).await;

        // An agent restart re-adopts it without recreating it.
        drop(work);
        let (work, fake) = work_with_fake(dir.path()).await;
        wait_state(&work, &s.env_id, EnvState::Stopped).await;
        assert_eq!(fake.instances_now()[&s.env_id].creations, 1);

        // Delete; a late Apply cannot resurrect it.
        work.handle(Command::Delete {
            env_id: s.env_id.clone(),
            generation: 3,
            keep_data: false,
        })
        .await;
        for _ in 0..200 {
            if fake.instances_now().is_empty() && work.reports().is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(fake.instances_now().is_empty());
        assert!(matches!(
            work.handle(Command::Apply(s.clone())).await,
            CommandReply::Stale { .. }
        ));
    }

    #[tokio::test]
    async fn rebuild_replaces_the_instance_and_keeps_data() {
        let dir = tempfile::tempdir().unwrap();
        let (work, fake) = work_with_fake(dir.path()).await;
        let mut s = spec("e-reb", 1);
        work.handle(Command::Apply(s.clone())).await;
        wait_state(&work, &s.env_id, EnvState::Running).await;
        s.generation = 2;
        s.build = 2;
        work.handle(Command::Apply(s.clone())).await;
        for _ in 0..200 {
            if fake.instances_now()[&s.env_id].build == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let inst = &fake.instances_now()[&s.env_id];
        assert_eq!((inst.build, inst.creations, inst.data), (2, 2, true));
        wait_state(&work, &s.env_id, EnvState::Running).await;
    }

    #[tokio::test]
    async fn a_runtime_the_host_lacks_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (work, _) = work_with_fake(dir.path()).await;
        let mut s = spec("e-kvm", 1);
        s.runtime = RuntimeKind::Kvm;
        match work.handle(Command::Apply(s)).await {
            CommandReply::Refused { reason } => assert!(
                reason.contains("does not offer the kvm runtime"),
                "{reason}"
            ),
            other => panic!("{other:?}"),
        }
    }
}
