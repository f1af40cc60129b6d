//! A certificate as Suricata describes it, for `tls.cert_*` rules and for the EVE `tls` object:
//! subject and issuer as x509-parser writes them (Suricata uses the same crate), the serial as
//! upper-case hex pairs joined with `:`, the SHA-1 fingerprint as lower-case pairs, validity as
//! `YYYY-MM-DDTHH:MM:SS`.

use sha1::Digest;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CertSummary {
    pub subject: String,
    pub issuer: String,
    pub serial: String,
    pub fingerprint: String,
    pub not_before: String,
    pub not_after: String,
}

impl CertSummary {
    /// The summary of a DER certificate; `None` if it does not parse.
    pub fn of(der: &[u8]) -> Option<Self> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        let pairs = |bytes: &[u8], upper: bool| bytes.iter().map(|b| if upper { format!("{b:02X}") } else { format!("{b:02x}") }).collect::<Vec<_>>().join(":");
        let time = |t: x509_parser::time::ASN1Time| {
            let dt = t.to_datetime();
            format!("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}", dt.year(), u8::from(dt.month()), dt.day(), dt.hour(), dt.minute(), dt.second())
        };
        Some(Self {
            subject: cert.subject().to_string(),
            issuer: cert.issuer().to_string(),
            serial: pairs(cert.tbs_certificate.raw_serial(), true),
            fingerprint: pairs(&sha1::Sha1::digest(der), false),
            not_before: time(cert.validity().not_before),
            not_after: time(cert.validity().not_after),
        })
    }
}
