//! The IPS engine on byte fixtures: streaming across reads, HTTP buffers, modifiers, levels,
//! monitor vs block, overrides.

use std::sync::Arc;

use super::matcher::percent_decode;
use super::*;
use crate::inspect::rules::{parse_rules, Action};
use crate::inspect::Verdict;

mod bundled_samples;
mod depth;
mod fields;
mod reports;
mod payload_keywords;

fn set(text: &str, mode: IpsMode, level: Level) -> Arc<Ruleset> {
    let (rules, errors) = parse_rules(text);
    assert!(errors.is_empty(), "{errors:?}");
    let (set, refused) = Ruleset::compile(rules, &Options { mode, level, body_depth: 1 << 20, ..Options::default() }).unwrap();
    assert!(refused.is_empty(), "{refused:?}");
    Arc::new(set)
}

const LOG4J: &str = r#"drop http any any -> any any (msg:"Log4Shell"; flow:to_server; http.uri; content:"${jndi:"; nocase; sid:1; metadata: confidence high;)
drop tcp any any -> any any (msg:"raw marker"; content:"EVIL"; content:"MARK"; distance:1; within:10; sid:2; metadata: confidence medium;)
drop http any any -> any any (msg:"scanner"; http.user_agent; content:"sqlmap"; nocase; sid:3; metadata: confidence low;)
drop http any any -> any any (msg:"body card"; http.request_body; content:"4111"; sid:4;)
"#;

#[test]
fn http_uri_rule_blocks_and_streams_split_patterns_match() {
    let s = set(LOG4J, IpsMode::Block, Level::Strict);
    let mut scratch = s.scratch().unwrap();
    let mut f = FlowIps::new(s.clone(), FlowTuple::to_port(443));
    // The request arrives in three reads, the pattern split across them.
    assert_eq!(f.inspect(Direction::ToServer, b"GET /a?x=${jn", &mut scratch), Verdict::Continue);
    assert_eq!(f.inspect(Direction::ToServer, b"DI:ldap://e/a} HTTP/1.1\r\nHost: x\r\n", &mut scratch), Verdict::Continue);
    let v = f.inspect(Direction::ToServer, b"\r\n", &mut scratch);
    assert!(matches!(v, Verdict::Block(ref why) if why.to_string().contains("sid 1")), "{v:?}");
    assert_eq!(f.hits[0].http.as_ref().unwrap().uri, "/a?x=${jnDI:ldap://e/a}");

    // A raw stream rule with distance/within, split across reads.
    let mut f = FlowIps::new(s.clone(), FlowTuple::to_port(443));
    f.inspect(Direction::ToServer, b"xxEV", &mut scratch);
    f.inspect(Direction::ToServer, b"IL-", &mut scratch);
    assert!(matches!(f.inspect(Direction::ToServer, b"-MARKyy", &mut scratch), Verdict::Block(_)));
    // ... but not when MARK is too far.
    let mut f = FlowIps::new(s.clone(), FlowTuple::to_port(443));
    assert_eq!(f.inspect(Direction::ToServer, b"EVIL------------------MARK", &mut scratch), Verdict::Continue);
}

#[test]
fn direction_body_and_negatives() {
    let s = set(LOG4J, IpsMode::Block, Level::Strict);
    let mut scratch = s.scratch().unwrap();
    // flow:to_server: the same string from the server does not fire.
    let mut f = FlowIps::new(s.clone(), FlowTuple::to_port(443));
    assert_eq!(f.inspect(Direction::ToClient, b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n${jndi:x", &mut scratch), Verdict::Continue);
    // A body pattern in a POST body, after the head.
    let mut f = FlowIps::new(s.clone(), FlowTuple::to_port(443));
    let v = f.inspect(Direction::ToServer, b"POST /pay HTTP/1.1\r\nHost: x\r\nContent-Length: 16\r\n\r\ncard=4111111111", &mut scratch);
    assert!(matches!(v, Verdict::Block(ref w) if w.to_string().contains("sid 4")), "{v:?}");
    // The same digits in the URI are not a body.
    let mut f = FlowIps::new(s.clone(), FlowTuple::to_port(443));
    assert_eq!(f.inspect(Direction::ToServer, b"GET /4111 HTTP/1.1\r\nHost: x\r\n\r\n", &mut scratch), Verdict::Continue);
    // Benign traffic.
    let mut f = FlowIps::new(s.clone(), FlowTuple::to_port(443));
    assert_eq!(f.inspect(Direction::ToServer, b"GET /index.html HTTP/1.1\r\nHost: x\r\nUser-Agent: curl\r\n\r\n", &mut scratch), Verdict::Continue);
    assert!(f.hits.is_empty());
}

#[test]
fn monitor_levels_and_overrides() {
    let s = set(LOG4J, IpsMode::Monitor, Level::Strict);
    let mut scratch = s.scratch().unwrap();
    let mut f = FlowIps::new(s, FlowTuple::to_port(443));
    assert_eq!(f.inspect(Direction::ToServer, b"GET /${jndi:x} HTTP/1.1\r\n\r\n", &mut scratch), Verdict::Continue, "monitor never blocks");
    assert_eq!(f.hits.len(), 1);
    assert!(!f.hits[0].blocked);

    // Loose: only high-confidence rules; the low-confidence scanner rule is off.
    let s = set(LOG4J, IpsMode::Block, Level::Loose);
    let mut scratch = s.scratch().unwrap();
    let mut f = FlowIps::new(s.clone(), FlowTuple::to_port(443));
    assert_eq!(f.inspect(Direction::ToServer, b"GET / HTTP/1.1\r\nUser-Agent: sqlmap/1.7\r\n\r\n", &mut scratch), Verdict::Continue);
    assert!(!s.is_active(3) && s.is_active(1));
    let s = set(LOG4J, IpsMode::Block, Level::Strict);
    let mut scratch = s.scratch().unwrap();
    let mut f = FlowIps::new(s, FlowTuple::to_port(443));
    assert!(matches!(f.inspect(Direction::ToServer, b"GET / HTTP/1.1\r\nUser-Agent: sqlmap/1.7\r\n\r\n", &mut scratch), Verdict::Block(_)));

    // A per-rule override: alert only, in block mode.
    let (rules, _) = parse_rules(LOG4J);
    let (mut s, _) = Ruleset::compile(rules, &Options { mode: IpsMode::Block, level: Level::Strict, body_depth: 1 << 20, ..Options::default() }).unwrap();
    assert!(s.set_override(1, Override::Set(Action::Alert)));
    let s = Arc::new(s);
    let mut scratch = s.scratch().unwrap();
    let mut f = FlowIps::new(s, FlowTuple::to_port(443));
    assert_eq!(f.inspect(Direction::ToServer, b"GET /${jndi:x} HTTP/1.1\r\n\r\n", &mut scratch), Verdict::Continue);
    assert_eq!(f.hits.len(), 1);
}

#[test]
fn unsupported_pcre_refuses_one_rule_only() {
    let (rules, _) = parse_rules(
        "drop tcp any any -> any any (msg:\"backref\"; pcre:\"/(a)\\1/\"; sid:10;)\ndrop tcp any any -> any any (msg:\"ok\"; pcre:\"/ab+c/i\"; sid:11;)\n",
    );
    let (s, refused) = Ruleset::compile(rules, &Options { mode: IpsMode::Block, level: Level::Strict, body_depth: 1024, ..Options::default() }).unwrap();
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0].0, 10);
    let s = Arc::new(s);
    let mut scratch = s.scratch().unwrap();
    let mut f = FlowIps::new(s, FlowTuple::to_port(443));
    assert!(matches!(f.inspect(Direction::ToServer, b"xxABBBCxx", &mut scratch), Verdict::Block(_)));
}

#[test]
fn uris_are_percent_decoded_once() {
    assert_eq!(percent_decode(b"/a%20b%7Bc%zz%2"), b"/a b{c%zz%2");
    assert_eq!(percent_decode(b"%252e"), b"%2e");
    let s = set(LOG4J, IpsMode::Block, Level::Strict);
    let mut scratch = s.scratch().unwrap();
    let mut f = FlowIps::new(s, FlowTuple::to_port(443));
    let v = f.inspect(Direction::ToServer, b"GET /?q=$%7Bjndi:ldap://x%7D HTTP/1.1\r\nHost: x\r\n\r\n", &mut scratch);
    assert!(matches!(v, Verdict::Block(_)), "an encoded Log4Shell URI is caught: {v:?}");
}

#[test]
fn every_bundled_rule_fires_on_its_sample_and_not_on_a_near_miss() {
    let (rules, errors) = parse_rules(crate::inspect::DEFAULT_RULES);
    assert!(errors.is_empty(), "{errors:?}");
    let (set, refused) = Ruleset::compile(rules, &Options { mode: IpsMode::Monitor, level: Level::Strict, body_depth: 1 << 20, ..Options::default() }).unwrap();
    assert!(refused.is_empty(), "{refused:?}");
    let set = Arc::new(set);
    let mut scratch = set.scratch().unwrap();
    let cases = bundled_samples::cases();
    let mut covered: Vec<u32> = cases.iter().map(|c| c.0).collect();
    covered.sort_unstable();
    let mut all: Vec<u32> = set.rules.iter().map(|r| r.sid).collect();
    all.sort_unstable();
    assert_eq!(covered, all, "every bundled rule has a sample");
    assert!(all.len() >= 150, "{} bundled rules", all.len());
    let mut failures = Vec::new();
    // Each sample in one read, and in reads of 1 and 7 bytes (the appliance hands the IPS what
    // each read decrypted: a request can come in pieces).
    for (sid, positive, negative) in cases {
        for read in [usize::MAX, 1, 7] {
            let mut f = FlowIps::new(set.clone(), FlowTuple::to_port(443));
            for piece in positive.chunks(read.min(positive.len())) {
                f.inspect(Direction::ToServer, piece, &mut scratch);
            }
            if !f.hits.iter().any(|h| h.sid == sid) {
                failures.push(format!("sid {sid} missed (reads of {read} bytes) {:?}", String::from_utf8_lossy(&positive)));
            }
            let mut f = FlowIps::new(set.clone(), FlowTuple::to_port(443));
            for piece in negative.chunks(read.min(negative.len())) {
                f.inspect(Direction::ToServer, piece, &mut scratch);
            }
            // A near miss fires no bundled rule at all: through the appliance, any of them would
            // block it.
            for h in &f.hits {
                failures.push(format!("sid {} fired on the near miss of sid {sid} (reads of {read} bytes) {:?}", h.sid, String::from_utf8_lossy(&negative)));
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn every_bundled_sample_is_one_complete_request() {
    // The namespace test sends the near misses on keep-alive connections: a sample framed
    // wrongly would run into the next one or leave the server waiting.
    // A positive may declare more body than it sends (an oversized Content-Length is the
    // exploit): it goes on a connection of its own, which the appliance closes.
    let mut samples: Vec<(String, Vec<u8>, bool)> = Vec::new();
    for (sid, positive, near_miss) in bundled_samples::cases() {
        samples.push((format!("positive {sid}"), positive, true));
        samples.push((format!("near miss {sid}"), near_miss, false));
    }
    samples.extend(bundled_samples::benign_corpus().into_iter().enumerate().map(|(i, b)| (format!("benign {i}"), b, false)));
    let mut failures = Vec::new();
    for (name, sample, may_be_cut) in &samples {
        match bundled_samples::request_len(sample) {
            Ok(n) if n == sample.len() || (*may_be_cut && n > sample.len()) => {}
            Ok(n) => failures.push(format!("{name}: the request ends at byte {n} of {}", sample.len())),
            Err(e) => failures.push(format!("{name}: {e}")),
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn no_bundled_rule_fires_on_ordinary_traffic() {
    let (rules, errors) = parse_rules(crate::inspect::DEFAULT_RULES);
    assert!(errors.is_empty(), "{errors:?}");
    let (set, refused) = Ruleset::compile(rules, &Options { mode: IpsMode::Monitor, level: Level::Strict, body_depth: 1 << 20, ..Options::default() }).unwrap();
    assert!(refused.is_empty(), "{refused:?}");
    let set = Arc::new(set);
    let mut scratch = set.scratch().unwrap();
    let corpus = bundled_samples::benign_corpus();
    assert!(corpus.len() >= 30);
    let mut hits = Vec::new();
    for request in &corpus {
        let mut f = FlowIps::new(set.clone(), FlowTuple::to_port(443));
        f.inspect(Direction::ToServer, request, &mut scratch);
        hits.extend(f.hits.iter().map(|h| format!("sid {} ({}) on {:?}", h.sid, h.msg, String::from_utf8_lossy(request))));
    }
    // The whole corpus in one keep-alive flow too (messages combine only with themselves).
    let mut f = FlowIps::new(set.clone(), FlowTuple::to_port(443));
    for request in &corpus {
        f.inspect(Direction::ToServer, request, &mut scratch);
    }
    hits.extend(f.hits.iter().map(|h| format!("sid {} ({}) in the keep-alive flow", h.sid, h.msg)));
    assert!(hits.is_empty(), "{hits:#?}");
}

#[test]
fn http2_headers_and_bodies_fill_the_http_buffers() {
    use crate::inspect::h2::PREFACE;
    let s = set(LOG4J, IpsMode::Block, Level::Strict);
    let mut scratch = s.scratch().unwrap();
    let frame = |kind: u8, flags: u8, stream: u32, payload: &[u8]| {
        let mut f = vec![(payload.len() >> 16) as u8, (payload.len() >> 8) as u8, payload.len() as u8, kind, flags];
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    };
    let mut enc = loona_hpack::Encoder::new();
    let clean = enc.encode(vec![(&b":method"[..], &b"POST"[..]), (&b":path"[..], &b"/pay"[..]), (&b":authority"[..], &b"x"[..])]);
    let evil = enc.encode(vec![(&b":method"[..], &b"GET"[..]), (&b":path"[..], &b"/?q=$%7Bjndi:ldap://x%7D"[..]), (&b":authority"[..], &b"x"[..])]);
    // A POST whose body carries the card prefix, over HTTP/2.
    let mut wire = PREFACE.to_vec();
    wire.extend(frame(4, 0, 0, &[]));
    wire.extend(frame(1, 0x4, 1, &clean));
    wire.extend(frame(0, 0x1, 1, b"card=4111111111111111"));
    let mut f = FlowIps::new(s.clone(), FlowTuple::to_port(443));
    let v = f.inspect(Direction::ToServer, &wire, &mut scratch);
    assert!(matches!(v, Verdict::Block(ref w) if w.to_string().contains("sid 4")), "{v:?}");
    // The URI rule on a later stream of the same connection (HPACK state carried over).
    let mut f = FlowIps::new(s, FlowTuple::to_port(443));
    let mut wire = PREFACE.to_vec();
    wire.extend(frame(1, 0x5, 1, &clean));
    f.inspect(Direction::ToServer, &wire, &mut scratch);
    let v = f.inspect(Direction::ToServer, &frame(1, 0x5, 3, &evil), &mut scratch);
    assert!(matches!(v, Verdict::Block(ref w) if w.to_string().contains("sid 1")), "{v:?}");
    assert_eq!(f.hits[0].http.as_ref().unwrap().h2_stream, Some(3));
}

const CHUNKED: &str = r#"drop http any any -> any any (msg:"body secret"; http.request_body; content:"secretdata"; sid:20;)
drop http any any -> any any (msg:"resp body"; http.response_body; content:"malware-payload"; sid:21;)
drop http any any -> any any (msg:"uri after"; http.uri; content:"/second"; sid:22;)
"#;

#[test]
fn many_pipelined_requests_in_one_read_are_each_followed_without_recursion() {
    let s = set(CHUNKED, IpsMode::Monitor, Level::Strict);
    let mut scratch = s.scratch().unwrap();
    // 20,000 requests with bodies in one read (the old follower recursed once per request and
    // copied the rest each time), the last one naming /second.
    let mut wire = Vec::new();
    for i in 0..20_000 {
        wire.extend_from_slice(format!("POST /r{i} HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc").as_bytes());
    }
    wire.extend_from_slice(b"GET /second HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut f = FlowIps::new(s.clone(), FlowTuple::to_port(443));
    f.inspect(Direction::ToServer, &wire, &mut scratch);
    assert_eq!(f.hits.iter().map(|h| h.sid).collect::<Vec<_>>(), vec![22], "the last request was followed");
    assert_eq!(f.last_http.as_ref().map(|h| h.uri.as_str()), Some("/second"));
}

#[test]
fn chunked_bodies_are_decoded_and_the_next_message_follows() {
    let s = set(CHUNKED, IpsMode::Monitor, Level::Strict);
    let mut scratch = s.scratch().unwrap();
    // "secretdata" split over two chunks (with an extension and a trailer), fed byte by byte:
    // only the decoded body holds it; then a pipelined request is parsed.
    let msg = b"POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n4;ext=1\r\nsecr\r\n6\r\netdata\r\n0\r\nX-Trailer: 1\r\n\r\nGET /second HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut f = FlowIps::new(s.clone(), FlowTuple::to_port(443));
    for b in msg.iter() {
        f.inspect(Direction::ToServer, std::slice::from_ref(b), &mut scratch);
    }
    let sids: Vec<u32> = f.hits.iter().map(|h| h.sid).collect();
    assert_eq!(sids, vec![20, 22], "{:?}", f.hits);
    // Uppercase hex sizes, a response with a chunked body.
    let mut f = FlowIps::new(s.clone(), FlowTuple::to_port(443));
    f.inspect(Direction::ToClient, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\nA\r\nmalware-pa\r\n5\r\nyload\r\n0\r\n\r\n", &mut scratch);
    assert_eq!(f.hits.iter().map(|h| h.sid).collect::<Vec<_>>(), vec![21]);
    // Not chunked as the last coding: not followed; broken framing stops the parser, no panic.
    for bad in [
        &b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n5\r\nsecretdata\r\n"[..],
        &b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nsecretdata\r\n"[..],
        &b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nFFFFFFFFFFFFFFFFFFFF\r\nsecretdata"[..],
        &b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nsecrXXetdata\r\n"[..],
    ] {
        let mut f = FlowIps::new(s.clone(), FlowTuple::to_port(443));
        f.inspect(Direction::ToServer, bad, &mut scratch);
        f.inspect(Direction::ToServer, b"GET /second HTTP/1.1\r\n\r\n", &mut scratch);
        assert!(f.hits.iter().all(|h| h.sid != 20), "{:?}", String::from_utf8_lossy(bad));
    }
    // A body past the depth is not scanned.
    let (rules, _) = parse_rules(CHUNKED);
    let (small, _) = Ruleset::compile(rules, &Options { mode: IpsMode::Monitor, level: Level::Strict, body_depth: 8, ..Options::default() }).unwrap();
    let small = Arc::new(small);
    let mut f = FlowIps::new(small, FlowTuple::to_port(443));
    f.inspect(Direction::ToServer, b"POST /up HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nxxxx\r\nA\r\nsecretdata\r\n0\r\n\r\n", &mut scratch);
    assert!(f.hits.is_empty(), "{:?}", f.hits);
}

#[test]
fn pcre_hyperscan_cannot_compile_is_confirmed_with_fancy_regex() {
    let text = r#"drop http any any -> any any (msg:"backref in uri"; http.uri; content:"/dup/"; pcre:"/\/dup\/(\w+)\/\1/i"; sid:30;)
drop http any any -> any any (msg:"lookbehind ua"; http.user_agent; content:"bot"; pcre:"/(?<!good)bot/"; sid:31;)
drop tcp any any -> any any (msg:"backref on the stream"; content:"x"; pcre:"/(a)\1/"; sid:32;)
drop http any any -> any any (msg:"no prefilter"; http.uri; pcre:"/(b)\1/"; sid:33;)
drop http any any -> any any (msg:"negated fallback"; http.host; content:"example"; pcre:!"/^(www)\.\1/"; sid:34;)
"#;
    let (rules, errors) = parse_rules(text);
    assert!(errors.is_empty(), "{errors:?}");
    let (s, refused) = Ruleset::compile(rules, &Options { mode: IpsMode::Block, level: Level::Strict, body_depth: 1024, ..Options::default() }).unwrap();
    let refused_sids: Vec<u32> = refused.iter().map(|r| r.0).collect();
    assert_eq!(refused_sids, vec![32, 33], "{refused:?}");
    assert!(refused[0].1.contains("sticky field buffer"), "{refused:?}");
    assert!(refused[1].1.contains("prefilter"), "{refused:?}");
    let s = Arc::new(s);
    let mut scratch = s.scratch().unwrap();
    let cases: [(&[u8], Option<u32>); 6] = [
        (b"GET /dup/abc/abc HTTP/1.1\r\nHost: h\r\n\r\n", Some(30)),
        (b"GET /dup/abc/abd HTTP/1.1\r\nHost: h\r\n\r\n", None),
        (b"GET / HTTP/1.1\r\nHost: h\r\nUser-Agent: evilbot\r\n\r\n", Some(31)),
        (b"GET / HTTP/1.1\r\nHost: h\r\nUser-Agent: goodbot\r\n\r\n", None),
        (b"GET / HTTP/1.1\r\nHost: api.example\r\n\r\n", Some(34)),
        (b"GET / HTTP/1.1\r\nHost: www.www.example\r\n\r\n", None),
    ];
    for (req, want) in cases {
        let mut f = FlowIps::new(s.clone(), FlowTuple::to_port(443));
        let v = f.inspect(Direction::ToServer, req, &mut scratch);
        let got: Vec<u32> = f.hits.iter().map(|h| h.sid).collect();
        assert_eq!(got, want.into_iter().collect::<Vec<_>>(), "{}", String::from_utf8_lossy(req));
        assert_eq!(matches!(v, Verdict::Block(_)), want.is_some());
    }
}

fn compile_with(text: &str, opts: &Options) -> Arc<Ruleset> {
    let (rules, errors) = parse_rules(text);
    assert!(errors.is_empty(), "{errors:?}");
    let (set, refused) = Ruleset::compile(rules, opts).unwrap();
    assert!(refused.is_empty(), "{refused:?}");
    Arc::new(set)
}

fn flow(client: &str, server: &str, port: u16) -> FlowTuple {
    FlowTuple { client: (client.parse().unwrap(), 40_000), server: (server.parse().unwrap(), port) }
}

const ACTIONS: &str = r#"alert http any any -> any any (msg:"alert only"; http.uri; content:"/watch"; sid:1;)
drop http any any -> any any (msg:"drop"; http.uri; content:"/drop"; sid:2;)
reject http any any -> any any (msg:"reject"; http.uri; content:"/reject"; sid:3;)
"#;

#[test]
fn each_action_does_what_suricata_says_and_monitor_mode_only_alerts() {
    let block = compile_with(ACTIONS, &Options { mode: IpsMode::Block, ..Options::default() });
    let mut scratch = block.scratch().unwrap();
    let get = |path: &str| format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").into_bytes();
    for (path, blocked, action) in [("/watch", false, Action::Alert), ("/drop", true, Action::Drop), ("/reject", true, Action::Reject)] {
        let mut f = FlowIps::new(block.clone(), FlowTuple::to_port(443));
        let v = f.inspect(Direction::ToServer, &get(path), &mut scratch);
        assert_eq!(matches!(v, Verdict::Block(_)), blocked, "{path}: {v:?}");
        assert_eq!(f.hits.len(), 1, "{path}");
        assert_eq!((f.hits[0].action, f.hits[0].blocked), (action, blocked), "{path}");
    }
    let monitor = compile_with(ACTIONS, &Options { mode: IpsMode::Monitor, ..Options::default() });
    for path in ["/drop", "/reject"] {
        let mut f = FlowIps::new(monitor.clone(), FlowTuple::to_port(443));
        assert_eq!(f.inspect(Direction::ToServer, &get(path), &mut scratch), Verdict::Continue, "{path}: monitor never blocks");
        assert!(f.hits[0].action.blocks() && !f.hits[0].blocked, "{path}: an alert that says what it would have done");
    }
    // The operator's override replaces the rule's action, both ways.
    let (rules, _) = parse_rules(ACTIONS);
    let (mut set, _) = Ruleset::compile(rules, &Options { mode: IpsMode::Block, ..Options::default() }).unwrap();
    assert!(set.set_override(1, Override::Set(Action::Drop)) && set.set_override(2, Override::Set(Action::Alert)));
    assert_eq!((set.action_of(1), set.action_of(2), set.action_of(3)), (Some(Action::Drop), Some(Action::Alert), Some(Action::Reject)));
    let set = Arc::new(set);
    let mut f = FlowIps::new(set.clone(), FlowTuple::to_port(443));
    assert!(matches!(f.inspect(Direction::ToServer, &get("/watch"), &mut scratch), Verdict::Block(_)));
    let mut f = FlowIps::new(set, FlowTuple::to_port(443));
    assert_eq!(f.inspect(Direction::ToServer, &get("/drop"), &mut scratch), Verdict::Continue);
}

#[test]
fn a_pass_rule_wins_and_ends_matching_for_the_flow() {
    let text = format!("{ACTIONS}pass http any any -> any any (msg:\"trusted updater\"; http.user_agent; content:\"updater/\"; sid:9;)\n");
    let set = compile_with(&text, &Options { mode: IpsMode::Block, ..Options::default() });
    let mut scratch = set.scratch().unwrap();
    let mut f = FlowIps::new(set.clone(), FlowTuple::to_port(443));
    // The same request matches the pass and the drop rule: pass wins, nothing alerts.
    let v = f.inspect(Direction::ToServer, b"GET /drop HTTP/1.1\r\nUser-Agent: updater/2\r\n\r\n", &mut scratch);
    assert_eq!(v, Verdict::Continue);
    assert!(f.hits.is_empty() && f.passed());
    // ... and later requests on the flow are not matched at all.
    assert_eq!(f.inspect(Direction::ToServer, b"GET /reject HTTP/1.1\r\n\r\n", &mut scratch), Verdict::Continue);
    assert!(f.hits.is_empty());
    // Without the pass rule's match, the drop rule blocks as before.
    let mut f = FlowIps::new(set, FlowTuple::to_port(443));
    assert!(matches!(f.inspect(Direction::ToServer, b"GET /drop HTTP/1.1\r\nUser-Agent: curl\r\n\r\n", &mut scratch), Verdict::Block(_)));
}

#[test]
fn rule_headers_match_addresses_ports_and_direction() {
    let text = r#"drop http $HOME_NET any -> $EXTERNAL_NET $HTTP_PORTS (msg:"out"; flow:to_server; http.uri; content:"/x"; sid:1;)
drop tcp $EXTERNAL_NET any -> $HOME_NET any (msg:"in"; flow:to_client; content:"PAYLOAD"; sid:2;)
drop tcp [10.0.0.0/8,!10.9.0.0/16] any <> any ![22,8000:8100] (msg:"both ways"; content:"MARK"; sid:3;)
"#;
    let set = compile_with(text, &Options { mode: IpsMode::Block, ..Options::default() });
    let mut scratch = set.scratch().unwrap();
    let fires = |t: FlowTuple, d: Direction, data: &[u8], scratch: &mut hyperscan::Scratch| {
        let mut f = FlowIps::new(set.clone(), t);
        f.inspect(d, data, scratch);
        f.hits.iter().map(|h| h.sid).collect::<Vec<_>>()
    };
    let req = b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n";
    assert_eq!(fires(flow("10.0.0.5", "203.0.113.7", 443), Direction::ToServer, req, &mut scratch), [1], "inside to outside on 443");
    assert!(fires(flow("10.0.0.5", "203.0.113.7", 8443), Direction::ToServer, req, &mut scratch).is_empty(), "not an HTTP port");
    assert!(fires(flow("10.0.0.5", "10.1.1.1", 443), Direction::ToServer, req, &mut scratch).is_empty(), "the server is not external");
    assert!(fires(flow("198.18.0.1", "203.0.113.7", 443), Direction::ToServer, req, &mut scratch).is_empty(), "the client is not at home");
    // A response is data from the server to the client: the header's source is the server.
    assert_eq!(fires(flow("10.0.0.5", "203.0.113.7", 443), Direction::ToClient, b"PAYLOAD", &mut scratch), [2]);
    assert!(fires(flow("10.0.0.5", "203.0.113.7", 443), Direction::ToServer, b"PAYLOAD", &mut scratch).is_empty());
    // `<>`: either way round; groups and negation.
    assert_eq!(fires(flow("10.0.0.5", "203.0.113.7", 443), Direction::ToClient, b"MARK", &mut scratch), [3]);
    assert_eq!(fires(flow("10.0.0.5", "203.0.113.7", 443), Direction::ToServer, b"MARK", &mut scratch), [3]);
    assert!(fires(flow("10.9.0.5", "203.0.113.7", 443), Direction::ToServer, b"MARK", &mut scratch).is_empty(), "excluded source");
    assert!(fires(flow("10.0.0.5", "203.0.113.7", 8050), Direction::ToServer, b"MARK", &mut scratch).is_empty(), "excluded port");
    // The operator's variables replace Suricata's defaults; an undefined one refuses its rule.
    let mut vars = std::collections::BTreeMap::new();
    vars.insert("HOME_NET".to_string(), "198.18.0.0/24".to_string());
    let opts = Options { mode: IpsMode::Block, vars: crate::inspect::header::Vars::with(&vars).unwrap(), ..Options::default() };
    let (rules, _) = parse_rules(text);
    let (home, _) = Ruleset::compile(rules, &opts).unwrap();
    let mut f = FlowIps::new(Arc::new(home), flow("198.18.0.1", "203.0.113.7", 80));
    f.inspect(Direction::ToServer, req, &mut scratch);
    assert_eq!(f.hits.len(), 1);
    let (rules, _) = parse_rules("drop tcp $NOT_A_VAR any -> any any (msg:\"x\"; content:\"a\"; sid:5;)\n");
    let (_, refused) = Ruleset::compile(rules, &Options::default()).unwrap();
    assert!(matches!(refused.as_slice(), [(5, why)] if why.contains("$NOT_A_VAR is not defined")), "{refused:?}");
}

#[test]
fn alerts_carry_the_classtypes_category_and_severity() {
    let text = r#"alert http any any -> any any (msg:"a"; http.uri; content:"/a"; classtype:web-application-attack; sid:1;)
alert http any any -> any any (msg:"b"; http.uri; content:"/a"; classtype:web-application-attack; priority:3; sid:2;)
alert http any any -> any any (msg:"c"; http.uri; content:"/a"; sid:3;)
"#;
    let set = compile_with(text, &Options::default());
    let mut scratch = set.scratch().unwrap();
    let mut f = FlowIps::new(set, FlowTuple::to_port(443));
    f.inspect(Direction::ToServer, b"GET /a HTTP/1.1\r\n\r\n", &mut scratch);
    let got: Vec<(u32, Option<&str>, u8)> = f.hits.iter().map(|h| (h.sid, h.category.as_deref(), h.severity)).collect();
    assert_eq!(got, [(1, Some("Web Application Attack"), 1), (2, Some("Web Application Attack"), 3), (3, None, 3)]);
    let (rules, _) = parse_rules("alert tcp any any -> any any (msg:\"x\"; content:\"a\"; classtype:no-such-class; sid:4;)\n");
    let (_, refused) = Ruleset::compile(rules, &Options::default()).unwrap();
    assert!(matches!(refused.as_slice(), [(4, why)] if why.contains("no-such-class")), "{refused:?}");
}

#[test]
fn alerts_carry_references_resolved_by_reference_config() {
    let text = r#"alert http any any -> any any (msg:"a"; http.uri; content:"/a"; reference:cve,2021-44228; reference:url,"www.example.com/advisory"; reference:url,http://x.example/y; reference:nosuch,7; sid:1;)
"#;
    let set = compile_with(text, &Options::default());
    let mut scratch = set.scratch().unwrap();
    let mut f = FlowIps::new(set, FlowTuple::to_port(443));
    f.inspect(Direction::ToServer, b"GET /a HTTP/1.1\r\n\r\n", &mut scratch);
    assert_eq!(
        f.hits[0].references,
        [
            "https://cve.mitre.org/cgi-bin/cvename.cgi?name=2021-44228",
            "https://www.example.com/advisory",
            "http://x.example/y",
            "undefined7"
        ]
    );
    // An operator's file replaces the bundled one.
    let own = crate::inspect::reference::References::parse("config reference: cve https://nvd.example/vuln/").unwrap();
    let set = compile_with(text, &Options { references: own, ..Options::default() });
    let mut scratch = set.scratch().unwrap();
    let mut f = FlowIps::new(set, FlowTuple::to_port(443));
    f.inspect(Direction::ToServer, b"GET /a HTTP/1.1\r\n\r\n", &mut scratch);
    assert_eq!(f.hits[0].references[0], "https://nvd.example/vuln/2021-44228");
    assert_eq!(f.hits[0].references[1], "undefinedwww.example.com/advisory");
    let (_, errors) = parse_rules("alert tcp any any -> any any (msg:\"x\"; content:\"a\"; reference:cve; sid:2;)\n");
    assert!(errors[0].to_string().contains("reference"), "{errors:?}");
}

#[test]
fn levels_select_rules_by_their_metadata() {
    let text = r#"alert tcp any any -> any any (msg:"none"; content:"a"; sid:1;)
alert tcp any any -> any any (msg:"low"; content:"a"; sid:2; metadata: confidence Low;)
alert tcp any any -> any any (msg:"high"; content:"a"; sid:3; metadata: confidence High;)
alert tcp any any -> any any (msg:"informational"; content:"a"; sid:4; metadata: signature_severity Informational, confidence Medium;)
alert tcp any any -> any any (msg:"critical"; content:"a"; sid:5; metadata: signature_severity Critical, confidence Medium;)
alert tcp any any -> any any (msg:"critical low"; content:"a"; sid:6; metadata: signature_severity Critical, confidence Low;)
"#;
    let (rules, _) = parse_rules(text);
    let at = |level: Level| rules.iter().filter(|r| active_at(level, r)).map(|r| r.sid).collect::<Vec<_>>();
    assert_eq!(at(Level::Strict), [1, 2, 3, 4, 5, 6]);
    assert_eq!(at(Level::Medium), [1, 3, 5]);
    assert_eq!(at(Level::Loose), [3, 5]);
}

#[test]
fn http_host_is_normalised_and_http_host_raw_is_not() {
    let text = r#"drop http any any -> any any (msg:"host"; http.host; content:"evil.example"; sid:1;)
drop http any any -> any any (msg:"raw"; http.host.raw; content:"Evil.Example:8443"; sid:2;)
"#;
    let set = compile_with(text, &Options { mode: IpsMode::Block, ..Options::default() });
    let mut scratch = set.scratch().unwrap();
    let sids = |req: &[u8], scratch: &mut hyperscan::Scratch| {
        let mut f = FlowIps::new(set.clone(), FlowTuple::to_port(443));
        f.inspect(Direction::ToServer, req, scratch);
        f.hits.iter().map(|h| h.sid).collect::<Vec<_>>()
    };
    assert_eq!(sids(b"GET / HTTP/1.1\r\nHost: Evil.Example:8443\r\n\r\n", &mut scratch), [1, 2], "case and port do not evade http.host");
    assert_eq!(sids(b"GET / HTTP/1.1\r\nHost: EVIL.EXAMPLE\r\n\r\n", &mut scratch), [1]);
    assert_eq!(sids(b"GET http://evil.example/x HTTP/1.1\r\nHost: decoy\r\n\r\n", &mut scratch), [1], "an absolute URI's host is the host");
    assert_eq!(sids(b"GET / HTTP/1.1\r\nHost: evil.example.net\r\n\r\n", &mut scratch), [1], "a content matches anywhere in the buffer");
    assert!(sids(b"GET / HTTP/1.1\r\nHost: good.example\r\n\r\n", &mut scratch).is_empty());
    assert_eq!(super::matcher::normalized_host("/", "[2001:db8::1]:443"), "[2001:db8::1]");
    assert_eq!(super::matcher::normalized_host("http://user@Host.Example.:80/x", "decoy"), "host.example", "a URI's host loses userinfo, port and trailing dots");
    assert_eq!(super::matcher::raw_host("/", " Evil.Example:8443 "), "Evil.Example:8443");
    assert_eq!(super::matcher::raw_host("http://Evil.Example:8443/", "decoy"), "evil.example", "an absolute URI's host, as Suricata has it");
}

fn sids_of(set: &Arc<Ruleset>, direction: Direction, data: &[&[u8]]) -> Vec<u32> {
    let mut scratch = set.scratch().unwrap();
    let mut f = FlowIps::new(set.clone(), FlowTuple::to_port(443));
    for d in data {
        f.inspect(direction, d, &mut scratch);
    }
    let mut sids: Vec<u32> = f.hits.iter().map(|h| h.sid).collect();
    sids.sort_unstable();
    sids
}

#[test]
fn header_buffers_of_requests_and_responses() {
    let text = r#"alert http any any -> any any (msg:"header"; http.header; content:"X-Api-Key|3a| "; sid:1;)
alert http any any -> any any (msg:"cookie"; http.cookie; content:"admin=1"; sid:2;)
alert http any any -> any any (msg:"old cookie"; content:"admin=1"; http_cookie; sid:3;)
alert http any any -> any any (msg:"not in header"; http.header; content:"admin=1"; sid:4;)
alert http any any -> any any (msg:"names"; http.header_names; content:"|0d 0a|X-Api-Key|0d 0a|"; sid:5;)
alert http any any -> any any (msg:"referer"; http.referer; content:"evil.example"; sid:6;)
alert http any any -> any any (msg:"line"; http.request_line; content:"POST /upload HTTP/1.1"; sid:7;)
alert http any any -> any any (msg:"raw uri"; http.uri.raw; content:"%2e%2e"; sid:8;)
alert http any any -> any any (msg:"status"; flow:to_client; http.stat_code; content:"500"; sid:10;)
alert http any any -> any any (msg:"server"; flow:to_client; http.server; content:"Apache/2.4.49"; sid:11;)
alert http any any -> any any (msg:"set-cookie"; flow:to_client; http.cookie; content:"track="; sid:12;)
alert http any any -> any any (msg:"old status"; flow:to_client; content:"500"; http_stat_code; sid:13;)
alert http any any -> any any (msg:"content type"; flow:to_client; http.content_type; content:"application/x-msdownload"; sid:14;)
"#;
    let set = compile_with(text, &Options::default());
    let req: &[u8] = b"POST /upload HTTP/1.1\r\nHost: a\r\nX-Api-Key: k\r\nCookie: admin=1\r\nReferer: https://evil.example/\r\nContent-Length: 0\r\n\r\n";
    assert_eq!(sids_of(&set, Direction::ToServer, &[req]), [1, 2, 3, 5, 6, 7]);
    assert_eq!(sids_of(&set, Direction::ToServer, &[b"GET /a/%2e%2e/b HTTP/1.1\r\nHost: a\r\n\r\n"]), [8]);
    let resp: &[u8] = b"HTTP/1.1 500 Internal Server Error\r\nServer: Apache/2.4.49\r\nSet-Cookie: track=1\r\nContent-Type: application/x-msdownload\r\nContent-Length: 0\r\n\r\n";
    assert_eq!(sids_of(&set, Direction::ToClient, &[resp]), [10, 11, 12, 13, 14]);
}

#[test]
fn startswith_endswith_bsize_urilen_and_dotprefix() {
    let text = r#"alert http any any -> any any (msg:"starts"; http.uri; content:"/admin"; startswith; sid:1;)
alert http any any -> any any (msg:"ends"; http.uri; content:".php"; endswith; sid:2;)
alert http any any -> any any (msg:"exact ua"; http.user_agent; content:"curl"; startswith; endswith; sid:3;)
alert http any any -> any any (msg:"short ua"; http.user_agent; content:"Mozilla"; bsize:<20; sid:4;)
alert http any any -> any any (msg:"long uri"; http.uri; content:"/"; urilen:>30; sid:5;)
alert tls any any -> any any (msg:"domain"; tls.sni; dotprefix; content:".evil.example"; endswith; sid:6;)
alert http any any -> any any (msg:"host domain"; http.host; dotprefix; content:".evil.example"; endswith; sid:7;)
"#;
    let set = compile_with(text, &Options::default());
    let get = |uri: &str, ua: &str| format!("GET {uri} HTTP/1.1\r\nHost: h\r\nUser-Agent: {ua}\r\n\r\n").into_bytes();
    assert_eq!(sids_of(&set, Direction::ToServer, &[&get("/admin/x.php", "curl")]), [1, 2, 3]);
    assert_eq!(sids_of(&set, Direction::ToServer, &[&get("/x/admin.php?y", "curl/8")]), Vec::<u32>::new());
    assert_eq!(sids_of(&set, Direction::ToServer, &[&get("/", "Mozilla/5.0")]), [4]);
    assert_eq!(sids_of(&set, Direction::ToServer, &[&get("/", "Mozilla/5.0 (X11; Linux x86_64)")]), Vec::<u32>::new());
    assert_eq!(sids_of(&set, Direction::ToServer, &[&get(&format!("/{}", "a".repeat(40)), "x")]), [5]);
    let mut scratch = set.scratch().unwrap();
    for (sni, fires) in [("evil.example", true), ("www.evil.example", true), ("notevil.example", false), ("evil.example.net", false)] {
        let mut f = FlowIps::new(set.clone(), FlowTuple::to_port(443));
        f.scan_client_hello(&hello(Some(sni)), &mut scratch);
        assert_eq!(f.hits.iter().any(|h| h.sid == 6), fires, "{sni}");
    }
    assert_eq!(sids_of(&set, Direction::ToServer, &[b"GET / HTTP/1.1\r\nHost: cdn.evil.example\r\n\r\n"]), [7]);
    // Suricata refuses these: so does the engine, saying why.
    let (rules, _) = parse_rules(
        "alert tcp any any -> any any (msg:\"x\"; content:\"a\"; endswith; sid:20;)\nalert http any any -> any any (msg:\"x\"; http.request_body; content:\"a\"; endswith; sid:21;)\n",
    );
    let (_, refused) = Ruleset::compile(rules, &Options::default()).unwrap();
    // On the stream, endswith is evaluated per data unit (payload_keywords.rs); a body has no end.
    assert_eq!(refused.iter().map(|(s, _)| *s).collect::<Vec<_>>(), [21], "{refused:?}");
}

#[test]
fn contents_combine_within_one_message_and_one_direction_only() {
    let text = r#"alert http any any -> any any (msg:"both in one uri"; http.uri; content:"/a"; content:"/b"; sid:1;)
alert tcp any any -> any any (msg:"both on the stream"; content:"PING"; content:"PONG"; sid:2;)
"#;
    let set = compile_with(text, &Options::default());
    // Two requests, each with half of what sid 1 wants: Suricata inspects each transaction apart.
    assert!(sids_of(&set, Direction::ToServer, &[b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n"]).is_empty());
    assert_eq!(sids_of(&set, Direction::ToServer, &[b"GET /a/b HTTP/1.1\r\n\r\n"]), [1]);
    // A content in each direction does not make a match either.
    let mut scratch = set.scratch().unwrap();
    let mut f = FlowIps::new(set.clone(), FlowTuple::to_port(443));
    f.inspect(Direction::ToServer, b"PING", &mut scratch);
    f.inspect(Direction::ToClient, b"PONG", &mut scratch);
    assert!(f.hits.is_empty());
    f.inspect(Direction::ToClient, b"PING", &mut scratch);
    assert_eq!(f.hits.iter().map(|h| h.sid).collect::<Vec<_>>(), [2], "both on the server's stream");
}

#[test]
fn http2_authority_is_the_host() {
    use crate::inspect::h2::PREFACE;
    let set = compile_with(r#"drop http any any -> any any (msg:"h"; http.host; content:"evil.example"; sid:1;)"#, &Options { mode: IpsMode::Block, ..Options::default() });
    let mut enc = loona_hpack::Encoder::new();
    let block = enc.encode(vec![(&b":method"[..], &b"GET"[..]), (&b":path"[..], &b"/"[..]), (&b":authority"[..], &b"Evil.Example:443"[..])]);
    let mut wire = PREFACE.to_vec();
    wire.extend_from_slice(&[(block.len() >> 16) as u8, (block.len() >> 8) as u8, block.len() as u8, 1, 0x5, 0, 0, 0, 1]);
    wire.extend_from_slice(&block);
    assert_eq!(sids_of(&set, Direction::ToServer, &[&wire]), [1]);
}

#[test]
fn pcre_buffer_flags_and_relative_matching() {
    let text = r#"alert http any any -> any any (msg:"U"; pcre:"/^\/admin\/[a-z]+\.php$/U"; sid:1;)
alert http any any -> any any (msg:"H"; pcre:"/^X-Token\x3a\s+[0-9a-f]{8}\r$/Hm"; sid:2;)
alert http any any -> any any (msg:"V"; pcre:"/python-requests\/\d/V"; sid:3;)
alert http any any -> any any (msg:"R"; http.uri; content:"/dl?"; pcre:"/^file=[^&]+\.exe/R"; sid:4;)
alert tcp any any -> any any (msg:"stream start"; content:"GIOP"; startswith; sid:5;)
"#;
    let set = compile_with(text, &Options::default());
    let req = |uri: &str, extra: &str| format!("GET {uri} HTTP/1.1\r\nHost: h\r\n{extra}\r\n").into_bytes();
    assert_eq!(sids_of(&set, Direction::ToServer, &[&req("/admin/panel.php", "")]), [1]);
    assert_eq!(sids_of(&set, Direction::ToServer, &[&req("/x/admin/panel.php", "")]), Vec::<u32>::new(), "the pcre is on the URI, anchored");
    assert_eq!(sids_of(&set, Direction::ToServer, &[&req("/", "X-Token: deadbeef\r\n")]), [2]);
    assert_eq!(sids_of(&set, Direction::ToServer, &[&req("/", "User-Agent: python-requests/2.31\r\n")]), [3]);
    assert_eq!(sids_of(&set, Direction::ToServer, &[&req("/dl?file=a.exe", "")]), [4]);
    assert_eq!(sids_of(&set, Direction::ToServer, &[&req("/dl?x=1&file=a.exe", "")]), Vec::<u32>::new(), "R anchors the pcre after the content");
    assert_eq!(sids_of(&set, Direction::ToServer, &[b"GIOP\x01\x02"]), [5]);
    assert!(sids_of(&set, Direction::ToServer, &[b"xxGIOP"]).is_empty(), "startswith on the stream: the direction's first bytes");
    let (_, errors) = parse_rules("alert http any any -> any any (msg:\"x\"; http.uri; pcre:\"/a/H\"; sid:9;)\n");
    assert!(errors[0].message.contains("already has one"), "{errors:?}");
}

#[test]
fn flowbits_carry_state_between_rules_of_a_flow() {
    // ET's pattern: a noalert rule marks the flow, a later rule alerts only on marked flows.
    let text = r#"alert http any any -> any any (msg:"login page"; flow:to_server; http.uri; content:"/login"; flowbits:set,seen.login; flowbits:noalert; sid:1;)
alert http any any -> any any (msg:"token after login"; flow:to_client; http.header; content:"X-Token"; flowbits:isset,seen.login; sid:2;)
alert http any any -> any any (msg:"token without login"; flow:to_client; http.header; content:"X-Token"; flowbits:isnotset,seen.login; sid:3;)
alert http any any -> any any (msg:"logout"; flow:to_server; http.uri; content:"/logout"; flowbits:unset,seen.login; flowbits:noalert; sid:4;)
alert http any any -> any any (msg:"either"; flow:to_server; http.uri; content:"/x"; flowbits:isset,a|seen.login; sid:5;)
"#;
    let set = compile_with(text, &Options::default());
    let mut scratch = set.scratch().unwrap();
    let resp: &[u8] = b"HTTP/1.1 200 OK\r\nX-Token: t\r\nContent-Length: 0\r\n\r\n";
    let mut f = FlowIps::new(set.clone(), FlowTuple::to_port(443));
    f.inspect(Direction::ToServer, b"GET /login HTTP/1.1\r\n\r\n", &mut scratch);
    assert!(f.hits.is_empty(), "noalert: {:?}", f.hits);
    f.inspect(Direction::ToClient, resp, &mut scratch);
    assert_eq!(f.hits.iter().map(|h| h.sid).collect::<Vec<_>>(), [2]);
    f.inspect(Direction::ToServer, b"GET /x HTTP/1.1\r\n\r\n", &mut scratch);
    assert_eq!(f.hits.iter().map(|h| h.sid).collect::<Vec<_>>(), [2, 5], "isset with | is any of the names");
    // Without the login, the other rule fires instead.
    let mut g = FlowIps::new(set.clone(), FlowTuple::to_port(443));
    g.inspect(Direction::ToClient, resp, &mut scratch);
    assert_eq!(g.hits.iter().map(|h| h.sid).collect::<Vec<_>>(), [3]);
    // A setter and a tester on the same data: the setter goes first.
    let text = r#"alert http any any -> any any (msg:"t"; http.uri; content:"/both"; flowbits:isset,b; sid:2;)
alert http any any -> any any (msg:"s"; http.uri; content:"/both"; flowbits:set,b; flowbits:noalert; sid:1;)
"#;
    let set = compile_with(text, &Options::default());
    let mut h = FlowIps::new(set, FlowTuple::to_port(443));
    h.inspect(Direction::ToServer, b"GET /both HTTP/1.1\r\n\r\n", &mut scratch);
    assert_eq!(h.hits.iter().map(|h| h.sid).collect::<Vec<_>>(), [2]);
    let (_, errors) = parse_rules("alert tcp any any -> any any (msg:\"x\"; content:\"a\"; flowbits:set,a|b; sid:9;)\n");
    assert_eq!(errors.len(), 1, "set takes one name list without |");
}

#[test]
fn thresholds_and_detection_filters_count_across_flows() {
    let text = r#"alert http any any -> any any (msg:"limit"; http.uri; content:"/l"; threshold: type limit, track by_src, count 2, seconds 60; sid:1;)
alert http any any -> any any (msg:"every third"; http.uri; content:"/t"; threshold:type threshold,track by_src,count 3,seconds 60; sid:2;)
alert http any any -> any any (msg:"both"; http.uri; content:"/b"; threshold: type both, track by_dst, count 2, seconds 60; sid:3;)
drop http any any -> any any (msg:"brute force"; http.uri; content:"/login"; detection_filter: track by_src, count 3, seconds 60; sid:4;)
"#;
    let set = compile_with(text, &Options { mode: IpsMode::Block, ..Options::default() });
    let mut scratch = set.scratch().unwrap();
    let mut run = |path: &str, client: &str| {
        let mut f = FlowIps::new(set.clone(), flow(client, "203.0.113.7", 443));
        let v = f.inspect(Direction::ToServer, format!("GET {path} HTTP/1.1\r\n\r\n").as_bytes(), &mut scratch);
        (f.hits.len(), matches!(v, Verdict::Block(_)))
    };
    let alerts = |run: &mut dyn FnMut(&str, &str) -> (usize, bool), path: &str, client: &str, n: usize| (0..n).map(|_| run(path, client).0).collect::<Vec<_>>();
    assert_eq!(alerts(&mut run, "/l", "10.0.0.1", 4), [1, 1, 0, 0], "limit: two per window");
    assert_eq!(alerts(&mut run, "/l", "10.0.0.2", 1), [1], "per source");
    assert_eq!(alerts(&mut run, "/t", "10.0.0.1", 6), [0, 0, 1, 0, 0, 1], "threshold: every third");
    assert_eq!(alerts(&mut run, "/b", "10.0.0.1", 4), [0, 1, 0, 0], "both: once, after two");
    let blocks: Vec<bool> = (0..5).map(|_| run("/login", "10.0.0.9").1).collect();
    assert_eq!(blocks, [false, false, false, true, true], "detection_filter: from the fourth match on");
    assert!(!run("/login", "10.0.0.8").1, "another source starts from zero");
}

#[test]
#[ignore = "a measurement: cargo test -p tls-inspect-dataplane --lib stream_state -- --ignored --nocapture"]
fn stream_state_of_the_et_open_sample() {
    let (rules, _) = parse_rules(include_str!("../../../tests/fixtures/et-open-sample.rules"));
    let (set, _) = Ruleset::compile(rules, &Options::default()).unwrap();
    let size = |db: &Option<hyperscan::StreamingDatabase>| db.as_ref().map_or(0, |d| d.stream_size().unwrap_or(0));
    eprintln!("stream {} + {} B, request bodies {} B, response bodies {} B", size(&set.stream[0]), size(&set.stream[1]), size(&set.bodies[0]), size(&set.bodies[1]));
}

#[test]
fn each_pipelined_request_is_evaluated_before_the_next_one_starts() {
    let text = r#"drop http any any -> any any (msg:"a"; http.uri; content:"/first"; sid:1;)
alert http any any -> any any (msg:"b"; http.uri; content:"/second"; sid:2;)
"#;
    let set = compile_with(text, &Options { mode: IpsMode::Block, ..Options::default() });
    let mut scratch = set.scratch().unwrap();
    let mut f = FlowIps::new(set, FlowTuple::to_port(443));
    // Both requests in one read: the first blocks though the second's head came after it.
    let v = f.inspect(Direction::ToServer, b"GET /first HTTP/1.1\r\n\r\nGET /second HTTP/1.1\r\n\r\n", &mut scratch);
    assert!(matches!(v, Verdict::Block(ref c) if c.to_string().contains("sid 1")), "{v:?}");
    assert_eq!(f.hits.iter().map(|h| h.sid).collect::<Vec<_>>(), [1, 2]);
}

#[test]
fn http1_and_http2_rules_see_only_their_version() {
    use crate::inspect::h2::PREFACE;
    let text = r#"alert http1 any any -> any any (msg:"one"; http.uri; content:"/v"; sid:1;)
alert http2 any any -> any any (msg:"two"; http.uri; content:"/v"; sid:2;)
alert http any any -> any any (msg:"both"; http.uri; content:"/v"; sid:3;)
"#;
    let set = compile_with(text, &Options::default());
    assert_eq!(sids_of(&set, Direction::ToServer, &[b"GET /v HTTP/1.1\r\n\r\n"]), [1, 3]);
    let mut enc = loona_hpack::Encoder::new();
    let block = enc.encode(vec![(&b":method"[..], &b"GET"[..]), (&b":path"[..], &b"/v"[..]), (&b":authority"[..], &b"x"[..])]);
    let mut wire = PREFACE.to_vec();
    wire.extend_from_slice(&[(block.len() >> 16) as u8, (block.len() >> 8) as u8, block.len() as u8, 1, 0x5, 0, 0, 0, 1]);
    wire.extend_from_slice(&block);
    assert_eq!(sids_of(&set, Direction::ToServer, &[&wire]), [2, 3]);
}

/// A ClientHello's fields as the IPS sees them: the SNI given, and JA3/JA4 of a real hello
/// (suricata-verify's tls13-draft19 case: Suricata logs this JA3 for it).
fn hello(sni: Option<&str>) -> crate::inspect::HelloFields<'_> {
    crate::inspect::HelloFields {
        sni,
        version: 0x0303,
        ja3_string: "771,4866-255,0-11-10-35-13-22-23-43-45-40,29-23-25-24,0-1-2",
        ja3_hash: "0e870cb29dd59424064948532781a7f6",
        ja4: "t13d1516h2_8daaf6152771_e5627efa2ab1",
    }
}

#[test]
fn ja3_ja4_and_tls_version_match_the_client_hello() {
    let text = r#"
alert tls any any -> any any (msg:"ja3"; ja3.hash; content:"0e870cb29dd59424064948532781a7f6"; sid:1;)
alert tls any any -> any any (msg:"ja3 old name"; ja3_hash; content:"0e870cb29dd59424064948532781a7f6"; sid:2;)
alert tls any any -> any any (msg:"ja3 other"; ja3.hash; content:"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"; sid:3;)
alert tls any any -> any any (msg:"ja3 string"; ja3.string; content:"771,4866-255,"; startswith; sid:4;)
alert tls any any -> any any (msg:"ja4"; ja4.hash; content:"t13d1516h2_8daaf6152771_e5627efa2ab1"; sid:5;)
alert tls any any -> any any (msg:"ja4 X"; ja4.hash; content:"t13d1516h2_8daaf6152771_e5627efa2ab1X"; sid:6;)
alert tls any any -> any any (msg:"version 1.2 + sni"; tls.version:1.2; tls.sni; content:"a.test"; sid:7;)
alert tls any any -> any any (msg:"version 1.0 + sni"; tls.version:1.0; tls.sni; content:"a.test"; sid:8;)
alert tls any any -> any any (msg:"server chose 1.3"; flow:to_client; tls.version:1.3; tls.cert_subject; content:"CN="; sid:9;)
alert tls any any -> any any (msg:"server chose 1.2"; flow:to_client; tls.version:1.2; tls.cert_subject; content:"CN="; sid:10;)
"#;
    let (rules, errors) = parse_rules(text);
    assert!(errors.is_empty(), "{errors:?}");
    let (set, _) = Ruleset::compile(rules, &Options { level: Level::Strict, ..Options::default() }).unwrap();
    let set = Arc::new(set);
    assert!(set.scans_hello());
    let mut scratch = set.scratch().unwrap();
    let mut f = FlowIps::new(set.clone(), FlowTuple::to_port(443));
    f.scan_client_hello(&hello(Some("a.test")), &mut scratch);
    let (ca, key) = crate::testutil::pki::ca("Test CA");
    let (chain, _) = crate::testutil::pki::leaf(&ca, key, &["a.test"]);
    f.scan_certificates(&[chain[0].as_ref()], Some(0x0304), &mut scratch);
    let mut sids: Vec<u32> = f.hits.iter().map(|h| h.sid).collect();
    sids.sort_unstable();
    assert_eq!(sids, [1, 2, 4, 5, 7, 9]);
}

#[test]
fn tls_rules_refuse_raw_record_contents_and_bad_versions() {
    let (_, errors) = parse_rules(
        "alert tls any any -> any any (msg:\"raw\"; content:\"|16 03 01|\"; sid:1;)\n\
         alert tls any any -> any any (msg:\"bad\"; tls.version:2.0; tls.sni; content:\"x\"; sid:2;)\n",
    );
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(errors[0].to_string().contains("raw TLS records"), "{}", errors[0]);
    assert!(errors[1].to_string().contains("tls.version"), "{}", errors[1]);
}

#[test]
fn rules_of_http_buffers_fire_per_request_and_stream_rules_once_per_flow() {
    let text = r#"alert http any any -> any any (msg:"uri"; flow:to_server; http.uri; content:"/evil"; sid:1;)
alert tcp any any -> any any (msg:"stream"; flow:to_server; content:"/evil"; sid:2;)
alert http any any -> any any (msg:"uri and stream"; flow:to_server; content:"Host"; http.uri; content:"/evil"; sid:3;)
"#;
    let set = compile_with(text, &Options { level: Level::Strict, ..Options::default() });
    let mut scratch = set.scratch().unwrap();
    let mut f = FlowIps::new(set, FlowTuple::to_port(443));
    let mut sids = Vec::new();
    for _ in 0..3 {
        f.inspect(Direction::ToServer, b"GET /evil HTTP/1.1\r\nHost: a\r\n\r\n", &mut scratch);
        f.inspect(Direction::ToClient, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", &mut scratch);
        sids.extend(f.take_hits().iter().map(|h| h.sid));
        assert!(f.hits.is_empty(), "taken hits are not kept");
    }
    f.inspect(Direction::ToServer, b"GET /fine HTTP/1.1\r\nHost: a\r\n\r\n", &mut scratch);
    sids.extend(f.take_hits().iter().map(|h| h.sid));
    sids.sort_unstable();
    // sid 3 mixes the URI with a stream content: once per flow, like the stream rule.
    assert_eq!(sids, [1, 1, 1, 2, 3]);
    assert!(f.alerted());
}

#[test]
fn a_flow_keeps_its_blocking_alert_but_not_every_alert() {
    let text = "alert http any any -> any any (msg:\"a\"; flow:to_server; http.uri; content:\"/a\"; sid:1;)\nreject http any any -> any any (msg:\"b\"; flow:to_server; http.uri; content:\"/b\"; sid:2;)\n";
    let set = compile_with(text, &Options { level: Level::Strict, mode: IpsMode::Block, ..Options::default() });
    let mut scratch = set.scratch().unwrap();
    let mut f = FlowIps::new(set, FlowTuple::to_port(443));
    for _ in 0..1000 {
        f.inspect(Direction::ToServer, b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n", &mut scratch);
        f.inspect(Direction::ToClient, b"HTTP/1.1 204 No Content\r\n\r\n", &mut scratch);
        assert_eq!(f.take_hits().len(), 1);
    }
    assert!(f.block_hit().is_none());
    let v = f.inspect(Direction::ToServer, b"GET /b HTTP/1.1\r\nHost: a\r\n\r\n", &mut scratch);
    assert!(matches!(v, Verdict::Block(_)), "{v:?}");
    assert_eq!(f.take_hits().iter().map(|h| h.sid).collect::<Vec<_>>(), [2]);
    assert_eq!(f.block_hit().map(|h| h.sid), Some(2), "kept after it was taken: the block page names it");
}

#[test]
fn transforms_change_the_buffer_its_contents_match() {
    let text = r#"alert http any any -> any any (msg:"decoded"; http.uri.raw; url_decode; content:"/admin/../etc"; sid:1;)
alert http any any -> any any (msg:"raw"; http.uri.raw; content:"/admin/../etc"; sid:2;)
alert http any any -> any any (msg:"lower"; http.user_agent; to_lowercase; content:"sqlmap"; sid:3;)
alert http any any -> any any (msg:"stripped"; http.header; strip_whitespace; content:"X-Cmd:id;uname"; sid:4;)
alert http any any -> any any (msg:"compressed"; http.header; compress_whitespace; content:"X-Cmd: id; uname"; sid:5;)
alert http any any -> any any (msg:"names lowercase"; http.header; header_lowercase; content:"x-cmd:"; sid:6;)
alert http any any -> any any (msg:"sha256 of the host"; http.host; to_sha256; content:"|b8 e7 45 33 71 a0 24 da ae 06 f3 16 44 92 c0 af cd e1 34 c7 74 7c 15 5b 3d 83 c2 0d e3 41 e8 55|"; sid:7;)
alert http any any -> any any (msg:"chain"; http.uri.raw; url_decode; to_lowercase; content:"/admin"; endswith; sid:8;)
alert http any any -> any any (msg:"pcre after a transform"; http.user_agent; to_lowercase; content:"sql"; pcre:"/^sqlmap\/\d/"; sid:9;)
"#;
    let set = compile_with(text, &Options { level: Level::Strict, ..Options::default() });
    let sids = |req: &[u8]| {
        let mut scratch = set.scratch().unwrap();
        let mut f = FlowIps::new(set.clone(), FlowTuple::to_port(443));
        f.inspect(Direction::ToServer, req, &mut scratch);
        let mut s: Vec<u32> = f.hits.iter().map(|h| h.sid).collect();
        s.sort_unstable();
        s
    };
    let req = b"GET /admin/%2e%2e/etc HTTP/1.1\r\nHost: a.example\r\nUser-Agent: SQLMap/1.7\r\nX-Cmd:  id;   uname\r\n\r\n";
    assert_eq!(sids(req), [1, 3, 4, 5, 6, 7, 9]);
    // Without the encoding the raw rule fires too; the chain's endswith sees the decoded,
    // lowercased URI.
    assert_eq!(sids(b"GET /admin/../etc HTTP/1.1\r\nHost: b.example\r\n\r\n"), [1, 2]);
    assert_eq!(sids(b"GET /%41DMIN HTTP/1.1\r\nHost: b.example\r\n\r\n"), [8]);
    assert_eq!(sids(b"GET /x HTTP/1.1\r\nHost: b.example\r\nUser-Agent: Mozilla/5.0\r\n\r\n"), Vec::<u32>::new());
    // What Suricata refuses: a content the transform cannot produce, a transform after the
    // buffer's contents, on the stream or a body, bsize after a transform.
    for bad in [
        r#"alert http any any -> any any (msg:"x"; http.uri; to_lowercase; content:"/Admin"; sid:20;)"#,
        r#"alert http any any -> any any (msg:"x"; http.uri; content:"/a"; url_decode; sid:21;)"#,
        r#"alert tcp any any -> any any (msg:"x"; url_decode; content:"/a"; sid:22;)"#,
        r#"alert http any any -> any any (msg:"x"; http.request_body; url_decode; content:"a"; sid:23;)"#,
        r#"alert http any any -> any any (msg:"x"; http.header; strip_whitespace; content:"a b"; sid:24;)"#,
        r#"alert http any any -> any any (msg:"x"; http.uri; url_decode; bsize:>3; content:"a"; sid:25;)"#,
    ] {
        let (rules, errors) = parse_rules(bad);
        assert!(rules.is_empty() && errors.len() == 1, "{bad}: {errors:?}");
    }
}

#[test]
fn file_data_is_either_body_as_in_suricata_7() {
    let text = "alert http any any -> any any (msg:\"w\"; file_data; content:\"World\"; sid:1;)\nalert http any any -> any any (msg:\"p\"; file_data; content:\"People\"; sid:2;)\nalert http any any -> any any (msg:\"q\"; flow:to_server; file_data; content:\"Hello\"; sid:3;)\n";
    let set = compile_with(text, &Options { level: Level::Strict, ..Options::default() });
    let mut scratch = set.scratch().unwrap();
    let mut f = FlowIps::new(set, FlowTuple::to_port(443));
    f.inspect(Direction::ToServer, b"POST /u HTTP/1.1\r\nHost: a\r\nContent-Length: 12\r\n\r\nHello People", &mut scratch);
    f.inspect(Direction::ToClient, b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\nHello World", &mut scratch);
    let mut sids: Vec<u32> = f.hits.iter().map(|h| h.sid).collect();
    sids.sort_unstable();
    assert_eq!(sids, [1, 2, 3]);
}

#[test]
fn uricontent_is_a_content_on_the_uri() {
    let set = compile_with("alert http any any -> any any (msg:\"u\"; uricontent:\"/cgi-bin/\"; nocase; content:\"Host\"; sid:1;)\n", &Options { level: Level::Strict, ..Options::default() });
    let r = &set.rules[0];
    assert_eq!((r.contents[0].buffer, r.contents[1].buffer), (crate::inspect::rules::Buffer::HttpUri, crate::inspect::rules::Buffer::Stream));
    let mut scratch = set.scratch().unwrap();
    let mut f = FlowIps::new(set.clone(), FlowTuple::to_port(80));
    f.inspect(Direction::ToServer, b"GET /CGI-BIN/x HTTP/1.1\r\nHost: a\r\n\r\n", &mut scratch);
    assert_eq!(f.hits.len(), 1);
    let mut f = FlowIps::new(set, FlowTuple::to_port(80));
    f.inspect(Direction::ToServer, b"GET /x HTTP/1.1\r\nHost: a\r\nX: /cgi-bin/\r\n\r\n", &mut scratch);
    assert!(f.hits.is_empty());
}

#[test]
fn a_flow_keeps_no_match_of_a_rule_that_cannot_fire_on_it() {
    // Neither rule can hold yet (the second content is missing); only the one whose header and
    // direction take this flow keeps its first match.
    let text = "alert tcp $HOME_NET any -> any any (msg:\"home\"; content:\"GET\"; content:\"never\"; sid:1;)\n\
                alert tcp any any -> any any (msg:\"to client\"; flow:to_client; content:\"GET\"; content:\"never\"; sid:2;)\n\
                alert tcp any any -> any 80 (msg:\"port 80\"; content:\"GET\"; content:\"never\"; sid:3;)\n\
                alert tcp any any -> any any (msg:\"any\"; content:\"GET\"; content:\"never\"; sid:4;)\n";
    let set = compile_with(text, &Options { level: Level::Strict, ..Options::default() });
    let mut scratch = set.scratch().unwrap();
    // 198.18.0.1 is outside HOME_NET (RFC 1918); the server's port is 443.
    let mut f = FlowIps::new(set.clone(), FlowTuple::to_port(443));
    f.inspect(Direction::ToServer, b"GET / HTTP/1.1\r\n\r\n", &mut scratch);
    assert_eq!(f.kept_matches(), 1);
    f.inspect(Direction::ToServer, b"never", &mut scratch);
    assert_eq!(f.hits.iter().map(|h| h.sid).collect::<Vec<_>>(), [4]);
}

#[test]
fn an_anchored_relative_pcre_runs_at_the_detection_pointer_of_a_data_unit() {
    let text = r#"alert tcp any any -> any any (msg:"smb"; content:"SMB"; pcre:"/^(\x75|\x2d)/R"; byte_test:1,=,0x41,0,relative; sid:1;)
alert tcp any any -> any any (msg:"not u"; content:"SMB"; pcre:!"/^\x75/R"; byte_test:1,=,0x7a,0,relative; sid:2;)
"#;
    let set = compile_with(text, &Options { level: Level::Strict, ..Options::default() });
    assert!(set.at_pointer[0][0].is_some() && set.at_pointer[1][0].is_some(), "not searched by Hyperscan");
    let fire = |data: &[u8]| {
        let mut scratch = set.scratch().unwrap();
        let mut f = FlowIps::new(set.clone(), FlowTuple::to_port(445));
        f.inspect(Direction::ToServer, data, &mut scratch);
        let mut s: Vec<u32> = f.hits.iter().map(|h| h.sid).collect();
        s.sort_unstable();
        s
    };
    assert_eq!(fire(b"xxSMBuA"), [1]);
    assert_eq!(fire(b"xxSMB-Azz"), [1]);
    assert_eq!(fire(b"xxSMBxuA"), Vec::<u32>::new(), "the class must be right at the pointer");
    assert_eq!(fire(b"xxSMBuB"), Vec::<u32>::new(), "byte_test after the pcre's end");
    assert_eq!(fire(b"SMBz"), [2]);
    assert_eq!(fire(b"SMBu"), Vec::<u32>::new());
    // In a later data unit (the stream past its start), positions are the unit's.
    let mut scratch = set.scratch().unwrap();
    let mut f = FlowIps::new(set.clone(), FlowTuple::to_port(445));
    f.inspect(Direction::ToServer, b"first read, nothing here", &mut scratch);
    assert!(f.hits.is_empty());
    f.inspect(Direction::ToServer, b"yySMBuA", &mut scratch);
    assert_eq!(f.hits.iter().map(|h| h.sid).collect::<Vec<_>>(), [1]);
}

/// A relative content of a rule evaluated per data unit is looked for in the unit's bytes from
/// the detection pointer (every occurrence tried), not reported by Hyperscan.
#[test]
fn a_relative_content_of_a_data_unit_rule_is_searched_from_the_pointer() {
    let text = r#"alert tcp any any -> any any (msg:"no newline"; content:"COOL"; isdataat:4,relative; content:!"|0a|"; within:12; sid:1;)
alert tcp any any -> any any (msg:"pair"; content:"AB"; byte_test:1,=,0x2d,0,relative; content:"xy"; nocase; distance:3; within:4; sid:2;)
alert tcp any any -> any any (msg:"nul first"; content:"|00|"; content:"SMBr"; byte_test:1,=,0x41,0,relative; sid:3;)
"#;
    let set = compile_with(text, &Options { level: Level::Strict, ..Options::default() });
    // Hyperscan reports one content per rule, the longest it needs.
    assert_eq!(set.searched, [vec![false, true], vec![false, true], vec![true, false]], "only the anchor is in a Hyperscan database");
    let fire = |data: &[&[u8]]| sids_of(&set, Direction::ToServer, data);
    assert_eq!(fire(&[b"..COOL 123456789012 ."]), [1]);
    assert!(fire(&[b"..COOL 1234\n6789012 ."]).is_empty(), "a newline within 12");
    assert_eq!(fire(&[b"..COOL 123456789012\n"]), [1], "a newline past within");
    assert!(fire(&[b"..COOL 12"]).is_empty(), "isdataat");
    assert_eq!(fire(&[b"AB-..XY"]), [2]);
    assert_eq!(fire(&[b"AB-...xy"]), [2]);
    assert!(fire(&[b"AB-xy..."]).is_empty(), "distance:3");
    assert!(fire(&[b"AB-.....xy"]).is_empty(), "within:4");
    // Every occurrence of the first content is tried, and the second must be in the same unit.
    assert_eq!(fire(&[b"AB+..xy AB-..xY"]), [2]);
    assert!(fire(&[b"AB-..", b"xy"]).is_empty(), "per data unit");
    assert_eq!(fire(&[b"..\x00..SMBrA"]), [3]);
    assert_eq!(fire(&[b"SMBrA..\x00"]), [3], "an item not placed after another is anywhere in the unit");
    assert!(fire(&[b"..SMBrA.."]).is_empty());
    assert!(fire(&[b"\x00", b"SMBrA"]).is_empty(), "per data unit");
}


#[test]
fn rules_with_the_same_header_share_its_class_and_each_flow_tests_it_once() {
    let text = "alert tcp any any -> any 445 (msg:\"a\"; content:\"one\"; sid:1;)\n\
                alert tcp any any -> any 445 (msg:\"b\"; content:\"two\"; sid:2;)\n\
                alert tcp any any -> any 139 (msg:\"c\"; content:\"one\"; sid:3;)\n";
    let set = compile_with(text, &Options { level: Level::Strict, ..Options::default() });
    assert_eq!(set.header_classes.len(), 2);
    assert_eq!(set.header_of, [0, 0, 1]);
    let fire = |port: u16| {
        let mut scratch = set.scratch().unwrap();
        let mut f = FlowIps::new(set.clone(), FlowTuple::to_port(port));
        f.inspect(Direction::ToServer, b"one two", &mut scratch);
        let mut s: Vec<u32> = f.hits.iter().map(|h| h.sid).collect();
        s.sort_unstable();
        s
    };
    assert_eq!(fire(445), [1, 2]);
    assert_eq!(fire(139), [3]);
    assert_eq!(fire(80), Vec::<u32>::new());
}

#[test]
fn http_that_cannot_be_followed_alerts_with_suricatas_sid_and_blocks_in_block_mode() {
    let mut head = b"GET / HTTP/1.1\r\nHost: x\r\nCookie: ".to_vec();
    head.extend(vec![b'a'; crate::inspect::http1::MAX_HEAD]);
    for (mode, unfollowable, blocks) in [(IpsMode::Block, Unfollowable::Block, true), (IpsMode::Monitor, Unfollowable::Block, false), (IpsMode::Block, Unfollowable::Alert, false)] {
        let (rules, _) = parse_rules(LOG4J);
        let (s, _) = Ruleset::compile(rules, &Options { mode, level: Level::Strict, unfollowable, ..Options::default() }).unwrap();
        let s = Arc::new(s);
        let mut scratch = s.scratch().unwrap();
        let mut f = FlowIps::new(s.clone(), FlowTuple::to_port(443));
        let v = f.inspect(Direction::ToServer, &head, &mut scratch);
        assert_eq!(matches!(v, Verdict::Block(ref w) if w.to_string().contains("sid 2221018")), blocks, "{mode:?} {unfollowable:?}: {v:?}");
        assert_eq!(f.hits.len(), 1, "{:?}", f.hits);
        assert_eq!((f.hits[0].sid, f.hits[0].msg.as_str(), f.hits[0].blocked), (2221018, "SURICATA HTTP request buffer too long", blocks));
    }
    // A broken HTTP/2 header block: Suricata's HTTP/2 event.
    let s = set(LOG4J, IpsMode::Block, Level::Strict);
    let mut scratch = s.scratch().unwrap();
    let mut f = FlowIps::new(s.clone(), FlowTuple::to_port(443));
    let mut wire = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    // SETTINGS (empty), then HEADERS on stream 1 whose block HPACK cannot decode.
    wire.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
    wire.extend_from_slice(&[0, 0, 3, 1, 5, 0, 0, 0, 1, 0xff, 0xff, 0xff]);
    let v = f.inspect(Direction::ToServer, &wire, &mut scratch);
    assert!(matches!(v, Verdict::Block(ref w) if w.to_string().contains("sid 2290009")), "{v:?} {:?}", f.hits);
}

/// A WebSocket (101) or a CONNECT tunnel is not HTTP that cannot be followed: no anomaly and no
/// block in block mode, and the stream rules still see what goes through it.
#[test]
fn a_websocket_or_a_tunnel_is_no_anomaly_and_its_stream_is_still_scanned() {
    let s = set(LOG4J, IpsMode::Block, Level::Strict);
    let mut scratch = s.scratch().unwrap();
    for (request, response) in [
        (&b"GET /chat HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"[..], &b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"[..]),
        (b"CONNECT db.example:5432 HTTP/1.1\r\nHost: db.example:5432\r\n\r\n", b"HTTP/1.1 200 Connection established\r\n\r\n"),
    ] {
        let mut f = FlowIps::new(s.clone(), FlowTuple::to_port(443));
        assert_eq!(f.inspect(Direction::ToServer, request, &mut scratch), Verdict::Continue);
        assert_eq!(f.inspect(Direction::ToClient, response, &mut scratch), Verdict::Continue);
        // Binary frames both ways: not HTTP, and no anomaly.
        assert_eq!(f.inspect(Direction::ToServer, &[0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58], &mut scratch), Verdict::Continue);
        assert_eq!(f.inspect(Direction::ToClient, &[0x82, 0x03, 0x00, 0xff, 0x10], &mut scratch), Verdict::Continue);
        assert!(f.hits.is_empty(), "{:?}", f.hits);
        // The raw stream rule still fires on what the tunnel carries.
        let v = f.inspect(Direction::ToServer, b"\x81\x10xxEVIL-MARKyy", &mut scratch);
        assert!(matches!(v, Verdict::Block(ref w) if w.to_string().contains("sid 2")), "{v:?}");
    }
}

/// A stream rule's items are tried as Suricata tries them, every match of each against the rest,
/// and no number of earlier or later matches of one item hides the one that completes the rule
/// (a flow keeps a few matches per item: padding used to fill them, and the first match of a
/// content used to be the only one tried).
#[test]
fn no_number_of_other_matches_of_an_item_hides_the_one_that_completes_a_rule() {
    let text = r#"alert tcp any any -> any any (msg:"nop sled"; flow:to_client; content:"%u9090%u"; nocase; pcre:"/^[a-f0-9]{4}/Ri"; sid:11;)
alert tcp any any -> any any (msg:"pair"; flow:to_client; content:"EVIL"; content:"MARK"; distance:0; within:8; sid:12;)
alert http any any -> any any (msg:"body pair"; flow:to_client; file.data; content:"<object"; nocase; pcre:"/^\s+classid=x/Ri"; sid:13;)
alert tcp any any -> any any (msg:"placed"; flow:to_server; content:"GET"; depth:3; pcre:"/^\s+\/x/R"; sid:14;)
alert http any any -> any any (msg:"uri pair"; flow:to_server; http.uri; content:"/"; content:"etc/passwd"; distance:0; within:11; sid:15;)
alert tcp any any -> any any (msg:"short behind"; flow:to_client; content:"for("; content:"|3B|"; distance:2; within:20; content:"--)"; within:10; sid:16;)
alert tcp any any -> any any (msg:"open gap"; flow:to_client; content:"eval("; content:"|3B|"; distance:5; sid:17;)
"#;
    let set = compile_with(text, &Options::default());
    let d = Direction::ToClient;
    // The real one after a first occurrence that does not complete the rule.
    assert_eq!(sids_of(&set, d, &[b"x%u9090%uZZZZ y %U9090%u90aF"]), [11]);
    assert_eq!(sids_of(&set, d, &[b"EVIL.......... EVIL--MARK"]), [12]);
    assert!(sids_of(&set, d, &[b"x%u9090%uZZZZ y 90aF"]).is_empty());
    assert!(sids_of(&set, d, &[b"EVIL.......... MARK"]).is_empty());
    // Padding with many matches of each item, before the real one and after it, in one read and in many.
    let pad_before = "%u9090%uzz ".repeat(100) + &"abcd ".repeat(100) + &"EVIL.........".repeat(100) + &"MARK ".repeat(100);
    let real = "%u9090%u9090 EVIL--MARK";
    let pad_after = "%u9090%uzz EVIL-. ".repeat(100) + &"abcd MARK ".repeat(100);
    let one = format!("{pad_before}{real}{pad_after}");
    assert_eq!(sids_of(&set, d, &[one.as_bytes()]), [11, 12]);
    let pieces: Vec<&[u8]> = one.as_bytes().chunks(7).collect();
    assert_eq!(sids_of(&set, d, &pieces), [11, 12]);
    assert!(sids_of(&set, d, &[format!("{pad_before}{pad_after}").as_bytes()]).is_empty());
    // The same in a response body.
    let body = format!("{}<OBJECT  classid=x{}", "<object classid=y ".repeat(100), "<object z".repeat(100));
    let resp = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}", body.len());
    assert_eq!(sids_of(&set, d, &[resp.as_bytes()]), [13]);
    // A short content compiled behind the one it follows: the gap its modifiers allow, no more,
    // no less, whatever other occurrences surround it.
    assert_eq!(sids_of(&set, d, &[b"for(i=0;i--)"]), [16]);
    assert!(sids_of(&set, d, &[b"for(;;i--)"]).is_empty(), "distance:2");
    assert!(sids_of(&set, d, &[b"for(0123456789012345678901;i--)"]).is_empty(), "within:20");
    let js = format!("{}for(i=0;i--){}", ";;;for(;x;--) ".repeat(200), "for(;".repeat(200));
    assert_eq!(sids_of(&set, d, &[js.as_bytes()]), [16]);
    let pieces: Vec<&[u8]> = js.as_bytes().chunks(5).collect();
    assert_eq!(sids_of(&set, d, &pieces), [16]);
    // ... and with a gap open at the end (distance without within).
    assert_eq!(sids_of(&set, d, &[format!("{}eval(12345{};", ";".repeat(50), "x".repeat(3000)).as_bytes()]), [17]);
    assert!(sids_of(&set, d, &[format!("{}eval(1234;", ";".repeat(50)).as_bytes()]).is_empty(), "distance:5");
    // A pcre compiled behind its content still honours the content's own modifiers.
    let get = |uri: &str| format!("GET {uri} HTTP/1.1\r\nHost: h\r\n\r\n").into_bytes();
    assert!(sids_of(&set, Direction::ToServer, &[&get("/x")]).contains(&14));
    assert!(!sids_of(&set, Direction::ToServer, &[b"xGET /x HTTP/1.1\r\nHost: h\r\n\r\n"]).contains(&14));
    // A field buffer: many matches of the first item before the one the second follows.
    let deep = "/a".repeat(60) + "/etc/passwd";
    assert!(sids_of(&set, Direction::ToServer, &[&get(&deep)]).contains(&15));
    assert!(!sids_of(&set, Direction::ToServer, &[&get(&("/a".repeat(60) + "/xxxxxxxxxxxxetc/passwd"))]).contains(&15));
}

