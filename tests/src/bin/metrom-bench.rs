//! `metrom-bench`: load and timing benchmarks against real processes.
//! Each subcommand prints its figures; docs/benchmarks.md records them with
//! the command that produced them.

use std::time::Duration;

use clap::{Parser, Subcommand};
use metrom_controller::scheduler::Strategy;
use metrom_tests::bench;

#[derive(Parser)]
#[command(
    name = "metrom-bench",
    about = "Metrom benchmarks against real processes on loopback"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Join N simulated agents to a real controller; measure its CPU, memory and reconnect time.
    Agents {
        /// How many agents.
        #[arg(long, default_value_t = 1000)]
        count: usize,
        /// How long to measure the steady state.
        #[arg(long, default_value = "60s", value_parser = parse_duration)]
        measure: Duration,
        /// Heartbeat interval the controller hands out.
        #[arg(long, default_value = "5s")]
        heartbeat: String,
        /// Agents per UDP socket (QUIC endpoint) on the bench side.
        #[arg(long, default_value_t = 50)]
        per_socket: usize,
    },
    /// Place N environments on a synthetic cluster with the controller's scheduler (one thread).
    Schedule {
        /// Hosts in the synthetic cluster.
        #[arg(long, default_value_t = 10_000)]
        hosts: usize,
        /// Environments to place with place_and_commit.
        #[arg(long, default_value_t = 100_000)]
        envs: usize,
        /// binpack or spread.
        #[arg(long, default_value = "binpack")]
        strategy: Strategy,
    },
    /// Create-to-Running of the tiny VM through Metrom vs `virsh create`; Debian create-to-healthy.
    Kvm {
        /// Runs of each.
        #[arg(long, default_value_t = 3)]
        reps: usize,
        /// Also time the Debian image to healthy compose services.
        #[arg(long)]
        debian: bool,
    },
    /// End-to-end env create rate against a real controller (durable writes), concurrent clients.
    Creates {
        /// Concurrent clients, each with its own QUIC connection.
        #[arg(long, default_value_t = 16)]
        clients: usize,
        /// How many environments to create.
        #[arg(long, default_value_t = 2000)]
        count: usize,
    },
    /// Bring-up time of a two-service template on the real Docker runtime
    /// (env create → Running, services healthy) against `docker-compose up -d`
    /// on the same compose file and images. Needs tests/setup.sh's registry.
    DockerUp {
        /// Repetitions of each, alternating.
        #[arg(long, default_value_t = 5)]
        reps: usize,
    },
    /// Launch N environments on an EC2-compatible server (moto_server on
    /// loopback, from tests/setup.sh) through Metrom; time until all are Running.
    Cloud {
        /// How many environments.
        #[arg(long, default_value_t = 50)]
        count: usize,
        /// Concurrent clients creating them.
        #[arg(long, default_value_t = 8)]
        clients: usize,
        /// `[cloud] poll_interval` of the controller [default: the controller's, 2s].
        #[arg(long)]
        poll_interval: Option<String>,
    },
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    metrom_protocol::duration::parse_duration(s).map_err(|e| e.to_string())
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    metrom_protocol::tls::install_default_provider();
    match cli.command {
        Command::Agents {
            count,
            measure,
            heartbeat,
            per_socket,
        } => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            rt.block_on(bench::agents::run(count, measure, &heartbeat, per_socket))
        }
        Command::Schedule {
            hosts,
            envs,
            strategy,
        } => bench::schedule::run(hosts, envs, strategy),
        Command::Kvm { reps, debian } => bench::kvm::run(reps, debian),
        Command::Creates { clients, count } => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            rt.block_on(bench::creates::run(clients, count))
        }
        Command::DockerUp { reps } => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            rt.block_on(bench::docker::run(reps.max(1)))
        }
        Command::Cloud {
            count,
            clients,
            poll_interval,
        } => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            rt.block_on(bench::cloud::run(
                count.max(1),
                clients.max(1),
                poll_interval.as_deref(),
            ))
        }
    }
}
