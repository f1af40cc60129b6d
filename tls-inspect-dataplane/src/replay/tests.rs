//! The replay on hand-built captures: a small pcap writer, connections made segment by segment.

use std::net::Ipv4Addr;
use std::sync::Arc;

use serde_json::Value;

use super::decode::{frame, ACK, FIN, RST, SYN};
use super::*;
use crate::inspect::ips::{IpsMode, Options};
use crate::inspect::rules::parse_rules;
use crate::testutil::Prng;

const CLIENT: (Ipv4Addr, u16) = (Ipv4Addr::new(192, 168, 1, 10), 51000);
const SERVER: (Ipv4Addr, u16) = (Ipv4Addr::new(203, 0, 113, 5), 80);

/// A classic pcap file (little-endian, microseconds, Ethernet) being written.
struct PcapWriter(Vec<u8>, u32);

impl PcapWriter {
    fn new() -> Self {
        let mut h = Vec::new();
        h.extend(0xa1b2_c3d4u32.to_le_bytes());
        h.extend(2u16.to_le_bytes());
        h.extend(4u16.to_le_bytes());
        h.extend([0u8; 8]);
        h.extend(65535u32.to_le_bytes());
        h.extend(1u32.to_le_bytes());
        Self(h, 0)
    }

    /// A frame, one millisecond after the previous one.
    fn push(&mut self, frame: &[u8]) {
        self.1 += 1;
        let (secs, micros) = (1_700_000_000 + self.1 / 1000, (self.1 % 1000) * 1000);
        for v in [secs, micros, frame.len() as u32, frame.len() as u32] {
            self.0.extend(v.to_le_bytes());
        }
        self.0.extend(frame);
    }
}

/// A connection's two sequence spaces; every segment is written to the capture.
struct Conn {
    seq: [u32; 2],
    client: (Ipv4Addr, u16),
    server: (Ipv4Addr, u16),
}

impl Conn {
    fn open(pcap: &mut PcapWriter, client: (Ipv4Addr, u16), server: (Ipv4Addr, u16)) -> Self {
        let mut c = Self { seq: [1000, 5000], client, server };
        pcap.push(&frame(client, server, c.seq[0], SYN, b""));
        pcap.push(&frame(server, client, c.seq[1], SYN | ACK, b""));
        c.seq = [c.seq[0] + 1, c.seq[1] + 1];
        pcap.push(&frame(client, server, c.seq[0], ACK, b""));
        c
    }

    /// The segment `data` would be at the direction's next sequence number (not written);
    /// the sequence number moves on.
    fn next(&mut self, to_server: bool, data: &[u8]) -> Vec<u8> {
        let (i, src, dst) = if to_server { (0, self.client, self.server) } else { (1, self.server, self.client) };
        let f = frame(src, dst, self.seq[i], ACK, data);
        self.seq[i] += data.len() as u32;
        f
    }

    fn send(&mut self, pcap: &mut PcapWriter, to_server: bool, data: &[u8]) {
        let f = self.next(to_server, data);
        pcap.push(&f);
    }

    fn close(&mut self, pcap: &mut PcapWriter) {
        pcap.push(&frame(self.client, self.server, self.seq[0], FIN | ACK, b""));
        pcap.push(&frame(self.server, self.client, self.seq[1], FIN | ACK, b""));
    }
}

fn rules(text: &str) -> Arc<Ruleset> {
    let (rules, errors) = parse_rules(text);
    assert!(errors.is_empty(), "{errors:?}");
    let (set, refused) = Ruleset::compile(rules, &Options { mode: IpsMode::Monitor, level: Level::Strict, ..Options::default() }).unwrap();
    assert!(refused.is_empty(), "{refused:?}");
    Arc::new(set)
}

const RULES: &str = r#"alert http any any -> any any (msg:"evil uri"; flow:to_server; http.uri; content:"/evil/path"; sid:1;)
alert tcp any any -> any any (msg:"evil stream"; content:"vil/pa"; sid:2;)
alert http any any -> any any (msg:"second request"; http.uri; content:"/two"; sid:3;)
alert http any any -> any any (msg:"teapot"; http.stat_code; content:"418"; sid:4;)
"#;

fn replay_lines(set: Arc<Ruleset>, pcap: &PcapWriter) -> (Summary, Vec<Value>) {
    let mut out = Vec::new();
    let summary = replay(&pcap.0[..], set, &mut out).unwrap();
    let lines = String::from_utf8(out).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    (summary, lines)
}

fn of_type<'a>(lines: &'a [Value], t: &str) -> Vec<&'a Value> {
    lines.iter().filter(|l| l["event_type"] == t).collect()
}

fn sids(lines: &[Value]) -> Vec<u64> {
    let mut s: Vec<u64> = of_type(lines, "alert").iter().filter_map(|a| a["alert"]["signature_id"].as_u64()).collect();
    s.sort_unstable();
    s
}

#[test]
fn a_request_split_mid_pattern_across_two_segments() {
    let mut pcap = PcapWriter::new();
    let mut c = Conn::open(&mut pcap, CLIENT, SERVER);
    c.send(&mut pcap, true, b"GET /e");
    c.send(&mut pcap, true, b"vil/path HTTP/1.1\r\nHost: Example.ORG\r\nUser-Agent: t/1\r\n\r\n");
    c.send(&mut pcap, false, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok");
    c.close(&mut pcap);
    let (summary, lines) = replay_lines(rules(RULES), &pcap);
    assert_eq!((summary.packets, summary.flows, summary.alerts, summary.http), (8, 1, 2, 1), "{summary}");
    assert_eq!(sids(&lines), [1, 2]);
    let alert = of_type(&lines, "alert")[0];
    assert_eq!(alert["src_ip"], "192.168.1.10");
    assert_eq!(alert["dest_port"], 80);
    assert_eq!(alert["app_proto"], "http");
    assert_eq!(alert["timestamp"], "2023-11-14T22:13:20.005000+0000");
    let http = of_type(&lines, "http");
    assert_eq!(http[0]["http"]["url"], "/evil/path");
    assert_eq!(http[0]["http"]["hostname"], "example.org");
    assert_eq!(http[0]["http"]["status"], 200);
    assert_eq!(http[0]["http"]["length"], 2);
    let flow = of_type(&lines, "flow");
    assert_eq!(flow.len(), 1);
    assert_eq!(flow[0]["flow"]["bytes_toserver"], 6 + 57);
    assert_eq!(flow[0]["flow"]["start"], "2023-11-14T22:13:20.001000+0000");
    assert_eq!(flow[0]["flow"]["end"], "2023-11-14T22:13:20.008000+0000");
    assert_eq!(flow[0]["flow"]["alerted"], true);
    assert_eq!(flow[0]["flow_id"], alert["flow_id"]);
}

#[test]
fn out_of_order_and_retransmitted_segments() {
    let mut pcap = PcapWriter::new();
    let mut c = Conn::open(&mut pcap, CLIENT, SERVER);
    let first = c.next(true, b"GET /evi");
    let second = c.next(true, b"l/path HTTP/1.1\r\nHost: a\r\n\r\n");
    // The second segment first, then the first twice, then the second again with other bytes
    // (the first copy wins).
    pcap.push(&second);
    pcap.push(&first);
    pcap.push(&first);
    let mut forged = second.clone();
    let n = forged.len();
    forged[n - 8..n - 4].copy_from_slice(b"XXXX");
    pcap.push(&forged);
    c.send(&mut pcap, false, b"HTTP/1.1 418 I'm a teapot\r\nContent-Length: 0\r\n\r\n");
    c.close(&mut pcap);
    let (summary, lines) = replay_lines(rules(RULES), &pcap);
    assert_eq!(sids(&lines), [1, 2, 4], "{lines:?}");
    let http = of_type(&lines, "http");
    assert_eq!(http.len(), 1);
    assert_eq!(http[0]["http"]["url"], "/evil/path");
    assert_eq!(http[0]["http"]["status"], 418);
    assert_eq!(summary.gaps, 0);
    // The wire counts every copy.
    assert_eq!(of_type(&lines, "flow")[0]["flow"]["bytes_toserver"], 8 * 2 + 28 * 2);
}

#[test]
fn a_pipelined_keep_alive_flow() {
    let mut pcap = PcapWriter::new();
    let mut c = Conn::open(&mut pcap, CLIENT, SERVER);
    c.send(&mut pcap, true, b"GET /one HTTP/1.1\r\nHost: a\r\n\r\nGET /two HTTP/1.1\r\nHost: a\r\n\r\n");
    c.send(&mut pcap, false, b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcHTTP/1.1 4");
    c.send(&mut pcap, false, b"18 No\r\nContent-Length: 0\r\n\r\n");
    c.send(&mut pcap, true, b"GET /three HTTP/1.1\r\nHost: a\r\n\r\n");
    c.close(&mut pcap);
    let (summary, lines) = replay_lines(rules(RULES), &pcap);
    assert_eq!(sids(&lines), [3, 4]);
    let urls: Vec<&str> = of_type(&lines, "http").iter().filter_map(|h| h["http"]["url"].as_str()).collect();
    assert_eq!(urls, ["/one", "/two", "/three"]);
    let status: Vec<Option<u64>> = of_type(&lines, "http").iter().map(|h| h["http"]["status"].as_u64()).collect();
    assert_eq!(status, [Some(200), Some(418), None]);
    assert_eq!(summary.http, 3);
}

#[test]
fn flows_apart_midstream_reset_and_reused_ports() {
    let mut pcap = PcapWriter::new();
    // Midstream: no handshake; the higher port is the client.
    pcap.push(&frame(SERVER, CLIENT, 9000, ACK, b"HTTP/1.1 418 x\r\nContent-Length: 0\r\n\r\n"));
    pcap.push(&frame(CLIENT, SERVER, 100, ACK, b"GET /two HTTP/1.1\r\nHost: a\r\n\r\n"));
    pcap.push(&frame(CLIENT, SERVER, 100, RST, b""));
    // The same ports again, after the reset: a new flow.
    let mut c = Conn::open(&mut pcap, CLIENT, SERVER);
    c.send(&mut pcap, true, b"GET /evil/path HTTP/1.1\r\nHost: a\r\n\r\n");
    // And once more without a close: a new SYN with another ISN ends the old flow.
    pcap.push(&frame(CLIENT, SERVER, 77_777, SYN, b""));
    pcap.push(&frame(CLIENT, SERVER, 77_778, ACK, b"GET /two HTTP/1.1\r\n\r\n"));
    let (summary, lines) = replay_lines(rules(RULES), &pcap);
    assert_eq!(summary.flows, 3, "{summary}");
    let flows = of_type(&lines, "flow");
    assert_eq!(flows.len(), 3);
    assert!(flows.iter().all(|f| f["src_port"] == 51000 && f["dest_port"] == 80), "{flows:?}");
    let ids: Vec<&Value> = of_type(&lines, "alert").iter().map(|a| &a["flow_id"]).collect();
    assert_eq!(sids(&lines), [1, 2, 3, 3, 4]);
    assert_eq!(ids.len(), 5);
}

#[test]
fn ipv6_and_udp_are_counted_and_skipped() {
    let mut pcap = PcapWriter::new();
    let mut v6 = frame(CLIENT, SERVER, 1, ACK, b"GET /evil/path");
    v6[12..14].copy_from_slice(&[0x86, 0xdd]);
    pcap.push(&v6);
    let mut udp = frame(CLIENT, SERVER, 1, ACK, b"GET /evil/path");
    udp[14 + 9] = 17;
    pcap.push(&udp);
    let (summary, lines) = replay_lines(rules(RULES), &pcap);
    assert_eq!((summary.ipv6, summary.not_tcp, summary.flows), (1, 1, 0));
    assert!(lines.is_empty());
    assert!(summary.to_string().contains("skipped 1 ipv6, 1 not tcp"), "{summary}");
}

#[test]
fn a_truncated_capture_replays_what_it_holds() {
    let mut pcap = PcapWriter::new();
    let mut c = Conn::open(&mut pcap, CLIENT, SERVER);
    c.send(&mut pcap, true, b"GET /evil/path HTTP/1.1\r\nHost: a\r\n\r\n");
    c.send(&mut pcap, false, b"HTTP/1.1 200 OK\r\n\r\n");
    pcap.0.truncate(pcap.0.len() - 5);
    let (summary, lines) = replay_lines(rules(RULES), &pcap);
    assert_eq!(sids(&lines), [1, 2]);
    assert!(summary.to_string().ends_with("the file is truncated: packet 5 at offset 340 ends before its length"), "{summary}");
}

/// Attacker-supplied captures: every cut of a real capture, and garbage after a valid header
/// and inside valid frames, replay or fail with an error, never a panic.
#[test]
fn truncated_and_garbage_captures_never_panic() {
    let set = rules(RULES);
    let mut pcap = PcapWriter::new();
    let mut c = Conn::open(&mut pcap, CLIENT, SERVER);
    c.send(&mut pcap, true, b"GET /evil/path HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nabcde");
    c.send(&mut pcap, false, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n");
    c.close(&mut pcap);
    let whole = pcap.0.clone();
    for n in 0..whole.len() {
        let _ = replay(&whole[..n], set.clone(), &mut Vec::new());
    }
    let mut rng = Prng::new(13);
    for round in 0..300 {
        let mut file = whole.clone();
        // Flip bytes anywhere past the file header (lengths, headers, payloads).
        for _ in 0..1 + round % 8 {
            let at = 24 + (rng.next_u64() as usize) % (file.len() - 24);
            file[at] = rng.next_u64() as u8;
        }
        let _ = replay(&file[..], set.clone(), &mut Vec::new());
        // Garbage records after a valid header.
        let mut garbage = whole[..24].to_vec();
        garbage.extend(rng.bytes(200 + round * 7));
        let _ = replay(&garbage[..], set.clone(), &mut Vec::new());
        // Garbage frames in valid records.
        let mut frames = PcapWriter::new();
        for _ in 0..10 {
            let mut f = frame(CLIENT, SERVER, rng.next_u64() as u32, rng.next_u64() as u8, &rng.bytes(round % 64));
            let cut = (rng.next_u64() as usize) % (f.len() + 1);
            f.truncate(cut.max(f.len() / 2));
            frames.push(&f);
        }
        let _ = replay(&frames.0[..], set.clone(), &mut Vec::new());
    }
    assert!(replay(&b"\x0a\x0d\x0d\x0a junk"[..], set.clone(), &mut Vec::new()).unwrap_err().to_string().contains("pcapng"));
}

#[test]
fn http2_prior_knowledge_is_followed() {
    let mut pcap = PcapWriter::new();
    let mut c = Conn::open(&mut pcap, CLIENT, SERVER);
    let block = loona_hpack::Encoder::new().encode(vec![(&b":method"[..], &b"GET"[..]), (&b":path"[..], &b"/evil/path"[..]), (&b":scheme"[..], &b"http"[..]), (&b":authority"[..], &b"h2.example"[..])]);
    let mut client = PREFACE.to_vec();
    client.extend([0, 0, 0, 4, 0, 0, 0, 0, 0]);
    let len = block.len() as u32;
    client.extend(&len.to_be_bytes()[1..]);
    client.extend([1, 0x05, 0, 0, 0, 1]);
    client.extend(&block);
    c.send(&mut pcap, true, &client);
    c.close(&mut pcap);
    let (_, lines) = replay_lines(rules(RULES), &pcap);
    assert_eq!(sids(&lines), [1, 2]);
    assert_eq!(of_type(&lines, "alert")[0]["app_proto"], "http2");
    assert_eq!(of_type(&lines, "alert")[0]["http"]["hostname"], "h2.example");
}
