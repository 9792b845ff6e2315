//! The bottom layer: what every other module may use and which imports nothing else of
//! the agent: quantities, time formats, IP ranges, error chains, facts about the host,
//! glibc malloc's knobs, a map for a handful of keys, locks by key.

pub mod cgroupfs;
pub(crate) mod cidr;
pub(crate) mod error;
pub mod host;
pub mod malloc;
pub(crate) mod names;
pub mod quantity;
pub(crate) mod time;
pub mod turns;
pub mod vecmap;
