//! Joining, host reporting, liveness, restarts and revocation.

use std::time::Duration;

use metrom_tests::{Cluster, TTL_WITH_SLACK, agent_join, stderr, stdout, wait_for};
use serde_json::Value;

#[test]
fn three_agents_join_report_facts_and_survive_restarts_and_revocation() {
    let mut c = Cluster::start();
    let token = c.token(&["--uses", "3", "--label", "rack=b2", "--label", "tier=test"]);
    let a = c.join_agent("one", &token);
    let b = c.join_agent("two", &token);
    let d = c.join_agent("three", &token);
    let ids: Vec<String> = [a, b, d]
        .iter()
        .map(|&i| c.agent(i).host_id.clone())
        .collect();

    // All three Ready, with real facts and the token's labels.
    let hosts = wait_for("3 Ready hosts", Duration::from_secs(30), || {
        let hosts = c.hosts();
        (hosts.len() == 3 && hosts.iter().all(|h| h["state"] == "Ready")).then_some(hosts)
    });
    for h in &hosts {
        let f = &h["facts"];
        assert!(f["cpus"].as_u64().unwrap() >= 1, "{h}");
        assert!(f["memory_bytes"].as_u64().unwrap() > 100 << 20, "{h}");
        assert!(f["storage"]["total_bytes"].as_u64().unwrap() > 0, "{h}");
        assert!(!f["kernel"].as_str().unwrap().is_empty());
        assert_eq!(f["arch"], std::env::consts::ARCH);
        assert!(
            f["capabilities"]["kvm"]["detail"]
                .as_str()
                .unwrap()
                .contains("/dev/kvm")
        );
        assert_eq!(h["labels"]["rack"], "b2");
        assert_eq!(h["labels"]["tier"], "test");
        assert!(
            h["load"]["memory_available_bytes"].as_u64().is_some(),
            "heartbeats carry load: {h}"
        );
    }
    let names: Vec<&str> = hosts.iter().map(|h| h["name"].as_str().unwrap()).collect();
    assert!(
        names.contains(&"one") && names.contains(&"two") && names.contains(&"three"),
        "{names:?}"
    );

    // The table shows them too.
    let table = stdout(&c.metrom(&["host", "list"]));
    assert!(
        table.contains("STATE") && table.matches("Ready").count() == 3,
        "{table}"
    );

    // The token is used up: a fourth join is refused.
    let out = agent_join(
        &c.dir.path().join("agent-four"),
        &c.address(),
        &token,
        "four",
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("used up"), "{}", stderr(&out));

    // Unplug one: Unreachable within the TTL; plug it back: Ready.
    c.agent(b).kill();
    c.wait_host_state(&ids[1], "Unreachable", TTL_WITH_SLACK);
    assert_eq!(c.host_state(&ids[0]).as_deref(), Some("Ready"));
    c.agent(b).start(&[]);
    c.wait_host_state(&ids[1], "Ready", Duration::from_secs(20));

    // Restart the controller: every agent reconnects and nothing stored is lost.
    let tokens_before: Vec<Value> = c.json(&["token", "list"]);
    c.stop_controller();
    c.start_controller();
    wait_for(
        "all hosts Ready after a controller restart",
        Duration::from_secs(60),
        || {
            let hosts = c.hosts();
            (hosts.len() == 3 && hosts.iter().all(|h| h["state"] == "Ready")).then_some(())
        },
    );
    let tokens_after: Vec<Value> = c.json(&["token", "list"]);
    assert_eq!(tokens_before, tokens_after);
    for h in c.hosts() {
        assert_eq!(h["labels"]["rack"], "b2", "labels survive a restart: {h}");
    }

    // Revoke one: its agent is cut off at once and stops with exit code 3 ...
    let out = c.metrom(&["host", "revoke", &ids[2]]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(c.agent(d).wait_exit(Duration::from_secs(20)), Some(3));
    assert_eq!(c.host_state(&ids[2]).as_deref(), Some("Revoked"));
    // ... and cannot come back.
    c.agent(d).start(&[]);
    assert_eq!(c.agent(d).wait_exit(Duration::from_secs(20)), Some(3));
    let log = std::fs::read_to_string(&c.agent(d).log).unwrap();
    assert!(log.contains("revoked"), "{log}");
    // The others are unaffected, and the revocation survives a restart.
    c.stop_controller();
    c.start_controller();
    c.wait_host_state(&ids[0], "Ready", Duration::from_secs(60));
    c.agent(d).start(&[]);
    assert_eq!(c.agent(d).wait_exit(Duration::from_secs(20)), Some(3));
    let status = stdout(&c.metrom(&["status"]));
    assert!(
        status.contains("2 ready") && status.contains("1 revoked"),
        "{status}"
    );
}

#[test]
fn cordon_is_recorded_and_shown() {
    let mut c = Cluster::start();
    let token = c.token(&[]);
    let i = c.join_agent("solo", &token);
    let id = c.agent(i).host_id.clone();
    c.wait_host_state(&id, "Ready", Duration::from_secs(20));
    assert!(c.metrom(&["host", "cordon", &id]).status.success());
    let h: Value = c.json(&["host", "show", &id]);
    assert_eq!(h["cordoned"], true);
    assert!(stdout(&c.metrom(&["host", "list"])).contains("Ready,Cordoned"));
    c.stop_controller();
    c.start_controller();
    let h: Value = c.json(&["host", "show", &id]);
    assert_eq!(h["cordoned"], true, "cordon survives a restart");
    assert!(c.metrom(&["host", "uncordon", &id]).status.success());
    let h: Value = c.json(&["host", "show", &id]);
    assert_eq!(h["cordoned"], false);
    // Unknown ids are refused with exit code 3 (not found).
    let out = c.metrom(&["host", "show", "h-doesnotexist"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("no host h-doesnotexist"));
}

#[test]
fn bad_join_tokens_are_refused_and_store_nothing() {
    let c = Cluster::start();
    let root = c.dir.path();
    let good = c.token(&["--uses", "1"]);
    let (id, _) = good.strip_prefix("mtj1.").unwrap().split_once('.').unwrap();

    let cases: Vec<(String, &str)> = vec![
        // Wrong secret: same id and pin, another secret.
        {
            let mut parts: Vec<String> = good.split('.').map(str::to_string).collect();
            parts[2] = "x".repeat(32);
            (parts.join("."), "secret does not match")
        },
        ("mtj1.nope".to_string(), "malformed join token"),
        (good.replace(id, "zzzzzzzz"), "not known"),
    ];
    for (i, (token, expect)) in cases.iter().enumerate() {
        let out = agent_join(&root.join(format!("bad-{i}")), &c.address(), token, "bad");
        assert!(!out.status.success(), "{token} was accepted");
        assert!(stderr(&out).contains(expect), "{token}: {}", stderr(&out));
        assert!(
            !root.join(format!("bad-{i}/identity.toml")).exists(),
            "nothing written on refusal"
        );
    }

    // Expired.
    let short = c.token(&["--ttl", "1s"]);
    std::thread::sleep(Duration::from_millis(1500));
    let out = agent_join(&root.join("expired"), &c.address(), &short, "late");
    assert!(stderr(&out).contains("expired"), "{}", stderr(&out));

    // Revoked.
    let revoked = c.token(&[]);
    let rid = revoked.split('.').nth(1).unwrap();
    assert!(c.metrom(&["token", "revoke", rid]).status.success());
    let out = agent_join(&root.join("revoked"), &c.address(), &revoked, "gone");
    assert!(stderr(&out).contains("revoked"), "{}", stderr(&out));

    // Nothing was stored: no hosts, and the good token is still unused.
    assert!(c.hosts().is_empty());
    let tokens: Vec<Value> = c.json(&["token", "list"]);
    let t = tokens.iter().find(|t| t["id"] == id).unwrap();
    assert_eq!(t["used"], 0);
    assert_eq!(t["state"], "active");

    // Joining an enrolled data dir refuses without --force.
    let ok = agent_join(&root.join("ok"), &c.address(), &good, "ok");
    assert!(ok.status.success(), "{}", stderr(&ok));
    let again = c.token(&[]);
    let out = agent_join(&root.join("ok"), &c.address(), &again, "ok");
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--force"), "{}", stderr(&out));
}

#[test]
fn an_agent_refuses_a_controller_whose_ca_does_not_match_the_pin() {
    let a = Cluster::start();
    let b = Cluster::start();
    let token = a.token(&[]);
    // The token is A's, the address is B's.
    let out = agent_join(&a.dir.path().join("mitm"), &b.address(), &token, "victim");
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("does not match the token's pin"), "{err}");
    // B never saw a join request (the handshake failed before any data), and
    // A's token was not used.
    std::thread::sleep(Duration::from_millis(300));
    let blog = std::fs::read_to_string(b.controller_log()).unwrap();
    assert!(
        !blog.contains("join"),
        "B must not have received a join request:\n{blog}"
    );
    assert!(b.hosts().is_empty());
    let tokens: Vec<Value> = a.json(&["token", "list"]);
    assert_eq!(tokens[0]["used"], 0);
}

#[test]
fn cli_errors_are_clear_with_distinct_exit_codes() {
    let c = Cluster::start();
    // No identity anywhere.
    let out = std::process::Command::new(metrom_tests::bin("metrom"))
        .arg("status")
        .env_remove("METROM_IDENTITY")
        .env("HOME", c.dir.path())
        .env_remove("XDG_CONFIG_HOME")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("no identity"), "{}", stderr(&out));

    // A world-readable identity is refused.
    let loose = c.dir.path().join("loose.identity");
    std::fs::copy(&c.identity, &loose).unwrap();
    std::fs::set_permissions(&loose, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let out = c.metrom_as(&loose, &["status"]);
    assert!(stderr(&out).contains("chmod 600"), "{}", stderr(&out));

    // A controller that is not there.
    let mut dead = Cluster::start();
    dead.stop_controller();
    let out = dead.metrom(&["status"]);
    assert_eq!(out.status.code(), Some(9), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("cannot reach the controller"),
        "{}",
        stderr(&out)
    );

    // init refuses an initialised directory.
    let out = std::process::Command::new(metrom_tests::bin("metrom-controller"))
        .args(["init", "--advertise", "127.0.0.1:1", "--data-dir"])
        .arg(c.data_dir())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("already initialised") && stderr(&out).contains("--force"),
        "{}",
        stderr(&out)
    );

    // Bad arguments are caught before anything is sent.
    let out = c.metrom(&["token", "create", "--ttl", "3y"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("invalid duration"),
        "{}",
        stderr(&out)
    );
    let out = c.metrom(&["token", "create", "--label", "bad key=x"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

/// Stops what `metrom up` started, even when the test fails.
struct UpGuard {
    home: std::path::PathBuf,
    data: std::path::PathBuf,
}

impl Drop for UpGuard {
    fn drop(&mut self) {
        let _ = std::process::Command::new(metrom_tests::bin("metrom"))
            .arg("down")
            .arg("--data-dir")
            .arg(&self.data)
            .env("HOME", &self.home)
            .output();
    }
}

#[test]
fn metrom_up_runs_a_controller_and_a_local_agent() {
    let home = tempfile::Builder::new()
        .prefix("metrom-up-")
        .tempdir()
        .unwrap();
    let data = home.path().join("data");
    let port = metrom_tests::free_udp_port().to_string();
    let _guard = UpGuard {
        home: home.path().to_path_buf(),
        data: data.clone(),
    };
    let up = |extra: &[&str]| {
        std::process::Command::new(metrom_tests::bin("metrom"))
            .arg("up")
            .arg("--data-dir")
            .arg(&data)
            .args(["--port", &port])
            .args(extra)
            .env("HOME", home.path())
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("XDG_DATA_HOME")
            .env_remove("METROM_IDENTITY")
            .output()
            .unwrap()
    };
    let out = up(&[]);
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("Metrom is up"), "{text}");
    // The CLI now finds the identity by itself.
    let status = std::process::Command::new(metrom_tests::bin("metrom"))
        .args(["host", "list", "-o", "json"])
        .env("HOME", home.path())
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("METROM_IDENTITY")
        .output()
        .unwrap();
    assert!(status.status.success(), "{}", stderr(&status));
    let hosts: Vec<Value> = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(hosts.len(), 1);
    assert_eq!(hosts[0]["state"], "Ready");
    assert_eq!(hosts[0]["labels"]["metrom-up"], "local");

    // Running it again changes nothing: same single host.
    let again = up(&["-o", "json"]);
    assert!(again.status.success(), "{}", stderr(&again));
    let v: Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(v["hosts"].as_array().unwrap().len(), 1);

    let down = std::process::Command::new(metrom_tests::bin("metrom"))
        .arg("down")
        .arg("--data-dir")
        .arg(&data)
        .output()
        .unwrap();
    assert!(down.status.success());
    assert!(
        stderr(&down).contains("stopping metrom-agent"),
        "{}",
        stderr(&down)
    );
    assert!(!data.join("controller.pid").exists());
}

/// Removes a libvirt storage pool the test defined.
struct PoolGuard(String);

impl Drop for PoolGuard {
    fn drop(&mut self) {
        let _ = metrom_tests::virsh(&["pool-undefine", &self.0]);
    }
}

#[test]
fn metrom_up_says_why_the_agent_could_not_open_the_kvm_runtime() {
    let home = tempfile::Builder::new()
        .prefix("metrom-up-")
        .tempdir()
        .unwrap();
    let data = home.path().join("data");
    // A pool of the agent's pool name already exists for another folder.
    let pool = format!("metrom-uptest-{}", std::process::id());
    let elsewhere = home.path().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let defined = std::process::Command::new("virsh")
        .args([
            "-c",
            "qemu:///system",
            "pool-define-as",
            &pool,
            "dir",
            "--target",
        ])
        .arg(&elsewhere)
        .output()
        .expect("virsh (tests/setup.sh installs libvirt)");
    assert!(defined.status.success(), "{}", stderr(&defined));
    let _pool = PoolGuard(pool.clone());
    let agent_toml = home.path().join("agent.toml");
    std::fs::write(&agent_toml, format!("kvm_pool = \"{pool}\"\n")).unwrap();
    let _guard = UpGuard {
        home: home.path().to_path_buf(),
        data: data.clone(),
    };
    let out = std::process::Command::new(metrom_tests::bin("metrom"))
        .arg("up")
        .arg("--data-dir")
        .arg(&data)
        .args(["--port", &metrom_tests::free_udp_port().to_string()])
        .arg("--agent-config")
        .arg(&agent_toml)
        .env("HOME", home.path())
        .env_remove("METROM_IDENTITY")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    // Not "start libvirtd" (libvirt answers): the agent's own reason.
    let err = stderr(&out);
    assert!(
        err.contains("the agent could not open the kvm runtime")
            && err.contains(&format!(
                "a libvirt storage pool named {pool} already exists"
            )),
        "{err}"
    );
}

#[test]
fn agents_renew_their_certificate_before_it_expires() {
    let mut c = Cluster::start();
    c.configure("host_cert_validity = \"15s\"");
    let token = c.token(&[]);
    let i = c.join_agent("renewer", &token);
    let id = c.agent(i).host_id.clone();
    let identity_file = c.agent(i).data_dir.join("identity.toml");
    let first = std::fs::read_to_string(&identity_file).unwrap();
    c.wait_host_state(&id, "Ready", Duration::from_secs(20));
    // In the last third of its 15 s validity, the agent asks for a new one.
    let renewed = wait_for("a renewed certificate", Duration::from_secs(30), || {
        let now = std::fs::read_to_string(&identity_file).unwrap();
        (now != first).then_some(now)
    });
    let old: toml::Value = toml::from_str(&first).unwrap();
    let new: toml::Value = toml::from_str(&renewed).unwrap();
    assert_ne!(old["cert"], new["cert"]);
    assert_ne!(old["key"], new["key"], "a fresh key for every certificate");
    // Past the first certificate's expiry, a restarted agent still gets in.
    std::thread::sleep(Duration::from_secs(16));
    c.agent(i).kill();
    c.wait_host_state(&id, "Unreachable", TTL_WITH_SLACK);
    c.agent(i).start(&[]);
    c.wait_host_state(&id, "Ready", Duration::from_secs(20));
    let log = std::fs::read_to_string(&c.agent(i).log).unwrap();
    assert!(log.contains("renewed host certificate saved"), "{log}");
}
