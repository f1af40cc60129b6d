//! The running appliance: `run` composes everything, the supervisor starts one worker per
//! queue and publishes their counters, `metrics` serves them, `service` talks to systemd.

pub mod metrics;
pub mod run;
pub mod service;
pub mod supervisor;
pub mod worker;
