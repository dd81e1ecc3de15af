//! Leader election and failover, end to end: two `lro-operator run` replicas compete for a Lease
//! in the test namespace; only the holder polls and starts. See `testkit/` for the harness.
//!
//! Run with `cargo test --test leader`. Like `tests/e2e.rs`, it uses `LRO_E2E_KUBECONFIG` or
//! starts a shared control plane; the apiserver-restart test starts a control plane of its own
//! (and stops it), so restarting it disturbs no other test.

use lro_testkit as support;

use std::time::Duration;

use lro_operator::api::{LongRunningOperation, Phase};
use lro_operator::reconcile::Schedule;
use serde_json::{Value, json};
use support::leader::{ControlPlane, Replica, holder, transitions};
use support::{PROVIDER, TestEnv, phase_of, unix_ms};

/// Lease duration of the replicas in the failover tests: a takeover takes at most this long
/// (plus the time to see the Lease expired and take it).
const LEASE: Duration = Duration::from_secs(6);
/// What a takeover may take beyond the lease duration: kube-lease-manager waits up to 1 s after
/// releasing an expired Lease before taking it, plus API round trips on a loaded machine.
const TAKEOVER_MARGIN: Duration = Duration::from_secs(3);
const TIMEOUT: Duration = Duration::from_secs(60);
const OPERATIONS: usize = 3;
const A: &str = "replica-a";
const B: &str = "replica-b";

/// The poll schedule of every operation here (no jitter, so GETs can be counted).
fn schedule() -> Schedule {
    Schedule {
        initial: Duration::from_secs(1),
        max: Duration::from_secs(2),
        multiplier: 1.5,
        jitter: 0.0,
    }
}

/// An operation started by POSTing to the simulator, done after `seconds`, without progress (so
/// nothing resets the schedule between RUNNING and DONE).
fn started(name: &str, seconds: u64) -> String {
    json!({
        "apiVersion": "lro.dev/v1alpha1",
        "kind": "LongRunningOperation",
        "metadata": {"name": name},
        "spec": {
            "providerRef": {"name": PROVIDER},
            "start": {
                "path": "projects/demo/clusters",
                "body": {"simulate": {"durationSeconds": seconds, "progress": false}},
            },
            "polling": {"initialInterval": "1s", "maxInterval": "2s", "multiplier": 1.5, "jitter": 0},
        },
    })
    .to_string()
}

fn names() -> Vec<String> {
    (1..=OPERATIONS).map(|i| format!("op-{i}")).collect()
}

/// An environment whose own operator is stopped, with replicas A and B running.
async fn two_replicas(env: &mut TestEnv, lease: Duration) -> (Replica, Replica) {
    // The environment's operator runs without leader election: it must not poll anything here.
    // It is stopped before any operation exists.
    env.kill_operator().await;
    (env.start_replica(A, lease), env.start_replica(B, lease))
}

async fn apply_all(env: &TestEnv, seconds: u64) {
    for name in names() {
        env.apply(&started(&name, seconds)).await.assert_ok();
    }
}

async fn wait_all(env: &TestEnv, what: &str, predicate: fn(&LongRunningOperation) -> bool) {
    for name in names() {
        env.wait_for(&name, what, TIMEOUT, predicate).await;
    }
}

fn running_with_handle(op: &LongRunningOperation) -> bool {
    phase_of(op) == Some(Phase::Running) && upstream_name(op).is_some()
}

fn succeeded(op: &LongRunningOperation) -> bool {
    phase_of(op) == Some(Phase::Succeeded)
}

fn upstream_name(op: &LongRunningOperation) -> Option<String> {
    op.status.as_ref()?.operation.as_ref()?.name.clone()
}

/// The simulator's stats of each operation, by object name.
async fn upstream_ops(env: &TestEnv) -> Vec<(String, Value)> {
    let mut ops = Vec::new();
    for name in names() {
        let upstream = upstream_name(&env.get(&name).await).expect("status.operation.name");
        ops.push((name, env.sim_operation(&upstream).await));
    }
    ops
}

/// One start per operation, never repeated.
#[track_caller]
fn assert_started_once(stats: &Value) {
    assert_eq!(stats["creates"], OPERATIONS, "{stats:#}");
    assert_eq!(stats["duplicateCreates"], 0, "{stats:#}");
}

fn get_times(sim: &Value) -> Vec<u64> {
    let times = sim["getTimesMs"].as_array().expect("getTimesMs");
    times.iter().filter_map(Value::as_u64).collect()
}

/// GETs one operation costs on the schedule: its points from the start (point 0) to done, minus
/// the start, plus the first point after done.
fn expected_gets(sim: &Value) -> u64 {
    let created = sim["createdAtMs"].as_u64().expect("createdAtMs");
    let done = sim["doneAtMs"].as_u64().expect("doneAtMs");
    schedule().polls_within(done.saturating_sub(created) as f64 / 1000.0, 0)
}

#[tokio::test]
async fn only_the_leader_polls_and_starts() {
    let mut env = TestEnv::new("leader-one").await;
    let (mut a, mut b) = two_replicas(&mut env, LEASE).await;
    let leader = env.wait_leader(&[A, B], TIMEOUT).await;
    apply_all(&env, 6).await;
    wait_all(&env, "Succeeded", succeeded).await;

    assert_started_once(&env.sim_stats().await);
    for (name, sim) in upstream_ops(&env).await {
        let gets = sim["gets"].as_u64().expect("gets");
        let expected = expected_gets(&sim);
        eprintln!("{name}: {gets} GETs, the schedule makes {expected}");
        assert!(
            gets.abs_diff(expected) <= 1,
            "{name}: {gets} GETs, expected {expected} ± 1 (one poller): {sim:#}"
        );
    }
    let lease = env.lease().await.expect("the Lease exists");
    assert_eq!(holder(&lease).as_deref(), Some(leader.as_str()));
    assert_eq!(transitions(&lease), 1, "the Lease never changed hands");
    assert!(a.is_running() && b.is_running(), "both replicas still run");
    let (old, standby) = if leader == A {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };
    let log = standby.log();
    assert!(log.contains("waiting to become the leader"), "{log}");
    assert!(!log.contains("became the leader"), "{log}");

    // A graceful stop (a rolling update) releases the Lease: the standby takes it at once, not
    // after the lease duration.
    let stopped_at = unix_ms();
    old.signal("TERM");
    let status = old.wait_exit(Duration::from_secs(10)).await;
    assert!(
        status.is_some_and(|s| s.success()),
        "the leader exits 0 on SIGTERM: {status:?}"
    );
    env.wait_leader(&[standby.identity.as_str()], TIMEOUT).await;
    let handover = Duration::from_millis(unix_ms() - stopped_at);
    eprintln!("graceful handover in {handover:?} (lease duration {LEASE:?})");
    assert!(
        handover < LEASE / 2,
        "the handover took {handover:?}, as if the Lease had not been released"
    );
}

#[tokio::test]
async fn failover_after_the_leader_is_killed() {
    let mut env = TestEnv::new("leader-failover").await;
    let (a, b) = two_replicas(&mut env, LEASE).await;
    let leader = env.wait_leader(&[A, B], TIMEOUT).await;
    let (mut old, mut new) = if leader == A { (a, b) } else { (b, a) };
    apply_all(&env, 12).await;
    wait_all(&env, "Running with a handle", running_with_handle).await;

    // A crash: the Lease is not released, so the standby waits for it to expire.
    let killed_at = unix_ms();
    old.kill().await;
    let took_over = env
        .wait_leader(&[new.identity.as_str()], LEASE + TAKEOVER_MARGIN + TIMEOUT)
        .await;
    let takeover = Duration::from_millis(unix_ms() - killed_at);
    eprintln!(
        "failover: {took_over} holds the Lease {takeover:?} after {} was killed (lease duration {LEASE:?})",
        old.identity
    );
    assert!(
        takeover <= LEASE + TAKEOVER_MARGIN,
        "takeover took {takeover:?}, more than the lease duration {LEASE:?} + {TAKEOVER_MARGIN:?}"
    );

    wait_all(&env, "Succeeded", succeeded).await;
    assert_started_once(&env.sim_stats().await);
    for (name, sim) in upstream_ops(&env).await {
        let gets = sim["gets"].as_u64().expect("gets");
        let expected = expected_gets(&sim);
        eprintln!("{name}: {gets} GETs, the schedule makes {expected}");
        assert!(
            get_times(&sim).iter().any(|&t| t > killed_at),
            "{name}: the new leader never polled it: {sim:#}"
        );
        assert!(
            gets <= expected + 1,
            "{name}: {gets} GETs, more than one poller's {expected} + 1: {sim:#}"
        );
    }
    let lease = env.lease().await.expect("the Lease exists");
    assert_eq!(holder(&lease).as_deref(), Some(new.identity.as_str()));
    assert_eq!(transitions(&lease), 2, "taken once, then taken over once");
    assert!(new.is_running(), "the new leader still runs");
}

#[tokio::test]
async fn operator_survives_an_apiserver_restart() {
    // A control plane of this test's own: restarting the shared one would disturb other tests.
    let control_plane = ControlPlane::up("apiserver-restart").await;
    let mut env = TestEnv::on(control_plane.cluster, "apiserver-restart").await;
    // Long enough that the leader keeps the Lease through the restart (renew deadline 20 s).
    let lease = Duration::from_secs(30);
    let (a, b) = two_replicas(&mut env, lease).await;
    let leader = env.wait_leader(&[A, B], TIMEOUT).await;
    let (mut leading, mut standby) = if leader == A { (a, b) } else { (b, a) };
    apply_all(&env, 12).await;
    wait_all(&env, "Running with a handle", running_with_handle).await;

    let took = control_plane
        .restart_apiserver(Duration::from_secs(2))
        .await;
    let restarted_at = unix_ms();
    eprintln!("kube-apiserver restarted in {took:?}");

    wait_all(&env, "Succeeded", succeeded).await;
    assert_started_once(&env.sim_stats().await);
    for (name, sim) in upstream_ops(&env).await {
        assert!(
            get_times(&sim).iter().any(|&t| t > restarted_at),
            "{name}: not polled after the restart: {sim:#}"
        );
    }
    let lease = env.lease().await.expect("the Lease exists");
    assert_eq!(holder(&lease).as_deref(), Some(leader.as_str()));
    assert_eq!(transitions(&lease), 1, "the leader kept the Lease");
    assert!(
        leading.is_running() && standby.is_running(),
        "both replicas still run"
    );
    let log = leading.log();
    assert!(
        !log.contains("lost the leadership"),
        "the leader stepped down:\n{log}"
    );
}

#[tokio::test]
async fn frozen_leader_steps_down_without_acting() {
    let mut env = TestEnv::new("leader-frozen").await;
    let (a, b) = two_replicas(&mut env, LEASE).await;
    let leader = env.wait_leader(&[A, B], TIMEOUT).await;
    let (mut old, new) = if leader == A { (a, b) } else { (b, a) };
    apply_all(&env, 15).await;
    wait_all(&env, "Running with a handle", running_with_handle).await;

    // A leader frozen past its Lease (a paused VM, a long stall): the standby takes over...
    old.signal("STOP");
    env.wait_leader(&[new.identity.as_str()], LEASE + TAKEOVER_MARGIN + TIMEOUT)
        .await;
    // ... and when the old one runs again, it must notice and stop before any upstream request.
    old.signal("CONT");
    let status = old.wait_exit(Duration::from_secs(10)).await;
    let status = status.expect("the old leader exits within 10 s of running again");
    assert!(!status.success(), "it exits non-zero: {status}");
    let log = old.log();
    let after = log
        .split("SIGCONT sent")
        .nth(1)
        .expect("the log notes SIGCONT");
    assert!(after.contains("lost the leadership"), "{after}");
    for request in ["upstream answered", "sending the start request"] {
        assert!(
            !after.contains(request),
            "the old leader sent an upstream request after it resumed:\n{after}"
        );
    }

    wait_all(&env, "Succeeded", succeeded).await;
    assert_started_once(&env.sim_stats().await);
    let lease = env.lease().await.expect("the Lease exists");
    assert_eq!(holder(&lease).as_deref(), Some(new.identity.as_str()));
    assert_eq!(transitions(&lease), 2);
}
