//! The one-line installer against a real controller. Each "box" is a
//! container made from a fresh Debian 12 root (debootstrap minbase with curl,
//! ca-certificates, sudo and libvirt0; tests/setup.sh builds it as
//! `metrom-test/installer-root:1`), on the host's network so that it reaches
//! the controller on 127.0.0.1 — the only address any test here talks to.
//! The line printed by `metrom host join-command` is run in it as it is, with
//! `--skip-packages` appended (a box must not reach a package mirror during
//! the tests); the package step is covered by `--dry-run` plans.
//!
//! No systemd runs in a container: one box gets a stand-in `systemctl`
//! (fake-systemctl.sh beside this file) and `/run/systemd/system`, so the
//! installer takes its systemd branch; the others take the no-systemd branch.
//! Boxes that install an agent get the host's Docker socket, so the agent
//! offers the docker runtime for real (it only ever lists containers there).
//! Every container is removed when its test ends.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use metrom_tests::{Cluster, stderr, stdout, wait_for};
use serde_json::Value;

const IMAGE: &str = "metrom-test/installer-root:1";
/// The same with the installer's kvm packages for Debian preinstalled.
const KVM_IMAGE: &str = "metrom-test/installer-kvm-root:1";
const FAKE_SYSTEMCTL: &str = include_str!("fake-systemctl.sh");
const AGENT_BIN: &str = "/usr/local/bin/metrom-agent";
const UNIT_FILE: &str = "/etc/systemd/system/metrom-agent.service";
const DATA_DIR: &str = "/var/lib/metrom-agent";
const READY: Duration = Duration::from_secs(30);
/// `docker run` arguments of a box on the host's network (it reaches the
/// test's controller on 127.0.0.1) with the host's Docker Engine.
const DOCKER: &[&str] = &[
    "--network",
    "host",
    "-v",
    "/var/run/docker.sock:/var/run/docker.sock",
];
/// ... of a box on the host's network with /dev/kvm, for kvm plans (nothing
/// runs libvirtd there).
const KVM_PLAN: &[&str] = &["--network", "host", "--device", "/dev/kvm"];
/// ... of a kvm box in a network namespace of its own, with nothing but its
/// loopback: its libvirtd makes the bridge and NAT rules of the `metrom`
/// network there (hence NET_ADMIN and a writable /proc/sys), and the
/// controller runs in the box too.
const KVM_ALONE: &[&str] = &[
    "--network",
    "none",
    "--device",
    "/dev/kvm",
    "--cap-add",
    "NET_ADMIN",
    "--cap-add",
    "SYS_ADMIN",
    "--security-opt",
    "systempaths=unconfined",
];

/// A test box: a container, removed when dropped.
struct TestBox {
    name: String,
}

impl TestBox {
    /// A fresh box from `image`, with more `docker run` arguments
    /// ([`DOCKER`], [`KVM_PLAN`], [`KVM_ALONE`]); `systemd` gives it the
    /// stand-in systemctl.
    fn start_from(image: &str, extra: &[&str], systemd: bool) -> TestBox {
        let name = format!("mtinst-{}", metrom_protocol::ids::random_string(8));
        let mut args = vec!["run", "-d", "--init", "--name", &name];
        args.extend(extra);
        args.push(image);
        let out = docker(&args);
        assert!(
            out.status.success(),
            "cannot start a box from {image} (run tests/setup.sh): {}",
            stderr(&out)
        );
        let b = TestBox { name };
        if systemd {
            let out = Command::new("docker")
                .args(["exec", "-i", &b.name, "sh", "-c"])
                .arg(
                    "cat >/usr/local/sbin/systemctl && chmod 0755 /usr/local/sbin/systemctl \
                     && mkdir -p /run/systemd/system",
                )
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .and_then(|mut child| {
                    use std::io::Write;
                    child
                        .stdin
                        .take()
                        .expect("stdin")
                        .write_all(FAKE_SYSTEMCTL.as_bytes())?;
                    child.wait_with_output()
                })
                .expect("docker exec");
            assert!(out.status.success(), "stand-in systemctl: {}", stderr(&out));
        }
        b
    }

    /// A fresh Debian 12 box.
    fn start(extra: &[&str], systemd: bool) -> TestBox {
        Self::start_from(IMAGE, extra, systemd)
    }

    /// Runs a shell command in the box.
    fn sh(&self, script: &str) -> Output {
        docker(&["exec", &self.name, "sh", "-c", script])
    }

    /// Runs a shell command that must succeed; its stdout.
    fn ok(&self, script: &str) -> String {
        let out = self.sh(script);
        assert!(
            out.status.success(),
            "`{script}` failed in the box ({}):\n{}\n{}",
            out.status,
            stdout(&out),
            stderr(&out)
        );
        stdout(&out)
    }

    fn exists(&self, path: &str) -> bool {
        self.sh(&format!("test -e {path}")).status.success()
    }

    /// What the installer could have changed: every path under the system's
    /// folders (sudo's own bookkeeping aside).
    fn files(&self) -> String {
        self.ok(
            "find /etc /usr /var /opt /root /srv -xdev \\( -path /var/lib/sudo -o -path /var/log -o -path /var/tmp \\) \
             -prune -o -print | sort",
        )
    }

    /// Size, mtime and SHA-256 of files, to prove a rerun left them alone.
    fn fingerprint(&self, paths: &[&str]) -> String {
        self.ok(&format!(
            "for f in {}; do stat -c '%n %s %Y' \"$f\"; sha256sum \"$f\"; done",
            paths.join(" ")
        ))
    }

    /// Pids of running agents.
    fn agent_pids(&self) -> String {
        self.ok(&format!(
            "for p in /proc/[0-9]*; do case $(readlink $p/exe 2>/dev/null) in {AGENT_BIN}*) echo ${{p#/proc/}};; esac; done"
        ))
        .trim()
        .to_string()
    }

    /// Asserts no trace of the agent is on the box.
    fn assert_no_agent(&self, context: &str) {
        for p in [AGENT_BIN, UNIT_FILE, DATA_DIR, "/var/log/metrom-agent.log"] {
            assert!(!self.exists(p), "{context}: {p} is on the box");
        }
        assert_eq!(self.agent_pids(), "", "{context}: an agent still runs");
    }
}

impl Drop for TestBox {
    fn drop(&mut self) {
        let _ = docker(&["rm", "-f", &self.name]);
    }
}

fn docker(args: &[&str]) -> Output {
    Command::new("docker").args(args).output().expect("docker")
}

/// `metrom host join-command …`: the line (its stdout).
fn join_line(c: &Cluster, extra: &[&str]) -> String {
    let mut args = vec!["host", "join-command"];
    args.extend(extra);
    let line = c.ok(&args).trim().to_string();
    assert!(
        line.starts_with("curl -fsSL --pinnedpubkey 'sha256//") && !line.contains('\n'),
        "{line}"
    );
    line
}

/// The same line fetching `uninstall.sh`.
fn uninstall_line(install_line: &str, extra: &str) -> String {
    let (fetch, _) = install_line.split_once(" | ").expect("a pipe");
    format!(
        "{} | sudo sh -s - {extra}",
        fetch.replace("/install.sh", "/uninstall.sh")
    )
}

/// Output of a run, both streams, for assertions and messages.
fn text(out: &Output) -> String {
    format!("{}{}", stdout(out), stderr(out))
}

fn host<'a>(hosts: &'a [Value], id: &str) -> &'a Value {
    hosts
        .iter()
        .find(|h| h["id"] == id)
        .unwrap_or_else(|| panic!("host {id} not in {hosts:?}"))
}

fn host_id_in(output: &str) -> String {
    let at = output
        .find("joined as host h-")
        .unwrap_or_else(|| panic!("no host id in:\n{output}"));
    output[at + "joined as host ".len()..]
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
        .next()
        .expect("id")
        .to_string()
}

#[test]
fn shell_scripts_pass_shellcheck() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = Command::new("shellcheck")
        .args(["-s", "sh", "-e", "SC1091"])
        .arg(root.join("installer/install.sh"))
        .arg(root.join("installer/uninstall.sh"))
        .arg(root.join("installer/prepare-host.sh"))
        .arg(root.join("installer/up.sh"))
        .arg(root.join("tests/setup.sh"))
        .arg(root.join("tests/run.sh"))
        .args(
            [
                "lib.sh",
                "build-tiny.sh",
                "build-debian.sh",
                "build-installer-root.sh",
            ]
            .map(|f| root.join("tests/images").join(f)),
        )
        .arg(root.join("tests/tests/e2e/fake-systemctl.sh"))
        .output()
        .expect("shellcheck (tests/setup.sh installs it)");
    assert!(
        out.status.success(),
        "shellcheck found problems:\n{}",
        stdout(&out)
    );
}

#[test]
fn installer_line_makes_a_ready_host_under_systemd_and_a_rerun_changes_nothing() {
    let c = Cluster::start();
    let line = join_line(&c, &["--label", "rack=b2"]);
    let b = TestBox::start(DOCKER, true);

    let first = b.sh(&format!("{line} --skip-packages"));
    let out = text(&first);
    assert!(first.status.success(), "install failed:\n{out}");
    for want in [
        "runtime docker (auto: no /dev/kvm",
        "Docker Engine enabled and running",
        "key matches the pin",
        "downloaded and verified (sha256 ",
        "done    wrote /etc/systemd/system/metrom-agent.service",
        "done    start the agent",
        "done: this box is Metrom host h-",
    ] {
        assert!(out.contains(want), "no '{want}' in:\n{out}");
    }
    let id = host_id_in(&out);
    c.wait_host_state(&id, "Ready", READY);
    let hosts = c.hosts();
    let h = host(&hosts, &id);
    assert_eq!(h["labels"]["rack"], "b2", "{h}");
    assert_eq!(
        h["facts"]["capabilities"]["docker"]["available"], true,
        "the installed agent should drive the box's Docker Engine: {h}"
    );

    // The unit: restarts, but not a revoked host, and never kills environments.
    let unit = b.ok(&format!("cat {UNIT_FILE}"));
    for want in [
        "ExecStart=/usr/local/bin/metrom-agent run --data-dir /var/lib/metrom-agent",
        "Restart=always",
        "RestartPreventExitStatus=3",
        "KillMode=process",
        "WantedBy=multi-user.target",
    ] {
        assert!(unit.lines().any(|l| l == want), "no '{want}' in:\n{unit}");
    }
    let calls = b.ok("cat /var/log/systemctl.calls");
    for want in ["daemon-reload", "enable metrom-agent", "start metrom-agent"] {
        assert!(
            calls.lines().any(|l| l == want),
            "no `systemctl {want}` in:\n{calls}"
        );
    }

    // The same line again: everything is found in place, nothing is touched.
    let files = [AGENT_BIN, UNIT_FILE, &format!("{DATA_DIR}/identity.toml")];
    let before = b.fingerprint(&files);
    b.ok(": >/var/log/systemctl.calls");
    let second = b.sh(&format!("{line} --skip-packages"));
    let out = text(&second);
    assert!(second.status.success(), "rerun failed:\n{out}");
    for want in [
        format!("already joined as host {id}"),
        "is the controller's (sha256 ".into(),
        "metrom-agent.service in place".into(),
        "agent running".into(),
        format!("nothing changed: everything was already in place. This box is Metrom host {id}"),
    ] {
        assert!(out.contains(&want), "no '{want}' in:\n{out}");
    }
    assert!(
        !out.contains("  done "),
        "a rerun changed something:\n{out}"
    );
    assert_eq!(b.fingerprint(&files), before, "a rerun touched files");
    let calls = b.ok("cat /var/log/systemctl.calls");
    assert!(
        calls
            .lines()
            .all(|l| l.starts_with("is-enabled") || l.starts_with("is-active")),
        "a rerun only asks systemd, it changes nothing:\n{calls}"
    );
    assert_eq!(c.hosts().len(), 1, "a rerun joined again");
    assert_eq!(c.host_state(&id).as_deref(), Some("Ready"));

    // uninstall.sh removes it all; the controller sees the host go.
    let un = b.sh(&uninstall_line(&line, ""));
    let out = text(&un);
    assert!(un.status.success(), "uninstall failed:\n{out}");
    assert!(
        out.contains("stop and disable metrom-agent")
            && out.contains(&format!("metrom host revoke {id}")),
        "{out}"
    );
    b.assert_no_agent("after uninstall");
    c.wait_host_state(&id, "Unreachable", READY);
    let again = text(&b.sh(&uninstall_line(&line, "")));
    assert!(again.contains("nothing to remove"), "{again}");
}

#[test]
fn installer_without_systemd_says_how_to_start_the_agent() {
    let c = Cluster::start();
    let line = join_line(&c, &["--runtime", "docker"]);
    let b = TestBox::start(DOCKER, false);

    let first = b.sh(&format!("{line} --skip-packages"));
    let out = text(&first);
    assert!(first.status.success(), "install failed:\n{out}");
    assert!(
        out.contains("no systemd on this box") && out.contains("start the agent yourself"),
        "{out}"
    );
    assert!(!b.exists(UNIT_FILE), "no unit without systemd");
    let id = host_id_in(&out);
    // Not Ready before the agent runs: the installer started nothing.
    assert_eq!(b.agent_pids(), "");
    let start = out
        .lines()
        .find(|l| l.contains("metrom-agent run --data-dir"))
        .unwrap_or_else(|| panic!("no start command in:\n{out}"))
        .trim()
        .to_string();
    assert_eq!(
        start,
        "nohup /usr/local/bin/metrom-agent run --data-dir /var/lib/metrom-agent >>/var/log/metrom-agent.log 2>&1 &"
    );
    // Start it as printed.
    let out = docker(&["exec", "-d", &b.name, "sh", "-c", &start]);
    assert!(out.status.success(), "{}", stderr(&out));
    c.wait_host_state(&id, "Ready", READY);

    let files = [AGENT_BIN, &format!("{DATA_DIR}/identity.toml")];
    let before = b.fingerprint(&files);
    let second = b.sh(&format!("{line} --skip-packages"));
    let out = text(&second);
    assert!(second.status.success(), "rerun failed:\n{out}");
    assert!(
        out.contains("agent running (pid ") && out.contains("nothing changed"),
        "{out}"
    );
    assert_eq!(b.fingerprint(&files), before, "a rerun touched files");

    let un = b.sh(&uninstall_line(&line, ""));
    let out = text(&un);
    assert!(
        un.status.success() && out.contains("stopped the agent"),
        "{out}"
    );
    b.assert_no_agent("after uninstall");
    c.wait_host_state(&id, "Unreachable", READY);
}

#[test]
fn installer_dry_run_plans_the_packages_and_changes_nothing() {
    assert!(
        Path::new("/dev/kvm").exists(),
        "this test plans a kvm host and needs /dev/kvm on the machine"
    );
    let c = Cluster::start();
    let b = TestBox::start(KVM_PLAN, false);
    let before = b.files();
    let plan = |extra: &str| {
        let line = join_line(&c, &[]);
        let out = b.sh(&format!("{line} --dry-run {extra}"));
        let t = text(&out);
        assert!(out.status.success(), "dry run {extra} failed:\n{t}");
        assert!(t.contains("dry run: nothing was changed"), "{extra}:\n{t}");
        t
    };

    // Debian, KVM: the virtualisation stack, from the box's own mirrors.
    let kvm = plan("--runtime kvm");
    assert!(
        kvm.contains(
            "kvm host on apt needs: qemu-system-x86 qemu-utils libvirt-daemon-system libvirt-clients \
             dnsmasq-base iptables genisoimage libvirt0 curl ca-certificates"
        ),
        "{kvm}"
    );
    // What the fresh root already has is not installed again.
    assert!(
        kvm.contains(
            "would   install qemu-system-x86 qemu-utils libvirt-daemon-system libvirt-clients dnsmasq-base \
             iptables genisoimage: apt-get update && apt-get install -y --no-install-recommends"
        ),
        "{kvm}"
    );
    for want in [
        "would   define, autostart and start the network metrom (192.168.213.1/24, bridge metrom0, NAT",
        "would   define, build, autostart and start the directory pool metrom at /var/lib/metrom-agent/pool",
        "would   download https://127.0.0.1:",
        "would   join the controller at 127.0.0.1:",
        "would   /dev/kvm: group kvm, mode 0660",
    ] {
        assert!(kvm.contains(want), "no '{want}' in:\n{kvm}");
    }

    // Debian, Docker.
    let dock = plan("--runtime docker");
    assert!(
        dock.contains("docker host on apt needs: docker.io libvirt0 curl ca-certificates")
            && dock.contains("would   install docker.io: apt-get update && apt-get install"),
        "{dock}"
    );
    assert!(!dock.contains("qemu"), "{dock}");
    assert_eq!(b.files(), before, "a dry run changed the box");

    // The RHEL family: the same box told it is Rocky Linux 9, with a dnf.
    b.ok(
        "printf 'NAME=\"Rocky Linux\"\\nID=\"rocky\"\\nID_LIKE=\"rhel centos fedora\"\\nPRETTY_NAME=\"Rocky Linux 9.4\"\\n' \
         >/etc/os-release && printf '#!/bin/sh\\nexit 0\\n' >/usr/local/bin/dnf && chmod 0755 /usr/local/bin/dnf",
    );
    let faked = b.files();
    let rkvm = plan("--runtime kvm");
    assert!(
        rkvm.contains("Rocky Linux 9.4, packages with dnf")
            && rkvm.contains(
                "kvm host on dnf needs: qemu-kvm qemu-img libvirt-daemon-kvm libvirt-client genisoimage libvirt-libs"
            )
            && rkvm.contains("would   install qemu-kvm qemu-img libvirt-daemon-kvm libvirt-client genisoimage libvirt-libs curl ca-certificates: dnf install -y"),
        "{rkvm}"
    );
    let rdock = plan("--runtime docker");
    assert!(
        rdock.contains("docker host on dnf needs: docker-ce libvirt-libs curl ca-certificates"),
        "{rdock}"
    );
    // Nothing changed by any dry run, and no token was used.
    assert_eq!(b.files(), faked, "a dry run changed the box");
    b.assert_no_agent("after dry runs");
    let tokens: Vec<Value> = c.json(&["token", "list"]);
    assert_eq!(tokens.len(), 4);
    assert!(tokens.iter().all(|t| t["used"] == 0), "{tokens:?}");
}

#[test]
fn installer_refusals_stop_before_anything_changes() {
    let mut a = Cluster::start();
    let other = Cluster::start();
    let b = TestBox::start(DOCKER, false);
    let before = b.files();
    let unchanged = |what: &str| {
        assert_eq!(b.files(), before, "{what}: the box changed");
        b.assert_no_agent(what);
    };

    // 1. The line with another controller's pin: curl refuses the server, the
    //    script never arrives.
    let line = join_line(&a, &[]);
    let other_line = join_line(&other, &[]);
    let pin = |l: &str| l.split('\'').nth(1).expect("quoted pin").to_string();
    assert_ne!(pin(&line), pin(&other_line));
    let forged = line.replace(&pin(&line), &pin(&other_line));
    let out = text(&b.sh(&format!("{forged} --skip-packages")));
    assert!(
        out.contains("public key does not match pinned public key")
            && !out.contains("Metrom installer"),
        "{out}"
    );
    unchanged("wrong pin");

    // 2. The script from this controller pointed at another one: the
    //    installer's own pinned requests refuse it.
    let run = b.sh(&format!(
        "{line} --skip-packages --url {}",
        other.https_url()
    ));
    let out = text(&run);
    assert!(!run.status.success(), "{out}");
    assert!(
        out.contains(&format!(
            "error: {} is not the controller this line came from: its key does not match the pin",
            other.https_url()
        )),
        "{out}"
    );
    unchanged("another controller");

    // 3. A tampered agent binary: its published checksum does not match.
    let dir = a.dir.path().join("agents");
    std::fs::create_dir(&dir).unwrap();
    std::fs::copy(
        metrom_tests::bin("metrom-agent"),
        dir.join("metrom-agent-x86_64"),
    )
    .unwrap();
    std::fs::write(
        dir.join("metrom-agent-x86_64.sha256"),
        format!("{}  metrom-agent-x86_64\n", "0123abcd".repeat(8)),
    )
    .unwrap();
    a.configure(&format!("agent_binaries_dir = \"{}\"", dir.display()));
    let line = join_line(&a, &[]);
    let run = b.sh(&format!("{line} --skip-packages"));
    let out = text(&run);
    assert!(!run.status.success(), "{out}");
    assert!(
        out.contains(&format!(
            "error: the agent binary from {} does not match its published SHA-256 (expected {}",
            a.https_url(),
            "0123abcd".repeat(8)
        )) && out.contains("nothing was installed"),
        "{out}"
    );
    unchanged("tampered binary");

    // 4. An expired token: refused before anything is installed.
    let line = join_line(&a, &["--ttl", "1s"]);
    let token_id = {
        let at = line.find("--token mtj1.").expect("token") + "--token mtj1.".len();
        line[at..at + 8].to_string()
    };
    wait_for("the token to expire", Duration::from_secs(10), || {
        let tokens: Vec<Value> = a.json(&["token", "list"]);
        tokens
            .iter()
            .any(|t| t["id"] == token_id.as_str() && t["state"] == "expired")
            .then_some(())
    });
    let run = b.sh(&format!("{line} --skip-packages"));
    let out = text(&run);
    assert!(!run.status.success(), "{out}");
    assert!(
        out.contains(&format!(
            "error: the controller refuses this join token: join token {token_id} expired at"
        )),
        "{out}"
    );
    unchanged("expired token");
    assert!(a.hosts().is_empty() && other.hosts().is_empty());
}

/// The kvm branch for real, in one box with a network namespace of its own:
/// the controller runs inside the box (on its loopback), libvirtd too, and the
/// installer finds the packages preinstalled, makes the libvirt network and
/// pool, and the agent's kvm runtime opens on them.
#[test]
fn installer_sets_up_a_kvm_host_with_its_libvirt_network_and_pool() {
    assert!(
        Path::new("/dev/kvm").exists(),
        "this test sets up a kvm host and needs /dev/kvm on the machine"
    );
    let b = TestBox::start_from(KVM_IMAGE, KVM_ALONE, false);
    b.ok("mkdir -p /opt/metrom");
    for name in ["metrom-controller", "metrom-agent", "metrom"] {
        let out = docker(&[
            "cp",
            metrom_tests::bin(name).to_str().expect("utf8"),
            &format!("{}:/opt/metrom/{name}", b.name),
        ]);
        assert!(out.status.success(), "docker cp {name}: {}", stderr(&out));
    }
    // The controller (metrom-agent beside it is what it serves).
    b.ok(
        "/opt/metrom/metrom-controller init --data-dir /opt/metrom/ctl \
          --advertise 127.0.0.1:7443 --listen 127.0.0.1:7443 >/dev/null",
    );
    let out = docker(&[
        "exec",
        "-d",
        &b.name,
        "sh",
        "-c",
        "/opt/metrom/metrom-controller serve --data-dir /opt/metrom/ctl --https-listen 127.0.0.1:7444 \
         --heartbeat-interval 300ms --heartbeat-ttl 1500ms >/opt/metrom/controller.log 2>&1",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let metrom = "METROM_IDENTITY=/opt/metrom/ctl/admin.identity /opt/metrom/metrom";
    wait_for("the controller in the box", READY, || {
        b.sh(&format!("{metrom} status"))
            .status
            .success()
            .then_some(())
    });
    // No systemd in the box: libvirtd must run before the installer comes.
    b.ok("virtlogd -d && libvirtd -d");
    wait_for("libvirtd in the box", READY, || {
        b.sh("virsh -c qemu:///system version")
            .status
            .success()
            .then_some(())
    });

    let line = b.ok(&format!(
        "{metrom} host join-command --runtime kvm 2>/dev/null"
    ));
    let line = line.trim();
    let first = b.sh(line);
    let out = text(&first);
    assert!(first.status.success(), "install failed:\n{out}");
    for want in [
        "ok      runtime kvm: /dev/kvm is present",
        "kvm host on apt needs: qemu-system-x86",
        "ok      all installed",
        "ok      libvirt answers at qemu:///system",
        "done    define the network metrom (192.168.213.1/24, NAT)",
        "done    start the network metrom",
        "done    define the storage pool metrom at /var/lib/metrom-agent/pool",
        "done    start the storage pool metrom",
    ] {
        assert!(out.contains(want), "no '{want}' in:\n{out}");
    }
    assert_eq!(b.ok("stat -c '%G %a' /dev/kvm").trim(), "kvm 660");
    let net = b.ok("virsh -c qemu:///system net-dumpxml metrom");
    assert!(
        net.contains("<bridge name='metrom0'")
            && net.contains("<ip address='192.168.213.1' prefix='24'>"),
        "{net}"
    );
    let id = host_id_in(&out);
    let start = out
        .lines()
        .find(|l| l.contains("metrom-agent run --data-dir"))
        .unwrap_or_else(|| panic!("no start command in:\n{out}"))
        .trim()
        .to_string();
    let run = docker(&["exec", "-d", &b.name, "sh", "-c", &start]);
    assert!(run.status.success(), "{}", stderr(&run));
    let h = wait_for(&format!("host {id} Ready in the box"), READY, || {
        let out = b.sh(&format!("{metrom} host list -o json"));
        let hosts: Vec<Value> = serde_json::from_slice(&out.stdout).ok()?;
        hosts
            .into_iter()
            .find(|h| h["id"] == id.as_str() && h["state"] == "Ready")
    });
    let caps = &h["facts"]["capabilities"];
    assert!(
        caps["kvm"]["available"] == true && caps["libvirt"]["available"] == true,
        "{h}"
    );
    // The agent's kvm runtime accepted the installer's network and pool.
    let log = b.ok("cat /var/log/metrom-agent.log");
    assert!(
        !log.contains("kvm runtime is not available")
            && !log.contains("already exists for another folder"),
        "{log}"
    );

    // Again: everything found in place.
    let second = b.sh(line);
    let out = text(&second);
    assert!(second.status.success(), "rerun failed:\n{out}");
    for want in [
        "ok      network metrom defined and active",
        "ok      storage pool metrom at /var/lib/metrom-agent/pool defined and running",
        "nothing changed: everything was already in place",
    ] {
        assert!(out.contains(want), "no '{want}' in:\n{out}");
    }
    assert!(
        !out.contains("  done "),
        "a rerun changed something:\n{out}"
    );

    // --purge takes the network and the pool too.
    let un = b.sh(&uninstall_line(line, "--purge"));
    let out = text(&un);
    assert!(
        un.status.success()
            && out.contains("remove the network metrom")
            && out.contains("remove the storage pool metrom"),
        "{out}"
    );
    let left = b.ok("virsh -c qemu:///system net-list --all --name; virsh -c qemu:///system pool-list --all --name");
    assert!(!left.contains("metrom"), "{left}");
    b.assert_no_agent("after uninstall --purge");
}
