//! cloud-init NoCloud data for an environment's VM, generated from its
//! template and request. The KVM runtime puts it on a seed ISO (volume label
//! `cidata`); the cloud broker passes the same user-data to EC2.
//!
//! The user-data is a `#cloud-config` document written as JSON (a subset of
//! YAML), so every value is escaped by construction. It creates the owner's
//! user with their SSH keys, mounts the data disk at `/data`, configures Docker
//! to use the site's registry, writes the template's files, and runs one
//! provisioning script that installs missing packages, clones the
//! repositories, brings the compose services up, and finally writes Metrom's
//! readiness marker — or the failure marker with the reason.

use std::collections::BTreeMap;
use std::io::Write;

use base64::Engine;
use serde_json::{Value, json};

use crate::messages::env::{EnvSpec, SiteSettings};
use crate::template::{RepoKind, Template, TemplateError};

/// Where the guest records that provisioning finished.
pub const READY_MARKER: &str = "/var/lib/metrom/ready";
/// Where the guest records why provisioning failed.
pub const FAILED_MARKER: &str = "/var/lib/metrom/failed";
/// The step the provisioning script is on.
pub const PHASE_FILE: &str = "/var/lib/metrom/phase";
/// Where the template's files (compose.yaml, env files, configs) go.
pub const COMPOSE_DIR: &str = "/opt/metrom/compose";
/// The data disk's filesystem label and mount point.
pub const DATA_LABEL: &str = "metrom-data";
pub const DATA_MOUNT: &str = "/data";

/// Everything besides the spec that shapes the guest.
#[derive(Debug, Clone, Default)]
pub struct GuestSettings {
    /// Block device of the data disk inside the guest (e.g. `/dev/vdb`).
    pub data_disk: Option<String>,
    /// Registry as the guest reaches it (may differ from the host's view).
    pub registry: Option<String>,
    pub registry_insecure: bool,
    pub apt_mirror: Option<String>,
}

impl GuestSettings {
    /// The template's registry, else the site's.
    pub fn from_site(site: &SiteSettings, template: &Template) -> GuestSettings {
        GuestSettings {
            data_disk: None,
            registry: template
                .manifest
                .registry
                .clone()
                .or_else(|| site.registry.clone()),
            registry_insecure: site.registry_insecure,
            apt_mirror: site.apt_mirror.clone(),
        }
    }
}

/// The three NoCloud documents.
#[derive(Debug, Clone)]
pub struct Seed {
    pub user_data: String,
    pub meta_data: String,
}

/// Builds the seed for an environment.
pub fn seed(
    spec: &EnvSpec,
    template: &Template,
    guest: &GuestSettings,
) -> Result<Seed, TemplateError> {
    let params: BTreeMap<String, String> = spec.params.iter().cloned().collect();
    // Repositories may use parameters; check them now so a bad value fails here.
    let repos = template.manifest.repos_for(&params)?;
    let owner = &spec.owner;
    let home = format!("/home/{owner}");

    let mut files = Vec::new();
    for f in &template.files {
        files.push(write_file(
            &format!("{COMPOSE_DIR}/{}", f.path),
            &f.contents,
            "0644",
        ));
    }
    let env_file: String = params
        .iter()
        .map(|(k, v)| format!("{k}={}\n", dotenv_quote(v)))
        .collect();
    files.push(write_file(
        &format!("{COMPOSE_DIR}/.env"),
        env_file.as_bytes(),
        "0600",
    ));
    if let Some(reg) = &guest.registry {
        let scheme = if guest.registry_insecure || is_local(reg) {
            "http"
        } else {
            "https"
        };
        let daemon = json!({
            "registry-mirrors": [format!("{scheme}://{reg}")],
            "insecure-registries": if scheme == "http" { vec![reg.clone()] } else { vec![] },
        });
        files.push(write_file(
            "/etc/docker/daemon.json",
            daemon.to_string().as_bytes(),
            "0644",
        ));
    }
    if let Some(mirror) = &guest.apt_mirror {
        let sources = format!(
            "Types: deb\nURIs: {mirror}\nSuites: bookworm bookworm-updates\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
        );
        files.push(write_file(
            "/etc/apt/sources.list.d/debian.sources",
            sources.as_bytes(),
            "0644",
        ));
    }
    let script = provision_script(spec, template, &repos, &home, guest);
    files.push(write_file(
        "/opt/metrom/provision.sh",
        script.as_bytes(),
        "0755",
    ));

    let doc = json!({
        "hostname": spec.name,
        "manage_etc_hosts": true,
        "users": [{
            "name": owner,
            "gecos": format!("{owner} (Metrom environment owner)"),
            "groups": ["sudo"],
            "shell": "/bin/bash",
            "sudo": "ALL=(ALL) NOPASSWD:ALL",
            "lock_passwd": true,
            "ssh_authorized_keys": spec.ssh_keys,
        }],
        "ssh_pwauth": false,
        "package_update": false,
        "write_files": files,
        "runcmd": [["/bin/sh", "/opt/metrom/provision.sh"]],
    });
    let user_data = format!(
        "#cloud-config\n{}\n",
        serde_json::to_string_pretty(&doc).expect("JSON")
    );
    let meta_data = format!(
        "instance-id: {}-{}\nlocal-hostname: {}\n",
        spec.env_id, spec.build, spec.name
    );
    Ok(Seed {
        user_data,
        meta_data,
    })
}

/// The provisioning script run once by cloud-init.
fn provision_script(
    spec: &EnvSpec,
    template: &Template,
    repos: &[crate::template::RepoSpec],
    home: &str,
    guest: &GuestSettings,
) -> String {
    let has_registry = guest.registry.is_some();
    let owner = sh(&spec.owner);
    let project = sh(&format!("metrom-{}", spec.name));
    let packages: Vec<String> = template.manifest.packages.iter().map(|p| sh(p)).collect();
    let mut s = String::new();
    s.push_str(&format!(
        r#"#!/bin/sh
# Written by Metrom: provisions environment {name} ({id}), build {build}.
set -u
mkdir -p /var/lib/metrom
rm -f {ready} {failed}
phase() {{ echo "$*" >{phase}; echo "metrom: $*"; }}
fail() {{ echo "$*" >{failed}; echo "metrom: FAILED: $*" >&2; exit 1; }}
"#,
        name = spec.name,
        id = spec.env_id,
        build = spec.build,
        ready = READY_MARKER,
        failed = FAILED_MARKER,
        phase = PHASE_FILE,
    ));
    if let Some(dev) = &guest.data_disk {
        // The data disk keeps its filesystem across rebuilds: format it only
        // when it has none (cloud-init's fs_setup reformats a whole-disk device).
        let dev = sh(dev);
        s.push_str(&format!(
            "phase preparing the data disk\n\
             if ! blkid {dev} >/dev/null 2>&1; then mkfs.ext4 -q -L {DATA_LABEL} {dev} || fail \"formatting the data disk failed\"; fi\n\
             grep -q 'LABEL={DATA_LABEL}' /etc/fstab || echo 'LABEL={DATA_LABEL} {DATA_MOUNT} ext4 defaults,nofail 0 2' >>/etc/fstab\n\
             mkdir -p {DATA_MOUNT}\n\
             mountpoint -q {DATA_MOUNT} || mount {DATA_MOUNT} || fail \"mounting the data disk failed\"\n\
             echo \"metrom: data disk $(findmnt -n -o SOURCE,FSTYPE {DATA_MOUNT})\"\n\
             chown {owner}: {DATA_MOUNT}\n\
             ln -sfn {DATA_MOUNT} {home}/data\n",
            home = sh(home)
        ));
    }
    s.push_str("if getent group docker >/dev/null; then usermod -aG docker ");
    s.push_str(&owner);
    s.push_str("; fi\n");
    if !packages.is_empty() {
        let list = packages.join(" ");
        s.push_str(&format!(
            "phase installing packages\nif ! dpkg -s {list} >/dev/null 2>&1; then\n    apt-get update -q || fail \"apt-get update failed (is the package mirror reachable?)\"\n    DEBIAN_FRONTEND=noninteractive apt-get install -y -q {list} || fail \"installing packages {list} failed\"\nfi\n"
        ));
    }
    for r in repos {
        let dest = sh(&format!("{home}/{}", r.path));
        let url = sh(&r.url);
        let cmd = match r.kind {
            RepoKind::Git => {
                let branch = r
                    .branch
                    .as_ref()
                    .map(|b| format!(" --branch {}", sh(b)))
                    .unwrap_or_default();
                let mut c = format!("git clone{branch} {url} {dest}");
                if let Some(rev) = &r.revision {
                    c.push_str(&format!(" && git -C {dest} checkout {}", sh(rev)));
                }
                (c, format!("{dest}/.git"))
            }
            RepoKind::Svn => {
                let rev = r
                    .revision
                    .as_ref()
                    .map(|v| format!(" -r {}", sh(v)))
                    .unwrap_or_default();
                (
                    format!("svn checkout --non-interactive{rev} {url} {dest}"),
                    format!("{dest}/.svn"),
                )
            }
        };
        s.push_str(&format!(
            "phase cloning {url_text}\nif [ ! -d {marker} ]; then\n    su - {owner} -c {cmd} || fail \"cloning {url_text} failed\"\nfi\n",
            url_text = r.url.replace('"', "'"),
            marker = cmd.1,
            cmd = sh(&cmd.0),
        ));
    }
    if !template.compose.services.is_empty() {
        if has_registry {
            s.push_str("systemctl restart docker || true\n");
        }
        s.push_str(&format!(
            "phase starting services\ncd {COMPOSE_DIR} || fail \"{COMPOSE_DIR} is missing\"\n\
             i=0\nuntil docker info >/dev/null 2>&1; do i=$((i + 1)); [ $i -gt 120 ] && fail \"Docker did not start\"; sleep 1; done\n\
             if docker compose version >/dev/null 2>&1; then\n    docker compose -p {project} up -d || fail \"docker compose up failed\"\n\
             else\n    docker-compose -p {project} up -d || fail \"docker-compose up failed\"\nfi\n"
        ));
    }
    s.push_str(&format!(
        "phase ready\necho \"{{\\\"build\\\": {build}}}\" >{READY_MARKER}\n",
        build = spec.build
    ));
    s
}

/// A `write_files` entry with gzip+base64 content (keeps EC2's 16 KiB limit in reach).
fn write_file(path: &str, contents: &[u8], mode: &str) -> Value {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(contents).expect("gzip to memory");
    let data = gz.finish().expect("gzip to memory");
    json!({
        "path": path,
        "encoding": "gz+b64",
        "content": base64::engine::general_purpose::STANDARD.encode(data),
        "permissions": mode,
        "owner": "root:root",
    })
}

/// Single-quotes a string for the shell.
pub fn sh(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// A value for a Compose `.env` file.
fn dotenv_quote(v: &str) -> String {
    if v.chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_./:@+".contains(c))
    {
        v.to_string()
    } else {
        format!("'{}'", v.replace('\'', ""))
    }
}

fn is_local(registry: &str) -> bool {
    let host = registry.split(':').next().unwrap_or(registry);
    host == "localhost"
        || host.starts_with("127.")
        || host.starts_with("10.")
        || host.starts_with("192.168.")
        || host.starts_with("172.")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::EnvId;
    use crate::messages::env::{Power, Resources, RuntimeKind, TemplateFile, TemplateSnapshot};

    fn template() -> Template {
        let files = vec![
            TemplateFile {
                path: "metrom.toml".into(),
                contents: br#"name = "web"
image = "debian-12"
packages = ["git", "make"]
[resources]
vcpus = 1
memory = "1GiB"
disk = "4GiB"
[[repos]]
url = "git://10.0.0.1/app.git"
branch = "main"
path = "app"
[[repos]]
url = "svn://10.0.0.1/lib"
type = "svn"
revision = "42"
[params.PASSWORD]
default = "it's secret"
"#
                .to_vec(),
            },
            TemplateFile {
                path: "compose.yaml".into(),
                contents:
                    b"services:\n  web:\n    image: web:1\n    environment:\n      P: ${PASSWORD}\n"
                        .to_vec(),
            },
        ];
        crate::template::parse(files).unwrap()
    }

    fn spec(t: &Template) -> EnvSpec {
        EnvSpec {
            env_id: EnvId::parse("e-abc").unwrap(),
            name: "api-dev".into(),
            owner: "alice".into(),
            generation: 1,
            build: 2,
            power: Power::Running,
            runtime: RuntimeKind::Kvm,
            resources: Resources {
                vcpus: 1,
                memory_mb: 1024,
                disk_gb: 4,
            },
            template: TemplateSnapshot {
                name: "web".into(),
                version: t.digest.clone(),
                files: t.files.clone(),
            },
            params: vec![("PASSWORD".into(), "it's secret".into())],
            image: None,
            ssh_keys: vec!["ssh-ed25519 AAAA alice@laptop".into()],
            site: SiteSettings::default(),
            docker_archives: vec![],
        }
    }

    fn decode(v: &Value) -> String {
        let data = base64::engine::general_purpose::STANDARD
            .decode(v["content"].as_str().unwrap())
            .unwrap();
        let mut out = String::new();
        std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&data[..]), &mut out)
            .unwrap();
        out
    }

    #[test]
    fn user_data_is_cloud_config_with_everything_the_guest_needs() {
        let t = template();
        let s = spec(&t);
        let guest = GuestSettings {
            data_disk: Some("/dev/vdb".into()),
            registry: Some("192.168.1.1:5000".into()),
            ..Default::default()
        };
        let seed = seed(&s, &t, &guest).unwrap();
        assert!(seed.user_data.starts_with("#cloud-config\n"));
        let doc: Value = serde_json::from_str(&seed.user_data["#cloud-config\n".len()..]).unwrap();
        assert_eq!(doc["users"][0]["name"], "alice");
        assert_eq!(
            doc["users"][0]["ssh_authorized_keys"][0],
            "ssh-ed25519 AAAA alice@laptop"
        );
        assert!(
            doc.get("fs_setup").is_none(),
            "the script formats the data disk, only when blank"
        );
        let files = doc["write_files"].as_array().unwrap();
        let find = |p: &str| files.iter().find(|f| f["path"] == p).map(decode).unwrap();
        assert!(find("/opt/metrom/compose/compose.yaml").contains("${PASSWORD}"));
        assert!(find("/opt/metrom/compose/.env").contains("PASSWORD='its secret'"));
        let daemon: Value = serde_json::from_str(&find("/etc/docker/daemon.json")).unwrap();
        assert_eq!(daemon["registry-mirrors"][0], "http://192.168.1.1:5000");
        let script = find("/opt/metrom/provision.sh");
        let git = sh("git clone --branch 'main' 'git://10.0.0.1/app.git' '/home/alice/app'");
        assert!(
            script.contains(&format!("su - 'alice' -c {git}")),
            "{script}"
        );
        let svn =
            sh("svn checkout --non-interactive -r '42' 'svn://10.0.0.1/lib' '/home/alice/lib'");
        assert!(
            script.contains(&format!("su - 'alice' -c {svn}")),
            "{script}"
        );
        assert!(script.contains("dpkg -s 'git' 'make'"), "{script}");
        assert!(script.contains("if ! blkid '/dev/vdb'"), "{script}");
        assert!(
            script.contains("docker compose -p 'metrom-api-dev' up -d"),
            "{script}"
        );
        assert!(script.trim_end().ends_with(READY_MARKER), "{script}");
        assert!(seed.meta_data.contains("local-hostname: api-dev"));
        assert!(seed.meta_data.contains("instance-id: e-abc-2"));
    }

    #[test]
    fn shell_quoting_survives_quotes() {
        assert_eq!(sh("a'b"), "'a'\\''b'");
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("printf %s {}", sh("x'y \"$z`")))
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "x'y \"$z`");
    }
}
