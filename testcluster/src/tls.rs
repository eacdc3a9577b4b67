//! TLS masters: a throwaway certificate authority generated at start-up ([`TestPki`]), the
//! server certificate every master presents, a client certificate for mutual TLS, and the
//! `redis-server` arguments that turn TLS on.

use std::fs;
use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

use crate::error::{Error, Result};

/// How the masters speak TLS: set with [`ClusterBuilder::tls`](crate::ClusterBuilder::tls).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// A TLS port next to the plain one; clients need no certificate.
    On,
    /// A TLS port whose clients must present a certificate signed by the cluster's CA
    /// (`tls-auth-clients yes`).
    MutualAuth,
}

/// A certificate authority made for one cluster, with the server certificate its masters
/// present and a client certificate it accepts. All PEM. Nothing here is secret beyond the
/// test that made it.
#[derive(Clone)]
pub struct TestPki {
    /// The CA certificate: what clients must trust.
    pub ca_pem: String,
    /// The masters' certificate, valid for the names given to
    /// [`generate`](TestPki::generate).
    pub server_cert_pem: String,
    /// The masters' private key.
    pub server_key_pem: String,
    /// A client certificate signed by the CA, for mutual TLS.
    pub client_cert_pem: String,
    /// Its private key.
    pub client_key_pem: String,
}

impl std::fmt::Debug for TestPki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TestPki { .. }")
    }
}

/// File names of the server's side inside a master's dir.
pub(crate) const CA_FILE: &str = "tls-ca.crt";
pub(crate) const CERT_FILE: &str = "tls-server.crt";
pub(crate) const KEY_FILE: &str = "tls-server.key";

impl TestPki {
    /// A fresh CA and certificates; the server certificate names exactly `server_names` (IP
    /// addresses or DNS names).
    pub fn generate(server_names: &[String]) -> Result<TestPki> {
        let tls = |e: rcgen::Error| Error::Config(format!("generating test certificates: {e}"));
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(tls)?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "testcluster CA");
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().map_err(tls)?)
            .map_err(tls)?;

        let mut server = CertificateParams::new(server_names.to_vec()).map_err(tls)?;
        server
            .distinguished_name
            .push(DnType::CommonName, "testcluster master");
        server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server_key = KeyPair::generate().map_err(tls)?;
        let server_cert = server.signed_by(&server_key, &ca).map_err(tls)?;

        let mut client = CertificateParams::new(Vec::<String>::new()).map_err(tls)?;
        client
            .distinguished_name
            .push(DnType::CommonName, "testcluster client");
        client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let client_key = KeyPair::generate().map_err(tls)?;
        let client_cert = client.signed_by(&client_key, &ca).map_err(tls)?;

        Ok(TestPki {
            ca_pem: ca.pem(),
            server_cert_pem: server_cert.pem(),
            server_key_pem: server_key.serialize_pem(),
            client_cert_pem: client_cert.pem(),
            client_key_pem: client_key.serialize_pem(),
        })
    }

    /// Writes the server's side (CA, certificate, key) into a master's dir.
    pub(crate) fn write_server_files(&self, dir: &Path) -> Result<()> {
        for (name, pem) in [
            (CA_FILE, &self.ca_pem),
            (CERT_FILE, &self.server_cert_pem),
            (KEY_FILE, &self.server_key_pem),
        ] {
            let path = dir.join(name);
            fs::write(&path, pem)
                .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
        }
        Ok(())
    }
}

/// The TLS settings of one master, as its spec keeps them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TlsSpec {
    /// The host port TLS clients connect to (published, on the docker backend).
    pub port: u16,
    pub mode: TlsMode,
}

/// The `redis-server` arguments for TLS on `port`, the files under `dir` (as the server
/// sees it).
pub(crate) fn server_args(port: u16, mode: TlsMode, dir: &str) -> Vec<String> {
    let auth = match mode {
        TlsMode::On => "no",
        TlsMode::MutualAuth => "yes",
    };
    [
        "--tls-port".to_string(),
        port.to_string(),
        "--tls-cert-file".into(),
        format!("{dir}/{CERT_FILE}"),
        "--tls-key-file".into(),
        format!("{dir}/{KEY_FILE}"),
        "--tls-ca-cert-file".into(),
        format!("{dir}/{CA_FILE}"),
        "--tls-auth-clients".into(),
        auth.into(),
    ]
    .into()
}
