//! SIGHUP: the config file read again, the command line and environment
//! laid over it as at start, and the difference applied to the running
//! server. A file that does not parse or validate changes nothing.

use tsecho::ServerHandle;

use super::{Args, Started, endpoints_for, server_options};

/// Reloads, telling systemd (Type=notify-reload) when it starts and ends.
pub async fn reload(args: &Args, handle: &ServerHandle, started: &Started) {
    tsecho::systemd::notify(&format!(
        "RELOADING=1\nMONOTONIC_USEC={}\nSTATUS=reloading",
        monotonic_usec()
    ));
    match &args.config {
        None => {
            tracing::info!(
                "SIGHUP: there is no --config file to read again; reloading the TLS certificates only"
            );
            handle.reload_certificates();
        }
        Some(path) => {
            let path = path.display();
            match apply(args, handle, started).await {
                Ok(summary) => tracing::info!("configuration reloaded from {path}: {summary}"),
                Err(e) => {
                    tracing::error!("reload of {path} failed, nothing changed: {e}");
                }
            }
        }
    }
    tsecho::systemd::notify("READY=1\nSTATUS=serving");
}

async fn apply(args: &Args, handle: &ServerHandle, started: &Started) -> anyhow::Result<String> {
    let settings = match args.settings() {
        Ok((settings, _)) => settings,
        Err(e) => {
            handle.count_reload(false);
            return Err(e.into());
        }
    };
    // Checked before anything changes; set once the reload succeeded.
    let level = (!started.level_fixed).then(|| settings.log_level.clone());
    if let Some(level) = &level
        && let Err(e) = crate::cli::logging::check_level(level)
    {
        handle.count_reload(false);
        anyhow::bail!(e);
    }
    let endpoints = endpoints_for(&settings, started.inherited)?;
    let mut report = handle.reload(server_options(&settings), endpoints).await?;
    if let Some(level) = level {
        let _ = crate::cli::logging::set_level(&level);
    }
    if settings.threads != started.threads {
        report.need_restart.push("threads");
    }
    for key in &report.need_restart {
        tracing::warn!("{key} changed: it takes a restart (or --takeover) to apply");
    }
    Ok(summary(&report))
}

fn summary(report: &tsecho::ReloadReport) -> String {
    let list = |v: &[String]| {
        if v.is_empty() {
            "none".to_string()
        } else {
            v.join(", ")
        }
    };
    format!(
        "listeners added: {}; removed: {}",
        list(&report.added),
        list(&report.removed)
    )
}

/// CLOCK_MONOTONIC in microseconds, as systemd's MONOTONIC_USEC wants it.
fn monotonic_usec() -> u64 {
    use nix::time::{ClockId, clock_gettime};
    clock_gettime(ClockId::CLOCK_MONOTONIC).map_or(0, |t| {
        (t.tv_sec() as u64) * 1_000_000 + (t.tv_nsec() as u64) / 1_000
    })
}
