//! The running appliance: `run` composes everything, the supervisor starts one worker per
//! queue and publishes their counters, `metrics` serves them.

pub mod metrics;
pub mod run;
pub mod supervisor;
pub mod worker;
