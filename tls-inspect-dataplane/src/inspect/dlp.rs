//! Data leak detection on outbound plaintext: payment cards (Luhn), IBANs (mod 97), e-mail
//! addresses in bulk, AWS access keys, PEM private keys, Chinese resident ID numbers (ISO 7064
//! mod 11-2). Each detector counts what it finds in a flow and reports once its threshold is
//! reached; the log gets a redacted sample, never the value.
//!
//! Scanning is streaming: a small tail of each read is kept so that a value split across reads
//! is still seen, and only values ending in the new bytes are counted.

use serde::Deserialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Detector {
    PaymentCard,
    Iban,
    Email,
    AwsAccessKey,
    PrivateKey,
    ChineseId,
}

pub const DETECTORS: [Detector; 6] = [
    Detector::PaymentCard,
    Detector::Iban,
    Detector::Email,
    Detector::AwsAccessKey,
    Detector::PrivateKey,
    Detector::ChineseId,
];

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DlpAction {
    Alert,
    Block,
}

/// `[ips.dlp.<detector>]`.
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DetectorSettings {
    pub enabled: bool,
    /// Values in one flow before it reports.
    pub threshold: u32,
    pub action: DlpAction,
}

impl Default for DetectorSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            threshold: 1,
            action: DlpAction::Alert,
        }
    }
}

/// A detector that reached its threshold on a flow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub detector: Detector,
    pub count: u32,
    pub sample: String,
    pub block: bool,
}

/// What a flow carries for DLP: a tail of the last read and the counts.
#[derive(Default)]
pub struct DlpState {
    tail: Vec<u8>,
    counts: [u32; 6],
    reported: [bool; 6],
    samples: [Option<String>; 6],
}

const TAIL: usize = 96;

fn index(d: Detector) -> usize {
    DETECTORS.iter().position(|x| *x == d).unwrap_or(0)
}

impl DlpState {
    /// Scans the next outbound bytes; returns detectors that just reached their threshold.
    pub fn scan(&mut self, data: &[u8], settings: &[(Detector, DetectorSettings)]) -> Vec<Finding> {
        let mut buf = std::mem::take(&mut self.tail);
        let old = buf.len();
        buf.extend_from_slice(data);
        for (d, sample) in find_all(&buf, old) {
            let i = index(d);
            self.counts[i] += 1;
            if self.samples[i].is_none() {
                self.samples[i] = Some(sample);
            }
        }
        let start = buf.len().saturating_sub(TAIL);
        self.tail = buf[start..].to_vec();
        let mut out = Vec::new();
        for (d, s) in settings {
            let i = index(*d);
            if s.enabled && !self.reported[i] && self.counts[i] >= s.threshold.max(1) {
                self.reported[i] = true;
                out.push(Finding {
                    detector: *d,
                    count: self.counts[i],
                    sample: self.samples[i].clone().unwrap_or_default(),
                    block: s.action == DlpAction::Block,
                });
            }
        }
        out
    }
}

/// Every value in `buf` that ends at or after `new_from`, with a redacted sample.
fn find_all(buf: &[u8], new_from: usize) -> Vec<(Detector, String)> {
    let mut out = Vec::new();
    cards(buf, new_from, &mut out);
    ibans(buf, new_from, &mut out);
    emails(buf, new_from, &mut out);
    aws_keys(buf, new_from, &mut out);
    private_keys(buf, new_from, &mut out);
    chinese_ids(buf, new_from, &mut out);
    out
}

fn redact(s: &str, keep_start: usize, keep_end: usize) -> String {
    let chars: Vec<char> = s.chars().collect();
    if chars.len() <= keep_start + keep_end {
        return "*".repeat(chars.len());
    }
    let mut r: String = chars[..keep_start].iter().collect();
    r.push_str(&"*".repeat(chars.len() - keep_start - keep_end));
    r.extend(&chars[chars.len() - keep_end..]);
    r
}

pub fn luhn(digits: &[u8]) -> bool {
    let mut sum = 0u32;
    for (i, d) in digits.iter().rev().enumerate() {
        let mut v = u32::from(*d);
        if i % 2 == 1 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    sum.is_multiple_of(10)
}

/// 13 to 19 digits, optionally grouped by single spaces or dashes, not inside a longer number,
/// valid under Luhn.
fn cards(buf: &[u8], new_from: usize, out: &mut Vec<(Detector, String)>) {
    let mut i = 0;
    while i < buf.len() {
        if !buf[i].is_ascii_digit() || (i > 0 && (buf[i - 1].is_ascii_digit() || buf[i - 1] == b'-' && i > 1 && buf[i - 2].is_ascii_digit())) {
            i += 1;
            continue;
        }
        let mut digits = Vec::new();
        let mut j = i;
        let mut sep: Option<u8> = None;
        while j < buf.len() && digits.len() < 19 {
            let c = buf[j];
            if c.is_ascii_digit() {
                digits.push(c - b'0');
                j += 1;
            } else if (c == b' ' || c == b'-') && j + 1 < buf.len() && buf[j + 1].is_ascii_digit() && sep.is_none_or(|s| s == c) {
                sep = Some(c);
                j += 1;
            } else {
                break;
            }
        }
        let followed_by_digit = j < buf.len() && buf[j].is_ascii_digit();
        if (13..=19).contains(&digits.len()) && !followed_by_digit && luhn(&digits) && j > new_from {
            let s: String = digits.iter().map(|d| char::from(b'0' + d)).collect();
            out.push((Detector::PaymentCard, redact(&s, 4, 4)));
            i = j;
        } else {
            i += 1;
        }
    }
}

fn iban_valid(s: &[u8]) -> bool {
    // Move the first four characters to the end, letters to numbers, mod 97 == 1.
    let mut rem: u32 = 0;
    for c in s[4..].iter().chain(&s[..4]) {
        let v = match c {
            b'0'..=b'9' => u32::from(c - b'0'),
            b'A'..=b'Z' => u32::from(c - b'A') + 10,
            _ => return false,
        };
        rem = if v >= 10 { (rem * 100 + v) % 97 } else { (rem * 10 + v) % 97 };
    }
    rem == 1
}

fn ibans(buf: &[u8], new_from: usize, out: &mut Vec<(Detector, String)>) {
    let mut i = 0;
    while i + 15 <= buf.len() {
        let starts = buf[i].is_ascii_uppercase()
            && buf[i + 1].is_ascii_uppercase()
            && buf[i + 2].is_ascii_digit()
            && buf[i + 3].is_ascii_digit()
            && (i == 0 || !buf[i - 1].is_ascii_alphanumeric());
        if !starts {
            i += 1;
            continue;
        }
        // Up to 34 characters, spaces allowed every four.
        let mut s = Vec::new();
        let mut j = i;
        while j < buf.len() && s.len() < 34 {
            let c = buf[j];
            if c.is_ascii_uppercase() || c.is_ascii_digit() {
                s.push(c);
                j += 1;
            } else if c == b' ' && s.len() % 4 == 0 && j + 1 < buf.len() && buf[j + 1].is_ascii_alphanumeric() {
                j += 1;
            } else {
                break;
            }
        }
        if s.len() >= 15 && iban_valid(&s) && j > new_from && (j == buf.len() || !buf[j].is_ascii_alphanumeric()) {
            out.push((Detector::Iban, redact(&String::from_utf8_lossy(&s), 4, 4)));
            i = j;
        } else {
            i += 1;
        }
    }
}

fn emails(buf: &[u8], new_from: usize, out: &mut Vec<(Detector, String)>) {
    let local = |c: u8| c.is_ascii_alphanumeric() || b"._%+-".contains(&c);
    let domain = |c: u8| c.is_ascii_alphanumeric() || c == b'.' || c == b'-';
    for (at, _) in buf.iter().enumerate().filter(|(_, c)| **c == b'@') {
        let mut s = at;
        while s > 0 && local(buf[s - 1]) {
            s -= 1;
        }
        let mut e = at + 1;
        while e < buf.len() && domain(buf[e]) {
            e += 1;
        }
        let dom = &buf[at + 1..e];
        let ok = s < at && dom.contains(&b'.') && dom.last().is_some_and(u8::is_ascii_alphabetic) && e > new_from;
        if ok {
            // The first character of the mailbox and the domain; the rest of the mailbox hidden.
            let first = char::from(buf[s]);
            out.push((Detector::Email, format!("{first}***@{}", String::from_utf8_lossy(dom))));
        }
    }
}

fn aws_keys(buf: &[u8], new_from: usize, out: &mut Vec<(Detector, String)>) {
    for i in 0..buf.len().saturating_sub(19) {
        let w = &buf[i..i + 20];
        if (w.starts_with(b"AKIA") || w.starts_with(b"ASIA"))
            && w[4..].iter().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
            && (i == 0 || !buf[i - 1].is_ascii_alphanumeric())
            && buf.get(i + 20).is_none_or(|c| !c.is_ascii_alphanumeric())
            && i + 20 > new_from
        {
            out.push((Detector::AwsAccessKey, redact(&String::from_utf8_lossy(w), 4, 2)));
        }
    }
}

fn private_keys(buf: &[u8], new_from: usize, out: &mut Vec<(Detector, String)>) {
    const MARK: &[u8] = b"-----BEGIN ";
    let mut i = 0;
    while let Some(p) = buf[i..].windows(MARK.len()).position(|w| w == MARK) {
        let start = i + p;
        let rest = &buf[start + MARK.len()..];
        if let Some(end) = rest.windows(5).position(|w| w == b"-----") {
            let label = &rest[..end];
            if label.ends_with(b"PRIVATE KEY") && label.len() <= 40 && start + MARK.len() + end + 5 > new_from {
                out.push((Detector::PrivateKey, format!("-----BEGIN {}-----", String::from_utf8_lossy(label))));
            }
        }
        i = start + 1;
    }
}

fn chinese_id_valid(s: &[u8]) -> bool {
    const W: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
    const C: &[u8; 11] = b"10X98765432";
    let sum: u32 = s[..17].iter().zip(W).map(|(d, w)| u32::from(d - b'0') * w).sum();
    let check = C[(sum % 11) as usize];
    s[17].to_ascii_uppercase() == check
}

fn chinese_ids(buf: &[u8], new_from: usize, out: &mut Vec<(Detector, String)>) {
    for i in 0..buf.len().saturating_sub(17) {
        let w = &buf[i..i + 18];
        let shape = w[..17].iter().all(u8::is_ascii_digit) && (w[17].is_ascii_digit() || w[17] == b'X' || w[17] == b'x');
        let bounded = (i == 0 || !buf[i - 1].is_ascii_digit()) && buf.get(i + 18).is_none_or(|c| !c.is_ascii_digit());
        // The birth date (year 19xx/20xx, month 01-12) keeps random digit runs out.
        let date_ok = matches!(&w[6..8], b"19" | b"20") && matches!((w[10], w[11]), (b'0', b'1'..=b'9') | (b'1', b'0'..=b'2'));
        if shape && bounded && date_ok && chinese_id_valid(w) && i + 18 > new_from {
            out.push((Detector::ChineseId, redact(&String::from_utf8_lossy(w), 3, 2)));
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use super::*;

    fn all() -> Vec<(Detector, DetectorSettings)> {
        DETECTORS.iter().map(|d| (*d, DetectorSettings::default())).collect()
    }

    fn found(text: &str) -> Vec<Detector> {
        let mut s = DlpState::default();
        s.scan(text.as_bytes(), &all()).into_iter().map(|f| f.detector).collect()
    }

    #[test]
    fn positives_and_near_misses() {
        // Cards: Luhn-valid with and without separators; a 16-digit number failing Luhn does not fire.
        assert_eq!(found("card=4111111111111111&x"), vec![Detector::PaymentCard]);
        assert_eq!(found("pan 4111 1111 1111 1111."), vec![Detector::PaymentCard]);
        assert_eq!(found("pan 5500-0000-0000-0004"), vec![Detector::PaymentCard]);
        assert!(found("order 4111111111111112 ok").is_empty());
        assert!(found("id 41111111111111110000").is_empty(), "inside a longer number");
        // IBAN
        assert_eq!(found("iban: GB82 WEST 1234 5698 7654 32"), vec![Detector::Iban]);
        assert_eq!(found("DE89370400440532013000"), vec![Detector::Iban]);
        assert!(found("GB82WEST12345698765433").is_empty(), "bad checksum");
        // AWS keys, PEM keys
        assert_eq!(found("key=AKIAIOSFODNN7EXAMPLE;"), vec![Detector::AwsAccessKey]);
        assert!(found("AKIAIOSFODNN7EXAMPL").is_empty(), "too short");
        assert_eq!(found("-----BEGIN RSA PRIVATE KEY-----\nMIIE"), vec![Detector::PrivateKey]);
        assert!(found("-----BEGIN CERTIFICATE-----").is_empty());
        // Chinese resident ID with its check digit.
        assert_eq!(found("id:11010519491231002X,"), vec![Detector::ChineseId]);
        assert!(found("id:110105194912310021,").is_empty(), "wrong check digit");
        // One e-mail address is an address, not a leak; the threshold decides.
        assert_eq!(found("to: a.b@example.org"), vec![Detector::Email]);
        assert!(found("not@an address").is_empty());
    }

    #[test]
    fn thresholds_streaming_and_redaction() {
        let settings: Vec<(Detector, DetectorSettings)> = vec![
            (Detector::Email, DetectorSettings { enabled: true, threshold: 3, action: DlpAction::Block }),
            (Detector::PaymentCard, DetectorSettings::default()),
        ];
        let mut s = DlpState::default();
        assert!(s.scan(b"a@x.org b@y.org ", &settings).is_empty());
        let f = s.scan(b"c@z.org", &settings);
        assert_eq!(f.len(), 1);
        assert!(f[0].block && f[0].count == 3);
        assert_eq!(f[0].sample, "a***@x.org");
        // A card number split across two reads is found once, redacted.
        let mut s = DlpState::default();
        assert!(s.scan(b"pan=41111111", &settings).is_empty());
        let f = s.scan(b"11111111&", &settings);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].sample, "4111********1111");
        assert!(s.scan(b"more text", &settings).is_empty(), "reported once");
    }
}
