//! A certificate authority made at start (by the `openssl` command) and a server certificate
//! it signs, for peers served over HTTPS. Clients trust the authority's certificate file
//! explicitly; nothing turns verification off.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The names the server certificate is valid for: the loopback address and the hosts of
/// Azure's public cloud a client may be told to reach through the peer.
const SERVER_NAMES: &str = "IP:127.0.0.1,DNS:localhost,DNS:*.vault.azure.net,\
DNS:login.microsoftonline.com";

/// A server certificate and the authority that signed it.
pub struct PeerCertificate {
    /// The authority's certificate (PEM), the file clients trust.
    pub ca_file: PathBuf,
    acceptor: tokio_rustls::TlsAcceptor,
}

fn openssl(args: &[&str], dir: &Path) -> std::io::Result<()> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "openssl {} failed: {}",
            args.first().copied().unwrap_or_default(),
            String::from_utf8_lossy(&out.stderr)
        )))
    }
}

impl PeerCertificate {
    /// Makes an authority and a P-256 server certificate (valid two days) in `dir`, which
    /// then holds `ca.pem` (to trust), `server.pem` and `server.key`.
    pub fn generate(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ];
        let mut ca = vec!["req", "-x509"];
        ca.extend(ec);
        ca.extend([
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=Sealkit test peer authority",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
        openssl(&ca, dir)?;
        let mut csr = vec!["req"];
        csr.extend(ec);
        csr.extend([
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ]);
        openssl(&csr, dir)?;
        std::fs::write(
            dir.join("server.ext"),
            format!(
                "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n\
                 extendedKeyUsage=serverAuth\nsubjectAltName={SERVER_NAMES}\n\
                 authorityKeyIdentifier=keyid\nsubjectKeyIdentifier=hash\n"
            ),
        )?;
        openssl(
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-out",
                "server.pem",
                "-extfile",
                "server.ext",
            ],
            dir,
        )?;
        let invalid = |e: rustls::pki_types::pem::Error| std::io::Error::other(e.to_string());
        let chain = CertificateDer::pem_file_iter(dir.join("server.pem"))
            .map_err(invalid)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(invalid)?;
        let key = PrivateKeyDer::from_pem_file(dir.join("server.key")).map_err(invalid)?;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(std::io::Error::other)?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(std::io::Error::other)?;
        Ok(Self {
            ca_file: dir.join("ca.pem"),
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
        })
    }

    /// The acceptor that serves the certificate.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        self.acceptor.clone()
    }
}
