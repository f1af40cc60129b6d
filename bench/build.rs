//! Builds the benchmark-only XDP programs (`tls-inspect-bench-xdp`, in `tls-inspect-ebpf`) into
//! OUT_DIR, where `xdp.rs` embeds them; the appliance's own object never carries them.
fn main() -> anyhow::Result<()> {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../tls-inspect-ebpf");
    println!("cargo:rerun-if-changed=../tls-inspect-common/src");
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "tls-inspect-ebpf",
            root_dir: root,
            ..Default::default()
        }],
        aya_build::Toolchain::Nightly,
    )
}
