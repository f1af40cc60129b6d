//! The `tls-inspect` command line: [`args`] declares it, [`dispatch`] runs each command through
//! [`commands`], which validates, applies and prints.

pub mod args;
pub mod commands;

use std::process::ExitCode;

use clap::Parser;

use crate::control::maps::Paths;
use crate::runtime::run::{run, RunOptions};
use crate::sys::require_root;
use args::{BypassCommand, Cli, Command, DebugCommand, IntelCommand, IpsCommand, PolicyCommand, RulesCommand, ScopeCommand};

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
        } => run(RunOptions {
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
            require_root()?;
            commands::detach(&paths)
        }
        Command::Scope(c) => {
            require_root()?;
            match c {
                ScopeCommand::Add {
                    policy,
                    src,
                    sport,
                    dst,
                    dport,
                    description,
                } => commands::scope_add(&paths, policy, &src, &sport, &dst, &dport, &description),
                ScopeCommand::List(f) => commands::scope_list(&paths, f.json),
                ScopeCommand::Del { id } => commands::scope_del(&paths, id),
                ScopeCommand::Load { file } => commands::scope_load(&paths, &file),
            }
        }
        Command::Policy(c) => {
            require_root()?;
            match c {
                PolicyCommand::Add { id, name, disabled } => commands::policy_add(&paths, id, &name, !disabled),
                PolicyCommand::Del { id } => commands::policy_del(&paths, id),
                PolicyCommand::Enable { id } => commands::policy_enable(&paths, id, true),
                PolicyCommand::Disable { id } => commands::policy_enable(&paths, id, false),
                PolicyCommand::List(f) => commands::policy_list(&paths, f.json),
            }
        }
        Command::Stats(f) => {
            require_root()?;
            commands::stats(&paths, f.json)
        }
        Command::Flows(f) => {
            require_root()?;
            commands::flows(&paths, f.json)
        }
        Command::Ca { dir, command } => commands::ca(&dir, command),
        Command::Rules { command: RulesCommand::Check { file, json } } => commands::rules_check(&file, json),
        Command::Rules { command } => {
            require_root()?;
            commands::rules(&paths, command)
        }
        Command::Intel { command } => {
            require_root()?;
            match command {
                IntelCommand::Load { file, mode } => commands::intel_load(&paths, &file, mode),
                IntelCommand::List(f) => commands::intel_list(&paths, f.json),
                IntelCommand::Clear => commands::intel_clear(&paths),
            }
        }
        Command::Ips { command: IpsCommand::Replay { pcap, rules, config, eve, level } } => {
            let summary = crate::replay::run(&crate::replay::ReplayOptions { pcap, rules, config, eve, level })?;
            eprintln!("tls-inspect: replay: {summary}");
            Ok(())
        }
        Command::Bypass { command } => {
            require_root()?;
            match command {
                BypassCommand::List(f) => commands::bypass_list(&paths, f.json),
                BypassCommand::Clear => commands::bypass_clear(&paths),
            }
        }
        Command::Debug(DebugCommand::XskRecv {
            iface,
            side,
            queue,
            count,
            timeout,
        }) => {
            require_root()?;
            commands::xsk_recv(&paths, &iface, side, queue, count, std::time::Duration::from_secs(timeout))
        }
    }
}
