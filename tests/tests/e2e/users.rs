//! Users and roles end to end: identities written by `user add`, the role
//! rule of each command for developers and viewers, refusals audited,
//! role changes without new certificates, and removal revoking at once.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use metrom_tests::{Cluster, bin, small_template, stderr, wait_for};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(60);
const DENIED: i32 = 5;

fn setup() -> (Cluster, usize) {
    let mut c = Cluster::start();
    let a = c.fake_host("alpha", "100ms");
    c.import_dummy_image("tiny");
    c.ok(&[
        "template",
        "push",
        small_template(c.dir.path(), "box", "").to_str().unwrap(),
    ]);
    (c, a)
}

/// Runs each command as `who` and checks it is allowed (`None`) or refused
/// with exit code 5 and a message containing the given text.
fn check(c: &Cluster, who: &Path, cases: &[(&[&str], Option<&str>)]) {
    for (args, refusal) in cases {
        let out = c.metrom_as(who, args);
        match refusal {
            None => assert!(
                out.status.success(),
                "{args:?} as {} should work: {}",
                who.display(),
                stderr(&out)
            ),
            Some(text) => {
                assert_eq!(
                    out.status.code(),
                    Some(DENIED),
                    "{args:?} as {} should be refused: {}",
                    who.display(),
                    stderr(&out)
                );
                assert!(stderr(&out).contains(text), "{args:?}: {}", stderr(&out));
            }
        }
    }
}

#[test]
fn each_command_follows_its_role_rule_and_refusals_are_audited() {
    let (c, _) = setup();
    c.ok(&["env", "create", "admins-env", "-t", "box"]);
    let key = c.dir.path().join("dev.pub");
    std::fs::write(
        &key,
        "# laptop\nssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGJ0ZXN0a2V5Zm9ybWV0cm9tdGVzdHM dev@laptop\n",
    )
    .unwrap();
    let dev = c.add_user(
        "dev",
        "developer",
        &["--group", "team", "--ssh-key", key.to_str().unwrap()],
    );
    let view = c.add_user("view", "viewer", &[]);
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&dev).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    let users: Vec<Value> = c.json(&["user", "list"]);
    let d = users.iter().find(|u| u["name"] == "dev").unwrap();
    assert_eq!(
        (&d["role"], &d["group"], &d["ssh_keys"]),
        (
            &Value::from("developer"),
            &Value::from("team"),
            &Value::from(1)
        )
    );

    // An unknown role is refused, nothing is written, the refusal is audited.
    let eve = c.dir.path().join("eve.identity");
    let out = c.metrom(&[
        "user",
        "add",
        "eve",
        "--role",
        "superuser",
        "--out",
        eve.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("unknown role 'superuser': use admin, developer or viewer"),
        "{}",
        stderr(&out)
    );
    assert!(!eve.exists());
    let h = c.hosts()[0]["id"].as_str().unwrap().to_string();
    let box_dir = small_template(c.dir.path(), "box", "");
    let devbox = small_template(c.dir.path(), "devbox", "");
    let (box_dir, devbox) = (box_dir.to_str().unwrap(), devbox.to_str().unwrap());
    let image = c.dir.path().join("evil.raw");
    std::fs::write(&image, vec![0u8; 4096]).unwrap();
    let image = image.to_str().unwrap();
    let pulled = |who: &str| c.dir.path().join(format!("pulled-{who}"));
    let (dev_pull, view_pull) = (pulled("dev"), pulled("view"));
    let (dev_pull, view_pull) = (dev_pull.to_str().unwrap(), view_pull.to_str().unwrap());
    let theirs = Some("environment admins-env belongs to admin");
    let admin = Some("needs the admin role");

    // A developer: their own environments and templates, reads.
    check(
        &c,
        &dev,
        &[
            (&["env", "create", "dev-env", "-t", "box", "--wait"], None),
            (&["env", "show", "dev-env"], None),
            (&["env", "stop", "dev-env", "--wait"], None),
            (&["env", "start", "dev-env"], None),
            (&["env", "events", "dev-env"], None),
            (&["template", "push", devbox], None),
            (&["template", "list"], None),
            (&["host", "list"], None),
            (&["image", "list"], None),
            (&["status"], None),
            (&["audit"], None),
            (&["report", "usage"], None),
            (&["quota", "list"], None),
            (&["env", "list", "--all"], None),
            (&["template", "show", "box"], None),
            (&["template", "versions", "box"], None),
            (&["template", "pull", "box", dev_pull], None),
            (&["host", "show", &h], None),
            (&["env", "show", "admins-env"], theirs),
            (&["env", "events", "admins-env"], theirs),
            (&["env", "stop", "admins-env"], theirs),
            (&["env", "start", "admins-env"], theirs),
            (&["env", "rebuild", "admins-env"], theirs),
            (&["env", "delete", "admins-env"], theirs),
            (&["env", "extend", "admins-env", "--by", "1h"], theirs),
            (
                &["template", "push", box_dir],
                Some("template box belongs to admin"),
            ),
            (&["host", "cordon", &h], admin),
            (&["host", "uncordon", &h], admin),
            (&["host", "revoke", &h], admin),
            (&["token", "create"], admin),
            (&["token", "list"], admin),
            (&["token", "revoke", "t-nothing"], admin),
            (&["image", "import", image, "--name", "evil"], admin),
            (&["image", "delete", "tiny"], admin),
            (&["user", "list"], admin),
            (&["user", "add", "mallory", "--role", "admin"], admin),
            (&["user", "set-role", "dev", "admin"], admin),
            (&["user", "remove", "view"], admin),
            (&["quota", "set", "--user", "dev", "--envs", "99"], admin),
            (
                &["audit", "--user", "admin"],
                Some("only their own audit entries"),
            ),
        ],
    );
    let mine: Vec<Value> = c.json_as(&dev, &["env", "list"]);
    let names: Vec<&str> = mine.iter().map(|e| e["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["dev-env"]);
    let dev_audit: Vec<Value> = c.json_as(&dev, &["audit"]);
    assert!(dev_audit.iter().all(|e| e["user"] == "dev"));

    // A viewer: reads everything, changes nothing.
    let ro = Some("view is a viewer and may only read");
    check(
        &c,
        &view,
        &[
            (&["env", "list"], None),
            (&["env", "show", "admins-env"], None),
            (&["env", "show", "dev-env"], None),
            (&["env", "events", "dev-env"], None),
            (&["template", "list"], None),
            (&["template", "versions", "box"], None),
            (&["template", "pull", "box", view_pull], None),
            (&["host", "show", &h], None),
            (&["status"], None),
            (&["audit", "--user", "dev"], None),
            (&["report", "usage"], None),
            (&["quota", "list"], None),
            (&["env", "create", "view-env", "-t", "box"], ro),
            (&["env", "stop", "admins-env"], ro),
            (&["env", "start", "dev-env"], ro),
            (&["env", "delete", "dev-env"], ro),
            (&["env", "rebuild", "dev-env"], ro),
            (&["env", "extend", "dev-env", "--by", "1h"], ro),
            (&["template", "push", devbox], ro),
            (&["host", "cordon", &h], admin),
            (&["token", "create"], admin),
            (&["user", "list"], admin),
            (&["user", "remove", "dev"], admin),
            (&["quota", "set", "--group", "team", "--vcpus", "1"], admin),
            (&["image", "delete", "tiny"], admin),
            (&["image", "import", image, "--name", "evil"], admin),
        ],
    );
    let all: Vec<Value> = c.json_as(&view, &["env", "list"]);
    assert_eq!(all.len(), 2);

    // Nothing the refusals touched changed.
    let env = c.env("admins-env");
    assert_eq!(env["desired"], "running");
    assert_eq!(env["generation"], 1);
    assert_eq!(c.env("dev-env")["desired"], "running");
    assert_eq!(c.hosts()[0]["cordoned"], false);
    let users: Vec<Value> = c.json(&["user", "list"]);
    assert_eq!(users.len(), 3);

    // Each refused change is in the audit log, by whom, with its message.
    let audit: Vec<Value> = c.json(&["audit"]);
    let refused = |user: &str| -> Vec<&Value> {
        audit
            .iter()
            .filter(|e| e["user"] == user && e["result"] == "refused")
            .collect()
    };
    // dev: 6 changes to admin's environment and template, then cordon,
    // uncordon, revoke, token create and revoke, image import and delete,
    // user add, set-role, remove, quota set (refused reads are not audited).
    assert_eq!(refused("dev").len(), 17, "{:?}", refused("dev"));
    assert!(refused("dev").iter().any(|e| e["action"] == "env delete"
        && e["target"] == "admins-env"
        && e["message"].as_str().unwrap().contains("belongs to admin")));
    assert_eq!(refused("view").len(), 13, "{:?}", refused("view"));
    let images: Vec<Value> = c.json(&["image", "list"]);
    assert_eq!(images.len(), 1, "{images:?}");
    assert!(
        audit
            .iter()
            .any(|e| e["action"] == "user add" && e["target"] == "eve" && e["result"] == "refused")
    );

    // A role change needs no new certificate: the same identity can now create.
    c.ok(&["user", "set-role", "view", "developer"]);
    let out = c.metrom_as(&view, &["env", "create", "view-env", "-t", "box"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn removing_a_user_closes_their_connection_and_refuses_their_certificate() {
    let (mut c, a) = setup();
    let dev = c.add_user("dev", "developer", &[]);
    let ok = |args: &[&str]| {
        let out = c.metrom_as(&dev, args);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    };
    ok(&["env", "create", "mine", "-t", "box", "--wait"]);
    ok(&["env", "stop", "mine", "--wait"]);
    // With the host away, `env start --wait` keeps its connection open, polling.
    c.agent(a).kill();
    let waiting = Command::new(bin("metrom"))
        .arg("--identity")
        .arg(&dev)
        .args(["env", "start", "mine", "--wait", "--timeout", "60s"])
        .env_remove("METROM_IDENTITY")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let out = c.ok(&["user", "remove", "dev"]);
    assert!(
        out.contains("certificate is revoked") && out.contains("1 environment(s) keep running"),
        "{out}"
    );
    let started = std::time::Instant::now();
    let mut waiting = Some(waiting);
    let output = wait_for("the removed user's CLI to stop", WAIT, || {
        let child = waiting.as_mut()?;
        child.try_wait().unwrap()?;
        waiting.take().map(|c| c.wait_with_output().unwrap())
    });
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(!output.status.success());
    let err = String::from_utf8_lossy(&output.stderr);
    // The connection was closed ("removed by an admin"), unless a request
    // slipped in between the record's removal and the close.
    assert!(
        err.contains("removed by an admin") || err.contains("no longer exists"),
        "{err}"
    );
    // A new connection with the same certificate is refused in the handshake.
    let out = c.metrom_as(&dev, &["status"]);
    assert!(!out.status.success());
    assert_eq!(out.status.code(), Some(9), "{}", stderr(&out));
    assert!(stderr(&out).contains("Revoked"), "{}", stderr(&out));
    let audit: Vec<Value> = c.json(&["audit", "--user", "admin"]);
    assert!(
        audit
            .iter()
            .any(|e| e["action"] == "user remove" && e["target"] == "dev" && e["result"] == "ok")
    );
}
