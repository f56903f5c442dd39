//! The signals `serve` answers, installed before any listener is bound: a
//! signal that arrives as soon as the server answers must do what it says,
//! not kill the process with its socket files left behind.

use anyhow::Context;
use tokio::signal::unix::{Signal, SignalKind, signal};

/// What a signal asks of the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Asked {
    /// SIGTERM, SIGINT: stop accepting, drain (after the shutdown delay).
    Stop(&'static str),
    /// SIGQUIT: stop at once, without a drain.
    Quit,
    /// SIGHUP: read the configuration again.
    Reload,
    /// SIGUSR1, SIGUSR2: no meaning, logged.
    Ignored(&'static str),
}

pub struct Signals {
    term: Signal,
    int: Signal,
    quit: Signal,
    hup: Signal,
    usr1: Signal,
    usr2: Signal,
}

impl Signals {
    pub fn install() -> anyhow::Result<Self> {
        let install = |kind: SignalKind, name: &str| {
            signal(kind).with_context(|| format!("installing the {name} handler"))
        };
        Ok(Signals {
            term: install(SignalKind::terminate(), "SIGTERM")?,
            int: install(SignalKind::interrupt(), "SIGINT")?,
            quit: install(SignalKind::quit(), "SIGQUIT")?,
            hup: install(SignalKind::hangup(), "SIGHUP")?,
            usr1: install(SignalKind::user_defined1(), "SIGUSR1")?,
            usr2: install(SignalKind::user_defined2(), "SIGUSR2")?,
        })
    }

    /// The next signal.
    pub async fn next(&mut self) -> Asked {
        tokio::select! {
            _ = self.term.recv() => Asked::Stop("SIGTERM"),
            _ = self.int.recv() => Asked::Stop("SIGINT"),
            _ = self.quit.recv() => Asked::Quit,
            _ = self.hup.recv() => Asked::Reload,
            _ = self.usr1.recv() => Asked::Ignored("SIGUSR1"),
            _ = self.usr2.recv() => Asked::Ignored("SIGUSR2"),
        }
    }
}
