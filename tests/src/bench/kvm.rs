//! `metrom-bench kvm`: create-to-Running latency of the tiny test VM through
//! Metrom versus starting the very same VM with `virsh create` directly, in the
//! same run; and create-to-services-healthy of the Debian image.
//!
//! "Running" for Metrom is what `env show` reports; for the direct start it is
//! the same test: the guest agent answers and the guest wrote its readiness
//! marker. The direct VM uses Metrom's own domain XML (dumped from the
//! environment), with its own fresh overlay on the same cached image.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;

use crate::{Cluster, kvm_agent_toml, starter_template, test_image, virsh};

pub fn run(reps: usize, debian: bool) -> anyhow::Result<()> {
    let mut c = Cluster::start();
    let token = c.token(&[]);
    let a = c.join_agent_with_config("bench-kvm", &token, &kvm_agent_toml("bench-kvm", "auto"));
    c.wait_host_state(&c.host_id(a), "Ready", Duration::from_secs(60));
    let tiny = test_image("tiny");
    c.ok(&[
        "image",
        "import",
        tiny.to_str().context("path")?,
        "--name",
        "tiny",
    ]);
    c.ok(&[
        "template",
        "push",
        starter_template("minimal").to_str().context("path")?,
    ]);

    // Warm the image cache (the first create also fetches the image).
    let cold = time_metrom(&c, "warm-up")?;
    println!("metrom, first environment (includes fetching the 18 MiB image): {cold:.2}s");
    let mut xml = virsh(&["dumpxml", "metrom-warm-up"]);
    // Keep the seed and give the console its own file: the environment's go with it.
    let seed = disk_source(&xml, "vdc").context("no seed in the domain XML")?;
    let seed_copy = c.dir.path().join("direct-seed.iso");
    std::fs::copy(&seed, &seed_copy)?;
    xml = xml.replace(&seed, &seed_copy.to_string_lossy());
    if let Some(console) = xml
        .split("<source path='")
        .nth(1)
        .and_then(|s| s.split('\'').next())
        .map(str::to_string)
    {
        xml = xml.replace(
            &console,
            &c.dir.path().join("direct-console.log").to_string_lossy(),
        );
    }
    c.ok(&["env", "delete", "warm-up", "--wait"]);

    let mut metrom = Vec::new();
    let mut direct = Vec::new();
    for i in 0..reps {
        metrom.push(time_metrom(&c, &format!("bench-{i}"))?);
        c.ok(&["env", "delete", &format!("bench-{i}"), "--wait"]);
        direct.push(time_direct(&c, &xml, i)?);
    }
    let m = median(&mut metrom);
    let d = median(&mut direct);
    println!("tiny VM create → Running, {reps} runs each (median):");
    println!("  metrom env create : {m:.2}s  (all: {})", list(&metrom));
    println!("  virsh create      : {d:.2}s  (all: {})", list(&direct));
    println!(
        "  metrom overhead   : {:+.2}s ({:+.1}%)",
        m - d,
        (m / d - 1.0) * 100.0
    );

    if debian {
        let deb = test_image("debian-12");
        c.ok(&[
            "image",
            "import",
            deb.to_str().context("path")?,
            "--name",
            "debian-12",
        ]);
        // Guests reach the test registry on the VM network's gateway.
        let (_registry, reg_port) = crate::gateway::registry_on_gateway(c.dir.path());
        let tpl = c.dir.path().join("tpl-bench-debian");
        std::fs::create_dir_all(&tpl)?;
        std::fs::write(
            tpl.join("metrom.toml"),
            format!(
                "name = \"bench-debian\"\nruntime = [\"kvm\"]\nimage = \"debian-12\"\nregistry = \"{}:{reg_port}\"\n\
                 [resources]\nvcpus = 2\nmemory = \"1GiB\"\ndisk = \"8GiB\"\n[[ports]]\nname = \"web\"\nport = 8080\n",
                crate::gateway::GATEWAY
            ),
        )?;
        std::fs::copy(
            starter_template("minimal").join("compose.yaml"),
            tpl.join("compose.yaml"),
        )?;
        c.ok(&["template", "push", tpl.to_str().context("path")?]);
        let start = Instant::now();
        c.ok(&["env", "create", "bench-deb", "--template", "bench-debian"]);
        let healthy = wait(Duration::from_secs(900), || {
            let env: Value = c.json(&["env", "show", "bench-deb"]);
            if env["state"] == "Failed" {
                return Some(Err(anyhow::anyhow!("failed: {}", env["reason"])));
            }
            let services = env["detail"]["services"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let ok = env["state"] == "Running"
                && !services.is_empty()
                && services
                    .iter()
                    .all(|s| s["state"] == "running" && s["health"] == "healthy");
            ok.then_some(Ok(()))
        })?;
        healthy?;
        println!(
            "debian-12 VM create → compose services healthy: {:.1}s",
            start.elapsed().as_secs_f64()
        );
        c.ok(&["env", "delete", "bench-deb", "--wait"]);
    }
    Ok(())
}

fn time_metrom(c: &Cluster, name: &str) -> anyhow::Result<f64> {
    let start = Instant::now();
    c.ok(&["env", "create", name, "--template", "minimal"]);
    wait(Duration::from_secs(600), || {
        let env: Value = c.json(&["env", "show", name]);
        match env["state"].as_str() {
            Some("Running") => Some(Ok(())),
            Some("Failed") => Some(Err(anyhow::anyhow!("{name} failed: {}", env["reason"]))),
            _ => None,
        }
    })??;
    Ok(start.elapsed().as_secs_f64())
}

/// The same domain (Metrom's XML), on a fresh overlay, started with `virsh create`.
fn time_direct(c: &Cluster, xml: &str, i: usize) -> anyhow::Result<f64> {
    let name = format!("metrom-bench-direct-{i}");
    let root = disk_source(xml, "vda").context("no root disk in the domain XML")?;
    let cache = c.dir.path().join("agent-bench-kvm").join("images");
    let base = std::fs::read_dir(&cache)?
        .next()
        .context("empty image cache")??
        .path();
    let overlay = c.dir.path().join(format!("direct-{i}.qcow2"));
    let status = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b"])
        .arg(&base)
        .arg(&overlay)
        .status()?;
    if !status.success() {
        bail!("qemu-img create failed");
    }
    let data = c.dir.path().join(format!("direct-{i}-data.qcow2"));
    Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&data)
        .arg("1G")
        .status()?;
    let data_src = disk_source(xml, "vdb").context("no data disk in the domain XML")?;
    let mut x = xml
        .replace("metrom-warm-up", &name)
        .replace(&root, &overlay.to_string_lossy())
        .replace(&data_src, &data.to_string_lossy());
    // A transient domain of its own: no uuid, no MAC clash with Metrom's.
    x = x
        .lines()
        .filter(|l| !l.contains("<uuid>") && !l.contains("<mac address"))
        .collect::<Vec<_>>()
        .join("\n");
    let file = c.dir.path().join(format!("direct-{i}.xml"));
    std::fs::write(&file, x)?;
    let start = Instant::now();
    let out = Command::new("virsh")
        .args(["-c", "qemu:///system", "create"])
        .arg(&file)
        .output()?;
    if !out.status.success() {
        bail!("virsh create: {}", String::from_utf8_lossy(&out.stderr));
    }
    let ready = serde_json::json!({"execute": "guest-file-open", "arguments": {"path": "/var/lib/metrom/ready"}}).to_string();
    wait(Duration::from_secs(600), || {
        virsh(&["qemu-agent-command", &name, &ready])
            .contains("return")
            .then_some(())
    })?;
    let secs = start.elapsed().as_secs_f64();
    virsh(&["destroy", &name]);
    Ok(secs)
}

/// The file behind the disk with target `dev` in a domain XML.
fn disk_source(xml: &str, dev: &str) -> Option<String> {
    xml.split("<disk").skip(1).find_map(|d| {
        let d = d.split("</disk>").next()?;
        if !d.contains(&format!("<target dev='{dev}'")) {
            return None;
        }
        Some(
            d.split("<source file='")
                .nth(1)?
                .split('\'')
                .next()?
                .to_string(),
        )
    })
}

fn wait<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> anyhow::Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    v[v.len() / 2]
}

fn list(v: &[f64]) -> String {
    v.iter()
        .map(|x| format!("{x:.2}"))
        .collect::<Vec<_>>()
        .join(" ")
}
