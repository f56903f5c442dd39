//! The `tsecho` binary: parse the command line, run, map errors to an exit
//! code and one line on stderr.

mod cli;

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use tsecho::error::{EX_SOFTWARE, EX_USAGE, io_exit_code};
use tsecho::settings::{LogFormat, Settings};

#[derive(Debug, Parser)]
#[command(
    name = "tsecho",
    version = VERSION,
    about = "Timestamp echo server and clients, plus the inetd small services"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,

    /// Log lines as text or as one JSON object per line [default: text].
    #[arg(long, global = true, value_enum, env = "TSECHO_LOG_FORMAT")]
    log_format: Option<LogFormat>,

    /// Log level or filter (error, warn, info, debug, trace, or RUST_LOG
    /// syntax); RUST_LOG wins when set [default: info].
    #[arg(long, global = true, env = "TSECHO_LOG_LEVEL")]
    log_level: Option<String>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server (stamp on TCP and UDP port 21567 by default).
    Serve(Box<cli::serve::Args>),
    /// Send lines to a server and print its replies.
    Client(cli::client::Args),
    /// Round trips and the server's clock offset, like ping(8).
    Ping(cli::ping::Args),
    /// Load a server and report throughput and latency.
    Bench(Box<cli::bench::Args>),
    /// List the services with their RFCs and ports, and the faults a
    /// listener can inject; given listener URLs, what each would do.
    Services {
        /// Listeners to describe, e.g. 'udp://:21567?drop=1%&delay=10ms'.
        listeners: Vec<tsecho::Endpoint>,
    },
    /// Print a shell completion script.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff).
    Man,
    /// Validate a serve config file and print the settings in effect.
    CheckConfig {
        /// The TOML file.
        file: std::path::PathBuf,
    },
}

const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (git ",
    env!("TSECHO_GIT_REVISION"),
    ")"
);

/// The command line, `serve` showing the defaults `Settings` holds.
fn command() -> clap::Command {
    Cli::command().mut_subcommand("serve", tsecho::settings::show_defaults)
}

fn serve_command() -> clap::Command {
    command()
        .find_subcommand("serve")
        .cloned()
        .unwrap_or_else(|| clap::Command::new("serve"))
}

fn parse_command_line() -> Result<Cli, anyhow::Error> {
    match command().try_get_matches() {
        Ok(matches) => Ok(Cli::from_arg_matches(&matches)?),
        Err(e) if is_bad_value(&e) => {
            // A bad TSECHO_* variable is reported by its own name.
            tsecho::settings::check_environment(&serve_command())?;
            Err(e.into())
        }
        Err(e) => Err(e.into()),
    }
}

fn is_bad_value(e: &clap::Error) -> bool {
    use clap::error::ErrorKind::*;
    matches!(e.kind(), InvalidValue | ValueValidation)
}

fn main() -> ExitCode {
    let cli = match parse_command_line() {
        Ok(cli) => cli,
        Err(e) => {
            if let Some(e) = e.downcast_ref::<clap::Error>() {
                let _ = e.print();
                return ExitCode::from(if e.use_stderr() { EX_USAGE as u8 } else { 0 });
            }
            eprintln!("tsecho: {e:#}");
            return ExitCode::from(EX_USAGE as u8);
        }
    };
    let settings = match &cli.command {
        Command::Serve(args) => match args.settings() {
            Ok((settings, _)) => settings,
            Err(e) => {
                eprintln!("tsecho: {e}");
                return ExitCode::from(e.exit_code() as u8);
            }
        },
        _ => Settings::default(),
    };
    let log_format = cli.log_format.unwrap_or(settings.log_format);
    let log_level = cli
        .log_level
        .clone()
        .unwrap_or_else(|| settings.log_level.clone());
    cli::logging::init(log_format, &log_level);
    // A reload may change the level, unless it was fixed for the run.
    let level_fixed = cli.log_level.is_some() || cli::logging::level_from_environment();
    let result = match cli.command {
        Command::Serve(args) => cli::serve::run(&args, settings, level_fixed).map(|()| 0),
        Command::Client(args) => cli::client::run(args),
        Command::Ping(args) => cli::ping::run(args),
        Command::Bench(args) => cli::bench::run(*args),
        Command::Services { listeners } => {
            cli::services::run(&listeners);
            Ok(0)
        }
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut command(), "tsecho", &mut std::io::stdout());
            Ok(0)
        }
        Command::CheckConfig { file } => cli::check_config::run(serve_command(), &file),
        Command::Man => clap_mangen::Man::new(command())
            .render(&mut std::io::stdout())
            .map(|()| 0)
            .map_err(Into::into),
    };
    match result {
        Ok(code) => ExitCode::from(code as u8),
        Err(e) => {
            eprintln!("tsecho: {e:#}");
            ExitCode::from(exit_code(&e) as u8)
        }
    }
}

fn exit_code(e: &anyhow::Error) -> i32 {
    if let Some(e) = e.downcast_ref::<tsecho::Error>() {
        return e.exit_code();
    }
    if let Some(e) = e.downcast_ref::<std::io::Error>() {
        return io_exit_code(e);
    }
    EX_SOFTWARE
}
