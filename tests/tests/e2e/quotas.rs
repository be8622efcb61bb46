//! Quotas end to end: many clients creating at once get exactly the quota,
//! per user and per group; the refusal says which limit, the usage and the
//! request, and is audited.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use metrom_tests::{Cluster, bin, small_template, stderr};
use serde_json::Value;

const QUOTA_EXCEEDED: i32 = 8;

/// Starts `n` `env create` processes as `who` at once and waits for them all.
fn create_at_once(who: &Path, prefix: &str, n: usize) -> Vec<(String, Output)> {
    let children: Vec<_> = (0..n)
        .map(|i| {
            let name = format!("{prefix}{i}");
            let child = Command::new(bin("metrom"))
                .arg("--identity")
                .arg(who)
                .args(["env", "create", &name, "-t", "box"])
                .env_remove("METROM_IDENTITY")
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            (name, child)
        })
        .collect();
    children
        .into_iter()
        .map(|(name, c)| (name, c.wait_with_output().unwrap()))
        .collect()
}

#[test]
fn concurrent_creates_get_exactly_the_quota_per_user_and_per_group() {
    let mut c = Cluster::start();
    c.fake_host("alpha", "100ms");
    c.import_dummy_image("tiny");
    c.ok(&[
        "template",
        "push",
        small_template(c.dir.path(), "box", "").to_str().unwrap(),
    ]);
    let dev = c.add_user("dev", "developer", &["--group", "team"]);
    let dev2 = c.add_user("dev2", "developer", &["--group", "team"]);

    // Per user: 8 clients at once, 3 environments allowed.
    c.ok(&["quota", "set", "--user", "dev", "--envs", "3"]);
    let results = create_at_once(&dev, "q", 8);
    let admitted: Vec<&String> = results
        .iter()
        .filter(|(_, o)| o.status.success())
        .map(|(n, _)| n)
        .collect();
    assert_eq!(admitted.len(), 3, "{results:?}");
    for (_, o) in results.iter().filter(|(_, o)| !o.status.success()) {
        assert_eq!(o.status.code(), Some(QUOTA_EXCEEDED), "{}", stderr(o));
        assert!(
            stderr(o).contains(
                "quota exceeded for user dev: environments: 3 in use + 1 requested > limit 3"
            ),
            "{}",
            stderr(o)
        );
    }
    let mine: Vec<Value> = c.json_as(&dev, &["env", "list"]);
    assert_eq!(mine.len(), 3);

    // Per group: dev holds 3 vCPUs of the team's 5; dev2 races 6 clients for the other 2.
    c.ok(&[
        "quota", "set", "--group", "team", "--vcpus", "5", "--memory", "16GiB",
    ]);
    let results = create_at_once(&dev2, "g", 6);
    let ok = results.iter().filter(|(_, o)| o.status.success()).count();
    assert_eq!(ok, 2, "{results:?}");
    for (_, o) in results.iter().filter(|(_, o)| !o.status.success()) {
        assert_eq!(o.status.code(), Some(QUOTA_EXCEEDED), "{}", stderr(o));
        assert!(
            stderr(o).contains("group team: vcpus: 5 in use + 1 requested > limit 5"),
            "{}",
            stderr(o)
        );
    }

    // The quota list shows usage against limits.
    let quotas: Vec<Value> = c.json(&["quota", "list"]);
    let team = quotas.iter().find(|q| q["scope"] == "group").unwrap();
    assert_eq!(team["usage"]["vcpus"], 5);
    assert_eq!(team["limits"]["vcpus"], 5);
    assert_eq!(team["limits"]["memory_mb"], 16384);
    let user = quotas.iter().find(|q| q["scope"] == "user").unwrap();
    assert_eq!(
        (&user["usage"]["envs"], &user["limits"]["envs"]),
        (&Value::from(3), &Value::from(3))
    );
    // A developer sees their own quotas only.
    let theirs: Vec<Value> = c.json_as(&dev2, &["quota", "list"]);
    assert_eq!(theirs.len(), 1);
    assert_eq!(theirs[0]["name"], "team");

    // At the limit, a rebuild (same size) is still allowed: its own size is not counted twice.
    let out = c.metrom_as(&dev, &["env", "rebuild", admitted[0]]);
    assert!(out.status.success(), "{}", stderr(&out));

    // Refusals are audited with the limit.
    let audit: Vec<Value> = c.json(&["audit", "--user", "dev2"]);
    let refused = audit
        .iter()
        .filter(|e| {
            e["result"] == "refused" && e["message"].as_str().unwrap().contains("quota exceeded")
        })
        .count();
    assert_eq!(refused, 4);

    // Removing a limit lets creates through again.
    c.ok(&["quota", "set", "--user", "dev", "--envs", "none"]);
    c.ok(&["quota", "remove", "--group", "team"]);
    let out = c.metrom_as(&dev, &["env", "create", "more", "-t", "box"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let quotas: Vec<Value> = c.json(&["quota", "list"]);
    assert!(quotas.is_empty(), "{quotas:?}");
}
