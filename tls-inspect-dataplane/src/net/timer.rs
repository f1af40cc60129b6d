//! A hashed timer wheel: O(1) to arm, O(expired) to fire, whatever the number of flows.
//!
//! Entries are never cancelled: the owner keeps the deadline it wants, and ignores a firing that
//! no longer matches it (lazy deletion).

/// Milliseconds since the worker started (smoltcp's clock).
pub type Millis = i64;

/// The first millisecond tick at or after a deadline given in microseconds: what a deadline is
/// armed at. Armed at the floor, a deadline 0.4 ms into a tick fires when the clock reads 0.1
/// ms into it, finds its flow not yet due, and is gone: the flow's next timer (a lost segment's
/// retransmission) waits for the next packet, which may never come.
pub fn ceil_millis(micros: i64) -> Millis {
    micros.div_euclid(1000) + Millis::from(micros.rem_euclid(1000) != 0)
}

pub struct TimerWheel {
    slots: Vec<Vec<(Millis, usize)>>,
    /// The next tick to examine.
    cursor: Millis,
    mask: usize,
}

impl TimerWheel {
    /// `slots` is rounded up to a power of two; one tick is one millisecond.
    pub fn new(slots: usize, now: Millis) -> Self {
        let n = slots.next_power_of_two().max(2);
        Self {
            slots: (0..n).map(|_| Vec::new()).collect(),
            cursor: now,
            mask: n - 1,
        }
    }

    /// Arms a timer for `id` at `deadline` (a deadline in the past fires at the next expiry).
    pub fn arm(&mut self, id: usize, deadline: Millis) {
        let at = deadline.max(self.cursor);
        self.slots[(at as usize) & self.mask].push((at, id));
    }

    /// Moves the wheel to `now` and appends every id whose deadline has passed to `out`.
    pub fn expire(&mut self, now: Millis, out: &mut Vec<usize>) {
        if now < self.cursor {
            return;
        }
        // After a long sleep, one pass over every slot is enough.
        let span = (now - self.cursor + 1).min(self.slots.len() as Millis);
        for i in 0..span {
            let slot = &mut self.slots[((self.cursor + i) as usize) & self.mask];
            slot.retain(|&(at, id)| {
                if at <= now {
                    out.push(id);
                    false
                } else {
                    true
                }
            });
        }
        self.cursor = now + 1;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use super::*;

    #[test]
    fn a_deadline_inside_a_tick_fires_at_the_next_one() {
        assert_eq!((ceil_millis(5_000), ceil_millis(5_001), ceil_millis(5_999), ceil_millis(0)), (5, 6, 6, 0));
        // Armed for 1234.4 ms: the wheel at 1234.1 ms (tick 1234) must not fire it.
        let mut w = TimerWheel::new(4096, 1000);
        w.arm(7, ceil_millis(1_234_400));
        let mut out = Vec::new();
        w.expire(1234, &mut out);
        assert!(out.is_empty());
        w.expire(1235, &mut out);
        assert_eq!(out, vec![7]);
    }

    #[test]
    fn fires_in_time_and_only_once() {
        let mut w = TimerWheel::new(8, 0);
        w.arm(1, 5);
        w.arm(2, 3);
        w.arm(3, 100); // beyond one rotation
        let mut out = Vec::new();
        w.expire(2, &mut out);
        assert!(out.is_empty());
        w.expire(4, &mut out);
        assert_eq!(out, vec![2]);
        out.clear();
        w.expire(50, &mut out);
        assert_eq!(out, vec![1]);
        out.clear();
        w.expire(99, &mut out);
        assert!(out.is_empty());
        w.expire(1000, &mut out);
        assert_eq!(out, vec![3]);
        out.clear();
        w.expire(5000, &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn past_deadlines_fire_next() {
        let mut w = TimerWheel::new(16, 10);
        w.arm(7, 2);
        let mut out = Vec::new();
        w.expire(10, &mut out);
        assert_eq!(out, vec![7]);
    }
}
