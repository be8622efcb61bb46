//! The Docker runtime against the real Docker Engine: a real agent whose
//! docker runtime drives the host's dockerd, images from the test registry on
//! 127.0.0.1:5000 (tests/setup.sh starts it and pushes
//! `metrom-test/busybox:1`), and a two-service template written by each test:
//! `web` (busybox httpd serving a named volume on a published port) waits for
//! `db` (a busybox service with a healthcheck) to be healthy.
//!
//! Tests share one dockerd, so each uses its own environment names, image
//! tags and host port range, and removes what it made. Traffic goes only to
//! 127.0.0.1.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use metrom_tests::{Cluster, stderr, stdout, wait_for};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(180);
const REGISTRY: &str = "127.0.0.1:5000";
const IMAGE: &str = "metrom-test/busybox:1";

/// Removes, when dropped (a failed test too), every container, network and
/// volume of the environments named `names`. Declared before the cluster, so
/// it runs after the agent is gone.
struct Cleanup(Vec<String>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for name in &self.0 {
            let prefix = format!("name=metrom-{name}");
            for (kind, rm) in [
                ("ps", vec!["rm", "-f"]),
                ("network", vec!["network", "rm"]),
                ("volume", vec!["volume", "rm", "-f"]),
            ] {
                let list = match kind {
                    "ps" => vec!["ps", "-aq", "--filter", &prefix],
                    k => vec![k, "ls", "-q", "--filter", &prefix],
                };
                let Ok(out) = Command::new("docker").args(&list).output() else {
                    continue;
                };
                for id in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    let _ = Command::new("docker").args(&rm).arg(id).output();
                }
            }
        }
    }
}

/// A short random suffix, so parallel tests never share a name.
fn unique() -> String {
    metrom_protocol::ids::random_string(6)
}

/// A cluster with one agent whose docker runtime is the real one.
fn docker_cluster() -> (Cluster, usize) {
    let mut c = Cluster::start();
    let token = c.token(&[]);
    // Each test its own slice of ports, so parallel agents rarely race for one.
    let base = 21000 + 100 * (rand::random::<u16>() % 80);
    let toml = format!(
        "registry = \"{REGISTRY}\"\ndocker_port_range = \"{base}-{}\"\ndocker_stop_timeout = \"2s\"\nactivity_interval = \"2s\"\n",
        base + 99
    );
    let i = c.join_agent_with_config("dock", &token, &toml);
    let id = c.agent(i).host_id.clone();
    c.wait_host_state(&id, "Ready", Duration::from_secs(30));
    let host: Value = c.json(&["host", "show", &id]);
    assert!(
        host["facts"]["runtimes"]
            .as_array()
            .is_some_and(|r| r.iter().any(|k| k == "Docker" || k == "docker")),
        "the agent offers no docker runtime: {}",
        host["facts"]
    );
    (c, i)
}

/// Writes the two-service template; `image` for both services.
fn web_db_template(c: &Cluster, name: &str, image: &str) -> PathBuf {
    let dir = c.dir.path().join(format!("tpl-{name}"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("metrom.toml"),
        format!(
            "name = \"{name}\"\nruntime = [\"docker\"]\n\n[resources]\nvcpus = 1\nmemory = \"256MiB\"\ndisk = \"1GiB\"\n\n\
             [[ports]]\nname = \"http\"\nport = 8080\n"
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("compose.yaml"),
        metrom_tests::web_db_compose(image, 8080),
    )
    .unwrap();
    dir
}

fn push(c: &Cluster, dir: &Path) {
    c.ok(&["template", "push", dir.to_str().unwrap()]);
}

/// `docker …`, asserting success; stdout trimmed.
fn docker(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("run docker");
    assert!(
        out.status.success(),
        "docker {args:?} failed: {}",
        stderr(&out)
    );
    stdout(&out).trim().to_string()
}

fn lines(s: String) -> Vec<String> {
    s.lines()
        .map(str::to_string)
        .filter(|l| !l.is_empty())
        .collect()
}

/// Ids of the containers, networks and volumes labelled with the environment.
fn labelled(env_id: &str) -> (Vec<String>, Vec<String>, Vec<String>) {
    let filter = format!("label=io.metrom.env={env_id}");
    (
        lines(docker(&["ps", "-aq", "--filter", &filter])),
        lines(docker(&["network", "ls", "-q", "--filter", &filter])),
        lines(docker(&["volume", "ls", "-q", "--filter", &filter])),
    )
}

fn inspect(container: &str) -> Value {
    let v: Value = serde_json::from_str(&docker(&["inspect", container])).unwrap();
    v[0].clone()
}

fn started_at(container: &str) -> jiff::Timestamp {
    inspect(container)["State"]["StartedAt"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// `GET path` on 127.0.0.1:port: (status line, body).
fn http_get(port: u16, path: &str) -> Option<(String, String)> {
    let mut s = TcpStream::connect_timeout(
        &format!("127.0.0.1:{port}").parse().unwrap(),
        Duration::from_secs(2),
    )
    .ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    Some((head.lines().next()?.to_string(), body.to_string()))
}

/// The host port of the environment's `http` port.
fn http_port(env: &Value) -> u16 {
    let ports = env["detail"]["ports"].as_array().expect("ports");
    let p = ports
        .iter()
        .find(|p| p["name"] == "http")
        .unwrap_or_else(|| panic!("no http port in {ports:?}"));
    assert_eq!(p["guest_port"], 8080);
    assert_eq!(p["protocol"], "tcp");
    p["host_port"].as_u64().unwrap() as u16
}

fn create(c: &Cluster, env: &str, template: &str) -> Value {
    c.ok(&["env", "create", env, "--template", template]);
    c.wait_env_state(env, "Running", WAIT)
}

/// Writes `text` into the web service's volume with `docker exec`.
fn write_page(container: &str, text: &str) {
    docker(&[
        "exec",
        container,
        "sh",
        "-c",
        &format!("echo {text} > /www/index.html"),
    ]);
}

fn wait_page(port: u16, want: &str) {
    wait_for(
        &format!("127.0.0.1:{port} to serve '{want}'"),
        Duration::from_secs(30),
        || {
            http_get(port, "/index.html")
                .filter(|(status, body)| status.contains("200") && body.trim() == want)
                .map(|_| ())
        },
    );
}

fn delete_and_check_gone(c: &Cluster, env: &str, id: &str) {
    c.ok(&["env", "delete", env, "--wait"]);
    assert_eq!(
        labelled(id),
        (vec![], vec![], vec![]),
        "delete left Docker objects labelled io.metrom.env={id}"
    );
}

#[test]
fn a_two_service_environment_starts_in_order_and_keeps_its_volume() {
    let name = format!("dk-{}", unique());
    let _cleanup = Cleanup(vec![name.clone()]);
    let (mut c, _) = docker_cluster();
    let t = format!("webdb-{}", unique());
    push(&c, &web_db_template(&c, &t, IMAGE));
    let env = create(&c, &name, &t);
    let id = env["id"].as_str().unwrap().to_string();
    assert_eq!(env["runtime"], "docker");
    assert_eq!(env["detail"]["instance"], format!("metrom-{name}"));
    // The agent measures the containers' CPU and network for the idle policy.
    wait_for("activity reports", Duration::from_secs(60), || {
        let a = c.env(&name)["policies"]["activity"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        (!a.is_empty() && !a.contains("no activity figures")).then_some(())
    });

    // The services' states, healthy db included.
    let services: Vec<(String, String, String)> = env["detail"]["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().into(),
                s["state"].as_str().unwrap().into(),
                s["health"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        services,
        [
            ("db".into(), "running".into(), "healthy".into()),
            ("web".into(), "running".into(), String::new())
        ]
    );
    let shown = stdout(&c.metrom(&["env", "show", &name]));
    assert!(
        shown.contains("healthy") && shown.contains("→ host port"),
        "{shown}"
    );

    // Order: web started only once db was healthy (db needs 2 s for that).
    let web = format!("metrom-{name}-web");
    let db = format!("metrom-{name}-db");
    let waited = started_at(&web).duration_since(started_at(&db));
    assert!(
        waited.as_secs_f64() >= 1.9,
        "web started {waited:?} after db, before db could be healthy"
    );
    assert_eq!(inspect(&db)["State"]["Health"]["Status"], "healthy");
    let labels = &inspect(&web)["Config"]["Labels"];
    assert_eq!(labels["io.metrom.env"], id.as_str());
    assert_eq!(labels["io.metrom.service"], "web");
    assert_eq!(labels["io.metrom.build"], "1");
    assert_eq!(
        inspect(&web)["Config"]["Image"],
        format!("{REGISTRY}/{IMAGE}"),
        "unqualified images come from the configured registry"
    );

    // HTTP on the published host port, from a file in the named volume.
    let port = http_port(&env);
    assert!(
        (21000..30000).contains(&port),
        "port {port} not from the range"
    );
    write_page(&web, "hello-volume");
    wait_page(port, "hello-volume");

    // stop / start keep the data.
    c.ok(&["env", "stop", &name, "--wait"]);
    assert_eq!(inspect(&web)["State"]["Running"], false);
    assert!(
        http_get(port, "/index.html").is_none(),
        "stopped but serving"
    );
    c.ok(&["env", "start", &name, "--wait"]);
    wait_page(port, "hello-volume");

    // rebuild: fresh containers, same volume, same host port.
    let old_web = inspect(&web)["Id"].as_str().unwrap().to_string();
    c.ok(&["env", "rebuild", &name, "--wait"]);
    let env = c.wait_env_state(&name, "Running", WAIT);
    assert_eq!(env["build"], 2);
    let new = inspect(&web);
    assert_ne!(
        new["Id"].as_str().unwrap(),
        old_web,
        "rebuild made fresh containers"
    );
    assert_eq!(new["Config"]["Labels"]["io.metrom.build"], "2");
    assert_eq!(http_port(&env), port, "rebuild keeps the host port");
    wait_page(port, "hello-volume");
    let (containers, networks, volumes) = labelled(&id);
    assert_eq!(
        (containers.len(), networks.len(), volumes.len()),
        (2, 1, 1),
        "one container per service, one network, one volume"
    );

    delete_and_check_gone(&c, &name, &id);
    assert!(
        !c.agent(0).data_dir.join("docker/envs").join(&id).exists(),
        "the materialised files and port record are removed"
    );
}

#[test]
fn two_environments_of_one_template_run_side_by_side_and_keep_data_keeps_volumes() {
    let (a, b) = (format!("sa-{}", unique()), format!("sb-{}", unique()));
    let _cleanup = Cleanup(vec![a.clone(), b.clone()]);
    let (c, _) = docker_cluster();
    let t = format!("webdb-{}", unique());
    push(&c, &web_db_template(&c, &t, IMAGE));
    c.ok(&["env", "create", &a, "--template", &t]);
    c.ok(&["env", "create", &b, "--template", &t]);
    let ea = c.wait_env_state(&a, "Running", WAIT);
    let eb = c.wait_env_state(&b, "Running", WAIT);
    let (pa, pb) = (http_port(&ea), http_port(&eb));
    assert_ne!(pa, pb, "two environments got the same host port");
    write_page(&format!("metrom-{a}-web"), "from-a");
    write_page(&format!("metrom-{b}-web"), "from-b");
    wait_page(pa, "from-a");
    wait_page(pb, "from-b");
    // Each on its own network.
    let na = inspect(&format!("metrom-{a}-web"))["NetworkSettings"]["Networks"].clone();
    assert!(na.get(format!("metrom-{a}")).is_some(), "{na}");
    assert!(na.get(format!("metrom-{b}")).is_none(), "{na}");

    let (ida, idb) = (
        ea["id"].as_str().unwrap().to_string(),
        eb["id"].as_str().unwrap().to_string(),
    );
    c.ok(&["env", "delete", &a, "--keep-data", "--wait"]);
    let (containers, networks, volumes) = labelled(&ida);
    assert!(
        containers.is_empty() && networks.is_empty(),
        "{containers:?} {networks:?}"
    );
    assert_eq!(volumes.len(), 1, "--keep-data keeps the volume");
    // b is untouched.
    wait_page(pb, "from-b");
    delete_and_check_gone(&c, &b, &idb);
    for v in volumes {
        docker(&["volume", "rm", &v]);
    }
}

#[test]
fn an_agent_restart_readopts_the_containers_without_duplicates() {
    let name = format!("rs-{}", unique());
    let _cleanup = Cleanup(vec![name.clone()]);
    let (mut c, i) = docker_cluster();
    // An image only the registry has: the agent pulls it.
    let image = format!("metrom-test/pulled-{}:1", unique());
    let remote = format!("{REGISTRY}/{image}");
    docker(&["tag", IMAGE, &remote]);
    docker(&["push", "-q", &remote]);
    docker(&["rmi", &remote]);
    let t = format!("webdb-{}", unique());
    push(&c, &web_db_template(&c, &t, &image));
    let env = create(&c, &name, &t);
    let id = env["id"].as_str().unwrap().to_string();
    let (before, _, _) = labelled(&id);
    assert_eq!(before.len(), 2);

    c.agent(i).kill();
    c.agent(i).start(&[]);
    let host = c.agent(i).host_id.clone();
    c.wait_host_state(&host, "Ready", Duration::from_secs(30));
    let env = c.wait_env_state(&name, "Running", WAIT);
    // A few observations later there is still exactly the same pair.
    std::thread::sleep(Duration::from_secs(3));
    let (mut after, _, _) = labelled(&id);
    let mut before = before;
    before.sort();
    after.sort();
    assert_eq!(before, after, "re-adoption kept the same containers");
    assert_eq!(env["build"], 1);
    let port = http_port(&env);
    write_page(&format!("metrom-{name}-web"), "readopted");
    wait_page(port, "readopted");

    delete_and_check_gone(&c, &name, &id);
    let _ = Command::new("docker").args(["rmi", &remote]).output();
}

#[test]
fn unsupported_keys_and_missing_images_give_clear_errors_and_leave_nothing() {
    let (name, name2) = (format!("mi-{}", unique()), format!("hp-{}", unique()));
    let _cleanup = Cleanup(vec![name.clone(), name2.clone()]);
    let (mut c, _) = docker_cluster();
    // An unsupported compose key is refused at push, naming it and the supported ones.
    let t = format!("bad-{}", unique());
    let dir = web_db_template(&c, &t, IMAGE);
    let compose = std::fs::read_to_string(dir.join("compose.yaml")).unwrap();
    std::fs::write(
        dir.join("compose.yaml"),
        compose.replacen("  web:\n", "  web:\n    privileged: true\n", 1),
    )
    .unwrap();
    let out = c.metrom(&["template", "push", dir.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("unsupported key 'privileged'") && err.contains("supported: image, command"),
        "{err}"
    );
    let list: Vec<Value> = c.json(&["template", "list"]);
    assert!(list.is_empty(), "a refused template was stored: {list:?}");

    // A missing image: Failed, naming the image and the registry; nothing made.
    let t = format!("nope-{}", unique());
    let missing = format!("metrom-test/missing-{}:1", unique());
    push(&c, &web_db_template(&c, &t, &missing));
    c.ok(&["env", "create", &name, "--template", &t]);
    let env = c.wait_env_state(&name, "Failed", WAIT);
    let reason = env["reason"].as_str().unwrap_or_default().to_string();
    assert!(
        reason.contains(&format!("{REGISTRY}/{missing}"))
            && reason.contains("registry 127.0.0.1:5000"),
        "{reason}"
    );
    let id = env["id"].as_str().unwrap().to_string();
    assert_eq!(
        labelled(&id),
        (vec![], vec![], vec![]),
        "a failed pull left objects"
    );
    assert!(
        !c.agent(0).data_dir.join("docker/envs").join(&id).exists(),
        "a failed pull left files"
    );
    delete_and_check_gone(&c, &name, &id);

    // A host path would be this host's own files: refused, nothing made.
    let t = format!("host-{}", unique());
    let dir = web_db_template(&c, &t, IMAGE);
    let compose = std::fs::read_to_string(dir.join("compose.yaml")).unwrap();
    std::fs::write(
        dir.join("compose.yaml"),
        compose.replacen(
            "      - site:/www\n",
            "      - site:/www\n      - /etc:/host-etc:ro\n",
            1,
        ),
    )
    .unwrap();
    push(&c, &dir);
    c.ok(&["env", "create", &name2, "--template", &t]);
    let env = c.wait_env_state(&name2, "Failed", WAIT);
    let reason = env["reason"].as_str().unwrap_or_default().to_string();
    assert!(
        reason.contains("service 'web' mounts the host path /etc"),
        "{reason}"
    );
    let id = env["id"].as_str().unwrap().to_string();
    assert_eq!(labelled(&id), (vec![], vec![], vec![]));
    delete_and_check_gone(&c, &name2, &id);
}

#[test]
fn an_image_delivered_only_as_an_archive_runs() {
    let name = format!("ar-{}", unique());
    let _cleanup = Cleanup(vec![name.clone()]);
    let (c, _) = docker_cluster();
    // An image that exists nowhere but in a `docker save` archive.
    let image = format!("metrom-test/archived-{}:1", unique());
    docker(&["tag", IMAGE, &image]);
    let archive = c.dir.path().join("archived.tar");
    docker(&["save", "-o", archive.to_str().unwrap(), &image]);
    docker(&["rmi", &image]);
    let out = c.ok(&[
        "image",
        "import",
        "--docker",
        archive.to_str().unwrap(),
        "--name",
        "archived",
    ]);
    assert!(out.contains(&image), "{out}");
    let list: Vec<Value> = c.json(&["image", "list", "--docker"]);
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["images"][0], image.as_str());

    let t = format!("arch-{}", unique());
    push(&c, &web_db_template(&c, &t, &image));
    let env = create(&c, &name, &t);
    let id = env["id"].as_str().unwrap().to_string();
    let port = http_port(&env);
    write_page(&format!("metrom-{name}-web"), "from-archive");
    wait_page(port, "from-archive");

    delete_and_check_gone(&c, &name, &id);
    c.ok(&["image", "delete", "--docker", "archived"]);
    for tag in [image.clone(), format!("{REGISTRY}/{image}")] {
        let _ = Command::new("docker").args(["rmi", &tag]).output();
    }
}
