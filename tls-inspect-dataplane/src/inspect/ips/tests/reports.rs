//! What Hyperscan reports of a stream rule, counted on the compiled to-client stream database
//! itself, and that leaving reports out changes nothing of what fires: a content bounded by
//! `depth` is reported nowhere after where it can end (`max_offset`), and a short content with no
//! modifiers that only a longer one follows is not reported at all (the longer one is compiled
//! behind it).

use std::sync::Arc;

use hyperscan::prelude::*;

use super::super::*;
use super::payload_keywords::set;

/// The reports of each content of rule 0 when `reads` are scanned as one to-client stream.
fn reports(s: &Arc<Ruleset>, reads: &[&[u8]]) -> Vec<usize> {
    let db = s.stream[1].as_ref().expect("a to-client stream database");
    let scratch = s.scratch().unwrap();
    let stream = db.open_stream().unwrap();
    let mut counts = vec![0; s.rules[0].contents.len()];
    let mut count = |id: u32| {
        let r = s.refs[id as usize];
        if r.rule == 0 && !r.is_pcre {
            counts[usize::from(r.item)] += 1;
        }
        Matching::Continue
    };
    for r in reads {
        stream.scan(r, &scratch, |id, _, _, _| count(id)).unwrap();
    }
    stream.close(&scratch, |id, _, _, _| count(id)).unwrap();
    counts
}

fn fired(s: &Arc<Ruleset>, reads: &[&[u8]]) -> bool {
    let mut scratch = s.scratch().unwrap();
    let mut f = FlowIps::new(s.clone(), FlowTuple::to_port(443));
    for r in reads {
        f.inspect(Direction::ToClient, r, &mut scratch);
    }
    f.hits.iter().any(|h| h.sid == 1)
}

#[test]
fn a_content_bounded_by_depth_is_reported_only_where_it_can_end() {
    let s = set(r#"alert tcp any any -> any any (msg:"first byte"; flow:to_client; content:"|16|"; depth:1; content:"DO_NOT_TRUST"; sid:1;)"#);
    let sixteens = vec![0x16u8; 10_000];
    assert_eq!(reports(&s, &[&sixteens])[0], 1, "one report, at the first byte, not ten thousand");
    assert!(fired(&s, &[&sixteens, b"DO_NOT_TRUST"]));
    assert!(!fired(&s, &[b"x", &sixteens, b"DO_NOT_TRUST"]));
}

#[test]
fn a_short_first_content_is_implied_by_the_longer_one_compiled_behind_it() {
    let s = set(r#"alert tcp any any -> any any (msg:"rubeus"; flow:to_client; content:"Z"; content:"|6C 69 6C 00|"; within:25; sid:1;)"#);
    let zs = vec![b'Z'; 10_000];
    assert_eq!(reports(&s, &[&zs]), [0, 0], "\"Z\" is never reported alone");
    assert_eq!(reports(&s, &[b"..Z.........lil\x00"]), [0, 1]);
    assert!(fired(&s, &[b"..Z.........lil\x00"]));
    assert!(fired(&s, &[b"..Z....", b".....lil\x00"]), "across reads");
    assert!(fired(&s, &[&zs, b"lil\x00"]));
    // 21 bytes between the two is the most `within:25` allows a 4-byte content.
    assert!(fired(&s, &[b"Z", &[b'.'; 21], b"lil\x00"]));
    assert!(!fired(&s, &[b"Z", &[b'.'; 22], b"lil\x00"]), "within");
    assert!(!fired(&s, &[b"....lil\x00 Z"]), "the order");
    assert!(!fired(&s, &[b"Z", &[b'.'; 400], b"lil\x00"]));
    // With a distance too.
    let s = set(r#"alert tcp any any -> any any (msg:"gap"; flow:to_client; content:"|05|"; content:"KRBTGT"; distance:2; within:10; sid:1;)"#);
    assert_eq!(reports(&s, &[b"\x05\x05\x05\x05\x05"]), [0, 0]);
    assert!(fired(&s, &[b"\x05..KRBTGT"]));
    assert!(!fired(&s, &[b"\x05.KRBTGT"]), "distance:2");
    // The window is 10 bytes from where the distance puts it: KRBTGT ends 12 bytes after |05| at most.
    assert!(fired(&s, &[b"\x05......KRBTGT"]));
    assert!(!fired(&s, &[b"\x05.......KRBTGT"]), "within:10");
}

#[test]
fn a_short_content_that_more_than_the_next_one_depends_on_is_still_reported() {
    // A pcre placed after it, or a position of its own: it keeps its reports.
    for rule in [
        r#"alert tcp any any -> any any (msg:"pcre after"; flow:to_client; content:"Z"; pcre:"/^\d/R"; content:"|6C 69 6C 00|"; within:25; sid:1;)"#,
        r#"alert tcp any any -> any any (msg:"placed"; flow:to_client; content:"Z"; offset:2; content:"|6C 69 6C 00|"; within:25; sid:1;)"#,
    ] {
        let s = set(rule);
        assert!(reports(&s, &[b"ZZZZZZZZZZ"])[0] > 1, "{rule}");
    }
}
