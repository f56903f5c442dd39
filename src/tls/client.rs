//! The client side of TLS, for `client`, `ping` and `bench`: which server
//! certificates to trust, the client's own certificate for mutual TLS, and
//! the name to ask for.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_rustls::TlsConnector;

use super::certs;
use crate::error::Error;

/// The TLS flags every client command shares.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ClientTlsArgs {
    /// tls://: trust this CA (PEM) instead of the system's roots.
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// tls://: do not verify the server's certificate (says so on stderr).
    #[arg(long)]
    pub insecure: bool,
    /// tls://: a client certificate (PEM, leaf first) for mutual TLS.
    #[arg(long, value_name = "FILE", requires = "key")]
    pub cert: Option<PathBuf>,
    /// tls://: the private key of --cert (PEM).
    #[arg(long, value_name = "FILE", requires = "cert")]
    pub key: Option<PathBuf>,
    /// tls://: the server name to send and verify [default: the URL's host].
    #[arg(long, value_name = "NAME")]
    pub sni: Option<String>,
}

/// Everything needed to open TLS sessions to one server.
#[derive(Clone)]
pub struct ClientTls {
    pub connector: TlsConnector,
    pub name: ServerName<'static>,
}

impl ClientTlsArgs {
    /// The TLS side of connections to `host` (the URL's host; empty means
    /// this machine, so `localhost`).
    pub fn for_host(&self, host: &str) -> Result<ClientTls, Error> {
        let name = self
            .sni
            .as_deref()
            .unwrap_or(if host.is_empty() { "localhost" } else { host });
        let name = ServerName::try_from(name.to_string())
            .map_err(|_| Error::Usage(format!("{name:?} is not a valid TLS server name")))?;
        Ok(ClientTls {
            connector: TlsConnector::from(Arc::new(self.config()?)),
            name,
        })
    }

    /// The rustls configuration these flags make, for a client that drives
    /// rustls itself.
    pub fn config(&self) -> Result<ClientConfig, Error> {
        let provider = super::provider();
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(super::VERSIONS)
            .map_err(|e| Error::Tls(e.to_string()))?;
        let builder = if self.insecure {
            eprintln!("tsecho: warning: --insecure: the server's certificate is not verified");
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        } else {
            builder.with_root_certificates(self.roots()?)
        };
        match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => {
                let id = certs::read_identity(cert, key)?;
                builder
                    .with_client_auth_cert(id.chain, id.key)
                    .map_err(|e| Error::Tls(format!("--cert/--key: {e}")))
            }
            _ => Ok(builder.with_no_client_auth()),
        }
    }

    fn roots(&self) -> Result<RootCertStore, Error> {
        let mut roots = RootCertStore::empty();
        if let Some(ca) = &self.ca {
            for cert in certs::read_certs(ca)? {
                roots
                    .add(cert)
                    .map_err(|e| Error::Tls(format!("{}: {e}", ca.display())))?;
            }
            return Ok(roots);
        }
        let found = rustls_native_certs::load_native_certs();
        let (added, _) = roots.add_parsable_certificates(found.certs);
        if added == 0 {
            return Err(Error::Tls(
                "no trusted roots found on this system; give --ca FILE or --insecure".into(),
            ));
        }
        Ok(roots)
    }
}

/// `--insecure`: any certificate is taken, though the handshake's
/// signatures are still checked (the session is encrypted, just to whom is
/// unknown), as curl -k does.
/// Holds its provider: building one per verified signature would be work
/// done again on every handshake.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
