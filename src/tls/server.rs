//! The server's TLS configuration: built from the settings, swapped whole
//! on reload. A handshake takes the configuration current when it starts
//! and keeps it to the end, so a reload never changes a handshake midway,
//! and open connections are not touched at all.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use rustls::RootCertStore;
use rustls::ServerConfig;
use rustls::server::WebPkiClientVerifier;

use super::certs::{self, Identity};
use crate::error::Error;
use crate::stats::ReloadCounts;

/// How long a client has to finish its handshake.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress may take at most this share of
/// `--max-connections`, so that a flood of ClientHellos leaves room for
/// connections that are served.
pub const HANDSHAKE_SHARE: usize = 4;

/// Whether clients must show a certificate signed by `--tls-client-ca`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClientAuth {
    Required,
    Optional,
}

impl ClientAuth {
    pub fn name(self) -> &'static str {
        match self {
            ClientAuth::Required => "required",
            ClientAuth::Optional => "optional",
        }
    }
}

/// The TLS settings of `tsecho serve`.
#[derive(Debug, Clone, PartialEq)]
pub struct TlsSettings {
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub self_signed: bool,
    pub client_ca: Option<PathBuf>,
    /// None: required when a client CA is given.
    pub client_auth: Option<ClientAuth>,
    pub handshake_timeout: Duration,
    /// None: a share of `--max-connections`.
    pub max_handshakes: Option<usize>,
}

impl Default for TlsSettings {
    fn default() -> Self {
        TlsSettings {
            cert: None,
            key: None,
            self_signed: false,
            client_ca: None,
            client_auth: None,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            max_handshakes: None,
        }
    }
}

impl TlsSettings {
    /// Whether a certificate was asked for, by files or self-signed.
    pub fn is_configured(&self) -> bool {
        self.cert.is_some() || self.key.is_some() || self.self_signed
    }

    pub fn max_handshakes(&self, max_connections: usize) -> usize {
        self.max_handshakes
            .unwrap_or((max_connections / HANDSHAKE_SHARE).max(1))
    }

    /// Files whose change is reloaded.
    fn watched(&self) -> Vec<PathBuf> {
        [&self.cert, &self.key, &self.client_ca]
            .into_iter()
            .flatten()
            .cloned()
            .collect()
    }

    fn identity(&self, hostname: &str) -> Result<Identity, Error> {
        match (&self.cert, &self.key, self.self_signed) {
            (Some(_), _, true) | (_, Some(_), true) => Err(Error::Tls(
                "--tls-self-signed and --tls-cert/--tls-key exclude each other".into(),
            )),
            (Some(cert), Some(key), false) => certs::read_identity(cert, key),
            (None, None, true) => certs::self_signed(hostname),
            (Some(_), None, false) => Err(Error::Tls("--tls-cert needs --tls-key".into())),
            (None, Some(_), false) => Err(Error::Tls("--tls-key needs --tls-cert".into())),
            (None, None, false) => Err(Error::Tls(
                "a tls:// listener needs --tls-cert and --tls-key, or --tls-self-signed".into(),
            )),
        }
    }
}

/// The configuration handshakes start from, and how to renew it.
#[derive(Debug)]
pub struct ServerTls {
    current: RwLock<Arc<ServerConfig>>,
    /// Where `current` came from; replaced when a reload brings other settings.
    source: Mutex<Source>,
    pub reloads: ReloadCounts,
}

#[derive(Debug)]
struct Source {
    settings: TlsSettings,
    /// Kept across reloads: a self-signed certificate is made once.
    self_signed: Option<Identity>,
    /// Modification times of the watched files.
    seen: Seen,
}

impl ServerTls {
    /// Reads the certificate, key and client CA; logs the certificate's
    /// fingerprint so that a client can pin or compare it.
    pub fn load(settings: &TlsSettings, hostname: &str) -> Result<Self, Error> {
        let (config, source) = Source::load(settings, hostname)?;
        Ok(ServerTls {
            current: RwLock::new(Arc::new(config)),
            source: Mutex::new(source),
            reloads: ReloadCounts::default(),
        })
    }

    /// A configuration reload: other settings (files, client
    /// authentication) are loaded whole and take over if they work; the
    /// same settings mean reading the files again.
    pub fn apply(&self, settings: &TlsSettings, hostname: &str) -> Result<(), Error> {
        let same = self.source.lock().is_ok_and(|s| s.settings == *settings);
        if same {
            return self.reload();
        }
        let loaded = Source::load(settings, hostname);
        let (config, source) = self.count(loaded)?;
        if let Ok(mut current) = self.current.write() {
            *current = Arc::new(config);
        }
        if let Ok(mut old) = self.source.lock() {
            *old = source;
        }
        Ok(())
    }

    fn count<T>(&self, result: Result<T, Error>) -> Result<T, Error> {
        self.reloads.count(result.is_ok());
        result
    }

    /// How long a client has to finish its handshake.
    pub fn handshake_timeout(&self) -> Duration {
        self.source
            .lock()
            .map_or(DEFAULT_HANDSHAKE_TIMEOUT, |s| s.settings.handshake_timeout)
    }

    /// Whether `load` would succeed, without logging what it serves.
    pub fn check(settings: &TlsSettings) -> Result<(), Error> {
        build(settings, settings.identity("localhost")?).map(drop)
    }

    /// The configuration a handshake starting now uses.
    pub fn config(&self) -> Arc<ServerConfig> {
        match self.current.read() {
            Ok(current) => current.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Reads the files again and, if they make a working configuration,
    /// uses it for new handshakes; otherwise keeps the old one, logs one
    /// line and counts it.
    pub fn reload(&self) -> Result<(), Error> {
        let built = match self.source.lock() {
            Ok(mut source) => source.rebuild(),
            Err(_) => Err(Error::Tls("TLS state poisoned".into())),
        };
        match self.count(built) {
            Ok((config, fingerprint)) => {
                if let Ok(mut current) = self.current.write() {
                    *current = Arc::new(config);
                }
                tracing::info!(sha256 = fingerprint, "TLS certificates reloaded");
                Ok(())
            }
            Err(e) => {
                tracing::error!("TLS reload failed, keeping the certificates in use: {e}");
                Err(e)
            }
        }
    }

    /// Called every second or so: reloads once the watched files changed
    /// since the last load and then stayed the same for one more call, so
    /// that a certificate and key replaced one after the other are read
    /// as a pair, not caught halfway.
    pub fn reload_if_changed(&self) {
        let settled = {
            let Ok(mut source) = self.source.lock() else {
                return;
            };
            let now = modification_times(&source.settings.watched());
            let seen = &mut source.seen;
            if seen.loaded == now {
                seen.pending = None;
                false
            } else if seen.pending.as_ref() == Some(&now) {
                true
            } else {
                seen.pending = Some(now);
                false
            }
        };
        if settled {
            let _ = self.reload();
        }
    }
}

impl Source {
    /// The configuration and where it came from; logs the certificate's
    /// fingerprint so that a client can pin or compare it.
    fn load(settings: &TlsSettings, hostname: &str) -> Result<(ServerConfig, Source), Error> {
        let self_signed = if settings.self_signed {
            Some(settings.identity(hostname)?)
        } else {
            None
        };
        let loaded = modification_times(&settings.watched());
        let identity = match &self_signed {
            Some(id) => id.clone(),
            None => settings.identity(hostname)?,
        };
        log_identity(&identity, settings.self_signed);
        let config = build(settings, identity)?;
        let source = Source {
            settings: settings.clone(),
            self_signed,
            seen: Seen {
                loaded,
                pending: None,
            },
        };
        Ok((config, source))
    }

    /// The same settings read again: a new configuration and its
    /// certificate's fingerprint.
    fn rebuild(&mut self) -> Result<(ServerConfig, String), Error> {
        self.seen.loaded = modification_times(&self.settings.watched());
        self.seen.pending = None;
        let identity = match &self.self_signed {
            Some(id) => id.clone(),
            None => self.settings.identity("")?,
        };
        let fingerprint = certs::fingerprint(&identity.chain[0]);
        build(&self.settings, identity).map(|config| (config, fingerprint))
    }
}

#[derive(Debug)]
struct Seen {
    /// At the last load.
    loaded: Vec<Option<SystemTime>>,
    /// A change noticed, waiting to settle.
    pending: Option<Vec<Option<SystemTime>>>,
}

fn modification_times(paths: &[PathBuf]) -> Vec<Option<SystemTime>> {
    paths
        .iter()
        .map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
        .collect()
}

fn log_identity(identity: &Identity, self_signed: bool) {
    let leaf = &identity.chain[0];
    let sha256 = certs::fingerprint(leaf);
    let subject = certs::subject(leaf);
    if self_signed {
        tracing::warn!(
            sha256,
            "serving TLS with a self-signed certificate made for this run; clients must pin it or use --insecure"
        );
    } else {
        tracing::info!(sha256, subject, "serving TLS");
    }
}

/// A rustls configuration: TLS 1.2 and 1.3, the client CA if any.
fn build(settings: &TlsSettings, identity: Identity) -> Result<ServerConfig, Error> {
    let tls = |e: rustls::Error| Error::Tls(e.to_string());
    let builder = ServerConfig::builder_with_provider(super::provider())
        .with_protocol_versions(super::VERSIONS)
        .map_err(tls)?;
    let builder = match &settings.client_ca {
        None if settings.client_auth.is_some() => {
            return Err(Error::Tls("--tls-client-auth needs --tls-client-ca".into()));
        }
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in certs::read_certs(ca)? {
                roots
                    .add(cert)
                    .map_err(|e| Error::Tls(format!("{}: {e}", ca.display())))?;
            }
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), super::provider());
            let verifier = match settings.client_auth.unwrap_or(ClientAuth::Required) {
                ClientAuth::Required => verifier,
                ClientAuth::Optional => verifier.allow_unauthenticated(),
            };
            let verifier = verifier
                .build()
                .map_err(|e| Error::Tls(format!("{}: {e}", ca.display())))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    builder
        .with_single_cert(identity.chain, identity.key)
        .map_err(|e| Error::Tls(format!("certificate and key: {e}")))
}
