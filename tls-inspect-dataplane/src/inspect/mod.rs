//! Inspection of decrypted traffic. An [`Inspector`] sees each direction's plaintext in order
//! and says whether the flow may go on. This layer never names rustls or smoltcp types.

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

pub trait Inspector: Send {
    /// The next plaintext bytes of one direction (each direction in order).
    fn inspect(&mut self, direction: Direction, data: &[u8]) -> Verdict;
}

/// Lets everything through (the IPS replaces it).
#[derive(Default)]
pub struct PassAll;

impl Inspector for PassAll {
    fn inspect(&mut self, _direction: Direction, _data: &[u8]) -> Verdict {
        Verdict::Continue
    }
}
