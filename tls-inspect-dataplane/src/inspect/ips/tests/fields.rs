//! Rules evaluated on their fields' bytes (`Eval::Fields`): Hyperscan reports only the fast
//! pattern, and the rest is walked on the kept bytes as Suricata inspects a buffer. Each test
//! checks that the rule really is evaluated so, then what must and must not fire.

use std::sync::Arc;

use super::super::compile::Eval;
use super::super::*;
use super::payload_keywords::set;

/// The sids that fire on one flow: `reads` in order, each with its direction.
fn fired(s: &Arc<Ruleset>, reads: &[(Direction, &[u8])]) -> Vec<u32> {
    let mut scratch = s.scratch().unwrap();
    let mut f = FlowIps::new(s.clone(), FlowTuple::to_port(443));
    for (d, r) in reads {
        f.inspect(*d, r, &mut scratch);
    }
    let mut sids: Vec<u32> = f.hits.iter().map(|h| h.sid).collect();
    sids.sort_unstable();
    sids
}

fn request(r: &[u8]) -> (Direction, &[u8]) {
    (Direction::ToServer, r)
}

fn response(r: &[u8]) -> (Direction, &[u8]) {
    (Direction::ToClient, r)
}

#[test]
fn only_the_fast_pattern_is_reported_and_the_rest_is_searched_in_the_head() {
    let s = set(r#"alert http any any -> any any (msg:"lfi"; flow:to_server; http.method; content:"GET"; http.uri; content:"/login.tpl.php?"; nocase; content:"TplSuffix="; nocase; distance:0; sid:1;)
alert http any any -> any any (msg:"author's choice"; flow:to_server; http.uri; content:"/index.php"; http.user_agent; content:"Zz"; fast_pattern; sid:2;)
alert http any any -> any any (msg:"no UA but Mozilla"; flow:to_server; http.uri; content:"/x"; http.user_agent; content:!"Mozilla"; sid:3;)
"#);
    assert!(s.eval.iter().all(|e| *e == Eval::Fields), "{:?}", s.eval);
    // The longest content, and the one marked fast_pattern.
    assert_eq!(s.prefilters, [vec![(false, 1)], vec![(false, 1)], vec![(false, 0)]]);
    let r = |t: &'static [u8]| fired(&s, &[request(t)]);
    assert_eq!(r(b"GET /Login.tpl.php?a=1&TplSuffix=../../etc HTTP/1.1\r\nHost: a\r\n\r\n"), [1]);
    assert!(r(b"POST /login.tpl.php?TplSuffix=x HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n").is_empty(), "the method");
    assert!(r(b"GET /TplSuffix=/login.tpl.php? HTTP/1.1\r\nHost: a\r\n\r\n").is_empty(), "distance:0");
    assert_eq!(r(b"GET /index.php HTTP/1.1\r\nHost: a\r\nUser-Agent: xZzx\r\n\r\n"), [2]);
    assert!(r(b"GET /other.php HTTP/1.1\r\nHost: a\r\nUser-Agent: Zz\r\n\r\n").is_empty());
    assert_eq!(r(b"GET /x HTTP/1.1\r\nHost: a\r\nUser-Agent: curl\r\n\r\n"), [3]);
    assert!(r(b"GET /x HTTP/1.1\r\nHost: a\r\nUser-Agent: Mozilla/5.0\r\n\r\n").is_empty());
    assert!(r(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n").is_empty(), "a buffer the message does not have holds nothing, as in Suricata");
    // The head in pieces, and the fields of one request do not combine with the next one's.
    assert_eq!(fired(&s, &[request(b"GET /login.tpl"), request(b".php?TplSuffix=1 HTTP/1.1\r\nHo"), request(b"st: a\r\n\r\n")]), [1]);
    assert!(fired(&s, &[request(b"GET /index.php HTTP/1.1\r\nHost: a\r\n\r\nGET /a HTTP/1.1\r\nHost: a\r\nUser-Agent: Zz\r\n\r\n")]).is_empty());
}

#[test]
fn no_number_of_earlier_occurrences_hides_the_one_that_completes_a_field_rule() {
    let s = set(r#"alert http any any -> any any (msg:"pair"; flow:to_server; http.uri; content:"/a"; content:"b"; distance:0; within:1; sid:1;)
alert http any any -> any any (msg:"pcre"; flow:to_server; http.header; content:"X-Id|3a 20|"; pcre:"/^[0-9]{4}\r\n/R"; sid:2;)
"#);
    assert!(s.eval.iter().all(|e| *e == Eval::Fields), "{:?}", s.eval);
    let padded = format!("GET {}/ab HTTP/1.1\r\nHost: a\r\n\r\n", "/a".repeat(300));
    assert_eq!(fired(&s, &[request(padded.as_bytes())]), [1]);
    let near = format!("GET {}/ac HTTP/1.1\r\nHost: a\r\n\r\n", "/a".repeat(300));
    assert!(fired(&s, &[request(near.as_bytes())]).is_empty());
    let headers: String = (0..100).map(|i| format!("X-Id: x{i}\r\n")).collect();
    let padded = format!("GET / HTTP/1.1\r\nHost: a\r\n{headers}X-Id: 1234\r\n\r\n");
    assert_eq!(fired(&s, &[request(padded.as_bytes())]), [2]);
    let near = format!("GET / HTTP/1.1\r\nHost: a\r\n{headers}X-Id: 123\r\n\r\n");
    assert!(fired(&s, &[request(near.as_bytes())]).is_empty());
}

#[test]
fn a_fast_pattern_in_the_body_leaves_the_head_unreported_and_still_checked() {
    let s = set(r#"alert http any any -> any any (msg:"kit"; flow:to_client; http.stat_code; content:"200"; file.data; content:"<title>"; content:"Evil Kit"; fast_pattern; distance:0; sid:1;)
"#);
    assert_eq!(s.eval, [Eval::Fields]);
    assert_eq!(s.prefilters, [Vec::<(bool, u16)>::new()], "nothing of the head is reported");
    let page = |status: &str, body: &str| format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\n\r\n{body}", body.len());
    let req = request(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    let ok = page("200 OK", "<html><title>Evil Kit</title>");
    assert_eq!(fired(&s, &[req, response(ok.as_bytes())]), [1]);
    let missing = page("404 Not Found", "<html><title>Evil Kit</title>");
    assert!(fired(&s, &[req, response(missing.as_bytes())]).is_empty(), "the status code");
    let order = page("200 OK", "Evil Kit<title>");
    assert!(fired(&s, &[req, response(order.as_bytes())]).is_empty(), "distance:0");
    // The body in pieces after its head.
    let (head, body) = ok.split_at(ok.find("\r\n\r\n").unwrap() + 4);
    assert_eq!(fired(&s, &[req, response(head.as_bytes()), response(&body.as_bytes()[..12]), response(&body.as_bytes()[12..])]), [1]);
}

#[test]
fn a_stream_content_and_a_head_fast_pattern_combine() {
    let s = set(r#"alert http any any -> any any (msg:"lfi"; flow:to_server; content:"../"; http.method; content:"GET"; http.uri; content:"/admin_words.php?"; nocase; sid:1;)
"#);
    assert_eq!(s.eval, [Eval::Fields]);
    assert_eq!(s.prefilters, [vec![(false, 2)]]);
    assert_eq!(fired(&s, &[request(b"GET /admin_words.php?ModName=../../x HTTP/1.1\r\nHost: a\r\n\r\n")]), [1]);
    assert!(fired(&s, &[request(b"GET /admin_words.php?ModName=x HTTP/1.1\r\nHost: a\r\n\r\n")]).is_empty());
    // The stream's bytes before the head is complete, the head in a later read.
    assert_eq!(fired(&s, &[request(b"GET /admin_words.php?ModName=../"), request(b" HTTP/1.1\r\nHost: a\r\n\r\n")]), [1]);
}

#[test]
fn each_certificate_is_a_buffer_of_its_own() {
    let s = set(r#"alert tls any any -> any any (msg:"split over two certificates"; flow:to_client; tls.certs; content:"a.test"; content:"Beta CA"; sid:1;)
alert tls any any -> any any (msg:"the second certificate"; flow:to_client; tls.certs; content:"Beta"; pcre:"/^ CA/R"; sid:2;)
alert tls any any -> any any (msg:"the leaf"; flow:to_client; tls.certs; content:"Alpha CA"; content:"a.test"; sid:3;)
alert tls any any -> any any (msg:"the leaf and its subject"; flow:to_client; tls.cert_subject; content:"a.test"; tls.certs; content:"Alpha"; sid:4;)
"#);
    assert!(s.eval.iter().all(|e| *e == Eval::Fields), "{:?}", s.eval);
    let (alpha, key) = crate::testutil::pki::ca("Alpha CA");
    let (leaf, _) = crate::testutil::pki::leaf(&alpha, key, &["a.test"]);
    let (beta, _) = crate::testutil::pki::ca("Beta CA");
    let mut scratch = s.scratch().unwrap();
    let mut f = FlowIps::new(s.clone(), FlowTuple::to_port(443));
    f.scan_certificates(&[leaf[0].as_ref(), beta.as_ref()], Some(0x0304), &mut scratch);
    let mut sids: Vec<u32> = f.hits.iter().map(|h| h.sid).collect();
    sids.sort_unstable();
    assert_eq!(sids, [2, 3, 4]);
}

#[test]
fn a_rule_on_the_hello_and_a_request_fires_when_the_request_comes() {
    let s = set(r#"alert http any any -> any any (msg:"admin"; tls.sni; content:"server.test"; http.uri; content:"/admin"; sid:1;)
"#);
    assert_eq!(s.eval, [Eval::Fields]);
    assert_eq!(s.prefilters, [vec![(false, 1)]], "the request's content is reported: it comes last");
    let hello = crate::inspect::HelloFields { sni: Some("server.test"), version: 0x0303, ja3_string: "", ja3_hash: "", ja4: "" };
    let mut scratch = s.scratch().unwrap();
    let mut f = FlowIps::new(s.clone(), FlowTuple::to_port(443));
    f.scan_client_hello(&hello, &mut scratch);
    assert!(f.hits.is_empty());
    f.inspect(Direction::ToServer, b"GET /index HTTP/1.1\r\nHost: a\r\n\r\n", &mut scratch);
    assert!(f.hits.is_empty());
    f.inspect(Direction::ToServer, b"GET /admin HTTP/1.1\r\nHost: a\r\n\r\n", &mut scratch);
    assert_eq!(f.hits.iter().map(|h| h.sid).collect::<Vec<_>>(), [1]);
}

/// `depth` and `startswith` bound where Hyperscan reports a content (`max_offset`), on the stream
/// and in a body, without changing what matches.
#[test]
fn a_content_bounded_by_depth_matches_only_there() {
    let s = set(r#"alert tcp any any -> any any (msg:"record"; flow:to_client; content:"|16|"; depth:1; content:"DO_NOT_TRUST"; sid:1;)
alert tcp any any -> any any (msg:"rdp"; flow:to_client; content:"|03|"; depth:1; content:"|D0|"; offset:5; depth:1; sid:2;)
alert http any any -> any any (msg:"zip"; flow:to_client; file.data; content:"PK"; startswith; content:".class"; sid:3;)
"#);
    let r = |reads: &[&[u8]]| fired(&s, &reads.iter().map(|r| response(r)).collect::<Vec<_>>());
    assert_eq!(r(&[b"\x16\x03\x01..DO_NOT_TRUST"]), [1]);
    assert_eq!(r(&[b"\x16", b"\x03\x01..DO_NOT_TRUST"]), [1]);
    assert!(r(&[b"x\x16\x03\x01..DO_NOT_TRUST"]).is_empty());
    assert!(r(&[b"x", b"\x16..DO_NOT_TRUST"]).is_empty(), "depth counts from the stream's start");
    assert_eq!(r(&[b"\x03....\xd0"]), [2]);
    assert!(r(&[b"\x03...\xd0."]).is_empty());
    assert!(r(&[b"\x03.....\xd0"]).is_empty());
    let zip = |body: &[u8]| [format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes(), body.to_vec()].concat();
    assert_eq!(fired(&s, &[request(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"), response(&zip(b"PK\x03\x04...a.class"))]), [3]);
    assert!(fired(&s, &[request(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"), response(&zip(b"xPK\x03\x04...a.class"))]).is_empty());
}

/// A content of a rule evaluated per data unit that is not placed after anything is searched in
/// the whole unit, wherever the walk has got to.
#[test]
fn an_unplaced_content_of_a_data_unit_rule_is_anywhere_in_the_unit() {
    let s = set(r#"alert tcp any any -> any any (msg:"two"; dsize:>0; content:"LONGANCHOR"; content:"B"; sid:1;)
"#);
    assert_eq!(s.eval, [Eval::DataUnit]);
    let r = |t: &'static [u8]| fired(&s, &[request(t)]);
    assert_eq!(r(b"xB..LONGANCHOR"), [1]);
    assert_eq!(r(b"LONGANCHOR..B"), [1]);
    assert!(r(b"LONGANCHOR").is_empty());
}
