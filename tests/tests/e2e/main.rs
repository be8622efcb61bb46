//! Multi-process scenarios: real controller and agent processes on 127.0.0.1.
//! One test binary for the crate; a module per capability.

mod cloud;
mod crash;
mod docker;
mod environments;
mod foundation;
mod hostile;
mod installer;
mod kvm;
mod kvm_full;
mod policies;
mod quotas;
mod users;
