//! `cargo xtask setup`: installs what a fresh Debian 12 machine of this kind lacks, and nothing
//! it already has. Safe to run again and again.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::{root, status};

/// Debian packages the build, the tests, the demo and the benchmarks use.
const PACKAGES: &[&str] = &[
    // xsk-rs builds libxdp and libbpf from source
    "clang-19",
    "llvm-19",
    "libclang-19-dev",
    "m4",
    "make",
    "pkg-config",
    "libelf-dev",
    "zlib1g-dev",
    "libpcap-dev",
    "bpftool",
    // the test bed and its real clients and servers
    "iproute2",
    "ethtool",
    "util-linux",
    "iputils-ping",
    "nginx-light",
    "libhyperscan-dev",
    "procps",
    "curl",
    "openssl",
    "python3",
    "iperf3",
    // the browsers people use, and certutil for the CA in their NSS databases
    "chromium",
    "firefox-esr",
    "libnss3-tools",
    // what operators drive it with: logrotate with the shipped recipe, tshark reading a
    // capture with the key log
    "logrotate",
    "tshark",
    // promtool, which lints the metrics endpoint's output (the server it comes with is not
    // started here: no systemd)
    "prometheus",
    // the benchmarks: their plots, the comparison systems (Squid with ssl-bump, mitmproxy in a
    // virtualenv, see MITMPROXY) and the nftables redirect that puts both in the path
    "fonts-dejavu-core",
    "python3-venv",
    "squid-openssl",
    "nftables",
    // a real SYN flood against a scope (tests and the flood benchmark)
    "hping3",
];

/// mitmproxy for the benchmarks, from PyPI, in `bench/.venv` (where `tls-inspect-bench` looks).
const MITMPROXY: &str = "mitmproxy==11.0.2";

pub fn setup() -> Result<()> {
    apt_packages()?;
    rust_src()?;
    bpf_linker()?;
    mitmproxy()?;
    Ok(())
}

fn installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        .unwrap_or(false)
}

fn apt_packages() -> Result<()> {
    let missing: Vec<&str> = PACKAGES.iter().copied().filter(|p| !installed(p)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("setup: installing {}", missing.join(" "));
    status(Command::new("apt-get").args(["update", "-q"]))?;
    status(
        Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

/// The bench's mitmproxy virtualenv; made again when it is missing, broken or another version.
fn mitmproxy() -> Result<()> {
    let venv = root().join("bench/.venv");
    let mitmdump = venv.join("bin/mitmdump");
    let wanted = MITMPROXY.rsplit('=').next().unwrap_or_default();
    let has = Command::new(&mitmdump)
        .arg("--version")
        .output()
        .map(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).contains(&format!("Mitmproxy: {wanted}")))
        .unwrap_or(false);
    if has {
        return Ok(());
    }
    eprintln!("setup: installing {MITMPROXY} into {}", venv.display());
    let _ = std::fs::remove_dir_all(&venv);
    status(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
    status(Command::new(venv.join("bin/pip")).args(["install", "-q", MITMPROXY]))?;
    status(Command::new(&mitmdump).arg("--version").stdout(std::process::Stdio::null()))
}

/// cargo-fuzz, for `cargo xtask fuzz` only (the tests replay the corpora without it).
pub fn cargo_fuzz() -> Result<()> {
    let has = Command::new("cargo").args(["fuzz", "--version"]).output().map(|o| o.status.success()).unwrap_or(false);
    if has {
        return Ok(());
    }
    eprintln!("setup: installing cargo-fuzz");
    status(Command::new("cargo").args(["install", "cargo-fuzz", "--locked"]))
}

fn rust_src() -> Result<()> {
    let out = Command::new("rustup")
        .args(["component", "list", "--toolchain", "nightly", "--installed"])
        .output()
        .context("running rustup (is rustup installed?)")?;
    if String::from_utf8_lossy(&out.stdout).lines().any(|l| l.starts_with("rust-src")) {
        return Ok(());
    }
    eprintln!("setup: adding rust-src to the nightly toolchain");
    status(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))
}

/// bpf-linker, built against the nightly toolchain's own libLLVM so the two always agree.
fn bpf_linker() -> Result<()> {
    let home = std::env::var("HOME").context("HOME is not set")?;
    let linker = Path::new(&home).join(".cargo/bin/bpf-linker");
    // bpf-linker links nightly's libLLVM dynamically; `rustup run nightly` puts it on the path,
    // as it does when aya-build runs the nightly cargo.
    let works = || {
        Command::new("rustup")
            .args(["run", "nightly", "bpf-linker", "--version"])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    };
    if linker.exists() && works() {
        return Ok(());
    }
    let out = Command::new("rustc").args(["+nightly", "-vV"]).output().context("rustc +nightly")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let major = text
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .and_then(|v| v.split('.').next())
        .context("rustc +nightly -vV reports no LLVM version")?
        .to_string();
    let out = Command::new("rustc").args(["+nightly", "--print", "sysroot"]).output()?;
    let sysroot = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let lib = Path::new(&sysroot).join("lib");
    let llvm = std::fs::read_dir(&lib)
        .with_context(|| format!("reading {}", lib.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("libLLVM.so.")))
        .with_context(|| format!("no libLLVM.so.* in {}", lib.display()))?;
    let prefix = root().join("target/llvm-prefix");
    let prefix_lib = prefix.join("lib");
    std::fs::create_dir_all(&prefix_lib)?;
    let link = prefix_lib.join("libLLVM.so");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&llvm, &link)?;
    eprintln!("setup: building bpf-linker against {} (LLVM {major})", llvm.display());
    let s = Command::new("cargo")
        .args(["+nightly", "install", "bpf-linker", "--locked", "--no-default-features", "--features"])
        .arg(format!("llvm-{major}"))
        .env("LLVM_PREFIX", &prefix)
        .status()?;
    if !s.success() || !works() {
        bail!("installing bpf-linker failed");
    }
    Ok(())
}
