//! `[ips] body_depth` and `past_body_depth`: the body bytes of an HTTP message past the depth
//! go through no database (by default), the stream's included, and every next message is
//! scanned whole; a response is framed by the request it answers (HEAD), so a server cannot
//! pass a head off as body.

use super::*;

const RULES: &str = r#"alert tcp any any -> any any (msg:"raw marker"; flow:to_client; content:"MARKER-X"; sid:50;)
alert tcp any any -> any any (msg:"marker ends the unit"; flow:to_client; content:"TAILMARK"; isdataat:!1,relative; sid:52;)
alert http any any -> any any (msg:"server"; flow:to_client; http.server; content:"evilsrv"; sid:53;)
"#;

fn with_depth(depth: usize, past: PastBodyDepth) -> Arc<Ruleset> {
    let (rules, errors) = parse_rules(RULES);
    assert!(errors.is_empty(), "{errors:?}");
    let opts = Options { mode: IpsMode::Monitor, level: Level::Strict, body_depth: depth, past_body_depth: past, ..Options::default() };
    let (set, refused) = Ruleset::compile(rules, &opts).unwrap();
    assert!(refused.is_empty(), "{refused:?}");
    Arc::new(set)
}

fn sids(f: &FlowIps) -> Vec<u32> {
    let mut v: Vec<u32> = f.hits.iter().map(|h| h.sid).collect();
    v.sort_unstable();
    v
}

/// A response of `len` body bytes whose body holds MARKER-X at `at`.
fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    crate::inspect::h2::frame(&mut f, kind, flags, stream, payload);
    f
}

/// A response with the marker 700 bytes into its 1000-byte body, in 100-byte reads: the marker
/// is found and nothing is skipped.
fn scanned_whole(f: &mut FlowIps, scratch: &mut Scratch) {
    let r = response_with_marker(1000, 700);
    for piece in r.chunks(100) {
        f.inspect(Direction::ToClient, piece, scratch);
    }
    assert_eq!(sids(f), [50]);
    assert_eq!(f.unscanned(), [0, 0]);
}

fn response_with_marker(len: usize, at: usize) -> Vec<u8> {
    let mut body = vec![b'.'; len];
    body[at..at + 8].copy_from_slice(b"MARKER-X");
    let mut r = format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\n\r\n").into_bytes();
    r.extend_from_slice(&body);
    r
}

#[test]
fn a_body_past_the_depth_reaches_no_database_unless_the_stream_is_asked_to_scan_it() {
    for (past, fires) in [(PastBodyDepth::Skip, false), (PastBodyDepth::Stream, true)] {
        let s = with_depth(64, past);
        let mut scratch = s.scratch().unwrap();
        let mut f = FlowIps::new(s.clone(), FlowTuple::to_port(443));
        f.inspect(Direction::ToServer, b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n", &mut scratch);
        let r = response_with_marker(1000, 700);
        // The head and 100 body bytes (the read that crosses the depth is scanned whole), then
        // the rest in two reads.
        let head = r.len() - 1000;
        f.inspect(Direction::ToClient, &r[..head + 100], &mut scratch);
        f.inspect(Direction::ToClient, &r[head + 100..head + 500], &mut scratch);
        f.inspect(Direction::ToClient, &r[head + 500..], &mut scratch);
        assert_eq!(sids(&f).contains(&50), fires, "{past:?}: {:?}", f.hits);
        let skipped = if fires { 0 } else { 900 };
        assert_eq!(f.unscanned(), [0, skipped], "{past:?}");
    }
    // Within the depth the marker is found, whatever the setting.
    let s = with_depth(1 << 20, PastBodyDepth::Skip);
    let mut scratch = s.scratch().unwrap();
    let mut f = FlowIps::new(s, FlowTuple::to_port(443));
    f.inspect(Direction::ToServer, b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n", &mut scratch);
    scanned_whole(&mut f, &mut scratch);
}

#[test]
fn the_message_after_a_skipped_body_is_scanned_whole_in_the_same_read() {
    let s = with_depth(64, PastBodyDepth::Skip);
    let mut scratch = s.scratch().unwrap();
    for chunked in [false, true] {
        let mut f = FlowIps::new(s.clone(), FlowTuple::to_port(443));
        f.inspect(Direction::ToServer, b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n", &mut scratch);
        // 256 body bytes: four chunks of 64 (the chunks past the depth cut the unit in pieces).
        let first: Vec<u8> = if chunked {
            let mut v = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
            for _ in 0..4 {
                v.extend_from_slice(b"40\r\n");
                v.extend_from_slice(&[b'.'; 64]);
                v.extend_from_slice(b"\r\n");
            }
            v.extend_from_slice(b"0\r\n\r\n");
            v
        } else {
            let mut v = b"HTTP/1.1 200 OK\r\nContent-Length: 256\r\n\r\n".to_vec();
            v.extend_from_slice(&[b'.'; 256]);
            v
        };
        let second = b"HTTP/1.1 200 OK\r\nServer: evilsrv\r\nContent-Length: 21\r\n\r\n..MARKER-X...TAILMARK";
        // The first response up to 100 bytes into its wire body (94 body bytes when chunked); then
        // the rest of its body (skipped), its framing and the whole second response in one read.
        let cut = first.windows(4).position(|w| w == b"....").unwrap() + 100;
        f.inspect(Direction::ToClient, &first[..cut], &mut scratch);
        let mut rest = first[cut..].to_vec();
        rest.extend_from_slice(second);
        f.inspect(Direction::ToClient, &rest, &mut scratch);
        // The server header, the marker in the second body, and the marker that ends the unit,
        // found at the right place of a unit that starts after the skipped bytes.
        assert_eq!(sids(&f), [50, 52, 53], "chunked {chunked}: {:?}", f.hits);
        assert_eq!(f.unscanned(), [0, if chunked { 162 } else { 156 }], "chunked {chunked}");
    }
}

#[test]
fn a_response_to_head_has_no_body_whatever_its_length_says() {
    let s = with_depth(64, PastBodyDepth::Skip);
    let mut scratch = s.scratch().unwrap();
    let mut f = FlowIps::new(s.clone(), FlowTuple::to_port(443));
    f.inspect(Direction::ToServer, b"HEAD /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\nGET /c HTTP/1.1\r\nHost: x\r\n\r\n", &mut scratch);
    // A 1xx first (it answers nothing), then the HEAD's response claims a large body; then the
    // GET's response, 300 body bytes of which the last 200 (past the depth) are skipped; then the
    // third response, whose head and body are scanned. Taken for the HEAD response's body, all
    // of it would have been skipped.
    let mut wire = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n".to_vec();
    wire.extend_from_slice(b"HTTP/1.1 200 OK\r\nContent-Length: 300\r\n\r\n");
    wire.extend_from_slice(&[b'.'; 100]);
    f.inspect(Direction::ToClient, &wire, &mut scratch);
    let mut next = vec![b'.'; 200];
    next.extend_from_slice(b"HTTP/1.1 200 OK\r\nServer: evilsrv\r\nContent-Length: 10\r\n\r\nMARKER-X..");
    f.inspect(Direction::ToClient, &next, &mut scratch);
    assert_eq!(sids(&f), [50, 53], "{:?}", f.hits);
    assert_eq!(f.unscanned(), [0, 200]);
}

/// What a peer frames otherwise than the follower would (or might) is never skipped: the read
/// after the depth holds a second request, as the server reads it, and its marker is found.
#[test]
fn framing_the_peers_may_read_otherwise_is_never_skipped() {
    let rules = r#"alert tcp any any -> any any (msg:"request marker"; flow:to_server; content:"EVIL-REQ"; sid:60;)"#;
    let (rules, _) = parse_rules(rules);
    let opts = Options { mode: IpsMode::Monitor, level: Level::Strict, body_depth: 64, ..Options::default() };
    let up = Arc::new(Ruleset::compile(rules, &opts).unwrap().0);
    let mut scratch = up.scratch().unwrap();
    let body = [b'.'; 100];
    for (what, head) in [
        // A bare LF ends the head for httparse and servers: the body starts before the CRLF CRLF.
        ("bare LF", &b"POST /a HTTP/1.1\r\nContent-Length: 300\r\n\nxxxx\r\n\r\n"[..]),
        ("two lengths", b"POST /a HTTP/1.1\r\nContent-Length: 300\r\nContent-Length: 100\r\n\r\n"),
        ("length and chunked", b"POST /a HTTP/1.1\r\nContent-Length: 300\r\nTransfer-Encoding: chunked\r\n\r\n12c\r\n"),
        ("signed length", b"POST /a HTTP/1.1\r\nContent-Length: +300\r\n\r\n"),
        ("CONNECT", b"CONNECT x:443 HTTP/1.1\r\nContent-Length: 300\r\n\r\n"),
        ("upgrade", b"POST /a HTTP/1.1\r\nUpgrade: websocket\r\nContent-Length: 300\r\n\r\n"),
        ("HTTP/1.0 chunked", b"POST /a HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n12c\r\n"),
    ] {
        let mut f = FlowIps::new(up.clone(), FlowTuple::to_port(443));
        let mut first = head.to_vec();
        first.extend_from_slice(&body);
        f.inspect(Direction::ToServer, &first, &mut scratch);
        f.inspect(Direction::ToServer, b"GET /x HTTP/1.1\r\nHost: EVIL-REQ\r\n\r\n", &mut scratch);
        assert_eq!((sids(&f), f.unscanned()), (vec![60], [0, 0]), "{what}");
    }
    // A space after a chunk size starts an extension, as nginx reads it: `0 fff` is the last chunk,
    // and what follows it a new request, scanned.
    let mut f = FlowIps::new(up.clone(), FlowTuple::to_port(443));
    let mut first = b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n64\r\n".to_vec();
    first.extend_from_slice(&body);
    first.extend_from_slice(b"\r\n");
    f.inspect(Direction::ToServer, &first, &mut scratch);
    f.inspect(Direction::ToServer, b"0 fff\r\n\r\nGET /x HTTP/1.1\r\nHost: EVIL-REQ\r\n\r\n", &mut scratch);
    assert_eq!((sids(&f), f.unscanned()), (vec![60], [0, 0]), "chunk size with a space");
    // The control: a well-framed body past the depth is skipped, and a request after it is not.
    let mut f = FlowIps::new(up, FlowTuple::to_port(443));
    let mut first = b"POST /a HTTP/1.1\r\nContent-Length: 300\r\n\r\n".to_vec();
    first.extend_from_slice(&body);
    f.inspect(Direction::ToServer, &first, &mut scratch);
    let mut next = vec![b'.'; 200];
    next.extend_from_slice(b"GET /x HTTP/1.1\r\nHost: EVIL-REQ\r\n\r\n");
    f.inspect(Direction::ToServer, &next, &mut scratch);
    assert_eq!((sids(&f), f.unscanned()), (vec![60], [200, 0]), "the control");
}

#[test]
fn a_flow_whose_responses_cannot_be_matched_to_requests_is_scanned_whole() {
    let s = with_depth(64, PastBodyDepth::Skip);
    let mut scratch = s.scratch().unwrap();
    let mut f = FlowIps::new(s, FlowTuple::to_port(443));
    // More pipelined requests than a direction remembers: a response to a HEAD among them could
    // be taken for one with a body, so no body is skipped.
    let requests = "GET / HTTP/1.1\r\nHost: x\r\n\r\n".repeat(200);
    f.inspect(Direction::ToServer, requests.as_bytes(), &mut scratch);
    scanned_whole(&mut f, &mut scratch);
}

#[test]
fn http2_data_of_a_stream_past_the_depth_is_skipped_and_other_streams_are_not() {
    use crate::inspect::h2::PREFACE;
    let mut client = loona_hpack::Encoder::new();
    let get = |enc: &mut loona_hpack::Encoder<'_>, path: &[u8]| enc.encode(vec![(&b":method"[..], &b"GET"[..]), (&b":path"[..], path), (&b":authority"[..], &b"x"[..])]);
    let mut server = loona_hpack::Encoder::new();
    for (past, fires) in [(PastBodyDepth::Skip, false), (PastBodyDepth::Stream, true)] {
        let s = with_depth(64, past);
        let mut scratch = s.scratch().unwrap();
        let mut f = FlowIps::new(s.clone(), FlowTuple::to_port(443));
        let mut wire = PREFACE.to_vec();
        wire.extend(h2_frame(4, 0, 0, &[]));
        wire.extend(h2_frame(1, 0x5, 1, &get(&mut client, b"/big")));
        wire.extend(h2_frame(1, 0x5, 3, &get(&mut client, b"/small")));
        f.inspect(Direction::ToServer, &wire, &mut scratch);
        let ok = server.encode(vec![(&b":status"[..], &b"200"[..])]);
        let evil = server.encode(vec![(&b":status"[..], &b"200"[..]), (&b"server"[..], &b"evilsrv"[..])]);
        // Stream 1: 100 body bytes (past the depth of 64), then 200 more with the marker, in a
        // read that also carries stream 3's response: its head and its body (within its depth).
        let mut first = h2_frame(4, 0, 0, &[]);
        first.extend(h2_frame(1, 0x4, 1, &ok));
        first.extend(h2_frame(0, 0, 1, &[b'.'; 100]));
        f.inspect(Direction::ToClient, &first, &mut scratch);
        let mut body = vec![b'.'; 200];
        body[120..128].copy_from_slice(b"MARKER-X");
        let mut next = h2_frame(0, 0x1, 1, &body);
        next.extend(h2_frame(1, 0x4, 3, &evil));
        next.extend(h2_frame(0, 0x1, 3, b"..TAILMARK"));
        f.inspect(Direction::ToClient, &next, &mut scratch);
        let sids = sids(&f);
        assert_eq!(sids.contains(&50), fires, "{past:?}: {sids:?}");
        assert!(sids.contains(&52) && sids.contains(&53), "{past:?}: stream 3 is scanned: {sids:?}");
        assert_eq!(f.unscanned(), [0, if fires { 0 } else { 200 }], "{past:?}");
    }
}

#[test]
fn http2_tunnels_and_a_server_side_that_may_be_out_of_step_are_never_skipped() {
    use crate::inspect::h2::PREFACE;
    let s = with_depth(64, PastBodyDepth::Skip);
    let mut scratch = s.scratch().unwrap();
    // What the server sends before the client's preface: nothing, its own preface (followed from
    // its first byte), or more than the flow keeps (the server side's follower would start in
    // the middle of what it sent).
    let preface = h2_frame(4, 0, 0, &[0, 3, 0, 0, 0, 100]);
    let too_much = h2_frame(4, 0, 0, &[0; 2046]);
    for (case, method, server_first, skipped) in [
        ("CONNECT stream", &b"CONNECT"[..], &b""[..], false),
        ("the server said too much first", b"GET", &too_much[..], false),
        ("the server's preface first", b"GET", &preface[..], true),
        ("control", b"GET", b"", true),
    ] {
        let mut client = loona_hpack::Encoder::new();
        let mut server = loona_hpack::Encoder::new();
        let mut f = FlowIps::new(s.clone(), FlowTuple::to_port(443));
        if !server_first.is_empty() {
            f.inspect(Direction::ToClient, server_first, &mut scratch);
        }
        let mut wire = PREFACE.to_vec();
        wire.extend(h2_frame(4, 0, 0, &[]));
        wire.extend(h2_frame(1, 0x4, 1, &client.encode(vec![(&b":method"[..], method), (&b":authority"[..], &b"x:443"[..])])));
        f.inspect(Direction::ToServer, &wire, &mut scratch);
        let mut first = h2_frame(1, 0x4, 1, &server.encode(vec![(&b":status"[..], &b"200"[..])]));
        first.extend(h2_frame(0, 0, 1, &[b'.'; 100]));
        f.inspect(Direction::ToClient, &first, &mut scratch);
        let mut body = vec![b'.'; 200];
        body[120..128].copy_from_slice(b"MARKER-X");
        f.inspect(Direction::ToClient, &h2_frame(0, 0, 1, &body), &mut scratch);
        assert_eq!((sids(&f).contains(&50), f.unscanned()), (!skipped, [0, if skipped { 200 } else { 0 }]), "{case}");
    }
}

/// A response whose framing the client may read otherwise is never skipped: a 205 (no content
/// for browsers, whatever its length says), or any response once the requests' own framing was
/// not sure (a request the server read otherwise would pair the responses with the wrong ones).
#[test]
fn responses_framed_otherwise_are_never_skipped() {
    let s = with_depth(64, PastBodyDepth::Skip);
    let mut scratch = s.scratch().unwrap();
    for (what, requests, status) in [
        ("205", &b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n"[..], "205 Reset Content"),
        ("unsure request", b"GET /a HTTP/1.1\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n", "200 OK"),
        ("control", b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n", "200 OK"),
    ] {
        let mut f = FlowIps::new(s.clone(), FlowTuple::to_port(443));
        f.inspect(Direction::ToServer, requests, &mut scratch);
        let mut first = format!("HTTP/1.1 {status}\r\nContent-Length: 300\r\n\r\n").into_bytes();
        first.extend_from_slice(&[b'.'; 100]);
        f.inspect(Direction::ToClient, &first, &mut scratch);
        f.inspect(Direction::ToClient, b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nMARKER-X..", &mut scratch);
        let skipped = what == "control";
        assert_eq!((sids(&f).contains(&50), f.unscanned()), (!skipped, [0, if skipped { 49 } else { 0 }]), "{what}");
    }
}
