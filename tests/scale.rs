//! Features for many operations, end to end on a real kube-apiserver: sharding by the
//! `lro.dev/shard` label, a provider's rate limit, and reconciles that read their provider from
//! the watch cache. (How far one replica goes is measured by `hack/bench`, not here.)

use lro_testkit as support;

use std::time::Duration;

use lro_operator::api::Phase;
use lro_operator::reconcile::Schedule;
use serde_json::{Value, json};
use support::leader::holder;
use support::{PROVIDER, TestEnv, samples};

const TIMEOUT: Duration = Duration::from_secs(90);

/// An operation adopting `upstream` through `provider`, polled every second (no jitter).
fn adopting(name: &str, provider: &str, upstream: &str, shard: Option<&str>) -> String {
    let mut labels = serde_json::Map::new();
    if let Some(shard) = shard {
        labels.insert("lro.dev/shard".into(), json!(shard));
    }
    json!({
        "apiVersion": "lro.dev/v1alpha1",
        "kind": "LongRunningOperation",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "providerRef": {"name": provider},
            "operation": {"name": upstream},
            "polling": {"initialInterval": "1s", "maxInterval": "1s", "multiplier": 1, "jitter": 0},
        },
    })
    .to_string()
}

fn get_times(sim: &Value) -> Vec<u64> {
    sim["getTimesMs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_u64)
        .collect()
}

/// The value of the first sample of `metric` whose labels include all of `labels`.
fn sample(metrics: &str, metric: &str, labels: &[&str]) -> Option<f64> {
    samples(metrics, metric, labels).first().copied()
}

#[tokio::test]
async fn shards_split_the_operations_with_no_overlap() {
    let mut env = TestEnv::new("shards").await;
    // Three replicas instead of the unsharded operator: shard a, shard b, and the rest.
    env.kill_operator().await;
    let lease = ["--lease-duration", "4s"];
    let replicas = [
        env.start_replica_with("replica-a", &[&["--shard", "a"][..], &lease].concat()),
        env.start_replica_with("replica-b", &[&["--shard", "b"][..], &lease].concat()),
        env.start_replica_with(
            "replica-rest",
            &[&["--exclude-shards", "a,b"][..], &lease].concat(),
        ),
    ];
    let cases = [
        ("in-a-1", Some("a"), "replica-a"),
        ("in-a-2", Some("a"), "replica-a"),
        ("in-b-1", Some("b"), "replica-b"),
        ("in-b-2", Some("b"), "replica-b"),
        ("unlabelled-1", None, "replica-rest"),
        ("unlabelled-2", None, "replica-rest"),
    ];
    let mut upstreams = Vec::new();
    for (name, shard, _) in cases {
        let upstream = env
            .sim_adoptable(json!({"durationSeconds": 3, "progress": false}))
            .await;
        env.apply(&adopting(name, PROVIDER, &upstream, shard))
            .await
            .assert_ok();
        upstreams.push(upstream);
    }
    for (name, _, _) in cases {
        env.wait_phase(name, Phase::Succeeded, TIMEOUT).await;
    }

    // Each shard elected its own leader, under its own Lease.
    for (lease, replica) in [
        ("lro-operator-a", "replica-a"),
        ("lro-operator-b", "replica-b"),
        ("lro-operator", "replica-rest"),
    ] {
        let lease = env
            .lease_named(lease)
            .await
            .unwrap_or_else(|| panic!("no Lease {lease}"));
        assert_eq!(holder(&lease).as_deref(), Some(replica));
    }

    // Every Event about an operation was reported by the replica of its shard.
    let events = env
        .kubectl(&["get", "events.events.k8s.io", "-o", "json"])
        .await
        .assert_ok();
    let events: Value = serde_json::from_str(&events.stdout).expect("events are JSON");
    for (name, _, replica) in cases {
        let reporters: Vec<&str> = events["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["regarding"]["name"] == name)
            .filter_map(|e| e["reportingInstance"].as_str())
            .collect();
        assert!(!reporters.is_empty(), "no Event about {name}");
        assert!(
            reporters.iter().all(|r| *r == replica),
            "{name} belongs to {replica}, but Events came from {reporters:?}"
        );
    }

    // Each upstream operation was polled on one schedule (two replicas polling it would about
    // double the GETs).
    let schedule = Schedule {
        initial: Duration::from_secs(1),
        max: Duration::from_secs(1),
        multiplier: 1.0,
        jitter: 0.0,
    };
    for ((name, _, _), upstream) in cases.iter().zip(&upstreams) {
        let sim = env.sim_operation(upstream).await;
        let times = get_times(&sim);
        let done = sim["doneAtMs"].as_u64().expect("doneAtMs");
        let window = done.saturating_sub(times[0]) as f64 / 1000.0;
        let expected = schedule.polls_within(window, 0) + 1;
        assert!(
            (times.len() as u64).abs_diff(expected) <= 1,
            "{name}: {} GETs, one schedule needs {expected}",
            times.len()
        );
    }
    drop(replicas);
}

#[tokio::test]
async fn a_provider_rate_limit_holds_under_load_and_every_operation_finishes() {
    let env = TestEnv::new("rate-limit").await;
    let (rate, burst) = (2.0, 2.0);
    let provider = json!({
        "apiVersion": "lro.dev/v1alpha1",
        "kind": "OperationProvider",
        "metadata": {"name": "limited"},
        "spec": {
            "baseURL": format!("{}/v1", env.sim_url()),
            "protocol": "google",
            "rateLimit": {"requestsPerSecond": rate, "burst": burst as u32},
        },
    });
    env.apply(&provider.to_string()).await.assert_ok();
    // 12 operations polled every second ask for about 12 requests a second: 6 times the limit.
    let mut upstreams = Vec::new();
    for i in 0..12 {
        let upstream = env
            .sim_adoptable(json!({"durationSeconds": 4, "progress": false}))
            .await;
        env.apply(&adopting(&format!("op-{i}"), "limited", &upstream, None))
            .await
            .assert_ok();
        upstreams.push(upstream);
    }
    for i in 0..12 {
        env.wait_phase(&format!("op-{i}"), Phase::Succeeded, TIMEOUT)
            .await;
    }

    // The simulator saw every GET; in no window did they exceed burst + rate × window (plus
    // one, for the spread of arrival times on a busy machine).
    let mut times = Vec::new();
    for upstream in &upstreams {
        times.extend(get_times(&env.sim_operation(upstream).await));
    }
    times.sort_unstable();
    assert!(times.len() >= 12, "every operation polled");
    for window_ms in [500u64, 1000, 3000, 10000] {
        let allowed = burst + rate * window_ms as f64 / 1000.0 + 1.0;
        let busiest = (0..times.len())
            .map(|i| times[i..].partition_point(|t| *t < times[i] + window_ms))
            .max()
            .unwrap_or(0);
        assert!(
            busiest as f64 <= allowed,
            "{busiest} GETs within {window_ms} ms, the limit allows {allowed}: {times:?}"
        );
    }

    // The waits are on the metrics; and the provider was read from the watch cache, never
    // fetched by a reconcile.
    let (code, metrics) = env.health_get("/metrics").await;
    assert_eq!(code, 200);
    let provider_label = format!("provider=\"{}/limited\"", env.ns);
    let waited = sample(
        &metrics,
        "lro_rate_limit_wait_seconds_total",
        &[&provider_label],
    )
    .unwrap_or_else(|| panic!("no lro_rate_limit_wait_seconds_total for limited:\n{metrics}"));
    assert!(waited > 1.0, "operations waited {waited} s for their turn");
    let status_patches = sample(
        &metrics,
        "lro_apiserver_requests_total",
        &[
            "verb=\"patch\"",
            "resource=\"longrunningoperations/status\"",
        ],
    )
    .unwrap_or_else(|| panic!("no status patches counted:\n{metrics}"));
    assert!(status_patches >= 12.0, "{status_patches} status patches");
    assert_eq!(
        sample(
            &metrics,
            "lro_apiserver_requests_total",
            &["verb=\"get\"", "resource=\"operationproviders\""],
        ),
        None,
        "a reconcile fetched its provider from the apiserver:\n{metrics}"
    );
}
