//! The whole path with a real Debian 12 VM (cloud-init, the QEMU guest agent,
//! Docker): an environment from a template whose compose service image comes
//! from the local registry boots; cloud-init runs; the service answers HTTP
//! through the environment's forwarded port; a repository served by the test
//! is cloned inside; a file on the data disk survives `env rebuild`.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use base64::Engine;
use metrom_tests::gateway::{GATEWAY, Helper, free_port_on, registry_on_gateway};
use metrom_tests::{Cluster, kvm_agent_toml, stderr, test_image, virsh, wait_for};
use serde_json::Value;

/// A bare git repository with one commit, served by `git daemon` on the gateway.
fn git_repo(dir: &Path) -> (Helper, u16) {
    let base = dir.join("git");
    let work = dir.join("work");
    std::fs::create_dir_all(&work).unwrap();
    let git = |args: &[&str], cwd: &Path| {
        let out = Command::new("git")
            .args(args)
            .current_dir(cwd)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    std::fs::create_dir_all(&base).unwrap();
    git(&["init", "-q", "--bare", "app.git"], &base);
    git(&["init", "-q", "-b", "main"], &work);
    std::fs::write(work.join("README"), "metrom test repository\n").unwrap();
    git(&["add", "README"], &work);
    git(
        &[
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "commit",
            "-q",
            "-m",
            "first",
        ],
        &work,
    );
    git(
        &["push", "-q", base.join("app.git").to_str().unwrap(), "main"],
        &work,
    );
    let port = free_port_on(GATEWAY);
    let child = Command::new("git")
        .args([
            "daemon",
            "--reuseaddr",
            "--export-all",
            &format!("--listen={GATEWAY}"),
            &format!("--port={port}"),
        ])
        .arg(format!("--base-path={}", base.display()))
        .arg(&base)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("git daemon");
    let helper = Helper(child);
    wait_for("git daemon", Duration::from_secs(20), || {
        std::net::TcpStream::connect((GATEWAY, port))
            .ok()
            .map(|_| ())
    });
    (helper, port)
}

/// Runs a shell command in the guest through the guest agent: (exit code, stdout).
fn guest_sh(domain: &str, script: &str) -> (i64, String) {
    let cmd = serde_json::json!({"execute": "guest-exec", "arguments": {"path": "/bin/sh", "arg": ["-c", script], "capture-output": true}});
    let out = virsh(&["qemu-agent-command", domain, &cmd.to_string()]);
    let pid = serde_json::from_str::<Value>(&out).unwrap_or_default()["return"]["pid"].clone();
    assert!(pid.is_number(), "guest-exec answered {out}");
    let status =
        serde_json::json!({"execute": "guest-exec-status", "arguments": {"pid": pid}}).to_string();
    wait_for("the guest command", Duration::from_secs(60), || {
        let v: Value = serde_json::from_str(&virsh(&["qemu-agent-command", domain, &status]))
            .unwrap_or_default();
        (v["return"]["exited"] == true).then(|| {
            let data = base64::engine::general_purpose::STANDARD
                .decode(v["return"]["out-data"].as_str().unwrap_or_default())
                .unwrap_or_default();
            (
                v["return"]["exitcode"].as_i64().unwrap_or(-1),
                String::from_utf8_lossy(&data).into_owned(),
            )
        })
    })
}

fn http_get(port: u16) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /index.html HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    body
}

#[test]
fn a_debian_environment_provisions_serves_and_keeps_its_data_across_rebuild() {
    let mut c = Cluster::start();
    let token = c.token(&[]);
    let a = c.join_agent_with_config("kvm-full", &token, &kvm_agent_toml("kvm-full", "auto"));
    c.wait_host_state(&c.host_id(a), "Ready", Duration::from_secs(60));
    let debian = test_image("debian-12");
    c.ok(&[
        "image",
        "import",
        debian.to_str().unwrap(),
        "--name",
        "debian-12",
    ]);
    let (_registry, reg_port) = registry_on_gateway(c.dir.path());
    let (_git, git_port) = git_repo(c.dir.path());

    let tpl = c.dir.path().join("tpl-debian");
    std::fs::create_dir_all(&tpl).unwrap();
    std::fs::write(
        tpl.join("metrom.toml"),
        format!(
            "name = \"debian-web\"\nruntime = [\"kvm\"]\nimage = \"debian-12\"\nregistry = \"{GATEWAY}:{reg_port}\"\n\
             packages = [\"git\"]\n[resources]\nvcpus = 2\nmemory = \"1GiB\"\ndisk = \"8GiB\"\n\
             [[ports]]\nname = \"web\"\nport = 8080\n\
             [[repos]]\nurl = \"git://{GATEWAY}:{git_port}/app.git\"\nbranch = \"main\"\npath = \"app\"\n"
        ),
    )
    .unwrap();
    std::fs::write(
        tpl.join("compose.yaml"),
        "services:\n  web:\n    image: metrom-test/busybox:1\n    command: [\"sh\", \"-c\", \"mkdir -p /www && echo hello-from-metrom > /www/index.html && httpd -f -p 8080 -h /www\"]\n    ports:\n      - \"8080:8080\"\n",
    )
    .unwrap();
    c.ok(&["template", "push", tpl.to_str().unwrap()]);

    let out = c.metrom(&[
        "env",
        "create",
        "deb",
        "--template",
        "debian-web",
        "--wait",
        "--timeout",
        "12m",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let env = c.env("deb");
    assert_eq!(env["detail"]["services"][0]["name"], "web", "{env}");
    assert_eq!(env["detail"]["services"][0]["state"], "running", "{env}");
    let port = env["detail"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["guest_port"] == 8080)
        .unwrap()["host_port"]
        .as_u64()
        .unwrap() as u16;
    let body = wait_for(
        "the service through the forwarded port",
        Duration::from_secs(60),
        || {
            let b = http_get(port);
            b.contains("hello-from-metrom").then_some(b)
        },
    );
    assert!(body.starts_with("HTTP/1."), "{body}");

    let domain = "metrom-deb";
    let (code, _) = guest_sh(domain, "test -f /home/admin/app/README");
    assert_eq!(code, 0, "the repository is cloned into the owner's home");
    let (code, _) = guest_sh(
        domain,
        "mountpoint -q /data && echo keep > /data/marker && echo scratch > /root/scratch",
    );
    assert_eq!(code, 0, "the data disk is mounted at /data");

    // Rebuild: a fresh root disk from the template, the same data disk.
    let out = c.metrom(&["env", "rebuild", "deb", "--wait", "--timeout", "12m"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(c.env("deb")["build"], 2);
    let (code, out) = guest_sh(domain, "cat /data/marker");
    if (code, out.trim()) != (0, "keep") {
        let (_, why) = guest_sh(
            domain,
            "findmnt /data; ls -la /data; blkid /dev/vdb; grep -i -A3 'disk_setup\\|fs_setup\\|mkfs' /var/log/cloud-init.log | tail -40",
        );
        panic!("data did not survive the rebuild ({code}, {out:?}):\n{why}");
    }
    let (code, _) = guest_sh(domain, "test -e /root/scratch");
    assert_ne!(code, 0, "the root disk is fresh");
    wait_for(
        "the service after the rebuild",
        Duration::from_secs(120),
        || http_get(port).contains("hello-from-metrom").then_some(()),
    );

    c.ok(&["env", "delete", "deb", "--wait", "--timeout", "3m"]);
    assert!(!virsh(&["list", "--all", "--name"]).contains(domain));
}
