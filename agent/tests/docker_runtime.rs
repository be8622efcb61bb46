//! The Docker runtime's steps against the real dockerd (tests/setup.sh starts
//! it and builds `metrom-test/busybox:1`): idempotent create, convergence
//! after a half-made environment, stop, destroy with and without data.
//! No controller: images are local.

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use metrom_agent::config::PortRange;
use metrom_agent::link::Link;
use metrom_agent::runtime::docker::{DockerRuntime, Settings};
use metrom_agent::runtime::{Observed, Progress, Runtime};
use metrom_protocol::ids::EnvId;
use metrom_protocol::messages::env::{
    EnvSpec, Power, Resources, RuntimeKind, SiteSettings, TemplateFile, TemplateSnapshot,
};

const COMPOSE: &str = r#"services:
  web:
    image: metrom-test/busybox:1
    command: ["httpd", "-f", "-p", "8080", "-h", "/www"]
    ports: ["8080:8080"]
    volumes: ["site:/www", "./conf/motd:/etc/motd:ro"]
    depends_on:
      init: {condition: service_completed_successfully}
  init:
    image: metrom-test/busybox:1
    command: ["sh", "-c", "echo ok > /www/init.txt"]
    volumes: ["site:/www"]
volumes:
  site:
"#;

fn spec(name: &str) -> EnvSpec {
    let manifest = "name = \"rt\"\nruntime = [\"docker\"]\n[resources]\nvcpus = 1\nmemory = \"256MiB\"\ndisk = \"1GiB\"\n".to_string();
    EnvSpec {
        env_id: EnvId::generate(),
        name: name.into(),
        owner: "alice".into(),
        generation: 1,
        build: 1,
        power: Power::Running,
        runtime: RuntimeKind::Docker,
        resources: Resources::default(),
        template: TemplateSnapshot {
            name: "rt".into(),
            version: "sha256:00".into(),
            files: vec![
                TemplateFile {
                    path: "metrom.toml".into(),
                    contents: manifest.into_bytes(),
                },
                TemplateFile {
                    path: "compose.yaml".into(),
                    contents: COMPOSE.as_bytes().to_vec(),
                },
                TemplateFile {
                    path: "conf/motd".into(),
                    contents: b"from the template\n".to_vec(),
                },
            ],
        },
        params: vec![],
        image: None,
        ssh_keys: vec![],
        site: SiteSettings::default(),
        docker_archives: vec![],
    }
}

async fn runtime(dir: &std::path::Path) -> DockerRuntime {
    let base = 33000 + 100 * (rand_u16() % 20);
    DockerRuntime::connect(
        "/var/run/docker.sock",
        dir,
        Arc::new(Link::default()),
        Settings {
            registry: None,
            registry_insecure: false,
            port_range: PortRange {
                first: base,
                last: base + 99,
            },
            stop_timeout: Duration::from_secs(1),
            dependency_timeout: Duration::from_secs(60),
        },
    )
    .await
    .expect("dockerd answers (run tests/setup.sh)")
}

fn rand_u16() -> u16 {
    (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos()
        % 65_000) as u16
}

fn docker(args: &[&str]) -> String {
    let out = Command::new("docker").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn ids(env: &EnvId, kind: &str) -> Vec<String> {
    let filter = format!("label=io.metrom.env={env}");
    let args: Vec<&str> = match kind {
        "ps" => vec!["ps", "-aq", "--filter", &filter],
        k => vec![k, "ls", "-q", "--filter", &filter],
    };
    let mut v: Vec<String> = docker(&args).lines().map(String::from).collect();
    v.sort();
    v
}

/// Removes what a failed test left.
struct Cleanup(EnvId);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for kind in ["ps", "network", "volume"] {
            for id in ids(&self.0, kind) {
                let rm: &[&str] = match kind {
                    "ps" => &["rm", "-f"],
                    "network" => &["network", "rm"],
                    _ => &["volume", "rm", "-f"],
                };
                let _ = Command::new("docker").args(rm).arg(&id).output();
            }
        }
    }
}

async fn wait_ready(rt: &DockerRuntime, s: &EnvSpec) -> Observed {
    for _ in 0..300 {
        let o = rt.observe(s).await.unwrap();
        if matches!(o, Observed::Running { ready: true, .. }) {
            return o;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("not ready: {:?}", rt.observe(s).await);
}

#[tokio::test]
async fn create_is_idempotent_and_destroy_keeps_data_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path()).await;
    let s = spec(&format!("rt-{}", rand_u16()));
    let _cleanup = Cleanup(s.env_id.clone());
    assert_eq!(rt.observe(&s).await.unwrap(), Observed::Missing);

    rt.create(&s, &Progress::none()).await.unwrap();
    let first = ids(&s.env_id, "ps");
    rt.create(&s, &Progress::none()).await.unwrap();
    assert_eq!(
        ids(&s.env_id, "ps"),
        first,
        "a second create made new containers"
    );
    assert_eq!(first.len(), 2);
    let Observed::Running { build, detail, .. } = wait_ready(&rt, &s).await else {
        unreachable!()
    };
    assert_eq!(build, 1);
    // init completed (exit 0) and counts as ready; its file is in the volume.
    let init = detail.services.iter().find(|s| s.name == "init").unwrap();
    assert_eq!(init.state, "exited");
    let web = format!("metrom-{}-web", s.name);
    assert_eq!(docker(&["exec", &web, "cat", "/www/init.txt"]), "ok");
    assert_eq!(
        docker(&["exec", &web, "cat", "/etc/motd"]),
        "from the template"
    );
    assert_eq!(detail.ports.len(), 1);
    let port = detail.ports[0].host_port;
    assert!(rt.instances().await.unwrap().contains(&s.env_id));

    rt.stop(&s).await.unwrap();
    assert!(matches!(
        rt.observe(&s).await.unwrap(),
        Observed::Stopped { .. }
    ));

    // Rebuild at the runtime level: destroy keeping data, create build 2.
    docker(&["start", &web]);
    docker(&["exec", &web, "sh", "-c", "echo kept > /www/kept.txt"]);
    rt.destroy(&s.env_id, true).await.unwrap();
    assert_eq!(rt.observe(&s).await.unwrap(), Observed::Missing);
    assert!(ids(&s.env_id, "ps").is_empty() && ids(&s.env_id, "network").is_empty());
    assert_eq!(ids(&s.env_id, "volume").len(), 1);
    let mut s2 = s.clone();
    s2.build = 2;
    rt.create(&s2, &Progress::none()).await.unwrap();
    let Observed::Running { build, detail, .. } = wait_ready(&rt, &s2).await else {
        unreachable!()
    };
    assert_eq!(build, 2);
    assert_eq!(detail.ports[0].host_port, port, "the host port is kept");
    assert_eq!(docker(&["exec", &web, "cat", "/www/kept.txt"]), "kept");

    rt.destroy(&s.env_id, false).await.unwrap();
    rt.destroy(&s.env_id, false).await.unwrap();
    for kind in ["ps", "network", "volume"] {
        assert!(ids(&s.env_id, kind).is_empty(), "{kind} left");
    }
    assert!(
        !dir.path()
            .join("docker/envs")
            .join(s.env_id.as_str())
            .exists()
    );
}

#[tokio::test]
async fn a_half_made_environment_converges_without_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path()).await;
    let mut s = spec(&format!("rh-{}", rand_u16()));
    s.power = Power::Stopped;
    let _cleanup = Cleanup(s.env_id.clone());
    // Created but not started.
    rt.create(&s, &Progress::none()).await.unwrap();
    assert!(matches!(
        rt.observe(&s).await.unwrap(),
        Observed::Stopped { build: 1, .. }
    ));
    // As if the agent died after making only one container.
    docker(&["rm", &format!("metrom-{}-web", s.name)]);
    let init = ids(&s.env_id, "ps");
    assert_eq!(init.len(), 1);
    s.power = Power::Running;
    rt.start(&s).await.unwrap();
    wait_ready(&rt, &s).await;
    let now = ids(&s.env_id, "ps");
    assert_eq!(now.len(), 2);
    assert!(now.contains(&init[0]), "the existing container was reused");
    rt.destroy(&s.env_id, false).await.unwrap();
}
