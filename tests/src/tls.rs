//! Certificates for TLS tests: a throw-away certificate authority that issues server and client
//! certificates and writes them as PEM files, so that a test starts a real server with TLS
//! (PostgreSQL, NATS) and connects to it the way a service does in production.
//!
//! Invariants: every key file is written with mode 0600 (PostgreSQL refuses a private key others
//! can read); every file gets a name of its own, so that several CAs and certificates can share
//! one directory; a server certificate names only the hosts it is given (no IP address is added
//! behind the test's back, so that connecting by an address not named tests the host-name check).

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// A certificate authority of a test: what clients trust (`sslrootcert`, a NATS `ca_file`) and
/// what signs the servers' and clients' certificates.
pub struct TestCa {
    /// Signs the certificates it issues.
    issuer: Issuer<'static, KeyPair>,
    /// Its own (self-signed) certificate, PEM.
    cert_pem: String,
    /// Unique among CAs, in its common name and file names.
    id: String,
}

/// A certificate and its private key as PEM files, with the certificate of the CA that issued
/// it (what the other side trusts).
#[derive(Debug, Clone)]
pub struct CertFiles {
    pub cert: PathBuf,
    /// Mode 0600.
    pub key: PathBuf,
    pub ca: PathBuf,
}

impl Default for TestCa {
    fn default() -> Self {
        Self::new()
    }
}

impl TestCa {
    /// A new CA with a key of its own (ECDSA P-256), valid from 1975 to 4096 (rcgen's default).
    pub fn new() -> Self {
        let id = crate::unique_suffix();
        let mut params = CertificateParams::default();
        params.distinguished_name = distinguished_name(&format!("testkit CA {id}"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().expect("generate the CA's key");
        let cert_pem = params.self_signed(&key).expect("self-sign the CA").pem();
        TestCa { issuer: Issuer::new(params, key), cert_pem, id }
    }

    /// The CA's certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Writes the CA's certificate into `dir` (once: a file already there is kept) and returns
    /// its path.
    pub fn write_ca(&self, dir: &Path) -> PathBuf {
        let path = dir.join(format!("ca-{}.crt", self.id));
        if !path.exists() {
            write_file(&path, &self.cert_pem, 0o644);
        }
        path
    }

    /// A server certificate for `names` (DNS names, or IP addresses written as such), written
    /// into `dir`.
    pub fn issue_server(&self, names: &[&str], dir: &Path) -> CertFiles {
        let mut params = CertificateParams::new(names.iter().map(|name| (*name).to_owned()).collect::<Vec<_>>())
            .expect("valid server names");
        params.distinguished_name = distinguished_name(names.first().copied().unwrap_or("server"));
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.issue(params, "server", dir)
    }

    /// A client certificate whose common name is `common_name` (what PostgreSQL's `cert`
    /// authentication compares with the user name), written into `dir`.
    pub fn issue_client(&self, common_name: &str, dir: &Path) -> CertFiles {
        let mut params = CertificateParams::default();
        params.distinguished_name = distinguished_name(common_name);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.issue(params, &format!("client-{common_name}"), dir)
    }

    fn issue(&self, mut params: CertificateParams, role: &str, dir: &Path) -> CertFiles {
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().expect("generate a key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign the certificate");
        let stem = format!("{role}-{}", crate::unique_suffix());
        let files = CertFiles {
            cert: dir.join(format!("{stem}.crt")),
            key: dir.join(format!("{stem}.key")),
            ca: self.write_ca(dir),
        };
        write_file(&files.cert, &cert.pem(), 0o644);
        write_file(&files.key, &key.serialize_pem(), 0o600);
        files
    }
}

fn distinguished_name(common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    name
}

/// Creates `path` with `mode` from the start, so that a key is never readable by others, not even
/// for an instant.
fn write_file(path: &Path, contents: &str, mode: u32) {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    file.write_all(contents.as_bytes()).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}
