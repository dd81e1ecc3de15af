//! An upstream that misbehaves: one end-to-end test per simulator fault mode (see
//! `sim/src/faults.rs`), against the real apiserver, the simulator and the operator.
//!
//! Each test adopts a simulated operation whose GETs are scripted to fail in a given way, polled on
//! a fixed 500 ms schedule, and checks that a failed poll never changes the phase, that the
//! operation still ends as it should, that `Reconciling` says `UpstreamUnavailable` after three
//! failures in a row and stops saying it afterwards, and that the request count stays within the
//! schedule (no hot loop).
//!
//! Run with `cargo test --test faults`; see `tests/e2e.rs` for the harness's environment.

use lro_testkit as support;

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use lro_operator::api::{LongRunningOperation, LongRunningOperationStatus, Phase};
use lro_operator::reconcile::Schedule;
use serde_json::{Value, json};
use support::{PROVIDER, TestEnv, Write, phase_of, pretty, status_of};

/// Generous: the operations below take 3-10 s.
const TIMEOUT: Duration = Duration::from_secs(60);
/// The fixed poll interval of every operation here.
const INTERVAL_MS: u64 = 500;
/// Clock slack between the simulator's and the operator's clocks (one machine, two processes).
const SLACK_MS: u64 = 30;

// ---------------------------------------------------------------------------------- setup

/// The fixed schedule of [`polling`].
fn schedule() -> Schedule {
    Schedule {
        initial: Duration::from_millis(INTERVAL_MS),
        max: Duration::from_millis(INTERVAL_MS),
        multiplier: 1.0,
        jitter: 0.0,
    }
}

fn polling() -> Value {
    json!({"initialInterval": "500ms", "maxInterval": "500ms", "multiplier": 1, "jitter": 0})
}

/// A `LongRunningOperation` adopting the upstream operation `upstream`.
fn adopt(name: &str, upstream: &str) -> String {
    json!({
        "apiVersion": "lro.dev/v1alpha1",
        "kind": "LongRunningOperation",
        "metadata": {"name": name},
        "spec": {
            "providerRef": {"name": PROVIDER},
            "operation": {"name": upstream},
            "polling": polling(),
        },
    })
    .to_string()
}

/// A simulated operation of `seconds` without progress, whose GETs meet `faults`.
fn script(seconds: f64, faults: Value) -> Value {
    json!({"durationSeconds": seconds, "progress": false, "faults": faults})
}

/// The operator's flags for these tests.
const OPERATOR_ARGS: [&str; 6] = [
    "--request-timeout",
    "1s",
    "--not-found-grace",
    "3s",
    "--max-response-bytes",
    "1048576",
];

/// An environment whose operator runs with [`OPERATOR_ARGS`].
async fn env(name: &str) -> TestEnv {
    let mut env = TestEnv::new(name).await;
    env.restart_operator_with(&OPERATOR_ARGS).await;
    env
}

/// What one faulty operation did.
struct Run {
    /// The operation as it ended.
    op: LongRunningOperation,
    /// Every status write.
    writes: Vec<Write>,
    /// The simulator's stats of the upstream operation.
    sim: Value,
}

impl Run {
    fn get_times(&self) -> Vec<u64> {
        let times = self.sim["getTimesMs"].as_array().expect("getTimesMs");
        times.iter().filter_map(Value::as_u64).collect()
    }

    /// The 1-based GET numbers that met a fault.
    fn faulty_gets(&self) -> Vec<u64> {
        let served = self.sim["faults"]["served"].as_array().expect("served");
        served.iter().filter_map(|s| s["get"].as_u64()).collect()
    }

    /// When the GET numbered `n` (1-based) arrived.
    fn get_time(&self, n: u64) -> u64 {
        let times = self.get_times();
        *times
            .get(usize::try_from(n).unwrap_or(usize::MAX) - 1)
            .unwrap_or_else(|| panic!("no GET {n}: {:#}", self.sim))
    }
}

/// Adopts `script` as lro `name` in `env` and waits for `phase`.
async fn run(env: &TestEnv, name: &str, script: Value, phase: Phase) -> Run {
    let upstream = env.sim_adoptable(script).await;
    env.apply(&adopt(name, &upstream)).await.assert_ok();
    finish(env, name, &upstream, phase).await
}

async fn finish(env: &TestEnv, name: &str, upstream: &str, phase: Phase) -> Run {
    let op = env.wait_phase(name, phase, TIMEOUT).await;
    let sim = env.sim_operation(upstream).await;
    let writes = env.status_writes(name);
    let run = Run { op, writes, sim };
    eprintln!(
        "{name}: GETs at {:?} ms, faulty {:?}; {} status writes",
        relative(&run.get_times()),
        run.faulty_gets(),
        run.writes.len()
    );
    run
}

fn relative(times: &[u64]) -> Vec<u64> {
    let first = times.first().copied().unwrap_or_default();
    times.iter().map(|t| t - first).collect()
}

// ---------------------------------------------------------------------------------- checks

fn reconciling(status: &LongRunningOperationStatus) -> Option<&Condition> {
    status.conditions.iter().find(|c| c.type_ == "Reconciling")
}

fn reason(status: &LongRunningOperationStatus) -> &str {
    reconciling(status).map_or("", |c| c.reason.as_str())
}

/// The phases the writes went through, without repeats.
fn phases(writes: &[Write]) -> Vec<Phase> {
    let mut phases: Vec<Phase> = writes.iter().filter_map(|w| w.status.phase).collect();
    phases.dedup();
    phases
}

/// Every fault was served, and the operation ended as `expected` through these phases only.
#[track_caller]
fn assert_phases(run: &Run, expected: &[Phase]) {
    assert_eq!(
        phases(&run.writes),
        expected,
        "a failed poll changed the phase: {}",
        pretty(&statuses(&run.writes))
    );
}

fn statuses(writes: &[Write]) -> Vec<(u64, Option<Phase>, String, String)> {
    writes
        .iter()
        .map(|w| {
            let c = reconciling(&w.status);
            (
                w.seen_at_ms,
                w.status.phase,
                c.map(|c| c.reason.clone()).unwrap_or_default(),
                c.map(|c| c.message.clone()).unwrap_or_default(),
            )
        })
        .collect()
}

/// The request count stays within the schedule: no more GETs than schedule points in the
/// window they span, plus one per `Retry-After` hint (a hint moves one poll off the schedule)
/// and one for rounding; and no two GETs closer than half an interval, except right after a
/// hint or a request that took long (its next poll is the first schedule point after it).
#[track_caller]
fn assert_within_schedule(run: &Run, hints: u64) {
    let times = run.get_times();
    let gets = run.sim["gets"].as_u64().expect("gets");
    assert_eq!(gets, times.len() as u64, "every GET is timed");
    let window = (times.last().copied().unwrap_or_default()
        - times.first().copied().unwrap_or_default()) as f64
        / 1000.0;
    let allowed = schedule().polls_within(window, 0) + hints + 1;
    eprintln!("GETs: {gets}, allowed {allowed} over {window:.1}s with {hints} hints");
    assert!(
        gets <= allowed,
        "{gets} GETs in {window:.1}s, the schedule allows {allowed}: {:?}",
        relative(&times)
    );
    let min_gap = INTERVAL_MS / 2;
    let hinted = if hints > 0 { run.faulty_gets() } else { vec![] };
    for (i, pair) in (1u64..).zip(times.windows(2)) {
        // The gap from GET i to GET i + 1; after a hinted GET i - 1, GET i was off the schedule.
        let gap = pair[1] - pair[0];
        assert!(
            hinted.contains(&(i - 1)) || gap >= min_gap,
            "GETs {i} and {} only {gap} ms apart (a hot loop?): {:?}",
            i + 1,
            relative(&times)
        );
    }
}

/// `Reconciling` said `UpstreamUnavailable` (with `needle` in its message) only after the third
/// failed GET in a row, while `Running`, and said `Polling` again afterwards while still running.
#[track_caller]
fn assert_unavailable_then_cleared(run: &Run, needle: &str) {
    let faulty = run.faulty_gets();
    assert!(faulty.len() >= 3, "fewer than 3 faults: {:#}", run.sim);
    let third_failure = run.get_time(faulty[2]);
    let writes = &run.writes;
    let first = writes
        .iter()
        .position(|w| reason(&w.status) == "UpstreamUnavailable")
        .unwrap_or_else(|| {
            panic!(
                "Reconciling never said UpstreamUnavailable: {}",
                pretty(&statuses(writes))
            )
        });
    let unavailable = &writes[first];
    let message = reconciling(&unavailable.status).map_or("", |c| c.message.as_str());
    assert!(
        message.contains(needle),
        "no {needle:?} in the UpstreamUnavailable message {message:?}"
    );
    assert_eq!(unavailable.status.phase, Some(Phase::Running));
    assert!(
        unavailable.seen_at_ms + SLACK_MS >= third_failure,
        "UpstreamUnavailable written at {} before the third failed GET at {third_failure}",
        unavailable.seen_at_ms
    );
    let cleared = writes[first..]
        .iter()
        .any(|w| w.status.phase == Some(Phase::Running) && reason(&w.status) == "Polling");
    assert!(
        cleared,
        "UpstreamUnavailable did not clear while running: {}",
        pretty(&statuses(writes))
    );
    let end = reconciling(status_of(&run.op)).expect("Reconciling");
    assert_eq!(end.status, "False", "{}", pretty(status_of(&run.op)));
    assert_ne!(end.reason, "UpstreamUnavailable");
}

/// Every fault was served.
#[track_caller]
fn assert_all_served(run: &Run, count: usize) {
    assert_eq!(run.faulty_gets().len(), count, "{:#}", run.sim["faults"]);
    assert_eq!(run.sim["faults"]["pending"], 0, "{:#}", run.sim["faults"]);
}

/// After each GET that met a `Retry-After` hint, the next GET came no sooner than `hint_ms`.
#[track_caller]
fn assert_hint_honoured(run: &Run, hint_ms: u64) {
    let faulty = run.faulty_gets();
    assert!(!faulty.is_empty());
    for n in faulty {
        let (at, next) = (run.get_time(n), run.get_time(n + 1));
        assert!(
            next + SLACK_MS >= at + hint_ms,
            "GET {} came {} ms after the hint of {hint_ms} ms at GET {n}: {:?}",
            n + 1,
            next - at,
            relative(&run.get_times())
        );
    }
}

// ---------------------------------------------------------------------------------- tests

#[tokio::test]
async fn burst_of_5xx_never_changes_the_phase() {
    let env = env("fault-5xx").await;
    let faults = json!([
        {"kind": "ok"},
        {"kind": "status", "status": 503, "times": 3},
        {"kind": "status", "status": 500},
        {"kind": "status", "status": 502, "times": 2},
    ]);
    let run = run(&env, "burst", script(6.0, faults), Phase::Succeeded).await;
    assert_all_served(&run, 6);
    assert_phases(&run, &[Phase::Running, Phase::Succeeded]);
    assert_unavailable_then_cleared(&run, "HTTP 503");
    assert_within_schedule(&run, 0);
}

/// Retry-After hints of 2 s (or 1.5 s) on a 500 ms schedule: the hint wins.
async fn retry_after(case: &str, fault: Value, hint_ms: u64) {
    let env = env(case).await;
    let mut fault = fault;
    fault["times"] = json!(2);
    let faults = json!([{"kind": "ok"}, fault]);
    let run = run(&env, case, script(5.0, faults), Phase::Succeeded).await;
    assert_all_served(&run, 2);
    assert_phases(&run, &[Phase::Running, Phase::Succeeded]);
    assert_hint_honoured(&run, hint_ms);
    assert_within_schedule(&run, 2);
}

#[tokio::test]
async fn retry_after_seconds_on_429_is_honoured() {
    let fault = json!({"kind": "status", "status": 429, "retryAfter": "2"});
    retry_after("fault-ra-secs", fault, 2000).await;
}

#[tokio::test]
async fn retry_after_http_date_on_503_is_honoured() {
    let fault =
        json!({"kind": "status", "status": 503, "retryAfterDate": true, "retryAfterSeconds": 2});
    retry_after("fault-ra-date", fault, 2000).await;
}

#[tokio::test]
async fn retry_after_ms_on_429_is_honoured() {
    let fault = json!({"kind": "status", "status": 429, "retryAfterMs": 1500});
    retry_after("fault-ra-ms", fault, 1500).await;
}

#[tokio::test]
async fn retry_after_zero_or_past_is_not_a_hot_loop() {
    let env = env("fault-ra-zero").await;
    let faults = json!([
        {"kind": "ok"},
        {"kind": "status", "status": 503, "retryAfter": "0", "times": 2},
        {"kind": "status", "status": 503, "retryAfter": "Sun, 06 Nov 1994 08:49:37 GMT"},
        {"kind": "status", "status": 429, "retryAfterMs": 0},
    ]);
    let run = run(&env, "zero", script(4.0, faults), Phase::Succeeded).await;
    assert_all_served(&run, 4);
    assert_phases(&run, &[Phase::Running, Phase::Succeeded]);
    // A hint of "now" is taken as the shortest hint, one second, not as "poll at once".
    assert_hint_honoured(&run, 1000);
    assert_within_schedule(&run, 4);
}

#[tokio::test]
async fn connection_reset_is_transient() {
    let env = env("fault-reset").await;
    let faults = json!([{"kind": "ok"}, {"kind": "reset", "times": 4}]);
    let run = run(&env, "reset", script(5.0, faults), Phase::Succeeded).await;
    assert_all_served(&run, 4);
    assert_phases(&run, &[Phase::Running, Phase::Succeeded]);
    assert_unavailable_then_cleared(&run, "failed: transport error");
    assert_within_schedule(&run, 0);
}

#[tokio::test]
async fn hang_past_the_request_timeout_is_transient() {
    let env = env("fault-hang").await;
    // Each hang costs the 1 s request timeout, then the next schedule point.
    let faults = json!([{"kind": "ok"}, {"kind": "hang", "ms": 3000, "times": 4}]);
    let run = run(&env, "hang", script(9.0, faults), Phase::Succeeded).await;
    assert_all_served(&run, 4);
    assert_phases(&run, &[Phase::Running, Phase::Succeeded]);
    assert_unavailable_then_cleared(&run, "timed out");
    assert_within_schedule(&run, 0);
    for n in run.faulty_gets() {
        let gap = run.get_time(n + 1) - run.get_time(n);
        assert!(
            gap + SLACK_MS >= 1000,
            "the GET after a hang came {gap} ms later, before the 1 s request timeout"
        );
    }
}

#[tokio::test]
async fn body_that_is_not_json_is_transient() {
    let env = env("fault-notjson").await;
    let faults = json!([{"kind": "ok"}, {"kind": "notJson", "times": 3}]);
    let run = run(&env, "notjson", script(5.0, faults), Phase::Succeeded).await;
    assert_all_served(&run, 3);
    assert_phases(&run, &[Phase::Running, Phase::Succeeded]);
    assert_unavailable_then_cleared(&run, "not JSON");
    assert_within_schedule(&run, 0);
}

/// `VmHWM` (peak resident set) of process `pid`, in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("cannot read /proc/{pid}/status: {e}"));
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmHWM in /proc/{pid}/status"))
}

#[tokio::test]
async fn huge_body_is_capped_without_buffering() {
    const HUGE: u64 = 50 * 1024 * 1024;
    let env = env("fault-huge").await;
    let pid = env.operator_pid().expect("the operator's pid");
    let faults = json!([
        {"kind": "ok", "times": 6},
        {"kind": "hugeBody", "bytes": HUGE, "times": 3},
    ]);
    let upstream = env.sim_adoptable(script(7.0, faults)).await;
    env.apply(&adopt("huge", &upstream)).await.assert_ok();
    env.wait_for("huge", "polled once", TIMEOUT, |op| {
        op.status
            .as_ref()
            .is_some_and(|s| s.upstream_state.is_some())
    })
    .await;
    let baseline = peak_rss_kib(pid);
    let sim = env.sim_operation(&upstream).await;
    assert!(
        sim["faults"]["served"]
            .as_array()
            .is_some_and(Vec::is_empty),
        "the baseline was taken too late: {sim:#}"
    );

    let run = finish(&env, "huge", &upstream, Phase::Succeeded).await;
    let peak = peak_rss_kib(pid);
    eprintln!("operator VmHWM: {baseline} KiB before, {peak} KiB after three 50 MiB bodies");
    assert!(
        peak.saturating_sub(baseline) < 16 * 1024,
        "the operator's peak RSS grew by {} KiB reading three 50 MiB bodies capped at 1 MiB",
        peak - baseline
    );
    assert_all_served(&run, 3);
    assert_phases(&run, &[Phase::Running, Phase::Succeeded]);
    assert_unavailable_then_cleared(&run, "larger than 1048576 bytes");
    assert_within_schedule(&run, 0);
}

#[tokio::test]
async fn not_found_past_the_grace_fails_as_expired() {
    let env = env("fault-404").await;
    // 404 for 1 s, within the 3 s grace: propagation delay, the operation goes on.
    let short = json!([{"kind": "ok"}, {"kind": "notFound", "times": 2}]);
    let upstream_short = env.sim_adoptable(script(4.0, short)).await;
    env.apply(&adopt("reappears", &upstream_short))
        .await
        .assert_ok();
    // 404 from the second GET on: expired.
    let long = json!([{"kind": "ok"}, {"kind": "notFound", "times": 1000}]);
    let run = run(&env, "expired", script(60.0, long), Phase::Failed).await;

    let status = status_of(&run.op);
    let stalled = status.conditions.iter().find(|c| c.type_ == "Stalled");
    let stalled = stalled.expect("Stalled");
    assert_eq!(
        (stalled.status.as_str(), stalled.reason.as_str()),
        ("True", "OperationNotFound"),
        "{}",
        pretty(status)
    );
    let error = status.error.as_ref().expect("status.error");
    assert_eq!(error.code, "NOT_FOUND", "{}", pretty(status));
    assert_eq!(error.http_status, Some(404));
    assert_phases(&run, &[Phase::Running, Phase::Failed]);
    let first_404 = run.get_time(run.faulty_gets()[0]);
    let failed = run
        .writes
        .iter()
        .find(|w| w.status.phase == Some(Phase::Failed));
    let failed_at = failed.expect("the Failed write").seen_at_ms;
    assert!(
        failed_at >= first_404 + 3000,
        "failed {} ms after the first 404, within the 3 s grace",
        failed_at - first_404
    );
    assert!(
        failed_at < first_404 + 3000 + INTERVAL_MS + 2500,
        "failed {} ms after the first 404, long after the 3 s grace",
        failed_at - first_404
    );
    assert_within_schedule(&run, 0);

    let short = finish(&env, "reappears", &upstream_short, Phase::Succeeded).await;
    assert_all_served(&short, 2);
    assert_phases(&short, &[Phase::Running, Phase::Succeeded]);
    assert_within_schedule(&short, 0);
}

#[tokio::test]
async fn done_is_final_even_if_the_upstream_later_says_not_done() {
    let mut env = env("fault-undone").await;
    // Once done, the next GET would read as not done.
    let faults = json!([{"kind": "undone", "times": 5}]);
    let upstream = env.sim_adoptable(script(1.0, faults)).await;
    env.apply(&adopt("undone", &upstream)).await.assert_ok();
    let done = finish(&env, "undone", &upstream, Phase::Succeeded).await;
    let gets = done.sim["gets"].as_u64();

    // A restart forgets everything in memory; a spec change wakes the object up.
    env.restart_operator_with(&OPERATOR_ARGS).await;
    env.kubectl(&[
        "patch",
        "lro",
        "undone",
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"polling":{"maxInterval":"1s"}}}"#,
    ])
    .await
    .assert_ok();
    let generation = env.get("undone").await.metadata.generation;
    env.wait_for("undone", "observing the new generation", TIMEOUT, |op| {
        op.status.as_ref().and_then(|s| s.observed_generation) == generation
    })
    .await;
    tokio::time::sleep(Duration::from_millis(6 * INTERVAL_MS)).await;

    let op = env.get("undone").await;
    assert_eq!(phase_of(&op), Some(Phase::Succeeded));
    let sim = env.sim_operation(&upstream).await;
    assert_eq!(
        sim["gets"].as_u64(),
        gets,
        "a terminal operation was polled again: {sim:#}"
    );
    assert_eq!(sim["faults"]["pending"], 5, "{sim:#}");
    let writes = env.status_writes("undone");
    let succeeded = writes
        .iter()
        .position(|w| w.status.phase == Some(Phase::Succeeded))
        .expect("a Succeeded write");
    for w in &writes[succeeded..] {
        assert_eq!(
            w.status.phase,
            Some(Phase::Succeeded),
            "{}",
            pretty(&statuses(&writes))
        );
        assert_eq!(w.status.result, status_of(&done.op).result);
    }
    assert_phases(
        &Run {
            op,
            writes,
            sim: Value::Null,
        },
        &[Phase::Running, Phase::Succeeded],
    );
}

#[tokio::test]
async fn huge_error_messages_still_end_the_operation() {
    let env = env("fault-long-msg").await;
    let long = "x".repeat(400_000);
    // Three failed polls whose error envelope carries a 400 kB message, then a 400 kB error: as
    // is, the message would be written five times (status, error, three conditions), over
    // etcd's request limit, and no status write would land.
    let faults = json!([
        {"kind": "ok"},
        {"kind": "status", "status": 503, "message": long, "times": 3},
    ]);
    let script = json!({
        "durationSeconds": 5, "progress": false, "faults": faults,
        "outcome": "error", "errorCode": 9, "errorMessage": long,
    });
    let run = run(&env, "long-msg", script, Phase::Failed).await;
    assert_all_served(&run, 3);
    assert_phases(&run, &[Phase::Running, Phase::Failed]);
    assert_unavailable_then_cleared(&run, "HTTP 503: xxx");
    let status = status_of(&run.op);
    let error = status.error.as_ref().expect("status.error");
    assert_eq!(error.code, "FAILED_PRECONDITION");
    assert!(error.message.starts_with("xxx"), "{error:?}");
    assert!(
        serde_json::to_vec(status).map_or(0, |v| v.len()) < 256 * 1024,
        "the status is not bounded"
    );
    assert_within_schedule(&run, 0);
}
