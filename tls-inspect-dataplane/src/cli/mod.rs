//! The `tls-inspect` command line: [`args`] declares it, [`dispatch`] runs each command through
//! [`commands`], which validates and applies, and prints the [`output::Report`] it returns.

pub mod args;
pub mod commands;
pub mod output;

use std::process::ExitCode;

use clap::Parser;

use crate::control::maps::Paths;
use crate::runtime::run::{run, RunOptions};
use crate::sys::require_root;
use output::{Format, Report};
use args::{BypassCommand, Cli, Command, ConfigCommand, DebugCommand, IntelCommand, IpsCommand, PolicyCommand, RulesCommand, ScopeCommand};

/// Parses the command line, runs the command, and says what went wrong if it did.
pub fn main() -> ExitCode {
    let journald = journald::stderr_is_the_journal();
    let filter = tracing_subscriber::EnvFilter::try_from_env("TLS_INSPECT_LOG").unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let cli = Cli::parse();
    let format = Format::new(cli.json);
    crate::log::console::set_json(cli.json);
    let fmt = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if format == Format::Json {
        // One JSON object per log line (timestamp, level, target, fields), for log shippers.
        fmt.json().with_ansi(false).init();
    } else if journald {
        // journald stamps the time and reads the priority from each line's `<N>` prefix.
        let format = tracing_subscriber::fmt::format().without_time().with_ansi(false);
        fmt.with_ansi(false).event_format(journald::Priority(format)).init();
    } else {
        fmt.init();
    }
    let outcome = dispatch(cli, format).and_then(|report| {
        let Some(report) = report else { return Ok(()) };
        report.print(format);
        match report.failure() {
            // Printed already, with the answer.
            Some(f) if format == Format::Json => Err(Failed(f.to_string()).into()),
            Some(f) => Err(anyhow::anyhow!("{f}")),
            None => Ok(()),
        }
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if format == Format::Json && e.downcast_ref::<Failed>().is_none() {
                println!("{}", output::error_json(&e));
            }
            eprintln!("{}tls-inspect: error: {e:#}", if journald { "<3>" } else { "" });
            ExitCode::FAILURE
        }
    }
}

/// A failure whose JSON is already on standard output.
#[derive(Debug)]
struct Failed(String);

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Failed {}

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

/// Runs the command; the answer to print, if it has one (`run` and the streaming commands print
/// as they go).
fn dispatch(cli: Cli, format: Format) -> anyhow::Result<Option<Report>> {
    let paths = Paths::new(&cli.instance)?;
    let report = match cli.command {
        Command::Run {
            inside,
            outside,
            config,
            xdp_mode,
            workers,
            no_workers,
            metrics,
            on_exit,
        } => {
            run(RunOptions {
                paths,
                config,
                inside,
                outside,
                xdp_mode,
                workers,
                no_workers,
                metrics,
                on_exit,
            })?;
            return Ok(None);
        }
        Command::Detach => {
            require_root()?;
            commands::detach(&paths)?
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
                } => commands::scope_add(&paths, policy, &src, &sport, &dst, &dport, &description)?,
                ScopeCommand::List => commands::scope_list(&paths)?,
                ScopeCommand::Del { id } => commands::scope_del(&paths, id)?,
                ScopeCommand::Load { file } => commands::scope_load(&paths, &file)?,
            }
        }
        Command::Policy(c) => {
            require_root()?;
            match c {
                PolicyCommand::Add { id, name, disabled } => commands::policy_add(&paths, id, &name, !disabled)?,
                PolicyCommand::Del { id } => commands::policy_del(&paths, id)?,
                PolicyCommand::Enable { id } => commands::policy_enable(&paths, id, true)?,
                PolicyCommand::Disable { id } => commands::policy_enable(&paths, id, false)?,
                PolicyCommand::List => commands::policy_list(&paths)?,
            }
        }
        Command::Stats => {
            require_root()?;
            commands::stats(&paths)?
        }
        Command::Flows => {
            require_root()?;
            commands::flows(&paths)?
        }
        Command::Ca { dir, command } => commands::ca(&dir, command)?,
        Command::Config(ConfigCommand::Check { file, inside, outside }) => commands::config_check(&file, inside, outside)?,
        Command::Rules { command: RulesCommand::Check { file } } => commands::rules_check(&file)?,
        Command::Rules { command } => {
            require_root()?;
            commands::rules(&paths, command)?
        }
        Command::Intel { command } => {
            require_root()?;
            match command {
                IntelCommand::Load { file, mode } => commands::intel_load(&paths, &file, mode)?,
                IntelCommand::List => commands::intel_list(&paths)?,
                IntelCommand::Clear => commands::intel_clear(&paths)?,
            }
        }
        Command::Ips { command: IpsCommand::Replay { pcap, rules, config, eve, level } } => {
            // The EVE lines go to standard output (or --eve); the summary to standard error.
            let summary = crate::replay::run(&crate::replay::ReplayOptions { pcap, rules, config, eve, level })?;
            match format {
                Format::Json => eprintln!("{}", serde_json::to_string(&summary)?),
                Format::Text => eprintln!("tls-inspect: replay: {summary}"),
            }
            return Ok(None);
        }
        Command::Bypass { command } => {
            require_root()?;
            match command {
                BypassCommand::List => commands::bypass_list(&paths)?,
                BypassCommand::Clear => commands::bypass_clear(&paths)?,
            }
        }
        Command::Completions { shell } => {
            if format == Format::Json {
                anyhow::bail!("--json: completions are a shell script");
            }
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "tls-inspect", &mut std::io::stdout());
            return Ok(None);
        }
        Command::Manpages { dir } => {
            commands::manpages(&dir)?;
            return Ok(None);
        }
        Command::Debug(DebugCommand::XskRecv {
            iface,
            side,
            queue,
            count,
            timeout,
        }) => {
            require_root()?;
            commands::xsk_recv(&paths, &iface, side, queue, count, std::time::Duration::from_secs(timeout), format)?;
            return Ok(None);
        }
    };
    Ok(Some(report))
}
