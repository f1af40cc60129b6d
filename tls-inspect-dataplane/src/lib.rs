//! tls-inspect's dataplane as a library: the `tls-inspect` binary is a thin layer over [`cli`],
//! and the benchmarks and fuzz targets link the same code.
//!
//! Folders are layers; each imports only from the layers below it (docs/architecture.md, and
//! `tests/layers.rs` checks it):
//!
//! `cli` (and `fuzzing`, `replay`: the offline `ips replay` of a pcap) -> `runtime` (run, supervisor, workers, metrics) -> `control` (config,
//! scopes, maps, state, XDP program, socket, live rules, intel) -> `net` (the relay: flows, legs,
//! decision, splice and TLS relay) -> `log` (EVE records) -> `tls` (ClientHello, policy,
//! interception, forging, CA) -> `inspect` (rules, IPS, HTTP followers, DLP, block page) -> `phy`
//! (sides, transmit, AF_XDP sockets) -> `addr`, `sys`.
#![deny(unsafe_code)]

pub mod addr;
pub mod cli;
pub mod control;
pub mod fuzzing;
pub mod inspect;
pub mod log;
pub mod net;
pub mod phy;
pub mod replay;
pub mod runtime;
pub mod sys;
#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "test helpers: a failed unwrap is a failed test")]
pub(crate) mod testutil;
pub mod tls;
