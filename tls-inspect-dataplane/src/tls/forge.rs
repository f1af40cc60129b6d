//! Certificates forged for the client: the real server's names, signed by the operator's CA
//! (or, for an upstream that failed validation and the `forward_untrusted` policy, by a key no
//! client trusts, so the failure reaches the user). Every forged certificate has a key pair of
//! its own, made with it and kept with it in a bounded LRU cache keyed by the upstream
//! certificate's hash, so a busy host costs one key and one signature, not one per connection,
//! and no key ever speaks for more than one upstream certificate. Every certificate has a random
//! serial number (issuer + serial are never reused, which NSS refuses), subject and authority key
//! identifiers, and a notBefore an hour in the past for clients whose clocks are behind.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use anyhow::{anyhow, Result};
use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType, SerialNumber, PKCS_ECDSA_P256_SHA256,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;
use sha2::{Digest, Sha256};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::ca::Ca;

/// The longest validity a publicly trusted leaf may have (CA/Browser Forum), and so ours.
const MAX_DAYS: i64 = 397;

pub struct Forger {
    issuer: Issuer<'static, KeyPair>,
    /// Sent after the leaf: the CA when it is an intermediate, and what is above it but the root.
    chain_tail: Vec<CertificateDer<'static>>,
    untrusted: Issuer<'static, KeyPair>,
    cache: HashMap<([u8; 32], bool), (Arc<CertifiedKey>, u64)>,
    capacity: usize,
    tick: u64,
    /// Signatures made (cache misses).
    pub signed: u64,
}

fn is_self_signed(der: &[u8]) -> bool {
    X509Certificate::from_der(der).is_ok_and(|(_, x)| x.subject() == x.issuer())
}

impl Forger {
    pub fn new(ca: &Ca, capacity: usize) -> Result<Self> {
        let key = KeyPair::from_pem(&ca.key.serialize_pem()).map_err(|e| anyhow!("CA key: {e}"))?;
        let issuer = Issuer::from_ca_cert_der(&ca.cert, key).map_err(|e| anyhow!("CA certificate: {e}"))?;
        let mut chain_tail = Vec::new();
        if !is_self_signed(&ca.cert) {
            chain_tail.push(ca.cert.clone());
            chain_tail.extend(ca.chain.iter().filter(|c| !is_self_signed(c)).cloned());
        }
        // A signer no client trusts: a fresh key and name per worker, never written anywhere.
        let untrusted_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "tls-inspect: upstream certificate NOT trusted");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        let untrusted = Issuer::new(params, untrusted_key);

        Ok(Self {
            issuer,
            chain_tail,
            untrusted,
            cache: HashMap::new(),
            capacity: capacity.max(1),
            tick: 0,
            signed: 0,
        })
    }

    /// The certificate (with its chain) for a connection whose server presented `upstream`.
    /// `trusted` says whether the upstream passed validation: if not, the operator's CA never
    /// signs it.
    pub fn forge(&mut self, upstream: &CertificateDer<'_>, sni: Option<&str>, trusted: bool) -> Result<Arc<CertifiedKey>> {
        let id: [u8; 32] = Sha256::digest(upstream.as_ref()).into();
        self.tick += 1;
        if let Some((ck, used)) = self.cache.get_mut(&(id, trusted)) {
            *used = self.tick;
            return Ok(ck.clone());
        }
        let mut params = leaf_params(upstream, sni)?;
        params.serial_number = Some(random_serial()?);
        let issuer = if trusted { &self.issuer } else { &self.untrusted };
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let cert = params.signed_by(&key, issuer)?;
        self.signed += 1;
        let mut chain = vec![cert.der().clone()];
        if trusted {
            chain.extend(self.chain_tail.iter().cloned());
        }
        let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let signing = rustls::crypto::aws_lc_rs::sign::any_supported_type(&der).map_err(|e| anyhow!("leaf key: {e}"))?;
        let ck = Arc::new(CertifiedKey::new(chain, signing));
        if self.cache.len() >= self.capacity {
            if let Some(oldest) = self.cache.iter().min_by_key(|(_, (_, used))| *used).map(|(k, _)| *k) {
                self.cache.remove(&oldest);
            }
        }
        self.cache.insert((id, trusted), (ck.clone(), self.tick));
        Ok(ck)
    }
}

/// A serial number of 16 random bytes (127 bits of randomness, positive, at most 20 octets as RFC
/// 5280 allows), from the TLS provider's secure random source.
fn random_serial() -> Result<SerialNumber> {
    let mut bytes = [0u8; 16];
    rustls::crypto::aws_lc_rs::default_provider().secure_random.fill(&mut bytes).map_err(|e| anyhow!("random serial: {e:?}"))?;
    // Positive with no leading zero octet: the top bit clear, the next one set.
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok(SerialNumber::from_slice(&bytes))
}

/// The forged leaf's parameters: the upstream's subject alternative names (so clients without
/// SNI, and connections to an IP, still validate), its common name, a validity no longer than
/// the upstream's and at most 397 days, server authentication only.
fn leaf_params(upstream: &CertificateDer<'_>, sni: Option<&str>) -> Result<CertificateParams> {
    let (_, x) = X509Certificate::from_der(upstream.as_ref()).map_err(|e| anyhow!("upstream certificate: {e}"))?;
    let mut params = CertificateParams::default();
    let mut sans = Vec::new();
    if let Ok(Some(san)) = x.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(d) => {
                    if let Ok(n) = (*d).try_into() {
                        sans.push(SanType::DnsName(n));
                    }
                }
                GeneralName::IPAddress(b) => {
                    let ip = match b.len() {
                        4 => <[u8; 4]>::try_from(*b).ok().map(IpAddr::from),
                        16 => <[u8; 16]>::try_from(*b).ok().map(IpAddr::from),
                        _ => None,
                    };
                    if let Some(ip) = ip {
                        sans.push(SanType::IpAddress(ip));
                    }
                }
                _ => {}
            }
        }
    }
    if sans.is_empty() {
        if let Some(Ok(n)) = sni.map(|s| s.to_string().try_into()) {
            sans.push(SanType::DnsName(n));
        }
    }
    params.subject_alt_names = sans;
    let mut dn = DistinguishedName::new();
    if let Some(cn) = x.subject().iter_common_name().next().and_then(|c| c.as_str().ok()) {
        dn.push(DnType::CommonName, cn);
    } else if let Some(s) = sni {
        dn.push(DnType::CommonName, s);
    }
    params.distinguished_name = dn;
    let now = time::OffsetDateTime::now_utc();
    let upstream_end = x.validity().not_after.to_datetime();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = upstream_end.min(now + time::Duration::days(MAX_DAYS));
    if params.not_after <= params.not_before {
        params.not_after = params.not_before + time::Duration::hours(1);
    }
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    // CA:FALSE written out, which also makes rcgen write the subject key identifier.
    params.is_ca = IsCa::ExplicitNoCa;
    params.use_authority_key_identifier_extension = true;
    Ok(params)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use rcgen::{BasicConstraints, KeyUsagePurpose};

    use super::*;

    fn ca_params(cn: &str) -> CertificateParams {
        let mut p = CertificateParams::default();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        p
    }

    fn upstream(days: i64) -> CertificateDer<'static> {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(vec!["www.example.test".to_string(), "example.test".to_string()]).unwrap();
        p.subject_alt_names.push(SanType::IpAddress("198.18.0.2".parse().unwrap()));
        p.distinguished_name.push(DnType::CommonName, "www.example.test");
        p.not_after = time::OffsetDateTime::now_utc() + time::Duration::days(days);
        p.self_signed(&key).unwrap().der().clone()
    }

    fn parse(der: &CertificateDer<'_>) -> (Vec<String>, time::OffsetDateTime, String) {
        let (_, x) = X509Certificate::from_der(der).unwrap();
        let sans = x
            .subject_alternative_name()
            .unwrap()
            .unwrap()
            .value
            .general_names
            .iter()
            .map(|n| format!("{n}"))
            .collect();
        let issuer = x.issuer().to_string();
        (sans, x.validity().not_after.to_datetime(), issuer)
    }

    #[test]
    fn names_are_copied_and_validity_is_bounded() {
        let key = KeyPair::generate().unwrap();
        let cert = ca_params("Root").self_signed(&key).unwrap().der().clone();
        let mut f = Forger::new(&Ca { cert, key, chain: vec![] }, 2).unwrap();
        // A two-year upstream: the forged one stops at 397 days.
        let ck = f.forge(&upstream(730), Some("www.example.test"), true).unwrap();
        assert_eq!(ck.cert.len(), 1, "a root CA is not sent");
        let (sans, not_after, issuer) = parse(&ck.cert[0]);
        assert!(sans.iter().any(|s| s.contains("www.example.test")) && sans.iter().any(|s| s.contains("c6:12:00:02")), "{sans:?}");
        let limit = time::OffsetDateTime::now_utc() + time::Duration::days(MAX_DAYS);
        assert!(not_after <= limit);
        assert!(issuer.contains("Root"));
        // A 30-day upstream: no longer than it.
        let short = upstream(30);
        let (_, upstream_end, _) = parse(&short);
        let ck = f.forge(&short, None, true).unwrap();
        assert!(parse(&ck.cert[0]).1 <= upstream_end);
        // The same upstream again: from the cache, no new signature.
        let before = f.signed;
        f.forge(&short, None, true).unwrap();
        assert_eq!(f.signed, before);
        // Untrusted: another issuer, never the operator's.
        let ck = f.forge(&short, None, false).unwrap();
        assert!(parse(&ck.cert[0]).2.contains("NOT trusted"));
    }

    #[test]
    fn every_certificate_has_its_own_serial_key_and_identifiers() {
        let key = KeyPair::generate().unwrap();
        let cert = ca_params("Root").self_signed(&key).unwrap().der().clone();
        let mut f = Forger::new(&Ca { cert, key, chain: vec![] }, 64).unwrap();
        let (mut serials, mut keys) = (std::collections::HashSet::new(), std::collections::HashSet::new());
        for i in 0..40 {
            // Forty upstream certificates (each a distinct key pair), forged under one issuer.
            let ck = f.forge(&upstream(90 + i), Some("www.example.test"), true).unwrap();
            let (_, x) = X509Certificate::from_der(&ck.cert[0]).unwrap();
            let serial = x.raw_serial().to_vec();
            assert!(serial.len() >= 9 && serial.len() <= 20, "{serial:?}");
            assert!(serial[0] & 0x80 == 0 && serial[0] != 0, "positive, no leading zero: {serial:?}");
            assert!(serials.insert(serial), "a serial was reused under one issuer");
            assert!(keys.insert(x.public_key().raw.to_vec()), "a leaf key was reused");
            let ski = x.extensions().iter().any(|e| e.oid.to_id_string() == "2.5.29.14");
            let aki = x.extensions().iter().any(|e| e.oid.to_id_string() == "2.5.29.35");
            assert!(ski && aki, "subject and authority key identifiers");
            assert!(!x.basic_constraints().unwrap().unwrap().value.ca);
            let skew = time::OffsetDateTime::now_utc() - x.validity().not_before.to_datetime();
            assert!(skew >= time::Duration::minutes(50), "notBefore is in the past: {skew}");
        }
    }

    #[test]
    fn an_intermediate_ca_is_sent_after_the_leaf() {
        let root_key = KeyPair::generate().unwrap();
        let root_params = ca_params("Root");
        let root = root_params.self_signed(&root_key).unwrap();
        let int_key = KeyPair::generate().unwrap();
        let issuer = Issuer::new(root_params, root_key);
        let int = ca_params("Intermediate").signed_by(&int_key, &issuer).unwrap();
        let ca = Ca { cert: int.der().clone(), key: int_key, chain: vec![root.der().clone()] };
        let mut f = Forger::new(&ca, 4).unwrap();
        let ck = f.forge(&upstream(90), None, true).unwrap();
        assert_eq!(ck.cert.len(), 2, "leaf and intermediate, not the root");
        assert_eq!(ck.cert[1], *int.der());
        assert!(parse(&ck.cert[0]).2.contains("Intermediate"));
    }
}
