//! The `TSECHO_*` variables, checked one by one with their flags' own
//! parsers, so that a bad one is reported by its name, not as the flag it
//! stands for.

use clap::{Arg, Command};

use crate::error::Error;

/// Checks every `TSECHO_*` variable `serve` reads, so that a bad one is
/// reported by its own name, not as the flag it stands for.
pub fn check_environment(serve: &Command) -> Result<(), Error> {
    for arg in serve.get_arguments() {
        let (Some(var), Some(long)) = (arg.get_env(), arg.get_long()) else {
            continue;
        };
        let Some(value) = std::env::var_os(var) else {
            continue;
        };
        let value = value.to_string_lossy();
        check_value(arg, long, &value).map_err(|reason| {
            Error::Usage(format!("{}={value:?}: {reason}", var.to_string_lossy()))
        })?;
    }
    Ok(())
}

/// Runs the flag's own parser on one value.
fn check_value(arg: &Arg, long: &str, value: &str) -> Result<(), String> {
    let probe = Command::new("check")
        .no_binary_name(true)
        .arg(arg.clone().env(None::<&str>).required(false));
    probe
        .try_get_matches_from([format!("--{long}={value}")])
        .map(drop)
        .map_err(|e| {
            // "error: invalid value 'abc' for '--max-line <BYTES>': why"
            let text = e.to_string();
            let first = text.lines().next().unwrap_or_default();
            let why = first
                .find(" for '")
                .and_then(|at| first[at..].split_once("': "))
                .map(|(_, why)| why);
            why.unwrap_or(first.trim_start_matches("error: "))
                .to_string()
        })
}
