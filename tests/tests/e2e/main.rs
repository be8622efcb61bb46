//! Multi-process scenarios: real controller and agent processes on 127.0.0.1.
//! One test binary for the crate; a module per capability.

mod crash;
mod environments;
mod foundation;
mod hostile;
mod policies;
mod quotas;
mod users;
