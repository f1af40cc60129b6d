//! In-process tests, no root, on the test bed of [`harness`]: plain TCP relayed here, the
//! inspected (TLS) phase in [`inspected`].

use smoltcp::socket::tcp;
use smoltcp::time::Duration;

use super::counters::Counter;
use super::*;
use harness::{Net, CLIENT, SERVER};
use crate::testutil::pattern;

mod harness;
mod inspected;

#[test]
fn relays_both_ways_with_half_close_and_cleans_up() {
    let mut net = Net::new(EngineConfig::default());
    net.server.socket().listen(443).unwrap();
    net.connect(443);
    assert!(net.run_until(2000, |n| n.client.socket().state() == tcp::State::Established));
    assert_eq!(net.server.socket().state(), tcp::State::Established);

    let up = pattern(300_000, 1);
    let down = pattern(200_000, 7);
    let (mut sent, mut got) = (0, Vec::new());
    // Client -> server, then the client half-closes.
    assert!(net.run_until(20_000, |n| {
        if sent < up.len() {
            sent += n.client.socket().send_slice(&up[sent..]).unwrap_or(0);
            if sent == up.len() {
                n.client.socket().close();
            }
        }
        while n.server.socket().can_recv() {
            n.server.socket().recv(|b| (b.len(), got.extend_from_slice(b))).unwrap();
        }
        got.len() == up.len() && !n.server.socket().may_recv()
    }), "server got {} of {} bytes and the FIN", got.len(), up.len());
    assert!(got == up, "bytes to the server differ");

    // The server still sends after the client's FIN, then closes.
    let (mut sent, mut got) = (0, Vec::new());
    assert!(net.run_until(20_000, |n| {
        if sent < down.len() {
            sent += n.server.socket().send_slice(&down[sent..]).unwrap_or(0);
            if sent == down.len() {
                n.server.socket().close();
            }
        }
        while n.client.socket().can_recv() {
            n.client.socket().recv(|b| (b.len(), got.extend_from_slice(b))).unwrap();
        }
        got.len() == down.len() && !n.client.socket().may_recv()
    }));
    assert!(got == down, "bytes to the client differ");
    assert!(net.run_until(5_000, |n| n.engine.is_empty()), "the flow is removed after both FINs");
    let stats = net.engine.stats();
    assert_eq!((stats.get(Counter::BytesToServer), stats.get(Counter::BytesToClient)), (300_000, 200_000));
    assert_eq!(stats.get(Counter::FlowsTotal), 1);
    let updates: Vec<_> = net.engine.take_updates().collect();
    assert!(matches!(updates.as_slice(), [MapUpdate::Remove(k)] if k.server_port == 443u16.to_be_bytes()));
}

#[test]
fn a_server_that_speaks_first_is_relayed() {
    let mut net = Net::new(EngineConfig::default());
    net.server.socket().listen(25).unwrap();
    net.connect(25);
    assert!(net.run_until(2000, |n| n.server.socket().state() == tcp::State::Established));
    net.server.socket().send_slice(b"220 mail.test ESMTP\r\n").unwrap();
    let mut got = Vec::new();
    assert!(net.run_until(2000, |n| {
        while n.client.socket().can_recv() {
            n.client.socket().recv(|b| (b.len(), got.extend_from_slice(b))).unwrap();
        }
        got.ends_with(b"\r\n")
    }), "the banner reaches a client that has sent nothing");
    assert_eq!(got, b"220 mail.test ESMTP\r\n");
}

/// Moves 20 kB each way; returns the largest TCP payload the engine sent the client.
fn transfer_with_mss(mss: (Option<u16>, Option<u16>)) -> usize {
    let mut net = Net::new(EngineConfig::default());
    net.mss = mss;
    net.server.socket().listen(443).unwrap();
    net.connect(443);
    let up_ok = net.run_until(2000, |n| n.client.socket().state() == tcp::State::Established
        && n.server.socket().state() == tcp::State::Established);
    assert!(up_ok, "{mss:?}: client {:?} server {:?} stats {:?}", net.client.socket().state(), net.server.socket().state(), net.engine.stats());
    let (up, down) = (pattern(20_000, 1), pattern(20_000, 2));
    let (mut sent_up, mut sent_down, mut got_up, mut got_down) = (0, 0, Vec::new(), Vec::new());
    assert!(net.run_until(20_000, |n| {
        sent_up += n.client.socket().send_slice(&up[sent_up..]).unwrap_or(0);
        sent_down += n.server.socket().send_slice(&down[sent_down..]).unwrap_or(0);
        while n.server.socket().can_recv() {
            n.server.socket().recv(|b| (b.len(), got_up.extend_from_slice(b))).unwrap();
        }
        while n.client.socket().can_recv() {
            n.client.socket().recv(|b| (b.len(), got_down.extend_from_slice(b))).unwrap();
        }
        got_up.len() == up.len() && got_down.len() == down.len()
    }), "{mss:?}: moved {} of {} up, {} of {} down", got_up.len(), up.len(), got_down.len(), down.len());
    assert!(got_up == up && got_down == down);
    net.largest_to_client
}

#[test]
fn an_absurd_mss_from_either_peer_still_moves_data_in_sane_segments() {
    // Both peers announce an MSS of 1: the data still moves (smoltcp floors a peer's MSS at 48).
    assert!(transfer_with_mss((Some(1), Some(1))) >= 48);
    // The server announces 1: the client leg's segments follow RFC 9293's 536, not 1 byte each.
    assert_eq!(transfer_with_mss((None, Some(1))), 536);
    // A sane server MSS is kept (the device MTU bounds it: 1460 here).
    assert_eq!(transfer_with_mss((None, Some(1000))), 1000);
}

#[test]
fn a_closed_port_looks_closed() {
    let mut net = Net::new(EngineConfig::default());
    net.connect(444); // nothing listens
    let mut saw_syn_sent = false;
    assert!(net.run_until(3000, |n| {
        saw_syn_sent |= n.client.socket().state() == tcp::State::SynSent;
        saw_syn_sent && n.client.socket().state() == tcp::State::Closed
    }), "the client gets a RST, not a timeout");
    assert_eq!(net.engine.stats().get(Counter::ConnectRefused), 1);
    assert!(net.engine.is_empty());
}

#[test]
fn a_silent_server_leaves_the_client_to_its_own_timeout() {
    let config = EngineConfig {
        connect_timeout: Duration::from_secs(2),
        ..EngineConfig::default()
    };
    let mut net = Net::new(config);
    net.server_silent = true;
    net.server.socket().listen(443).unwrap();
    net.connect(443);
    net.run_until(4000, |_| false);
    assert!(net.engine.stats().get(Counter::FlowsTotal) >= 1, "the SYN reached the engine");
    // Upstream first: the client never got a SYN-ACK, nor a RST.
    assert_eq!(net.to_client, 0, "nothing may reach the client before the server accepts");
    assert_eq!(net.client.socket().state(), tcp::State::SynSent);
    // The flow was dropped after 2 s; a later retransmitted SYN starts afresh.
    assert!(net.engine.stats().get(Counter::ConnectTimeouts) >= 1);
}

#[test]
fn a_server_reset_reaches_the_client() {
    let mut net = Net::new(EngineConfig::default());
    net.server.socket().listen(443).unwrap();
    net.connect(443);
    assert!(net.run_until(2000, |n| n.client.socket().state() == tcp::State::Established
        && n.server.socket().state() == tcp::State::Established));
    net.server.socket().abort();
    assert!(net.run_until(2000, |n| n.client.socket().state() == tcp::State::Closed));
    assert_eq!(net.engine.stats().get(Counter::Resets), 1);
    assert!(net.run_until(1000, |n| n.engine.is_empty()));
}

#[test]
fn a_server_reset_after_its_answer_delivers_the_answer_first() {
    // A server that answers early and resets (nginx on an upload it will not read): the client
    // gets every byte of the answer, then the reset.
    let mut net = Net::new(EngineConfig::default());
    net.server.socket().listen(443).unwrap();
    net.connect(443);
    assert!(net.run_until(2000, |n| n.client.socket().state() == tcp::State::Established
        && n.server.socket().state() == tcp::State::Established));
    net.client.socket().send_slice(b"POST / HTTP/1.1\r\n").unwrap();
    assert!(net.run_until(2000, |n| n.server.socket().can_recv()));
    // More than the client's receive buffer (256 KiB) holds while it does not read: the rest
    // waits in the appliance when the server resets.
    let answer = pattern(300_000, 9);
    let mut sent = 0;
    let mut got = Vec::new();
    assert!(net.run_until(5000, |n| {
        if sent < answer.len() {
            sent += n.server.socket().send_slice(&answer[sent..]).unwrap_or(0);
        }
        sent == answer.len() && n.server.socket().send_queue() == 0
    }), "the appliance took the whole answer");
    net.server.socket().abort();
    assert!(net.run_until(5000, |n| {
        while n.client.socket().can_recv() {
            n.client.socket().recv(|b| (b.len(), got.extend_from_slice(b))).unwrap();
        }
        n.client.socket().state() == tcp::State::Closed
    }), "then the reset");
    assert_eq!(got.len(), answer.len(), "every byte of the answer before the reset");
    assert!(got == answer);
    assert!(net.run_until(1000, |n| n.engine.is_empty()));
}

#[test]
fn a_client_reset_reaches_the_server() {
    let mut net = Net::new(EngineConfig::default());
    net.server.socket().listen(443).unwrap();
    net.connect(443);
    assert!(net.run_until(2000, |n| n.server.socket().state() == tcp::State::Established
        && n.client.socket().state() == tcp::State::Established));
    net.client.socket().send_slice(b"hello").unwrap();
    assert!(net.run_until(2000, |n| n.server.socket().can_recv()));
    net.client.socket().abort();
    assert!(net.run_until(2000, |n| n.server.socket().state() == tcp::State::Closed));
    assert!(net.run_until(1000, |n| n.engine.is_empty()));
}

#[test]
fn a_full_table_fails_open() {
    let config = EngineConfig {
        max_flows: 0,
        ..EngineConfig::default()
    };
    let mut net = Net::new(config);
    net.server.socket().listen(443).unwrap();
    net.connect(443);
    net.run_until(50, |_| false);
    let stats = net.engine.stats();
    assert!(stats.get(Counter::TableFull) >= 1);
    assert!(net.engine.take_updates().any(|u| matches!(u, MapUpdate::Bypass(..))));
}

#[test]
fn a_full_table_can_refuse() {
    let config = EngineConfig {
        max_flows: 0,
        when_full: WhenFull::Refuse,
        ..EngineConfig::default()
    };
    let mut net = Net::new(config);
    net.server.socket().listen(443).unwrap();
    net.connect(443);
    let mut saw_syn_sent = false;
    assert!(net.run_until(2000, |n| {
        saw_syn_sent |= n.client.socket().state() == tcp::State::SynSent;
        saw_syn_sent && n.client.socket().state() == tcp::State::Closed
    }), "the client's SYN is answered with a RST");
    assert!(net.engine.stats().get(Counter::TableFull) >= 1);
    assert_eq!(net.server.socket().state(), tcp::State::Listen, "nothing reached the server");
}

#[test]
fn an_idle_flow_is_reset_on_both_sides() {
    let config = EngineConfig {
        idle_timeout: Duration::from_secs(3),
        ..EngineConfig::default()
    };
    let mut net = Net::new(config);
    net.server.socket().listen(443).unwrap();
    net.connect(443);
    assert!(net.run_until(2000, |n| n.server.socket().state() == tcp::State::Established
        && n.client.socket().state() == tcp::State::Established));
    assert!(net.run_until(5000, |n| n.client.socket().state() == tcp::State::Closed
        && n.server.socket().state() == tcp::State::Closed), "both ends get a RST");
    assert_eq!(net.engine.stats().get(Counter::IdleTimeouts), 1);
    assert!(net.engine.is_empty());
}

#[test]
fn an_idle_flow_is_logged_as_timed_out_and_a_closed_one_as_shut_down() {
    let (sender, log) = crossbeam_channel::unbounded();
    let config = EngineConfig { idle_timeout: Duration::from_secs(3), ..EngineConfig::default() };
    let mut net = Net::with_hooks(config, Hooks { log: Some(sender), ..Hooks::default() });
    net.server.socket().listen(443).unwrap();
    net.connect(443);
    assert!(net.run_until(2000, |n| n.client.socket().state() == tcp::State::Established));
    assert!(net.run_until(5000, |n| n.engine.is_empty()));
    let flows: Vec<FlowLog> = log.try_iter().filter_map(|r| if let Record::Flow(f) = r { Some(*f) } else { None }).collect();
    assert_eq!(flows.len(), 1);
    let v = flows[0].flow_event(false);
    assert_eq!((v["flow"]["state"].as_str(), v["flow"]["reason"].as_str()), (Some("established"), Some("timeout")), "{v}");
    // The SYN and the handshake's ACK from the client, the SYN-ACK from the server.
    assert!(flows[0].pkts_toserver >= 2 && flows[0].pkts_toclient >= 1, "{v}");
    assert_eq!(v["flow"]["pkts_toserver"], flows[0].pkts_toserver);
    assert_eq!(FlowLog::default().flow_event(false)["flow"]["reason"], "shutdown");
}

#[test]
fn a_quiet_connection_outlives_the_connect_timeout() {
    // Regression: the connect timeout stayed on the server leg's socket, so a connection whose
    // server had been silent for that long was reset (idle keep-alive connections died at 75 s).
    let config = EngineConfig {
        connect_timeout: Duration::from_secs(2),
        ..EngineConfig::default()
    };
    let mut net = Net::new(config);
    net.server.socket().listen(443).unwrap();
    net.connect(443);
    assert!(net.run_until(2000, |n| n.server.socket().state() == tcp::State::Established
        && n.client.socket().state() == tcp::State::Established));
    net.server.socket().send_slice(b"banner").unwrap();
    let mut got = [0u8; 16];
    assert!(net.run_until(1000, |n| n.client.socket().can_recv()));
    assert_eq!(net.client.socket().recv_slice(&mut got).unwrap(), 6);
    // Ten times the connect timeout with nothing said either way.
    assert!(!net.run_until(20_000, |n| n.client.socket().state() != tcp::State::Established
        || n.server.socket().state() != tcp::State::Established), "the flow was torn down while idle");
    assert_eq!(net.engine.stats().get(Counter::Resets), 0);
    net.client.socket().send_slice(b"still here").unwrap();
    assert!(net.run_until(1000, |n| n.server.socket().can_recv()), "data after the quiet period arrives");
    assert_eq!(net.server.socket().recv_slice(&mut got).unwrap(), 10);
}

#[test]
fn owner_is_the_same_for_both_directions_and_spreads() {
    let mut counts = [0usize; 4];
    for port in 0..4000u16 {
        let key = FlowKey {
            client_addr: CLIENT,
            server_addr: SERVER,
            client_port: (10_000 + port).to_be_bytes(),
            server_port: 443u16.to_be_bytes(),
        };
        counts[owner(&key, 4)] += 1;
    }
    assert!(counts.iter().all(|c| *c > 800), "{counts:?}");
    // flow_of maps both directions to the same key.
    let syn = [
        0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1, 0x08, 0x00, 0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0,
        198, 18, 0, 1, 198, 18, 0, 2, 0x9c, 0x40, 0x01, 0xbb, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff,
        0xff, 0, 0, 0, 0,
    ];
    let mut back = syn;
    back[26..30].copy_from_slice(&SERVER);
    back[30..34].copy_from_slice(&CLIENT);
    back[34..36].copy_from_slice(&443u16.to_be_bytes());
    back[36..38].copy_from_slice(&40000u16.to_be_bytes());
    let a = flow_of(Side::Inside, &syn).unwrap().0;
    let b = flow_of(Side::Outside, &back).unwrap().0;
    assert_eq!(a, b);
}
