//! The Metrom agent: makes a Linux box a hypervisor host of a Metrom controller.

pub mod activity;
pub mod backoff;
pub mod config;
pub mod enroll;
pub mod facts;
pub mod images;
pub mod ledger;
pub mod link;
pub mod runtime;
pub mod session;
pub mod transfer;
pub mod work;

pub use metrom_protocol::error_chain;
