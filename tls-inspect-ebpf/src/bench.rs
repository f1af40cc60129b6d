//! XDP programs of the benchmarks only (`tls-inspect-bench`): the baseline a bridge is measured
//! against and the counting sink at the far end of a packet-rate run. A separate object from the
//! appliance's (`tls-inspect-xdp`), which carries only what `tls-inspect run` attaches.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::xdp_action::XDP_DROP,
    macros::{map, xdp},
    maps::{DevMapHash, PerCpuArray},
    programs::XdpContext,
};

/// ingress ifindex -> the other interface.
#[map(name = "BENCH_PEERS")]
static BENCH_PEERS: DevMapHash = DevMapHash::with_max_entries(8, 0);

/// The least an XDP bridge can do: one devmap redirect to the other interface and nothing else.
#[xdp]
pub fn bench_redirect(ctx: XdpContext) -> u32 {
    BENCH_PEERS.redirect(ctx.ingress_ifindex() as u32, 0).unwrap_or(XDP_DROP)
}

#[map(name = "BENCH_SINK")]
static BENCH_SINK: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Counts and drops every frame.
#[xdp]
pub fn bench_sink(_ctx: XdpContext) -> u32 {
    if let Some(c) = BENCH_SINK.get_ptr_mut(0) {
        // SAFETY: this CPU's own slot of a per-CPU array.
        unsafe { *c += 1 };
    }
    XDP_DROP
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
