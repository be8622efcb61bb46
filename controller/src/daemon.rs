//! `metrom-controller`: `init` creates a cluster in a data directory, `serve`
//! runs the controller.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use jiff::Timestamp;
use metrom_protocol::identity::{IdentityBundle, create_private_dir};
use metrom_protocol::ids::{Principal, random_string};
use tracing::info;

use crate::config::Config;
use crate::pki::Pki;
use crate::state::{Controller, META_ADVERTISE, META_CLUSTER};
use crate::store::{Role, Store, UserRecord};

/// Default data directory of the controller.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/metrom";
/// Name of the first administrator created by `init`.
pub const ADMIN_USER: &str = "admin";

#[derive(Parser, Debug)]
#[command(
    name = "metrom-controller",
    version,
    about = "Metrom controller: the source of truth for hosts, templates and environments",
    long_about = "Metrom controller: the source of truth for hosts, templates and environments.\n\n\
        Start with `init` (once), then `serve`. Operators talk to it with the `metrom` CLI,\n\
        agents with `metrom-agent`; both over mutually authenticated QUIC (UDP 7443)."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create a new cluster: its CA, the controller's certificate, and an admin identity.
    Init(InitArgs),
    /// Run the controller.
    Serve(ServeArgs),
}

#[derive(Args, Debug)]
pub struct InitArgs {
    /// Where the controller keeps its CA, store and configuration.
    #[arg(long, default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    /// The address agents and the CLI will use to reach the controller (HOST:PORT).
    #[arg(long, value_name = "HOST:PORT")]
    pub advertise: String,
    /// Another DNS name or IP address the controller's certificate is valid for (repeatable).
    #[arg(long = "san", value_name = "NAME")]
    pub sans: Vec<String>,
    /// UDP address to listen on, written into controller.toml [default: 0.0.0.0:<advertised port>].
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Where to write the admin identity bundle [default: DATA_DIR/admin.identity].
    #[arg(long, value_name = "FILE")]
    pub identity_out: Option<PathBuf>,
    /// Wipe an initialised data directory and create a new cluster (every host must join again).
    #[arg(long)]
    pub force: bool,
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// The data directory made by `init`.
    #[arg(long, default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    /// Configuration file [default: DATA_DIR/controller.toml if present].
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// UDP address to listen on (overrides the config file).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Address written into identity bundles and join commands (overrides the config file).
    #[arg(long, value_name = "HOST:PORT")]
    pub advertise: Option<String>,
    /// TCP address of the HTTPS endpoint for the installer, e.g. 0.0.0.0:7444 (overrides the config file).
    #[arg(long, value_name = "ADDR")]
    pub https_listen: Option<SocketAddr>,
    /// How often agents heartbeat, e.g. 5s (overrides the config file).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub heartbeat_interval: Option<std::time::Duration>,
    /// Silence after which a host is Unreachable, e.g. 20s (overrides the config file).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub heartbeat_ttl: Option<std::time::Duration>,
}

fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    metrom_protocol::duration::parse_duration(s).map_err(|e| e.to_string())
}

pub fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    crate::init_logging("info");
    metrom_protocol::tls::install_default_provider();
    let result = match cli.command {
        Command::Init(args) => init(&args),
        Command::Serve(args) => serve(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", format_anyhow(&e));
            std::process::ExitCode::FAILURE
        }
    }
}

/// `a: b: c` for an anyhow chain.
pub fn format_anyhow(e: &anyhow::Error) -> String {
    e.chain()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(": ")
}

/// Creates a cluster in `args.data_dir`. Returns the admin identity path.
pub fn init(args: &InitArgs) -> anyhow::Result<()> {
    let path = init_cluster(args)?;
    let dir = &args.data_dir;
    let pki = Pki::load(dir)?;
    println!("Initialised a new Metrom cluster in {}", dir.display());
    println!("  CA pin:          sha256:{}", pki.ca_pin());
    println!("  advertised as:   {}", args.advertise);
    println!("  admin identity:  {}", path.display());
    println!();
    println!("Next:");
    println!("  metrom-controller serve --data-dir {}", dir.display());
    println!("  export METROM_IDENTITY={}", path.display());
    println!(
        "  metrom host join-command   # prints the line to paste on each new box (HTTPS, TCP {})",
        crate::http::DEFAULT_HTTPS_PORT
    );
    Ok(())
}

/// The work of `init`, without printing; used by `metrom up` too.
pub fn init_cluster(args: &InitArgs) -> anyhow::Result<PathBuf> {
    let dir = &args.data_dir;
    let (host, port) = split_host_port(&args.advertise)?;
    if Pki::exists(dir) {
        if !args.force {
            bail!(
                "{} is already initialised; use --force to wipe it and create a new cluster (every host would have to join again)",
                dir.display()
            );
        }
        for sub in ["pki", "store", "admin.identity", "controller.toml"] {
            let p = dir.join(sub);
            if p.is_dir() {
                std::fs::remove_dir_all(&p).with_context(|| format!("removing {}", p.display()))?;
            } else if p.exists() {
                std::fs::remove_file(&p).with_context(|| format!("removing {}", p.display()))?;
            }
        }
    }
    create_private_dir(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut sans = vec![host.clone()];
    sans.extend(args.sans.iter().cloned());
    let cluster = random_string(6);
    let pki = Pki::create(dir, &cluster, &sans)?;

    let store = Store::open(dir)?;
    store.meta.put(META_ADVERTISE, &args.advertise)?;
    store.meta.put(META_CLUSTER, &cluster)?;
    let config = Config::default();
    let principal = Principal::User(ADMIN_USER.to_string());
    let (issued, key_pem) = pki.issue_with_key(&principal, config.user_cert_validity)?;
    store.users.put(
        ADMIN_USER,
        &UserRecord {
            name: ADMIN_USER.into(),
            role: Role::Admin,
            created_at: Timestamp::now(),
            cert_serials: vec![issued.serial_hex],
            group: None,
            ssh_keys: vec![],
        },
    )?;
    store.flush_blocking()?;

    let listen = args
        .listen
        .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], port)));
    let config_path = Config::default_path(dir);
    let https_example = format!("{host}:{}", crate::http::DEFAULT_HTTPS_PORT);
    let text = format!(
        "# Metrom controller configuration. Every key is optional; see docs/operations.md.\n\
         listen = \"{listen}\"\n\
         # advertise = \"{}\"\n\
         # https_listen = \"0.0.0.0:7444\"        # the installer's HTTPS endpoint (TCP)\n\
         # https_advertise = \"{https}\"  # HOST:PORT boxes use in join commands\n\
         # agent_binaries_dir = \"/srv/metrom/agents\"  # metrom-agent-<arch> files to serve\n\
         # heartbeat_interval = \"5s\"\n\
         # heartbeat_ttl = \"20s\"\n\
         # policy_interval = \"15s\"\n\
         # Site policies and caps, and prices for `metrom report usage` (docs/policies.md):\n\
         # [policies]\n\
         # ttl = \"30d\"\n\
         # max_ttl = \"90d\"\n\
         # max_extension = \"30d\"\n\
         # idle = \"2h\"\n\
         # [pricing]\n\
         # currency = \"EUR\"\n\
         # vcpu_hour = 0.02\n\
         # Cloud brokerage: sync and retry timing, the instance-type and price table (docs/cloud.md):\n\
         # [cloud]\n\
         # sync_interval = \"60s\"\n\
         # currency = \"USD\"\n\
         # [[cloud.instance_types]]\n\
         # name = \"t3.micro\"\n\
         # vcpus = 2\n\
         # memory = \"1GiB\"\n\
         # hourly = 0.0104\n",
        args.advertise,
        https = https_example,
    );
    std::fs::write(&config_path, text)
        .with_context(|| format!("writing {}", config_path.display()))?;

    let bundle = IdentityBundle {
        controller: args.advertise.clone(),
        principal: principal.common_name(),
        ca_cert: pki.ca_pem().to_string(),
        cert: issued.cert_pem,
        key: key_pem,
    };
    let path = args
        .identity_out
        .clone()
        .unwrap_or_else(|| dir.join("admin.identity"));
    bundle.save(&path)?;
    Ok(path)
}

/// Splits `HOST:PORT` (or `[v6]:PORT`).
pub fn split_host_port(s: &str) -> anyhow::Result<(String, u16)> {
    let (host, port) = s
        .rsplit_once(':')
        .with_context(|| format!("'{s}' is not HOST:PORT (for example 10.0.0.5:7443)"))?;
    let port: u16 = port
        .parse()
        .with_context(|| format!("'{s}': the port must be a number"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        bail!("'{s}' has no host");
    }
    Ok((host.to_string(), port))
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config_path = args.config.clone().or_else(|| {
        let p = Config::default_path(&args.data_dir);
        p.exists().then_some(p)
    });
    let mut config = match &config_path {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    };
    if let Some(l) = args.listen {
        config.listen = l;
    }
    if let Some(a) = args.advertise {
        config.advertise = Some(a);
    }
    if let Some(l) = args.https_listen {
        config.https_listen = l;
    }
    if let Some(d) = args.heartbeat_interval {
        config.heartbeat_interval = d;
    }
    if let Some(d) = args.heartbeat_ttl {
        config.heartbeat_ttl = d;
    }
    config.check()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(&args.data_dir, config))
}

async fn run(data_dir: &Path, config: Config) -> anyhow::Result<()> {
    let ctrl = Controller::open(data_dir, config)?;
    let endpoint = crate::server::bind(&ctrl)?;
    let https = crate::http::bind(&ctrl).await?;
    info!(
        listen = %endpoint.local_addr()?,
        https = %https.local_addr()?,
        advertise = %ctrl.advertise,
        data_dir = %data_dir.display(),
        "metrom-controller {} serving",
        metrom_protocol::BUILD_VERSION
    );
    // One signal stops both endpoints; each drains its own connections.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let https_task = tokio::spawn(crate::http::run(ctrl.clone(), https, async move {
        let mut stopped = stopped;
        let _ = stopped.wait_for(|s| *s).await;
    }));
    crate::server::run(ctrl, endpoint, async move {
        shutdown_signal().await;
        let _ = stop.send(true);
    })
    .await;
    let _ = https_task.await;
    Ok(())
}

/// Completes on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => info!("SIGTERM received"),
        _ = int.recv() => info!("SIGINT received"),
    }
}
