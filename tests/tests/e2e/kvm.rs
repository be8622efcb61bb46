//! The kvm runtime against the real libvirtd and QEMU (TCG on this machine),
//! with the tiny test image (Debian's cloud kernel + a busybox initramfs
//! running the real QEMU guest agent).

use std::time::Duration;

use metrom_tests::{
    Cluster, kvm_agent_toml, starter_template, stderr, test_image, virsh, wait_for,
};
use serde_json::Value;

const BOOT: Duration = Duration::from_secs(240);

/// A cluster with one kvm host, the tiny image imported as `tiny`, and the
/// minimal starter template pushed.
fn kvm_cluster(test: &str, accel: &str) -> (Cluster, usize) {
    let mut c = Cluster::start();
    let token = c.token(&[]);
    let a = c.join_agent_with_config(test, &token, &kvm_agent_toml(test, accel));
    let id = c.agent(a).host_id.clone();
    c.wait_host_state(&id, "Ready", Duration::from_secs(60));
    let tiny = test_image("tiny");
    c.ok(&["image", "import", tiny.to_str().unwrap(), "--name", "tiny"]);
    c.ok(&[
        "template",
        "push",
        starter_template("minimal").to_str().unwrap(),
    ]);
    (c, a)
}

fn agent_log(c: &mut Cluster, a: usize) -> String {
    std::fs::read_to_string(&c.agent(a).log).unwrap_or_default()
}

/// Files left in the agent's storage pool for an environment.
fn leftovers(c: &mut Cluster, a: usize, env_id: &str) -> Vec<String> {
    let pool = c.agent(a).data_dir.join("pool");
    std::fs::read_dir(pool)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(env_id))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_tiny_vm_boots_stops_starts_survives_an_agent_restart_and_leaves_nothing_behind() {
    let (mut c, a) = kvm_cluster("kvm-life", "auto");
    assert!(
        agent_log(&mut c, a).contains("acceleration:"),
        "the agent says which acceleration it chose"
    );
    let host: Value = c.json(&["host", "show", &c.host_id(a)]);
    assert!(
        host["facts"]["runtimes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r == "Kvm"),
        "{host}"
    );

    let out = c.metrom(&[
        "env",
        "create",
        "tiny-life",
        "--template",
        "minimal",
        "--wait",
        "--timeout",
        "4m",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let env = c.env("tiny-life");
    let env_id = env["id"].as_str().unwrap().to_string();
    assert_eq!(env["runtime"], "kvm");
    assert_eq!(env["detail"]["instance"], "metrom-tiny-life");
    let ip = env["detail"]["addresses"][0]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        ip.starts_with("192.168.213."),
        "the guest agent reports its address: {env}"
    );
    assert!(virsh(&["domstate", "metrom-tiny-life"]).contains("running"));
    // The agent measures the VM's CPU and network activity for the idle policy.
    let activity = wait_for("activity reports", Duration::from_secs(60), || {
        let a = c.env("tiny-life")["policies"]["activity"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        (!a.is_empty() && !a.contains("no activity figures")).then_some(a)
    });
    eprintln!("activity: {activity}");

    // The root disk is a copy-on-write overlay on the cached image, never a copy.
    let xml = virsh(&["dumpxml", "metrom-tiny-life"]);
    let cache = c.agent(a).data_dir.join("images");
    assert!(
        xml.contains(&*cache.to_string_lossy()),
        "backing file in the image cache:\n{xml}"
    );
    let root = c
        .agent(a)
        .data_dir
        .join("pool")
        .join(format!("{env_id}-root.qcow2"));
    let overlay = std::fs::metadata(&root).unwrap().len();
    assert!(
        overlay < 8 << 20,
        "overlay is {overlay} bytes: not a full copy"
    );

    // stop (ACPI) / start
    c.ok(&["env", "stop", "tiny-life", "--wait", "--timeout", "2m"]);
    assert!(virsh(&["domstate", "metrom-tiny-life"]).contains("shut off"));
    c.ok(&["env", "start", "tiny-life", "--wait", "--timeout", "4m"]);

    // An agent restart re-adopts the running VM: same domain, no second one.
    let uuid = virsh(&["domuuid", "metrom-tiny-life"]);
    c.agent(a).kill();
    c.agent(a).start(&[]);
    let id = c.agent(a).host_id.clone();
    c.wait_host_state(&id, "Ready", Duration::from_secs(60));
    wait_for("re-adoption", BOOT, || {
        (c.env("tiny-life")["state"] == "Running").then_some(())
    });
    assert_eq!(virsh(&["domuuid", "metrom-tiny-life"]), uuid);
    assert_eq!(
        virsh(&["list", "--all", "--name"])
            .lines()
            .filter(|l| l.contains("tiny-life"))
            .count(),
        1
    );
    assert!(
        agent_log(&mut c, a).contains("re-adopting"),
        "{}",
        agent_log(&mut c, a)
    );

    // delete: no domain, volume or file left.
    c.ok(&["env", "delete", "tiny-life", "--wait", "--timeout", "2m"]);
    assert!(!virsh(&["list", "--all", "--name"]).contains("metrom-tiny-life"));
    assert_eq!(leftovers(&mut c, a, &env_id), Vec::<String>::new());
    assert!(!c.agent(a).data_dir.join("kvm").join(&env_id).exists());
    // The base image stays cached for the next environment.
    assert_eq!(std::fs::read_dir(&cache).unwrap().count(), 1);
}

#[test]
fn image_transfers_resume_after_a_cut_and_corrupt_images_are_rejected() {
    let mut c = Cluster::start();
    c.configure("transfer_rate_mib = 3");
    let token = c.token(&[]);
    let a = c.join_agent_with_config("kvm-xfer", &token, &kvm_agent_toml("kvm-xfer", "tcg"));
    let id = c.agent(a).host_id.clone();
    c.wait_host_state(&id, "Ready", Duration::from_secs(60));
    let tiny = test_image("tiny");
    c.ok(&["image", "import", tiny.to_str().unwrap(), "--name", "tiny"]);
    c.ok(&[
        "template",
        "push",
        starter_template("minimal").to_str().unwrap(),
    ]);

    // Cut the connection while the image is on its way (about 6 s at 3 MiB/s).
    c.ok(&["env", "create", "tiny-xfer", "--template", "minimal"]);
    wait_for(
        "the transfer to be under way",
        Duration::from_secs(60),
        || {
            let m = c.env("tiny-xfer")["detail"]["message"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let pct: u32 = m
                .split("controller: ")
                .nth(1)
                .and_then(|p| p.trim_end_matches('%').parse().ok())
                .unwrap_or(0);
            (pct >= 15).then_some(())
        },
    );
    c.kill_controller();
    std::thread::sleep(Duration::from_secs(1));
    c.start_controller();
    c.wait_env_state("tiny-xfer", "Running", BOOT);
    let log = agent_log(&mut c, a);
    assert!(log.contains("resuming the transfer at byte"), "{log}");

    // A corrupted image (different bytes, same size) is downloaded, rejected, discarded.
    let bad = c.dir.path().join("tiny-other.qcow2");
    let mut bytes = std::fs::read(&tiny).unwrap();
    bytes.extend_from_slice(&[0u8; 4096]);
    std::fs::write(&bad, &bytes).unwrap();
    let imported: Value = c.json(&[
        "image",
        "import",
        bad.to_str().unwrap(),
        "--name",
        "tiny-other",
    ]);
    let digest = imported["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_string();
    let stored = c.data_dir().join("images").join(&digest);
    let mut content = std::fs::read(&stored).unwrap();
    let mid = content.len() / 2;
    content[mid] ^= 0xff;
    std::fs::write(&stored, content).unwrap();
    let tpl = c.dir.path().join("tpl-other");
    std::fs::create_dir_all(&tpl).unwrap();
    let toml = std::fs::read_to_string(starter_template("minimal").join("metrom.toml"))
        .unwrap()
        .replace("name = \"minimal\"", "name = \"other\"")
        .replace("image = \"tiny\"", "image = \"tiny-other\"");
    std::fs::write(tpl.join("metrom.toml"), toml).unwrap();
    std::fs::copy(
        starter_template("minimal").join("compose.yaml"),
        tpl.join("compose.yaml"),
    )
    .unwrap();
    c.ok(&["template", "push", tpl.to_str().unwrap()]);
    c.ok(&["env", "create", "tiny-bad", "--template", "other"]);
    let env = c.wait_env_state("tiny-bad", "Failed", Duration::from_secs(120));
    assert!(env["reason"].as_str().unwrap().contains("digest"), "{env}");
    let cache = c.agent(a).data_dir.join("images");
    let names: Vec<String> = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !names.iter().any(|n| n.starts_with(&digest)),
        "the bad image and its partial file are gone: {names:?}"
    );
    assert!(!virsh(&["list", "--all", "--name"]).contains("metrom-tiny-bad"));
    c.ok(&["env", "delete", "tiny-bad"]);
    c.ok(&["env", "delete", "tiny-xfer", "--wait", "--timeout", "2m"]);
}

/// Unmounts a tmpfs when dropped.
struct Mounted(std::path::PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_fails_the_environment_clearly_and_leaves_nothing_half_made() {
    let (mut c, a) = kvm_cluster("kvm-full", "tcg");
    // The image cache gets 4 MiB: the 19 MiB image cannot fit.
    let images = c.agent(a).data_dir.join("images");
    std::fs::create_dir_all(&images).unwrap();
    let ok = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=4m", "metrom-test-full"])
        .arg(&images)
        .status()
        .unwrap();
    assert!(ok.success(), "mounting a small tmpfs");
    let _mounted = Mounted(images.clone());
    c.ok(&["env", "create", "tiny-full", "--template", "minimal"]);
    let env = c.wait_env_state("tiny-full", "Failed", Duration::from_secs(120));
    let reason = env["reason"].as_str().unwrap().to_string();
    assert!(reason.contains("disk is full"), "{reason}");
    let env_id = env["id"].as_str().unwrap().to_string();
    assert_eq!(
        std::fs::read_dir(&images).unwrap().count(),
        0,
        "no partial image left"
    );
    assert!(!virsh(&["list", "--all", "--name"]).contains("metrom-tiny-full"));
    assert_eq!(leftovers(&mut c, a, &env_id), Vec::<String>::new());
    c.ok(&["env", "delete", "tiny-full", "--wait", "--timeout", "1m"]);
}

#[test]
fn an_environment_fails_while_libvirtd_is_down_and_recovers_when_it_returns() {
    let (mut c, a) = kvm_cluster("kvm-down", "tcg");
    let stop = std::process::Command::new("pkill")
        .args(["-x", "libvirtd"])
        .status()
        .unwrap();
    assert!(stop.success(), "libvirtd was running");
    /// Restarts libvirtd even if the test fails.
    struct Restart;
    impl Drop for Restart {
        fn drop(&mut self) {
            if std::process::Command::new("pgrep")
                .args(["-x", "libvirtd"])
                .status()
                .map(|s| !s.success())
                .unwrap_or(true)
            {
                let _ = std::process::Command::new("libvirtd").arg("-d").status();
            }
        }
    }
    let restart = Restart;
    wait_for("libvirtd to stop", Duration::from_secs(20), || {
        std::process::Command::new("pgrep")
            .args(["-x", "libvirtd"])
            .status()
            .unwrap()
            .success()
            .then_some(())
            .xor(Some(()))
    });
    c.ok(&["env", "create", "tiny-down", "--template", "minimal"]);
    let env = c.wait_env_state("tiny-down", "Failed", Duration::from_secs(120));
    assert!(env["reason"].as_str().unwrap().contains("libvirt"), "{env}");
    assert!(c.agent(a).is_running(), "the agent keeps running");
    drop(restart);
    wait_for("libvirtd to answer", Duration::from_secs(30), || {
        virsh(&["version"]).contains("libvirt").then_some(())
    });
    c.wait_env_state("tiny-down", "Running", Duration::from_secs(300));
    c.ok(&["env", "delete", "tiny-down", "--wait", "--timeout", "2m"]);
}
