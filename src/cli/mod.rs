//! The `tsecho` command line: one module per subcommand, each with its clap
//! arguments next to the function that runs it.

pub mod bench;
pub mod check_config;
pub mod client;
pub mod ping;
pub mod serve;
pub mod services;

/// The runtime of the one-connection commands (client, ping): one thread.
pub fn single_thread_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    use anyhow::Context;
    tsecho::shards::single_threaded().context("starting the runtime")
}

pub use tsecho::settings::text::parse_duration;
