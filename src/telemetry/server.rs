//! The operator's own HTTP endpoints (on `--health-addr`): `GET /metrics` (OpenMetrics text),
//! `GET /livez` (200 while the process runs) and `GET /readyz` (200 once the controller's caches
//! have synced, 503 before and after).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::metrics::{CONTENT_TYPE, Metrics};

/// How long [`HealthServer::shutdown`] waits for open requests before giving up on them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The address could not be bound (in use, not local, no permission).
    #[error("cannot listen on {addr} (--health-addr): {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
}

/// What `/readyz` says: the process is either starting, standing by for the leader Lease (ready:
/// it can take over), running the controller (ready once the controller's caches have synced),
/// or stopping.
#[derive(Debug, Default)]
pub struct Health {
    stage: AtomicU8,
    synced: AtomicBool,
}

// Stage 0 (the default) is starting.
const STANDBY: u8 = 1;
const RUNNING: u8 = 2;
const STOPPING: u8 = 3;

impl Health {
    /// Waiting for the leader Lease: ready (a standby can take over at any time).
    pub fn standby(&self) {
        self.stage.store(STANDBY, Ordering::SeqCst);
    }

    /// Running the controller: ready once [`Health::synced`] has been called.
    pub fn running(&self) {
        self.stage.store(RUNNING, Ordering::SeqCst);
    }

    /// The controller's caches have synced (its initial list is complete).
    pub fn synced(&self) {
        self.synced.store(true, Ordering::SeqCst);
    }

    /// Whether [`Health::synced`] has been called.
    pub fn is_synced(&self) -> bool {
        self.synced.load(Ordering::SeqCst)
    }

    /// Shutting down: not ready any more.
    pub fn stopping(&self) {
        self.stage.store(STOPPING, Ordering::SeqCst);
    }

    /// Whether `/readyz` answers 200.
    pub fn is_ready(&self) -> bool {
        match self.stage.load(Ordering::SeqCst) {
            STANDBY => true,
            RUNNING => self.synced.load(Ordering::SeqCst),
            _ => false,
        }
    }
}

#[derive(Clone)]
struct AppState {
    metrics: Arc<Metrics>,
    health: Arc<Health>,
}

/// The running server; [`HealthServer::shutdown`] stops it.
#[derive(Debug)]
pub struct HealthServer {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<std::io::Result<()>>,
}

/// Binds `addr`, logs `health server listening on ADDR` (the bound address, so port 0 is
/// discoverable), and serves until [`HealthServer::shutdown`].
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
) -> Result<HealthServer, ServerError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Bind { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| ServerError::Bind { addr, source })?;
    tracing::info!("health server listening on {bound}");
    let (stop, stopped) = oneshot::channel::<()>();
    let app = router(AppState { metrics, health });
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .await
    });
    Ok(HealthServer {
        addr: bound,
        stop,
        task,
    })
}

impl HealthServer {
    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting connections and waits (briefly) for open requests to finish.
    pub async fn shutdown(self) {
        let _ = self.stop.send(());
        let mut task = self.task;
        match tokio::time::timeout(SHUTDOWN_GRACE, &mut task).await {
            Ok(Ok(Ok(()))) => tracing::info!("health server stopped"),
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "health server failed"),
            Ok(Err(e)) => tracing::warn!(error = %e, "health server task failed"),
            Err(_) => {
                task.abort();
                tracing::warn!("health server did not stop within {SHUTDOWN_GRACE:?}; aborted");
            }
        }
    }
}

fn router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/livez", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(state)
}

async fn metrics(State(state): State<AppState>) -> Response {
    match state.metrics.encode() {
        Ok(text) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "cannot encode metrics");
            (StatusCode::INTERNAL_SERVER_ERROR, "cannot encode metrics\n").into_response()
        }
    }
}

async fn readyz(State(state): State<AppState>) -> Response {
    if state.health.is_ready() {
        (StatusCode::OK, "ok\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: starting, stopping, or the controller's caches have not synced\n",
        )
            .into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn get(addr: SocketAddr, path: &str) -> (u16, Option<String>, String) {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let response = reqwest::get(format!("http://{addr}{path}")).await.unwrap();
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        (status, content_type, response.text().await.unwrap())
    }

    #[tokio::test]
    async fn serves_metrics_liveness_and_readiness_then_stops() {
        let metrics = Arc::new(Metrics::new());
        metrics.status_written();
        let health = Arc::new(Health::default());
        let server = serve(
            "127.0.0.1:0".parse().unwrap(),
            Arc::clone(&metrics),
            Arc::clone(&health),
        )
        .await
        .unwrap();
        let addr = server.local_addr();
        assert_ne!(addr.port(), 0);

        assert_eq!(get(addr, "/livez").await.0, 200);
        assert_eq!(get(addr, "/readyz").await.0, 503);
        health.running();
        health.synced();
        assert_eq!(get(addr, "/readyz").await.0, 200);
        let (status, content_type, body) = get(addr, "/metrics").await;
        assert_eq!(status, 200);
        assert_eq!(content_type.as_deref(), Some(CONTENT_TYPE));
        assert!(body.contains("lro_status_writes_total 1\n"), "{body}");
        assert_eq!(get(addr, "/nothing").await.0, 404);

        server.shutdown().await;
        assert!(reqwest::get(format!("http://{addr}/livez")).await.is_err());
    }

    #[test]
    fn ready_when_standing_by_or_when_the_caches_synced() {
        let health = Health::default();
        assert!(!health.is_ready(), "starting");
        health.standby();
        assert!(health.is_ready(), "a standby can take over");
        health.running();
        assert!(!health.is_ready(), "leading, caches not synced yet");
        health.synced();
        assert!(health.is_ready());
        health.stopping();
        assert!(!health.is_ready());
        // Without leader election the controller runs at once.
        let single = Health::default();
        single.synced();
        assert!(!single.is_ready());
        single.running();
        assert!(single.is_ready());
    }

    #[tokio::test]
    async fn a_busy_address_is_an_error() {
        let taken = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = taken.local_addr().unwrap();
        let metrics = Arc::new(Metrics::new());
        let err = serve(addr, metrics, Arc::default()).await.unwrap_err();
        assert!(err.to_string().contains("--health-addr"), "{err}");
    }
}
