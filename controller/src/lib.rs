//! The Metrom controller: the source of truth for hosts, templates and
//! environments, and the server behind the `metrom` CLI.

pub mod api;
pub mod audit;
pub mod cli;
pub mod cloud;
pub mod config;
pub mod daemon;
pub mod envs;
pub mod hosts;
pub mod http;
pub mod pki;
pub mod policy;
pub mod quota;
pub mod scheduler;
pub mod server;
pub mod state;
pub mod store;
pub mod usage;

pub use metrom_protocol::error_chain;

/// Logging to stderr, filtered by `RUST_LOG` (default `info`).
pub fn init_logging(default: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr)
        .try_init();
}
