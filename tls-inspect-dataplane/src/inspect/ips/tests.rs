//! The IPS engine on byte fixtures: streaming across reads, HTTP buffers, modifiers, levels,
//! monitor vs block, overrides.

use super::*;
use crate::inspect::rules::parse_rules;

fn set(text: &str, mode: IpsMode, level: Level) -> Arc<Ruleset> {
    let (rules, errors) = parse_rules(text);
    assert!(errors.is_empty(), "{errors:?}");
    let (set, refused) = Ruleset::compile(rules, mode, level, 1 << 20).unwrap();
    assert!(refused.is_empty(), "{refused:?}");
    Arc::new(set)
}

const LOG4J: &str = r#"alert http any any -> any any (msg:"Log4Shell"; flow:to_server; http.uri; content:"${jndi:"; nocase; sid:1; metadata: confidence high;)
alert tcp any any -> any any (msg:"raw marker"; content:"EVIL"; content:"MARK"; distance:1; within:10; sid:2; metadata: confidence medium;)
alert http any any -> any any (msg:"scanner"; http.user_agent; content:"sqlmap"; nocase; sid:3; metadata: confidence low;)
alert http any any -> any any (msg:"body card"; http.request_body; content:"4111"; sid:4;)
"#;

#[test]
fn http_uri_rule_blocks_and_streams_split_patterns_match() {
    let s = set(LOG4J, IpsMode::Block, Level::Strict);
    let mut scratch = s.scratch().unwrap();
    let mut f = FlowIps::new(s.clone(), 443);
    // The request arrives in three reads, the pattern split across them.
    assert_eq!(f.inspect(Direction::ToServer, b"GET /a?x=${jn", &mut scratch), Verdict::Continue);
    assert_eq!(f.inspect(Direction::ToServer, b"DI:ldap://e/a} HTTP/1.1\r\nHost: x\r\n", &mut scratch), Verdict::Continue);
    let v = f.inspect(Direction::ToServer, b"\r\n", &mut scratch);
    assert!(matches!(v, Verdict::Block(ref why) if why.contains("sid 1")), "{v:?}");
    assert_eq!(f.hits[0].http.as_ref().unwrap().uri, "/a?x=${jnDI:ldap://e/a}");

    // A raw stream rule with distance/within, split across reads.
    let mut f = FlowIps::new(s.clone(), 443);
    f.inspect(Direction::ToServer, b"xxEV", &mut scratch);
    f.inspect(Direction::ToServer, b"IL-", &mut scratch);
    assert!(matches!(f.inspect(Direction::ToServer, b"-MARKyy", &mut scratch), Verdict::Block(_)));
    // ... but not when MARK is too far.
    let mut f = FlowIps::new(s.clone(), 443);
    assert_eq!(f.inspect(Direction::ToServer, b"EVIL------------------MARK", &mut scratch), Verdict::Continue);
}

#[test]
fn direction_body_and_negatives() {
    let s = set(LOG4J, IpsMode::Block, Level::Strict);
    let mut scratch = s.scratch().unwrap();
    // flow:to_server: the same string from the server does not fire.
    let mut f = FlowIps::new(s.clone(), 443);
    assert_eq!(f.inspect(Direction::ToClient, b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n${jndi:x", &mut scratch), Verdict::Continue);
    // A body pattern in a POST body, after the head.
    let mut f = FlowIps::new(s.clone(), 443);
    let v = f.inspect(Direction::ToServer, b"POST /pay HTTP/1.1\r\nHost: x\r\nContent-Length: 16\r\n\r\ncard=4111111111", &mut scratch);
    assert!(matches!(v, Verdict::Block(ref w) if w.contains("sid 4")), "{v:?}");
    // The same digits in the URI are not a body.
    let mut f = FlowIps::new(s.clone(), 443);
    assert_eq!(f.inspect(Direction::ToServer, b"GET /4111 HTTP/1.1\r\nHost: x\r\n\r\n", &mut scratch), Verdict::Continue);
    // Benign traffic.
    let mut f = FlowIps::new(s.clone(), 443);
    assert_eq!(f.inspect(Direction::ToServer, b"GET /index.html HTTP/1.1\r\nHost: x\r\nUser-Agent: curl\r\n\r\n", &mut scratch), Verdict::Continue);
    assert!(f.hits.is_empty());
}

#[test]
fn monitor_levels_and_overrides() {
    let s = set(LOG4J, IpsMode::Monitor, Level::Strict);
    let mut scratch = s.scratch().unwrap();
    let mut f = FlowIps::new(s, 443);
    assert_eq!(f.inspect(Direction::ToServer, b"GET /${jndi:x} HTTP/1.1\r\n\r\n", &mut scratch), Verdict::Continue, "monitor never blocks");
    assert_eq!(f.hits.len(), 1);
    assert!(!f.hits[0].blocked);

    // Loose: only high-confidence rules; the low-confidence scanner rule is off.
    let s = set(LOG4J, IpsMode::Block, Level::Loose);
    let mut scratch = s.scratch().unwrap();
    let mut f = FlowIps::new(s.clone(), 443);
    assert_eq!(f.inspect(Direction::ToServer, b"GET / HTTP/1.1\r\nUser-Agent: sqlmap/1.7\r\n\r\n", &mut scratch), Verdict::Continue);
    assert!(!s.is_active(3) && s.is_active(1));
    let s = set(LOG4J, IpsMode::Block, Level::Strict);
    let mut scratch = s.scratch().unwrap();
    let mut f = FlowIps::new(s, 443);
    assert!(matches!(f.inspect(Direction::ToServer, b"GET / HTTP/1.1\r\nUser-Agent: sqlmap/1.7\r\n\r\n", &mut scratch), Verdict::Block(_)));

    // A per-rule override: alert only, in block mode.
    let (rules, _) = parse_rules(LOG4J);
    let (mut s, _) = Ruleset::compile(rules, IpsMode::Block, Level::Strict, 1 << 20).unwrap();
    assert!(s.set_override(1, Some(false)));
    let s = Arc::new(s);
    let mut scratch = s.scratch().unwrap();
    let mut f = FlowIps::new(s, 443);
    assert_eq!(f.inspect(Direction::ToServer, b"GET /${jndi:x} HTTP/1.1\r\n\r\n", &mut scratch), Verdict::Continue);
    assert_eq!(f.hits.len(), 1);
}

#[test]
fn unsupported_pcre_refuses_one_rule_only() {
    let (rules, _) = parse_rules(
        "alert tcp any any -> any any (msg:\"backref\"; pcre:\"/(a)\\1/\"; sid:10;)\nalert tcp any any -> any any (msg:\"ok\"; pcre:\"/ab+c/i\"; sid:11;)\n",
    );
    let (s, refused) = Ruleset::compile(rules, IpsMode::Block, Level::Strict, 1024).unwrap();
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0].0, 10);
    let s = Arc::new(s);
    let mut scratch = s.scratch().unwrap();
    let mut f = FlowIps::new(s, 443);
    assert!(matches!(f.inspect(Direction::ToServer, b"xxABBBCxx", &mut scratch), Verdict::Block(_)));
}

#[test]
fn block_page_names_the_rule() {
    let p = String::from_utf8(block_page(7, "a <b>")).unwrap();
    assert!(p.starts_with("HTTP/1.1 403 Forbidden\r\n"));
    assert!(p.contains("sid 7") && p.contains("a &lt;b&gt;"));
}
