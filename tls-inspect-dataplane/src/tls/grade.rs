//! The grade of what each leg of an inspected connection got, in the terms of the HTTPS
//! interception literature (Durumeric et al., "The Security Impact of HTTPS Interception",
//! NDSS 2017): A, a connection as a modern browser makes it; B, suboptimal but not known to be
//! broken; C, open to known attacks; F, broken (no authentication of the server, or a protocol
//! or cipher an attacker defeats). And whether the appliance made the client's connection
//! weaker than the client asked for, which is an error of ours, logged and counted.

use serde::Serialize;

use super::clienthello::{SSL2, SSL3, TLS1_0, TLS1_1, TLS1_2, TLS1_3};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum Grade {
    A,
    B,
    C,
    F,
}

/// What one leg negotiated.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Leg {
    /// The TLS version (0x0304 for 1.3).
    pub version: Option<u16>,
    /// The cipher suite (IANA number).
    pub suite: Option<u16>,
    /// The key exchange group (IANA number).
    pub group: Option<u16>,
    /// The peer's certificate was validated (the upstream leg: by the appliance, like a
    /// browser; the client leg: the forged certificate chains to the operator's CA).
    pub validated: bool,
}

/// A leg's grade and why it is not an A.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Graded {
    pub grade: Grade,
    pub reasons: Vec<&'static str>,
}

/// The post-quantum hybrid key exchanges (X25519MLKEM768, SecP256r1MLKEM768,
/// SecP384r1MLKEM1024, and the draft X25519Kyber768 browsers sent before them).
pub fn is_post_quantum(group: u16) -> bool {
    matches!(group, 0x11ec | 0x11eb | 0x11ed | 0x6399)
}

/// What a suite is made of, as far as grading goes: (forward secrecy, AEAD, broken).
fn suite_traits(suite: u16) -> (bool, bool, bool) {
    match suite {
        // TLS 1.3: always ephemeral and AEAD.
        0x1301..=0x1305 => (true, true, false),
        // ECDHE with AES-GCM or ChaCha20-Poly1305 (what rustls offers for TLS 1.2).
        0xc02b | 0xc02c | 0xc02f | 0xc030 | 0xcca8 | 0xcca9 => (true, true, false),
        // DHE with AES-GCM or ChaCha20.
        0x009e | 0x009f | 0xccaa => (true, true, false),
        // ECDHE or DHE with CBC.
        0xc009 | 0xc00a | 0xc013 | 0xc014 | 0xc023 | 0xc024 | 0xc027 | 0xc028 | 0x0033 | 0x0039 | 0x0067 | 0x006b => (true, false, false),
        // RSA key exchange with AES-GCM.
        0x009c | 0x009d => (false, true, false),
        // RSA key exchange with AES-CBC.
        0x002f | 0x0035 | 0x003c | 0x003d => (false, false, false),
        // RC4, 3DES, NULL, export, anonymous: broken or unauthenticated.
        _ => (false, false, true),
    }
}

/// Grades one leg. `client_offered_pq`: the client offered a post-quantum key exchange, so a
/// classical one on this leg is less than it asked for.
pub fn grade(leg: &Leg, client_offered_pq: bool) -> Graded {
    let mut grade = Grade::A;
    let mut reasons = Vec::new();
    let mut worse = |g: Grade, why: &'static str| {
        grade = grade.max(g);
        reasons.push(why);
    };
    if !leg.validated {
        worse(Grade::F, "certificate not validated");
    }
    match leg.version {
        Some(TLS1_3 | TLS1_2) => {}
        Some(TLS1_1 | TLS1_0) => worse(Grade::C, "TLS 1.0 or 1.1"),
        Some(SSL3 | SSL2) => worse(Grade::F, "SSL"),
        _ => worse(Grade::F, "no known TLS version"),
    }
    match leg.suite.map(suite_traits) {
        Some((_, _, true)) | None => worse(Grade::F, "broken or unauthenticated cipher suite"),
        Some((pfs, aead, false)) => {
            if !pfs {
                worse(Grade::B, "no forward secrecy");
            }
            if !aead {
                worse(Grade::B, "CBC cipher suite");
            }
        }
    }
    if client_offered_pq && !leg.group.is_some_and(is_post_quantum) {
        worse(Grade::B, "classical key exchange where the client offered post-quantum");
    }
    Graded { grade, reasons }
}

/// What the client offered, as far as `weakened` goes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Offer {
    /// The highest version it offered.
    pub max_version: u16,
    /// It offered a post-quantum key exchange the appliance speaks.
    pub pq_we_speak: bool,
}

/// Where the appliance gave the client less than the client asked for and the server gave:
/// a client leg with a lower version than both the client's and the server's best, or a
/// classical key exchange where both the client (with a group we speak) and the server's leg
/// had a post-quantum one. Each is a bug of ours, never the peers' choice.
pub fn weakened(offer: &Offer, client: &Leg, upstream: &Leg) -> Vec<&'static str> {
    let mut out = Vec::new();
    if let (Some(c), Some(u)) = (client.version, upstream.version) {
        if c < u.min(offer.max_version) {
            out.push("client leg on an older TLS version than the client and the server speak");
        }
    }
    if offer.pq_we_speak && upstream.group.is_some_and(is_post_quantum) && !client.group.is_some_and(is_post_quantum) {
        out.push("client leg on a classical key exchange while the client offered post-quantum and the server leg has it");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leg(version: u16, suite: u16, group: u16) -> Leg {
        Leg { version: Some(version), suite: Some(suite), group: Some(group), validated: true }
    }

    #[test]
    fn grades_follow_what_a_modern_browser_gets() {
        assert_eq!(grade(&leg(TLS1_3, 0x1301, 0x11ec), true).grade, Grade::A);
        assert_eq!(grade(&leg(TLS1_2, 0xc02f, 0x001d), false).grade, Grade::A, "TLS 1.2 ECDHE-GCM");
        let b = grade(&leg(TLS1_3, 0x1302, 0x001d), true);
        assert_eq!((b.grade, b.reasons.len()), (Grade::B, 1), "{b:?}");
        assert_eq!(grade(&leg(TLS1_2, 0x009c, 0x0017), false).grade, Grade::B, "RSA key exchange");
        assert_eq!(grade(&leg(TLS1_2, 0xc013, 0x0017), false).grade, Grade::B, "CBC");
        assert_eq!(grade(&leg(TLS1_0, 0xc013, 0x0017), false).grade, Grade::C);
        assert_eq!(grade(&leg(TLS1_2, 0x000a, 0x0017), false).grade, Grade::F, "3DES");
        assert_eq!(grade(&leg(SSL3, 0x002f, 0x0017), false).grade, Grade::F);
        let f = grade(&Leg { validated: false, ..leg(TLS1_3, 0x1301, 0x11ec) }, true);
        assert_eq!((f.grade, f.reasons), (Grade::F, vec!["certificate not validated"]));
    }

    #[test]
    fn weakened_only_when_the_appliance_gave_less_than_both_ends_had() {
        let offer = Offer { max_version: TLS1_3, pq_we_speak: true };
        let pq13 = leg(TLS1_3, 0x1301, 0x11ec);
        assert!(weakened(&offer, &pq13, &pq13).is_empty());
        // The server spoke only TLS 1.2 and classical: the client leg may be anything.
        assert!(weakened(&offer, &leg(TLS1_2, 0xc02f, 0x001d), &leg(TLS1_2, 0xc02f, 0x001d)).is_empty());
        assert_eq!(weakened(&offer, &leg(TLS1_2, 0xc02f, 0x11ec), &pq13).len(), 1, "version");
        assert_eq!(weakened(&offer, &leg(TLS1_3, 0x1301, 0x001d), &pq13).len(), 1, "key exchange");
        // A client that offered no PQ group we speak is not owed one.
        assert!(weakened(&Offer { pq_we_speak: false, ..offer }, &leg(TLS1_3, 0x1301, 0x001d), &pq13).is_empty());
    }
}
