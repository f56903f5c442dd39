//! `--config FILE`: every `serve` flag from a TOML file, keyed by its long
//! name (`listen = ["tcp://:7"]`, `max-line = "64KiB"`, `utc = true`).
//!
//! The file's values become the flags' defaults, so clap's own order gives
//! the documented precedence: command line > environment > file > built-in
//! default. Each value is checked by the flag's own parser here, so an error
//! names the file and line.

use std::path::Path;

use std::io::Write;

use clap::Command;
use clap::parser::ValueSource;
use tsecho::Error;

/// One setting from the file.
pub struct Setting {
    key: String,
    values: Vec<String>,
    line: usize,
}

pub fn load(path: &Path) -> Result<Vec<Setting>, Error> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Error::Usage(format!(
            "cannot read {}: {}",
            path.display(),
            tsecho::error::describe(&e)
        ))
    })?;
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        Error::Usage(format!("{}: {}", path.display(), e.to_string().trim_end()))
    })?;
    let line_of = |key: &str| {
        text.lines()
            .position(|l| {
                l.trim_start()
                    .strip_prefix(key)
                    .is_some_and(|rest| rest.trim_start().starts_with('='))
            })
            .map_or(0, |n| n + 1)
    };
    table
        .into_iter()
        .map(|(key, value)| {
            let line = line_of(&key);
            let at = format!("{}:{line}", path.display());
            let scalar = |v: &toml::Value| match v {
                toml::Value::String(s) => Ok(s.clone()),
                toml::Value::Integer(i) => Ok(i.to_string()),
                toml::Value::Float(f) => Ok(f.to_string()),
                toml::Value::Boolean(b) => Ok(b.to_string()),
                _ => Err(Error::Usage(format!(
                    "{at}: {key} must be a string, number, boolean or a list of them"
                ))),
            };
            let values = match &value {
                toml::Value::Array(items) => items.iter().map(scalar).collect::<Result<_, _>>()?,
                other => vec![scalar(other)?],
            };
            Ok(Setting { key, values, line })
        })
        .collect()
}

/// The command with the file's settings as `serve`'s defaults.
pub fn apply(cli: Command, path: &Path, settings: &[Setting]) -> Result<Command, Error> {
    let serve = cli
        .find_subcommand("serve")
        .cloned()
        .ok_or_else(|| Error::Usage("no serve command".into()))?;
    for setting in settings {
        let at = format!("{}:{}", path.display(), setting.line);
        let arg = serve
            .get_arguments()
            .find(|a| a.get_long() == Some(setting.key.as_str()) && setting.key != "config")
            .ok_or_else(|| {
                let valid: Vec<&str> = serve
                    .get_arguments()
                    .filter_map(|a| a.get_long())
                    .filter(|l| !matches!(*l, "help" | "config" | "log-format" | "log-level"))
                    .collect();
                Error::Usage(format!(
                    "{at}: unknown setting {:?} (valid: {})",
                    setting.key,
                    valid.join(", ")
                ))
            })?;
        for value in &setting.values {
            check_value(arg, value).map_err(|reason| {
                Error::Usage(format!("{at}: {} = {value:?}: {reason}", setting.key))
            })?;
        }
    }
    Ok(cli.mut_subcommand("serve", |mut serve| {
        for setting in settings {
            // Defaults must live as long as the command: the file is read
            // once per process, so leaking its values is the simple way.
            let values: Vec<&'static str> = setting
                .values
                .iter()
                .map(|v| &*Box::leak(v.clone().into_boxed_str()))
                .collect();
            let id = setting.key_id(&serve);
            serve = serve.mut_arg(id, |arg| arg.default_values(values));
        }
        serve
    }))
}

impl Setting {
    /// The clap id of the flag with this long name.
    fn key_id(&self, serve: &Command) -> String {
        serve
            .get_arguments()
            .find(|a| a.get_long() == Some(self.key.as_str()))
            .map_or_else(|| self.key.clone(), |a| a.get_id().to_string())
    }
}

/// Runs the flag's own parser on one value from the file.
fn check_value(arg: &clap::Arg, value: &str) -> Result<(), String> {
    if !arg.get_action().takes_values() {
        return match value {
            "true" | "false" => Ok(()),
            _ => Err("expected true or false".into()),
        };
    }
    let probe = Command::new("check").arg(arg.clone().required(false));
    let flag = format!("--{}", arg.get_long().unwrap_or_default());
    probe
        .try_get_matches_from(["check", flag.as_str(), value])
        .map(drop)
        .map_err(|e| first_line(&e.to_string()).to_string())
}

fn first_line(text: &str) -> &str {
    text.lines()
        .next()
        .unwrap_or(text)
        .trim_start_matches("error: ")
}

/// `tsecho check-config`: every serve setting in effect and where it came from.
pub fn print_effective(serve: &Command, matches: &clap::ArgMatches, settings: &[Setting]) {
    for arg in serve.get_arguments() {
        let id = arg.get_id().as_str();
        let Some(long) = arg.get_long() else { continue };
        if matches!(long, "help" | "config") {
            continue;
        }
        let source = match matches.value_source(id) {
            Some(ValueSource::CommandLine) => "command line",
            Some(ValueSource::EnvVariable) => "environment",
            Some(ValueSource::DefaultValue) if settings.iter().any(|s| s.key == long) => {
                "config file"
            }
            Some(ValueSource::DefaultValue) => "default",
            _ => "unset",
        };
        let values: Vec<String> = matches
            .get_raw(id)
            .map(|raw| raw.map(|v| format!("{:?}", v.to_string_lossy())).collect())
            .unwrap_or_default();
        let shown = match values.len() {
            0 => "(none)".to_string(),
            1 => values[0].clone(),
            _ => format!("[{}]", values.join(", ")),
        };
        // A closed pipe (| head) is not an error worth a panic.
        let _ = writeln!(std::io::stdout().lock(), "{long} = {shown}  # {source}");
    }
}
