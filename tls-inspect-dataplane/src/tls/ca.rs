//! The operator's CA: a trial CA made here, or one imported (root or intermediate) after checks
//! that refuse anything a browser would not accept as a signer or that is weaker than the seed
//! allows. The key file is always 0600 and never logged.
//!
//! On disk (`--ca-dir`, default /etc/tls-inspect/ca): `ca.crt` (the signing certificate),
//! `ca.key` (its PKCS#8 key, 0600) and `chain.crt` (the certificates above it, maybe empty).

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
};
use rustls::pki_types::CertificateDer;
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::public_key::PublicKey;

pub const DEFAULT_DIR: &str = "/etc/tls-inspect/ca";
const OID_P256: &str = "1.2.840.10045.3.1.7";
const OID_SM2_CURVE: &str = "1.2.156.10197.1.301";
/// A year: less validity than this left triggers a warning.
const WARN_BEFORE: Duration = Duration::from_secs(365 * 24 * 3600);

/// A loaded CA: what forging needs.
pub struct Ca {
    pub cert: CertificateDer<'static>,
    pub key: KeyPair,
    /// Certificates above `cert` (an intermediate's root), sent to clients after it.
    pub chain: Vec<CertificateDer<'static>>,
}

/// Never prints the key.
impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca")
            .field("cert_sha256", &hex::sha256(&self.cert))
            .field("chain", &self.chain.len())
            .field("key", &"<redacted>")
            .finish()
    }
}

mod hex {
    use sha2::{Digest, Sha256};
    pub fn sha256(data: &[u8]) -> String {
        Sha256::digest(data).iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":")
    }
}

/// What `ca show` prints.
#[derive(Debug, Clone)]
pub struct CaInfo {
    pub subject: String,
    pub issuer: String,
    pub key_type: String,
    pub not_before: String,
    pub not_after: String,
    pub sha256: String,
    pub is_root: bool,
    /// Validity left; None once expired.
    pub remaining: Option<Duration>,
    /// The limits a signing CA for interception should carry and this one lacks.
    pub missing_limits: Vec<MissingLimit>,
}

/// A limit the CA certificate does not set, so that its key, if it leaks, signs more than TLS
/// server certificates below it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MissingLimit {
    /// No `pathLenConstraint` of 0: the key can make further CAs.
    PathLen,
    /// No extended key usage, or one wider than serverAuth: what it signs is trusted for code
    /// signing, e-mail, client authentication...
    ServerAuthOnly,
    /// Key usages beyond keyCertSign, cRLSign (and digitalSignature).
    KeyUsage,
}

impl MissingLimit {
    fn describe(self) -> &'static str {
        match self {
            Self::PathLen => "no pathLenConstraint 0: its key can sign further CAs",
            Self::ServerAuthOnly => "no extended key usage limited to serverAuth: what it signs is trusted for other purposes too",
            Self::KeyUsage => "key usages beyond keyCertSign and cRLSign",
        }
    }
}

impl CaInfo {
    /// What the operator should hear about this CA: validity running out, limits it lacks.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        match self.remaining {
            None => out.push(format!("the CA certificate expired on {}", self.not_after)),
            Some(left) if left < WARN_BEFORE => out.push(format!(
                "the CA certificate expires in {} days ({}): plan its replacement",
                left.as_secs() / 86_400,
                self.not_after
            )),
            _ => {}
        }
        out.extend(self.missing_limits.iter().map(|m| format!("the CA certificate has {}", m.describe())));
        out
    }
}

/// The limits `x` lacks (see [`MissingLimit`]).
fn missing_limits(x: &X509Certificate<'_>) -> Vec<MissingLimit> {
    let mut missing = Vec::new();
    let path_len = x.basic_constraints().ok().flatten().and_then(|bc| bc.value.path_len_constraint);
    if path_len != Some(0) {
        missing.push(MissingLimit::PathLen);
    }
    let server_auth_only = x.extended_key_usage().ok().flatten().is_some_and(|e| {
        let e = e.value;
        e.server_auth && !e.any && !e.client_auth && !e.code_signing && !e.email_protection && !e.time_stamping && !e.ocsp_signing && e.other.is_empty()
    });
    if !server_auth_only {
        missing.push(MissingLimit::ServerAuthOnly);
    }
    if let Ok(Some(ku)) = x.key_usage() {
        let ku = ku.value;
        if ku.non_repudiation() || ku.key_encipherment() || ku.data_encipherment() || ku.key_agreement() || ku.encipher_only() || ku.decipher_only() {
            missing.push(MissingLimit::KeyUsage);
        }
    }
    missing
}

fn pem_certs(text: &str, what: &str) -> Result<Vec<CertificateDer<'static>>> {
    let blocks = pem::parse_many(text).map_err(|e| anyhow!("{what}: not PEM: {e}"))?;
    let certs: Vec<CertificateDer<'static>> = blocks
        .into_iter()
        .filter(|b| b.tag() == "CERTIFICATE")
        .map(|b| CertificateDer::from(b.into_contents()))
        .collect();
    if certs.is_empty() {
        bail!("{what}: no CERTIFICATE block");
    }
    Ok(certs)
}

/// Describes the key of a certificate and checks it against the seed's rules: RSA of 2,048 bits
/// or more, or ECDSA P-256.
fn key_type(x: &X509Certificate<'_>) -> Result<String> {
    let spki = x.public_key();
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.as_oid().ok())
        .map(|o| o.to_id_string());
    match spki.parsed() {
        Ok(PublicKey::RSA(rsa)) => {
            let bits = rsa.key_size();
            if bits < 2048 {
                bail!("RSA-{bits} keys are too weak: RSA of 2048 bits or more, or ECDSA P-256");
            }
            Ok(format!("RSA-{bits}"))
        }
        Ok(PublicKey::EC(_)) => match curve.as_deref() {
            Some(OID_P256) => Ok("ECDSA P-256".into()),
            Some(OID_SM2_CURVE) => bail!("SM2 keys are not supported: RSA of 2048 bits or more, or ECDSA P-256"),
            Some(other) => bail!("EC curve {other} is not supported: use ECDSA P-256 or RSA of 2048 bits or more"),
            None => bail!("EC key without a named curve is not supported"),
        },
        Ok(_) => bail!("key algorithm {} is not supported: RSA of 2048 bits or more, or ECDSA P-256", spki.algorithm.algorithm.to_id_string()),
        Err(e) => bail!("unreadable public key: {e}"),
    }
}

fn info_of(der: &[u8]) -> Result<CaInfo> {
    let (_, x) = X509Certificate::from_der(der).map_err(|e| anyhow!("not an X.509 certificate: {e}"))?;
    let v = x.validity();
    Ok(CaInfo {
        subject: x.subject().to_string(),
        issuer: x.issuer().to_string(),
        key_type: key_type(&x).unwrap_or_else(|e| format!("unsupported ({e})")),
        not_before: v.not_before.to_string(),
        not_after: v.not_after.to_string(),
        sha256: hex::sha256(der),
        is_root: x.subject() == x.issuer(),
        remaining: v.time_to_expiration().and_then(|d| Duration::try_from(d).ok()),
        missing_limits: missing_limits(&x),
    })
}

/// Checks that a certificate can be a CA for us: key type, basic constraints, key usage, validity.
fn check_cert(cert_der: &[u8]) -> Result<()> {
    let (_, x) = X509Certificate::from_der(cert_der).map_err(|e| anyhow!("certificate: not an X.509 certificate: {e}"))?;
    key_type(&x).context("certificate")?;
    let ca = x
        .basic_constraints()
        .map_err(|e| anyhow!("certificate: bad basic constraints: {e}"))?
        .is_some_and(|bc| bc.value.ca);
    if !ca {
        bail!("certificate: not a CA (no basic constraints with CA:TRUE)");
    }
    let signs = match x.key_usage().map_err(|e| anyhow!("certificate: bad key usage: {e}"))? {
        Some(ku) => ku.value.key_cert_sign(),
        None => false,
    };
    if !signs {
        bail!("certificate: key usage does not allow keyCertSign");
    }
    if !x.validity().is_valid() {
        bail!("certificate: not valid now (valid {} to {})", x.validity().not_before, x.validity().not_after);
    }
    Ok(())
}

/// Checks a CA certificate and its key the way `ca import` does; returns the certificate's info.
pub fn check(cert_der: &[u8], key: &KeyPair) -> Result<CaInfo> {
    check_cert(cert_der)?;
    let (_, x) = X509Certificate::from_der(cert_der).map_err(|e| anyhow!("certificate: {e}"))?;
    if key.public_key_raw() != x.public_key().subject_public_key.data.as_ref() {
        bail!("key: does not match the certificate's public key");
    }
    info_of(cert_der)
}

fn write_file(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(mode)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(data)?;
    f.sync_all()?;
    // The mode of an existing file is not changed by `mode`.
    fs::set_permissions(&tmp, fs::Permissions::from_mode(mode))?;
    fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

fn paths(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    (dir.join("ca.crt"), dir.join("ca.key"), dir.join("chain.crt"))
}

fn save(dir: &Path, cert_pem: &str, key_pem: &str, chain_pem: &str) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
    let (cert, key, chain) = paths(dir);
    // The key first: a certificate is never left without its key.
    write_file(&key, key_pem.as_bytes(), 0o600)?;
    write_file(&cert, cert_pem.as_bytes(), 0o644)?;
    write_file(&chain, chain_pem.as_bytes(), 0o644)?;
    Ok(())
}

/// `ca trial`: a private root CA (ECDSA P-256, 10 years) whose name says what it is, limited to
/// what interception needs: no CAs below it (pathLen 0), certificate and CRL signing only, and
/// TLS server authentication only.
pub fn trial(dir: &Path) -> Result<CaInfo> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "tls-inspect trial CA (not for production)");
    dn.push(DnType::OrganizationName, "tls-inspect trial");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(3650);
    let cert = params.self_signed(&key)?;
    save(dir, &cert.pem(), &key.serialize_pem(), "")?;
    info_of(cert.der())
}

/// `ca import`: checks, then installs. Nothing is written when a check fails.
pub fn import(dir: &Path, cert_file: &Path, key_file: &Path, chain_file: Option<&Path>) -> Result<CaInfo> {
    let cert_text = fs::read_to_string(cert_file).with_context(|| format!("cert: reading {}", cert_file.display()))?;
    let certs = pem_certs(&cert_text, "cert")?;
    // The certificate says most of what can be wrong (RSA-1024, SM2, not a CA, expired) before
    // the key is even read.
    check_cert(&certs[0])?;
    let key_text = fs::read_to_string(key_file).with_context(|| format!("key: reading {}", key_file.display()))?;
    let key = KeyPair::from_pem(&key_text).map_err(|e| {
        anyhow!("key: {e} (give an unencrypted PKCS#8 key; convert with `openssl pkcs8 -topk8 -nocrypt -in KEY`)")
    })?;
    let info = check(&certs[0], &key)?;
    // Certificates after the first in the cert file, and the chain file, go up the chain.
    let mut chain: Vec<CertificateDer<'static>> = certs[1..].to_vec();
    if let Some(path) = chain_file {
        let text = fs::read_to_string(path).with_context(|| format!("chain: reading {}", path.display()))?;
        chain.extend(pem_certs(&text, "chain")?);
    }
    for (i, c) in chain.iter().enumerate() {
        info_of(c).with_context(|| format!("chain: certificate {}", i + 1))?;
    }
    if !info.is_root && chain.is_empty() {
        bail!("chain: '{}' is an intermediate CA: give its issuer's certificate with --chain", info.subject);
    }
    let to_pem = |c: &CertificateDer<'_>| pem::encode(&pem::Pem::new("CERTIFICATE", c.to_vec()));
    let chain_pem: String = chain.iter().map(to_pem).collect();
    save(dir, &to_pem(&certs[0]), &key.serialize_pem(), &chain_pem)?;
    Ok(info)
}

/// Loads the installed CA, refusing a key file others can read.
pub fn load(dir: &Path) -> Result<Ca> {
    let (cert_path, key_path, chain_path) = paths(dir);
    let meta = fs::metadata(&key_path).with_context(|| {
        format!("no CA in {} (create one with `tls-inspect ca trial` or `ca import`)", dir.display())
    })?;
    if meta.permissions().mode() & 0o077 != 0 {
        bail!("{}: readable by other users (mode {:o}); chmod 600 it", key_path.display(), meta.permissions().mode() & 0o777);
    }
    let cert = pem_certs(&fs::read_to_string(&cert_path)?, "ca.crt")?.remove(0);
    let key = KeyPair::from_pem(&fs::read_to_string(&key_path)?).map_err(|e| anyhow!("ca.key: {e}"))?;
    check(&cert, &key)?;
    let chain = match fs::read_to_string(&chain_path) {
        Ok(t) if t.trim().is_empty() => Vec::new(),
        Ok(t) => pem_certs(&t, "chain.crt")?,
        Err(_) => Vec::new(),
    };
    Ok(Ca { cert, key, chain })
}

/// `ca show`.
pub fn show(dir: &Path) -> Result<CaInfo> {
    let (cert_path, _, _) = paths(dir);
    let text = fs::read_to_string(&cert_path)
        .with_context(|| format!("no CA in {} (create one with `tls-inspect ca trial`)", dir.display()))?;
    info_of(&pem_certs(&text, "ca.crt")?[0])
}

/// `ca export`: the PEM chain hosts install (the signing certificate and those above it).
pub fn export(dir: &Path, out: &Path) -> Result<usize> {
    let (cert_path, _, chain_path) = paths(dir);
    let mut text = fs::read_to_string(&cert_path).with_context(|| format!("no CA in {}", dir.display()))?;
    if let Ok(chain) = fs::read_to_string(&chain_path) {
        text.push_str(&chain);
    }
    let n = pem_certs(&text, "export")?.len();
    write_file(out, text.as_bytes(), 0o644)?;
    Ok(n)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("tls-inspect-ca-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    /// Writes a certificate made from `params` (signed by its own key) and the key.
    fn make(d: &Path, name: &str, params: CertificateParams, alg: &'static rcgen::SignatureAlgorithm) -> (PathBuf, PathBuf, KeyPair) {
        let key = KeyPair::generate_for(alg).unwrap();
        let cert = params.self_signed(&key).unwrap();
        let (c, k) = (d.join(format!("{name}.crt")), d.join(format!("{name}.key")));
        fs::write(&c, cert.pem()).unwrap();
        fs::write(&k, key.serialize_pem()).unwrap();
        (c, k, key)
    }

    fn ca_params() -> CertificateParams {
        let mut p = CertificateParams::new(vec![]).unwrap();
        p.distinguished_name.push(DnType::CommonName, "Test CA");
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        p
    }

    #[test]
    fn import_refuses_what_cannot_sign_and_writes_nothing() {
        let d = tmp("refuse");
        let store = d.join("store");
        let p256 = &PKCS_ECDSA_P256_SHA256;
        let cases: Vec<(&str, CertificateParams, &'static rcgen::SignatureAlgorithm, &str)> = vec![
            ("leaf", { let mut p = ca_params(); p.is_ca = IsCa::NoCa; p }, p256, "not a CA"),
            ("nosign", { let mut p = ca_params(); p.key_usages = vec![KeyUsagePurpose::DigitalSignature]; p }, p256, "keyCertSign"),
            ("expired", { let mut p = ca_params(); p.not_before = time::OffsetDateTime::now_utc() - time::Duration::days(30); p.not_after = time::OffsetDateTime::now_utc() - time::Duration::days(1); p }, p256, "not valid now"),
            ("p384", ca_params(), &rcgen::PKCS_ECDSA_P384_SHA384, "1.3.132.0.34"),
        ];
        for (name, params, alg, needle) in cases {
            let (c, k, _) = make(&d, name, params, alg);
            let err = format!("{:#}", import(&store, &c, &k, None).unwrap_err());
            assert!(err.contains(needle), "{name}: {err}");
            assert!(!store.exists(), "{name}: nothing may be written");
        }
        // A key that is not the certificate's.
        let (c, _, _) = make(&d, "good", ca_params(), p256);
        let (_, other, _) = make(&d, "other", ca_params(), p256);
        let err = format!("{:#}", import(&store, &c, &other, None).unwrap_err());
        assert!(err.contains("does not match"), "{err}");
        // Not PEM, not a key.
        fs::write(d.join("junk"), "hello").unwrap();
        assert!(format!("{:#}", import(&store, &d.join("junk"), &other, None).unwrap_err()).contains("cert"));
        assert!(format!("{:#}", import(&store, &c, &d.join("junk"), None).unwrap_err()).contains("key"));
        assert!(!store.exists());
        // The good one is accepted, with its key 0600.
        let (c, k, _) = make(&d, "ok", ca_params(), p256);
        let info = import(&store, &c, &k, None).unwrap();
        assert_eq!(info.key_type, "ECDSA P-256");
        assert_eq!(fs::metadata(store.join("ca.key")).unwrap().permissions().mode() & 0o777, 0o600);
        load(&store).unwrap();
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn a_ca_close_to_expiry_warns() {
        let d = tmp("warn");
        let mut p = ca_params();
        p.not_after = time::OffsetDateTime::now_utc() + time::Duration::days(100);
        let (c, k, _) = make(&d, "short", p, &PKCS_ECDSA_P256_SHA256);
        let info = import(&d.join("store"), &c, &k, None).unwrap();
        let w = info.warnings().join("; ");
        assert!(w.contains("expires in 99 days") || w.contains("expires in 100 days"), "{w}");
        // An unconstrained CA without an extended key usage is named for both.
        assert_eq!(info.missing_limits, [MissingLimit::PathLen, MissingLimit::ServerAuthOnly]);
        assert!(w.contains("pathLenConstraint") && w.contains("serverAuth"), "{w}");
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn trial_ca_is_p256_ten_years_and_key_is_private() {
        let d = tmp("trial");
        let info = trial(&d).unwrap();
        assert_eq!(info.key_type, "ECDSA P-256");
        assert!(info.subject.contains("trial"));
        assert!(info.is_root);
        assert!(info.remaining.unwrap() > Duration::from_secs(9 * 365 * 86_400));
        assert!(info.warnings().is_empty(), "{:?}", info.warnings());
        let der = pem_certs(&fs::read_to_string(d.join("ca.crt")).unwrap(), "t").unwrap().remove(0);
        let (_, x) = X509Certificate::from_der(&der).unwrap();
        assert_eq!(x.basic_constraints().unwrap().unwrap().value.path_len_constraint, Some(0));
        let ku = x.key_usage().unwrap().unwrap().value;
        assert!(ku.key_cert_sign() && ku.crl_sign() && !ku.digital_signature());
        assert!(x.extended_key_usage().unwrap().unwrap().value.server_auth);
        let mode = fs::metadata(d.join("ca.key")).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let ca = load(&d).unwrap();
        assert!(ca.chain.is_empty());
        // A key others can read is refused.
        fs::set_permissions(d.join("ca.key"), fs::Permissions::from_mode(0o644)).unwrap();
        assert!(load(&d).unwrap_err().to_string().contains("readable by other users"));
        let out = d.join("export.crt");
        assert_eq!(export(&d, &out).unwrap(), 1);
        let _ = fs::remove_dir_all(&d);
    }
}
