//! Where agent sessions hand environment reports to the environment layer.
//! Until environments exist these only log; the environments module replaces them.

use metrom_protocol::ids::HostId;
use metrom_protocol::messages::agent::EnvActivity;
use metrom_protocol::messages::env::{EnvReport, Resources};

use crate::state::Controller;

pub fn host_connected(_ctrl: &Controller, host: &HostId, envs: Vec<EnvReport>) {
    tracing::debug!(host_id = %host, count = envs.len(), "agent reported its environments");
}

pub fn host_disconnected(_ctrl: &Controller, _host: &HostId) {}

pub fn env_report(_ctrl: &Controller, host: &HostId, report: EnvReport) {
    tracing::debug!(host_id = %host, env_id = %report.env_id, "environment report");
}

pub fn activity(_ctrl: &Controller, _host: &HostId, _activity: Vec<EnvActivity>) {}

pub fn allocation(_ctrl: &Controller, _host: &HostId) -> Option<(Resources, u32)> {
    None
}
