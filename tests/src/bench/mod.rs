//! Benchmarks behind `metrom-bench`; figures go to docs/benchmarks.md.

pub mod agents;
pub mod cloud;
pub mod creates;
pub mod docker;
pub mod schedule;
