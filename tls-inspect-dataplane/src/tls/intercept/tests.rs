//! A rustls client <-> interceptor <-> rustls server chain in memory, with a test PKI for the
//! server and an operator CA for the forged certificates (`testutil::pki`).

use std::io::Read as _;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, ClientConnection, ServerConfig, ServerConnection};

use super::*;
use crate::inspect::PassAll;
use crate::tls::ca::Ca;
use crate::testutil::pki::{ca, issuer_cn, leaf, roots};
use crate::tls::clienthello::{sniff, Sniff};

struct World {
    operator: CertificateDer<'static>,
    shared: WorkerTls,
    server_cfg: Arc<ServerConfig>,
}

fn world(untrusted: UntrustedUpstream, server_alpn: &[&str], mtls: bool) -> World {
    let (test_root, test_root_key) = ca("Test Server Root");
    let (operator, operator_key) = ca("Operator CA");
    let (chain, key) = leaf(&test_root, test_root_key, &["server.test"]);
    let builder = ServerConfig::builder();
    let builder = if mtls {
        builder.with_client_cert_verifier(WebPkiClientVerifier::builder(Arc::new(roots(&[&test_root]))).build().unwrap())
    } else {
        builder.with_no_client_auth()
    };
    let mut sc = builder.with_single_cert(chain, key).unwrap();
    sc.alpn_protocols = server_alpn.iter().map(|a| a.as_bytes().to_vec()).collect();
    let forger = Forger::new(&Ca { cert: operator.clone(), key: operator_key, chain: vec![] }, 16).unwrap();
    World {
        operator,
        shared: WorkerTls::new(Arc::new(TlsConfig::new(roots(&[&test_root]), Vec::new(), untrusted).unwrap()), forger),
        server_cfg: Arc::new(sc),
    }
}

fn client(trust: &CertificateDer<'static>, name: &str, alpn: &[&str], tls12_only: bool) -> ClientConnection {
    let builder = if tls12_only {
        ClientConfig::builder_with_protocol_versions(&[&rustls::version::TLS12])
    } else {
        ClientConfig::builder()
    };
    let mut cc = builder.with_root_certificates(roots(&[trust])).with_no_client_auth();
    cc.alpn_protocols = alpn.iter().map(|a| a.as_bytes().to_vec()).collect();
    ClientConnection::new(Arc::new(cc), ServerName::try_from(name.to_string()).unwrap()).unwrap()
}

/// Blocks a direction as soon as its plaintext contains a pattern.
struct BlockOn(&'static [u8]);

impl crate::inspect::Inspector for BlockOn {
    fn inspect(&mut self, _d: crate::inspect::Direction, data: &[u8]) -> crate::inspect::Verdict {
        if data.windows(self.0.len()).any(|w| w == self.0) {
            crate::inspect::Verdict::Block(crate::inspect::BlockCause::Rule { sid: 7, msg: "pattern".into() })
        } else {
            crate::inspect::Verdict::Continue
        }
    }
}

/// Runs the three parties until nothing moves; returns the interceptor's failure, if any.
fn run(w: &mut World, client: &mut ClientConnection, server: &mut ServerConnection) -> (Option<Interceptor>, Option<Failure>) {
    run_with(w, client, server, Box::new(PassAll))
}

fn run_with(
    w: &mut World,
    client: &mut ClientConnection,
    server: &mut ServerConnection,
    inspector: Box<dyn crate::inspect::Inspector>,
) -> (Option<Interceptor>, Option<Failure>) {
    run_at(w, client, server, "198.18.0.2", inspector)
}

/// As [`run_with`], with the server at `server_ip`.
fn run_at(
    w: &mut World,
    client: &mut ClientConnection,
    server: &mut ServerConnection,
    server_ip: &str,
    inspector: Box<dyn crate::inspect::Inspector>,
) -> (Option<Interceptor>, Option<Failure>) {
    let mut hello = Vec::new();
    client.write_tls(&mut hello).unwrap();
    let Sniff::Hello(ch) = sniff(&hello) else { panic!("no hello") };
    let mut icpt = Interceptor::new(&mut w.shared, hello, &ch, server_ip.parse().unwrap(), inspector).unwrap();
    for _ in 0..50 {
        let mut moved = false;
        if !icpt.to_server.is_empty() {
            let data = std::mem::take(&mut icpt.to_server);
            let mut rest = &data[..];
            while !rest.is_empty() {
                if server.read_tls(&mut rest).unwrap() == 0 {
                    break;
                }
                if server.process_new_packets().is_err() {
                    break;
                }
            }
            moved = true;
        }
        let mut out = Vec::new();
        while server.wants_write() {
            server.write_tls(&mut out).unwrap();
        }
        if !out.is_empty() {
            moved = true;
            if let Err(f) = icpt.take_from_server(&out, &mut w.shared) {
                return (Some(icpt), Some(f));
            }
        }
        if !icpt.to_client.is_empty() {
            let data = std::mem::take(&mut icpt.to_client);
            let mut rest = &data[..];
            while !rest.is_empty() {
                if client.read_tls(&mut rest).unwrap() == 0 {
                    break;
                }
                if client.process_new_packets().is_err() {
                    break;
                }
            }
            moved = true;
        }
        let mut out = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut out).unwrap();
        }
        if !out.is_empty() {
            moved = true;
            if let Err(f) = icpt.take_from_client(&out, &mut w.shared) {
                return (Some(icpt), Some(f));
            }
        }
        if !moved {
            break;
        }
    }
    (Some(icpt), None)
}

fn read_all(conn: &mut impl std::ops::DerefMut<Target = rustls::ConnectionCommon<impl Sized>>) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match conn.reader().read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(_) => break,
        }
    }
    out
}

#[test]
fn tls13_with_alpn_and_data_both_ways() {
    let mut w = world(UntrustedUpstream::Block, &["h2", "http/1.1"], false);
    let mut c = client(&w.operator, "server.test", &["h2", "http/1.1"], false);
    let mut s = ServerConnection::new(w.server_cfg.clone()).unwrap();
    let (icpt, failure) = run(&mut w, &mut c, &mut s);
    assert_eq!(failure, None);
    assert!(!c.is_handshaking() && !s.is_handshaking());
    // The client saw a certificate from the operator's CA, for the server's names.
    let cert = &c.peer_certificates().unwrap()[0];
    assert_eq!(issuer_cn(cert), "Operator CA");
    assert_eq!(c.alpn_protocol(), Some(&b"h2"[..]), "the ALPN the server chose");
    assert_eq!(c.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_3));
    let mut icpt = icpt.unwrap();
    assert_eq!(icpt.info.alpn.as_deref(), Some("h2"));

    // Plaintext both ways.
    c.writer().write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    s.writer().write_all(b"HTTP/1.1 200 OK\r\n\r\nhello").unwrap();
    for _ in 0..5 {
        let mut out = Vec::new();
        while c.wants_write() {
            c.write_tls(&mut out).unwrap();
        }
        icpt.take_from_client(&out, &mut w.shared).unwrap();
        let data = std::mem::take(&mut icpt.to_server);
        let _ = s.read_tls(&mut &data[..]);
        s.process_new_packets().unwrap();
        let mut out = Vec::new();
        while s.wants_write() {
            s.write_tls(&mut out).unwrap();
        }
        icpt.take_from_server(&out, &mut w.shared).unwrap();
        let data = std::mem::take(&mut icpt.to_client);
        let _ = c.read_tls(&mut &data[..]);
        c.process_new_packets().unwrap();
    }
    assert_eq!(read_all(&mut s), b"GET / HTTP/1.1\r\n\r\n");
    assert_eq!(read_all(&mut c), b"HTTP/1.1 200 OK\r\n\r\nhello");
    // One signature served both this connection and the next (cache).
    assert_eq!(w.shared.forger.signed, 1);
}

#[test]
fn tls12_client_gets_tls12_both_ways() {
    let mut w = world(UntrustedUpstream::Block, &[], false);
    let mut c = client(&w.operator, "server.test", &[], true);
    let mut s = ServerConnection::new(w.server_cfg.clone()).unwrap();
    let (icpt, failure) = run(&mut w, &mut c, &mut s);
    assert_eq!(failure, None);
    assert_eq!(c.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_2));
    assert_eq!(s.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_2), "never more than the client offered... nor less");
    assert_eq!(icpt.unwrap().info.upstream_version.as_deref(), Some("TLS 1.2"));
}

#[test]
fn a_wrong_name_upstream_is_blocked_with_the_reason() {
    let mut w = world(UntrustedUpstream::Block, &[], false);
    let mut c = client(&w.operator, "other.test", &[], false);
    let mut s = ServerConnection::new(w.server_cfg.clone()).unwrap();
    let (_, failure) = run(&mut w, &mut c, &mut s);
    match failure {
        Some(Failure::UpstreamInvalid(why)) => assert!(why.contains("not valid for name"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert!(c.is_handshaking(), "the client never got a certificate");
}

#[test]
fn forward_untrusted_lets_the_client_refuse() {
    let mut w = world(UntrustedUpstream::ForwardUntrusted, &[], false);
    let mut c = client(&w.operator, "other.test", &[], false);
    let mut s = ServerConnection::new(w.server_cfg.clone()).unwrap();
    let (icpt, failure) = run(&mut w, &mut c, &mut s);
    // The client aborts: the forged certificate is not from the operator's CA.
    assert!(matches!(failure, Some(Failure::ClientRejected(_))), "{failure:?}");
    assert!(icpt.unwrap().info.upstream_invalid.unwrap().contains("not valid for name"));
}

#[test]
fn an_mtls_server_is_recognised() {
    let mut w = world(UntrustedUpstream::Block, &[], true);
    let mut c = client(&w.operator, "server.test", &[], false);
    let mut s = ServerConnection::new(w.server_cfg.clone()).unwrap();
    let (_, failure) = run(&mut w, &mut c, &mut s);
    // TLS 1.3: the server rejects the empty certificate after our Finished; the failure may
    // come on the next server flight.
    let failure = failure.or_else(|| {
        let mut out = Vec::new();
        while s.wants_write() {
            s.write_tls(&mut out).unwrap();
        }
        None
    });
    assert!(matches!(failure, Some(Failure::ClientAuthRequested)), "{failure:?}");
}

#[test]
fn a_client_that_does_not_trust_us_is_recognised() {
    let (other_root, _) = ca("Some Other Root");
    let mut w = world(UntrustedUpstream::Block, &[], false);
    let mut c = client(&other_root, "server.test", &[], false);
    let mut s = ServerConnection::new(w.server_cfg.clone()).unwrap();
    let (_, failure) = run(&mut w, &mut c, &mut s);
    assert!(matches!(failure, Some(Failure::ClientRejected(_))), "{failure:?}");
}

#[test]
fn the_inspector_sees_plaintext_and_can_block() {
    let mut w = world(UntrustedUpstream::Block, &[], false);
    let mut c = client(&w.operator, "server.test", &[], false);
    let mut s = ServerConnection::new(w.server_cfg.clone()).unwrap();
    // The request goes out with the handshake: the inspector sees it once both sessions are up.
    c.writer().write_all(b"GET /${jndi:ldap://x} HTTP/1.1\r\n\r\n").unwrap();
    let (_, failure) = run_with(&mut w, &mut c, &mut s, Box::new(BlockOn(b"${jndi:")));
    assert_eq!(failure, Some(Failure::Blocked(crate::inspect::BlockCause::Rule { sid: 7, msg: "pattern".into() })));
    assert_eq!(read_all(&mut s), b"", "the server never received the blocked request");
}

/// Follows requests as the IPS does and blocks a head that contains "evil" once it is complete.
#[derive(Default)]
struct BlockEvilHeads(crate::inspect::http1::Http1Dir);

impl crate::inspect::Inspector for BlockEvilHeads {
    fn inspect(&mut self, d: crate::inspect::Direction, data: &[u8]) -> crate::inspect::Verdict {
        let mut evil = false;
        self.0.feed(d, data, &mut |e| {
            if let crate::inspect::http1::Http1Event::Head { raw, .. } = e {
                evil |= raw.windows(4).any(|w| w == b"evil");
            }
        });
        if evil {
            crate::inspect::Verdict::Block(crate::inspect::BlockCause::Rule { sid: 8, msg: "evil".into() })
        } else {
            crate::inspect::Verdict::Continue
        }
    }

    fn unfinished_head(&self, d: crate::inspect::Direction) -> usize {
        self.0.unfinished_head(d)
    }
}

#[test]
fn a_head_in_pieces_reaches_the_server_only_once_complete_and_judged() {
    let mut w = world(UntrustedUpstream::Block, &[], false);
    let mut c = client(&w.operator, "server.test", &[], false);
    let mut s = ServerConnection::new(w.server_cfg.clone()).unwrap();
    // Each write is a TLS record of its own: a request whose head ends in its third record,
    // then a request whose rule matches only on its whole head.
    for piece in ["GET /a HT", "TP/1.1\r\nHost: x\r", "\n\r\nGET /ev", "il HTTP/1.1\r\nHost", ": x\r\n"] {
        c.writer().write_all(piece.as_bytes()).unwrap();
    }
    let (icpt, failure) = run_with(&mut w, &mut c, &mut s, Box::<BlockEvilHeads>::default());
    assert_eq!(failure, None, "the second head is not complete yet");
    assert_eq!(read_all(&mut s), b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n", "the first head, and nothing of the second");
    let mut icpt = icpt.unwrap();
    c.writer().write_all(b"\r\n").unwrap();
    let mut out = Vec::new();
    while c.wants_write() {
        c.write_tls(&mut out).unwrap();
    }
    let failure = icpt.take_from_client(&out, &mut w.shared).err();
    assert_eq!(failure, Some(Failure::Blocked(crate::inspect::BlockCause::Rule { sid: 8, msg: "evil".into() })));
    let data = std::mem::take(&mut icpt.to_server);
    let _ = s.read_tls(&mut &data[..]);
    let _ = s.process_new_packets();
    assert_eq!(read_all(&mut s), b"", "nothing of the blocked head reached the server");
}

/// An ECHConfigList (draft-ietf-tls-esni, version 0xfe0d) for `public_name`: an X25519 key
/// (any 32 bytes: the client only encapsulates to it), HKDF-SHA256 with AES-128-GCM.
fn ech_config_list(public_name: &str) -> Vec<u8> {
    let mut contents = vec![7u8]; // config_id
    contents.extend_from_slice(&0x0020u16.to_be_bytes()); // DHKEM(X25519, HKDF-SHA256)
    contents.extend_from_slice(&32u16.to_be_bytes());
    contents.extend_from_slice(&[9u8; 32]);
    contents.extend_from_slice(&4u16.to_be_bytes());
    contents.extend_from_slice(&[0, 1, 0, 1]); // HKDF-SHA256, AES-128-GCM
    contents.push(0); // maximum_name_length
    contents.push(public_name.len() as u8);
    contents.extend_from_slice(public_name.as_bytes());
    contents.extend_from_slice(&0u16.to_be_bytes()); // no extensions
    let mut config = 0xfe0du16.to_be_bytes().to_vec();
    config.extend_from_slice(&(contents.len() as u16).to_be_bytes());
    config.extend_from_slice(&contents);
    let mut list = (config.len() as u16).to_be_bytes().to_vec();
    list.extend_from_slice(&config);
    list
}

#[test]
fn a_real_ech_client_sees_ech_securely_disabled_and_its_retry_is_inspected() {
    use rustls::client::{EchConfig, EchMode};
    let mut w = world(UntrustedUpstream::Block, &[], false);
    // The client wants "secret.test" hidden in the inner hello; the outer one names the ECH
    // configuration's public name, server.test, which is all the appliance sees and forges for.
    let ech = EchConfig::new(ech_config_list("server.test").into(), rustls::crypto::aws_lc_rs::hpke::ALL_SUPPORTED_SUITES).unwrap();
    let cc = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .with_ech(EchMode::Enable(ech))
        .unwrap()
        .with_root_certificates(roots(&[&w.operator]))
        .with_no_client_auth();
    let cc = Arc::new(cc);
    let mut c = ClientConnection::new(cc.clone(), ServerName::try_from("secret.test").unwrap()).unwrap();
    let mut probe = Vec::new();
    c.write_tls(&mut probe).unwrap();
    let Sniff::Hello(outer) = sniff(&probe) else { panic!("no hello") };
    assert!(outer.ech, "a real ECH offer");
    assert_eq!(outer.sni.as_deref(), Some("server.test"), "the outer SNI is the public name");
    let mut c = ClientConnection::new(cc, ServerName::try_from("secret.test").unwrap()).unwrap();
    let mut s = ServerConnection::new(w.server_cfg.clone()).unwrap();
    let _ = run(&mut w, &mut c, &mut s);
    // The certificate was valid for the public name and no retry configurations came: ECH is
    // "securely disabled", and the client aborts to retry without it.
    match c.process_new_packets() {
        Err(rustls::Error::PeerIncompatible(rustls::PeerIncompatible::ServerRejectedEncryptedClientHello(None))) => {}
        other => panic!("expected ECH securely disabled, got {other:?}"),
    }
    // The retry, without ECH, is inspected like any other connection.
    let mut c = client(&w.operator, "server.test", &[], false);
    let mut s = ServerConnection::new(w.server_cfg.clone()).unwrap();
    let (_, failure) = run(&mut w, &mut c, &mut s);
    assert_eq!(failure, None);
    assert!(!c.is_handshaking());
    assert_eq!(issuer_cn(&c.peer_certificates().unwrap()[0]), "Operator CA");
}

#[test]
fn the_client_s_post_quantum_group_is_used_on_both_legs_and_never_added() {
    let mut w = world(UntrustedUpstream::Block, &[], false);
    // A client offering X25519MLKEM768 (rustls' default with prefer-post-quantum).
    let mut c = client(&w.operator, "server.test", &[], false);
    let mut s = ServerConnection::new(w.server_cfg.clone()).unwrap();
    let (icpt, failure) = run(&mut w, &mut c, &mut s);
    assert_eq!(failure, None);
    let name = |g: Option<&'static dyn rustls::crypto::SupportedKxGroup>| g.map(|g| g.name());
    assert_eq!(name(c.negotiated_key_exchange_group()), Some(rustls::NamedGroup::X25519MLKEM768), "downstream");
    assert_eq!(name(s.negotiated_key_exchange_group()), Some(rustls::NamedGroup::X25519MLKEM768), "upstream");
    let info = &icpt.unwrap().info;
    assert_eq!(info.upstream_kx_group.as_deref(), Some("X25519MLKEM768"));
    // A client offering only P-256: the server is offered P-256 only.
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    provider.kx_groups = vec![rustls::crypto::aws_lc_rs::kx_group::SECP256R1];
    let cc = ClientConfig::builder_with_provider(Arc::new(provider))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots(&[&w.operator]))
        .with_no_client_auth();
    let mut c = ClientConnection::new(Arc::new(cc), ServerName::try_from("server.test").unwrap()).unwrap();
    let mut s = ServerConnection::new(w.server_cfg.clone()).unwrap();
    let (_, failure) = run(&mut w, &mut c, &mut s);
    assert_eq!(failure, None);
    assert_eq!(name(s.negotiated_key_exchange_group()), Some(rustls::NamedGroup::secp256r1), "upstream");
    assert_eq!(name(c.negotiated_key_exchange_group()), Some(rustls::NamedGroup::secp256r1), "downstream");
}

/// A client configuration that keeps its sessions (rustls' in-memory cache), trusting `trust`.
fn resuming_client(trust: &CertificateDer<'static>, tls12_only: bool) -> Arc<ClientConfig> {
    let builder = if tls12_only { ClientConfig::builder_with_protocol_versions(&[&rustls::version::TLS12]) } else { ClientConfig::builder() };
    Arc::new(builder.with_root_certificates(roots(&[trust])).with_no_client_auth())
}

fn connect(config: &Arc<ClientConfig>, name: &str) -> ClientConnection {
    ClientConnection::new(config.clone(), ServerName::try_from(name.to_string()).unwrap()).unwrap()
}

#[test]
fn both_legs_resume_the_next_connection_and_say_so() {
    for tls12 in [false, true] {
        let mut w = world(UntrustedUpstream::Block, &[], false);
        let config = resuming_client(&w.operator, tls12);
        let mut c = connect(&config, "server.test");
        let mut s = ServerConnection::new(w.server_cfg.clone()).unwrap();
        let (icpt, failure) = run(&mut w, &mut c, &mut s);
        assert_eq!(failure, None);
        let info = icpt.unwrap().info;
        assert!(!info.client_resumed && !info.upstream_resumed, "a first connection is full on both legs");
        assert!(w.shared.upstream_sessions() >= 1, "the server's session is kept (tls12 {tls12})");

        let mut c = connect(&config, "server.test");
        let mut s = ServerConnection::new(w.server_cfg.clone()).unwrap();
        let (icpt, failure) = run(&mut w, &mut c, &mut s);
        assert_eq!(failure, None);
        let info = icpt.unwrap().info;
        assert!(info.client_resumed && info.upstream_resumed, "tls12 {tls12}: {info:?}");
        assert_eq!(c.handshake_kind(), Some(rustls::HandshakeKind::Resumed));
        assert_eq!(s.handshake_kind(), Some(rustls::HandshakeKind::Resumed));
        // The resumed upstream session still carries the server's chain: rules and the log see it.
        assert!(info.server_cert.is_some_and(|c| c.subject.contains("server.test")));
        assert_eq!(info.upstream_invalid, None);
    }
}

#[test]
fn an_upstream_session_is_not_resumed_towards_another_address() {
    let mut w = world(UntrustedUpstream::Block, &[], false);
    let config = resuming_client(&w.operator, false);
    let mut c = connect(&config, "server.test");
    let mut s = ServerConnection::new(w.server_cfg.clone()).unwrap();
    assert_eq!(run(&mut w, &mut c, &mut s).1, None);
    // The same name at another address: upstream is a full handshake and a new validation (the
    // client's ticket is the appliance's own and resumes its leg).
    let mut c = connect(&config, "server.test");
    let mut s = ServerConnection::new(w.server_cfg.clone()).unwrap();
    let (icpt, failure) = run_at(&mut w, &mut c, &mut s, "198.18.0.3", Box::new(PassAll));
    assert_eq!(failure, None);
    let info = icpt.unwrap().info;
    assert!(info.client_resumed && !info.upstream_resumed, "{info:?}");
    assert_eq!(s.handshake_kind(), Some(rustls::HandshakeKind::Full));
}

/// A client that accepts any certificate (as one would that clicked through a warning).
#[derive(Debug)]
struct AcceptAny;

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(&self, _: &CertificateDer<'_>, _: &[CertificateDer<'_>], _: &ServerName<'_>, _: &[u8], _: UnixTime) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(&self, m: &[u8], c: &CertificateDer<'_>, d: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &rustls::crypto::aws_lc_rs::default_provider().signature_verification_algorithms)
    }
    fn verify_tls13_signature(&self, m: &[u8], c: &CertificateDer<'_>, d: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &rustls::crypto::aws_lc_rs::default_provider().signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        rustls::crypto::aws_lc_rs::default_provider().signature_verification_algorithms.supported_schemes()
    }
}

#[test]
fn an_untrusted_upstream_is_resumed_on_neither_leg() {
    let mut w = world(UntrustedUpstream::ForwardUntrusted, &[], false);
    let config = Arc::new(ClientConfig::builder().dangerous().with_custom_certificate_verifier(Arc::new(AcceptAny)).with_no_client_auth());
    for round in 0..2 {
        // "other.test": the server's certificate is not valid for it.
        let mut c = connect(&config, "other.test");
        let mut s = ServerConnection::new(w.server_cfg.clone()).unwrap();
        let (icpt, failure) = run(&mut w, &mut c, &mut s);
        assert_eq!(failure, None, "round {round}");
        let info = icpt.unwrap().info;
        assert!(info.upstream_invalid.is_some() && !info.client_resumed && !info.upstream_resumed, "round {round}: {info:?}");
        assert_eq!(c.handshake_kind(), Some(rustls::HandshakeKind::Full), "the client sees the untrusted certificate every time");
    }
    assert_eq!(w.shared.upstream_sessions(), 0, "an untrusted server's session is never kept");
}

#[test]
fn a_session_whose_certificate_expired_is_not_resumed() {
    let (test_root, test_root_key) = ca("Test Server Root");
    let (operator, operator_key) = ca("Operator CA");
    let (chain, key) = crate::testutil::pki::leaf_until(&test_root, test_root_key, &["server.test"], time::OffsetDateTime::now_utc() + time::Duration::seconds(1));
    let forger = Forger::new(&Ca { cert: operator.clone(), key: operator_key, chain: vec![] }, 16).unwrap();
    let mut w = World {
        operator,
        shared: WorkerTls::new(Arc::new(TlsConfig::new(roots(&[&test_root]), Vec::new(), UntrustedUpstream::Block).unwrap()), forger),
        server_cfg: Arc::new(ServerConfig::builder().with_no_client_auth().with_single_cert(chain, key).unwrap()),
    };
    let config = resuming_client(&w.operator, false);
    let mut c = connect(&config, "server.test");
    let mut s = ServerConnection::new(w.server_cfg.clone()).unwrap();
    assert_eq!(run(&mut w, &mut c, &mut s).1, None);
    assert!(w.shared.upstream_sessions() >= 1);
    std::thread::sleep(std::time::Duration::from_millis(2500));
    // The server would resume (its session cache knows us); the appliance does not offer it,
    // validates again, and the expired certificate blocks.
    let mut c = connect(&config, "server.test");
    let mut s = ServerConnection::new(w.server_cfg.clone()).unwrap();
    let (icpt, failure) = run(&mut w, &mut c, &mut s);
    match failure {
        Some(Failure::UpstreamInvalid(why)) => assert!(why.to_lowercase().contains("expired"), "{why}"),
        other => panic!("{other:?}: {:?}", icpt.map(|i| i.info)),
    }
    assert!(!icpt.unwrap().info.upstream_resumed);
}
