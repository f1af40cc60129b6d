//! One inspected TLS connection, sans I/O: TLS bytes from the client and from the server in,
//! TLS bytes for each out. Upstream first: the client's ClientHello is held while a rustls client
//! connects to the real server with the same SNI, the client's ALPN list and only the versions
//! the client offered, and validates its certificate like a browser. Then a rustls server answers
//! the held ClientHello with a certificate forged for the server's names, offering the ALPN the
//! server chose. Plaintext crosses through an [`Inspector`].

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, WebPkiServerVerifier};
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, ServerName, UnixTime};
use rustls::server::{ClientHello as RustlsHello, ProducesTickets, ResolvesServerCert};
use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls::{
    AlertDescription, ClientConfig, ClientConnection, DigitallySignedStruct, RootCertStore,
    ServerConfig, ServerConnection, SignatureScheme, SupportedProtocolVersion,
};

use super::clienthello::{ClientHello, TLS1_2, TLS1_3};
use super::forge::Forger;
use super::sessions::{chain_valid_until, FlowCtx, Scratch, UpstreamStore};
use crate::inspect::{BlockCause, Direction, Inspector, Verdict};

/// What to do when the server's certificate does not validate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UntrustedUpstream {
    /// The client gets a TLS alert; the log says why.
    Block,
    /// The client gets a certificate signed by a key it does not trust, so its own checks fail.
    ForwardUntrusted,
}

/// Why an inspected connection ended early.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    /// The server's certificate did not validate (blocked by policy).
    UpstreamInvalid(String),
    /// The server asked for a client certificate (mTLS): the connection cannot be inspected.
    ClientAuthRequested,
    /// The client rejected our certificate (pinning, or the CA is not installed).
    ClientRejected(String),
    /// Another TLS failure towards the server.
    Upstream(String),
    /// Another TLS failure towards the client.
    Client(String),
    /// The inspector blocked the flow.
    Blocked(BlockCause),
}

/// What the logs say about the two TLS sessions.
#[derive(Clone, Debug, Default)]
pub struct TlsInfo {
    pub upstream_version: Option<String>,
    pub upstream_cipher: Option<String>,
    pub client_version: Option<String>,
    pub client_cipher: Option<String>,
    /// Key exchange groups negotiated on each leg (X25519MLKEM768, X25519, secp256r1, ...).
    pub client_kx_group: Option<String>,
    pub upstream_kx_group: Option<String>,
    pub alpn: Option<String>,
    /// Why the upstream certificate did not validate, if it did not.
    pub upstream_invalid: Option<String>,
    /// The real server's certificate, as the log describes it.
    pub server_cert: Option<crate::inspect::cert::CertSummary>,
    /// What each leg negotiated, and what the client offered, for the grades.
    pub client_leg: super::grade::Leg,
    pub upstream_leg: super::grade::Leg,
    pub offer: super::grade::Offer,
    /// Each leg resumed an earlier session (a ticket from the client; a stored session upstream).
    pub client_resumed: bool,
    pub upstream_resumed: bool,
}

/// Appliance-wide TLS settings every interceptor uses.
#[derive(Clone)]
pub struct TlsConfig {
    /// Validates upstream certificates like a browser (webpki), with the trust store and any
    /// CRLs; built once and shared by every flow.
    pub verifier: Arc<WebPkiServerVerifier>,
    pub untrusted_upstream: UntrustedUpstream,
    /// `[log] keylog`: both legs' session secrets go here (NSS key log format).
    pub key_log: Option<Arc<dyn rustls::KeyLog>>,
    /// Session tickets for clients, under keys rustls rotates (every 6 hours, the previous
    /// key still accepted for as long), shared by every worker: a client's next connection may
    /// land on any of them. None: `[tls] resumption = false`.
    pub ticketer: Option<Arc<dyn ProducesTickets>>,
    /// Upstream sessions each worker keeps at most (by server address, offer and name); 0: none.
    pub upstream_sessions: usize,
}

impl TlsConfig {
    /// A verifier trusting `roots` and, when `crls` are given, refusing certificates they
    /// revoke. A certificate whose issuer has no CRL here is not refused for that (revocation
    /// unknown), as browsers do without an answer.
    pub fn new(roots: RootCertStore, crls: Vec<CertificateRevocationListDer<'static>>, untrusted_upstream: UntrustedUpstream) -> Result<Self, String> {
        let mut builder = WebPkiServerVerifier::builder(Arc::new(roots));
        if !crls.is_empty() {
            builder = builder.with_crls(crls).allow_unknown_revocation_status();
        }
        let verifier = builder.build().map_err(|e| e.to_string())?;
        let ticketer = rustls::crypto::aws_lc_rs::Ticketer::new().map_err(|e| format!("session tickets: {e}"))?;
        Ok(Self { verifier, untrusted_upstream, key_log: None, ticketer: Some(ticketer), upstream_sessions: DEFAULT_UPSTREAM_SESSIONS })
    }

    /// Upstream sessions each worker keeps at most (0: none).
    pub fn with_upstream_sessions(mut self, n: usize) -> Self {
        self.upstream_sessions = n;
        self
    }

    /// No resumption on either leg (`[tls] resumption = false`).
    pub fn without_resumption(mut self) -> Self {
        self.ticketer = None;
        self.upstream_sessions = 0;
        self
    }

    /// Writes both legs' secrets of every session to `key_log`.
    pub fn with_key_log(mut self, key_log: Arc<dyn rustls::KeyLog>) -> Self {
        self.key_log = Some(key_log);
        self
    }
}

/// Upstream sessions a worker keeps by default.
pub const DEFAULT_UPSTREAM_SESSIONS: usize = 1024;

/// Validates like a browser (webpki: chain, name, validity, key usage) and records the verdict
/// in the running flow's context; with `forward_untrusted` an invalid chain is let through here
/// and marked. One per worker (see `sessions`).
#[derive(Debug)]
struct RecordingVerifier {
    inner: Arc<WebPkiServerVerifier>,
    forward_untrusted: bool,
    scratch: Arc<Scratch>,
}

impl ServerCertVerifier for RecordingVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.inner.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            Ok(v) => {
                let until = chain_valid_until(end_entity, intermediates);
                self.scratch.update(|c| c.validated_until = until);
                Ok(v)
            }
            Err(e) => {
                self.scratch.update(|c| c.verdict = Some(e.to_string()));
                if self.forward_untrusted {
                    Ok(ServerCertVerified::assertion())
                } else {
                    Err(e)
                }
            }
        }
    }

    fn verify_tls12_signature(&self, message: &[u8], cert: &CertificateDer<'_>, dss: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(&self, message: &[u8], cert: &CertificateDer<'_>, dss: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Notes in the running flow's context that the server asked for a client certificate, and
/// offers none. One per worker.
#[derive(Debug)]
struct NoteClientAuth(Arc<Scratch>);

impl ResolvesClientCert for NoteClientAuth {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        self.0.update(|c| c.client_auth = true);
        None
    }
    fn has_certs(&self) -> bool {
        true
    }
}

#[derive(Debug)]
struct Forged(Arc<CertifiedKey>);

impl ResolvesServerCert for Forged {
    fn resolve(&self, _hello: RustlsHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// What the upstream connection offers on the client's behalf: the key exchange groups and
/// cipher suites the client offered that we speak, in the client's order, so that the server is
/// offered nothing the client did not offer (a client offering X25519MLKEM768 gets it upstream
/// too, one that offers only AES-256 never gets AES-128 or ChaCha20 on its behalf); the versions
/// both speak, its ALPN list and whether it sent an SNI. One client configuration per shape.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Shape {
    groups: Vec<u16>,
    suites: Vec<u16>,
    versions: Vec<u16>,
    alpn: Vec<Vec<u8>>,
    sni: bool,
}

impl Shape {
    fn of(hello: &ClientHello, base: &CryptoProvider, versions: &[&'static SupportedProtocolVersion]) -> Result<Self, Failure> {
        let ours: Vec<u16> = base.kx_groups.iter().map(|g| u16::from(g.name())).collect();
        // A TLS 1.2 hello without supported_groups: the defaults (what the server picks is ECDHE
        // over one of them, which the client then has to accept).
        let groups: Vec<u16> = if hello.groups.is_empty() { ours } else { hello.groups.iter().copied().filter(|g| ours.contains(g)).collect() };
        if groups.is_empty() {
            return Err(Failure::Client("no key exchange group in common".into()));
        }
        let suites: Vec<u16> = hello.cipher_suites.iter().copied().filter(|c| base.cipher_suites.iter().any(|s| u16::from(s.suite()) == *c)).collect();
        if suites.is_empty() {
            return Err(Failure::Client("no cipher suite in common".into()));
        }
        Ok(Self {
            groups,
            suites,
            versions: versions.iter().map(|v| u16::from(v.version)).collect(),
            alpn: hello.alpn.clone(),
            sni: hello.sni.is_some(),
        })
    }

    fn provider(&self, base: &CryptoProvider) -> CryptoProvider {
        let kx_groups = self.groups.iter().filter_map(|v| base.kx_groups.iter().find(|g| u16::from(g.name()) == *v).copied()).collect();
        let cipher_suites = self.suites.iter().filter_map(|c| base.cipher_suites.iter().find(|s| u16::from(s.suite()) == *c).copied()).collect();
        CryptoProvider { kx_groups, cipher_suites, ..base.clone() }
    }
}

/// Client configurations a worker keeps (one per shape of offer; browsers have a handful).
const MAX_CLIENT_CONFIGS: usize = 256;

/// A ticketer that issues nothing and accepts nothing: a client leg whose upstream did not
/// validate gets a full handshake, so the client sees the untrusted certificate and never
/// resumes past it.
#[derive(Debug)]
struct NoTickets;

impl ProducesTickets for NoTickets {
    fn enabled(&self) -> bool {
        false
    }
    fn lifetime(&self) -> u32 {
        0
    }
    fn encrypt(&self, _plain: &[u8]) -> Option<Vec<u8>> {
        None
    }
    fn decrypt(&self, _cipher: &[u8]) -> Option<Vec<u8>> {
        None
    }
}

/// What one worker's inspected flows share: the appliance's settings, the forger, one verifier
/// and one client-certificate resolver (rustls resumes a session only under the ones that made
/// it), the client configurations built once per shape of offer, the client-leg configuration
/// per set of versions, and the upstream sessions.
pub struct WorkerTls {
    pub config: Arc<TlsConfig>,
    pub forger: Forger,
    base: CryptoProvider,
    scratch: Arc<Scratch>,
    verifier: Arc<RecordingVerifier>,
    client_auth: Arc<NoteClientAuth>,
    store: Option<Arc<UpstreamStore>>,
    clients: HashMap<Shape, (u64, Arc<ClientConfig>)>,
    servers: HashMap<Vec<u16>, Arc<ServerConfig>>,
    next_shape: u64,
}

impl WorkerTls {
    pub fn new(config: Arc<TlsConfig>, forger: Forger) -> Self {
        let scratch = Arc::new(Scratch::default());
        let verifier = Arc::new(RecordingVerifier {
            inner: config.verifier.clone(),
            forward_untrusted: config.untrusted_upstream == UntrustedUpstream::ForwardUntrusted,
            scratch: scratch.clone(),
        });
        let store = (config.upstream_sessions > 0).then(|| Arc::new(UpstreamStore::new(scratch.clone(), config.upstream_sessions)));
        Self {
            forger,
            base: rustls::crypto::aws_lc_rs::default_provider(),
            client_auth: Arc::new(NoteClientAuth(scratch.clone())),
            verifier,
            scratch,
            store,
            clients: HashMap::new(),
            servers: HashMap::new(),
            next_shape: 0,
            config,
        }
    }

    /// The upstream configuration for a shape of offer, built the first time it is seen.
    fn client_config(&mut self, shape: Shape) -> Result<(u64, Arc<ClientConfig>), Failure> {
        if let Some(c) = self.clients.get(&shape) {
            return Ok(c.clone());
        }
        let versions: Vec<&'static SupportedProtocolVersion> =
            rustls::ALL_VERSIONS.iter().copied().filter(|v| shape.versions.contains(&u16::from(v.version))).collect();
        let mut cc = ClientConfig::builder_with_provider(Arc::new(shape.provider(&self.base)))
            .with_protocol_versions(&versions)
            .map_err(|e| Failure::Client(format!("TLS versions: {e}")))?
            .dangerous()
            .with_custom_certificate_verifier(self.verifier.clone())
            .with_client_cert_resolver(self.client_auth.clone());
        cc.alpn_protocols = shape.alpn.clone();
        cc.enable_sni = shape.sni;
        if let Some(k) = &self.config.key_log {
            cc.key_log = k.clone();
        }
        cc.resumption = match &self.store {
            Some(store) => rustls::client::Resumption::store(store.clone()),
            None => rustls::client::Resumption::disabled(),
        };
        if self.clients.len() >= MAX_CLIENT_CONFIGS {
            // A worker that saw this many shapes is being probed: start again (the sessions of
            // the old shapes are not found any more, which is all that is lost).
            self.clients.clear();
        }
        self.next_shape += 1;
        let entry = (self.next_shape, Arc::new(cc));
        self.clients.insert(shape, entry.clone());
        Ok(entry)
    }

    /// The client leg's configuration for `versions`, to be completed with the flow's
    /// certificate and ALPN.
    fn server_config(&mut self, versions: &[&'static SupportedProtocolVersion]) -> ServerConfig {
        let key: Vec<u16> = versions.iter().map(|v| u16::from(v.version)).collect();
        let config = &self.config;
        let base = self.servers.entry(key).or_insert_with(|| {
            let mut sc = ServerConfig::builder_with_protocol_versions(versions)
                .with_no_client_auth()
                .with_cert_resolver(Arc::new(NoCert));
            if let Some(k) = &config.key_log {
                sc.key_log = k.clone();
            }
            // Stateless tickets only (no session-ID cache: tickets serve TLS 1.2 too); never
            // early data (`max_early_data_size` stays 0).
            sc.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
            sc.ticketer = config.ticketer.clone().unwrap_or_else(|| Arc::new(NoTickets));
            Arc::new(sc)
        });
        ServerConfig::clone(base)
    }

    /// Upstream sessions held now.
    pub fn upstream_sessions(&self) -> usize {
        self.store.as_ref().map_or(0, |s| s.sessions())
    }
}

/// The resolver of a configuration not yet given its flow's certificate.
#[derive(Debug)]
struct NoCert;

impl ResolvesServerCert for NoCert {
    fn resolve(&self, _hello: RustlsHello<'_>) -> Option<Arc<CertifiedKey>> {
        None
    }
}

/// The versions both we and the client speak (never one the client did not offer).
pub fn common_versions(hello: &ClientHello) -> Vec<&'static SupportedProtocolVersion> {
    let mut v = Vec::new();
    if hello.offers(TLS1_3) {
        v.push(&rustls::version::TLS13);
    }
    if hello.offers(TLS1_2) || (hello.versions.iter().all(|x| *x <= TLS1_2) && hello.max_version() >= TLS1_2) {
        v.push(&rustls::version::TLS12);
    }
    v
}

/// Bytes of TLS output a direction may hold before its input is no longer read.
pub const PENDING_LIMIT: usize = 256 * 1024;

/// Bytes of the client's first flight held while the upstream handshake runs: a ClientHello of
/// the largest size the parser accepts in the smallest records, and no more.
pub const MAX_HELD: usize = 2 * crate::tls::clienthello::MAX_HELLO;

/// Writes all of `data` as plaintext on `conn`, moving its TLS records into `out` whenever
/// rustls' own buffer is full (its limit, 64 KiB, is below a head the relay may have held, and
/// what a held head adds to a record already buffered).
fn write_plain<T>(conn: &mut rustls::ConnectionCommon<T>, out: &mut Vec<u8>, mut data: &[u8]) -> std::io::Result<()> {
    while !data.is_empty() {
        let mut n = conn.writer().write(data)?;
        if n == 0 {
            while conn.wants_write() {
                conn.write_tls(out)?;
            }
            n = conn.writer().write(data)?;
            if n == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
        }
        data = &data[n..];
    }
    Ok(())
}

/// Forwards what of `held` + `chunk` is not among its last `hold` bytes, in one write (one TLS
/// record on the other leg), and keeps those: a chunk goes straight through (no copy) unless
/// part of it is held. An emptied hold buffer is freed (a split head is rare).
fn release(held: &mut Vec<u8>, chunk: &[u8], hold: usize, mut write: impl FnMut(&[u8]) -> std::io::Result<()>) -> std::io::Result<()> {
    let out = (held.len() + chunk.len()).saturating_sub(hold);
    if held.is_empty() {
        if out > 0 {
            write(&chunk[..out])?;
        }
        held.extend_from_slice(&chunk[out..]);
        return Ok(());
    }
    held.extend_from_slice(chunk);
    if out > 0 {
        write(&held[..out])?;
        held.drain(..out);
    }
    if held.is_empty() {
        *held = Vec::new();
    }
    Ok(())
}

pub struct Interceptor {
    upstream: ClientConnection,
    downstream: Option<ServerConnection>,
    hello: Vec<u8>,
    sni: Option<String>,
    versions: Vec<&'static SupportedProtocolVersion>,
    /// The worker's, for the flow's rustls calls upstream; `ctx` is this flow's part of it.
    scratch: Arc<Scratch>,
    ctx: FlowCtx,
    inspector: Box<dyn Inspector>,
    /// TLS bytes waiting to be sent to each side.
    pub to_server: Vec<u8>,
    pub to_client: Vec<u8>,
    /// A block page went to the client (HTTP/1): its leg ends with a FIN, not an RST.
    pub block_page_sent: bool,
    pub info: TlsInfo,
    client_closed: bool,
    server_closed: bool,
    /// Plaintext held back per direction (to the server, to the client): the start of an HTTP/1
    /// head that its rules have not judged yet ([`Inspector::unfinished_head`]).
    held: [Vec<u8>; 2],
}

impl Interceptor {
    /// Starts the connection to the server for a client whose first flight is `hello_records`.
    pub fn new(
        w: &mut WorkerTls,
        hello_records: Vec<u8>,
        hello: &ClientHello,
        server_ip: Ipv4Addr,
        inspector: Box<dyn Inspector>,
    ) -> Result<Self, Failure> {
        let versions = common_versions(hello);
        if versions.is_empty() {
            return Err(Failure::Client("no TLS version in common".into()));
        }
        let shape = Shape::of(hello, &w.base, &versions)?;
        // The upstream offer holds the client's groups that we speak (our defaults for a hello
        // that names none, which offered nothing post-quantum).
        let offer = super::grade::Offer {
            max_version: hello.max_version(),
            pq_we_speak: !hello.groups.is_empty() && shape.groups.iter().any(|g| super::grade::is_post_quantum(*g)),
        };
        let (shape_id, cc) = w.client_config(shape)?;
        let name = match &hello.sni {
            Some(s) => ServerName::try_from(s.clone()).map_err(|_| Failure::Client(format!("bad SNI '{s}'")))?,
            None => ServerName::IpAddress(IpAddr::V4(server_ip).into()),
        };
        let mut ctx = FlowCtx { server: Some(server_ip), shape: shape_id, ..FlowCtx::default() };
        // (A stored session for this server, offer and name is looked up here.)
        let upstream = w.scratch.with(&mut ctx, || ClientConnection::new(cc, name)).map_err(|e| Failure::Upstream(e.to_string()))?;
        let mut me = Self {
            upstream,
            downstream: None,
            hello: hello_records,
            sni: hello.sni.clone(),
            versions,
            scratch: w.scratch.clone(),
            ctx,
            inspector,
            to_server: Vec::new(),
            to_client: Vec::new(),
            block_page_sent: false,
            info: TlsInfo { offer, ..TlsInfo::default() },
            client_closed: false,
            server_closed: false,
            held: [Vec::new(), Vec::new()],
        };
        me.flush_upstream();
        Ok(me)
    }

    fn flush_upstream(&mut self) {
        while self.upstream.wants_write() {
            if self.upstream.write_tls(&mut self.to_server).is_err() {
                break;
            }
        }
    }

    fn flush_downstream(&mut self) {
        if let Some(d) = self.downstream.as_mut() {
            while d.wants_write() {
                if d.write_tls(&mut self.to_client).is_err() {
                    break;
                }
            }
        }
    }

    /// Why the upstream handshake failed. An invalid certificate comes first: a server that
    /// also asks for a client certificate must not earn an exclusion with it.
    fn upstream_error(&self, e: rustls::Error) -> Failure {
        if let Some(reason) = self.ctx.verdict.clone() {
            return Failure::UpstreamInvalid(reason);
        }
        if self.ctx.client_auth {
            return Failure::ClientAuthRequested;
        }
        Failure::Upstream(e.to_string())
    }

    /// TLS bytes from the server.
    pub fn take_from_server(&mut self, mut data: &[u8], w: &mut WorkerTls) -> Result<(), Failure> {
        while !data.is_empty() {
            let n = self.upstream.read_tls(&mut data).map_err(|e| Failure::Upstream(e.to_string()))?;
            // The verifier, the client-certificate resolver and the session store run in here.
            let upstream = &mut self.upstream;
            let state = self.scratch.with(&mut self.ctx, || upstream.process_new_packets());
            if let Err(e) = state {
                self.flush_upstream();
                return Err(self.upstream_error(e));
            }
            // Drain plaintext record by record: rustls holds only so much unread.
            self.pump(w)?;
            if n == 0 {
                break;
            }
        }
        self.pump(w)
    }

    /// TLS bytes from the client.
    pub fn take_from_client(&mut self, mut data: &[u8], w: &mut WorkerTls) -> Result<(), Failure> {
        if self.downstream.is_none() {
            // Before the server is up, the client has nothing more to say than its hello; the
            // caller stops reading (see `wants_from_client`), so what is held here is bounded.
            if self.hello.len() + data.len() > MAX_HELD {
                return Err(Failure::Client(format!("{} bytes sent before the server answered", self.hello.len() + data.len())));
            }
            self.hello.extend_from_slice(data);
            return Ok(());
        }
        while !data.is_empty() {
            let Some(down) = self.downstream.as_mut() else {
                break;
            };
            let n = down.read_tls(&mut data).map_err(|e| Failure::Client(e.to_string()))?;
            if let Err(e) = down.process_new_packets() {
                self.flush_downstream();
                return Err(match e {
                    rustls::Error::AlertReceived(
                        a @ (AlertDescription::UnknownCA | AlertDescription::BadCertificate | AlertDescription::CertificateUnknown),
                    ) => Failure::ClientRejected(format!("{a:?}")),
                    other => Failure::Client(other.to_string()),
                });
            }
            self.pump(w)?;
            if n == 0 {
                break;
            }
        }
        self.pump(w)
    }

    /// Whether input from a side may be read now (its output towards the other side has room).
    ///
    /// Until the server's handshake is done, nothing is read from the client past its hello:
    /// what it sends waits in its leg's receive buffer and closes its TCP window.
    pub fn wants_from_client(&self) -> bool {
        self.downstream.is_some() && self.to_server.len() < PENDING_LIMIT
    }

    pub fn wants_from_server(&self) -> bool {
        self.to_client.len() < PENDING_LIMIT
    }

    /// A TLS session towards the client exists (a raw alert would now be out of place).
    pub fn client_session_started(&self) -> bool {
        self.downstream.is_some()
    }

    /// Both handshakes are done.
    pub fn is_open(&self) -> bool {
        self.downstream.as_ref().is_some_and(|d| !d.is_handshaking()) && !self.upstream.is_handshaking()
    }

    fn pump(&mut self, w: &mut WorkerTls) -> Result<(), Failure> {
        if self.downstream.is_none() && !self.upstream.is_handshaking() {
            self.open_downstream(w)?;
        }
        if self.is_open() {
            self.relay()?;
        }
        self.flush_upstream();
        self.flush_downstream();
        Ok(())
    }

    /// The server is up: answer the held ClientHello with a forged certificate.
    fn open_downstream(&mut self, w: &mut WorkerTls) -> Result<(), Failure> {
        let leaf = self
            .upstream
            .peer_certificates()
            .and_then(|c| c.first())
            .ok_or_else(|| Failure::Upstream("the server sent no certificate".into()))?;
        let invalid = self.ctx.verdict.clone();
        self.info.upstream_invalid = invalid.clone();
        self.info.upstream_resumed = self.upstream.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
        self.info.server_cert = crate::inspect::cert::CertSummary::of(leaf);
        if self.ctx.client_auth {
            // The server asked for a client certificate and accepted none (optional client
            // authentication): inspecting would silently strip the client's certificate.
            return Err(match invalid {
                Some(reason) => Failure::UpstreamInvalid(reason),
                None => Failure::ClientAuthRequested,
            });
        }
        // The IPS sees the real server's certificates before the client is answered.
        let chain: Vec<&[u8]> = self.upstream.peer_certificates().map(|c| c.iter().map(|d| d.as_ref()).collect()).unwrap_or_default();
        let version = self.upstream.protocol_version().map(u16::from);
        if let Verdict::Block(cause) = self.inspector.server_certificates(&chain, version) {
            return Err(Failure::Blocked(cause));
        }
        let ck = w
            .forger
            .forge(leaf, self.sni.as_deref(), invalid.is_none())
            .map_err(|e| Failure::Upstream(format!("forging: {e}")))?;
        let alpn = self.upstream.alpn_protocol().map(<[u8]>::to_vec);
        self.info.alpn = alpn.as_ref().map(|a| String::from_utf8_lossy(a).into_owned());
        self.info.upstream_version = self.upstream.protocol_version().map(|v| crate::tls::clienthello::version_name(u16::from(v)).to_string());
        self.info.upstream_cipher = self.upstream.negotiated_cipher_suite().map(|c| format!("{:?}", c.suite()));
        self.info.upstream_kx_group = self.upstream.negotiated_key_exchange_group().map(|g| format!("{:?}", g.name()));
        self.info.upstream_leg = super::grade::Leg {
            version: self.upstream.protocol_version().map(u16::from),
            suite: self.upstream.negotiated_cipher_suite().map(|c| u16::from(c.suite())),
            group: self.upstream.negotiated_key_exchange_group().map(|g| u16::from(g.name())),
            validated: invalid.is_none(),
        };
        let mut sc = w.server_config(&self.versions);
        sc.cert_resolver = Arc::new(Forged(ck));
        sc.alpn_protocols = alpn.into_iter().collect();
        if invalid.is_some() {
            // The client must see the untrusted certificate: no ticket taken or given.
            sc.ticketer = Arc::new(NoTickets);
        }
        let mut down = ServerConnection::new(Arc::new(sc)).map_err(|e| Failure::Client(e.to_string()))?;
        let hello = std::mem::take(&mut self.hello);
        let mut rest = &hello[..];
        while !rest.is_empty() {
            let n = down.read_tls(&mut rest).map_err(|e| Failure::Client(e.to_string()))?;
            down.process_new_packets().map_err(|e| Failure::Client(e.to_string()))?;
            if n == 0 {
                break;
            }
        }
        self.downstream = Some(down);
        Ok(())
    }

    /// Moves plaintext both ways through the inspector, a received record's plaintext at a time,
    /// straight from rustls' buffers (no copy): each becomes a record of its own on the other
    /// leg, so the peers' record boundaries, and so when the other end's reads return, are kept.
    /// (Coalescing them broke curl 7.88's HTTP/2 upload when nginx answers early: the response
    /// and its RST_STREAM in one record were read as a stream error.)
    fn relay(&mut self) -> Result<(), Failure> {
        let Some(down) = self.downstream.as_mut() else {
            return Ok(());
        };
        if self.info.client_version.is_none() {
            self.info.client_version = down.protocol_version().map(|v| crate::tls::clienthello::version_name(u16::from(v)).to_string());
            self.info.client_cipher = down.negotiated_cipher_suite().map(|c| format!("{:?}", c.suite()));
            self.info.client_kx_group = down.negotiated_key_exchange_group().map(|g| format!("{:?}", g.name()));
            self.info.client_resumed = down.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
            // The forged certificate validates under the operator's CA, unless the upstream's
            // did not (then it is forged not to, so that the client refuses it as it would).
            self.info.client_leg = super::grade::Leg {
                version: down.protocol_version().map(u16::from),
                suite: down.negotiated_cipher_suite().map(|c| u16::from(c.suite())),
                group: down.negotiated_key_exchange_group().map(|g| u16::from(g.name())),
                validated: self.info.upstream_invalid.is_none(),
            };
        }
        // Client -> server.
        loop {
            let mut reader = down.reader();
            let chunk = match reader.fill_buf() {
                Ok([]) => {
                    if !self.client_closed {
                        self.client_closed = true;
                        // The client ended inside a head: the server gets it as the client sent it.
                        let rest = std::mem::take(&mut self.held[0]);
                        write_plain(&mut self.upstream, &mut self.to_server, &rest).map_err(|e| Failure::Upstream(e.to_string()))?;
                        self.upstream.send_close_notify();
                    }
                    break;
                }
                Ok(chunk) => chunk,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(Failure::Client(e.to_string())),
            };
            let n = chunk.len();
            if let Verdict::Block(why) = self.inspector.inspect(Direction::ToServer, chunk) {
                // The request goes no further; an HTTP client gets a block page, any other
                // client the session's closing alert.
                if let Some(page) = self.inspector.block_response() {
                    let _ = down.writer().write_all(&page);
                    self.block_page_sent = true;
                }
                down.send_close_notify();
                while down.wants_write() {
                    if down.write_tls(&mut self.to_client).is_err() {
                        break;
                    }
                }
                return Err(Failure::Blocked(why));
            }
            let hold = self.inspector.unfinished_head(Direction::ToServer);
            release(&mut self.held[0], chunk, hold, |b| write_plain(&mut self.upstream, &mut self.to_server, b)).map_err(|e| Failure::Upstream(e.to_string()))?;
            reader.consume(n);
        }
        // Server -> client.
        loop {
            let mut reader = self.upstream.reader();
            match reader.fill_buf() {
                Ok([]) => {
                    if !self.server_closed {
                        self.server_closed = true;
                        let rest = std::mem::take(&mut self.held[1]);
                        write_plain(down, &mut self.to_client, &rest).map_err(|e| Failure::Client(e.to_string()))?;
                        down.send_close_notify();
                    }
                    break;
                }
                Ok(chunk) => {
                    let n = chunk.len();
                    if let Verdict::Block(why) = self.inspector.inspect(Direction::ToClient, chunk) {
                        // What the server sent goes no further; the client gets the session's
                        // closing alert.
                        down.send_close_notify();
                        while down.wants_write() {
                            if down.write_tls(&mut self.to_client).is_err() {
                                break;
                            }
                        }
                        return Err(Failure::Blocked(why));
                    }
                    let hold = self.inspector.unfinished_head(Direction::ToClient);
                    release(&mut self.held[1], chunk, hold, |b| write_plain(down, &mut self.to_client, b)).map_err(|e| Failure::Client(e.to_string()))?;
                    reader.consume(n);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(Failure::Upstream(e.to_string())),
            }
        }
        Ok(())
    }

    /// Rules the inspector saw fire since the last call.
    /// HTTP transactions the inspector completed (all of them with `flush`, at the flow's end).
    pub fn take_http(&mut self, flush: bool) -> Vec<crate::inspect::HttpTx> {
        self.inspector.http_transactions(flush)
    }

    pub fn take_alerts(&mut self) -> Vec<crate::inspect::ips::Hit> {
        self.inspector.alerts()
    }

    /// Per direction, so far: plaintext bytes past the IPS's body depth that it did not scan.
    pub fn unscanned(&self) -> [u64; 2] {
        self.inspector.unscanned()
    }

    /// The client sent close_notify (its plaintext has ended).
    pub fn client_done(&self) -> bool {
        self.client_closed
    }

    pub fn server_done(&self) -> bool {
        self.server_closed
    }

    /// A fatal alert record for a client whose connection is refused before any TLS session
    /// exists towards it.
    pub fn alert(description: u8) -> [u8; 7] {
        [21, 3, 3, 0, 2, 2, description]
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, reason = "a failed unwrap is a failed test")]
mod tests;
