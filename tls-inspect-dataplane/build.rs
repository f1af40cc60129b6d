//! Builds the XDP object from `tls-inspect-ebpf` (nightly, bpf-linker) into OUT_DIR, where
//! `control::loader` embeds it. `cargo xtask setup` installs what this needs.
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
