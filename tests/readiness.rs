//! Readiness conformance against the real consumers of an operation's status, over objects the
//! operator really wrote to a real kube-apiserver:
//!
//! - `kubectl wait --for=condition=Ready` and `--for=jsonpath='{.status.phase}'=Succeeded`;
//! - **kstatus** (`sigs.k8s.io/cli-utils/pkg/kstatus/status`, what Flux and Helm 4 use), through
//!   the tiny Go program `hack/tools/kstatus` (built by `hack/build-tools kstatus`);
//! - **Helm 4** `helm install --wait` of `tests/fixtures/charts/lro-wait`;
//! - **Argo CD**: the health check `docs/argocd-health.lua`, run by a real Lua interpreter (mlua).
//!
//! Run with `cargo test --test readiness`; the control plane is the e2e harness's
//! (`LRO_E2E_KUBECONFIG`, else `hack/control-plane up`).

use lro_testkit as support;
use lro_testkit::helm;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use helm::{Identity, ROOT, run};
use lro_operator::api::Phase;
use mlua::{Lua, LuaSerdeExt, SerializeOptions, Table};
use serde_json::{Value, json};
use support::{Output, PROVIDER, TestEnv, pretty, status_of};
use tokio::process::Command;
use tokio::sync::OnceCell;

/// Generous: the operations below take 1-4 s (the timed-out one 3 s).
const TIMEOUT: Duration = Duration::from_secs(60);
/// The Argo CD health check, as shipped.
const ARGOCD_HEALTH: &str = include_str!("../docs/argocd-health.lua");
/// The test chart for `helm install --wait`.
const WAIT_CHART: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/charts/lro-wait"
);

// ---------------------------------------------------------------------------------- consumers

static KSTATUS: OnceCell<PathBuf> = OnceCell::const_new();

/// The kstatus program: `hack/build-tools kstatus` (a no-op when it is up to date), then its path.
async fn kstatus_bin() -> &'static Path {
    KSTATUS
        .get_or_init(|| async {
            let script = format!("{ROOT}/hack/build-tools");
            let build = run(Command::new(&script).arg("kstatus"), None).await;
            assert!(build.success, "cannot build kstatus: {build}");
            let path = run(
                Command::new(&script).args(["--print-path", "kstatus"]),
                None,
            )
            .await;
            let path = PathBuf::from(path.assert_ok().stdout.trim());
            assert!(path.is_file(), "no kstatus at {}", path.display());
            path
        })
        .await
}

/// What kstatus computes for one object.
#[derive(Debug)]
struct Computed {
    name: String,
    status: String,
    message: String,
}

/// Runs kstatus over `objects` (one object, or a `List`): one result per object, in order.
async fn kstatus(objects: &Value) -> Vec<Computed> {
    let out = run(
        &mut Command::new(kstatus_bin().await),
        Some(&objects.to_string()),
    )
    .await
    .assert_ok();
    out.stdout
        .lines()
        .map(|line| {
            // `<Kind>/<name> <status> <message…>`
            let mut words = line.splitn(3, ' ');
            let object = words.next().unwrap_or_default();
            Computed {
                name: object
                    .split_once('/')
                    .map(|(_, n)| n)
                    .unwrap_or(object)
                    .into(),
                status: words.next().unwrap_or_default().into(),
                message: words.next().unwrap_or_default().into(),
            }
        })
        .collect()
}

/// kstatus' verdict on one object.
async fn kstatus_one(object: &Value) -> Computed {
    let mut all = kstatus(object).await;
    assert_eq!(all.len(), 1, "one object in, one result out: {all:?}");
    all.remove(0)
}

/// Argo CD's health of `object` by `docs/argocd-health.lua`: `(status, message)`.
///
/// Like Argo CD, the script sees the object as a table in the global `obj`, and JSON `null`s as
/// `nil`.
fn argocd_health(object: &Value) -> (String, String) {
    let lua = Lua::new();
    let options = SerializeOptions::new()
        .serialize_none_to_null(false)
        .serialize_unit_to_null(false);
    let obj = lua
        .to_value_with(object, options)
        .unwrap_or_else(|e| panic!("cannot convert the object to Lua: {e}"));
    lua.globals()
        .set("obj", obj)
        .unwrap_or_else(|e| panic!("cannot set obj: {e}"));
    let hs: Table = lua
        .load(ARGOCD_HEALTH)
        .set_name("argocd-health.lua")
        .eval()
        .unwrap_or_else(|e| panic!("the health check failed on {object:#}: {e}"));
    let field = |key: &str| -> String {
        hs.get::<Option<String>>(key)
            .unwrap_or_else(|e| panic!("hs.{key} is not a string: {e}"))
            .unwrap_or_default()
    };
    (field("status"), field("message"))
}

// ---------------------------------------------------------------------------------- helpers

fn lro(name: &str, spec: Value) -> String {
    json!({
        "apiVersion": "lro.dev/v1alpha1",
        "kind": "LongRunningOperation",
        "metadata": {"name": name},
        "spec": spec,
    })
    .to_string()
}

/// Start an operation in the simulator, scripted by `simulate`.
fn start_simulated(simulate: Value) -> Value {
    json!({
        "providerRef": {"name": PROVIDER},
        "start": {"path": "projects/demo/clusters", "body": {"simulate": simulate}},
    })
}

/// The object as the apiserver serves it (`kubectl get -o json`), exactly what consumers read.
async fn fetch(env: &TestEnv, name: &str) -> Value {
    let out = env
        .kubectl(&["get", "lro", name, "-o", "json"])
        .await
        .assert_ok();
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

/// `status.conditions[type=kind].<field>` of a fetched object.
fn condition_field<'a>(object: &'a Value, kind: &str, field: &str) -> &'a str {
    object["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == kind)
        .and_then(|c| c[field].as_str())
        .unwrap_or_default()
}

async fn patch(env: &TestEnv, name: &str, patch: &str) {
    env.kubectl(&["patch", "lro", name, "--type", "merge", "-p", patch])
        .await
        .assert_ok();
}

/// Asserts kstatus and the Argo CD health check give `kstatus` and `health` for `object`.
async fn assert_readiness(case: &str, object: &Value, kstatus: &str, health: &str) -> Computed {
    let computed = kstatus_one(object).await;
    assert_eq!(
        computed.status,
        kstatus,
        "kstatus of {case} ({computed:?}): {}",
        pretty(&object["status"])
    );
    let (status, message) = argocd_health(object);
    assert_eq!(
        status,
        health,
        "Argo CD health of {case} (message {message:?}): {}",
        pretty(&object["status"])
    );
    computed
}

// ---------------------------------------------------------------------------------- tests

/// Every phase the operator reaches without dependencies, read by kubectl, kstatus and the Argo CD
/// health check; then a spec change the operator has not yet observed.
#[tokio::test]
async fn kstatus_and_argocd_health_over_real_statuses() {
    let mut env = TestEnv::new("ready").await;
    let cases = [
        ("ok", start_simulated(json!({"durationSeconds": 1}))),
        ("long", start_simulated(json!({"durationSeconds": 300}))),
        (
            "quota",
            start_simulated(json!({
                "durationSeconds": 1, "outcome": "error", "errorCode": 9,
                "errorMessage": "quota exceeded in zone-b",
            })),
        ),
        ("slow", {
            let mut spec = start_simulated(json!({"durationSeconds": 300}));
            spec["polling"] = json!({"timeout": "3s"});
            spec
        }),
        (
            "gone",
            start_simulated(json!({"durationSeconds": 1, "outcome": "cancelled"})),
        ),
        ("stop", start_simulated(json!({"durationSeconds": 300}))),
        ("blocked", {
            let mut spec = start_simulated(json!({"durationSeconds": 1}));
            spec["dependsOn"] = json!(["quota"]);
            spec
        }),
    ];
    for (name, spec) in &cases {
        env.apply(&lro(name, spec.clone())).await.assert_ok();
    }

    // kubectl: both documented ways of waiting, and a failed operation never becomes Ready.
    env.kubectl(&[
        "wait",
        "--for=jsonpath={.status.phase}=Succeeded",
        "lro/ok",
        "--timeout=60s",
    ])
    .await
    .assert_ok();
    env.kubectl(&["wait", "--for=condition=Ready", "lro/ok", "--timeout=60s"])
        .await
        .assert_ok();

    let running_with_handle = |op: &lro_operator::api::LongRunningOperation| {
        let status = op.status.as_ref();
        status.and_then(|s| s.phase) == Some(Phase::Running)
            && status
                .and_then(|s| s.operation.as_ref())
                .is_some_and(|h| h.name.is_some())
    };
    env.wait_for("stop", "running", TIMEOUT, running_with_handle)
        .await;
    patch(&env, "stop", r#"{"spec":{"cancel":true}}"#).await;
    env.wait_for("long", "running", TIMEOUT, running_with_handle)
        .await;
    env.wait_phase("quota", Phase::Failed, TIMEOUT).await;
    let slow = env.wait_phase("slow", Phase::Failed, TIMEOUT).await;
    assert_eq!(
        status_of(&slow)
            .conditions
            .iter()
            .find(|c| c.type_ == "Stalled")
            .map(|c| c.reason.as_str()),
        Some("Timeout"),
        "{}",
        pretty(status_of(&slow))
    );
    env.wait_phase("gone", Phase::Cancelled, TIMEOUT).await;
    env.wait_phase("stop", Phase::Cancelled, TIMEOUT).await;
    env.wait_phase("blocked", Phase::Blocked, TIMEOUT).await;
    let not_ready = env
        .kubectl(&["wait", "--for=condition=Ready", "lro/quota", "--timeout=2s"])
        .await;
    assert!(
        !not_ready.success,
        "a failed operation is never Ready: {not_ready}"
    );

    // (case, kstatus, Argo CD health)
    let expected = [
        ("ok", "Current", "Healthy"),
        ("long", "InProgress", "Progressing"),
        ("quota", "Failed", "Degraded"),
        ("slow", "Failed", "Degraded"),
        ("gone", "Failed", "Degraded"),
        ("blocked", "Failed", "Degraded"),
        // Cancelled on request: neither Reconciling nor Stalled, so kstatus falls back to Ready,
        // which is False: InProgress for good (Flux and Helm 4 wait until their timeout).
        // Argo CD can say what it is.
        ("stop", "InProgress", "Suspended"),
    ];
    let mut objects = Vec::new();
    for (name, kstatus, health) in expected {
        let object = fetch(&env, name).await;
        let computed = assert_readiness(name, &object, kstatus, health).await;
        if kstatus == "Failed" {
            // kstatus' message (what Flux and Helm 4 print) is the Stalled condition's message.
            let stalled = condition_field(&object, "Stalled", "message");
            assert!(!stalled.is_empty(), "{name}: {}", pretty(&object["status"]));
            assert_eq!(computed.message, stalled, "{name}");
            let (_, message) = argocd_health(&object);
            assert_eq!(message, stalled, "Argo CD's message of {name}");
        }
        objects.push(object);
    }
    let quota = &objects[2];
    assert!(
        condition_field(quota, "Stalled", "message").contains("quota exceeded in zone-b"),
        "{}",
        pretty(&quota["status"])
    );
    let blocked = &objects[5];
    assert_eq!(
        condition_field(blocked, "Stalled", "reason"),
        "DependencyFailed"
    );
    assert!(condition_field(blocked, "Stalled", "message").contains("quota"));

    // The same objects as one List (what `kubectl get -o json` returns), in one kstatus call.
    let list = env.kubectl(&["get", "lro", "-o", "json"]).await.assert_ok();
    let list: Value = serde_json::from_str(&list.stdout).unwrap_or_else(|e| panic!("{e}"));
    let mut all: Vec<(String, String)> = kstatus(&list)
        .await
        .into_iter()
        .map(|c| (c.name, c.status))
        .collect();
    all.sort();
    let mut want: Vec<(String, String)> = expected
        .iter()
        .map(|(n, k, _)| ((*n).to_owned(), (*k).to_owned()))
        .collect();
    want.sort();
    assert_eq!(all, want, "kstatus over the List");

    // A spec change the operator has not observed yet (it is stopped): generation is ahead of
    // status.observedGeneration, on a running and on a succeeded operation.
    env.kill_operator().await;
    for name in ["long", "ok"] {
        patch(&env, name, r#"{"spec":{"polling":{"maxInterval":"7s"}}}"#).await;
        let object = fetch(&env, name).await;
        let generation = object["metadata"]["generation"].as_i64();
        let observed = object["status"]["observedGeneration"].as_i64();
        assert!(
            generation > observed && observed.is_some(),
            "{name}: generation {generation:?}, observedGeneration {observed:?}"
        );
        let computed = assert_readiness(name, &object, "InProgress", "Progressing").await;
        assert!(
            computed.message.contains("generation"),
            "kstatus' message names the generation: {computed:?}"
        );
    }

    // Once the operator observes it, a succeeded operation is Current again (a spec change after
    // a terminal phase only moves observedGeneration).
    env.start_operator().await;
    let ok = env
        .wait_for("ok", "observed", TIMEOUT, |op| {
            op.status.as_ref().and_then(|s| s.observed_generation) == op.metadata.generation
        })
        .await;
    assert_eq!(status_of(&ok).phase, Some(Phase::Succeeded));
    assert_readiness(
        "ok, observed",
        &fetch(&env, "ok").await,
        "Current",
        "Healthy",
    )
    .await;
}

/// Helm's values for a release of the `lro-wait` chart in `env`.
fn chart_values(env: &TestEnv, sets: &[&str]) -> Vec<String> {
    let mut values = vec![format!("simURL={}", env.sim_url())];
    values.extend(sets.iter().map(|s| (*s).to_owned()));
    values
}

/// `helm ARGS… RELEASE CHART --namespace NS --set …` for the `lro-wait` chart.
async fn helm_chart(
    admin: &Identity,
    env: &TestEnv,
    verb: &str,
    release: &str,
    sets: &[&str],
    flags: &[&str],
) -> (Output, Duration) {
    let values = chart_values(env, sets);
    let mut args = vec![verb, release, WAIT_CHART, "--namespace", &env.ns];
    for value in &values {
        args.extend(["--set", value.as_str()]);
    }
    args.extend_from_slice(flags);
    let started = Instant::now();
    let out = admin.helm(&args).await;
    (out, started.elapsed())
}

/// Creates the release's objects before Helm does (with Helm's ownership metadata, so that
/// `helm install` adopts them) and waits until the operator has written a status: kstatus
/// counts an object without any status as `Current` (see
/// `helm_wait_does_not_pass_an_operation_the_operator_has_not_seen`), and Helm 4 looks at the
/// objects right after creating them, so without this the test would race the operator.
async fn precreate(admin: &Identity, env: &TestEnv, release: &str, sets: &[&str]) {
    let (rendered, _) = helm_chart(admin, env, "template", release, sets, &[]).await;
    env.apply(&rendered.assert_ok().stdout).await.assert_ok();
    let objects = [
        format!("operationprovider/{release}-sim"),
        format!("lro/{release}-cluster"),
    ];
    let objects = objects.iter().map(String::as_str);
    let name = format!("meta.helm.sh/release-name={release}");
    let namespace = format!("meta.helm.sh/release-namespace={}", env.ns);
    let mut label = vec!["label"];
    label.extend(objects.clone());
    label.push("app.kubernetes.io/managed-by=Helm");
    env.kubectl(&label).await.assert_ok();
    let mut annotate = vec!["annotate"];
    annotate.extend(objects);
    annotate.extend([name.as_str(), namespace.as_str()]);
    env.kubectl(&annotate).await.assert_ok();
    env.wait_for(&format!("{release}-cluster"), "observed", TIMEOUT, |op| {
        op.status.as_ref().and_then(|s| s.observed_generation) == op.metadata.generation
            && op.status.as_ref().and_then(|s| s.phase).is_some()
    })
    .await;
}

/// `helm install --wait` (Helm 4: kstatus) of a chart with an operation waits for it, succeeds
/// when it succeeds and fails, early and with the operation's message, when it fails.
#[tokio::test]
async fn helm_install_wait_follows_the_operation() {
    let env = TestEnv::new("helm-wait").await;
    let admin = Identity::admin(&env).await;
    let error = "disk quota exhausted in zone-b";
    let ok_values = ["durationSeconds=6"];
    let bad_values = [
        "durationSeconds=4",
        "outcome=error",
        "errorMessage=disk quota exhausted in zone-b",
    ];
    tokio::join!(
        precreate(&admin, &env, "ok", &ok_values),
        precreate(&admin, &env, "bad", &bad_values),
    );
    let wait = ["--wait", "--timeout", "60s"];
    let ((ok, ok_took), (bad, bad_took)) = tokio::join!(
        helm_chart(&admin, &env, "install", "ok", &ok_values, &wait),
        helm_chart(&admin, &env, "install", "bad", &bad_values, &wait),
    );

    // Success: helm returns only once the operation is Ready.
    let ok = ok.assert_ok();
    let op = env.get("ok-cluster").await;
    let status = status_of(&op);
    assert_eq!(
        status.phase,
        Some(Phase::Succeeded),
        "helm returned after {ok_took:?}: {ok}\n{}",
        pretty(status)
    );
    assert!(
        status
            .conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True"),
        "{}",
        pretty(status)
    );

    // Failure: kstatus says Failed, which is terminal for Helm's waiter: it stops before the
    // timeout and prints kstatus' message, the operation's Stalled message.
    assert!(!bad.success, "helm install of a failing operation: {bad}");
    let op = fetch(&env, "bad-cluster").await;
    assert_eq!(op["status"]["phase"], "Failed", "{}", pretty(&op["status"]));
    let stalled = condition_field(&op, "Stalled", "message");
    assert!(stalled.contains(error), "{}", pretty(&op["status"]));
    let printed = format!("{}{}", bad.stdout, bad.stderr);
    assert!(
        printed.contains("LongRunningOperation") && printed.contains("status: Failed"),
        "{bad}"
    );
    assert!(printed.contains(error), "helm names the failure: {bad}");
    assert!(
        bad_took < Duration::from_secs(45),
        "helm waited {bad_took:?} for a failed operation (timeout 60s): {bad}"
    );
}

/// An operation the operator has not written a status to yet must not look ready: the CRD
/// defaults `status.observedGeneration` to -1, so kstatus says `InProgress` ("generation is 1,
/// but latest observed generation is -1") and `helm install --wait` waits for the operator.
#[tokio::test]
async fn helm_wait_does_not_pass_an_operation_the_operator_has_not_seen() {
    let mut env = TestEnv::new("helm-unseen").await;
    env.kill_operator().await;
    let admin = Identity::admin(&env).await;
    let (out, took) = helm_chart(
        &admin,
        &env,
        "install",
        "unseen",
        &["durationSeconds=1"],
        &["--wait", "--timeout", "10s"],
    )
    .await;
    let object = fetch(&env, "unseen-cluster").await;
    let computed = kstatus_one(&object).await;
    assert_eq!(
        computed.status, "InProgress",
        "kstatus of an operation the operator has not seen: {computed:?}"
    );
    assert!(
        !out.success,
        "helm --wait passed after {took:?} although no operator ever looked at the operation: {out}"
    );
}

/// The check shown in `docs/waiting.md` and the chart's README (inside the `argocd-cm` snippet) is
/// the one tested above; and an object the operator has not picked up yet is Progressing.
#[test]
fn documented_argocd_health_check_is_the_tested_one() {
    let indented: String = ARGOCD_HEALTH
        .lines()
        .map(|l| {
            if l.is_empty() {
                "\n".to_owned()
            } else {
                format!("    {l}\n")
            }
        })
        .collect();
    let key = "  resource.customizations.health.lro.dev_LongRunningOperation: |\n";
    for doc in ["docs/waiting.md", "charts/lro-operator/README.md"] {
        let path = format!("{ROOT}/{doc}");
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert!(
            text.contains(&format!("{key}{indented}")),
            "{doc} does not show docs/argocd-health.lua under {key:?} (indented by 4 spaces)"
        );
    }

    let fresh = json!({
        "apiVersion": "lro.dev/v1alpha1",
        "kind": "LongRunningOperation",
        "metadata": {"name": "fresh", "generation": 1},
        "spec": {"providerRef": {"name": PROVIDER}, "operation": {"name": "operations/x"}},
    });
    assert_eq!(argocd_health(&fresh).0, "Progressing");
}
