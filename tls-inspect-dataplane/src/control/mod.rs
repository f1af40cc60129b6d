//! The control plane: the configuration file, the scope model and its tables in the pinned
//! maps, the state file, the XDP program's life (`xdp`), threat intelligence, the live IPS rules
//! and the control socket that serves `rules` and `bypass` requests; `update` applies the
//! operator's suricata-update tuning files (disable, enable, drop, modify) to the rule files.
pub mod config;
pub mod intel;
pub mod maps;
pub mod rules;
pub mod scopes;
pub mod socket;
pub mod state;
pub mod update;
pub mod xdp;
