//! The `tls-inspect` command line: [`args`] declares it, [`dispatch`] runs each command through
//! [`commands`], which validates, applies and prints.

pub mod args;
pub mod commands;

use std::process::ExitCode;

use clap::Parser;

use crate::control::maps::Paths;
use crate::runtime::run::{run, RunOptions};
use crate::sys::require_root;
use args::{BypassCommand, Cli, Command, ConfigCommand, DebugCommand, IntelCommand, IpsCommand, PolicyCommand, RulesCommand, ScopeCommand};

/// Parses the command line, runs the command, and says what went wrong if it did.
pub fn main() -> ExitCode {
    let journald = journald::stderr_is_the_journal();
    let filter = tracing_subscriber::EnvFilter::try_from_env("TLS_INSPECT_LOG").unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if journald {
        // journald stamps the time and reads the priority from each line's `<N>` prefix.
        let format = tracing_subscriber::fmt::format().without_time().with_ansi(false);
        fmt.with_ansi(false).event_format(journald::Priority(format)).init();
    } else {
        fmt.init();
    }
    let cli = Cli::parse();
    match dispatch(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{}tls-inspect: error: {e:#}", if journald { "<3>" } else { "" });
            ExitCode::FAILURE
        }
    }
}

/// Log lines with journald's priorities when standard error is the journal.
mod journald {
    use std::os::unix::fs::MetadataExt;

    use tracing::{Event, Level, Subscriber};
    use tracing_subscriber::fmt::format::Writer;
    use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
    use tracing_subscriber::registry::LookupSpan;

    /// systemd sets `JOURNAL_STREAM` to the device and inode of the stream it connected to
    /// standard error (systemd.exec(5)); a process whose stderr was redirected elsewhere keeps
    /// the variable but not the stream, so both are compared.
    pub fn stderr_is_the_journal() -> bool {
        let Ok(value) = std::env::var("JOURNAL_STREAM") else {
            return false;
        };
        let Ok(meta) = std::fs::metadata("/proc/self/fd/2") else {
            return false;
        };
        value.split_once(':').and_then(|(dev, ino)| Some((dev.parse::<u64>().ok()?, ino.parse::<u64>().ok()?))) == Some((meta.dev(), meta.ino()))
    }

    /// The syslog priority journald reads from a `<N>` line prefix (sd-daemon(3)).
    pub fn priority(level: &Level) -> u8 {
        match *level {
            Level::ERROR => 3,
            Level::WARN => 4,
            Level::INFO => 6,
            _ => 7,
        }
    }

    /// A format that puts the event's priority before each line of another.
    pub struct Priority<F>(pub F);

    impl<S, N, F> FormatEvent<S, N> for Priority<F>
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
        N: for<'a> FormatFields<'a> + 'static,
        F: FormatEvent<S, N>,
    {
        fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> std::fmt::Result {
            write!(writer, "<{}>", priority(event.metadata().level()))?;
            self.0.format_event(ctx, writer, event)
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
        Command::Config(ConfigCommand::Check { file, inside, outside, json }) => commands::config_check(&file, inside, outside, json),
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
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "tls-inspect", &mut std::io::stdout());
            Ok(())
        }
        Command::Manpages { dir } => commands::manpages(&dir),
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
