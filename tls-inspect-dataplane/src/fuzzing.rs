//! The checks of each fuzz target (`fuzz/`, run by `cargo xtask fuzz`), here so that the fuzz
//! targets and the corpus replay in the tests run the same code: each takes any bytes, must not
//! panic, and asserts what must hold of its input.

use std::sync::{Arc, OnceLock};

use tls_inspect_common::{parse_frame, Frame, L4};

use crate::inspect::DEFAULT_RULES;
use crate::inspect::h2::{H2Dir, H2Event, PREFACE};
use crate::inspect::ips::{FlowIps, FlowTuple, IpsMode, Level, Options, Ruleset};
use crate::inspect::rules::parse_rules;
use crate::inspect::Direction;
use crate::tls::clienthello::{sniff, Sniff};

/// The ClientHello parser: what it derives from a hello is computable, and the hello's own
/// records read the same without what followed them.
pub fn clienthello(data: &[u8]) {
    if let Sniff::Hello(hello) = sniff(data) {
        let _ = hello.ja4();
        let _ = crate::tls::clienthello::ClientHello::ja3_hash(&hello.ja3_string());
        let _ = hello.max_version();
        assert!(hello.record_len <= data.len());
        assert_eq!(sniff(&data[..hello.record_len]), Sniff::Hello(hello));
    }
}

/// The rule parser: every rule that loads has a sid and a message, every error a real line.
pub fn rules(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let (loaded, errors) = parse_rules(text);
        for r in &loaded {
            assert!(r.sid != 0 && !r.msg.is_empty());
        }
        let lines = text.lines().count().max(1);
        for e in &errors {
            assert!(e.line >= 1 && e.line <= lines);
        }
    }
}

/// The bundled rules, compiled once.
fn ruleset() -> Option<Arc<Ruleset>> {
    static SET: OnceLock<Option<Arc<Ruleset>>> = OnceLock::new();
    SET.get_or_init(|| {
        let (rules, _) = parse_rules(DEFAULT_RULES);
        Ruleset::compile(rules, &Options { mode: IpsMode::Block, level: Level::Strict, ..Options::default() }).ok().map(|(set, _)| Arc::new(set))
    })
    .clone()
}

/// The IPS with the bundled rules and its HTTP/1.1 follower (heads, bodies, chunked framing,
/// pipelining), both directions; the first byte says where the reads split.
pub fn http1(data: &[u8]) {
    let (Some((&split, rest)), Some(set)) = (data.split_first(), ruleset()) else { return };
    let Ok(mut scratch) = set.scratch() else { return };
    let mut flow = FlowIps::new(set, FlowTuple::to_port(443));
    let cut = usize::from(split).min(rest.len());
    for (direction, piece) in [(Direction::ToServer, &rest[..cut]), (Direction::ToClient, &rest[..cut]), (Direction::ToServer, &rest[cut..])] {
        let _ = flow.inspect(direction, piece, &mut scratch);
    }
}

/// The HTTP/2 follower (frames, padding, HPACK, CONTINUATION), client and server side, fed in
/// pieces of the size the first byte says: body bytes come only from the input.
pub fn h2(data: &[u8]) {
    let Some((&split, rest)) = data.split_first() else { return };
    let mut client = H2Dir::new(true);
    let _ = client.feed(PREFACE);
    let mut server = H2Dir::new(false);
    let mut body = 0usize;
    for piece in rest.chunks(usize::from(split).max(1)) {
        for dir in [&mut client, &mut server] {
            for event in dir.feed(piece) {
                if let H2Event::Data(_, bytes, _) = event {
                    body += bytes.len();
                }
            }
        }
    }
    assert!(body <= 2 * rest.len());
}

/// The frame parser the XDP program runs: a frame with ports has the headers they sit behind.
pub fn frame(data: &[u8]) {
    if let Ok(Frame::Ipv4 { l4: L4::Tcp { .. } | L4::Udp { .. }, .. }) = parse_frame(data) {
        assert!(data.len() >= 14 + 20 + 4);
    }
}

/// A target's checks.
pub type Check = fn(&[u8]);

/// Every target, by the name of its fuzz target and corpus folder.
pub const TARGETS: [(&str, Check); 5] = [("clienthello", clienthello), ("rules", rules), ("http1", http1), ("h2", h2), ("frame", frame)];
