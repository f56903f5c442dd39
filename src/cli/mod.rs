//! The `tsecho` command line: one module per subcommand, each with its clap
//! arguments next to the function that runs it.

/// `println!` that ends the program when its stdout has gone (`| head`),
/// with the status a C tool killed by SIGPIPE reports (141), instead of
/// panicking as `println!` does.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if writeln!(std::io::stdout(), $($arg)*).is_err() {
            std::process::exit(141);
        }
    }};
}

pub mod bench;
mod bench_end;
mod bench_merge;
mod bench_replies;
mod bench_report;
mod bench_request;
mod bench_results;
pub mod check_config;
pub mod client;
mod late_replies;
pub mod logging;
pub mod ping;
pub mod serve;
pub mod services;

/// The runtime of the one-connection commands (client, ping): one thread.
pub fn single_thread_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    use anyhow::Context;
    tsecho::shards::single_threaded().context("starting the runtime")
}

pub use tsecho::settings::text::parse_duration;
