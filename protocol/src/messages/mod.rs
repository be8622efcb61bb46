//! Messages, grouped by channel. See `docs/protocol.md` for the flows.
//!
//! Evolution rule (postcard is not self-describing): never reorder, remove or
//! change a field or variant; add new enum variants at the end only; add new
//! message types rather than fields. The first message of every connection
//! starts with `version: u32`.
//!
//! Wire types must not use `skip_serializing_if`, `flatten` or `untagged`:
//! postcard cannot represent them.

pub mod agent;
pub mod api;
pub mod env;
pub mod join;
