//! TLS scenarios: new HTTPS connections per second and bulk throughput on one connection,
//! through the inspection path, the splice path and the XDP bridge (no inspection), and the
//! ceiling: rustls' own handshake rate, client and server in memory, on one core.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection, StreamOwned};

fn roots(ca: &Path) -> Result<Arc<RootCertStore>> {
    let text = std::fs::read_to_string(ca).with_context(|| format!("reading {}", ca.display()))?;
    let mut r = RootCertStore::empty();
    for b in pem::parse_many(&text)?.into_iter().filter(|b| b.tag() == "CERTIFICATE") {
        r.add(CertificateDer::from(b.into_contents()))?;
    }
    Ok(Arc::new(r))
}

fn client_config(ca: &Path) -> Result<Arc<ClientConfig>> {
    let mut cc = ClientConfig::builder().with_root_certificates(roots(ca)?).with_no_client_auth();
    // A new session each time: every connection pays a full handshake.
    cc.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(cc))
}

/// `tls-client`: HTTPS requests, each on a new connection, for `secs` from `threads` threads.
pub fn tls_client(addr: SocketAddr, name: &str, ca: &Path, secs: f64, threads: usize) -> Result<()> {
    let config = client_config(ca)?;
    let name = ServerName::try_from(name.to_string())?;
    let (ok, failed) = crate::hammer(secs, threads, move || {
        (|| -> Result<()> {
            let tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
            tcp.set_read_timeout(Some(Duration::from_secs(5)))?;
            let conn = ClientConnection::new(config.clone(), name.clone())?;
            let mut tls = StreamOwned::new(conn, tcp);
            tls.write_all(b"GET / HTTP/1.1\r\nHost: server.test\r\nConnection: close\r\n\r\n")?;
            let mut buf = [0u8; 4096];
            let mut got = 0;
            loop {
                match tls.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => got += n,
                    Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
                    Err(e) => return Err(e.into()),
                }
            }
            if got == 0 {
                return Err(anyhow!("empty response"));
            }
            Ok(())
        })()
        .is_ok()
    })?;
    println!("tls-client {:.1} req/s {ok} ok {failed} failed", ok as f64 / secs);
    Ok(())
}

/// rustls' handshake rate with client and server in memory, on this thread.
pub fn rustls_ceiling(cert: &Path, key: &Path, ca: &Path, secs: f64) -> Result<f64> {
    let certs: Vec<CertificateDer<'static>> = pem::parse_many(std::fs::read_to_string(cert)?)?
        .into_iter()
        .filter(|b| b.tag() == "CERTIFICATE")
        .map(|b| CertificateDer::from(b.into_contents()))
        .collect();
    let key_pem = pem::parse_many(std::fs::read_to_string(key)?)?
        .into_iter()
        .find(|b| b.tag().ends_with("PRIVATE KEY"))
        .context("no key")?;
    let key = PrivateKeyDer::try_from(key_pem.into_contents()).map_err(|e| anyhow!("{e}"))?;
    let server = Arc::new(ServerConfig::builder().with_no_client_auth().with_single_cert(certs, key)?);
    let client = client_config(ca)?;
    let name = ServerName::try_from("server.test")?;
    let end = Instant::now() + Duration::from_secs_f64(secs);
    let mut n = 0u64;
    let start = Instant::now();
    while Instant::now() < end {
        let mut c = ClientConnection::new(client.clone(), name.clone())?;
        let mut s = ServerConnection::new(server.clone())?;
        let mut buf = Vec::new();
        while c.is_handshaking() || s.is_handshaking() {
            buf.clear();
            while c.wants_write() {
                c.write_tls(&mut buf)?;
            }
            s.read_tls(&mut &buf[..])?;
            s.process_new_packets()?;
            buf.clear();
            while s.wants_write() {
                s.write_tls(&mut buf)?;
            }
            c.read_tls(&mut &buf[..])?;
            c.process_new_packets()?;
        }
        n += 1;
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}
