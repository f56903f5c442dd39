//! `tsecho check-config FILE`: settings checked in advance, printed with their sources.

use std::io::Write;
use std::path::Path;

use clap::FromArgMatches;

/// `tsecho check-config FILE`: whether `tsecho serve --config FILE` would
/// start, and every setting it would run with and where it came from.
pub fn run(serve: clap::Command, path: &Path) -> anyhow::Result<i32> {
    tsecho::settings::check_environment(&serve)?;
    let matches = serve.try_get_matches_from([
        std::ffi::OsStr::new("serve"),
        "--config".as_ref(),
        path.as_os_str(),
    ])?;
    let args = super::serve::Args::from_arg_matches(&matches)?;
    let (settings, sources) = args.settings()?;
    // The certificates too: a key that does not match its certificate
    // must show here, not at the start of the server.
    if settings
        .listen
        .iter()
        .any(|e| e.transport == tsecho::Transport::Tls)
    {
        tsecho::tls::ServerTls::check(&settings.options().tls)?;
    }
    check_socket_files(&settings)?;
    let mut out = std::io::stdout().lock();
    for (key, values) in settings.describe() {
        // check-config reads no flags: what is not the file's is the
        // environment's.
        let source = if sources.flags.contains(&key) {
            "environment"
        } else if sources.file.iter().any(|k| k == key) {
            "config file"
        } else {
            "default"
        };
        let quoted: Vec<String> = values.iter().map(|v| format!("{v:?}")).collect();
        let shown = match quoted.len() {
            0 => "(none)".to_string(),
            1 => quoted[0].clone(),
            _ => format!("[{}]", quoted.join(", ")),
        };
        // A closed pipe (| head) is not an error worth a panic.
        let _ = writeln!(out, "{key} = {shown}  # {source}");
    }
    for endpoint in settings.listen.iter().filter(|e| !e.faults.is_none()) {
        let _ = writeln!(out, "# {endpoint} injects faults: {}", endpoint.faults);
    }
    // The same checks a reload makes before it changes anything (only
    // binding a new listener can still fail then).
    let _ = writeln!(
        out,
        "# {}: OK, to start with or to reload (SIGHUP)",
        path.display()
    );
    Ok(0)
}

/// Socket file owners and groups that exist, a control socket that is a
/// unix:///path: what binding would otherwise find out.
fn check_socket_files(settings: &tsecho::settings::Settings) -> anyhow::Result<()> {
    for endpoint in &settings.listen {
        // The error and exit code `serve` would give when binding.
        tsecho::listener::socket_file::check(&endpoint.socket_file).map_err(|reason| {
            tsecho::Error::Listen {
                endpoint: endpoint.to_string(),
                reason,
            }
        })?;
    }
    if let Some(control) = &settings.control {
        tsecho::control::control_path(control)?;
    }
    Ok(())
}
