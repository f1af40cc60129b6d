//! The decision point of a flow, taken once: when the client has sent its first bytes, or has
//! stopped sending (FIN, or a full receive buffer) before they made a ClientHello. A server that
//! speaks first (SMTP, FTP and SSH do) is relayed to the client meanwhile, and the flow is still
//! decided on the client's first bytes: a ClientHello after a server's banner is a ClientHello.

use std::net::{Ipv4Addr, SocketAddrV4};

use tls_inspect_common::FlowKey;

use super::counters::Counter;
use super::flow::{finished_receiving, Decided, Flow, Phase};
use super::relay::ALERT_ACCESS_DENIED;
use super::{Context, TlsWorker};
use crate::inspect::ips::FlowIps;
use crate::inspect::{HelloFields, Inspector, PassAll, Verdict};
use crate::log::{FlowLog, Outcome, Reason};
use crate::tls::clienthello::{sniff, version_name, ClientHello, Sniff};
use crate::tls::intercept::Interceptor;
use crate::tls::policy::{Decision, PassOrBlock};

/// The first bytes of a client that are read before deciding.
pub(super) const MAX_FIRST: usize = 96 * 1024;

impl Context {
    /// A flow in [`Phase::Deciding`]: relays a server's banner, and decides once the client's
    /// first flight can answer (or never will).
    pub(super) fn deciding(&mut self, flow: &mut Flow) {
        let Some(client) = flow.client.as_mut() else {
            return;
        };
        // Decided while the worker peeked at the first flight: applied once the adopted client
        // leg holds the hello again.
        if let Some(decided) = flow.decided.take() {
            let held = client.socket().recv_queue();
            match decided {
                Decided::Inspect(hello) if held < hello.record_len => flow.decided = Some(Decided::Inspect(hello)),
                decided => self.apply_decision(flow, decided),
            }
            return;
        }
        if !client.socket().can_recv() {
            let s = flow.server.socket();
            flow.server_spoke_first |= s.can_recv() || !s.may_recv();
        }
        let server_spoke = flow.server_spoke_first;
        if server_spoke && !client.socket().can_recv() {
            // Relay what the server says until the client speaks (its banner, for SMTP or SSH);
            // the client's FIN is a decision below, the server's is one now.
            let down = flow.server.relay_to(client) as u64;
            flow.log.bytes_toclient += down;
            self.stats.add(Counter::BytesToClient, down);
        }
        let server_done = finished_receiving(&mut flow.server);
        let socket = client.socket();
        // The whole hello must fit in the receive buffer, which it waits in.
        let limit = MAX_FIRST.min(socket.recv_capacity());
        let can_wait = socket.may_recv() && socket.recv_queue() < limit && !server_done;
        // The first flight is read again only once it can have changed the answer (the record
        // under way has arrived): never once per segment of a slow hello.
        if !((socket.can_recv() && socket.recv_queue() >= flow.first_need) || !can_wait) {
            return;
        }
        let first = socket.peek(limit).map(<[u8]>::to_vec).unwrap_or_default();
        let decided = match decide(self.hooks.tls.as_ref(), &mut flow.log, &first, can_wait, server_spoke) {
            Ok(d) => d,
            Err(need) => {
                flow.first_need = need;
                return;
            }
        };
        let (decided, ips) = self.scan_client_hello(&flow.key, &mut flow.log, decided);
        flow.ips = ips;
        self.apply_decision(flow, decided);
    }

    /// Carries a flow's decision out on its legs.
    fn apply_decision(&mut self, flow: &mut Flow, decided: Decided) {
        match decided {
            Decided::Splice(reason) => {
                flow.log.decision = Outcome::Passed;
                flow.log.reason = reason;
                self.stats.incr(Counter::TlsPassed);
                flow.phase = Phase::Spliced;
            }
            Decided::Block(reason) => {
                flow.log.decision = Outcome::Blocked;
                flow.log.reason = reason;
                self.stats.incr(Counter::TlsBlocked);
                if let Some(client) = flow.client.as_mut() {
                    client.send_from(&Interceptor::alert(ALERT_ACCESS_DENIED));
                    client.socket().close();
                }
                flow.server.socket().abort();
                flow.phase = Phase::Closing;
            }
            Decided::Inspect(hello) => self.start_inspection(flow, hello),
        }
    }

    /// The flow's IPS state starts with the ClientHello: `tls.sni` rules see it before any
    /// decryption (passed flows too), and an inspected flow keeps the same state, so a rule
    /// that combines `tls.sni` with an HTTP buffer can fire.
    pub(super) fn scan_client_hello(&mut self, key: &FlowKey, log: &mut FlowLog, decided: Decided) -> (Decided, Option<FlowIps>) {
        let Some(hook) = &self.hooks.ips else {
            return (decided, None);
        };
        // Nothing to scan and nothing to inspect: no state (its streams cost an allocation).
        if !matches!(decided, Decided::Inspect(_)) && !hook.current().scans_hello() {
            return (decided, None);
        }
        let tuple = crate::inspect::ips::FlowTuple {
            client: (Ipv4Addr::from(key.client_addr), u16::from_be_bytes(key.client_port)),
            server: (Ipv4Addr::from(key.server_addr), u16::from_be_bytes(key.server_port)),
        };
        let mut state = hook.start_flow(tuple);
        let verdict = match (&log.ja3, &log.ja4, log.hello_version) {
            (Some((ja3_hash, ja3_string)), Some(ja4), Some(version)) => {
                let fields = HelloFields { sni: log.sni.as_deref(), version, ja3_string, ja3_hash, ja4 };
                hook.scan_client_hello(&mut state, &fields)
            }
            // Not a ClientHello (not TLS): nothing of a hello to scan.
            _ => Verdict::Continue,
        };
        let hits = state.take_hits();
        self.log_alerts(log, hits);
        let decided = match decided {
            Decided::Block(r) => Decided::Block(r),
            _ if matches!(verdict, Verdict::Block(_)) => Decided::Block(Reason::IpsSni),
            other => other,
        };
        (decided, Some(state))
    }

    /// Takes the ClientHello's records off the client leg and hands them, with the flow's
    /// inspector, to a new interceptor.
    fn start_inspection(&mut self, flow: &mut Flow, hello: ClientHello) {
        let Some(client) = flow.client.as_mut() else {
            return;
        };
        let mut records = vec![0u8; hello.record_len];
        let n = client.socket().recv_slice(&mut records).unwrap_or(0);
        records.truncate(n);
        let server_ip = Ipv4Addr::from(flow.key.server_addr);
        let client_ip = Ipv4Addr::from(flow.key.client_addr);
        let inspector: Box<dyn Inspector> = match (flow.ips.take(), &self.hooks.ips) {
            (Some(state), Some(hook)) if !state.ruleset().whitelisted(client_ip, server_ip) => Box::new(hook.inspector(state)),
            _ => Box::new(PassAll),
        };
        // `[log] pcap`: the plaintext is written too, for the policies asked for.
        let inspector: Box<dyn Inspector> = match self.hooks.pcap.as_ref().filter(|p| p.covers(flow.log.policy_id)) {
            Some(tap) => {
                let client = (client_ip, u16::from_be_bytes(flow.key.client_port));
                let server = (server_ip, u16::from_be_bytes(flow.key.server_port));
                Box::new(crate::log::pcap::Tapped::new(inspector, tap.clone(), flow.log.flow_id, client, server))
            }
            None => inspector,
        };
        match self.hooks.tls.as_mut().map(|t| Interceptor::new(&mut t.shared, records, &hello, server_ip, inspector)) {
            Some(Ok(icpt)) => {
                flow.log.decision = Outcome::Inspected;
                if hello.ech {
                    // Decided on the outer hello (GREASE or real ECH).
                    flow.log.reason = Reason::EchOuter;
                }
                flow.tls = Some(Box::new(icpt));
                flow.phase = Phase::Inspected;
                self.stats.incr(Counter::TlsInspected);
            }
            Some(Err(f)) => self.fail(flow, f),
            None => flow.phase = Phase::Spliced,
        }
    }
}

/// The answer for a first flight: `Err(need)` says to wait until it holds `need` bytes.
pub(super) fn decide(tls: Option<&TlsWorker>, log: &mut FlowLog, first: &[u8], can_wait: bool, server_spoke: bool) -> Result<Decided, usize> {
    let not_tls = if server_spoke { Reason::ServerFirst } else { Reason::NotTls };
    let hello = match sniff(first) {
        Sniff::NeedMore(need) if can_wait => return Err(need),
        // The client stopped before its first bytes made anything.
        Sniff::NeedMore(_) if first.is_empty() => return Ok(Decided::Splice(not_tls)),
        Sniff::NeedMore(_) => return Ok(malformed(tls, "ClientHello incomplete when the client stopped sending")),
        Sniff::Malformed(why) => return Ok(malformed(tls, why)),
        Sniff::NotTls(_) => {
            return Ok(match tls.map(|t| t.policy.non_tls) {
                Some(PassOrBlock::Block) => Decided::Block(not_tls),
                _ => Decided::Splice(not_tls),
            });
        }
        Sniff::Hello(h) => h,
    };
    log.sni = hello.sni.clone();
    log.ja4 = Some(hello.ja4());
    let ja3 = hello.ja3_string();
    log.ja3 = Some((ClientHello::ja3_hash(&ja3), ja3));
    log.hello_version = Some(hello.legacy_version);
    log.client_versions = hello.versions.iter().map(|v| version_name(*v).to_string()).collect();
    log.client_alpn = hello.alpn.iter().map(|a| String::from_utf8_lossy(a).into_owned()).collect();
    let Some(tls) = tls else {
        return Ok(Decided::Splice(Reason::InspectionOff));
    };
    let client = log.src_ip.unwrap_or(Ipv4Addr::UNSPECIFIED);
    let server = SocketAddrV4::new(log.dest_ip.unwrap_or(Ipv4Addr::UNSPECIFIED), log.dest_port);
    Ok(match tls.policy.decide(&hello, client, server) {
        Decision::Inspect => Decided::Inspect(hello),
        Decision::Pass(reason) => Decided::Splice(Reason::Policy(reason)),
        Decision::Block(reason) => Decided::Block(Reason::Policy(reason)),
    })
}

/// A first flight that began as a TLS handshake but is no ClientHello the appliance can read:
/// blocked when TLS is inspected (passing it would let any client skip inspection by sending a
/// hello our parser refuses and the server accepts), spliced when it is not.
fn malformed(tls: Option<&TlsWorker>, why: &'static str) -> Decided {
    match tls {
        Some(_) => Decided::Block(Reason::MalformedClientHello(why)),
        None => Decided::Splice(Reason::InspectionOff),
    }
}
