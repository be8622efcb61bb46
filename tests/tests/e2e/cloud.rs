//! Cloud brokerage end to end against an EC2-compatible server (moto's
//! `moto_server` on 127.0.0.1, one per test): launch, stop, start and
//! terminate through Metrom, checked through the EC2 API (tags, user-data);
//! burst placement when the on-prem host is full; a cloud-only template; a
//! ttl deleting and working hours stopping a cloud environment; sync finding foreign and orphan
//! instances, drift corrected, `cloud gc` terminating only orphans; and the
//! error paths — missing and refused credentials, throttling and 5xx retried
//! with backoff, an unreachable endpoint.

use std::path::Path;
use std::time::Duration;

use metrom_controller::cli::client::Client;
use metrom_protocol::identity::IdentityBundle;
use metrom_protocol::messages::api::{Call, CloudGcView, Reply};
use metrom_tests::ec2::{
    self, AMI, Ec2Instance, Fault, FaultProxy, Moto, REGION, SECRET, add_account, free_tcp_port,
    template,
};
use metrom_tests::{Cluster, stderr, stdout, wait_for};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(60);
/// A cluster whose controller has test credentials and quick cloud timings.
fn cluster() -> Cluster {
    let mut c = Cluster::start();
    ec2::give_credentials(&mut c);
    c.configure(
        "policy_interval = \"1s\"\n[cloud]\nsync_interval = \"3s\"\npoll_interval = \"200ms\"\n\
         retry_interval = \"2s\"\nmax_attempts = 4\ninitial_backoff = \"100ms\"\nmax_backoff = \"400ms\"\n",
    );
    c
}

fn push(c: &Cluster, dir: &Path) {
    c.ok(&["template", "push", dir.to_str().unwrap()]);
}

/// The one live instance tagged with an environment's id.
fn instance_of(moto: &Moto, env_id: &str) -> Ec2Instance {
    let all = moto.instances(Some(("metrom:env", env_id)));
    let live: Vec<_> = all
        .into_iter()
        .filter(|i| i.state != "terminated")
        .collect();
    assert_eq!(live.len(), 1, "instances of {env_id}: {live:?}");
    live.into_iter().next().unwrap()
}

/// A cloud-init `write_files` entry's content, decoded.
fn decode_file(f: &Value) -> String {
    use base64::Engine;
    use std::io::Read;
    let content = f["content"].as_str().unwrap();
    let b64 = || {
        base64::engine::general_purpose::STANDARD
            .decode(content)
            .expect("base64 content")
    };
    let bytes = match f["encoding"].as_str() {
        Some("gz+b64") => {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(&b64()[..])
                .read_to_end(&mut out)
                .expect("gzip content");
            out
        }
        Some("b64") => b64(),
        None => content.as_bytes().to_vec(),
        Some(other) => panic!("unexpected encoding {other}: {f}"),
    };
    String::from_utf8(bytes).expect("text")
}

/// `CloudGc` through the API itself, with any instance ids (the CLI only
/// ever sends the orphans it listed).
fn gc_directly(c: &Cluster, instance_ids: Vec<String>) -> CloudGcView {
    metrom_protocol::tls::install_default_provider();
    let identity = IdentityBundle::load(&c.identity).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = Client::connect(&identity).await.unwrap();
        let reply = client.call(Call::CloudGc { instance_ids }).await.unwrap();
        client.close().await;
        match reply {
            Reply::CloudGc(v) => v,
            other => panic!("unexpected answer to CloudGc: {other:?}"),
        }
    })
}

fn wait_instance_state(moto: &Moto, id: &str, state: &str) {
    wait_for(&format!("instance {id} to be {state}"), WAIT, || {
        (moto.instance(id).state == state).then_some(())
    });
}

fn no_secret_anywhere(c: &Cluster, outputs: &[&str]) {
    let log = std::fs::read_to_string(c.controller_log()).unwrap_or_default();
    assert!(
        !log.contains(SECRET),
        "the secret key is in the controller log"
    );
    for o in outputs {
        assert!(!o.contains(SECRET), "the secret key was printed: {o}");
    }
}

#[test]
fn a_cloud_only_environment_launches_stops_starts_and_terminates_on_ec2() {
    let moto = Moto::start(&std::env::temp_dir());
    let c = cluster();
    add_account(&c, "sandbox", &moto.endpoint(), &[]);
    let accounts: Vec<Value> = c.json(&["cloud", "list"]);
    assert_eq!(accounts[0]["name"], "sandbox");
    assert_eq!(accounts[0]["region"], REGION);
    push(
        &c,
        &template(c.dir.path(), "cloudy", "[\"cloud\"]", 2, "4GiB"),
    );

    let created: Value = c.json(&["env", "create", "web", "-t", "cloudy"]);
    assert_eq!(created["runtime"], "cloud");
    assert_eq!(created["host_name"], format!("aws:sandbox/{REGION}"));
    let env_id = created["id"].as_str().unwrap().to_string();
    let v = c.wait_env_state("web", "Running", WAIT);
    let inst = instance_of(&moto, &env_id);
    assert_eq!(v["detail"]["instance"], format!("{} (t3.medium)", inst.id));
    assert_eq!(inst.state, "running");
    assert_eq!(
        inst.instance_type, "t3.medium",
        "smallest type with 2 vCPUs, 4 GiB"
    );
    assert_eq!(inst.image, AMI);

    // Tags, through the EC2 API.
    let inventory: Value = c.json(&["cloud", "instances"]);
    let controller = inventory["controller"].as_str().unwrap().to_string();
    assert!(!controller.is_empty());
    assert_eq!(inst.tags["metrom:env"], env_id);
    assert_eq!(inst.tags["metrom:owner"], "admin");
    assert_eq!(inst.tags["metrom:controller"], controller);
    assert_eq!(inst.tags["metrom:build"], "1");
    assert_eq!(inst.tags["Name"], "web");

    // User-data: the kvm runtime's cloud-init generator's document (the
    // same keys, files and provisioning script a VM's seed ISO carries).
    let ud = String::from_utf8(moto.user_data(&inst.id)).expect("user-data is text");
    let doc: Value = serde_json::from_str(
        ud.strip_prefix("#cloud-config\n")
            .expect("a #cloud-config document"),
    )
    .expect("cloud-config as JSON");
    let keys: Vec<&str> = doc
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "hostname",
            "manage_etc_hosts",
            "package_update",
            "runcmd",
            "ssh_pwauth",
            "users",
            "write_files"
        ],
        "{doc}"
    );
    assert_eq!(doc["hostname"], "web");
    assert_eq!(doc["users"][0]["name"], "admin");
    assert_eq!(
        doc["runcmd"],
        serde_json::json!([["/bin/sh", "/opt/metrom/provision.sh"]])
    );
    let paths: Vec<&str> = doc["write_files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    let compose_dir = metrom_protocol::cloudinit::COMPOSE_DIR;
    assert_eq!(
        paths,
        [
            format!("{compose_dir}/compose.yaml"),
            format!("{compose_dir}/metrom.toml"),
            format!("{compose_dir}/.env"),
            "/opt/metrom/provision.sh".to_string(),
        ],
        "the template's files, its parameters, the provisioning script"
    );
    let file = |path: &str| -> String {
        let f = doc["write_files"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["path"] == path)
            .unwrap_or_else(|| panic!("{path} not in write_files: {doc}"));
        decode_file(f)
    };
    assert!(file(&format!("{compose_dir}/compose.yaml")).contains("cloud-marker-7f3"));
    assert!(file(&format!("{compose_dir}/metrom.toml")).contains("name = \"cloudy\""));
    let script = file("/opt/metrom/provision.sh");
    assert!(
        script.contains(&format!(
            "# Written by Metrom: provisions environment web ({env_id}), build 1."
        )),
        "{script}"
    );
    assert!(
        script.contains(metrom_protocol::cloudinit::READY_MARKER),
        "{script}"
    );
    assert!(
        script.contains("'git'"),
        "the template's packages: {script}"
    );
    assert!(
        script.contains("'metrom-web'"),
        "the compose project: {script}"
    );

    // Stop, start, delete map to the instance.
    c.ok(&["env", "stop", "web"]);
    c.wait_env_state("web", "Stopped", WAIT);
    assert_eq!(moto.instance(&inst.id).state, "stopped");
    c.ok(&["env", "start", "web"]);
    c.wait_env_state("web", "Running", WAIT);
    assert_eq!(moto.instance(&inst.id).state, "running");

    let listed: Vec<Value> = c.json(&["env", "list"]);
    assert_eq!(listed[0]["host_name"], format!("aws:sandbox/{REGION}"));
    let table = c.ok(&["env", "list"]);
    assert!(table.contains(&format!("aws:sandbox/{REGION}")), "{table}");
    let shown = c.ok(&["env", "show", "web"]);
    assert!(
        shown.contains(&inst.id) && shown.contains("runtime cloud"),
        "{shown}"
    );

    // A rebuild replaces the instance.
    c.ok(&["env", "rebuild", "web"]);
    let replaced = wait_for("a new instance for build 2", WAIT, || {
        let all = moto.instances(Some(("metrom:env", &env_id)));
        all.into_iter()
            .find(|i| i.tags.get("metrom:build").map(String::as_str) == Some("2"))
    });
    c.wait_env_state("web", "Running", WAIT);
    wait_instance_state(&moto, &inst.id, "terminated");
    assert_ne!(replaced.id, inst.id);

    c.ok(&["env", "delete", "web"]);
    // A deleted environment is shown by its id only.
    c.wait_env_state(&env_id, "Deleted", WAIT);
    wait_instance_state(&moto, &replaced.id, "terminated");
    let ev = c.events(&env_id);
    assert!(
        ev.iter()
            .any(|(k, m)| k == "launched" && m.contains(&inst.id)),
        "{ev:?}"
    );
    assert!(
        ev.iter()
            .any(|(k, m)| k == "scheduled" && m.contains("runs only in the cloud")),
        "{ev:?}"
    );
    // Refused while environments live there; fine once they are gone.
    c.ok(&["cloud", "remove", "sandbox"]);
    no_secret_anywhere(&c, &[]);
}

#[test]
fn environments_burst_to_the_cloud_when_no_host_fits_and_a_ttl_deletes_them() {
    let moto = Moto::start(&std::env::temp_dir());
    let mut c = cluster();
    c.fake_host("alpha", "100ms");
    c.import_dummy_image("tiny");
    add_account(&c, "burst", &moto.endpoint(), &[]);
    // Memory for one environment on this host, not two.
    let hosts = c.hosts();
    let host_mib = hosts[0]["facts"]["memory_bytes"].as_u64().unwrap() / (1 << 20);
    let mib = host_mib * 6 / 10;
    push(
        &c,
        &template(
            c.dir.path(),
            "big",
            "[\"kvm\", \"cloud\"]",
            1,
            &format!("{mib}MiB"),
        ),
    );

    let first: Value = c.json(&["env", "create", "one", "-t", "big"]);
    assert_eq!(first["runtime"], "kvm", "the host takes the first: {first}");
    let second: Value = c.json(&["env", "create", "two", "-t", "big", "--ttl", "20s"]);
    assert_eq!(
        second["runtime"], "cloud",
        "no host fits the second: {second}"
    );
    assert_eq!(second["host_name"], format!("aws:burst/{REGION}"));
    let env_id = second["id"].as_str().unwrap().to_string();
    c.wait_env_state("one", "Running", WAIT);
    c.wait_env_state("two", "Running", WAIT);
    let inst = instance_of(&moto, &env_id);
    let ev = c.events("two");
    assert!(
        ev.iter()
            .any(|(k, m)| k == "scheduled" && m.contains("no host fits")),
        "{ev:?}"
    );
    // The ttl deletes it like any environment: desired state, then the instance.
    c.wait_env_state(&env_id, "Deleted", WAIT);
    wait_instance_state(&moto, &inst.id, "terminated");
    let ev = c.events(&env_id);
    assert!(ev.iter().any(|(k, _)| k == "policy_delete"), "{ev:?}");
    assert_eq!(c.env("one")["state"], "Running");
}

#[test]
fn working_hours_stop_a_cloud_environment_and_its_instance() {
    let moto = Moto::start(&std::env::temp_dir());
    let c = cluster();
    add_account(&c, "office", &moto.endpoint(), &[]);
    push(
        &c,
        &template(c.dir.path(), "cloudy", "[\"cloud\"]", 1, "512MiB"),
    );
    let (schedule, off_at) = crate::policies::schedule_ending_soon();
    let created: Value = c.json(&[
        "env",
        "create",
        "desk",
        "-t",
        "cloudy",
        "--schedule",
        &schedule,
        "--idle",
        "1h",
    ]);
    c.wait_env_state("desk", "Running", WAIT);
    let inst = instance_of(&moto, created["id"].as_str().unwrap());
    assert_eq!(inst.state, "running");
    // Nothing measures a cloud instance's activity, and env show says so.
    let shown: Value = c.json(&["env", "show", "desk"]);
    assert!(
        shown["policies"]["activity"]
            .as_str()
            .is_some_and(|a| a.contains("idle policy does not apply")),
        "{shown}"
    );

    // Stopped by the schedule at the off time, not before: instance too.
    c.wait_env_state("desk", "Stopped", Duration::from_secs(100));
    assert!(jiff::Timestamp::now() >= off_at);
    assert!(
        c.events("desk")
            .iter()
            .any(|(k, m)| k == "policy_stop" && m.contains("working hours ended at")),
        "{:?}",
        c.events("desk")
    );
    assert_eq!(moto.instance(&inst.id).state, "stopped");
}

#[test]
fn sync_lists_foreign_and_orphan_instances_corrects_drift_and_gc_terminates_only_orphans() {
    let moto = Moto::start(&std::env::temp_dir());
    let c = cluster();
    add_account(&c, "main", &moto.endpoint(), &[]);
    push(
        &c,
        &template(c.dir.path(), "cloudy", "[\"cloud\"]", 1, "512MiB"),
    );
    let created: Value = c.json(&["env", "create", "mine", "-t", "cloudy"]);
    let env_id = created["id"].as_str().unwrap().to_string();
    c.wait_env_state("mine", "Running", WAIT);
    let ours = instance_of(&moto, &env_id);
    let controller = ours.tags["metrom:controller"].clone();

    // Made outside Metrom: one untagged, one tagged as ours for an unknown environment.
    let foreign = moto.run_instance(&[("Name", "someone-else")]);
    let orphan = moto.run_instance(&[
        ("metrom:controller", &controller),
        ("metrom:env", "e-gone0000"),
        ("metrom:owner", "bob"),
    ]);
    let inv: Value = c.json(&["cloud", "sync"]);
    let find = |id: &str| -> Value {
        inv["instances"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["instance_id"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("{id} not listed: {inv}"))
    };
    let o = find(&ours.id);
    assert_eq!(o["ownership"], "metrom");
    assert_eq!(o["env"], "mine");
    assert_eq!(o["owner"], "admin");
    assert_eq!(o["instance_type"], "t3.micro");
    assert_eq!(o["state"], "running");
    assert_eq!(o["cost_per_hour"], 0.0104);
    assert!(o["uptime_secs"].as_u64().is_some(), "{o}");
    assert_eq!(find(&foreign)["ownership"], "foreign");
    assert_eq!(find(&foreign)["name"], "someone-else");
    assert_eq!(find(&orphan)["ownership"], "orphan");
    let table = c.ok(&["cloud", "instances"]);
    assert!(
        table.contains("orphan") && table.contains("foreign") && table.contains("mine"),
        "{table}"
    );
    assert!(table.contains("USD/hour"), "{table}");

    // Drift: stopped behind Metrom's back, started again by the sync.
    moto.stop_instance(&ours.id);
    c.ok(&["cloud", "sync"]);
    wait_instance_state(&moto, &ours.id, "running");
    assert!(
        c.events("mine")
            .iter()
            .any(|(k, m)| k == "drift" && m.contains(&ours.id)),
        "{:?}",
        c.events("mine")
    );

    // gc: refuses to ask without a terminal; --yes terminates the orphan only.
    let out = c.metrom(&["cloud", "gc"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--yes"), "{}", stderr(&out));
    assert_eq!(moto.instance(&orphan).state, "running");
    let gc: Value = c.json(&["cloud", "gc", "--yes"]);
    assert_eq!(gc["terminated"], serde_json::json!([orphan]));
    wait_instance_state(&moto, &orphan, "terminated");
    assert_eq!(moto.instance(&foreign).state, "running");
    assert_eq!(moto.instance(&ours.id).state, "running");
    // gc is refused for anything but orphans, even when the API is asked
    // directly for them; every gc is audited.
    let asked = vec![foreign.clone(), ours.id.clone(), orphan.clone()];
    let gc = gc_directly(&c, asked);
    assert!(gc.terminated.is_empty(), "{gc:?}");
    let why = |id: &str| {
        gc.skipped
            .iter()
            .find(|(i, _)| i == id)
            .map(|(_, w)| w.clone())
            .unwrap_or_else(|| panic!("{id} not skipped: {gc:?}"))
    };
    assert!(why(&foreign).contains("not an instance tagged"), "{gc:?}");
    assert!(
        why(&ours.id).contains(&format!("environment {env_id} owns it")),
        "{gc:?}"
    );
    assert!(why(&orphan).contains("already terminated"), "{gc:?}");
    assert_eq!(moto.instance(&foreign).state, "running");
    assert_eq!(moto.instance(&ours.id).state, "running");
    let audit: Vec<Value> = c.json(&["audit", "--limit", "0"]);
    let gcs = audit.iter().filter(|a| a["action"] == "cloud gc").count();
    assert_eq!(gcs, 2, "{audit:?}");

    let out = c.metrom(&["cloud", "remove", "main"]);
    assert_eq!(out.status.code(), Some(6), "{}", stderr(&out));
    assert!(stderr(&out).contains("mine"), "{}", stderr(&out));
}

#[test]
fn missing_and_refused_credentials_say_so_and_nothing_is_stored() {
    let moto = Moto::start(&std::env::temp_dir());
    let c = cluster();
    // A profile that does not exist.
    let out = c.metrom(&[
        "cloud",
        "add",
        "aws",
        "noprofile",
        "--region",
        REGION,
        "--endpoint",
        &moto.endpoint(),
        "--profile",
        "nosuch",
    ]);
    assert_eq!(out.status.code(), Some(6), "{}", stderr(&out));
    let e = stderr(&out);
    assert!(
        e.contains("no AWS credentials in profile 'nosuch'") && e.contains("nothing was stored"),
        "{e}"
    );
    // The endpoint refuses the key.
    let proxy = FaultProxy::start(moto.port);
    proxy.fail(None, Fault::AuthFailure, 100);
    let out = c.metrom(&[
        "cloud",
        "add",
        "aws",
        "refused",
        "--region",
        REGION,
        "--endpoint",
        &proxy.endpoint(),
    ]);
    assert_eq!(out.status.code(), Some(6), "{}", stderr(&out));
    let e = stderr(&out);
    assert!(e.contains("refused the credentials (AuthFailure"), "{e}");
    assert_eq!(proxy.requests().len(), 1, "an auth failure is not retried");
    let accounts: Vec<Value> = c.json(&["cloud", "list"]);
    assert!(accounts.is_empty(), "{accounts:?}");
    no_secret_anywhere(&c, &[&stderr(&out), &stdout(&out)]);
}

#[test]
fn throttling_and_server_errors_are_retried_with_backoff() {
    let moto = Moto::start(&std::env::temp_dir());
    let c = cluster();
    let proxy = FaultProxy::start(moto.port);
    add_account(&c, "flaky", &proxy.endpoint(), &[]);
    push(
        &c,
        &template(c.dir.path(), "cloudy", "[\"cloud\"]", 1, "512MiB"),
    );
    proxy.fail(Some("RunInstances"), Fault::Throttle, 2);
    proxy.fail(Some("DescribeInstances"), Fault::ServerError, 1);
    let created: Value = c.json(&["env", "create", "patient", "-t", "cloudy"]);
    c.wait_env_state("patient", "Running", WAIT);
    assert_eq!(proxy.faults(), 3, "{:?}", proxy.requests());
    let launches = proxy
        .requests()
        .iter()
        .filter(|a| *a == "RunInstances")
        .count();
    assert_eq!(launches, 3, "two throttled, then one through");
    // Exactly one instance: the retries made no second one.
    instance_of(&moto, created["id"].as_str().unwrap());

    // Throttled past the bounded retries: the environment fails with the
    // reason, and a later pass launches it.
    proxy.fail(Some("RunInstances"), Fault::Throttle, 4);
    let created: Value = c.json(&["env", "create", "later", "-t", "cloudy"]);
    let failed = c.wait_env_state("later", "Failed", WAIT);
    let reason = failed["reason"].as_str().unwrap();
    assert!(
        reason.contains("throttled") && reason.contains("RequestLimitExceeded"),
        "{reason}"
    );
    c.wait_env_state("later", "Running", WAIT);
    instance_of(&moto, created["id"].as_str().unwrap());

    // RunInstances reaches the server but its answer is lost: the retry
    // (same client token) or the next listing finds that instance; one
    // instance, the environment's, and none left without it.
    proxy.fail(Some("RunInstances"), Fault::DropAnswer, 1);
    let created: Value = c.json(&["env", "create", "unanswered", "-t", "cloudy"]);
    let env_id = created["id"].as_str().unwrap();
    c.wait_env_state("unanswered", "Running", WAIT);
    assert_eq!(proxy.faults(), 3 + 4 + 1, "the answer was dropped");
    let tagged = |moto: &Moto| -> Vec<Ec2Instance> {
        moto.instances(Some(("metrom:env", env_id)))
            .into_iter()
            .filter(|i| i.state != "terminated" && i.state != "shutting-down")
            .collect()
    };
    // A duplicate (a server that ignores the token) would be terminated.
    let one = wait_for("one live instance of the environment", WAIT, || {
        let live = tagged(&moto);
        (live.len() == 1).then(|| live[0].clone())
    });
    let v = c.env("unanswered");
    assert_eq!(
        v["detail"]["instance"],
        format!("{} (t3.micro)", one.id),
        "{v}"
    );
}

#[test]
fn an_unreachable_endpoint_fails_the_environment_with_the_reason_and_leaks_nothing() {
    let c = cluster();
    let port = free_tcp_port();
    let endpoint = format!("http://127.0.0.1:{port}");
    // Nothing listens there: --no-verify stores it anyway.
    let out = c.metrom(&[
        "cloud",
        "add",
        "aws",
        "dark",
        "--region",
        REGION,
        "--endpoint",
        &endpoint,
        "--image-map",
        &format!("tiny={AMI}"),
    ]);
    assert_eq!(out.status.code(), Some(6));
    assert!(
        stderr(&out).contains("cannot reach the EC2 endpoint"),
        "{}",
        stderr(&out)
    );
    add_account(&c, "dark", &endpoint, &["--no-verify"]);
    push(
        &c,
        &template(c.dir.path(), "cloudy", "[\"cloud\"]", 1, "512MiB"),
    );

    let lost: Value = c.json(&["env", "create", "lost", "-t", "cloudy"]);
    let v = c.wait_env_state("lost", "Failed", WAIT);
    let reason = v["reason"].as_str().unwrap();
    assert!(
        reason.contains("cannot reach the EC2 endpoint") && reason.contains(&endpoint),
        "{reason}"
    );
    // Never launched: deleting it needs no call.
    c.ok(&["env", "delete", "lost"]);
    c.wait_env_state(lost["id"].as_str().unwrap(), "Deleted", WAIT);
    let accounts: Vec<Value> = c.json(&["cloud", "list"]);
    assert!(
        accounts[0]["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains("cannot reach"),
        "{accounts:?}"
    );

    // Failed, then the endpoint comes up: the next pass launches it.
    let created: Value = c.json(&["env", "create", "waiting", "-t", "cloudy"]);
    c.wait_env_state("waiting", "Failed", WAIT);
    let moto = Moto::start_on(port, &std::env::temp_dir(), &[]);
    c.wait_env_state("waiting", "Running", WAIT);
    let inst = instance_of(&moto, created["id"].as_str().unwrap());
    c.ok(&["env", "delete", "waiting"]);
    c.wait_env_state(created["id"].as_str().unwrap(), "Deleted", WAIT);
    wait_instance_state(&moto, &inst.id, "terminated");
    let running: Vec<_> = moto
        .instances(None)
        .into_iter()
        .filter(|i| i.state != "terminated")
        .collect();
    assert!(running.is_empty(), "left running: {running:?}");
    no_secret_anywhere(&c, &[]);
}
