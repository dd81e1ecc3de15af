//! The validating admission webhook (`lro-operator run --webhook-addr … --webhook-cert-dir …`):
//! HTTPS on its own port, `POST /validate` answering `admission.k8s.io/v1` `AdmissionReview`s
//! for `OperationProvider` and `ClusterOperationProvider`, so that a CEL expression that does not
//! compile is refused at `kubectl apply` time. What is checked lives in [`validate`]; this file
//! is the server.
//!
//! The serving certificate is `tls.crt` (the chain, PEM) and `tls.key` (PEM) in the cert
//! directory, the layout of a `kubernetes.io/tls` Secret mounted as a volume. They are read at
//! start (a missing or broken pair is an error) and read again when their modification time
//! changes, so a rotated Secret (cert-manager) is picked up without a restart. Every replica
//! serves the webhook, leader or not.

pub mod validate;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::Bytes;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use kube::core::DynamicObject;
use kube::core::admission::AdmissionReview;
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The serving certificate chain's file name in the cert directory.
pub const CERT_FILE: &str = "tls.crt";
/// The private key's file name in the cert directory.
pub const KEY_FILE: &str = "tls.key";
/// The largest `AdmissionReview` read (an object and its old version, each at most ~1.5 MiB).
const MAX_REVIEW_BYTES: usize = 8 * 1024 * 1024;
/// How long a client may take to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long [`WebhookServer::shutdown`] waits for the accept loop to stop.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Why the webhook server could not start.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// The address could not be bound.
    #[error("cannot listen on {addr} (--webhook-addr): {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The certificate or key could not be read or used.
    #[error("cannot use the webhook certificate in {dir} (--webhook-cert-dir): {why}")]
    Certificate {
        /// The cert directory.
        dir: PathBuf,
        /// What is wrong.
        why: String,
    },
}

/// The running webhook server; [`WebhookServer::shutdown`] stops it.
#[derive(Debug)]
pub struct WebhookServer {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl WebhookServer {
    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting connections (open ones finish on their own).
    pub async fn shutdown(self) {
        let _ = self.stop.send(());
        let mut task = self.task;
        if tokio::time::timeout(SHUTDOWN_GRACE, &mut task)
            .await
            .is_err()
        {
            task.abort();
        }
        tracing::info!("webhook server stopped");
    }
}

/// Reads the certificate in `cert_dir`, binds `addr`, logs `webhook server listening on ADDR`
/// (the bound address, so port 0 is discoverable) and serves `/validate` until
/// [`WebhookServer::shutdown`].
pub async fn serve(addr: SocketAddr, cert_dir: &Path) -> Result<WebhookServer, WebhookError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certificates = Certificates::load(cert_dir, Arc::clone(&provider))?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| WebhookError::Certificate {
            dir: cert_dir.to_owned(),
            why: e.to_string(),
        })?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(certificates));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| WebhookError::Bind { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| WebhookError::Bind { addr, source })?;
    tracing::info!("webhook server listening on {bound}");
    let (stop, mut stopped) = oneshot::channel::<()>();
    let app = router();
    let task = tokio::spawn(async move {
        loop {
            let (stream, peer) = tokio::select! {
                _ = &mut stopped => break,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        tracing::warn!(error = %e, "webhook server: accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let acceptor = acceptor.clone();
            let app = app.clone();
            tokio::spawn(async move {
                let tls =
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => tls,
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "webhook TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "webhook TLS handshake timed out");
                            return;
                        }
                    };
                let service = TowerToHyperService::new(app);
                if let Err(e) = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await
                {
                    tracing::debug!(%peer, error = %e, "webhook connection ended with an error");
                }
            });
        }
    });
    Ok(WebhookServer {
        addr: bound,
        stop,
        task,
    })
}

/// The webhook's routes.
pub fn router() -> Router {
    Router::new()
        .route("/validate", post(validate_handler))
        .layer(DefaultBodyLimit::max(MAX_REVIEW_BYTES))
}

async fn validate_handler(body: Bytes) -> Response {
    match serde_json::from_slice::<AdmissionReview<DynamicObject>>(&body) {
        Ok(review) => axum::Json(validate::review(review)).into_response(),
        Err(e) => (
            StatusCode::BAD_REQUEST,
            format!("not an admission.k8s.io/v1 AdmissionReview: {e}"),
        )
            .into_response(),
    }
}

/// The serving certificate, read again when its files change.
#[derive(Debug)]
struct Certificates {
    dir: PathBuf,
    provider: Arc<CryptoProvider>,
    current: Mutex<Loaded>,
}

#[derive(Debug)]
struct Loaded {
    stamp: Stamp,
    key: Arc<CertifiedKey>,
}

/// The modification times of the certificate and key files.
type Stamp = (Option<SystemTime>, Option<SystemTime>);

impl Certificates {
    fn load(dir: &Path, provider: Arc<CryptoProvider>) -> Result<Certificates, WebhookError> {
        let stamp = stamp(dir);
        let key = read(dir, &provider).map_err(|why| WebhookError::Certificate {
            dir: dir.to_owned(),
            why,
        })?;
        Ok(Certificates {
            dir: dir.to_owned(),
            provider,
            current: Mutex::new(Loaded {
                stamp,
                key: Arc::new(key),
            }),
        })
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

impl Certificates {
    /// The pair to serve: read again if a file changed since it was last read.
    fn current(&self) -> Arc<CertifiedKey> {
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        let now = stamp(&self.dir);
        if now != current.stamp {
            // A rotation may be half-written: keep serving the old pair until the new one reads.
            match read(&self.dir, &self.provider) {
                Ok(key) => {
                    tracing::info!(dir = %self.dir.display(), "webhook certificate reloaded");
                    *current = Loaded {
                        stamp: now,
                        key: Arc::new(key),
                    };
                }
                Err(why) => {
                    tracing::warn!(dir = %self.dir.display(), %why, "webhook certificate not reloaded");
                }
            }
        }
        Arc::clone(&current.key)
    }
}

fn stamp(dir: &Path) -> Stamp {
    let modified = |name| {
        std::fs::metadata(dir.join(name))
            .and_then(|m| m.modified())
            .ok()
    };
    (modified(CERT_FILE), modified(KEY_FILE))
}

/// Reads `tls.crt` and `tls.key` from `dir`.
fn read(dir: &Path, provider: &CryptoProvider) -> Result<CertifiedKey, String> {
    let cert_path = dir.join(CERT_FILE);
    let key_path = dir.join(KEY_FILE);
    let chain = CertificateDer::pem_file_iter(&cert_path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{}: {e}", cert_path.display()))?;
    if chain.is_empty() {
        return Err(format!("{}: no certificate", cert_path.display()));
    }
    let key = PrivateKeyDer::from_pem_file(&key_path)
        .map_err(|e| format!("{}: {e}", key_path.display()))?;
    CertifiedKey::from_der(chain, key, provider)
        .map_err(|e| format!("the key does not fit the certificate: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_pair(dir: &Path, name: &str) {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec![name.to_owned()]).unwrap();
        let cert = params.self_signed(&key).unwrap();
        std::fs::write(dir.join(CERT_FILE), cert.pem()).unwrap();
        std::fs::write(dir.join(KEY_FILE), key.serialize_pem()).unwrap();
    }

    #[tokio::test]
    async fn serves_reviews_over_tls() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().unwrap();
        write_pair(dir.path(), "localhost");
        let server = serve("127.0.0.1:0".parse().unwrap(), dir.path())
            .await
            .unwrap();
        let ca =
            reqwest::Certificate::from_pem(&std::fs::read(dir.path().join(CERT_FILE)).unwrap())
                .unwrap();
        let client = reqwest::Client::builder()
            .add_root_certificate(ca)
            .resolve("localhost", server.local_addr())
            .build()
            .unwrap();
        let url = format!("https://localhost:{}/validate", server.local_addr().port());
        let review = serde_json::json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "u-1",
                "kind": {"group": "lro.dev", "version": "v1alpha1", "kind": "OperationProvider"},
                "resource": {"group": "lro.dev", "version": "v1alpha1", "resource": "operationproviders"},
                "operation": "CREATE",
                "userInfo": {},
                "object": {"apiVersion": "lro.dev/v1alpha1", "kind": "OperationProvider",
                    "metadata": {"name": "p"},
                    "spec": {"baseURL": "https://x", "protocol": "http", "http": {
                        "operationFrom": "headers['location']",
                        "succeeded": "body.status ==", "failed": "false"}}},
            },
        });
        let out: serde_json::Value = client
            .post(&url)
            .json(&review)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(out["response"]["uid"], "u-1");
        assert_eq!(out["response"]["allowed"], false);
        let message = out["response"]["status"]["message"].as_str().unwrap();
        assert!(
            message.starts_with("spec.http.succeeded: Syntax error"),
            "{message}"
        );
        let garbage = client.post(&url).body("{").send().await.unwrap();
        assert_eq!(garbage.status(), 400);
        server.shutdown().await;
    }

    #[test]
    fn a_missing_or_mismatched_certificate_is_an_error() {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let dir = tempfile::tempdir().unwrap();
        let e = Certificates::load(dir.path(), Arc::clone(&provider)).unwrap_err();
        assert!(e.to_string().contains("tls.crt"), "{e}");
        write_pair(dir.path(), "a");
        let other = tempfile::tempdir().unwrap();
        write_pair(other.path(), "b");
        std::fs::copy(other.path().join(KEY_FILE), dir.path().join(KEY_FILE)).unwrap();
        let e = Certificates::load(dir.path(), provider).unwrap_err();
        assert!(e.to_string().contains("does not fit"), "{e}");
    }

    #[test]
    fn a_rotated_certificate_is_picked_up() {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let dir = tempfile::tempdir().unwrap();
        write_pair(dir.path(), "first");
        let certs = Certificates::load(dir.path(), provider).unwrap();
        let first = certs.current().cert[0].clone();
        assert_eq!(
            certs.current().cert[0],
            first,
            "unchanged files are not read again"
        );
        // A half-written rotation keeps the old pair.
        std::fs::write(dir.path().join(KEY_FILE), "not a key").unwrap();
        certs.current.lock().unwrap().stamp = (None, None);
        assert_eq!(certs.current().cert[0], first);
        write_pair(dir.path(), "second");
        certs.current.lock().unwrap().stamp = (None, None);
        assert_ne!(certs.current().cert[0], first);
    }
}
