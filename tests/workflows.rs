//! Workflows of operations end to end: `dependsOn`, templated starts, and `outputs`.

use lro_testkit as support;

use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use lro_operator::api::Phase;
use serde_json::{Value, json};
use support::{PROVIDER, TestEnv, status_of};

const WAIT: Duration = Duration::from_secs(40);

fn lro(name: &str, spec: Value) -> String {
    json!({
        "apiVersion": "lro.dev/v1alpha1",
        "kind": "LongRunningOperation",
        "metadata": {"name": name},
        "spec": spec,
    })
    .to_string()
}

/// A Redpanda-style provider on the environment's simulator.
async fn redpanda(env: &TestEnv) {
    let provider = json!({
        "apiVersion": "lro.dev/v1alpha1",
        "kind": "OperationProvider",
        "metadata": {"name": "redpanda"},
        "spec": {"baseURL": format!("{}/redpanda", env.sim_url()), "protocol": "redpanda",
                 // A long fixed interval: a dependent that starts quickly was woken by the watch.
                 "polling": {"initialInterval": "500ms", "maxInterval": "1s"}},
    });
    env.apply(&provider.to_string()).await.assert_ok();
}

/// When the operator first wrote `phase` for `name` (ms since the epoch, as the watch saw it).
fn first_write(env: &TestEnv, name: &str, phase: Phase) -> u64 {
    env.status_writes(name)
        .iter()
        .find(|w| w.status.phase == Some(phase))
        .map(|w| w.seen_at_ms)
        .unwrap_or_else(|| panic!("{name} was never written as {phase:?}"))
}

/// A network, then a cluster in it (its body templated from the network's status), then a
/// ConfigMap with the cluster's URL, owned by the cluster's operation.
#[tokio::test]
async fn a_chain_starts_each_step_when_the_previous_succeeds() {
    let env = TestEnv::new("wf-chain").await;
    redpanda(&env).await;
    env.apply(&lro(
        "cluster",
        json!({
            "providerRef": {"name": "redpanda"},
            "dependsOn": ["network"],
            "start": {"path": "v1/clusters", "body": {
                "cluster": {
                    "name": "${self.metadata.name}-in-${deps.network.resourceId}",
                    "network_id": "${deps.network.resourceId}",
                    "region": "${deps.network.result.network.region}",
                },
                "simulate": {"durationSeconds": 2},
            }},
            "outputs": {
                "configMap": {"name": "cluster-endpoints", "data": {
                    "url": "result.cluster.dataplane_api.url",
                    "id": "result.cluster.id",
                }},
                "secret": {"name": "cluster-secret", "data": {
                    "token": "'s3cr3t-' + result.cluster.id",
                }},
            },
        }),
    ))
    .await
    .assert_ok();
    // The dependency does not exist yet: Pending, saying so.
    let waiting = env
        .wait_for("cluster", "waiting for network", WAIT, |op| {
            op.status
                .as_ref()
                .and_then(|s| s.message.as_deref())
                .is_some_and(|m| m.contains("network (not found)"))
        })
        .await;
    assert_eq!(status_of(&waiting).phase, Some(Phase::Pending));
    env.apply(&lro(
        "network",
        json!({
            "providerRef": {"name": "redpanda"},
            "start": {"path": "v1/networks", "body": {
                "network": {"name": "n", "region": "us-west1"},
                "simulate": {"durationSeconds": 3},
            }},
        }),
    ))
    .await
    .assert_ok();
    let network = env.wait_phase("network", Phase::Succeeded, WAIT).await;
    let cluster = env.wait_phase("cluster", Phase::Succeeded, WAIT).await;
    let network_id = status_of(&network).resource_id.clone().expect("resourceId");

    // Watch-triggered: the cluster started right after the network succeeded.
    let succeeded = first_write(&env, "network", Phase::Succeeded);
    let starting = first_write(&env, "cluster", Phase::Starting);
    assert!(
        starting >= succeeded && starting - succeeded < 1500,
        "the cluster started {} ms after the network succeeded",
        starting as i64 - succeeded as i64
    );

    // The rendered request is recorded, and is what the upstream received (the simulator echoes
    // the created resource's fields in the result).
    let status = status_of(&cluster);
    let rendered = status.rendered_start.as_ref().expect("renderedStart");
    let body = rendered.body.as_ref().expect("rendered body");
    assert_eq!(body["cluster"]["network_id"], json!(network_id));
    assert_eq!(
        body["cluster"]["name"],
        json!(format!("cluster-in-{network_id}"))
    );
    assert_eq!(body["cluster"]["region"], json!("us-west1"));
    let result = status.result.as_ref().expect("result");
    assert_eq!(
        result["cluster"]["network_id"],
        json!(network_id),
        "{result}"
    );

    // Outputs: a ConfigMap with the URL, owned by the operation.
    let url = result["cluster"]["dataplane_api"]["url"]
        .as_str()
        .expect("url")
        .to_owned();
    let cms: Api<ConfigMap> = Api::namespaced(env.lros.clone().into_client(), &env.ns);
    let mut found = None;
    for _ in 0..50 {
        if let Ok(Some(cm)) = cms.get_opt("cluster-endpoints").await {
            found = Some(cm);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let cm = found.expect("ConfigMap cluster-endpoints written");
    let data = cm.data.clone().unwrap_or_default();
    assert_eq!(data.get("url"), Some(&url), "{data:?}");
    let owners = cm.metadata.owner_references.clone().unwrap_or_default();
    assert_eq!(owners.len(), 1, "{owners:?}");
    assert_eq!(owners[0].kind, "LongRunningOperation");
    assert_eq!(owners[0].name, "cluster");
    assert_eq!(
        owners[0].uid,
        cluster.metadata.uid.clone().unwrap_or_default()
    );
    assert_eq!(owners[0].controller, Some(true));
    let published = env
        .wait_for("cluster", "OutputsPublished", WAIT, |op| {
            op.status.as_ref().is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.type_ == "OutputsPublished" && c.status == "True")
            })
        })
        .await;
    assert_eq!(status_of(&published).phase, Some(Phase::Succeeded));

    // The Secret holds its value; the status and the events never do.
    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(env.lros.clone().into_client(), &env.ns);
    let secret = secrets.get("cluster-secret").await.expect("Secret written");
    let token = secret.data.unwrap_or_default()["token"].0.clone();
    let cluster_id = result["cluster"]["id"].as_str().expect("id");
    assert_eq!(
        String::from_utf8_lossy(&token),
        format!("s3cr3t-{cluster_id}")
    );
    let everything = format!(
        "{}{}",
        serde_json::to_string(&published.status).unwrap_or_default(),
        env.kubectl(&["get", "events", "-o", "json"]).await.stdout
    );
    assert!(!everything.contains("s3cr3t"), "a Secret value leaked");
}

/// `examples/network-then-cluster/`, pointed at this environment's simulator, succeeds.
#[tokio::test]
async fn the_network_then_cluster_example_succeeds() {
    let env = TestEnv::new("wf-example").await;
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/network-then-cluster");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .expect("example dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    files.sort();
    for file in files {
        let manifest = std::fs::read_to_string(&file)
            .expect("example file")
            .replace("http://127.0.0.1:8480", env.sim_url());
        env.apply(&manifest).await.assert_ok();
    }
    env.wait_phase("network", Phase::Succeeded, WAIT).await;
    let cluster = env.wait_phase("cluster", Phase::Succeeded, WAIT).await;
    let network_id = status_of(&env.get("network").await).resource_id.clone();
    let result = status_of(&cluster).result.clone().expect("result");
    assert_eq!(
        result["cluster"]["network_id"].as_str(),
        network_id.as_deref()
    );
    let cms: Api<ConfigMap> = Api::namespaced(env.lros.clone().into_client(), &env.ns);
    let cm = cms.get("cluster-endpoints").await.expect("ConfigMap");
    let data = cm.data.unwrap_or_default();
    assert_eq!(
        data.get("DATAPLANE_URL").map(String::as_str),
        result["cluster"]["dataplane_api"]["url"].as_str()
    );
}

/// A dependency that fails blocks its dependents, which never start.
#[tokio::test]
async fn a_failed_dependency_blocks() {
    let env = TestEnv::new("wf-blocked").await;
    env.apply(&lro(
        "first",
        json!({
            "providerRef": {"name": PROVIDER},
            "start": {"path": "projects/demo/clusters", "body": {
                "simulate": {"durationSeconds": 1, "outcome": "error"}}},
        }),
    ))
    .await
    .assert_ok();
    env.apply(&lro(
        "second",
        json!({
            "providerRef": {"name": PROVIDER},
            "dependsOn": ["first"],
            "start": {"path": "projects/demo/clusters", "body": {}},
        }),
    ))
    .await
    .assert_ok();
    env.wait_phase("first", Phase::Failed, WAIT).await;
    let second = env.wait_phase("second", Phase::Blocked, WAIT).await;
    let stalled = status_of(&second)
        .conditions
        .iter()
        .find(|c| c.type_ == "Stalled")
        .expect("Stalled");
    assert_eq!(stalled.status, "True");
    assert_eq!(stalled.reason, "DependencyFailed");
    assert!(stalled.message.contains("first"), "{}", stalled.message);
    assert_eq!(status_of(&second).operation, None, "nothing started");
    assert_eq!(env.sim_stats().await["creates"], json!(1));
}

/// A cycle is reported on every member, and nothing in it starts.
#[tokio::test]
async fn a_cycle_is_reported_on_every_member() {
    let env = TestEnv::new("wf-cycle").await;
    for (name, dep) in [("a", "b"), ("b", "a")] {
        env.apply(&lro(
            name,
            json!({
                "providerRef": {"name": PROVIDER},
                "dependsOn": [dep],
                "start": {"path": "projects/demo/clusters", "body": {}},
            }),
        ))
        .await
        .assert_ok();
    }
    for name in ["a", "b"] {
        let op = env.wait_phase(name, Phase::Blocked, WAIT).await;
        let stalled = status_of(&op)
            .conditions
            .iter()
            .find(|c| c.type_ == "Stalled")
            .expect("Stalled");
        assert_eq!(stalled.reason, "DependencyCycle", "{name}");
        assert!(stalled.message.contains("a -> b -> a") || stalled.message.contains("b -> a -> b"));
    }
    assert_eq!(
        env.sim_stats().await["creates"],
        json!(0),
        "nothing started"
    );
}

/// A template that fails at run time names the expression, and nothing starts.
#[tokio::test]
async fn a_template_error_starts_nothing() {
    let env = TestEnv::new("wf-template").await;
    env.apply(&lro(
        "t",
        json!({
            "providerRef": {"name": PROVIDER},
            "start": {"path": "projects/demo/clusters", "body": {"x": "${self.spec.nothing.here}"}},
        }),
    ))
    .await
    .assert_ok();
    let op = env.wait_phase("t", Phase::Failed, WAIT).await;
    let stalled = status_of(&op)
        .conditions
        .iter()
        .find(|c| c.type_ == "Stalled")
        .expect("Stalled");
    assert_eq!(stalled.reason, "TemplateError");
    assert!(
        stalled.message.contains("self.spec.nothing.here"),
        "{}",
        stalled.message
    );
    assert_eq!(env.sim_stats().await["creates"], json!(0));
}
