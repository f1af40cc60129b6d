//! tls-inspect's dataplane as a library: the `tls-inspect` binary is a thin layer over [`app`],
//! and the fuzz targets and benchmarks link the same code.
//!
//! Layers: `phy` (AF_XDP sockets, the per-core workers), `net` (smoltcp legs and flows), `tls`
//! (ClientHello, decisions, interception, forging), `inspect` (IPS, DLP, HTTP followers), with
//! `control` (configuration, maps, loader, supervisor) and `log` beside them.

pub mod app;
pub mod cli;
pub mod control;
pub mod fuzzing;
pub mod inspect;
pub mod log;
pub mod net;
pub mod phy;
pub mod tls;
