//! A worker's counters, declared once: each with its name, kind and help. The relay counts into
//! a [`Counters`], the worker adds its device and hand-off counts to the same one, and `stats`,
//! the workers' JSON file and the metrics endpoint all read [`COUNTERS`]: a counter declared here
//! is counted, shown and exported, or the build fails.

/// Prometheus' two kinds we use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up.
    Counter,
    /// A current value.
    Gauge,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        }
    }
}

/// The declaration of one counter.
#[derive(Clone, Copy, Debug)]
pub struct Def {
    pub name: &'static str,
    pub kind: Kind,
    pub help: &'static str,
}

macro_rules! counters {
    ($($variant:ident $name:literal $kind:ident $help:literal;)*) => {
        /// One of a worker's counters; [`COUNTERS`] holds its declaration at its index.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Counter { $($variant),* }

        /// Every counter, in the order `stats` and the JSON show them.
        pub const COUNTERS: &[Def] = &[$(Def { name: $name, kind: Kind::$kind, help: $help }),*];

        /// Every counter, in the same order as [`COUNTERS`].
        pub const ALL: &[Counter] = &[$(Counter::$variant),*];
    };
}

counters! {
    FramesRx "frames_rx" Counter "Frames taken from the worker's AF_XDP receive rings.";
    FramesTx "frames_tx" Counter "Frames handed to the worker's AF_XDP transmit rings.";
    HandoffsOut "handoffs_out" Counter "Frames passed to the worker that owns their flow.";
    HandoffsIn "handoffs_in" Counter "Frames received from other workers for flows this one owns.";
    HandoffsDropped "handoffs_dropped" Counter "Frames lost because the owning worker's inbox was full (TCP resends them).";
    TxRingFull "tx_ring_full" Counter "Times a transmit ring had no room for every queued frame.";
    TxDroppedNoFrame "tx_dropped_no_frame" Counter "Frames dropped because no UMEM frame was free.";
    FlowsOpen "flows_open" Gauge "Flows the worker holds now.";
    FlowsTotal "flows_total" Counter "Flows the worker has taken.";
    BytesToServer "bytes_to_server" Counter "Payload bytes relayed to servers.";
    BytesToClient "bytes_to_client" Counter "Payload bytes relayed to clients.";
    TableFull "table_full" Counter "New flows refused or failed open because the worker's flow table was full.";
    ConnectRefused "connect_refused" Counter "Servers that answered the SYN with a RST (the client got the RST).";
    ConnectTimeouts "connect_timeouts" Counter "Servers that never answered the SYN.";
    Resets "resets" Counter "Flows ended by a RST from either side, passed on to the other.";
    FlowsPeeked "flows_peeked" Counter "Connections whose handshake the XDP program bridged and whose first flight the worker held to decide on.";
    FlowsBypassed "flows_bypassed" Counter "Peeked connections passed: their held first flight released unchanged and the rest bridged by the XDP program.";
    FlowsAdopted "flows_adopted" Counter "Peeked connections the worker took over on both legs (to inspect, to block, or to decide later).";
    AdoptFailed "adopt_failed" Counter "Peeked connections whose legs would not take the recorded handshake (both ends reset).";
    BypassedFramesSeen "bypassed_frames_seen" Counter "Frames of passed connections that still reached the worker after the hand-off (forwarded unchanged).";
    PortReused "peeks_port_reused" Counter "New connections on the addresses and ports of a connection passed moments before (peeked and decided afresh, not forwarded as its late frames).";
    Unrecorded "unrecorded_resets" Counter "Scoped connections with data but no handshake record (evicted, or older than the scope): reset at both ends rather than passed uninspected.";
    UnknownFlow "unknown_flow" Counter "Frames of steered flows no worker knows (their flow entries are removed).";
    MapErrors "map_errors" Counter "Flow-map updates that failed.";
    TlsInspected "tls_inspected" Counter "Flows decrypted, inspected and re-encrypted.";
    TlsPassed "tls_passed" Counter "Flows passed unchanged after their first bytes.";
    TlsBlocked "tls_blocked" Counter "Flows blocked (policy, IPS, DLP, invalid upstream).";
    TlsFailed "tls_failed" Counter "Inspected flows that failed (a peer's TLS error).";
    TlsResumedClient "tls_resumed_client" Counter "Inspected flows whose client resumed a session with one of the appliance's tickets.";
    TlsResumedUpstream "tls_resumed_upstream" Counter "Inspected flows whose upstream leg resumed a session the worker kept (its chain validated, still valid).";
    TlsWeakened "tls_weakened" Counter "Inspected flows whose client leg the appliance made weaker than the client asked for and the server gave (an error; the flow record says how).";
    CertsForged "certs_forged" Counter "Certificates the worker's forger signed.";
    IpsAlerts "ips_alerts" Counter "IPS rules and DLP detectors that fired.";
    IpsUnscanned "ips_unscanned_bytes" Counter "Body bytes of HTTP messages past [ips] body_depth that no IPS database scanned (past_body_depth = \"skip\").";
    IdleTimeouts "idle_timeouts" Counter "Flows reset on both sides after the idle timeout.";
    NotTcp "not_tcp" Counter "Frames given to the relay that were not TCP over IPv4 (dropped).";
    FramesHandled "frames_handled" Counter "Frames the relay processed (own and handed over).";
}

/// Values of every counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Counters([u64; COUNTERS.len()]);

impl Default for Counters {
    fn default() -> Self {
        Self([0; COUNTERS.len()])
    }
}

impl Counters {
    pub fn add(&mut self, c: Counter, n: u64) {
        self.0[c as usize] += n;
    }

    pub fn incr(&mut self, c: Counter) {
        self.add(c, 1);
    }

    pub fn set(&mut self, c: Counter, v: u64) {
        self.0[c as usize] = v;
    }

    pub fn get(&self, c: Counter) -> u64 {
        self.0[c as usize]
    }

    pub fn values(&self) -> &[u64; COUNTERS.len()] {
        &self.0
    }

    /// Each declaration with its value.
    pub fn iter(&self) -> impl Iterator<Item = (&'static Def, u64)> + '_ {
        COUNTERS.iter().zip(self.0.iter().copied())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_snake_case_and_each_has_help() {
        let mut names: Vec<&str> = COUNTERS.iter().map(|d| d.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), COUNTERS.len(), "a counter name is declared twice");
        for d in COUNTERS {
            assert!(d.name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'), "{}", d.name);
            assert!(d.help.ends_with('.') && d.help.len() > 10, "{}: help", d.name);
        }
        let mut c = Counters::default();
        c.add(Counter::FramesHandled, 3);
        c.incr(Counter::FramesRx);
        assert_eq!(c.iter().find(|(d, _)| d.name == "frames_handled").map(|(_, v)| v), Some(3));
        assert_eq!(c.get(Counter::FramesRx), 1);
    }

    #[test]
    fn the_operators_manual_lists_every_counter_as_declared() {
        let doc = include_str!("../../../docs/dataplane.md");
        let rows: Vec<&str> = doc.lines().filter(|l| l.starts_with("| `")).collect();
        for d in COUNTERS {
            let row = format!("| `{}` | {} | {} |", d.name, d.kind.as_str(), d.help);
            assert!(rows.contains(&row.as_str()), "docs/dataplane.md lacks (or differs on) {row}");
        }
        let documented = rows.iter().filter(|r| COUNTERS.iter().any(|d| r.starts_with(&format!("| `{}` |", d.name)))).count();
        assert_eq!(documented, COUNTERS.len());
    }
}
