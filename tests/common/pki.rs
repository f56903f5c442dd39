//! Certificates for TLS tests, made when the test runs: a CA, a server
//! certificate for localhost and 127.0.0.1 (and a second one, for reloads),
//! a client certificate signed by the CA, and one signed by another CA.

#![allow(dead_code)] // each test binary uses a part

use std::path::PathBuf;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};

/// `tsecho serve -l tls://127.0.0.1:0` with this certificate and key
/// (paths), and `extra` arguments after them.
pub fn serve_tls(cert: &str, key: &str, extra: &[&str]) -> crate::common::ServeProcess {
    let mut args = vec![
        "-l",
        "tls://127.0.0.1:0",
        "--tls-cert",
        cert,
        "--tls-key",
        key,
    ];
    args.extend_from_slice(extra);
    crate::common::ServeProcess::start(&args, 1)
}

/// A directory of PEM files, removed when dropped.
pub struct Pki {
    pub dir: PathBuf,
}

impl Pki {
    /// ca.pem, server.pem + server.key, server2.pem + server2.key,
    /// client.pem + client.key (CN=alice), rogue-client.pem + .key (from
    /// another CA).
    pub fn new(name: &str) -> Pki {
        let dir = std::env::temp_dir().join(format!("tsecho-pki-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pki = Pki { dir };
        let ca = authority("tsecho test CA");
        pki.write("ca.pem", &ca.pem());
        for server in ["server", "server2"] {
            let (cert, key) = leaf(&ca, "localhost", &["localhost", "127.0.0.1", "::1"]);
            // The chain as servers send it: leaf, then the CA.
            pki.write(&format!("{server}.pem"), &(cert + &ca.pem()));
            pki.write(&format!("{server}.key"), &key);
        }
        let (cert, key) = leaf(&ca, "alice", &[]);
        pki.write("client.pem", &cert);
        pki.write("client.key", &key);
        let rogue = authority("some other CA");
        let (cert, key) = leaf(&rogue, "mallory", &[]);
        pki.write("rogue-client.pem", &cert);
        pki.write("rogue-client.key", &key);
        pki
    }

    pub fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    pub fn write(&self, name: &str, contents: &str) {
        // Written aside and renamed into place, as certificate managers do.
        let tmp = self.dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, contents).unwrap();
        std::fs::rename(&tmp, self.dir.join(name)).unwrap();
    }

    pub fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(name)).unwrap()
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn authority(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.distinguished_name.push(DnType::CommonName, name);
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

/// A certificate (PEM) and its key (PKCS#8 PEM), signed by `ca`.
fn leaf(ca: &CertifiedIssuer<'static, KeyPair>, cn: &str, names: &[&str]) -> (String, String) {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let mut params = CertificateParams::new(names).unwrap();
    params.distinguished_name.push(DnType::CommonName, cn);
    params
        .distinguished_name
        .push(DnType::OrganizationName, "tsecho tests");
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, ca).unwrap();
    (cert.pem(), key.serialize_pem())
}
