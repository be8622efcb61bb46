//! `metrom`: the operator's and developer's command line.

mod audit;
pub mod client;
mod cloud;
mod envs;
mod hosts;
mod images;
mod join_command;
pub mod output;
mod templates;
mod up;
mod users;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use metrom_protocol::identity::IdentityBundle;
use metrom_protocol::messages::api::{Call, Reply};

use client::{Client, ClientError};
use output::Format;

#[derive(Parser, Debug)]
#[command(
    name = "metrom",
    version,
    about = "Metrom: ready-to-code development environments on your own servers",
    long_about = "Metrom: ready-to-code development environments on your own servers.\n\n\
        Every command except `up` and `down` talks to a controller with an identity bundle\n\
        (controller address, CA, your certificate and key): --identity FILE, or $METROM_IDENTITY,\n\
        or ~/.config/metrom/identity.\n\n\
        Quick start on one machine: `metrom up` starts a controller and a local agent.",
    after_help = "Exit codes: 0 ok, 1 internal error, 2 invalid argument, 3 not found, 4 already exists,\n\
        5 permission denied, 6 failed precondition, 7 no capacity, 8 quota exceeded,\n\
        9 controller unavailable, 10 protocol version mismatch."
)]
pub struct Cli {
    /// Identity bundle to use.
    #[arg(long, global = true, env = "METROM_IDENTITY", value_name = "FILE")]
    pub identity: Option<PathBuf>,
    /// Output format.
    #[arg(short = 'o', long, global = true, value_enum, default_value = "table")]
    pub output: Format,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Controller version, uptime and hosts by state.
    Status,
    /// Hosts: list, inspect, cordon, revoke.
    #[command(subcommand)]
    Host(HostCommand),
    /// Join tokens that let boxes enroll as hosts.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Environment templates: push, list, show, versions, pull.
    #[command(subcommand)]
    Template(templates::TemplateCommand),
    /// Development environments: create, list, show, start, stop, rebuild, delete, extend, events.
    #[command(subcommand)]
    Env(envs::EnvCommand),
    /// VM base images: import, list, delete.
    #[command(subcommand)]
    Image(images::ImageCommand),
    /// Users and their roles: add (writes their identity), list, remove, set-role.
    #[command(subcommand)]
    User(users::UserCommand),
    /// Quotas per user or group: environments, vCPUs, memory, disk.
    #[command(subcommand)]
    Quota(users::QuotaCommand),
    /// The audit log: every change and refusal, and every policy action.
    Audit(audit::AuditArgs),
    /// Reports: usage (environment-hours, hours stopped by policy, savings).
    #[command(subcommand)]
    Report(audit::ReportCommand),
    /// Cloud accounts and every instance in their regions: add, list, remove, sync, instances, gc.
    #[command(subcommand)]
    Cloud(cloud::CloudCommand),
    /// Start an all-in-one Metrom on this machine: a controller and a local agent joined to it.
    Up(up::UpArgs),
    /// Stop what `metrom up` started (environments' VMs and containers keep running).
    Down(up::DownArgs),
}

#[derive(Subcommand, Debug)]
pub enum HostCommand {
    /// List hosts with their state, capacity and capabilities.
    List,
    /// Everything known about one host.
    Show { id: String },
    /// Stop placing new environments on a host (its environments keep running).
    Cordon { id: String },
    /// Let a cordoned host receive environments again.
    Uncordon { id: String },
    /// Revoke a host's certificate: its connection is closed at once and it can never reconnect.
    Revoke { id: String },
    /// Create a join token and print the one line that makes an idle box a host
    /// (curl … /install.sh | sudo sh -s - --token …; see docs/installer.md).
    JoinCommand(join_command::JoinCommandArgs),
}

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Create a join token: `mtj1.<id>.<secret>.<ca-pin>` (shown once).
    Create(TokenCreateArgs),
    /// List join tokens and how much each has been used.
    List,
    /// Revoke a join token so it can no longer be used.
    Revoke { id: String },
}

#[derive(Args, Debug)]
pub struct TokenCreateArgs {
    /// How long the token stays valid (e.g. 30m, 1h, 7d).
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    pub ttl: std::time::Duration,
    /// How many hosts may join with it.
    #[arg(long, default_value_t = 1)]
    pub uses: u32,
    /// A label every host joining with this token gets (repeatable), e.g. --label rack=b2.
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
}

pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    metrom_protocol::duration::parse_duration(s).map_err(|e| e.to_string())
}

pub fn parse_label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("'{s}' is not KEY=VALUE")),
    }
}

/// Entry point of the `metrom` binary.
pub fn main() -> ExitCode {
    default_sigpipe();
    let cli = Cli::parse();
    crate::init_logging("warn");
    metrom_protocol::tls::install_default_provider();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(CliError::Client(e)) => {
            eprintln!("error: {}", crate::error_chain(&e));
            ExitCode::from(e.exit_code() as u8)
        }
        Err(CliError::Other(e)) => {
            eprintln!("error: {}", crate::daemon::format_anyhow(&e));
            ExitCode::FAILURE
        }
    }
}

/// A CLI whose output is piped into `head` ends quietly when the pipe closes,
/// as other Unix tools do, instead of panicking in `println!` (Rust ignores
/// SIGPIPE by default).
#[allow(unsafe_code)]
fn default_sigpipe() {
    // SAFETY: called first thing in main, before any thread exists; SIG_DFL
    // is a valid disposition for SIGPIPE.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// A CLI failure: from the controller (with its exit code) or local.
#[derive(Debug)]
pub enum CliError {
    Client(ClientError),
    Other(anyhow::Error),
}

impl From<ClientError> for CliError {
    fn from(e: ClientError) -> Self {
        CliError::Client(e)
    }
}

impl From<anyhow::Error> for CliError {
    fn from(e: anyhow::Error) -> Self {
        CliError::Other(e)
    }
}

impl From<metrom_protocol::messages::api::ApiError> for CliError {
    fn from(e: metrom_protocol::messages::api::ApiError) -> Self {
        CliError::Client(ClientError::Api(e))
    }
}

async fn run(cli: Cli) -> Result<(), CliError> {
    let fmt = cli.output;
    match cli.command {
        Command::Up(args) => return up::up(args, fmt).await.map_err(CliError::Other),
        Command::Down(args) => return up::down(args).map_err(CliError::Other),
        _ => {}
    }
    let path = client::identity_path(cli.identity.as_deref())?;
    let identity = IdentityBundle::load(&path).map_err(ClientError::from)?;
    let client = Client::connect(&identity).await?;
    let result = command(&client, cli.command, fmt).await;
    client.close().await;
    result
}

async fn command(client: &Client, command: Command, fmt: Format) -> Result<(), CliError> {
    match command {
        Command::Status => hosts::status(client.call(Call::Status).await?, fmt),
        Command::Host(cmd) => hosts::host(client, cmd, fmt).await,
        Command::Token(cmd) => hosts::token(client, cmd, fmt).await,
        Command::Template(cmd) => templates::run(client, cmd, fmt).await,
        Command::Env(cmd) => envs::run(client, cmd, fmt).await,
        Command::Image(cmd) => images::run(client, cmd, fmt).await,
        Command::User(cmd) => users::user(client, cmd, fmt).await,
        Command::Quota(cmd) => users::quota(client, cmd, fmt).await,
        Command::Audit(args) => audit::audit(client, args, fmt).await,
        Command::Report(cmd) => audit::report(client, cmd, fmt).await,
        Command::Cloud(cmd) => cloud::run(client, cmd, fmt).await,
        Command::Up(_) | Command::Down(_) => unreachable!("handled before connecting"),
    }
}

/// Prints a `Done` reply (or its JSON).
pub fn done(reply: Reply, fmt: Format) -> Result<(), CliError> {
    match reply {
        Reply::Done { message } => {
            match fmt {
                Format::Json => output::print_json(&serde_json::json!({ "message": message })),
                Format::Table => println!("{message}"),
            }
            Ok(())
        }
        other => Err(unexpected(other)),
    }
}

/// The controller answered with the wrong kind of reply.
pub fn unexpected(reply: Reply) -> CliError {
    CliError::Other(anyhow::anyhow!(
        "unexpected answer from the controller ({:?}); are the CLI and controller the same version?",
        std::mem::discriminant(&reply)
    ))
}

/// Labels from repeated `--label k=v` flags.
pub fn label_map(labels: Vec<(String, String)>) -> BTreeMap<String, String> {
    labels.into_iter().collect()
}
