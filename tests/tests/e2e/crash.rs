//! `kill -9` the controller while 200 creates are in flight: after a restart
//! every acknowledged environment exists exactly once, and nothing that was not
//! acknowledged is half-made.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use metrom_controller::cli::client::Client;
use metrom_protocol::identity::IdentityBundle;
use metrom_protocol::messages::api::{Call, EnvCreate};
use metrom_tests::{Cluster, fake_instances, starter_template, wait_for};
use serde_json::Value;

const CREATES: usize = 200;
const CLIENTS: usize = 16;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_the_controller_mid_creates_loses_nothing_acknowledged() {
    let mut c = tokio::task::block_in_place(|| {
        let mut c = Cluster::start();
        c.configure("[scheduler]\ncpu_overcommit = 1000.0\nmemory_overcommit = 100.0\ndisk_overcommit = 1000.0\n");
        c
    });
    let a = tokio::task::block_in_place(|| {
        let a = c.fake_host("alpha", "0ms");
        c.import_dummy_image("tiny");
        c.ok(&[
            "template",
            "push",
            starter_template("minimal").to_str().unwrap(),
        ]);
        a
    });
    metrom_protocol::tls::install_default_provider();
    let identity = IdentityBundle::load(&c.identity).unwrap();
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let count = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for k in 0..CLIENTS {
        let identity = identity.clone();
        let acked = acked.clone();
        let count = count.clone();
        tasks.push(tokio::spawn(async move {
            let Ok(client) = Client::connect(&identity).await else {
                return;
            };
            for i in (k..CREATES).step_by(CLIENTS) {
                let name = format!("env-{i:03}");
                let call = Call::EnvCreate(EnvCreate {
                    name: name.clone(),
                    template: "minimal".into(),
                    version: None,
                    params: Default::default(),
                    host: None,
                    labels: Default::default(),
                });
                match client.call(call).await {
                    Ok(_) => {
                        acked.lock().unwrap().push(name);
                        count.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(e) => {
                        // Expected only once the controller is killed.
                        eprintln!("client {k}: {name}: {e}");
                        return;
                    }
                }
            }
        }));
    }
    // Pull the plug part-way.
    wait_for(
        "a third of the creates to be acknowledged",
        Duration::from_secs(120),
        || (count.load(Ordering::SeqCst) >= CREATES / 3).then_some(()),
    );
    tokio::task::block_in_place(|| c.kill_controller());
    for t in tasks {
        let _ = t.await;
    }
    let acked: BTreeSet<String> = acked.lock().unwrap().iter().cloned().collect();
    assert!(
        acked.len() < CREATES,
        "the kill came too late to test anything"
    );
    eprintln!("{} creates acknowledged before the kill", acked.len());

    tokio::task::block_in_place(|| c.start_controller());
    let envs: Vec<Value> = tokio::task::block_in_place(|| c.json(&["env", "list"]));
    let names: Vec<String> = envs
        .iter()
        .map(|e| e["name"].as_str().unwrap().to_string())
        .collect();
    let unique: BTreeSet<String> = names.iter().cloned().collect();
    assert_eq!(unique.len(), names.len(), "no name twice");
    for name in &acked {
        assert!(
            unique.contains(name),
            "acknowledged {name} is missing after the restart"
        );
    }
    for e in &envs {
        // Whatever exists is whole: placed, with its template, on its way to Running.
        assert!(
            e["host"].is_string() && e["template"] == "minimal" && e["version"].is_string(),
            "{e}"
        );
    }
    // Everything converges: one fake instance per environment, each created once.
    let data_dir = c.agent(a).data_dir.clone();
    let expected = envs.len();
    wait_for(
        "every environment Running on the agent",
        Duration::from_secs(180),
        || {
            let list: Vec<Value> = tokio::task::block_in_place(|| c.json(&["env", "list"]));
            let running = list.iter().filter(|e| e["state"] == "Running").count();
            (running == expected && fake_instances(&data_dir).len() == expected).then_some(())
        },
    );
    for (_, inst) in fake_instances(&data_dir) {
        assert_eq!(inst["creations"], 1, "{inst}");
    }
}
