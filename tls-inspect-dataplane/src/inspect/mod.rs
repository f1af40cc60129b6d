//! Inspection of decrypted traffic. An [`Inspector`] sees each direction's plaintext in order
//! and says whether the flow may go on. This layer never names rustls or smoltcp types.

pub mod dlp;
pub mod h2;
pub mod ips;
pub mod rules;

/// Which way plaintext is going.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    ToServer,
    ToClient,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Continue,
    /// Stop the flow; the reason goes to the log.
    #[allow(dead_code, reason = "returned by the IPS inspector (next issue); the tests use it today")]
    Block(String),
}

pub trait Inspector {
    /// The next plaintext bytes of one direction (each direction in order).
    fn inspect(&mut self, direction: Direction, data: &[u8]) -> Verdict;

    /// Rules that fired since the last call (for the alert log).
    fn alerts(&mut self) -> Vec<ips::Hit> {
        Vec::new()
    }

    /// What a client whose request was blocked gets inside its session (an HTTP block page),
    /// if anything.
    fn block_response(&self) -> Option<Vec<u8>> {
        None
    }
}

/// The IPS as an inspector: one flow's Hyperscan state, and the worker's scratch space.
pub struct IpsInspector {
    flow: ips::FlowIps,
    scratch: std::rc::Rc<std::cell::RefCell<hyperscan::Scratch>>,
    reported: usize,
}

impl IpsInspector {
    pub fn new(
        set: std::sync::Arc<ips::Ruleset>,
        scratch: std::rc::Rc<std::cell::RefCell<hyperscan::Scratch>>,
        server_port: u16,
    ) -> Self {
        Self {
            flow: ips::FlowIps::new(set, server_port),
            scratch,
            reported: 0,
        }
    }
}

impl Inspector for IpsInspector {
    fn inspect(&mut self, direction: Direction, data: &[u8]) -> Verdict {
        match self.scratch.try_borrow_mut() {
            Ok(mut s) => self.flow.inspect(direction, data, &mut s),
            // Never reached: one worker thread, no re-entrant scans.
            Err(_) => Verdict::Continue,
        }
    }

    fn alerts(&mut self) -> Vec<ips::Hit> {
        let new = self.flow.hits[self.reported..].to_vec();
        self.reported = self.flow.hits.len();
        new
    }

    fn block_response(&self) -> Option<Vec<u8>> {
        let hit = self.flow.hits.iter().find(|h| h.blocked)?;
        match hit.http.as_ref()?.h2_stream {
            None => Some(ips::block_page(hit.sid, &hit.msg)),
            // Over HTTP/2: a 403 on the request's stream and a GOAWAY, if our frames can follow
            // the server's (otherwise the connection just ends).
            Some(stream) if self.flow.h2_server_at_frame_boundary() => Some(h2::block_response(stream, hit.sid, &hit.msg)),
            Some(_) => None,
        }
    }
}

/// Lets everything through (the IPS replaces it).
#[derive(Default)]
pub struct PassAll;

impl Inspector for PassAll {
    fn inspect(&mut self, _direction: Direction, _data: &[u8]) -> Verdict {
        Verdict::Continue
    }
}
