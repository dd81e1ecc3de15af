//! The validating admission webhook (`lro-operator run --webhook-addr … --webhook-cert-dir …`):
//! HTTPS on its own port, `POST /validate` answering `admission.k8s.io/v1` `AdmissionReview`s
//! for `OperationProvider`, `ClusterOperationProvider` and `LongRunningOperation`, so that a CEL
//! expression that does not compile is refused at `kubectl apply` time. What is checked lives in
//! [`validate`]; this file is the server.
//!
//! The serving certificate is `tls.crt` (the chain, PEM) and `tls.key` (PEM) in the cert
//! directory, the layout of a `kubernetes.io/tls` Secret mounted as a volume. They are read at
//! start (a missing or broken pair is an error) and read again when their modification time
//! changes, so a rotated Secret (cert-manager) is picked up without a restart. Every replica
//! serves the webhook, leader or not.
//!
//! # Limits
//!
//! Anything that can reach the port can talk to the server, so what a client can hold is bounded
//! ([`Limits`]; the defaults in parentheses), and nothing it sends can starve the rest of the
//! process (the controllers and the leader Lease renewal share the runtime):
//!
//! - **Connections** (64 open): over the bound, a new connection is closed as soon as it is
//!   accepted. The TLS handshake has a deadline (5 s). HTTP/1.1 (ALPN `http/1.1`, or none) has
//!   one for a request's headers (10 s), counted from the end of the previous request, so it also
//!   closes an idle keep-alive connection. HTTP/2 (ALPN `h2`) takes at most 8 concurrent streams
//!   per connection. A connection of either protocol with no request in progress for the idle
//!   timeout (30 s) is closed, and dropped if it has not finished closing after a grace (5 s: a
//!   client that does not read its answer).
//! - **Bodies** (1 MiB, [`MAX_REVIEW_BYTES`]): a `Content-Length` over the cap is answered `413`
//!   before any of the body is read; a chunked body is read up to the cap, then `413`. A body
//!   must arrive within a deadline (10 s; `408` otherwise), and the bodies being read or checked
//!   at once share a memory budget (16 MiB; `503` when it is spent).
//! - **Checks** (2 at once): parsing a review and compiling its expressions is CPU work that
//!   blocks (the CEL parser runs on a thread of its own), so it runs on the blocking pool, never
//!   on the async workers. A request that finds no check free within a short wait (1 s) is
//!   answered `503 Service Unavailable` with `Retry-After: 1` rather than queued. For the
//!   apiserver that is a failed call, so the webhook's `failurePolicy` decides: `Fail` refuses
//!   the change (the client may retry), `Ignore` admits it unchecked (the object's status then
//!   reports an expression that does not compile).
//!
//! A review over the cap is also a failed call, left to `failurePolicy`. An operator object's
//! review (the object, its old version and their `managedFields`) is a few KiB; 1 MiB leaves room
//! for a `spec.start.body` of hundreds of KiB, and is below the apiserver's own 3 MiB request
//! limit so that the worst case fits the chart's 256 MiB memory limit: 16 MiB of bodies, two
//! reviews being parsed (JSON parsed into values takes up to ~32 times its text: ~64 MiB), and
//! small per-connection buffers (HTTP/1.1 reads at most 64 KiB ahead; HTTP/2 flow-control windows
//! are 64 KiB per stream, 256 KiB per connection).

pub mod validate;

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::{Body, HttpBody};
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use futures::StreamExt;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
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
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// The serving certificate chain's file name in the cert directory.
pub const CERT_FILE: &str = "tls.crt";
/// The private key's file name in the cert directory.
pub const KEY_FILE: &str = "tls.key";
/// The largest `AdmissionReview` read by default (see the module documentation for why).
pub const MAX_REVIEW_BYTES: usize = 1024 * 1024;
/// How long [`WebhookServer::shutdown`] waits for the accept loop to stop.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// How far ahead HTTP/1.1 reads (and so the longest request head).
const HTTP1_BUFFER_BYTES: usize = 64 * 1024;
/// HTTP/2 flow-control windows: what a client may send before the server reads it.
const H2_STREAM_WINDOW: u32 = 64 * 1024;
const H2_CONNECTION_WINDOW: u32 = 256 * 1024;

/// What one client, or all of them together, may hold of the server. [`Limits::default`] is what
/// `lro-operator run` uses; the module documentation says why.
#[derive(Clone, Debug)]
pub struct Limits {
    /// The largest request body read; over it, `413 Payload Too Large`.
    pub max_body_bytes: usize,
    /// The bytes of all request bodies being read or checked at once; over it, `503`.
    pub max_buffered_bytes: usize,
    /// Open connections (TLS handshakes included); over it, a new connection is closed at once.
    pub max_connections: usize,
    /// Concurrent requests on one HTTP/2 connection.
    pub max_streams_per_connection: u32,
    /// Reviews parsed and checked at once, each on a thread of the blocking pool.
    pub max_compilations: usize,
    /// How long a request waits for one of [`Limits::max_compilations`] before it is answered
    /// `503`.
    pub compile_wait: Duration,
    /// How long a client may take to finish the TLS handshake.
    pub handshake_timeout: Duration,
    /// HTTP/1.1: how long a client may take to send a request's headers, counted from the end of
    /// the previous request (so also how long a keep-alive connection may stay idle).
    pub header_read_timeout: Duration,
    /// How long a client may take to send a request's body; over it, `408 Request Timeout`.
    pub body_read_timeout: Duration,
    /// How long a connection may go without a request in progress before it is closed.
    pub idle_timeout: Duration,
    /// How long a connection being closed (idle) may take to finish; then it is dropped.
    pub close_grace: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: MAX_REVIEW_BYTES,
            max_buffered_bytes: 16 * MAX_REVIEW_BYTES,
            max_connections: 64,
            max_streams_per_connection: 8,
            max_compilations: 2,
            compile_wait: Duration::from_secs(1),
            handshake_timeout: Duration::from_secs(5),
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            close_grace: Duration::from_secs(5),
        }
    }
}

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

    /// Stops accepting connections (open ones finish on their own, within the [`Limits`]).
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
/// (the bound address, so port 0 is discoverable) and serves `/validate` with the default
/// [`Limits`] until [`WebhookServer::shutdown`].
pub async fn serve(addr: SocketAddr, cert_dir: &Path) -> Result<WebhookServer, WebhookError> {
    serve_with(addr, cert_dir, Limits::default()).await
}

/// [`serve`] with other [`Limits`].
pub async fn serve_with(
    addr: SocketAddr,
    cert_dir: &Path,
    limits: Limits,
) -> Result<WebhookServer, WebhookError> {
    start(addr, cert_dir, Arc::new(Shared::new(limits))).await
}

/// What the connections and requests of one server share.
#[derive(Debug)]
struct Shared {
    limits: Limits,
    /// One permit per open connection.
    connections: Arc<Semaphore>,
    /// One permit per byte of request body held.
    buffered: Arc<Semaphore>,
    /// One permit per review being checked.
    compilations: Arc<Semaphore>,
}

impl Shared {
    fn new(limits: Limits) -> Shared {
        Shared {
            connections: Arc::new(Semaphore::new(limits.max_connections)),
            buffered: Arc::new(Semaphore::new(
                limits.max_buffered_bytes.min(Semaphore::MAX_PERMITS),
            )),
            compilations: Arc::new(Semaphore::new(limits.max_compilations)),
            limits,
        }
    }
}

async fn start(
    addr: SocketAddr,
    cert_dir: &Path,
    shared: Arc<Shared>,
) -> Result<WebhookServer, WebhookError> {
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
    let app = router_with(Arc::clone(&shared));
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
            let Ok(permit) = Arc::clone(&shared.connections).try_acquire_owned() else {
                tracing::debug!(
                    %peer,
                    max = shared.limits.max_connections,
                    "webhook connection refused: too many open connections"
                );
                drop(stream);
                continue;
            };
            let acceptor = acceptor.clone();
            let app = app.clone();
            let limits = shared.limits.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let tls =
                    match tokio::time::timeout(limits.handshake_timeout, acceptor.accept(stream))
                        .await
                    {
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
                serve_connection(tls, app, &limits, peer).await;
            });
        }
    });
    Ok(WebhookServer {
        addr: bound,
        stop,
        task,
    })
}

/// Serves one TLS connection, HTTP/2 when ALPN chose it, else HTTP/1.1, until the client closes
/// it, a deadline of `limits` passes, or it stays idle for `limits.idle_timeout`.
async fn serve_connection(
    tls: tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
    app: Router,
    limits: &Limits,
    peer: SocketAddr,
) {
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2".as_slice());
    let activity = Arc::new(Activity::default());
    let service = TowerToHyperService::new(Tracked {
        inner: app,
        activity: Arc::clone(&activity),
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(HTTP1_BUFFER_BYTES);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_streams_per_connection)
        .initial_stream_window_size(H2_STREAM_WINDOW)
        .initial_connection_window_size(H2_CONNECTION_WINDOW);
    let builder = if h2 {
        builder.http2_only()
    } else {
        builder.http1_only()
    };
    let connection = builder.serve_connection(TokioIo::new(tls), service);
    tokio::pin!(connection);
    tokio::select! {
        ended = connection.as_mut() => {
            if let Err(e) = ended {
                tracing::debug!(%peer, error = %e, "webhook connection ended with an error");
            }
            return;
        }
        () = activity.idle_for(limits.idle_timeout) => {}
    }
    tracing::debug!(%peer, "webhook connection idle: closing it");
    connection.as_mut().graceful_shutdown();
    if tokio::time::timeout(limits.close_grace, connection)
        .await
        .is_err()
    {
        tracing::debug!(%peer, "webhook connection did not close in time: dropped");
    }
}

/// The requests in progress on one connection, and when the last one ended.
#[derive(Debug)]
struct Activity {
    in_progress: AtomicUsize,
    last_ended: Mutex<Instant>,
    changed: Notify,
}

impl Default for Activity {
    fn default() -> Self {
        Activity {
            in_progress: AtomicUsize::new(0),
            last_ended: Mutex::new(Instant::now()),
            changed: Notify::new(),
        }
    }
}

impl Activity {
    /// Counts a request until the returned guard is dropped.
    fn begin(self: &Arc<Self>) -> InProgress {
        self.in_progress.fetch_add(1, Ordering::SeqCst);
        self.changed.notify_waiters();
        InProgress(Arc::clone(self))
    }

    /// Resolves once no request has been in progress for `idle`.
    async fn idle_for(&self, idle: Duration) {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            // Registered before the state is read, so no change is missed.
            changed.as_mut().enable();
            if self.in_progress.load(Ordering::SeqCst) > 0 {
                changed.await;
                continue;
            }
            let deadline = *self.last_ended.lock().unwrap_or_else(|e| e.into_inner()) + idle;
            tokio::select! {
                () = changed => {}
                () = tokio::time::sleep_until(deadline) => return,
            }
        }
    }
}

/// A request in progress on a connection (see [`Activity::begin`]).
struct InProgress(Arc<Activity>);

impl Drop for InProgress {
    fn drop(&mut self) {
        *self.0.last_ended.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
        self.0.in_progress.fetch_sub(1, Ordering::SeqCst);
        self.0.changed.notify_waiters();
    }
}

/// A service that counts its requests in an [`Activity`] while they are answered.
#[derive(Clone)]
struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S, R> tower::Service<R> for Tracked<S>
where
    S: tower::Service<R>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: R) -> Self::Future {
        let in_progress = self.activity.begin();
        let answer = self.inner.call(request);
        Box::pin(async move {
            let answer = answer.await;
            drop(in_progress);
            answer
        })
    }
}

/// The webhook's routes, with the default [`Limits`] for bodies and checks (the connection
/// limits are the server's: see [`serve`]).
pub fn router() -> Router {
    router_with(Arc::new(Shared::new(Limits::default())))
}

fn router_with(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/validate", post(validate_handler))
        .with_state(shared)
}

/// A request answered with something else than a review.
fn refuse(status: StatusCode, message: impl Into<String>) -> Response {
    let mut response = (status, message.into()).into_response();
    if status == StatusCode::SERVICE_UNAVAILABLE {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
    }
    response
}

async fn validate_handler(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let limits = &shared.limits;
    let body = request.into_body();
    let (body, held) = match tokio::time::timeout(
        limits.body_read_timeout,
        read_body(body, limits.max_body_bytes, &shared.buffered),
    )
    .await
    {
        Ok(Ok(read)) => read,
        Ok(Err(refusal)) => return refusal,
        Err(_) => {
            tracing::debug!("webhook request refused: the body was not sent in time");
            return refuse(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the request body was not received within {:?}",
                    limits.body_read_timeout
                ),
            );
        }
    };
    let permit = match tokio::time::timeout(
        limits.compile_wait,
        Arc::clone(&shared.compilations).acquire_owned(),
    )
    .await
    {
        Ok(Ok(permit)) => permit,
        Ok(Err(_)) | Err(_) => {
            tracing::warn!(
                max = limits.max_compilations,
                "webhook busy: a review waited {:?} for a check to finish, answered 503",
                limits.compile_wait
            );
            return refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "the webhook is busy checking other objects; try again",
            );
        }
    };
    let checked = tokio::task::spawn_blocking(move || {
        let answer = answer(&body);
        drop((body, held, permit));
        answer
    })
    .await;
    match checked {
        Ok(answer) => answer,
        Err(e) => {
            tracing::error!(error = %e, "webhook check failed");
            refuse(StatusCode::INTERNAL_SERVER_ERROR, "the check failed")
        }
    }
}

/// Reads a body of at most `max` bytes, its bytes counted in `budget` while it is held (the
/// announced length is reserved before anything is read).
async fn read_body(
    body: Body,
    max: usize,
    budget: &Arc<Semaphore>,
) -> Result<(Vec<u8>, OwnedSemaphorePermit), Response> {
    let too_large = || {
        tracing::warn!(max, "webhook request refused: the body is over the limit");
        refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("an AdmissionReview is at most {max} bytes"),
        )
    };
    let busy = || {
        tracing::warn!("webhook busy: request bodies fill the memory budget, answered 503");
        refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "the webhook is busy reading other requests; try again",
        )
    };
    let reserve = |bytes: usize| {
        u32::try_from(bytes)
            .ok()
            .and_then(|n| Arc::clone(budget).try_acquire_many_owned(n).ok())
    };
    // `Content-Length` (HTTP/1.1 and HTTP/2 alike): refused before anything is read.
    let announced = match usize::try_from(body.size_hint().lower()) {
        Ok(announced) if announced <= max => announced,
        _ => return Err(too_large()),
    };
    let mut held = reserve(announced).ok_or_else(busy)?;
    let mut bytes = Vec::with_capacity(announced);
    let mut chunks = body.into_data_stream();
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(|e| {
            refuse(
                StatusCode::BAD_REQUEST,
                format!("cannot read the request body: {e}"),
            )
        })?;
        if chunk.len() > max - bytes.len() {
            return Err(too_large());
        }
        let needed = (bytes.len() + chunk.len()).saturating_sub(held.num_permits());
        if needed > 0 {
            held.merge(reserve(needed).ok_or_else(busy)?);
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok((bytes, held))
}

/// Parses, checks and encodes a review: the blocking part, run on the blocking pool.
fn answer(body: &[u8]) -> Response {
    // Parts nested too deep for the operator to read become a marker the checks refuse (see
    // `crate::nesting`): a clear denial instead of a parse error.
    let mut pruned = Vec::with_capacity(body.len());
    crate::nesting::Pruner::default().feed(body, &mut pruned);
    let review = match serde_json::from_slice::<AdmissionReview<DynamicObject>>(&pruned) {
        Ok(review) => review,
        Err(e) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                format!("not an admission.k8s.io/v1 AdmissionReview: {e}"),
            );
        }
    };
    match serde_json::to_vec(&validate::review(review)) {
        Ok(json) => ([(header::CONTENT_TYPE, "application/json")], json).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "webhook: cannot encode a review");
            refuse(
                StatusCode::INTERNAL_SERVER_ERROR,
                "cannot encode the review",
            )
        }
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
    use std::sync::atomic::AtomicBool;

    use serde_json::{Value, json};
    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

    use super::*;

    fn write_pair(dir: &Path, name: &str) {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec![name.to_owned()]).unwrap();
        let cert = params.self_signed(&key).unwrap();
        std::fs::write(dir.join(CERT_FILE), cert.pem()).unwrap();
        std::fs::write(dir.join(KEY_FILE), key.serialize_pem()).unwrap();
    }

    /// A server on a free port of 127.0.0.1, with a certificate for `localhost`.
    struct Fixture {
        server: WebhookServer,
        _dir: tempfile::TempDir,
        ca: Vec<u8>,
    }

    async fn fixture(limits: Limits) -> Fixture {
        fixture_sharing(Arc::new(Shared::new(limits))).await
    }

    async fn fixture_sharing(shared: Arc<Shared>) -> Fixture {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().unwrap();
        write_pair(dir.path(), "localhost");
        let server = start("127.0.0.1:0".parse().unwrap(), dir.path(), shared)
            .await
            .unwrap();
        let ca = std::fs::read(dir.path().join(CERT_FILE)).unwrap();
        Fixture {
            server,
            _dir: dir,
            ca,
        }
    }

    impl Fixture {
        fn client(&self) -> reqwest::Client {
            reqwest::Client::builder()
                .add_root_certificate(reqwest::Certificate::from_pem(&self.ca).unwrap())
                .resolve("localhost", self.server.local_addr())
                .build()
                .unwrap()
        }

        fn url(&self) -> String {
            format!(
                "https://localhost:{}/validate",
                self.server.local_addr().port()
            )
        }

        /// A raw TLS connection offering `alpn`.
        async fn tls(
            &self,
            alpn: &[&[u8]],
        ) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(&self.ca) {
                roots.add(cert.unwrap()).unwrap();
            }
            let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
            config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
            let tcp = tokio::net::TcpStream::connect(self.server.local_addr()).await?;
            let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
            tokio_rustls::TlsConnector::from(Arc::new(config))
                .connect(name, tcp)
                .await
        }

        /// A raw HTTP/1.1 connection.
        async fn http1(&self) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
            self.tls(&[b"http/1.1"]).await.unwrap()
        }
    }

    /// Reads until the server closes the connection, for at most `within`: what it sent and
    /// when it closed, or `None` if it is still open.
    async fn closed_within(
        stream: &mut (impl AsyncRead + Unpin),
        within: Duration,
    ) -> Option<(Duration, String)> {
        let started = std::time::Instant::now();
        let mut received = Vec::new();
        let read = async {
            let mut buf = [0; 4096];
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => received.extend_from_slice(&buf[..n]),
                }
            }
        };
        tokio::time::timeout(within, read).await.ok()?;
        Some((
            started.elapsed(),
            String::from_utf8_lossy(&received).into_owned(),
        ))
    }

    fn review(kind: &str, resource: &str, object: Value) -> Value {
        json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "u-1",
                "kind": {"group": "lro.dev", "version": "v1alpha1", "kind": kind},
                "resource": {"group": "lro.dev", "version": "v1alpha1", "resource": resource},
                "operation": "CREATE",
                "userInfo": {},
                "object": object,
            },
        })
    }

    #[tokio::test]
    async fn a_body_nested_too_deep_is_denied_saying_so() {
        let marker = "\"DEEP\"";
        let object = json!({"apiVersion": "lro.dev/v1alpha1", "kind": "LongRunningOperation",
            "metadata": {"name": "o", "namespace": "n"},
            "spec": {"providerRef": {"name": "p"}, "start": {"path": "x", "body": "DEEP"}}});
        let deep = format!("{}1{}", "{\"a\":".repeat(5000), "}".repeat(5000));
        let text = review("LongRunningOperation", "longrunningoperations", object)
            .to_string()
            .replace(marker, &deep);
        let response = answer(text.as_bytes());
        assert_eq!(response.status(), StatusCode::OK);
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("body");
        let out: Value = serde_json::from_slice(&bytes).expect("a review");
        assert_eq!(out["response"]["allowed"], false, "{out}");
        let message = out["response"]["status"]["message"]
            .as_str()
            .unwrap_or_default();
        assert!(
            message.contains("spec.start.body is nested deeper"),
            "{message}"
        );
    }

    fn provider_review(succeeded: &str) -> Value {
        review(
            "OperationProvider",
            "operationproviders",
            json!({"apiVersion": "lro.dev/v1alpha1", "kind": "OperationProvider",
                "metadata": {"name": "p"},
                "spec": {"baseURL": "https://x", "protocol": "http", "http": {
                    "operationFrom": "headers['location']",
                    "succeeded": succeeded, "failed": "false"}}}),
        )
    }

    /// An operation with `templates` `${…}` templates of 4 KiB each (a list literal): about 70 ms
    /// of compiling each in a debug build.
    fn heavy_review(templates: usize) -> Value {
        let list = format!("${{[{}1]}}", "1,".repeat(2000));
        let body: serde_json::Map<String, Value> = (0..templates)
            .map(|i| (format!("f{i}"), json!(list)))
            .collect();
        review(
            "LongRunningOperation",
            "longrunningoperations",
            json!({"apiVersion": "lro.dev/v1alpha1", "kind": "LongRunningOperation",
                "metadata": {"name": "o", "namespace": "n"},
                "spec": {"providerRef": {"name": "p"}, "start": {"path": "x", "body": body}}}),
        )
    }

    /// Short deadlines, so that tests of them take a fraction of a second.
    fn quick() -> Limits {
        Limits {
            max_body_bytes: 64 * 1024,
            handshake_timeout: Duration::from_millis(300),
            header_read_timeout: Duration::from_millis(300),
            body_read_timeout: Duration::from_millis(300),
            idle_timeout: Duration::from_millis(300),
            close_grace: Duration::from_millis(300),
            ..Limits::default()
        }
    }

    /// The most a deadline of [`quick`] may be overshot on a loaded machine.
    const SLACK: Duration = Duration::from_secs(2);

    #[tokio::test]
    async fn serves_reviews_over_tls() {
        let f = fixture(Limits::default()).await;
        let client = f.client();
        let out: Value = client
            .post(f.url())
            .json(&provider_review("body.status =="))
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
        let garbage = client.post(f.url()).body("{").send().await.unwrap();
        assert_eq!(garbage.status(), 400);
        f.server.shutdown().await;
    }

    #[tokio::test]
    async fn an_oversized_body_is_refused_before_it_is_read() {
        let f = fixture(quick()).await;
        let max = quick().max_body_bytes;

        // Announced by Content-Length: 413 without sending a byte of the body.
        let mut conn = f.http1().await;
        let head = format!(
            "POST /validate HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n\
             content-length: {}\r\n\r\n",
            10 * max
        );
        conn.write_all(head.as_bytes()).await.unwrap();
        let (took, answer) = closed_within(&mut conn, SLACK)
            .await
            .expect("the connection is closed");
        assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
        assert!(took < Duration::from_millis(250), "{took:?}");

        // Chunked: refused as soon as the cap is passed, though the body has not ended.
        let mut conn = f.http1().await;
        conn.write_all(
            b"POST /validate HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n\
              transfer-encoding: chunked\r\n\r\n",
        )
        .await
        .unwrap();
        let chunk = vec![b' '; 8 * 1024];
        for _ in 0..=max / chunk.len() {
            conn.write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
                .await
                .unwrap();
            conn.write_all(&chunk).await.unwrap();
            conn.write_all(b"\r\n").await.unwrap();
        }
        let started = std::time::Instant::now();
        let (_, answer) = closed_within(&mut conn, SLACK)
            .await
            .expect("the connection is closed");
        assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
        assert!(started.elapsed() < Duration::from_millis(250));

        // HTTP/2, through a client: the same.
        let response = f
            .client()
            .post(f.url())
            .body(vec![b' '; 2 * max])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 413);
        f.server.shutdown().await;
    }

    #[tokio::test]
    async fn the_default_cap_is_one_mebibyte() {
        let f = fixture(Limits::default()).await;
        let started = std::time::Instant::now();
        let response = f
            .client()
            .post(f.url())
            .body(vec![b' '; MAX_REVIEW_BYTES + 1])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 413);
        assert!(started.elapsed() < SLACK);
        // Just under the cap: read, and answered as JSON that is not a review.
        let response = f
            .client()
            .post(f.url())
            .body(vec![b' '; MAX_REVIEW_BYTES])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400);
        f.server.shutdown().await;
    }

    #[tokio::test]
    async fn clients_that_stall_are_disconnected() {
        let limits = quick();
        let f = fixture(limits.clone()).await;
        let at_least = Duration::from_millis(250);

        // A TCP connection that never starts TLS.
        let mut tcp = tokio::net::TcpStream::connect(f.server.local_addr())
            .await
            .unwrap();
        let (took, _) = closed_within(&mut tcp, SLACK).await.expect("closed");
        assert!(took >= at_least, "{took:?}");

        // Half the request headers.
        let mut conn = f.http1().await;
        conn.write_all(b"POST /validate HTTP/1.1\r\nhost: local")
            .await
            .unwrap();
        let (took, _) = closed_within(&mut conn, SLACK).await.expect("closed");
        assert!(took >= at_least, "{took:?}");

        // The headers, then part of the body.
        let mut conn = f.http1().await;
        conn.write_all(
            b"POST /validate HTTP/1.1\r\nhost: localhost\r\ncontent-length: 100\r\n\r\n{",
        )
        .await
        .unwrap();
        let (took, answer) = closed_within(&mut conn, SLACK).await.expect("closed");
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(took >= at_least, "{took:?}");

        // A request answered, then nothing: the keep-alive connection is closed.
        let mut conn = f.http1().await;
        conn.write_all(b"POST /validate HTTP/1.1\r\nhost: localhost\r\ncontent-length: 1\r\n\r\n{")
            .await
            .unwrap();
        let (took, answer) = closed_within(&mut conn, SLACK).await.expect("closed");
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
        assert!(took >= at_least, "{took:?}");

        // HTTP/2 chosen, and not a byte sent (not even the preface).
        let mut conn = f.tls(&[b"h2"]).await.unwrap();
        assert_eq!(conn.get_ref().1.alpn_protocol(), Some(b"h2".as_slice()));
        let (took, _) = closed_within(&mut conn, SLACK).await.expect("closed");
        assert!(took >= at_least, "{took:?}");

        // The server still answers.
        let ok = f
            .client()
            .post(f.url())
            .json(&provider_review("true"))
            .send()
            .await
            .unwrap();
        assert_eq!(ok.status(), 200);
        f.server.shutdown().await;
    }

    #[tokio::test]
    async fn connections_over_the_bound_are_closed_at_once() {
        let f = fixture(Limits {
            max_connections: 2,
            ..Limits::default()
        })
        .await;
        let first = f.http1().await;
        let _second = f.http1().await;
        let started = std::time::Instant::now();
        let third = f.tls(&[b"http/1.1"]).await;
        assert!(third.is_err(), "a third connection is refused");
        assert!(started.elapsed() < Duration::from_millis(500));
        // Once one closes, a new connection is served.
        drop(first);
        let deadline = std::time::Instant::now() + SLACK;
        loop {
            let answer = f
                .client()
                .post(f.url())
                .json(&provider_review("true"))
                .send()
                .await;
            if let Ok(answer) = answer {
                assert_eq!(answer.status(), 200);
                break;
            }
            assert!(std::time::Instant::now() < deadline, "{answer:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        f.server.shutdown().await;
    }

    #[tokio::test]
    async fn a_busy_webhook_answers_503_for_the_failure_policy() {
        let shared = Arc::new(Shared::new(Limits {
            max_compilations: 1,
            compile_wait: Duration::from_millis(100),
            max_buffered_bytes: 64 * 1024,
            ..Limits::default()
        }));
        let f = fixture_sharing(Arc::clone(&shared)).await;
        let client = f.client();
        // Every check in use: a review waits `compile_wait`, then 503.
        let busy = Arc::clone(&shared.compilations)
            .acquire_owned()
            .await
            .unwrap();
        let started = std::time::Instant::now();
        let answer = client
            .post(f.url())
            .json(&provider_review("true"))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 503);
        assert_eq!(answer.headers()["retry-after"], "1");
        assert!(started.elapsed() >= Duration::from_millis(100));
        drop(busy);
        let answer = client
            .post(f.url())
            .json(&provider_review("true"))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200);
        // Bodies over the memory budget: 503 too.
        let answer = client
            .post(f.url())
            .body(vec![b' '; 100 * 1024])
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 503);
        f.server.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn heavy_checks_do_not_starve_the_runtime() {
        let f = fixture(Limits {
            compile_wait: Duration::from_secs(60),
            ..Limits::default()
        })
        .await;
        let client = f.client();
        let heavy = heavy_review(8);
        let stop = Arc::new(AtomicBool::new(false));
        let period = Duration::from_millis(10);
        let heartbeat = tokio::spawn({
            let stop = Arc::clone(&stop);
            async move {
                let mut latest = Duration::ZERO;
                while !stop.load(Ordering::SeqCst) {
                    let slept = std::time::Instant::now();
                    tokio::time::sleep(period).await;
                    latest = latest.max(slept.elapsed().saturating_sub(period));
                }
                latest
            }
        });
        let started = std::time::Instant::now();
        let reviews = 6;
        let answers = futures::future::join_all((0..reviews).map(|_| async {
            let answer = client.post(f.url()).json(&heavy).send().await.unwrap();
            assert_eq!(answer.status(), 200);
            let answer: Value = answer.json().await.unwrap();
            assert_eq!(answer["response"]["allowed"], true, "{answer}");
        }));
        answers.await;
        let took = started.elapsed();
        stop.store(true, Ordering::SeqCst);
        let latest = heartbeat.await.unwrap();
        eprintln!("{reviews} heavy reviews in {took:?}; the heartbeat was at most {latest:?} late");
        assert!(
            latest < Duration::from_millis(200),
            "the heartbeat was {latest:?} late while the reviews took {took:?}"
        );
        f.server.shutdown().await;
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
