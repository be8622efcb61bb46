//! Lifecycle policies end to end, through real controller and agent processes
//! and the fake runtime: a short ttl deletes, a short schedule stops, an idle
//! environment stops; each action is an event, an audit entry by "policy",
//! and shows in the usage report. Bad policies are refused, nothing changes,
//! and the refusal is audited.

use std::time::Duration;

use jiff::Timestamp;
use metrom_tests::{Cluster, fake_instances, small_template, stderr, wait_for};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(60);

fn has_event(c: &Cluster, env: &str, kind: &str, text: &str) -> bool {
    c.events(env)
        .iter()
        .any(|(k, m)| k == kind && m.contains(text))
}

/// A daily UTC schedule whose working hours began before now and end at the
/// next whole minute at least 12 s away (so within 72 s).
pub(crate) fn schedule_ending_soon() -> (String, Timestamp) {
    let end = (Timestamp::now().as_second() + 12 + 59) / 60 * 60;
    let mut end_min = (end % 86_400) / 60;
    if end_min == 0 {
        end_min = 1440;
    }
    let start_min = end_min - 2;
    let hm = |m: i64| format!("{:02}:{:02}", m / 60, m % 60);
    let windows = if start_min >= 0 {
        format!("{}-{}", hm(start_min), hm(end_min))
    } else {
        // Across midnight: the end of yesterday and the start of today.
        format!("00:00-{},{}-24:00", hm(end_min), hm(1440 + start_min))
    };
    (
        format!("daily {windows} UTC"),
        Timestamp::from_second(end).unwrap(),
    )
}

fn ts(v: &Value) -> Timestamp {
    v.as_str().unwrap().parse().unwrap()
}

#[test]
fn a_short_ttl_deletes_and_a_short_schedule_and_idleness_stop() {
    let mut c = Cluster::start();
    c.configure(
        "policy_interval = \"1s\"\n[policies]\nmax_extension = \"1m\"\n\
         [pricing]\ncurrency = \"EUR\"\nvcpu_hour = 1.0\nmemory_gib_hour = 0.5\n",
    );
    let a = c.fake_host_with("alpha", "100ms", "activity_interval = \"1s\"");
    c.import_dummy_image("tiny");
    let tpl = small_template(c.dir.path(), "box", "");
    c.ok(&["template", "push", tpl.to_str().unwrap()]);
    let agent_dir = c.agent(a).data_dir.clone();
    // The fake runtime reports the worker busy until the test says otherwise.
    std::fs::write(
        agent_dir.join("fake-activity.json"),
        r#"{"worker": {"cpu_percent": 50}}"#,
    )
    .unwrap();

    let (schedule, off_at) = schedule_ending_soon();
    let office: Value = c.json(&[
        "env",
        "create",
        "office",
        "-t",
        "box",
        "--schedule",
        &schedule,
    ]);
    let aging: Value = c.json(&[
        "env",
        "create",
        "aging",
        "-t",
        "box",
        "--ttl",
        "20s",
        "--ttl-warning",
        "12s",
    ]);
    let worker: Value = c.json(&["env", "create", "worker", "-t", "box", "--idle", "4s"]);
    let (office_id, aging_id, worker_id) = (
        office["id"].as_str().unwrap().to_string(),
        aging["id"].as_str().unwrap().to_string(),
        worker["id"].as_str().unwrap().to_string(),
    );
    for n in ["office", "aging", "worker"] {
        c.wait_env_state(n, "Running", WAIT);
    }

    // env show: each policy with its level, and the next action.
    let shown = c.env("aging");
    let lines = shown["policies"]["policies"].as_array().unwrap();
    assert_eq!(lines[0]["key"], "ttl");
    assert_eq!(lines[0]["value"], "20s");
    assert_eq!(lines[0]["source"], "environment");
    let next = shown["next_action"].as_str().unwrap();
    assert!(next.starts_with("warn at "), "{next}");
    let office_next = c.env("office")["next_action"].as_str().unwrap().to_string();
    assert!(
        office_next.starts_with(&format!(
            "stop at {}",
            off_at.strftime("%Y-%m-%d %H:%M:%S UTC")
        )),
        "{office_next}"
    );

    // Extending past the site cap is refused and names the cap; within it
    // the deadline moves.
    let out = c.metrom(&["env", "extend", "aging", "--by", "2m"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("site cap max_extension = 1m"),
        "{}",
        stderr(&out)
    );
    let before = ts(&shown["policies"]["delete_at"]);
    c.ok(&["env", "extend", "aging", "--by", "10s"]);
    let after = ts(&c.env("aging")["policies"]["delete_at"]);
    assert_eq!(after.duration_since(before).as_secs(), 10);

    // Idle: busy, the worker runs past its idle time; quiet, it stops.
    std::thread::sleep(Duration::from_secs(6));
    let w = c.env("worker");
    assert_eq!(w["state"], "Running");
    assert!(
        w["policies"]["activity"]
            .as_str()
            .unwrap()
            .starts_with("last active"),
        "{}",
        w["policies"]
    );
    std::fs::write(agent_dir.join("fake-activity.json"), "{}").unwrap();
    c.wait_env_state("worker", "Stopped", Duration::from_secs(30));
    assert!(
        has_event(
            &c,
            "worker",
            "policy_stop",
            "no activity for 4s (idle policy)"
        ),
        "{:?}",
        c.events("worker")
    );
    assert_eq!(fake_instances(&agent_dir)[&worker_id]["running"], false);

    // ttl: a warning, then deleted at created + 20s + 10s.
    wait_for("the ttl warning", WAIT, || {
        has_event(&c, &aging_id, "ttl_warning", "will be deleted at").then_some(())
    });
    c.wait_env_state(&aging_id, "Deleted", WAIT);
    assert!(!fake_instances(&agent_dir).contains_key(&aging_id));
    assert!(
        has_event(
            &c,
            &aging_id,
            "policy_delete",
            "deleted by policy: its ttl of 20s extended by 10s ran out"
        ),
        "{:?}",
        c.events(&aging_id)
    );

    // Schedule: stopped at the off time, not before.
    c.wait_env_state("office", "Stopped", Duration::from_secs(100));
    assert!(Timestamp::now() >= off_at);
    assert!(
        has_event(&c, "office", "policy_stop", "working hours ended at"),
        "{:?}",
        c.events("office")
    );
    assert_eq!(fake_instances(&agent_dir)[&office_id]["running"], false);

    // A manual start after hours lasts until the next off time, tomorrow.
    c.ok(&["env", "start", "office", "--wait"]);
    std::thread::sleep(Duration::from_secs(3));
    let o = c.env("office");
    assert_eq!(o["state"], "Running");
    let tomorrow = off_at
        .checked_add(jiff::SignedDuration::from_hours(24))
        .unwrap();
    let next = o["next_action"].as_str().unwrap();
    assert!(
        next.starts_with(&format!(
            "stop at {}",
            tomorrow.strftime("%Y-%m-%d %H:%M:%S UTC")
        )),
        "{next}"
    );

    // Every policy action is audited under "policy".
    let audit: Vec<Value> = c.json(&["audit", "--user", "policy"]);
    let actions: Vec<(&str, &str)> = audit
        .iter()
        .map(|e| (e["action"].as_str().unwrap(), e["target"].as_str().unwrap()))
        .collect();
    for want in [
        ("policy stop", "worker"),
        ("policy delete", "aging"),
        ("policy stop", "office"),
    ] {
        assert!(actions.contains(&want), "{want:?} in {actions:?}");
    }

    // Usage: running hours, hours stopped by policy, and savings.
    let r: Value = c.json(&["report", "usage", "--since", "1h"]);
    let total = &r["total"];
    assert_eq!(r["currency"], "EUR");
    assert_eq!(total["environments"], 3, "{r}");
    assert_eq!(total["deleted_by_policy"], 1, "{r}");
    assert!(total["running_hours"].as_f64().unwrap() > 0.0, "{r}");
    assert!(total["policy_stopped_hours"].as_f64().unwrap() > 0.0, "{r}");
    assert!(total["savings"].as_f64().unwrap() > 0.0, "{r}");
    assert_eq!(r["by_user"][0]["key"], "admin");
    assert_eq!(r["by_template"][0]["key"], "box");
    let table = c.ok(&["report", "usage"]);
    assert!(
        table.contains("STOPPED BY POLICY H") && table.contains("EUR"),
        "{table}"
    );
}

#[test]
fn bad_policies_are_refused_with_what_to_do_and_audited() {
    let mut c = Cluster::start();
    c.configure("[policies]\nmax_ttl = \"1h\"\nmin_idle = \"10m\"\n");
    c.fake_host("alpha", "100ms");
    c.import_dummy_image("tiny");
    c.ok(&[
        "template",
        "push",
        small_template(c.dir.path(), "box", "").to_str().unwrap(),
    ]);

    // A template over a site cap is refused at push.
    let forever = small_template(c.dir.path(), "forever", "[policies]\nttl = \"30d\"\n");
    let out = c.metrom(&["template", "push", forever.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains(
            "template forever: ttl 30d (from the template) exceeds the site cap max_ttl = 1h"
        ),
        "{}",
        stderr(&out)
    );

    let cases: [(&[&str], &str); 8] = [
        (
            &["--schedule", "mon-fri 09:00-19:00 Mars/Base"],
            "unknown time zone 'Mars/Base': use an IANA name",
        ),
        (
            &["--schedule", "mon-fri 09:00-12:00,11:00-13:00 Asia/Seoul"],
            "hours '09:00-12:00' and '11:00-13:00' overlap",
        ),
        (
            &["--schedule", "mon-fri 09:00-09:00 UTC"],
            "end before they start",
        ),
        (&["--schedule", "mon-fri UTC"], "write DAYS HOURS TIMEZONE"),
        (
            &["--ttl", "2h"],
            "ttl 2h (from the environment) exceeds the site cap max_ttl = 1h (controller.toml [policies]); give --ttl 1h or less",
        ),
        (&["--ttl", "off"], "--ttl off is not allowed"),
        (&["--idle", "1m"], "site floor min_idle = 10m"),
        (
            &["--ttl", "30m", "--ttl-warning", "1h"],
            "--ttl-warning 1h must be shorter than the ttl (30m)",
        ),
    ];
    for (flags, want) in cases {
        let mut args = vec!["env", "create", "bad", "-t", "box"];
        args.extend(flags);
        let out = c.metrom(&args);
        assert_eq!(out.status.code(), Some(2), "{flags:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(want), "{flags:?}: {}", stderr(&out));
    }

    // Nothing changed.
    let all: Vec<Value> = c.json(&["env", "list", "--all"]);
    assert!(all.is_empty(), "{all:?}");

    // Every refusal is in the audit log with its message.
    let audit: Vec<Value> = c.json(&["audit", "--since", "1h"]);
    let refused: Vec<&Value> = audit.iter().filter(|e| e["result"] == "refused").collect();
    assert_eq!(refused.len(), cases.len() + 1, "{audit:?}");
    for (flags, want) in cases {
        assert!(
            refused.iter().any(|e| e["action"] == "env create"
                && e["target"] == "bad"
                && e["message"].as_str().unwrap().contains(want)),
            "{flags:?} not audited: {refused:?}"
        );
    }

    // With no ttl anywhere, the cap is the ttl; the warning comes at a tenth.
    c.ok(&["env", "create", "capped", "-t", "box"]);
    let p = &c.env("capped")["policies"]["policies"];
    assert_eq!(p[0]["key"], "ttl");
    assert_eq!(
        (p[0]["value"].as_str(), p[0]["source"].as_str()),
        (Some("1h"), Some("site"))
    );
    assert_eq!(
        (p[1]["value"].as_str(), p[1]["source"].as_str()),
        (Some("6m"), Some("default"))
    );
}
