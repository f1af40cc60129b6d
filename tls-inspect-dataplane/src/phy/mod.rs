//! The device layer: the appliance's two sides, the [`Transmit`] trait the relay writes frames
//! through, and the AF_XDP sockets that carry steered frames ([`xsk`]). Nothing here knows about
//! flows.

pub mod xsk;

/// The appliance's two interfaces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// Towards the hosts (the clients).
    Inside,
    /// Towards the internet (the servers).
    Outside,
}

impl Side {
    /// 0 for inside, 1 for outside: an index into per-side arrays.
    pub fn index(self) -> usize {
        match self {
            Side::Inside => 0,
            Side::Outside => 1,
        }
    }
}

/// Where frames leave. `frame` hands out a buffer for the next frame of `side` (a scratch one
/// when no transmit buffer is free: that frame is then dropped, and TCP retransmits); `commit`
/// queues it.
pub trait Transmit {
    fn frame(&mut self, side: Side, len: usize) -> &mut [u8];
    fn commit(&mut self, side: Side, len: usize);
}
