//! `metrom-agent`: join a controller once, then run.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use metrom_agent::config::AgentConfig;
use metrom_agent::ledger::Ledger;
use metrom_agent::link::Link;
use metrom_agent::runtime::Runtimes;
use metrom_agent::session::{Agent, RunError};
use metrom_agent::work::Work;
use metrom_agent::{enroll, error_chain, facts};

/// Default data directory of the agent.
const DEFAULT_DATA_DIR: &str = "/var/lib/metrom-agent";
/// Exit code when the host was revoked (systemd: RestartPreventExitStatus=3).
const EXIT_REVOKED: u8 = 3;

#[derive(Parser, Debug)]
#[command(
    name = "metrom-agent",
    version,
    about = "Metrom agent: makes this Linux box a hypervisor host of a Metrom controller",
    long_about = "Metrom agent: makes this Linux box a hypervisor host of a Metrom controller.\n\n\
        Enroll once with `join` and a token from `metrom token create`, then `run` (under\n\
        systemd, the installer does both). The agent reports this box's CPU, memory, disks\n\
        and capabilities, runs the environments the controller places here, and keeps them\n\
        running while the controller is away.",
    after_help = "Exit codes: 0 ok, 1 error, 3 this host was revoked (do not restart; join again)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Enroll this host with a join token (once).
    Join {
        /// The controller's QUIC address.
        #[arg(long, value_name = "HOST:PORT")]
        controller: String,
        /// The join token, `mtj1.…` (or set METROM_JOIN_TOKEN).
        #[arg(long, env = "METROM_JOIN_TOKEN", hide_env_values = true)]
        token: String,
        /// Where the agent keeps its identity and state.
        #[arg(long, default_value = DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
        /// The name this host gets [default: the system hostname].
        #[arg(long)]
        hostname: Option<String>,
        /// Enroll again even though this data directory already holds an identity.
        #[arg(long)]
        force: bool,
    },
    /// Run the agent: connect to the controller and run environments.
    Run {
        #[arg(long, default_value = DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
        /// Configuration file [default: DATA_DIR/agent.toml if present].
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Print the facts this agent would report about this host, as JSON.
    Facts {
        #[arg(long, default_value = DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    // libvirt prints every error to stderr by default; we report them ourselves.
    virt::error::clear_error_callback();
    metrom_protocol::tls::install_default_provider();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        match cli.command {
            Command::Join { controller, token, data_dir, hostname, force } => {
                let hostname = hostname
                    .or_else(|| sysinfo::System::host_name().ok())
                    .unwrap_or_else(|| "unnamed".into());
                match enroll::join(&controller, &token, &data_dir, &hostname, force).await {
                    Ok(j) => {
                        println!("joined as host {} (identity {})", j.host_id, j.identity_path.display());
                        println!("start the agent: metrom-agent run --data-dir {}", data_dir.display());
                        ExitCode::SUCCESS
                    }
                    Err(e) => fail(&e),
                }
            }
            Command::Run { data_dir, config } => {
                let config = match AgentConfig::load(config.as_deref(), &data_dir) {
                    Ok(c) => c,
                    Err(e) => return fail(&e),
                };
                let link = std::sync::Arc::new(Link::default());
                let runtimes = Runtimes::for_host(&data_dir, &config, link.clone()).await;
                let ledger = match Ledger::open(&data_dir) {
                    Ok(l) => l,
                    Err(e) => return fail(&e),
                };
                let work = Work::new(ledger, runtimes, config.provision_timeout);
                let agent = match Agent::open(&data_dir, config, work.clone(), link) {
                    Ok(a) => a,
                    Err(e) => return fail(&e),
                };
                work.start();
                tracing::info!(data_dir = %data_dir.display(), "metrom-agent {} starting", metrom_protocol::BUILD_VERSION);
                match metrom_agent::session::run(agent, shutdown_signal()).await {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e @ RunError::Revoked(_)) => {
                        eprintln!("error: {}", error_chain(&e));
                        ExitCode::from(EXIT_REVOKED)
                    }
                    Err(e) => fail(&e),
                }
            }
            Command::Facts { data_dir, config } => {
                let config = match AgentConfig::load(config.as_deref(), &data_dir) {
                    Ok(c) => c,
                    Err(e) => return fail(&e),
                };
                let f = facts::gather(&data_dir, &config.libvirt_uri, &config.docker_socket).await;
                println!("{}", serde_json::to_string_pretty(&f).expect("facts serialize"));
                ExitCode::SUCCESS
            }
        }
    })
}

fn fail(e: &(dyn std::error::Error + 'static)) -> ExitCode {
    eprintln!("error: {}", error_chain(e));
    ExitCode::FAILURE
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr)
        .try_init();
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
}
