//! How one simulated API answers: its operation documents, its error envelope, its "not found".
//! Faults ([`crate::faults`]) are served through it, so that every protocol misbehaves in its
//! own wire format.

use axum::http::StatusCode;
use axum::response::Response;

use crate::state::OpRecord;

/// One API surface of the simulator.
pub trait Surface: Sync {
    /// The operation as this API shows it at `now_ms`.
    fn operation(&self, op: &OpRecord, now_ms: u64) -> Response;
    /// This API's error answer with `status` and `message`.
    fn error(&self, status: StatusCode, message: &str) -> Response;
    /// This API's answer for an operation it does not know (`id` as the client named it).
    fn not_found(&self, id: &str) -> Response;
}
