//! Bytes across an established flow: spliced unchanged, or through the TLS interceptor; the
//! half-closes that follow each side's FIN; and the end of an inspected flow that failed.

use std::net::{Ipv4Addr, SocketAddrV4};

use super::counters::Counter;
use super::flow::{finished_receiving, Flow, Phase};
use super::leg::Leg;
use super::Context;
use crate::log::{ExclusionLog, Outcome, Reason, Record};
use crate::tls::intercept::{Failure, Interceptor, WorkerTls};
use crate::tls::policy::ExclusionReason;

/// `access_denied`: what a client whose connection is blocked gets.
pub(super) const ALERT_ACCESS_DENIED: u8 = 49;
/// `handshake_failure`.
const ALERT_HANDSHAKE_FAILURE: u8 = 40;

impl Context {
    /// A spliced flow: bytes both ways unchanged, and each FIN passed on once everything before
    /// it has been.
    pub(super) fn splice(&mut self, flow: &mut Flow) {
        let Some(client) = flow.client.as_mut() else {
            return;
        };
        let up = client.relay_to(&mut flow.server) as u64;
        let down = flow.server.relay_to(client) as u64;
        flow.log.bytes_toserver += up;
        flow.log.bytes_toclient += down;
        self.stats.add(Counter::BytesToServer, up);
        self.stats.add(Counter::BytesToClient, down);
        if !flow.fin_to_server && finished_receiving(client) {
            flow.server.socket().close();
            flow.fin_to_server = true;
        }
        if !flow.fin_to_client && finished_receiving(&mut flow.server) {
            client.socket().close();
            flow.fin_to_client = true;
        }
    }

    /// An inspected flow: TLS records through the interceptor both ways, its alerts to the log,
    /// and each side's close passed on once the other side has everything.
    pub(super) fn relay_inspected(&mut self, flow: &mut Flow) {
        let (Some(icpt), Some(tls), Some(client)) = (flow.tls.as_mut(), self.hooks.tls.as_mut(), flow.client.as_mut()) else {
            return;
        };
        let relayed = relay_tls(&mut flow.server, client, icpt, &mut tls.shared, &mut self.scratch);
        let hits = icpt.take_alerts();
        let txs = icpt.take_http(false);
        let unscanned = icpt.unscanned();
        let new: u64 = unscanned.iter().zip(flow.log.ips_unscanned).map(|(now, before)| now.saturating_sub(before)).sum();
        self.stats.add(Counter::IpsUnscanned, new);
        flow.log.ips_unscanned = unscanned;
        let failed = match relayed {
            Ok((up, down)) => {
                flow.log.bytes_toserver += up;
                flow.log.bytes_toclient += down;
                self.stats.add(Counter::BytesToServer, up);
                self.stats.add(Counter::BytesToClient, down);
                if !flow.fin_to_server && icpt.to_server.is_empty() && (icpt.client_done() || finished_receiving(client)) {
                    flow.server.socket().close();
                    flow.fin_to_server = true;
                }
                if !flow.fin_to_client && icpt.to_client.is_empty() && (icpt.server_done() || finished_receiving(&mut flow.server)) {
                    client.socket().close();
                    flow.fin_to_client = true;
                }
                None
            }
            Err(f) => Some(f),
        };
        self.log_alerts(&mut flow.log, hits);
        self.log_http(&flow.log, txs);
        if let Some(f) = failed {
            self.fail(flow, f);
        }
    }

    /// Ends an inspected flow that failed: says why in the log, tells the client what it should
    /// see, and fills the exclusion cache: a valid server that asked for a client certificate is
    /// excluded for every client (or blocked, when its policy says `client_auth = "block"`); a
    /// client that refused the forged certificate is excluded alone. Every addition is logged.
    pub(super) fn fail(&mut self, flow: &mut Flow, failure: Failure) {
        let server_ip = Ipv4Addr::from(flow.key.server_addr);
        let client_ip = Ipv4Addr::from(flow.key.client_addr);
        let sni = flow.log.sni.clone().unwrap_or_default();
        let auth_blocked = flow.scope_flags & tls_inspect_common::SLOT_CLIENT_AUTH_BLOCK != 0;
        let (decision, reason, alert, exclude) = match failure {
            Failure::UpstreamInvalid(why) => (Outcome::Blocked, Reason::UpstreamInvalid(why), Some(ALERT_ACCESS_DENIED), None),
            Failure::ClientAuthRequested if auth_blocked => (Outcome::Blocked, Reason::ClientAuthRequested, Some(ALERT_ACCESS_DENIED), None),
            Failure::ClientAuthRequested => (
                Outcome::Failed,
                Reason::ClientAuthRequested,
                Some(ALERT_HANDSHAKE_FAILURE),
                Some((None, ExclusionReason::ClientAuthRequested)),
            ),
            Failure::ClientRejected(a) => {
                (Outcome::Failed, Reason::ClientRejectedCertificate(a), None, Some((Some(client_ip), ExclusionReason::ClientRejected)))
            }
            // Before the client has a session (a rule on the server's certificate): access_denied.
            Failure::Blocked(cause) => (Outcome::Blocked, Reason::Inspector(cause), Some(ALERT_ACCESS_DENIED), None),
            Failure::Upstream(e) => (Outcome::Failed, Reason::Upstream(e), Some(ALERT_HANDSHAKE_FAILURE), None),
            Failure::Client(e) => (Outcome::Failed, Reason::Client(e), None, None),
        };
        self.stats.incr(if decision == Outcome::Blocked { Counter::TlsBlocked } else { Counter::TlsFailed });
        if let (Some((client, why)), Some(p)) = (exclude, self.hooks.tls.as_ref().map(|t| &t.policy)) {
            let evicted = p.exclude(SocketAddrV4::new(server_ip, u16::from_be_bytes(flow.key.server_port)), &sni, client, why);
            if let Some(log) = &self.hooks.log {
                let record = ExclusionLog { flow: flow.log.clone(), client, reason: why, ttl: p.exclusion_ttl, evicted };
                let _ = log.try_send(Record::Exclusion(Box::new(record)));
            }
        }
        flow.log.decision = decision;
        flow.log.reason = reason;
        // Once the client has a TLS session with us, a plaintext alert would be out of place.
        let alert = alert.filter(|_| !flow.tls.as_ref().is_some_and(|t| t.client_session_started()));
        let page_sent = decision == Outcome::Blocked && flow.tls.as_ref().is_some_and(|t| !t.to_client.is_empty());
        if let Some(client) = flow.client.as_mut() {
            if page_sent {
                // A block page and the session's closing alert, behind any records the client
                // has not taken yet: `poll_legs` delivers them all as the client makes room,
                // then a FIN. Without a page (not HTTP/1), the alert is delivered, then the
                // client's leg is reset. The server's leg is reset at once.
                if flow.tls.as_ref().is_some_and(|t| t.block_page_sent) {
                    flow.fin_client_when_sent = true;
                } else {
                    flow.reset_client_when_sent = true;
                }
                flow.server.socket().abort();
                flow.phase = Phase::Closing;
                return;
            }
            match alert {
                Some(a) => {
                    // Nothing was sent to the client in TLS yet: a plain alert record, then FIN.
                    client.send_from(&Interceptor::alert(a));
                    client.socket().close();
                }
                None => client.socket().abort(),
            }
        }
        flow.server.socket().abort();
        flow.phase = Phase::Closing;
    }
}

/// Moves TLS bytes between the legs and the interceptor, as far as each side has room. Returns
/// the bytes sent to the server and to the client.
fn relay_tls(server: &mut Leg, client: &mut Leg, icpt: &mut Interceptor, shared: &mut WorkerTls, scratch: &mut [u8]) -> Result<(u64, u64), Failure> {
    let (mut up, mut down) = (0u64, 0u64);
    for _ in 0..64 {
        let mut moved = false;
        if icpt.wants_from_server() {
            let n = server.recv_into(scratch);
            if n > 0 {
                icpt.take_from_server(&scratch[..n], shared)?;
                moved = true;
            }
        }
        if icpt.wants_from_client() {
            let n = client.recv_into(scratch);
            if n > 0 {
                icpt.take_from_client(&scratch[..n], shared)?;
                moved = true;
            }
        }
        if !icpt.to_server.is_empty() {
            let n = server.send_from(&icpt.to_server);
            icpt.to_server.drain(..n);
            up += n as u64;
            moved |= n > 0;
        }
        if !icpt.to_client.is_empty() {
            let n = client.send_from(&icpt.to_client);
            icpt.to_client.drain(..n);
            down += n as u64;
            moved |= n > 0;
        }
        if !moved {
            break;
        }
    }
    Ok((up, down))
}
