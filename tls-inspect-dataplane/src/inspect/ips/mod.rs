//! The IPS engine: rules compiled into Hyperscan databases once ([`compile`]), shared by every
//! worker and flow, and the per-flow state that scans each direction's plaintext as it comes
//! ([`matcher`]).
//!
//! - The stream buffer (rules without a sticky buffer) is one streaming database; each flow and
//!   direction has its own Hyperscan stream, so a pattern split across TCP segments, TLS records
//!   or reads still matches.
//! - HTTP/1.1 heads (`inspect::http1`) and HTTP/2 HEADERS (`inspect::h2`) give method, URI,
//!   host and user agent, each scanned with a block database of its own; bodies (up to a depth)
//!   with a streaming database.
//! - `tls.sni` is matched on the ClientHello, before any decryption, in the same per-flow state
//!   that later sees the plaintext.

pub mod compile;
pub mod matcher;

pub use compile::{active_at, Options, Override, Ruleset};
pub use matcher::{FlowIps, FlowTuple};
/// A scan's scratch space (one per thread; [`Ruleset::scratch`]).
pub use hyperscan::Scratch;

use crate::inspect::{Direction, HttpInfo};

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IpsMode {
    Monitor,
    Block,
}

/// What the IPS does when HTTP it follows cannot be followed further (an [`crate::inspect::Anomaly`]):
/// `[ips] unfollowable`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Unfollowable {
    /// Alert, and in block mode stop the flow (the default: the rules would be blind to the rest).
    #[default]
    Block,
    /// Alert only.
    Alert,
}

/// What the body bytes of an HTTP message past `[ips] body_depth` go through:
/// `[ips] past_body_depth`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PastBodyDepth {
    /// No database: neither the body's nor the stream's (the default; as Suricata stops
    /// inspecting a flow's stream past `stream.reassembly.depth`, but per message: the next
    /// message's head and body are scanned again).
    #[default]
    Skip,
    /// The stream database still scans them, to the message's end.
    Stream,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// High-confidence rules only.
    Loose,
    Medium,
    /// All rules.
    Strict,
}

/// A rule that fired on a flow.
#[derive(Clone, Debug)]
pub struct Hit {
    pub sid: u32,
    pub rev: u32,
    pub msg: String,
    pub classtype: Option<String>,
    /// The classtype's description (`classification.config`).
    pub category: Option<String>,
    /// The rule's priority, else its classtype's, else 3.
    pub severity: u8,
    /// The action the rule took (its own, or the operator's override).
    pub action: crate::inspect::rules::Action,
    /// The flow was stopped (the action blocks, in block mode).
    pub blocked: bool,
    pub direction: Direction,
    pub http: Option<HttpInfo>,
    /// The rule's `metadata` pairs.
    pub metadata: Vec<(String, String)>,
    /// The rule's references as URLs (`reference.config`).
    pub references: Vec<String>,
    /// A data leak detector's finding (sid 0), rather than a rule.
    pub dlp: Option<crate::inspect::dlp::Finding>,
}


#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, reason = "a failed unwrap is a failed test")]
mod tests;
