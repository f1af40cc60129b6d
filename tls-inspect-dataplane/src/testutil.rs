//! What the crate's tests share: one test PKI (rcgen) and one seeded pseudo-random generator.

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::RootCertStore;
use x509_parser::prelude::{FromDer, X509Certificate};

/// Test certificates: CAs, leaves they sign, root stores.
pub mod pki {
    use super::*;

    /// A self-signed CA named `name` (ECDSA P-256), with its key.
    pub fn ca(name: &str) -> (CertificateDer<'static>, KeyPair) {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::default();
        p.distinguished_name.push(DnType::CommonName, name);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
        (p.self_signed(&key).unwrap().der().clone(), key)
    }

    /// A server certificate for `names` (and 198.18.0.2) signed by the issuer, with its key.
    pub fn leaf(issuer_cert: &CertificateDer<'static>, issuer_key: KeyPair, names: &[&str]) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        p.subject_alt_names.push(SanType::IpAddress("198.18.0.2".parse().unwrap()));
        p.distinguished_name.push(DnType::CommonName, names[0]);
        let issuer = Issuer::from_ca_cert_der(issuer_cert, issuer_key).unwrap();
        let cert = p.signed_by(&key, &issuer).unwrap();
        (vec![cert.der().clone()], PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())))
    }

    /// A server certificate as [`leaf`] that expires at `not_after`.
    pub fn leaf_until(issuer_cert: &CertificateDer<'static>, issuer_key: KeyPair, names: &[&str], not_after: time::OffsetDateTime) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        p.distinguished_name.push(DnType::CommonName, names[0]);
        p.not_before = time::OffsetDateTime::now_utc() - time::Duration::hours(1);
        p.not_after = not_after;
        let issuer = Issuer::from_ca_cert_der(issuer_cert, issuer_key).unwrap();
        let cert = p.signed_by(&key, &issuer).unwrap();
        (vec![cert.der().clone()], PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())))
    }

    /// A root store of `certs`.
    pub fn roots(certs: &[&CertificateDer<'static>]) -> RootCertStore {
        let mut r = RootCertStore::empty();
        for c in certs {
            r.add((*c).clone()).unwrap();
        }
        r
    }

    /// The common name of a certificate's issuer.
    pub fn issuer_cn(cert: &CertificateDer<'_>) -> String {
        let (_, x) = X509Certificate::from_der(cert).unwrap();
        let cn = x.issuer().iter_common_name().next().unwrap().as_str().unwrap().to_string();
        cn
    }
}

/// xorshift64*: deterministic from its seed, so a failing run replays.
pub struct Prng(u64);

impl Prng {
    pub fn new(seed: u64) -> Self {
        Self(seed | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// `n` pseudo-random bytes.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| (self.next_u64() >> 56) as u8).collect()
    }
}

/// `n` bytes of a salted pattern (salts tell the directions apart).
pub fn pattern(n: usize, salt: u8) -> Vec<u8> {
    (0..n).map(|i| (i as u8).wrapping_mul(31).wrapping_add(salt)).collect()
}
