//! A reload: new settings and listeners, applied without dropping a
//! connection. Listeners added are bound, removed ones stop accepting and
//! drain, kept ones keep their sockets; the rest of the settings take
//! effect for new connections and datagrams, and the time format and
//! reply template for every reply from now on. Nothing changes unless all
//! of it can.

use std::sync::Arc;

use super::handle::Served;
use super::{Group, ServerHandle, hostname, reflector_ports, warn_about_untrusted_proxy_listeners};
use crate::context::Config;
use crate::endpoint::{Address, Endpoint, Transport};
use crate::error::Error;
use crate::listener::Bound;
use crate::rate_limit::ResponseLimiter;
use crate::settings::Options;
use crate::tls::ServerTls;

/// What a reload changed, for its log line.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ReloadReport {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// Settings that only a restart (or `--takeover`) changes.
    pub need_restart: Vec<&'static str>,
}

/// A listener of the new settings, and how it gets its sockets.
enum Plan {
    /// Served as it is.
    Keep,
    /// The same address under another service or PROXY setting: the
    /// sockets stay, the old listener drains.
    Reuse(Endpoint, usize),
    Bind(Endpoint),
}

impl ServerHandle {
    /// Applies new settings and listeners; on error nothing has changed.
    /// Counted in `tsecho_config_reloads_total` either way.
    pub async fn reload(
        &self,
        options: Options,
        endpoints: Vec<Endpoint>,
    ) -> Result<ReloadReport, Error> {
        let _one_at_a_time = self.reloading.lock().await;
        let applied = self.apply(options, endpoints).await;
        self.count_reload(applied.is_ok());
        applied
    }

    /// Counts a reload that failed before it reached the server (a config
    /// file that does not parse).
    pub fn count_reload(&self, ok: bool) {
        self.shared.config_reloads.count(ok);
    }

    async fn apply(
        &self,
        options: Options,
        endpoints: Vec<Endpoint>,
    ) -> Result<ReloadReport, Error> {
        warn_about_untrusted_proxy_listeners(&endpoints, &options);
        let host: Arc<str> = options.instance.clone().unwrap_or_else(hostname).into();
        let plans = self.plan(&endpoints);
        let mut groups = Vec::new();
        for plan in &plans {
            let bound = match plan {
                Plan::Keep => continue,
                Plan::Reuse(endpoint, old) => self.reuse(endpoint, *old),
                Plan::Bind(endpoint) => {
                    Group::bind(endpoint, self.runtimes.len().max(1), &mut Vec::new()).await
                }
            };
            match bound {
                Ok(group) => groups.push(group),
                Err(e) => {
                    groups.iter_mut().for_each(Group::remove_file);
                    return Err(e);
                }
            }
        }
        let new_tls = match self.prepare_tls(&endpoints, &options, &host) {
            Ok(tls) => tls,
            Err(e) => {
                groups.iter_mut().for_each(Group::remove_file);
                return Err(e);
            }
        };
        // Everything that can fail has: from here on it is applied.
        let report = self.commit(options, host, endpoints, groups, new_tls);
        Ok(report)
    }

    fn plan(&self, endpoints: &[Endpoint]) -> Vec<Plan> {
        let Ok(served) = self.served.lock() else {
            return Vec::new();
        };
        endpoints
            .iter()
            .map(|endpoint| {
                let same = |s: &Served| s.configured.as_ref() == Some(endpoint);
                let same_socket = |s: &Served| {
                    s.configured
                        .as_ref()
                        .is_some_and(|c| shares_socket(c, endpoint))
                };
                if served.iter().any(same) {
                    Plan::Keep
                } else if let Some(i) = served.iter().position(same_socket) {
                    Plan::Reuse(endpoint.clone(), i)
                } else {
                    Plan::Bind(endpoint.clone())
                }
            })
            .collect()
    }

    /// The sockets of listener `old`, to serve as `endpoint`.
    fn reuse(&self, endpoint: &Endpoint, old: usize) -> Result<Group, Error> {
        let listen_error = |reason| Error::Listen {
            endpoint: endpoint.to_string(),
            reason,
        };
        let served = self
            .served
            .lock()
            .map_err(|_| listen_error(std::io::Error::other("listener list poisoned")))?;
        let old = &served[old];
        let copies = old
            .fds
            .iter()
            .map(|fd| Bound::reuse(fd.try_clone()?, endpoint.clone()))
            .collect::<std::io::Result<Vec<_>>>()
            .map_err(listen_error)?;
        let old_file = old.configured.as_ref().map(|c| &c.socket_file);
        if old_file != Some(&endpoint.socket_file)
            && let Some(path) = &old.socket_file
        {
            crate::listener::socket_file::set_permissions(path, &endpoint.socket_file)
                .map_err(listen_error)?;
        }
        Ok(Group {
            configured: Some(endpoint.clone()),
            copies,
            bound_here: false,
        })
    }

    /// Certificates for the new settings, when a tls:// listener needs
    /// them: applied to the certificates in use (which keep theirs if the
    /// new ones fail), or loaded for the first tls:// listener.
    fn prepare_tls(
        &self,
        endpoints: &[Endpoint],
        options: &Options,
        host: &str,
    ) -> Result<Option<ServerTls>, Error> {
        if !endpoints.iter().any(|e| e.transport == Transport::Tls) {
            return Ok(None);
        }
        match self.shared.tls.get() {
            Some(tls) => tls.apply(&options.tls, host).map(|()| None),
            None => ServerTls::load(&options.tls, host).map(Some),
        }
    }

    fn commit(
        &self,
        options: Options,
        host: Arc<str>,
        endpoints: Vec<Endpoint>,
        groups: Vec<Group>,
        new_tls: Option<ServerTls>,
    ) -> ReloadReport {
        let mut report = ReloadReport::default();
        let old = self.shared.config();
        report.need_restart = needs_restart(&old.options, &options);
        // A socket option, set as each listener started: kept as it is.
        let options = Options {
            stamp_clock: old.options.stamp_clock,
            io: old.options.io,
            ..options
        };
        if let Some(tls) = new_tls {
            let _ = self.shared.tls.set(Arc::new(tls));
        }
        // Out of the list from here on: the UDP ports left are those kept.
        let retired = self.take_retired(&endpoints);
        let mut udp_ports = self.udp_ports();
        udp_ports.extend(groups.iter().flat_map(Group::udp_ports));
        if old.options.limits.udp != options.limits.udp {
            self.reset_udp_limiters(&options);
        }
        self.shared
            .replace_config(Config::new(options, host, reflector_ports(udp_ports)));
        for group in groups {
            if let Some(endpoint) = &group.configured {
                report.added.push(endpoint.to_string());
            }
            self.serve(group);
        }
        for (served, replaced) in retired {
            if let Some(endpoint) = &served.configured {
                report.removed.push(endpoint.to_string());
            }
            self.retire(served, replaced);
        }
        report
    }

    /// The ports of the UDP listeners being served.
    fn udp_ports(&self) -> Vec<u16> {
        self.listeners()
            .into_iter()
            .filter(|l| l.endpoint.transport == Transport::Udp)
            .filter_map(|l| match l.local {
                crate::listener::LocalAddr::Inet(addr) => Some(addr.port()),
                _ => None,
            })
            .collect()
    }

    /// New UDP response limits start from full allowances.
    fn reset_udp_limiters(&self, options: &Options) {
        for ctx in self.shared.listeners() {
            if let Ok(mut limiter) = ctx.udp_limiter.lock() {
                *limiter = ResponseLimiter::new(&options.limits.udp);
            }
        }
    }

    /// The listeners the new settings no longer have, taken out of the
    /// list, each with whether a new listener took over its socket.
    fn take_retired(&self, endpoints: &[Endpoint]) -> Vec<(Served, bool)> {
        let Ok(mut served) = self.served.lock() else {
            return Vec::new();
        };
        let mut retired = Vec::new();
        let mut i = 0;
        while i < served.len() {
            let gone = served[i]
                .configured
                .as_ref()
                .is_some_and(|c| !endpoints.contains(c));
            if gone {
                let old = served.remove(i);
                let replaced = endpoints
                    .iter()
                    .any(|e| old.configured.as_ref().is_some_and(|c| shares_socket(c, e)));
                retired.push((old, replaced));
            } else {
                i += 1;
            }
        }
        retired
    }
}

/// Whether two listeners would bind the same socket: the same address and
/// kind of socket, whatever runs on it. Port 0 is a new port each time.
fn shares_socket(a: &Endpoint, b: &Endpoint) -> bool {
    if matches!(a.address, Address::Inet { port: 0, .. }) {
        return false;
    }
    let socket_kind = |t: Transport| match t {
        Transport::Tcp | Transport::Tls => "tcp",
        Transport::Udp => "udp",
        Transport::Unix => "unix",
        Transport::UnixGram => "unixgram",
    };
    a.address == b.address && socket_kind(a.transport) == socket_kind(b.transport)
}

/// Settings that live as long as the process: a reload logs that they
/// changed but keeps them.
fn needs_restart(old: &Options, new: &Options) -> Vec<&'static str> {
    let mut keys = Vec::new();
    if old.metrics != new.metrics {
        keys.push("metrics");
    }
    if old.stamp_clock != new.stamp_clock {
        keys.push("stamp-clock");
    }
    if old.io != new.io {
        keys.push("io");
    }
    let handshakes = |o: &Options| o.tls.max_handshakes(o.limits.max_connections);
    if handshakes(old) != handshakes(new) {
        keys.push("tls-max-handshakes");
    }
    keys
}
