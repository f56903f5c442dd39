//! Certificates and keys: read from PEM files, made up in memory for
//! `--tls-self-signed`, and described (subject, fingerprint) for logs and
//! reply templates.

use std::path::Path;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::error::Error;

/// A certificate chain (leaf first) and the leaf's private key.
#[derive(Debug)]
pub struct Identity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

impl Clone for Identity {
    fn clone(&self) -> Self {
        Identity {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

/// Every certificate in a PEM file, in order; an error when there is none.
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    let unreadable = |e: String| Error::Tls(format!("{}: {e}", path.display()));
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| unreadable(pem_error(e)))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| unreadable(pem_error(e)))?;
    if certs.is_empty() {
        return Err(unreadable("no CERTIFICATE in the file".into()));
    }
    Ok(certs)
}

/// The first private key in a PEM file: PKCS#8, PKCS#1 (RSA) or SEC1 (EC).
pub fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, Error> {
    PrivateKeyDer::from_pem_file(path)
        .map_err(|e| Error::Tls(format!("{}: {}", path.display(), pem_error(e))))
}

pub fn read_identity(cert: &Path, key: &Path) -> Result<Identity, Error> {
    Ok(Identity {
        chain: read_certs(cert)?,
        key: read_key(key)?,
    })
}

fn pem_error(e: rustls::pki_types::pem::Error) -> String {
    use rustls::pki_types::pem::Error as Pem;
    match e {
        Pem::Io(e) => crate::error::describe(&e),
        Pem::NoItemsFound => "no PEM section of the expected kind in the file".into(),
        other => format!("not valid PEM ({other:?})"),
    }
}

/// An ECDSA P-256 certificate for `localhost` and `hostname`, made now and
/// held only in memory: TLS in one command, to try things out.
pub fn self_signed(hostname: &str) -> Result<Identity, Error> {
    let failed = |e: rcgen::Error| Error::Tls(format!("making a self-signed certificate: {e}"));
    let mut names = vec!["localhost".to_string(), "127.0.0.1".into(), "::1".into()];
    if !hostname.is_empty() && hostname != "localhost" {
        names.push(hostname.to_string());
    }
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(failed)?;
    let mut params = rcgen::CertificateParams::new(names).map_err(failed)?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "tsecho self-signed");
    let cert = params.self_signed(&key).map_err(failed)?;
    Ok(Identity {
        chain: vec![cert.der().clone()],
        key: PrivateKeyDer::try_from(key.serialize_der())
            .map_err(|e| Error::Tls(format!("self-signed key: {e}")))?,
    })
}

/// SHA-256 of the certificate, as `openssl x509 -fingerprint -sha256`
/// prints it: upper-case hex pairs joined by colons.
pub fn fingerprint(cert: &CertificateDer<'_>) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, cert.as_ref());
    digest
        .as_ref()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The certificate's subject as RFC 4514 text (`CN=client,O=Example`), or
/// empty when it cannot be parsed.
pub fn subject(cert: &CertificateDer<'_>) -> String {
    use x509_parser::prelude::FromDer;
    match x509_parser::certificate::X509Certificate::from_der(cert.as_ref()) {
        Ok((_, parsed)) => rfc4514(parsed.subject()),
        Err(_) => String::new(),
    }
}

/// Most specific part first, as RFC 4514 and `openssl -nameopt RFC2253`
/// write it.
fn rfc4514(name: &x509_parser::x509::X509Name<'_>) -> String {
    let oids = x509_parser::objects::oid_registry();
    let parts: Vec<String> = name
        .iter_attributes()
        .map(|attr| {
            let key = x509_parser::objects::oid2abbrev(attr.attr_type(), oids)
                .map_or_else(|_| attr.attr_type().to_id_string(), str::to_string);
            let value = attr.as_str().unwrap_or("#");
            format!("{key}={}", escape_rfc4514(value))
        })
        .collect();
    parts.into_iter().rev().collect::<Vec<_>>().join(",")
}

fn escape_rfc4514(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (i == 0 && matches!(c, '#' | ' '))
            || (i == last && c == ' ');
        if special {
            out.push('\\');
        }
        if c.is_control() {
            out.push_str(&format!("\\{:02X}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_self_signed_certificate_names_localhost_and_shows_its_subject() {
        let id = self_signed("box1").unwrap();
        assert_eq!(subject(&id.chain[0]), "CN=tsecho self-signed");
        let fp = fingerprint(&id.chain[0]);
        assert_eq!(fp.len(), 32 * 3 - 1, "{fp}");
    }

    #[test]
    fn missing_and_empty_files_are_clear_errors() {
        let err = read_certs(Path::new("/nonexistent/cert.pem")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/cert.pem"), "{err}");
        let empty = std::env::temp_dir().join(format!("tsecho-empty-{}.pem", std::process::id()));
        std::fs::write(&empty, "not a pem\n").unwrap();
        let err = read_certs(&empty).unwrap_err().to_string();
        let _ = std::fs::remove_file(&empty);
        assert!(err.contains("no CERTIFICATE"), "{err}");
    }

    #[test]
    fn rfc4514_escapes_what_it_must() {
        assert_eq!(escape_rfc4514("a,b"), "a\\,b");
        assert_eq!(escape_rfc4514(" x "), "\\ x\\ ");
        assert_eq!(escape_rfc4514("#1"), "\\#1");
    }
}
