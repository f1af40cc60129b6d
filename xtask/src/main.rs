//! Developer and operator commands: `cargo xtask setup | build | demo | test | bench | scope ...`.
//!
//! `setup` is idempotent and installs what a fresh Debian 12 machine lacks; `demo`, `test` and
//! `bench` run it first. xtask never reaches into the dataplane: it builds the `tls-inspect`
//! binary and runs it.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

mod demo;
mod fuzz;
mod package;
mod setup;

#[derive(Parser)]
#[command(name = "xtask", about = "tls-inspect developer and operator commands")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install everything a fresh machine lacks (apt packages, rust-src, bpf-linker). Idempotent.
    Setup,
    /// Build the appliance (the XDP object is built and embedded by the dataplane's build.rs).
    Build {
        #[arg(long)]
        release: bool,
    },
    /// Run the appliance on a self-contained demo topology in network namespaces.
    Demo,
    /// Run every test: unit, in-process and the root end-to-end tests in namespaces.
    Test {
        /// Extra arguments for `cargo test` (after `--`), e.g. a test name filter.
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Run the benchmarks in bench/ and print ratios against baselines measured in the same run.
    Bench {
        /// Seconds per scenario instead of the full run.
        #[arg(long)]
        quick: bool,
        /// More arguments for tls-inspect-bench (`--only pps,tls`, `--runs 5`, ...).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run every fuzz target (ClientHello, rules, HTTP/1.1 and HTTP/2 followers, frame parser)
    /// from its committed seed corpus, two at a time; prints executions and findings.
    Fuzz {
        /// Minutes per target.
        #[arg(long, default_value_t = 1.0)]
        minutes: f64,
        /// Only these targets (comma-separated).
        #[arg(long, value_delimiter = ',')]
        target: Vec<String>,
        /// Targets fuzzed at once.
        #[arg(long, default_value_t = 2)]
        jobs: usize,
    },
    /// Build the Debian package (target/package/tls-inspect_VERSION_ARCH.deb) from the release
    /// binary: the unit, the default config, logrotate, man pages, completions.
    Package,
    /// Change the running appliance's scopes (the same as `tls-inspect scope ...`).
    Scope {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Change the running appliance's policies (the same as `tls-inspect policy ...`).
    Policy {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Print the running appliance's counters (the same as `tls-inspect stats`).
    Stats {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Cmd::Setup => setup::setup(),
        Cmd::Build { release } => build(release).map(drop),
        Cmd::Demo => {
            setup::setup()?;
            let bin = build(false)?;
            demo::run(&bin)
        }
        Cmd::Test { args } => {
            setup::setup()?;
            // The end-to-end tests move hundreds of megabytes through the workers: test the
            // optimised binary, as it ships.
            let bin = build(true)?;
            // The package test installs the package of this very binary.
            let deb = package::build(&bin)?;
            test(&bin, &deb, &args)
        }
        Cmd::Bench { quick, args } => {
            setup::setup()?;
            let bin = build(true)?;
            bench(&bin, quick, &args)
        }
        Cmd::Fuzz { minutes, target, jobs } => {
            setup::setup()?;
            setup::cargo_fuzz()?;
            fuzz::run(minutes, &target, jobs)
        }
        Cmd::Package => {
            setup::setup()?;
            let bin = build(true)?;
            package::build(&bin).map(drop)
        }
        Cmd::Scope { args } => forward("scope", &args),
        Cmd::Policy { args } => forward("policy", &args),
        Cmd::Stats { args } => forward("stats", &args),
    }
}

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `cargo` with the environment the build needs (libxdp's build wants clang and llc from LLVM
/// 19, and ~/.cargo/bin for bpf-linker).
pub fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(root());
    c.env("CLANG", "clang-19").env("LLC", "llc-19");
    if let Some(home) = std::env::var_os("HOME") {
        let bin = Path::new(&home).join(".cargo/bin");
        let path = std::env::var_os("PATH").unwrap_or_default();
        let mut paths: Vec<PathBuf> = std::env::split_paths(&path).collect();
        if !paths.contains(&bin) {
            paths.push(bin);
        }
        if let Ok(joined) = std::env::join_paths(paths) {
            c.env("PATH", joined);
        }
    }
    c
}

pub fn status(cmd: &mut Command) -> Result<()> {
    let s = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !s.success() {
        bail!("{cmd:?} failed: {s}");
    }
    Ok(())
}

/// Builds the dataplane; returns the path of the `tls-inspect` binary.
fn build(release: bool) -> Result<PathBuf> {
    let mut c = cargo();
    c.args(["build", "-p", "tls-inspect-dataplane", "-p", "tls-inspect-bench"]);
    if release {
        c.arg("--release");
    }
    status(&mut c)?;
    let bin = root()
        .join("target")
        .join(if release { "release" } else { "debug" })
        .join("tls-inspect");
    Ok(bin)
}

fn test(bin: &Path, deb: &Path, args: &[String]) -> Result<()> {
    let mut c = cargo();
    c.args(["test", "--workspace", "--exclude", "tls-inspect-ebpf", "--no-fail-fast"])
        .env("TLS_INSPECT_BIN", bin)
        .env("TLS_INSPECT_DEB", deb)
        .env("TLS_INSPECT_BENCH_BIN", bin.with_file_name("tls-inspect-bench"));
    if !args.is_empty() {
        c.arg("--").args(args);
    }
    status(&mut c)
}

fn bench(bin: &Path, quick: bool, args: &[String]) -> Result<()> {
    let mut c = Command::new(bin.with_file_name("tls-inspect-bench"));
    c.current_dir(root()).env("TLS_INSPECT_BIN", bin).args(args);
    if quick {
        c.arg("--quick");
    }
    status(&mut c)
}

fn forward(command: &str, args: &[String]) -> Result<()> {
    let bin = build(false)?;
    status(Command::new(bin).arg(command).args(args))
}
