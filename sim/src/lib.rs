//! The upstream simulator: scriptable Google AIP-151 (`google.longrunning.Operation`)
//! operations and Service Management rollouts under `/v1`, Redpanda Cloud operations under
//! `/redpanda/v1`, Compute Engine under `/compute/v1`, Deployment Manager under
//! `/deploymentmanager/v2`, GKE under `/container/v1`, Azure Resource Manager under `/azure`,
//! AWS Cloud Control under `/aws`, a generic "202 + Location" job API under `/generic` (for the
//! `http` protocol), the three clouds' workload identity token exchanges (Google STS under
//! `/google-sts`, IAM Credentials under `/google-iam`, AWS STS under `/aws-sts`, Microsoft Entra
//! ID under `/azure-login`; see [`identity`]), plus a test admin API under `/sim` (stats, forced
//! outcomes, reset, credentials: [`auth`], [`identity`]). Every
//! surface answers in its cloud's wire format (see each module for the reference it follows)
//! and misbehaves on request (`simulate.faults`, `simulate.startFaults`). Tests, the demo and
//! the benchmark drive the real operator against it.

mod admin;
pub mod auth;
mod aws_cloud_control;
mod azure;
mod compute;
mod fault_plan;
mod faults;
mod gke;
mod google;
mod http;
pub mod identity;
mod paging;
mod redpanda;
mod render;
mod script;
mod state;
mod surface;
#[cfg(test)]
mod tests;
pub mod tls;

use std::io::Write as _;
use std::net::SocketAddr;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::{any, get, post};

pub use script::{Outcome, Script};
pub use state::SimState;

/// Command-line arguments of `lro-sim`.
#[derive(clap::Args, Debug, Clone)]
pub struct SimArgs {
    /// Address to listen on, e.g. 127.0.0.1:8480; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:8480")]
    pub listen: SocketAddr,
    /// Serve HTTPS with this PEM certificate chain (with `--tls-key`).
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<std::path::PathBuf>,
    /// The PEM private key of `--tls-cert`.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,
    /// Require client certificates (mTLS) signed by these PEM CA certificates.
    #[arg(long, requires = "tls_cert")]
    pub tls_client_ca: Option<std::path::PathBuf>,
}

/// Why the simulator stopped.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The TLS certificate, key or client CA could not be used.
    #[error("TLS setup failed: {0}")]
    Tls(String),
    /// Installing a signal handler failed.
    #[error("cannot install signal handler: {0}")]
    Signal(std::io::Error),
    /// Any other I/O error (announcing the address, serving).
    #[error("simulator I/O error: {0}")]
    Io(#[from] std::io::Error),
}

/// Binds `args.listen`, prints `sim listening on http://ADDR` to stdout once bound, then
/// serves until SIGTERM or SIGINT (graceful shutdown).
pub async fn run(args: SimArgs) -> Result<(), SimError> {
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|source| SimError::Bind {
            addr: args.listen,
            source,
        })?;
    let addr = listener.local_addr()?;
    let shutdown = shutdown_signal()?;
    let tls = tls::acceptor(&args)?;
    {
        let scheme = if tls.is_some() { "https" } else { "http" };
        let mut out = std::io::stdout().lock();
        writeln!(out, "sim listening on {scheme}://{addr}")?;
        out.flush()?;
    }
    tracing::info!(%addr, tls = tls.is_some(), "simulator listening");
    match tls {
        Some(acceptor) => {
            tls::serve(listener, acceptor, router(SimState::default()), shutdown).await?
        }
        None => {
            axum::serve(listener, router(SimState::default()))
                .with_graceful_shutdown(shutdown)
                .await?
        }
    }
    tracing::info!("simulator stopped");
    Ok(())
}

/// The simulator's routes over `state` (for in-process use).
pub fn router(state: SimState) -> Router {
    let auth_state = auth::AuthState::default();
    let auth_routes = Router::new()
        .route("/sim/auth", post(auth::configure))
        .route("/sim/auth/revoke", post(auth::revoke))
        .route("/sim/auth/stats", get(auth::stats))
        .route("/sim/oauth/token", post(auth::token))
        .with_state(auth_state.clone());
    let v1 = Router::new()
        .route("/v1/{*rest}", any(google::dispatch))
        .route("/redpanda/v1/{*rest}", any(redpanda::dispatch))
        .route("/compute/v1/{*rest}", any(compute::dispatch_compute))
        .route(
            "/deploymentmanager/v2/{*rest}",
            any(compute::dispatch_deployment_manager),
        )
        .route("/container/v1/{*rest}", any(gke::dispatch))
        .route("/azure/{*rest}", any(azure::dispatch))
        .route("/generic/{*rest}", any(http::dispatch))
        .route("/aws", post(aws_cloud_control::dispatch))
        .route("/aws/", post(aws_cloud_control::dispatch))
        // Credentials are checked inside the request log (a rejected request is logged too).
        .route_layer(axum::middleware::from_fn_with_state(
            auth_state.clone(),
            auth::require,
        ))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            google::log_requests,
        ));
    let admin = Router::new()
        .route("/sim/operations", post(admin::create_operation))
        .route("/sim/operations/{id}/finish", post(admin::finish))
        .route("/sim/stats", get(admin::stats))
        .route("/sim/reset", post(admin::reset));
    v1.merge(admin)
        .fallback(|| async { render::error_response(StatusCode::NOT_FOUND, "no such route") })
        .with_state(state)
        .merge(auth_routes)
        .merge(identity::routes(auth_state))
}

/// Resolves on SIGTERM or SIGINT. Handlers are installed before returning (and before the
/// "listening" line is printed), so no signal sent after that line is lost.
fn shutdown_signal() -> Result<impl Future<Output = ()>, SimError> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).map_err(SimError::Signal)?;
        let mut int = signal(SignalKind::interrupt()).map_err(SimError::Signal)?;
        Ok(async move {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM received, shutting down"),
                _ = int.recv() => tracing::info!("SIGINT received, shutting down"),
            }
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            if tokio::signal::ctrl_c().await.is_err() {
                std::future::pending::<()>().await;
            }
        })
    }
}
