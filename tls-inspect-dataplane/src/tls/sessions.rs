//! Resumption towards the servers, one store per worker, and what a worker's flows share with
//! rustls' callbacks.
//!
//! rustls resumes a session only under the very verifier and client-certificate resolver that
//! made it (`Arc` identity), so each worker has one of each for all its flows, and a flow's own
//! facts (its server address, the kind of offer it makes, what its certificate validation said)
//! reach them through a [`Scratch`]: the worker runs one flow's rustls calls at a time, and
//! [`Scratch::with`] puts that flow's [`FlowCtx`] in place for exactly their duration.
//!
//! The store keys sessions by (server address, the kind of offer: the client's groups, suites,
//! versions and ALPN, the server name) and keeps a session only when its certificate chain
//! validated in this process (never one forwarded as untrusted), with the end of that chain's
//! validity: a session is offered only while every certificate of its chain is still valid. A
//! change of trust store or CA means a restart, and a restart starts with an empty store (and
//! new ticket keys downstream).

use std::collections::{HashMap, VecDeque};
use std::net::Ipv4Addr;
use std::sync::Mutex;

use rustls::client::{ClientSessionStore, Tls12ClientSessionValue, Tls13ClientSessionValue};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::NamedGroup;

/// Tickets kept per key (servers send two by default; each is used once).
const TICKETS_PER_KEY: usize = 2;

/// What rustls' callbacks learn and need about the flow whose rustls call is running.
#[derive(Clone, Debug, Default)]
pub struct FlowCtx {
    pub server: Option<Ipv4Addr>,
    /// The kind of offer (an id of the worker's client configuration).
    pub shape: u64,
    /// Why the server's chain did not validate, if it did not (set by the verifier).
    pub verdict: Option<String>,
    /// The chain validated in this flow: until when all of it is valid (Unix seconds).
    pub validated_until: Option<u64>,
    /// A stored session was offered: until when its chain is valid.
    pub offered_until: Option<u64>,
    /// The server asked for a client certificate.
    pub client_auth: bool,
}

/// The flow context of the running rustls call (see the module's text).
#[derive(Debug, Default)]
pub struct Scratch(Mutex<FlowCtx>);

impl Scratch {
    /// Runs `f` (rustls calls of one flow) with `ctx` in place, and takes back what the
    /// callbacks wrote into it.
    pub fn with<R>(&self, ctx: &mut FlowCtx, f: impl FnOnce() -> R) -> R {
        if let Ok(mut s) = self.0.lock() {
            std::mem::swap(&mut *s, ctx);
        }
        let r = f();
        if let Ok(mut s) = self.0.lock() {
            std::mem::swap(&mut *s, ctx);
            *s = FlowCtx::default();
        }
        r
    }

    /// Changes the running flow's context (from a callback).
    pub fn update(&self, f: impl FnOnce(&mut FlowCtx)) {
        if let Ok(mut s) = self.0.lock() {
            f(&mut s);
        }
    }

    fn get(&self) -> FlowCtx {
        self.0.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

/// The earliest end of validity in a chain (Unix seconds); `None` if one does not parse.
pub fn chain_valid_until(end_entity: &CertificateDer<'_>, intermediates: &[CertificateDer<'_>]) -> Option<u64> {
    std::iter::once(end_entity)
        .chain(intermediates)
        .map(|c| {
            let (_, cert) = x509_parser::parse_x509_certificate(c.as_ref()).ok()?;
            u64::try_from(cert.validity().not_after.timestamp()).ok()
        })
        .try_fold(u64::MAX, |min, t| t.map(|t| min.min(t)))
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    server: Ipv4Addr,
    shape: u64,
    name: ServerName<'static>,
}

#[derive(Debug, Default)]
struct Slot {
    kx_hint: Option<NamedGroup>,
    tls12: Option<(Tls12ClientSessionValue, u64)>,
    tls13: VecDeque<(Tls13ClientSessionValue, u64)>,
}

#[derive(Debug, Default)]
struct Slots {
    map: HashMap<Key, Slot>,
    /// Keys in the order they came, for eviction.
    order: VecDeque<Key>,
}

/// A worker's upstream sessions, bounded (the oldest key goes first).
#[derive(Debug)]
pub struct UpstreamStore {
    scratch: std::sync::Arc<Scratch>,
    slots: Mutex<Slots>,
    capacity: usize,
}

fn now() -> u64 {
    UnixTime::now().as_secs()
}

impl UpstreamStore {
    pub fn new(scratch: std::sync::Arc<Scratch>, capacity: usize) -> Self {
        Self { scratch, slots: Mutex::new(Slots::default()), capacity: capacity.max(1) }
    }

    /// Keys held now (a key may hold only a key exchange hint).
    pub fn keys(&self) -> usize {
        self.slots.lock().map(|s| s.map.len()).unwrap_or(0)
    }

    /// Sessions held now (TLS 1.3 tickets and TLS 1.2 sessions).
    pub fn sessions(&self) -> usize {
        self.slots.lock().map(|s| s.map.values().map(|v| v.tls13.len() + usize::from(v.tls12.is_some())).sum()).unwrap_or(0)
    }

    fn key(&self, name: &ServerName<'_>) -> Option<Key> {
        let ctx = self.scratch.get();
        Some(Key { server: ctx.server?, shape: ctx.shape, name: name.to_owned() })
    }

    /// Until when a session made in the running flow may be resumed: its chain validated here,
    /// or the flow resumed a session whose chain did (no verification ran); never when the chain
    /// failed (forwarded untrusted).
    fn storable_until(&self) -> Option<u64> {
        let ctx = self.scratch.get();
        if ctx.verdict.is_some() {
            return None;
        }
        ctx.validated_until.or(ctx.offered_until).filter(|t| *t > now())
    }

    fn with_slot<R>(&self, key: Key, f: impl FnOnce(&mut Slot) -> R) -> Option<R> {
        let mut slots = self.slots.lock().ok()?;
        if !slots.map.contains_key(&key) {
            while slots.map.len() >= self.capacity {
                let Some(old) = slots.order.pop_front() else { break };
                slots.map.remove(&old);
            }
            slots.order.push_back(key.clone());
        }
        Some(f(slots.map.entry(key).or_default()))
    }

    fn read_slot<R>(&self, key: &Key, f: impl FnOnce(&mut Slot) -> Option<R>) -> Option<R> {
        let mut slots = self.slots.lock().ok()?;
        slots.map.get_mut(key).and_then(f)
    }

    fn offered(&self, until: u64) {
        self.scratch.update(|c| c.offered_until = Some(until));
    }
}

impl ClientSessionStore for UpstreamStore {
    fn set_kx_hint(&self, server_name: ServerName<'static>, group: NamedGroup) {
        if let Some(k) = self.key(&server_name) {
            self.with_slot(k, |s| s.kx_hint = Some(group));
        }
    }

    fn kx_hint(&self, server_name: &ServerName<'_>) -> Option<NamedGroup> {
        let k = self.key(server_name)?;
        self.read_slot(&k, |s| s.kx_hint)
    }

    fn set_tls12_session(&self, server_name: ServerName<'static>, value: Tls12ClientSessionValue) {
        let (Some(k), Some(until)) = (self.key(&server_name), self.storable_until()) else {
            return;
        };
        self.with_slot(k, |s| s.tls12 = Some((value, until)));
    }

    fn tls12_session(&self, server_name: &ServerName<'_>) -> Option<Tls12ClientSessionValue> {
        let k = self.key(server_name)?;
        let now = now();
        let (value, until) = self.read_slot(&k, |s| {
            if s.tls12.as_ref().is_some_and(|(_, until)| *until <= now) {
                s.tls12 = None;
            }
            s.tls12.clone()
        })?;
        self.offered(until);
        Some(value)
    }

    fn remove_tls12_session(&self, server_name: &ServerName<'static>) {
        if let Some(k) = self.key(server_name) {
            self.read_slot(&k, |s| s.tls12.take());
        }
    }

    fn insert_tls13_ticket(&self, server_name: ServerName<'static>, value: Tls13ClientSessionValue) {
        let (Some(k), Some(until)) = (self.key(&server_name), self.storable_until()) else {
            return;
        };
        self.with_slot(k, |s| {
            if s.tls13.len() >= TICKETS_PER_KEY {
                s.tls13.pop_front();
            }
            s.tls13.push_back((value, until));
        });
    }

    fn take_tls13_ticket(&self, server_name: &ServerName<'static>) -> Option<Tls13ClientSessionValue> {
        let k = self.key(server_name)?;
        let now = now();
        let (value, until) = self.read_slot(&k, |s| {
            while let Some((v, until)) = s.tls13.pop_front() {
                if until > now {
                    return Some((v, until));
                }
            }
            None
        })?;
        self.offered(until);
        Some(value)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn store(capacity: usize) -> (Arc<Scratch>, UpstreamStore) {
        let scratch = Arc::new(Scratch::default());
        (scratch.clone(), UpstreamStore::new(scratch, capacity))
    }

    fn ctx(server: &str, validated_until: Option<u64>, verdict: Option<&str>) -> FlowCtx {
        FlowCtx { server: Some(server.parse().unwrap()), shape: 1, verdict: verdict.map(String::from), validated_until, ..FlowCtx::default() }
    }

    fn name(n: &str) -> ServerName<'static> {
        ServerName::try_from(n.to_string()).unwrap()
    }

    #[test]
    fn hints_are_kept_per_server_address_and_offer_and_bounded() {
        let (scratch, s) = store(2);
        let later = now() + 3600;
        for (i, addr) in ["198.18.0.2", "198.18.0.3", "198.18.0.4"].into_iter().enumerate() {
            let mut c = ctx(addr, Some(later), None);
            c.shape = i as u64;
            scratch.with(&mut c, || s.set_kx_hint(name("server.test"), NamedGroup::X25519));
        }
        assert_eq!((s.keys(), s.sessions()), (2, 0), "the oldest key went");
        let mut c = ctx("198.18.0.4", None, None);
        c.shape = 2;
        assert_eq!(scratch.with(&mut c, || s.kx_hint(&name("server.test"))), Some(NamedGroup::X25519));
        // Another address with the same name and offer knows nothing.
        let mut other = ctx("198.18.0.9", None, None);
        other.shape = 2;
        assert_eq!(scratch.with(&mut other, || s.kx_hint(&name("server.test"))), None);
        // Outside a flow's call nothing is keyed.
        assert_eq!(s.kx_hint(&name("server.test")), None);
    }

    #[test]
    fn only_validated_or_resumed_sessions_are_storable_and_only_while_valid() {
        let (scratch, s) = store(8);
        let later = now() + 3600;
        let mut validated = ctx("198.18.0.2", Some(later), None);
        assert_eq!(scratch.with(&mut validated, || s.storable_until()), Some(later));
        let mut untrusted = ctx("198.18.0.2", None, Some("UnknownIssuer"));
        untrusted.offered_until = Some(later);
        assert_eq!(scratch.with(&mut untrusted, || s.storable_until()), None, "a chain that failed is never stored");
        let mut resumed = ctx("198.18.0.2", None, None);
        resumed.offered_until = Some(later);
        assert_eq!(scratch.with(&mut resumed, || s.storable_until()), Some(later));
        let mut expired = ctx("198.18.0.2", Some(now() - 1), None);
        assert_eq!(scratch.with(&mut expired, || s.storable_until()), None);
    }

    #[test]
    fn the_end_of_a_chains_validity_is_its_earliest_certificate() {
        let (root, root_key) = crate::testutil::pki::ca("Root");
        let (chain, _) = crate::testutil::pki::leaf(&root, root_key, &["server.test"]);
        let until = chain_valid_until(&chain[0], std::slice::from_ref(&root)).unwrap();
        let leaf_only = chain_valid_until(&chain[0], &[]).unwrap();
        assert!(until <= leaf_only && until > now());
        assert_eq!(chain_valid_until(&CertificateDer::from(vec![1, 2, 3]), &[]), None);
    }
}
