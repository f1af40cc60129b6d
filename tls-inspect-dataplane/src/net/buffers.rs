//! The legs' socket buffers, carved from one region per engine that is reserved once
//! (`mmap` with `MAP_NORESERVE`) and never touched by us: a page is backed by memory only once
//! TCP data has been written to it, so an idle flow costs the pages its handshake and requests
//! touched, not its buffers' full size. (The allocator commits and touches whole blocks: 64 KiB
//! buffers cost 64 KiB each from the first byte.) A released leg's pages go back to the kernel
//! (`MADV_DONTNEED`, one call per leg, never per packet) and read as zeros when reused.
//!
//! A leg keeps its [`Lease`] after its socket in field order, so the socket that borrows the
//! slices is dropped first; the region lives as long as any lease does.
#![allow(unsafe_code, reason = "mmap, madvise and the lease's slices: each use has its SAFETY line")]

use std::sync::{Arc, Mutex};

/// One region of `slots` slots of `rx + tx` bytes.
struct Region {
    base: *mut u8,
    len: usize,
    rx: usize,
    tx: usize,
    /// rx + tx, rounded up to whole pages.
    stride: usize,
    free: Mutex<Free>,
}

struct Free {
    /// Slots never handed out start here.
    fresh: u32,
    released: Vec<u32>,
}

// SAFETY: the region is plain memory; each slot is handed to one lease at a time (the free list
// is behind a mutex), and only that lease's holder touches it.
unsafe impl Send for Region {}
// SAFETY: as above.
unsafe impl Sync for Region {}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: the mapping this region created; no lease is left (each holds an Arc).
        unsafe { libc::munmap(self.base.cast(), self.len) };
    }
}

pub struct BufferPool {
    region: Option<Arc<Region>>,
    slots: u32,
}

/// One leg's receive and send buffers.
pub struct Lease {
    region: Arc<Region>,
    index: u32,
}

impl BufferPool {
    /// Room for `slots` legs of `rx` + `tx` bytes. If the address space cannot be reserved, every
    /// leg falls back to buffers from the allocator.
    pub fn new(slots: usize, rx: usize, tx: usize) -> Self {
        let stride = (rx + tx).div_ceil(4096) * 4096;
        let slots = u32::try_from(slots).unwrap_or(u32::MAX);
        let len = (slots as usize).checked_mul(stride);
        let region = len.filter(|l| *l > 0).and_then(|len| {
            // SAFETY: a new private anonymous mapping; no address hint.
            let base = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                    -1,
                    0,
                )
            };
            (base != libc::MAP_FAILED).then(|| {
                Arc::new(Region { base: base.cast(), len, rx, tx, stride, free: Mutex::new(Free { fresh: 0, released: Vec::new() }) })
            })
        });
        if region.is_none() {
            tracing::warn!(slots, rx, tx, "cannot reserve the socket buffer region; buffers come from the allocator");
        }
        Self { region, slots }
    }

    /// A slot, or None when all are leased (or the region could not be reserved).
    pub fn lease(&self) -> Option<Lease> {
        let region = self.region.as_ref()?;
        let index = {
            let mut free = region.free.lock().ok()?;
            match free.released.pop() {
                Some(i) => i,
                None if free.fresh < self.slots => {
                    free.fresh += 1;
                    free.fresh - 1
                }
                None => return None,
            }
        };
        Some(Lease { region: region.clone(), index })
    }
}

impl Lease {
    fn start(&self) -> *mut u8 {
        // SAFETY: index < slots, so the offset lies inside the mapping.
        unsafe { self.region.base.add(self.index as usize * self.region.stride) }
    }

    /// The receive and send buffers.
    ///
    /// # Safety
    /// The slices must not outlive this lease (the leg drops its socket before its lease), and
    /// this is called once per lease.
    pub unsafe fn buffers(&self) -> (&'static mut [u8], &'static mut [u8]) {
        let start = self.start();
        // SAFETY: two disjoint ranges of this lease's slot, which nobody else holds; mapped
        // read-write and zero-filled (fresh, or released with MADV_DONTNEED).
        unsafe {
            (
                std::slice::from_raw_parts_mut(start, self.region.rx),
                std::slice::from_raw_parts_mut(start.add(self.region.rx), self.region.tx),
            )
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let len = self.region.stride;
        // SAFETY: this lease's slot, inside the mapping; nothing borrows it any more. The pages
        // return to the kernel and read as zeros when the slot is leased again.
        unsafe { libc::madvise(self.start().cast(), len, libc::MADV_DONTNEED) };
        if let Ok(mut free) = self.region.free.lock() {
            free.released.push(self.index);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_disjoint_reused_and_bounded() {
        let pool = BufferPool::new(3, 4096, 8192);
        let a = pool.lease().unwrap();
        let b = pool.lease().unwrap();
        let c = pool.lease().unwrap();
        assert!(pool.lease().is_none(), "three slots only");
        // SAFETY: each lease's buffers are taken once and dropped before the lease.
        let (ra, ta) = unsafe { a.buffers() };
        let (rb, _) = unsafe { b.buffers() };
        assert_eq!((ra.len(), ta.len()), (4096, 8192));
        ra.fill(1);
        ta.fill(2);
        assert!(rb.iter().all(|&x| x == 0), "another lease's writes are not visible");
        let a_start = ra.as_ptr();
        drop(a); // ra and ta are not used after this
        let d = pool.lease().expect("a released slot is reused");
        // SAFETY: as above.
        let (rd, td) = unsafe { d.buffers() };
        assert_eq!(rd.as_ptr(), a_start, "the slot just released");
        assert!(rd.iter().chain(td.iter()).all(|&x| x == 0), "a reused slot reads as zeros");
        let _ = (b, c, d);
    }

    #[test]
    fn an_unreservable_region_falls_back() {
        let pool = BufferPool::new(usize::MAX / 2, 1 << 20, 1 << 20);
        assert!(pool.lease().is_none());
    }
}
