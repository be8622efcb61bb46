//! Templates and the environment lifecycle over real QUIC, with agents whose
//! runtimes are the fake one (instances are records in the agent's data dir).

use std::path::{Path, PathBuf};
use std::time::Duration;

use metrom_tests::{
    Cluster, TTL_WITH_SLACK, fake_instances, starter_template, stderr, stdout, wait_for,
};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(60);

/// Writes a small template folder and returns its path.
fn template(c: &Cluster, name: &str, memory: &str, extra_toml: &str) -> PathBuf {
    let dir = c.dir.path().join(format!("tpl-{name}"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("metrom.toml"),
        format!(
            "name = \"{name}\"\ndescription = \"test template\"\nruntime = [\"kvm\", \"docker\"]\nimage = \"tiny\"\n\
             {extra_toml}\n[resources]\nvcpus = 1\nmemory = \"{memory}\"\ndisk = \"1GiB\"\n\
             [params.GREETING]\ndefault = \"hello\"\n"
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("compose.yaml"),
        "services:\n  web:\n    image: metrom-test/busybox:1\n    command: [\"httpd\", \"-f\", \"-p\", \"8080\"]\n    environment:\n      GREETING: ${GREETING}\n",
    )
    .unwrap();
    dir
}

fn push(c: &Cluster, dir: &Path) -> String {
    c.ok(&["template", "push", dir.to_str().unwrap()])
}

fn cluster_with_fake_host() -> (Cluster, usize) {
    let mut c = Cluster::start();
    let i = c.fake_host("alpha", "300ms");
    c.import_dummy_image("tiny");
    (c, i)
}

#[test]
fn the_full_lifecycle_of_an_environment() {
    let (mut c, a) = cluster_with_fake_host();
    let out = push(&c, &starter_template("minimal"));
    assert!(
        out.contains("pushed minimal@sha256:") && out.contains("new version"),
        "{out}"
    );
    // Pushing the same content again is not a new version.
    assert!(push(&c, &starter_template("minimal")).contains("unchanged"));

    let out = c.metrom(&[
        "env",
        "create",
        "api-dev",
        "--template",
        "minimal",
        "--wait",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("Running"), "{}", stdout(&out));
    let env = c.env("api-dev");
    assert_eq!(env["state"], "Running");
    assert_eq!(env["host"], c.agent(a).host_id.as_str());
    let phases: Vec<&str> = env["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["phase"].as_str().unwrap())
        .collect();
    assert_eq!(
        phases,
        ["requested", "scheduled", "provisioning", "running"]
    );
    let kinds: Vec<&str> = env["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert!(
        kinds.contains(&"created") && kinds.contains(&"scheduled"),
        "{kinds:?}"
    );
    let list: Vec<Value> = c.json(&["env", "list"]);
    assert_eq!(list.len(), 1);
    assert!(stdout(&c.metrom(&["env", "list"])).contains("api-dev"));
    let alpha = c.agent(a).host_id.clone();
    let host: Value = c.json(&["host", "show", &alpha]);
    assert_eq!(host["environments"], 1);
    assert_eq!(host["allocated"]["memory_mb"], 256);

    // stop / start
    c.ok(&["env", "stop", "api-dev", "--wait"]);
    assert_eq!(c.env("api-dev")["state"], "Stopped");
    let inst = fake_instances(&c.agent(a).data_dir);
    assert_eq!(inst.values().next().unwrap()["running"], false);
    c.ok(&["env", "start", "api-dev", "--wait"]);
    assert_eq!(c.env("api-dev")["state"], "Running");

    // rebuild: a fresh instance, same data
    let v1 = env["version"].as_str().unwrap().to_string();
    c.ok(&["env", "rebuild", "api-dev", "--wait"]);
    let env = c.env("api-dev");
    assert_eq!(env["build"], 2);
    assert_eq!(env["version"], v1);
    let inst = fake_instances(&c.agent(a).data_dir);
    let i = inst.values().next().unwrap();
    assert_eq!(
        (
            i["build"].as_u64(),
            i["creations"].as_u64(),
            i["data"].as_bool()
        ),
        (Some(2), Some(2), Some(true))
    );

    // delete: gone on the host, allocation released, name free again
    c.ok(&["env", "delete", "api-dev", "--wait"]);
    assert!(fake_instances(&c.agent(a).data_dir).is_empty());
    let list: Vec<Value> = c.json(&["env", "list"]);
    assert!(list.is_empty());
    let all: Vec<Value> = c.json(&["env", "list", "--all"]);
    assert_eq!(all[0]["state"], "Deleted");
    let alpha = c.agent(a).host_id.clone();
    let host: Value = c.json(&["host", "show", &alpha]);
    assert_eq!(host["environments"], 0);
    c.ok(&["env", "create", "api-dev", "--template", "minimal"]);
    c.wait_env_state("api-dev", "Running", WAIT);
}

#[test]
fn templates_are_versioned_pulled_and_pushed_back() {
    let (c, _) = cluster_with_fake_host();
    let dir = template(&c, "svc", "256MiB", "");
    push(&c, &dir);
    std::fs::write(dir.join("README.md"), "v2\n").unwrap();
    push(&c, &dir);
    let versions: Vec<Value> = c.json(&["template", "versions", "svc"]);
    assert_eq!(versions.len(), 2);
    assert_eq!(versions[1]["latest"], true);
    let v1 = versions[0]["version"].as_str().unwrap();
    let show: Value = c.json(&["template", "show", &format!("svc@{}", &v1[..19])]);
    assert_eq!(show["version"], v1);
    assert!(
        show["services"][0].as_str().unwrap().starts_with("web"),
        "{show}"
    );

    // The marketplace loop: pull, rename, push as one's own.
    let mine = c.dir.path().join("mine");
    c.ok(&["template", "pull", "svc", mine.to_str().unwrap()]);
    assert!(mine.join("README.md").exists());
    let toml = std::fs::read_to_string(mine.join("metrom.toml"))
        .unwrap()
        .replace("name = \"svc\"", "name = \"svc-mine\"");
    std::fs::write(mine.join("metrom.toml"), toml).unwrap();
    assert!(push(&c, &mine).contains("svc-mine"));
    let list: Vec<Value> = c.json(&["template", "list"]);
    assert_eq!(list.len(), 2);

    // An environment from an older version, then rebuilt to the latest.
    c.ok(&[
        "env",
        "create",
        "old",
        "--template",
        &format!("svc@{}", &v1[7..19]),
        "--param",
        "GREETING=hi",
    ]);
    c.wait_env_state("old", "Running", WAIT);
    assert_eq!(c.env("old")["version"], v1);
    assert_eq!(c.env("old")["params"]["GREETING"], "hi");
    c.ok(&["env", "rebuild", "old", "--wait"]);
    assert_eq!(c.env("old")["version"], versions[1]["version"]);
    assert_eq!(
        c.env("old")["params"]["GREETING"],
        "hi",
        "parameters survive a rebuild"
    );
}

#[test]
fn bad_templates_and_requests_are_refused_and_nothing_is_stored() {
    let (c, _) = cluster_with_fake_host();
    let bad = |name: &str, toml: &str, compose: &str| {
        let dir = c.dir.path().join(format!("bad-{name}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("metrom.toml"), toml).unwrap();
        std::fs::write(dir.join("compose.yaml"), compose).unwrap();
        let out = c.metrom(&["template", "push", dir.to_str().unwrap()]);
        assert!(!out.status.success(), "{name} was accepted");
        stderr(&out)
    };
    let good_toml = "name = \"t\"\nimage = \"tiny\"\n[resources]\nvcpus = 1\nmemory = \"256MiB\"\ndisk = \"1GiB\"\n";
    let good_compose = "services:\n  web:\n    image: x:1\n";
    let e = bad("toml", "name = \"t\"\n[resources\n", good_compose);
    assert!(e.contains("metrom.toml") && e.contains("line"), "{e}");
    let e = bad(
        "unknown-key",
        &format!("{good_toml}colour = \"red\"\n"),
        good_compose,
    );
    assert!(e.contains("colour"), "{e}");
    let e = bad(
        "compose-key",
        good_toml,
        "services:\n  web:\n    image: x:1\n    deploy:\n      replicas: 2\n",
    );
    assert!(
        e.contains("compose.yaml")
            && e.contains("line 4")
            && e.contains("deploy")
            && e.contains("supported"),
        "{e}"
    );
    let e = bad(
        "yaml",
        good_toml,
        "services:\n  web:\n    image: [unclosed\n",
    );
    assert!(e.contains("compose.yaml") && e.contains("line"), "{e}");
    let e = bad(
        "resources",
        &good_toml.replace("vcpus = 1", "vcpus = 500"),
        good_compose,
    );
    assert!(e.contains("vcpus"), "{e}");
    let e = bad(
        "image",
        &good_toml.replace("tiny", "no-such-image"),
        good_compose,
    );
    assert!(
        e.contains("no-such-image") && e.contains("image import"),
        "{e}"
    );
    let listed: Vec<Value> = c.json(&["template", "list"]);
    assert!(listed.is_empty(), "nothing stored: {listed:?}");

    push(&c, &template(&c, "ok", "256MiB", ""));
    let refuse = |args: &[&str], code: i32, expect: &str| {
        let out = c.metrom(args);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(expect), "{args:?}: {}", stderr(&out));
    };
    refuse(
        &["env", "create", "a", "--template", "nope"],
        3,
        "no template nope",
    );
    refuse(
        &["env", "create", "a", "--template", "ok@sha256:ffff"],
        3,
        "has no version",
    );
    refuse(
        &[
            "env",
            "create",
            "a",
            "--template",
            "ok",
            "--param",
            "COLOR=red",
        ],
        2,
        "COLOR",
    );
    refuse(
        &["env", "create", "Bad_Name", "--template", "ok"],
        2,
        "environment name",
    );
    refuse(
        &[
            "env",
            "create",
            "a",
            "--template",
            "ok",
            "--host",
            "h-nosuchhost",
        ],
        3,
        "no host",
    );
    c.ok(&["env", "create", "a", "--template", "ok"]);
    refuse(
        &["env", "create", "a", "--template", "ok"],
        4,
        "already exists",
    );
    refuse(&["env", "stop", "zzz"], 3, "no environment zzz");
    let envs: Vec<Value> = c.json(&["env", "list"]);
    assert_eq!(
        envs.len(),
        1,
        "only the one good environment exists: {envs:?}"
    );
}

#[test]
fn a_full_cluster_says_exactly_why_no_host_fits() {
    let mut c = Cluster::start();
    let a = c.fake_host("alpha", "100ms");
    let b = c.fake_host("beta", "100ms");
    c.import_dummy_image("tiny");
    push(&c, &template(&c, "big", "14GiB", ""));
    // Each host (24 GiB) takes one 14 GiB environment.
    c.ok(&["env", "create", "one", "--template", "big"]);
    c.ok(&["env", "create", "two", "--template", "big"]);
    let hosts: Vec<String> = ["one", "two"]
        .iter()
        .map(|n| c.env(n)["host"].as_str().unwrap().to_string())
        .collect();
    assert_ne!(
        hosts[0], hosts[1],
        "binpack still cannot put two on one host"
    );
    let out = c.metrom(&["env", "create", "three", "--template", "big"]);
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("memory") && err.contains("2 hosts"), "{err}");
    // Cordon one and delete its environment: cordoned hosts are named as such.
    let beta = c.agent(b).host_id.clone();
    c.ok(&["host", "cordon", &beta]);
    let on_beta = if hosts[0] == beta { "one" } else { "two" };
    c.ok(&["env", "delete", on_beta, "--wait"]);
    let out = c.metrom(&["env", "create", "three", "--template", "big"]);
    let err = stderr(&out);
    assert!(err.contains("cordoned"), "{err}");
    // Pinning to a host says why that host cannot take it.
    let alpha = c.agent(a).host_id.clone();
    let out = c.metrom(&[
        "env",
        "create",
        "three",
        "--template",
        "big",
        "--host",
        &alpha,
    ]);
    assert!(
        stderr(&out).contains(&alpha) && stderr(&out).contains("memory"),
        "{}",
        stderr(&out)
    );
    // Labels no host has.
    let out = c.metrom(&[
        "env",
        "create",
        "three",
        "--template",
        "big",
        "--label",
        "gpu=yes",
    ]);
    assert!(stderr(&out).contains("gpu"), "{}", stderr(&out));
    let envs: Vec<Value> = c.json(&["env", "list"]);
    assert_eq!(envs.len(), 1);
}

#[test]
fn agent_and_controller_restarts_converge_to_one_instance() {
    let mut c = Cluster::start();
    let a = c.fake_host("alpha", "2s");
    c.import_dummy_image("tiny");
    push(&c, &starter_template("minimal"));
    // Kill the agent while it is creating the instance.
    c.ok(&["env", "create", "slow", "--template", "minimal"]);
    c.wait_env_state("slow", "Provisioning", WAIT);
    c.agent(a).kill();
    c.agent(a).start(&[]);
    c.wait_env_state("slow", "Running", WAIT);
    // Restart the controller while another one is being created.
    c.ok(&["env", "create", "slow2", "--template", "minimal"]);
    c.stop_controller();
    c.start_controller();
    c.wait_env_state("slow2", "Running", WAIT);
    // And crash it mid-way through a stop.
    c.ok(&["env", "stop", "slow"]);
    c.kill_controller();
    c.start_controller();
    c.wait_env_state("slow", "Stopped", WAIT);
    let inst = fake_instances(&c.agent(a).data_dir);
    assert_eq!(inst.len(), 2);
    for (_, i) in inst {
        assert_eq!(i["creations"], 1, "no second instance was ever made: {i}");
    }
}

#[test]
fn a_lost_host_makes_environments_unknown_and_rebuild_elsewhere_moves_them() {
    let mut c = Cluster::start();
    let a = c.fake_host("alpha", "100ms");
    let b = c.fake_host("beta", "100ms");
    c.import_dummy_image("tiny");
    push(&c, &starter_template("minimal"));
    let alpha = c.agent(a).host_id.clone();
    c.ok(&[
        "env",
        "create",
        "web",
        "--template",
        "minimal",
        "--host",
        &alpha,
        "--wait",
    ]);
    c.agent(a).kill();
    c.wait_env_state("web", "Unknown", TTL_WITH_SLACK + Duration::from_secs(5));
    let show = stdout(&c.metrom(&["env", "show", "web"]));
    assert!(show.contains("unreachable"), "{show}");
    // Not rescheduled on its own.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(c.env("web")["host"], alpha.as_str());
    c.ok(&["env", "rebuild", "web", "--elsewhere", "--wait"]);
    let env = c.env("web");
    assert_eq!(env["host"], c.agent(b).host_id.as_str());
    // When alpha comes back, its stale copy is removed: one instance in all.
    c.agent(a).start(&[]);
    c.wait_host_state(&alpha, "Ready", Duration::from_secs(20));
    wait_for("alpha's stale copy to be removed", WAIT, || {
        fake_instances(&c.agent(a).data_dir)
            .is_empty()
            .then_some(())
    });
    assert_eq!(fake_instances(&c.agent(b).data_dir).len(), 1);
    assert_eq!(c.env("web")["state"], "Running");
}

#[test]
fn the_starter_templates_are_accepted() {
    let (c, _) = cluster_with_fake_host();
    c.import_dummy_image("debian-12");
    for name in ["minimal", "web-db", "nextcloud"] {
        let out = push(&c, &starter_template(name));
        assert!(out.contains(&format!("pushed {name}@")), "{out}");
        let show: Value = c.json(&["template", "show", name]);
        assert!(!show["services"].as_array().unwrap().is_empty(), "{show}");
    }
}
