//! Scope classification: each scope owns one bit; each of the four dimensions (source address,
//! source port, destination address, destination port) maps a packet's value to the bitmap of
//! the scopes that accept it. A SYN matches the scopes whose bit is set in all four bitmaps; the
//! lowest such bit wins. The cost is four lookups and `BITMAP_WORDS` ANDs, whatever the number of
//! scope items.

/// Scopes one appliance can hold at once (bits in a [`ScopeBitmap`]).
pub const MAX_SCOPES: u32 = 1024;
/// 64-bit words in a [`ScopeBitmap`].
pub const BITMAP_WORDS: usize = MAX_SCOPES as usize / 64;

/// One bit per scope slot; slot `n` is bit `n % 64` of word `n / 64`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScopeBitmap {
    pub words: [u64; BITMAP_WORDS],
}

const _: () = assert!(core::mem::size_of::<ScopeBitmap>() == 128);

impl ScopeBitmap {
    pub const EMPTY: Self = Self {
        words: [0; BITMAP_WORDS],
    };

    /// Sets the bit of `slot`; slots at or past [`MAX_SCOPES`] are ignored.
    #[inline(always)]
    pub fn set(&mut self, slot: u32) {
        if slot < MAX_SCOPES {
            self.words[(slot / 64) as usize] |= 1u64 << (slot % 64);
        }
    }

    #[inline(always)]
    pub fn contains(&self, slot: u32) -> bool {
        slot < MAX_SCOPES && self.words[(slot / 64) as usize] & (1u64 << (slot % 64)) != 0
    }

    /// Adds every bit of `other` to `self`.
    #[inline(always)]
    pub fn union_with(&mut self, other: &Self) {
        let mut i = 0;
        while i < BITMAP_WORDS {
            self.words[i] |= other.words[i];
            i += 1;
        }
    }

    #[inline(always)]
    pub fn is_empty(&self) -> bool {
        let mut i = 0;
        while i < BITMAP_WORDS {
            if self.words[i] != 0 {
                return false;
            }
            i += 1;
        }
        true
    }
}

/// The lowest slot whose bit is set in all four bitmaps, if any.
#[inline(always)]
pub fn first_common_bit(
    a: &ScopeBitmap,
    b: &ScopeBitmap,
    c: &ScopeBitmap,
    d: &ScopeBitmap,
) -> Option<u32> {
    let mut i = 0;
    while i < BITMAP_WORDS {
        let w = a.words[i] & b.words[i] & c.words[i] & d.words[i];
        if w != 0 {
            return Some(i as u32 * 64 + trailing_zeros(w));
        }
        i += 1;
    }
    None
}

/// Count of trailing zero bits of a non-zero word, by binary search: the BPF instruction set has
/// no count-trailing-zeros, and LLVM's lowering of `u64::trailing_zeros` may use a lookup table.
#[inline(always)]
fn trailing_zeros(mut w: u64) -> u32 {
    let mut n = 0;
    if w & 0xffff_ffff == 0 {
        n += 32;
        w >>= 32;
    }
    if w & 0xffff == 0 {
        n += 16;
        w >>= 16;
    }
    if w & 0xff == 0 {
        n += 8;
        w >>= 8;
    }
    if w & 0xf == 0 {
        n += 4;
        w >>= 4;
    }
    if w & 0x3 == 0 {
        n += 2;
        w >>= 2;
    }
    if w & 0x1 == 0 {
        n += 1;
    }
    n
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use super::*;

    fn with(slots: &[u32]) -> ScopeBitmap {
        let mut b = ScopeBitmap::EMPTY;
        for s in slots {
            b.set(*s);
        }
        b
    }

    #[test]
    fn trailing_zeros_matches_core() {
        for shift in 0..64 {
            let w = 1u64 << shift;
            assert_eq!(trailing_zeros(w), w.trailing_zeros());
            assert_eq!(trailing_zeros(w | (1 << 63)), w.trailing_zeros());
        }
    }

    #[test]
    fn lowest_common_slot_wins() {
        let a = with(&[3, 70, 900]);
        let b = with(&[70, 900, 3]);
        let c = with(&[900, 70]);
        let d = with(&[1023, 900, 70]);
        assert_eq!(first_common_bit(&a, &b, &c, &d), Some(70));
    }

    #[test]
    fn no_common_slot() {
        let a = with(&[1]);
        let b = with(&[2]);
        assert_eq!(first_common_bit(&a, &b, &a, &b), None);
        let e = ScopeBitmap::EMPTY;
        assert_eq!(first_common_bit(&e, &e, &e, &e), None);
    }

    #[test]
    fn last_slot_and_out_of_range() {
        let mut a = with(&[MAX_SCOPES - 1]);
        a.set(MAX_SCOPES); // ignored
        assert!(a.contains(MAX_SCOPES - 1));
        assert!(!a.contains(MAX_SCOPES));
        assert_eq!(first_common_bit(&a, &a, &a, &a), Some(MAX_SCOPES - 1));
    }

    #[test]
    fn union() {
        let mut a = with(&[1, 64]);
        a.union_with(&with(&[2, 64, 700]));
        assert_eq!(a, with(&[1, 2, 64, 700]));
        assert!(!a.is_empty());
    }
}
