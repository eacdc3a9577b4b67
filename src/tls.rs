//! TLS for `rediss://` masters: the options a caller gives ([`TlsOptions`]), the rustls client
//! configuration built from them, and the TLS stream a master's redis-rs connection runs over.
//!
//! The stream is opened here rather than by redis-rs: redis-rs builds its rustls configuration
//! with the process-wide default crypto provider, which panics when the dependency tree
//! enables two providers (or none) and nobody installed one. Here the ring provider is passed
//! explicitly, so no feature combination anywhere in the tree can make a `rediss://` URL panic.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use redis::RedisConnectionInfo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::error::{Error, MasterReply};
use crate::invalid::ConfigReason;

/// How `rediss://` masters are reached: which certificate authorities to trust, and the client
/// certificate to present if the servers ask for one (mutual TLS).
///
/// By default the system's root certificates are trusted and every server's certificate must
/// name the host of its URL (an IP address in the URL must be in the certificate's IP
/// addresses). Give it to [`Builder::tls`](crate::Builder::tls).
///
/// ```
/// # fn pem() -> Vec<u8> { Vec::new() }
/// let tls = redquorum::TlsOptions::new()
///     .ca_pem(pem())                       // trust this CA instead of the system's roots
///     .client_identity_pem(pem(), pem());  // certificate chain and key, for mutual TLS
/// ```
#[derive(Clone, Default)]
pub struct TlsOptions {
    ca_pem: Option<Vec<u8>>,
    client_identity: Option<(Vec<u8>, Vec<u8>)>,
    accept_invalid_certificates: bool,
}

impl fmt::Debug for TlsOptions {
    // Hand-written: a private key must never reach a log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsOptions")
            .field("ca_pem", &self.ca_pem.as_ref().map(|_| "<set>"))
            .field(
                "client_identity",
                &self.client_identity.as_ref().map(|_| "<redacted>"),
            )
            .field(
                "accept_invalid_certificates",
                &self.accept_invalid_certificates,
            )
            .finish()
    }
}

impl TlsOptions {
    /// The defaults: the system's root certificates, no client certificate, full verification.
    pub fn new() -> Self {
        Self::default()
    }

    /// Trusts exactly the certificate authorities in this PEM (one or more `CERTIFICATE`
    /// blocks) instead of the system's root certificates.
    pub fn ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.ca_pem = Some(pem.into());
        self
    }

    /// Presents this certificate chain (PEM, leaf first) and private key (PEM: PKCS#8, PKCS#1
    /// or SEC1) to servers that ask for a client certificate (`tls-auth-clients yes`).
    pub fn client_identity_pem(
        mut self,
        cert_chain_pem: impl Into<Vec<u8>>,
        key_pem: impl Into<Vec<u8>>,
    ) -> Self {
        self.client_identity = Some((cert_chain_pem.into(), key_pem.into()));
        self
    }

    /// **Disables certificate verification**: any certificate, from anyone, for any name, is
    /// accepted, so anyone on the path can read and change every command (locks included).
    /// Only for tests against throwaway servers. The same as a `#insecure` URL fragment
    /// (`rediss://host:6380/#insecure`), which applies to that master only.
    pub fn dangerously_accept_invalid_certificates(mut self) -> Self {
        self.accept_invalid_certificates = true;
        self
    }

    /// The rustls client configuration; `insecure` when the master's URL asked for it.
    fn client_config(&self, insecure: bool) -> Result<Arc<ClientConfig>, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?;
        let builder = if insecure || self.accept_invalid_certificates {
            let verifier = AcceptAnyCertificate(provider.signature_verification_algorithms);
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(verifier))
        } else {
            builder.with_root_certificates(self.roots()?)
        };
        let config = match &self.client_identity {
            Some((chain, key)) => {
                let chain = CertificateDer::pem_slice_iter(chain)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| format!("TLS: client certificate PEM: {e}"))?;
                if chain.is_empty() {
                    return Err("TLS: client certificate PEM holds no certificate".into());
                }
                let key = PrivateKeyDer::from_pem_slice(key)
                    .map_err(|e| format!("TLS: client key PEM: {e}"))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| format!("TLS: client certificate and key: {e}"))?
            }
            None => builder.with_no_client_auth(),
        };
        Ok(Arc::new(config))
    }

    /// The trusted roots: the given CAs, or else the system's.
    fn roots(&self) -> Result<RootCertStore, String> {
        let mut roots = RootCertStore::empty();
        match &self.ca_pem {
            Some(pem) => {
                for cert in CertificateDer::pem_slice_iter(pem) {
                    let cert = cert.map_err(|e| format!("TLS: CA PEM: {e}"))?;
                    roots
                        .add(cert)
                        .map_err(|e| format!("TLS: CA certificate: {e}"))?;
                }
                if roots.is_empty() {
                    return Err("TLS: CA PEM holds no certificate".into());
                }
            }
            None => {
                // Unreadable files among the system's roots are skipped, as every TLS client
                // does; none at all surfaces as an unknown-issuer error naming the master.
                let found = rustls_native_certs::load_native_certs();
                roots.add_parsable_certificates(found.certs);
            }
        }
        Ok(roots)
    }
}

/// One `rediss://` master: where it is, the name its certificate must carry, and what the
/// redis-rs connection sends after the handshake (credentials, database).
pub(crate) struct TlsEndpoint {
    host: String,
    port: u16,
    server_name: ServerName<'static>,
    config: Arc<ClientConfig>,
    pub(crate) redis: RedisConnectionInfo,
}

impl TlsEndpoint {
    /// `Err` holds a message for [`Error::InvalidConfig`] (a PEM that does not parse).
    pub(crate) fn new(
        host: String,
        port: u16,
        insecure: bool,
        redis: RedisConnectionInfo,
        options: &TlsOptions,
    ) -> Result<Self, Error> {
        let server_name = ServerName::try_from(host.clone()).map_err(|e| {
            Error::InvalidConfig(ConfigReason::Tls(format!("server name {host:?}: {e}")))
        })?;
        let config = options
            .client_config(insecure)
            .map_err(|e| Error::InvalidConfig(ConfigReason::Tls(e)))?;
        Ok(Self {
            host,
            port,
            server_name,
            config,
            redis,
        })
    }

    /// `host:port`, for duplicate detection.
    pub(crate) fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// Opens the TCP connection and runs the TLS handshake, bounded by `timeout`. A
    /// certificate that does not verify is [`MasterReply::Tls`]; anything else is the usual
    /// unavailable or timed out.
    pub(crate) async fn stream(
        &self,
        timeout: Duration,
    ) -> Result<TlsStream<TcpStream>, MasterReply> {
        let open = async {
            let tcp = TcpStream::connect((self.host.as_str(), self.port))
                .await
                .map_err(|e| MasterReply::Unavailable(e.to_string()))?;
            // Commands are small and latency-bound, as on redis-rs' own TCP connections.
            let _ = tcp.set_nodelay(true);
            tokio_rustls::TlsConnector::from(self.config.clone())
                .connect(self.server_name.clone(), tcp)
                .await
                .map_err(|e| {
                    tls_failure(&e).unwrap_or_else(|| MasterReply::Unavailable(e.to_string()))
                })
        };
        tokio::time::timeout(timeout, open)
            .await
            .unwrap_or(Err(MasterReply::TimedOut))
    }
}

/// A TLS failure inside an I/O error (the handshake, or the first read after it, which is
/// where TLS 1.3 reports a client certificate the server refused), as a reply.
pub(crate) fn tls_failure(e: &std::io::Error) -> Option<MasterReply> {
    let inner = e.get_ref()?.downcast_ref::<rustls::Error>()?;
    Some(MasterReply::Tls(inner.to_string()))
}

/// The verifier behind [`TlsOptions::dangerously_accept_invalid_certificates`] and
/// `#insecure`: accepts every certificate, but still checks that the server holds the key of
/// the one it sent (rustls needs an answer to both).
#[derive(Debug)]
struct AcceptAnyCertificate(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for AcceptAnyCertificate {
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
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::crypto::CryptoProvider;

    #[test]
    fn builds_without_a_process_default_provider() {
        // No provider was installed process-wide: building must not need one.
        assert!(CryptoProvider::get_default().is_none());
        assert!(TlsOptions::new().client_config(false).is_ok());
        assert!(TlsOptions::new().client_config(true).is_ok());
    }

    #[test]
    fn bad_pem_is_a_config_error_not_a_panic() {
        let bad = TlsOptions::new().ca_pem("not a pem");
        assert!(bad.client_config(false).unwrap_err().contains("CA PEM"));
        let bad = TlsOptions::new().client_identity_pem("", "");
        assert!(bad.client_config(false).is_err());
    }

    #[test]
    fn debug_shows_no_key_material() {
        let shown = format!(
            "{:?}",
            TlsOptions::new().client_identity_pem("CERTDATA", "KEYDATA")
        );
        assert!(
            !shown.contains("KEYDATA") && !shown.contains("CERTDATA"),
            "{shown}"
        );
    }
}
