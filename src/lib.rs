//! lro-operator: cloud long-running operations as Kubernetes objects.
//!
//! The crate is a library plus one binary. The reconcile logic ([`reconcile`]) is pure and
//! usable without a cluster; [`controller`] wires it to kube-runtime. The upstream simulator
//! used by the tests and the demo is a crate of its own (`sim/`), not part of this one.

pub mod api;
pub mod cel;
pub mod config;
pub mod controller;
pub mod nesting;
pub mod protocol;
pub mod reconcile;
pub mod telemetry;
pub mod upstream;
pub mod webhook;
