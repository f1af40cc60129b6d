//! The command line's arguments (clap). `run` owns the XDP program and its pinned maps; every
//! other command is a second process that reads or changes them through the pins.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use crate::control::config::XdpModeSetting;
use crate::control::intel::IntelMode;
use crate::control::xdp::OnExit;
use crate::inspect::ips::Level;

#[derive(Parser)]
#[command(name = "tls-inspect", version, about = "Inline TLS inspection appliance")]
pub struct Cli {
    /// Name of the appliance instance: pins live in /sys/fs/bpf/NAME, state in /run/NAME.
    #[arg(long, global = true, env = "TLS_INSPECT_INSTANCE", default_value = "tls-inspect")]
    pub instance: String,
    /// Print JSON instead of text (every command; `stats` with the metrics' names; `run` logs
    /// one JSON object per line).
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Attach to both interfaces, load the configured scopes and run until SIGINT/SIGTERM.
    Run {
        /// Interface towards the hosts.
        #[arg(long)]
        inside: Option<String>,
        /// Interface towards the internet.
        #[arg(long)]
        outside: Option<String>,
        /// Configuration file (TOML); see docs/example-config.toml.
        #[arg(long)]
        config: Option<PathBuf>,
        /// XDP attach mode; generic only for NICs without native XDP.
        #[arg(long, value_enum)]
        xdp_mode: Option<XdpModeSetting>,
        /// Worker threads (default: the config's, one per receive queue).
        #[arg(long)]
        workers: Option<usize>,
        /// Start no workers: matching flows go only to AF_XDP sockets registered by another
        /// process (`debug xsk-recv`), and fail open otherwise. For testing the XDP path.
        #[arg(long, conflicts_with = "workers")]
        no_workers: bool,
        /// Serve Prometheus metrics on this address, e.g. 127.0.0.1:10095.
        #[arg(long)]
        metrics: Option<std::net::SocketAddr>,
        /// What a graceful stop (SIGINT, SIGTERM) leaves: the program attached and bridging,
        /// or nothing.
        #[arg(long, value_enum, default_value = "bridge")]
        on_exit: OnExit,
    },
    /// The configuration file, offline.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// The threat-intelligence list: addresses whose traffic XDP drops (or counts).
    Intel {
        #[command(subcommand)]
        command: IntelCommand,
    },
    /// IPS rules (a Suricata-compatible subset; docs/ips.md).
    Rules {
        #[command(subcommand)]
        command: RulesCommand,
    },
    /// The IPS offline: test rules on captured traffic.
    Ips {
        #[command(subcommand)]
        command: IpsCommand,
    },
    /// The TLS exclusion cache: servers (with their SNI) passed untouched after mTLS or pinning.
    Bypass {
        #[command(subcommand)]
        command: BypassCommand,
    },
    /// Remove the XDP program from both interfaces, with its pins and state (the appliance
    /// must be stopped).
    Detach,
    /// Inspection scopes of the running appliance.
    #[command(subcommand)]
    Scope(ScopeCommand),
    /// Policies of the running appliance.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Counters of the XDP program (globally and per policy and scope) and of the workers, as
    /// the metrics endpoint names them.
    Stats,
    /// Flows the XDP program has decided (steered or bypassed).
    Flows,
    /// The CA that signs the certificates forged for inspected connections.
    Ca {
        /// Where the CA lives (ca.crt, ca.key 0600, chain.crt).
        #[arg(long, global = true, default_value = crate::tls::ca::DEFAULT_DIR)]
        dir: PathBuf,
        #[command(subcommand)]
        command: CaCommand,
    },
    /// Tools for testing the data path.
    #[command(subcommand)]
    Debug(DebugCommand),
    /// Shell completions (bash, zsh, fish, ...) on standard output.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Man pages for every command, written into DIR (what the package ships).
    #[command(hide = true)]
    Manpages { dir: PathBuf },
}

#[derive(Subcommand)]
pub enum ScopeCommand {
    /// Add a scope to a policy; prints its ID and quota.
    Add {
        #[arg(long)]
        policy: u32,
        /// Source IPs or CIDRs, comma-separated.
        #[arg(long)]
        src: String,
        /// Source port ranges start/end, comma-separated (0/65535 for all).
        #[arg(long)]
        sport: String,
        /// Destination IPs or CIDRs, comma-separated (0.0.0.0/0 for all).
        #[arg(long)]
        dst: String,
        /// Destination port ranges start/end, comma-separated.
        #[arg(long)]
        dport: String,
        #[arg(long, default_value = "")]
        description: String,
    },
    /// List scopes with their quotas and counters.
    List,
    /// Delete a scope (existing connections keep their decision).
    Del { id: u32 },
    /// Replace every policy and scope with those of a file, atomically.
    Load { file: PathBuf },
}

#[derive(Subcommand)]
pub enum PolicyCommand {
    /// Create a policy.
    Add {
        id: u32,
        #[arg(long, default_value = "")]
        name: String,
        /// Create it disabled.
        #[arg(long)]
        disabled: bool,
    },
    /// Delete a policy that has no scopes.
    Del { id: u32 },
    /// Enable a policy: new connections matching its scopes are steered.
    Enable { id: u32 },
    /// Disable a policy: new connections are no longer steered; existing ones are untouched.
    Disable { id: u32 },
    List,
}

#[derive(Subcommand)]
pub enum IntelCommand {
    /// Replace the list with a file's (one IP or CIDR per line, # comments), atomically.
    Load {
        file: PathBuf,
        #[arg(long, value_enum, default_value = "block")]
        mode: IntelMode,
    },
    /// The entries with the frames each has matched.
    List,
    /// Stop using the list.
    Clear,
}

#[derive(Subcommand)]
pub enum ConfigCommand {
    /// Everything `run` would refuse in FILE (as Suricata's -T), without running: interfaces,
    /// policies and scopes, CA, trust store and CRLs, key log, IPS rules, threat intelligence.
    Check {
        file: PathBuf,
        /// Interface towards the hosts, if not in the file.
        #[arg(long)]
        inside: Option<String>,
        /// Interface towards the internet, if not in the file.
        #[arg(long)]
        outside: Option<String>,
    },
}

#[derive(Subcommand)]
pub enum RulesCommand {
    /// Validate a rule file: every rule that would not load, with its line and keyword.
    Check { file: PathBuf },
    /// The running rules: sid, message, enabled, action.
    List,
    /// Turn a rule on (for flows that start from now on).
    Enable { sid: u32 },
    /// Turn a rule off (for flows that start from now on) until `rules enable` or `rules reset`.
    Disable { sid: u32 },
    /// Per-rule action: drop (block), alert (never block) or default (follow the mode).
    Action { sid: u32, action: String },
    /// Restore the defaults: every rule of the level enabled, no per-rule action.
    Reset,
    /// Re-read the rule files and swap the databases without dropping flows.
    Reload,
}

#[derive(Subcommand)]
pub enum IpsCommand {
    /// Reassemble the TCP streams of a cleartext pcap, follow HTTP/1.1 and HTTP/2, run the IPS
    /// and write EVE JSON, as `suricata -r` does (no root needed).
    Replay {
        /// A classic libpcap file (Ethernet, raw IPv4, Linux cooked or loopback).
        #[arg(long)]
        pcap: PathBuf,
        /// Rule files (repeatable); default: the config's [ips] rules, else the bundled ones.
        #[arg(long)]
        rules: Vec<PathBuf>,
        /// Configuration file whose [ips] table (rules, mode, level, vars, tuning) applies.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Write EVE lines here instead of standard output.
        #[arg(long)]
        eve: Option<PathBuf>,
        /// Which rules are active (loose, medium, strict), over the config's level.
        #[arg(long, value_parser = level)]
        level: Option<Level>,
    },
}

fn level(s: &str) -> Result<Level, String> {
    match s {
        "loose" => Ok(Level::Loose),
        "medium" => Ok(Level::Medium),
        "strict" => Ok(Level::Strict),
        other => Err(format!("'{other}': loose, medium or strict")),
    }
}

#[derive(Subcommand)]
pub enum BypassCommand {
    /// Entries with their remaining time.
    List,
    /// Remove every entry: the next connections are inspected again.
    Clear,
}

#[derive(Subcommand)]
pub enum CaCommand {
    /// Create a private trial root CA (ECDSA P-256, 10 years).
    Trial,
    /// Install a root or intermediate CA after checking it.
    Import {
        #[arg(long)]
        cert: PathBuf,
        #[arg(long)]
        key: PathBuf,
        /// The certificates above an intermediate (PEM).
        #[arg(long)]
        chain: Option<PathBuf>,
    },
    /// Subject, key type, validity and fingerprint of the installed CA.
    Show,
    /// Write the PEM chain that hosts install as trusted.
    Export {
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Side {
    Inside,
    Outside,
}

#[derive(Subcommand)]
pub enum DebugCommand {
    /// Register an AF_XDP socket for one queue and print the frames steered to it.
    XskRecv {
        #[arg(long)]
        iface: String,
        #[arg(long, value_enum, default_value = "inside")]
        side: Side,
        #[arg(long, default_value_t = 0)]
        queue: u32,
        /// Stop after this many frames.
        #[arg(long, default_value_t = u64::MAX)]
        count: u64,
        /// Stop after this many seconds.
        #[arg(long, default_value_t = 30)]
        timeout: u64,
    },
}
