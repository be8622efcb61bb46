//! `metrom up` / `metrom down`: an all-in-one Metrom on this machine — a
//! controller with its data under one folder and a local agent joined to it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use metrom_protocol::identity::{IdentityBundle, default_identity_path};
use metrom_protocol::messages::api::{Call, HostState, Reply};

use super::client::Client;
use super::output::{self, Format};
use crate::daemon::{InitArgs, init_cluster};

#[derive(Args, Debug)]
pub struct UpArgs {
    /// Folder for the controller's and the agent's data and logs
    /// [default: /var/lib/metrom-up for root (libvirt's QEMU must reach the VM
    /// disks in it), else $XDG_DATA_HOME/metrom or ~/.local/share/metrom].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// UDP port of the controller (on 127.0.0.1).
    #[arg(long, default_value_t = metrom_protocol::DEFAULT_QUIC_PORT)]
    pub port: u16,
    /// agent.toml for the local agent (copied into its data folder on first start).
    #[arg(long, value_name = "FILE")]
    pub agent_config: Option<PathBuf>,
    /// VM image for the sample environment [default: $METROM_SAMPLE_IMAGE, or the
    /// tiny test image /var/cache/metrom-tests/tiny.qcow2 when present].
    #[arg(long, value_name = "FILE")]
    pub sample_image: Option<PathBuf>,
    /// Do not create the sample environment.
    #[arg(long)]
    pub no_sample: bool,
}

/// The name of the sample environment `metrom up` creates.
pub const SAMPLE_ENV: &str = "sample";

#[derive(Args, Debug)]
pub struct DownArgs {
    /// The folder given to `metrom up`.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

fn data_dir(flag: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(d) = flag {
        return Ok(d);
    }
    // Root's home is closed to others, and QEMU (its own user) must reach the
    // agent's disks: root's all-in-one lives where system data lives.
    if running_as_root() {
        return Ok(PathBuf::from("/var/lib/metrom-up"));
    }
    let base = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .context("neither XDG_DATA_HOME nor HOME is set; pass --data-dir")?;
    Ok(base.join("metrom"))
}

fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    // /proc/self belongs to the process's effective user.
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

pub(super) async fn up(args: UpArgs, fmt: Format) -> anyhow::Result<()> {
    let dir = data_dir(args.data_dir)?;
    let ctl_dir = dir.join("controller");
    let agent_dir = dir.join("agent");
    let controller_bin = sibling_binary("metrom-controller")?;
    let agent_bin = sibling_binary("metrom-agent")?;
    let advertise = format!("127.0.0.1:{}", args.port);

    if !dir.exists() {
        // Others may traverse it, not list it: QEMU (its own user) must reach
        // the agent's disks below; the controller's folder inside stays 0700.
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o711))
            .with_context(|| format!("setting the mode of {}", dir.display()))?;
    }

    // 1. The cluster.
    let identity_path = ctl_dir.join("admin.identity");
    if !crate::pki::Pki::exists(&ctl_dir) {
        eprintln!("creating a cluster in {}", ctl_dir.display());
        init_cluster(&InitArgs {
            data_dir: ctl_dir.clone(),
            advertise: advertise.clone(),
            sans: vec![],
            listen: Some(([127, 0, 0, 1], args.port).into()),
            identity_out: Some(identity_path.clone()),
            force: false,
        })?;
    }
    let identity = IdentityBundle::load(&identity_path)?;

    // 2. The controller process.
    let ctl_pid = dir.join("controller.pid");
    if running(&ctl_pid).is_none() {
        eprintln!(
            "starting metrom-controller (log: {})",
            dir.join("controller.log").display()
        );
        let mut cmd = Command::new(&controller_bin);
        // The installer's HTTPS endpoint on a free loopback port: this
        // controller is advertised on 127.0.0.1 and serves this machine only.
        cmd.arg("serve")
            .arg("--data-dir")
            .arg(&ctl_dir)
            .args(["--https-listen", "127.0.0.1:0"]);
        spawn_daemon(cmd, &dir.join("controller.log"), &ctl_pid)?;
    }
    let client = wait_for_controller(&identity, &dir.join("controller.log")).await?;

    // 3. The local agent: join once, then run.
    let agent_identity = agent_dir.join("identity.toml");
    if let Some(cfg) = &args.agent_config {
        metrom_protocol::identity::create_private_dir(&agent_dir)?;
        std::fs::copy(cfg, agent_dir.join("agent.toml"))
            .with_context(|| format!("copying {}", cfg.display()))?;
    }
    if !agent_identity.exists() {
        let reply = client
            .call(Call::TokenCreate {
                ttl_secs: 600,
                uses: 1,
                labels: [("metrom-up".to_string(), "local".to_string())].into(),
            })
            .await?;
        let Reply::TokenCreated(token) = reply else {
            bail!("unexpected answer to token create")
        };
        eprintln!("joining the local agent");
        let status = Command::new(&agent_bin)
            .arg("join")
            .arg("--controller")
            .arg(&advertise)
            .arg("--token")
            .arg(&token.token)
            .arg("--data-dir")
            .arg(&agent_dir)
            .status()
            .with_context(|| format!("running {}", agent_bin.display()))?;
        if !status.success() {
            bail!("metrom-agent join failed ({status})");
        }
    }
    let agent_pid = dir.join("agent.pid");
    if running(&agent_pid).is_none() {
        eprintln!(
            "starting metrom-agent (log: {})",
            dir.join("agent.log").display()
        );
        let mut cmd = Command::new(&agent_bin);
        cmd.arg("run").arg("--data-dir").arg(&agent_dir);
        spawn_daemon(cmd, &dir.join("agent.log"), &agent_pid)?;
    }
    let host_id = IdentityBundle::load(&agent_identity)?
        .principal
        .strip_prefix("host:")
        .map(str::to_string)
        .context("the local agent's identity names no host")?;

    // 4. Wait until the local host is Ready.
    let deadline = Instant::now() + Duration::from_secs(30);
    let hosts = loop {
        let reply = client.call(Call::HostList).await?;
        let Reply::Hosts(hosts) = reply else {
            bail!("unexpected answer to host list")
        };
        if hosts
            .iter()
            .any(|h| h.id.as_str() == host_id && h.state == HostState::Ready)
        {
            break hosts;
        }
        if Instant::now() > deadline {
            bail!(
                "the local agent did not become Ready within 30s; see {}",
                dir.join("agent.log").display()
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    // 5. A sample environment, when this host can run one.
    let sample = if args.no_sample {
        None
    } else {
        let host = hosts
            .iter()
            .find(|h| h.id.as_str() == host_id)
            .expect("ready host");
        match sample_environment(
            &client,
            host,
            args.sample_image.clone(),
            &dir.join("agent.log"),
            fmt,
        )
        .await
        {
            Ok(s) => s,
            Err(e) => {
                eprintln!(
                    "no sample environment: {}",
                    crate::daemon::format_anyhow(&e)
                );
                None
            }
        }
    };
    client.close().await;

    // 6. Make the CLI find the identity without flags, unless another one is there.
    let default = default_identity_path();
    let mut export_hint = true;
    if let Some(p) = &default {
        if !p.exists() {
            identity.save(p)?;
            export_hint = false;
        } else if let Ok(existing) = IdentityBundle::load(p) {
            export_hint = existing.ca_cert != identity.ca_cert;
        }
    }
    match fmt {
        Format::Json => output::print_json(&serde_json::json!({
            "data_dir": dir,
            "controller": advertise,
            "identity": identity_path,
            "host": host_id,
            "hosts": hosts,
            "sample": sample,
        })),
        Format::Table => {
            println!("Metrom is up on this machine.");
            println!(
                "  controller  {advertise}  (data {}, log {})",
                ctl_dir.display(),
                dir.join("controller.log").display()
            );
            println!(
                "  agent       host {host_id}  (data {}, log {})",
                agent_dir.display(),
                dir.join("agent.log").display()
            );
            println!("  identity    {}", identity_path.display());
            if let Some(env) = &sample {
                let addr = env
                    .detail
                    .addresses
                    .first()
                    .cloned()
                    .unwrap_or_else(|| "-".into());
                let ports: Vec<String> = env
                    .detail
                    .ports
                    .iter()
                    .map(|p| format!("{}→127.0.0.1:{}", p.guest_port, p.host_port))
                    .collect();
                println!(
                    "  sample      environment {SAMPLE_ENV} {} at {addr} {}",
                    env.state,
                    ports.join(" ")
                );
            }
            println!();
            if export_hint {
                println!(
                    "Use it:\n  export METROM_IDENTITY={}",
                    identity_path.display()
                );
            } else {
                println!("The CLI uses it by default (~/.config/metrom/identity). Try:");
            }
            println!("  metrom status\n  metrom host list\n  metrom down        # stop it again");
        }
    }
    Ok(())
}

pub(super) fn down(args: DownArgs) -> anyhow::Result<()> {
    let dir = data_dir(args.data_dir)?;
    let mut stopped = false;
    for name in ["agent", "controller"] {
        let pid_file = dir.join(format!("{name}.pid"));
        if let Some(pid) = running(&pid_file) {
            eprintln!("stopping metrom-{name} (pid {pid})");
            terminate(pid, Duration::from_secs(10));
            stopped = true;
        }
        let _ = std::fs::remove_file(&pid_file);
    }
    if !stopped {
        eprintln!("nothing was running from {}", dir.display());
    }
    Ok(())
}

/// The starter template the sample environment uses, built into the binary.
const MINIMAL_TEMPLATE: [(&str, &[u8]); 2] = [
    (
        "compose.yaml",
        include_bytes!("../../../templates/minimal/compose.yaml"),
    ),
    (
        "metrom.toml",
        include_bytes!("../../../templates/minimal/metrom.toml"),
    ),
];

/// The agent's last "kvm runtime is not available" reason in its log.
fn kvm_runtime_failure(agent_log: &Path) -> Option<String> {
    const MARK: &str = "the kvm runtime is not available: ";
    let log = std::fs::read_to_string(agent_log).ok()?;
    let line = log.lines().rev().find(|l| l.contains(MARK))?;
    Some(line[line.find(MARK)? + MARK.len()..].to_string())
}

/// Creates (once) and waits for the sample environment on a kvm host with an
/// image to boot. Returns None, with a hint, when it cannot.
async fn sample_environment(
    client: &Client,
    host: &metrom_protocol::messages::api::HostView,
    image: Option<PathBuf>,
    agent_log: &Path,
    fmt: Format,
) -> anyhow::Result<Option<metrom_protocol::messages::api::EnvView>> {
    use metrom_protocol::messages::api::{EnvCreate, ErrorKind};
    use metrom_protocol::messages::env::{RuntimeKind, TemplateFile};
    if !host.facts.runtimes.contains(&RuntimeKind::Kvm) {
        let libvirt = &host.facts.capabilities.libvirt;
        match kvm_runtime_failure(agent_log) {
            // libvirt answers, yet the agent could not open the runtime: say why.
            Some(why) if libvirt.available => {
                eprintln!("no sample environment: the agent could not open the kvm runtime: {why}")
            }
            _ => eprintln!(
                "no sample environment: this host offers no kvm runtime ({}); start libvirtd and run `metrom up` again",
                libvirt.detail
            ),
        }
        return Ok(None);
    }
    match client
        .call(Call::EnvShow {
            name: SAMPLE_ENV.into(),
        })
        .await
    {
        Ok(Reply::Env(env)) => return Ok(Some(env)),
        Err(super::client::ClientError::Api(e)) if e.kind == ErrorKind::NotFound => {}
        Err(e) => return Err(e.into()),
        Ok(_) => bail!("unexpected answer to env show"),
    }
    let image = image
        .or_else(|| std::env::var_os("METROM_SAMPLE_IMAGE").map(PathBuf::from))
        .or_else(|| {
            Some(PathBuf::from("/var/cache/metrom-tests/tiny.qcow2")).filter(|p| p.exists())
        });
    let Some(image) = image.filter(|p| p.exists()) else {
        eprintln!(
            "no sample environment: no VM image to boot; pass --sample-image FILE (qcow2 or raw), \
             or run tests/setup.sh, which builds a tiny one"
        );
        return Ok(None);
    };
    let Reply::Images(images) = client.call(Call::ImageList).await? else {
        bail!("unexpected answer to image list")
    };
    if !images.iter().any(|i| i.name == "tiny") {
        eprintln!("importing {} as image tiny", image.display());
        let size = std::fs::metadata(&image)?.len();
        let mut head = [0u8; 4];
        std::io::Read::read_exact(&mut std::fs::File::open(&image)?, &mut head)?;
        let format = if &head == b"QFI\xfb" { "qcow2" } else { "raw" }.to_string();
        client
            .upload(
                Call::ImageImport {
                    name: "tiny".into(),
                    size,
                    format,
                },
                &image,
                size,
                |_| {},
            )
            .await?;
    }
    let files = MINIMAL_TEMPLATE
        .iter()
        .map(|(p, c)| TemplateFile {
            path: p.to_string(),
            contents: c.to_vec(),
        })
        .collect();
    client.call(Call::TemplatePush { files }).await?;
    eprintln!("creating the sample environment (a tiny VM)");
    let create = EnvCreate {
        name: SAMPLE_ENV.into(),
        template: "minimal".into(),
        version: None,
        params: Default::default(),
        host: Some(host.id.clone()),
        labels: Default::default(),
    };
    client.call(Call::EnvCreate(create)).await?;
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let Reply::Env(env) = client
            .call(Call::EnvShow {
                name: SAMPLE_ENV.into(),
            })
            .await?
        else {
            bail!("unexpected answer to env show")
        };
        match env.state.as_str() {
            "Running" => return Ok(Some(env)),
            "Failed" => bail!(
                "the sample environment failed: {}",
                env.reason.unwrap_or_default()
            ),
            _ if Instant::now() > deadline => bail!(
                "the sample environment is still {} after 10 minutes",
                env.state
            ),
            _ => {}
        }
        if fmt == Format::Table {
            eprint!(".");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// A binary next to this one, else from PATH.
fn sibling_binary(name: &str) -> anyhow::Result<PathBuf> {
    if let Ok(me) = std::env::current_exe() {
        let p = me.with_file_name(name);
        if p.exists() {
            return Ok(p);
        }
    }
    for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
        let p = dir.join(name);
        if p.exists() {
            return Ok(p);
        }
    }
    bail!(
        "cannot find {name} next to metrom or on PATH; build the workspace first (cargo build --release)"
    )
}

/// The pid in a pid file, if that process is alive.
fn running(pid_file: &Path) -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(pid_file)
        .ok()?
        .trim()
        .parse()
        .ok()?;
    (pid > 0 && signal(pid, 0)).then_some(pid)
}

/// Sends a signal; signal 0 only checks that the process exists.
#[allow(unsafe_code)]
fn signal(pid: i32, sig: i32) -> bool {
    // SAFETY: kill(2) takes plain integers and has no memory effects.
    unsafe { libc::kill(pid, sig) == 0 }
}

fn spawn_daemon(mut cmd: Command, log: &Path, pid_file: &Path) -> anyhow::Result<()> {
    use std::os::unix::process::CommandExt;
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening {}", log.display()))?;
    let err = out.try_clone()?;
    let child = cmd
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0)
        .spawn()
        .with_context(|| format!("starting {:?}", cmd.get_program()))?;
    std::fs::write(pid_file, child.id().to_string())?;
    Ok(())
}

fn terminate(pid: i32, grace: Duration) {
    signal(pid, libc::SIGTERM);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if !signal(pid, 0) {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    signal(pid, libc::SIGKILL);
}

async fn wait_for_controller(identity: &IdentityBundle, log: &Path) -> anyhow::Result<Client> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match Client::connect(identity).await {
            Ok(c) => match c.call(Call::Status).await {
                Ok(_) => return Ok(c),
                Err(e) if Instant::now() > deadline => return Err(e.into()),
                Err(_) => c.close().await,
            },
            Err(e) if Instant::now() > deadline => {
                return Err(anyhow::Error::new(e).context(format!(
                    "the controller did not come up; see {}",
                    log.display()
                )));
            }
            Err(_) => {}
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
