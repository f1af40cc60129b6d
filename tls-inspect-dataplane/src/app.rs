//! The `tls-inspect` command line: its arguments and their dispatch. `run` owns the XDP program
//! and its pinned maps; every other command is a second process that reads or changes them
//! through the pins.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::control::config::XdpModeSetting;
use crate::control::maps::Paths;
use crate::{cli, control, inspect, phy, tls};

#[derive(Parser)]
#[command(name = "tls-inspect", version, about = "Inline TLS inspection appliance")]
struct Cli {
    /// Name of the appliance instance: pins live in /sys/fs/bpf/NAME, state in /run/NAME.
    #[arg(long, global = true, env = "TLS_INSPECT_INSTANCE", default_value = "tls-inspect")]
    instance: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
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
        /// Serve Prometheus metrics on this address, e.g. 127.0.0.1:9100.
        #[arg(long)]
        metrics: Option<std::net::SocketAddr>,
        /// What a graceful stop (SIGINT, SIGTERM) leaves: the program attached and bridging,
        /// or nothing.
        #[arg(long, value_enum, default_value = "bridge")]
        on_exit: control::loader::OnExit,
    },
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
    /// Counters of the XDP program, globally and per policy and scope.
    Stats(JsonFlag),
    /// Flows the XDP program has decided (steered or bypassed).
    Flows(JsonFlag),
    /// The CA that signs the certificates forged for inspected connections.
    Ca {
        /// Where the CA lives (ca.crt, ca.key 0600, chain.crt).
        #[arg(long, global = true, default_value = tls::ca::DEFAULT_DIR)]
        dir: PathBuf,
        #[command(subcommand)]
        command: CaCommand,
    },
    /// Tools for testing the data path.
    #[command(subcommand)]
    Debug(DebugCommand),
}

#[derive(Args)]
struct JsonFlag {
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum ScopeCommand {
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
    List(JsonFlag),
    /// Delete a scope (existing connections keep their decision).
    Del { id: u32 },
    /// Replace every policy and scope with those of a file, atomically.
    Load { file: PathBuf },
}

#[derive(Subcommand)]
enum PolicyCommand {
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
    List(JsonFlag),
}

#[derive(Subcommand)]
enum IntelCommand {
    /// Replace the list with a file's (one IP or CIDR per line, # comments), atomically.
    Load {
        file: PathBuf,
        #[arg(long, value_enum, default_value = "block")]
        mode: control::intel::IntelMode,
    },
    /// The entries with the frames each has matched.
    List(JsonFlag),
    /// Stop using the list.
    Clear,
}

#[derive(Subcommand)]
enum RulesCommand {
    /// Validate a rule file: every rule that would not load, with its line and keyword.
    Check {
        file: PathBuf,
        /// Print the parsed rules as JSON.
        #[arg(long)]
        json: bool,
    },
    /// The running rules: sid, message, enabled, action.
    List(JsonFlag),
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
enum BypassCommand {
    /// Entries with their remaining time.
    List(JsonFlag),
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
enum Side {
    Inside,
    Outside,
}

#[derive(Subcommand)]
enum DebugCommand {
    /// Scan throughput of the IPS engine on this core: the bundled rules, or N generated ones.
    IpsBench {
        /// Generated rules instead of the bundled set.
        #[arg(long)]
        generated: Option<usize>,
        /// Megabytes of synthetic HTTP traffic to scan.
        #[arg(long, default_value_t = 256)]
        megabytes: usize,
    },
    /// Benchmark baseline: attach a bare devmap redirect between two interfaces until stopped.
    BenchRedirect {
        #[arg(long)]
        a: String,
        #[arg(long)]
        b: String,
        #[arg(long, value_enum, default_value = "native")]
        xdp_mode: XdpModeSetting,
    },
    /// Benchmark receiver: count and drop every frame arriving on DEV until stopped.
    BenchSink {
        #[arg(long)]
        dev: String,
        #[arg(long, value_enum, default_value = "native")]
        xdp_mode: XdpModeSetting,
    },
    /// ns per frame of the running appliance's XDP program (or of the bare redirect) through
    /// BPF_PROG_TEST_RUN, on a mix of frames arriving on INSIDE. Run it in the appliance's
    /// network namespace.
    ProgRun {
        /// Measure the bare devmap redirect instead of the appliance's program.
        #[arg(long)]
        bare: bool,
        #[arg(long, default_value = "inside")]
        inside: String,
        #[arg(long, default_value = "outside")]
        outside: String,
        #[arg(long, default_value_t = 1_000_000)]
        repeat: u32,
        /// New flows measured one SYN each.
        #[arg(long, default_value_t = 2_000)]
        new_flows: u32,
        /// Source port of the first new flow (the next ones count up).
        #[arg(long, default_value_t = 20_000)]
        first_port: u16,
        /// A flow the scopes match: client, server, server port.
        #[arg(long, default_value = "198.18.0.1")]
        client: String,
        #[arg(long, default_value = "198.18.0.2")]
        server: String,
        #[arg(long, default_value_t = 443)]
        port: u16,
        #[arg(long)]
        json: bool,
    },
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

/// Parses the command line, runs the command, and says what went wrong if it did.
pub fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TLS_INSPECT_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match dispatch(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tls-inspect: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn rules_request(paths: &Paths, line: &str) -> anyhow::Result<()> {
    control::loader::require_root()?;
    let v = control::socket::request(paths, line)?;
    println!("{v}");
    Ok(())
}

fn dispatch(cli: Cli) -> anyhow::Result<()> {
    let paths = Paths::new(&cli.instance)?;
    match cli.command {
        Command::Run {
            inside,
            outside,
            config,
            xdp_mode,
            workers,
            no_workers,
            metrics,
            on_exit,
        } => control::loader::run(control::loader::RunOptions {
            paths,
            config,
            inside,
            outside,
            xdp_mode,
            workers,
            no_workers,
            metrics,
            on_exit,
        }),
        Command::Detach => {
            control::loader::require_root()?;
            if control::state::Lock::daemon_is_running(&paths)? {
                anyhow::bail!("`tls-inspect run` is active for instance '{}': stop it first", paths.instance);
            }
            control::loader::detach(&paths)?;
            println!("detached instance {}", paths.instance);
            Ok(())
        }
        Command::Scope(c) => {
            control::loader::require_root()?;
            match c {
                ScopeCommand::Add {
                    policy,
                    src,
                    sport,
                    dst,
                    dport,
                    description,
                } => cli::scope_add(&paths, policy, &src, &sport, &dst, &dport, &description),
                ScopeCommand::List(f) => cli::scope_list(&paths, f.json),
                ScopeCommand::Del { id } => cli::scope_del(&paths, id),
                ScopeCommand::Load { file } => cli::scope_load(&paths, &file),
            }
        }
        Command::Policy(c) => {
            control::loader::require_root()?;
            match c {
                PolicyCommand::Add { id, name, disabled } => cli::policy_add(&paths, id, &name, !disabled),
                PolicyCommand::Del { id } => cli::policy_del(&paths, id),
                PolicyCommand::Enable { id } => cli::policy_enable(&paths, id, true),
                PolicyCommand::Disable { id } => cli::policy_enable(&paths, id, false),
                PolicyCommand::List(f) => cli::policy_list(&paths, f.json),
            }
        }
        Command::Stats(f) => {
            control::loader::require_root()?;
            cli::stats(&paths, f.json)
        }
        Command::Flows(f) => {
            control::loader::require_root()?;
            cli::flows(&paths, f.json)
        }
        Command::Ca { dir, command } => cli::ca(&dir, command),
        Command::Rules { command: RulesCommand::List(f) } => {
            control::loader::require_root()?;
            let v = control::socket::request(&paths, "rules list")?;
            if f.json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!("{:>8} {:>4} {:>7} {:>6}  MSG", "SID", "REV", "ENABLED", "ACTION");
                for r in v["rules"].as_array().into_iter().flatten() {
                    println!("{:>8} {:>4} {:>7} {:>6}  {}", r["sid"], r["rev"], if r["enabled"] == true { "yes" } else { "no" }, r["action"].as_str().unwrap_or(""), r["msg"].as_str().unwrap_or(""));
                }
            }
            Ok(())
        }
        Command::Rules { command: RulesCommand::Enable { sid } } => rules_request(&paths, &format!("rules enable {sid}")),
        Command::Rules { command: RulesCommand::Disable { sid } } => rules_request(&paths, &format!("rules disable {sid}")),
        Command::Rules { command: RulesCommand::Action { sid, action } } => rules_request(&paths, &format!("rules action {sid} {action}")),
        Command::Rules { command: RulesCommand::Reset } => rules_request(&paths, "rules reset"),
        Command::Rules { command: RulesCommand::Reload } => rules_request(&paths, "rules reload"),
        Command::Rules { command: RulesCommand::Check { file, json } } => {
            let text = std::fs::read_to_string(&file).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            let (rules, errors) = inspect::rules::parse_rules(&text);
            if json {
                println!("{}", serde_json::to_string_pretty(&rules)?);
            }
            for e in &errors {
                eprintln!("{}: {e}", file.display());
            }
            println!("{} rules load, {} refused", rules.len(), errors.len());
            if errors.is_empty() {
                Ok(())
            } else {
                anyhow::bail!("{} rule(s) refused", errors.len())
            }
        }
        Command::Intel { command } => {
            control::loader::require_root()?;
            match command {
                IntelCommand::Load { file, mode } => {
                    let n = control::intel::load_file(&paths, &file, mode)?;
                    println!("{n} entries loaded ({mode:?})");
                }
                IntelCommand::List(f) => {
                    let (state, rows) = control::intel::list(&paths)?;
                    if f.json {
                        let entries: Vec<_> = rows.iter().map(|(c, n)| serde_json::json!({ "entry": c.to_string(), "frames": n })).collect();
                        println!("{}", serde_json::to_string_pretty(&serde_json::json!({ "mode": state.map(|s| s.mode), "entries": entries }))?);
                    } else {
                        match state {
                            None => println!("no list loaded"),
                            Some(s) => {
                                println!("mode {:?}, from {}", s.mode, s.source);
                                for (c, n) in rows {
                                    println!("{c:<20} {n} frames");
                                }
                            }
                        }
                    }
                }
                IntelCommand::Clear => {
                    control::intel::clear(&paths)?;
                    println!("intelligence list no longer used");
                }
            }
            Ok(())
        }
        Command::Bypass { command } => {
            control::loader::require_root()?;
            match command {
                BypassCommand::List(f) => {
                    let v = control::socket::request(&paths, "bypass list")?;
                    if f.json {
                        println!("{}", serde_json::to_string_pretty(&v)?);
                    } else {
                        for e in v["bypass"].as_array().into_iter().flatten() {
                            println!(
                                "{} {} clients {} ({}) expires in {} s",
                                e["server"].as_str().unwrap_or(""),
                                e["sni"].as_str().unwrap_or(""),
                                e["clients"].as_str().unwrap_or(""),
                                e["reason"].as_str().unwrap_or(""),
                                e["expires_in"]
                            );
                        }
                    }
                    Ok(())
                }
                BypassCommand::Clear => {
                    let v = control::socket::request(&paths, "bypass clear")?;
                    println!("{} entries cleared", v["cleared"]);
                    Ok(())
                }
            }
        }
        Command::Debug(DebugCommand::IpsBench { generated, megabytes }) => {
            let (rules_mb, label) = inspect::ips::bench(generated, megabytes)?;
            println!("ips-bench {label}: {rules_mb:.1} MB/s");
            Ok(())
        }
        Command::Debug(DebugCommand::BenchRedirect { a, b, xdp_mode }) => {
            control::loader::require_root()?;
            control::benchprog::bench_redirect(&a, &b, control::loader::xdp_mode(xdp_mode))
        }
        Command::Debug(DebugCommand::BenchSink { dev, xdp_mode }) => {
            control::loader::require_root()?;
            let n = control::benchprog::bench_sink(&dev, control::loader::xdp_mode(xdp_mode))?;
            println!("bench-sink: {n} frames");
            Ok(())
        }
        Command::Debug(DebugCommand::ProgRun { bare, inside, outside, repeat, new_flows, first_port, client, server, port, json }) => {
            control::loader::require_root()?;
            let pin = if bare { None } else { Some(control::benchprog::program_pin(&paths)?) };
            let rows = control::benchprog::prog_run(&control::benchprog::ProgRun {
                target: match &pin {
                    Some(p) => control::benchprog::Target::Pinned(p),
                    None => control::benchprog::Target::Bare,
                },
                inside: &inside,
                outside: &outside,
                repeat,
                new_flows,
                first_port,
                client: control::benchprog::ipv4("client", &client)?,
                server: control::benchprog::ipv4("server", &server)?,
                port,
            })?;
            if json {
                let v: serde_json::Map<String, serde_json::Value> = rows
                    .iter()
                    .map(|(name, ns, action)| ((*name).to_string(), serde_json::json!({ "ns": ns, "action": action })))
                    .collect();
                println!("{}", serde_json::Value::Object(v));
            } else {
                for (name, ns, action) in rows {
                    println!("{name:<28} {ns:>8.1} ns  action {action}");
                }
            }
            Ok(())
        }
        Command::Debug(DebugCommand::XskRecv {
            iface,
            side,
            queue,
            count,
            timeout,
        }) => {
            control::loader::require_root()?;
            let side = match side {
                Side::Inside => tls_inspect_common::SIDE_INSIDE,
                Side::Outside => tls_inspect_common::SIDE_OUTSIDE,
            };
            let n = phy::xsk::receive(
                &paths,
                &phy::xsk::RecvOptions {
                    iface,
                    side,
                    queue,
                    count,
                    timeout: Duration::from_secs(timeout),
                },
            )?;
            println!("xsk-recv: {n} frames");
            Ok(())
        }
    }
}
