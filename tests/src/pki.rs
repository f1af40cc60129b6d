//! A test PKI made with openssl: a root the appliance trusts upstream, and server certificates
//! that are valid, expired, for the wrong host, self-signed, or from a root nobody trusts.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Result;

use crate::check;

pub struct TestPki {
    pub dir: PathBuf,
    /// The root the appliance trusts upstream (`[tls] extra_roots`).
    pub root: PathBuf,
}

/// A certificate and its key.
pub struct Pair {
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) -> Result<String> {
    check(Command::new("openssl").current_dir(dir).args(args))
}

/// A self-signed ECDSA P-256 certificate for `cn`, as (key, certificate) files in `dir`.
pub fn self_signed_cert(dir: &Path, cn: &str) -> Result<(PathBuf, PathBuf)> {
    let (key, cert) = (format!("{cn}.key"), format!("{cn}.crt"));
    openssl(dir, &[
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
        "-subj", &format!("/CN={cn}"), "-keyout", &key, "-out", &cert,
    ])?;
    Ok((dir.join(key), dir.join(cert)))
}

/// A self-signed CA named `name` whose key openssl makes with `genpkey` options (a PKCS#8 key
/// file), as (certificate, key) files in `dir`.
pub fn ca_with_key(dir: &Path, name: &str, genpkey: &[&str]) -> Result<(PathBuf, PathBuf)> {
    let key = format!("{name}.key");
    let crt = format!("{name}.crt");
    let mut args = vec!["genpkey"];
    args.extend_from_slice(genpkey);
    args.extend_from_slice(&["-out", &key]);
    openssl(dir, &args)?;
    openssl(dir, &[
        "req", "-x509", "-new", "-key", &key, "-out", &crt, "-days", "800", "-subj", &format!("/CN={name}"),
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    ])?;
    Ok((dir.join(crt), dir.join(key)))
}

impl TestPki {
    pub fn new(dir: &Path) -> Result<Self> {
        let dir = dir.join("pki");
        std::fs::create_dir_all(&dir)?;
        for (name, cn) in [("root", "Test Root"), ("other", "Other Root")] {
            openssl(&dir, &[
                "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "30",
                "-subj", &format!("/CN={cn}"), "-keyout", &format!("{name}.key"), "-out", &format!("{name}.crt"),
                "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
            ])?;
        }
        // `openssl ca` lets a test choose the validity dates (for the expired certificate).
        std::fs::write(dir.join("index.txt"), "")?;
        std::fs::write(dir.join("serial"), "1000\n")?;
        std::fs::write(dir.join("crlnumber"), "01\n")?;
        std::fs::write(
            dir.join("ca.cnf"),
            "[ca]\ndefault_ca = test\n[test]\ndir = .\ndatabase = index.txt\nserial = serial\nnew_certs_dir = .\n\
             default_md = sha256\npolicy = any\ncopy_extensions = copy\nunique_subject = no\ncrlnumber = crlnumber\n\
             default_crl_days = 7\n[any]\ncommonName = supplied\n",
        )?;
        let root = dir.join("root.crt");
        Ok(Self { dir, root })
    }

    /// Revokes `pair` (signed by the root) and writes the root's CRL; returns its path (PEM).
    pub fn revoke(&self, pair: &Pair) -> Result<PathBuf> {
        let cert = pair.cert.to_string_lossy().into_owned();
        openssl(&self.dir, &["ca", "-config", "ca.cnf", "-cert", "root.crt", "-keyfile", "root.key", "-revoke", &cert])?;
        openssl(&self.dir, &["ca", "-config", "ca.cnf", "-cert", "root.crt", "-keyfile", "root.key", "-gencrl", "-out", "root.crl"])?;
        Ok(self.dir.join("root.crl"))
    }

    /// A server certificate for `names` (DNS names or IPs) signed by `signer` ("root", "other",
    /// or "self"), valid from `start` to `end` (openssl dates like 20200101000000Z; None: now
    /// for 20 days).
    pub fn server(&self, file: &str, names: &[&str], signer: &str, dates: Option<(&str, &str)>) -> Result<Pair> {
        let san: Vec<String> = names
            .iter()
            .map(|n| if n.parse::<std::net::IpAddr>().is_ok() { format!("IP:{n}") } else { format!("DNS:{n}") })
            .collect();
        let key = format!("{file}.key");
        let cert = format!("{file}.crt");
        let ext = [
            "-addext".to_string(),
            format!("subjectAltName={}", san.join(",")),
            "-addext".into(),
            "extendedKeyUsage=serverAuth".into(),
            "-addext".into(),
            "keyUsage=critical,digitalSignature".into(),
        ];
        let subj = format!("/CN={}", names[0]);
        if signer == "self" {
            let mut args = vec!["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "20", "-subj", &subj, "-keyout", &key, "-out", &cert];
            args.extend(ext.iter().map(String::as_str));
            // An end-entity certificate, not a CA (openssl's default for -x509).
            args.extend(["-addext", "basicConstraints=critical,CA:FALSE"]);
            openssl(&self.dir, &args)?;
        } else {
            let csr = format!("{file}.csr");
            let mut args = vec!["req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj", &subj, "-keyout", &key, "-out", &csr];
            args.extend(ext.iter().map(String::as_str));
            openssl(&self.dir, &args)?;
            let (start, end) = dates.unwrap_or(("", ""));
            let signer_crt = format!("{signer}.crt");
            let signer_key = format!("{signer}.key");
            let mut args = vec![
                "ca", "-batch", "-config", "ca.cnf", "-cert", &signer_crt, "-keyfile", &signer_key, "-in", &csr, "-out", &cert, "-notext",
            ];
            if dates.is_some() {
                args.extend(["-startdate", start, "-enddate", end]);
            } else {
                args.extend(["-days", "20"]);
            }
            openssl(&self.dir, &args)?;
        }
        Ok(Pair {
            cert: self.dir.join(cert),
            key: self.dir.join(key),
        })
    }
}
