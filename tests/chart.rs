//! The Helm chart (`charts/lro-operator`) against Helm 4 and a real kube-apiserver: lint, schema,
//! a server-side dry run of everything it renders, an install, and then the operator binary run
//! **as the chart's ServiceAccount** (a TokenRequest token) completing operations — so the chart's
//! RBAC is proven enough — while `kubectl auth can-i` proves that identity cannot do more.
//!
//! Run with `cargo test --test chart`. Helm comes from `hack/build-tools helm` (built on first use);
//! the control plane is the e2e harness's (`LRO_E2E_KUBECONFIG`, else `hack/control-plane up`).
//! A bare apiserver has no kubelet, so the chart's pods never run: the test runs the binary itself,
//! with the chart's arguments and the chart's identity.

#[path = "support/helm.rs"]
mod helm;
#[allow(dead_code)] // the chart tests use a part of the e2e harness
mod support;

use std::collections::BTreeSet;
use std::io::Write as _;
use std::process::Stdio;
use std::time::Duration;

use helm::{CHART, Identity, ROOT, container_args, free_port};
use lro_operator::api::Phase;
use serde_json::{Value, json};
use support::{PROVIDER, TestEnv, pretty};
use tokio::process::{Child, Command};

const TIMEOUT: Duration = Duration::from_secs(60);
const BIN: &str = env!("CARGO_BIN_EXE_lro-operator");

// ---------------------------------------------------------------------------------- no cluster

#[test]
fn chart_crds_are_the_top_level_crds() {
    let chart_dir = format!("{CHART}/crds");
    let names = |dir: &str| -> BTreeSet<String> {
        std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("cannot list {dir}: {e}"))
            .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect::<Result<_, _>>()
            .unwrap_or_else(|e| panic!("cannot list {dir}: {e}"))
    };
    let top_dir = format!("{ROOT}/crds");
    let fix = "run `cp crds/*.yaml charts/lro-operator/crds/` (Helm installs the chart's copy)";
    assert_eq!(names(&chart_dir), names(&top_dir), "{fix}");
    for name in names(&top_dir) {
        let read = |dir: &str| {
            std::fs::read(format!("{dir}/{name}"))
                .unwrap_or_else(|e| panic!("cannot read {dir}/{name}: {e}"))
        };
        assert!(
            read(&chart_dir) == read(&top_dir),
            "charts/lro-operator/crds/{name} differs from crds/{name}: {fix}"
        );
    }
}

/// Helm without a cluster (`helm lint` and `helm template` never contact one).
async fn offline() -> Identity {
    Identity::offline()
}

#[tokio::test]
async fn helm_lint_is_clean() {
    let helm = offline().await;
    for sets in [
        vec![],
        vec![
            "--set=metrics.serviceMonitor.enabled=true",
            "--set=operator.watchNamespace=team-a",
            "--set=operator.leaderElection.enabled=false",
            "--set=podDisruptionBudget.minAvailable=1",
            "--set=image.digest=sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        ],
    ] {
        let mut args = vec!["lint", "--strict", CHART];
        args.extend(sets);
        let out = helm.helm(&args).await.assert_ok();
        assert!(
            out.stdout.contains("0 chart(s) failed"),
            "unexpected lint output: {out}"
        );
    }
}

#[tokio::test]
async fn values_schema_rejects_invalid_values() {
    let helm = offline().await;
    for (set, mentions) in [
        ("replicaCount=-1", "replicaCount"),
        ("replicaCount=two", "replicaCount"),
        ("image.pullPolicy=Sometimes", "pullPolicy"),
        ("image.digest=latest", "digest"),
        ("operator.polling.initialInterval=soon", "initialInterval"),
        ("operator.polling.jitter=0.9", "jitter"),
        ("operator.polling.multiplier=0.5", "multiplier"),
        ("operator.concurrency=0", "concurrency"),
        ("operator.watchNamespace=Not_A_Namespace", "watchNamespace"),
        ("operator.leaderElection.enabled=maybe", "enabled"),
        ("metrics.service.type=ExternalName", "type"),
        ("podDisruptionBudget.maxUnavailable=lots", "maxUnavailable"),
        ("securityContext.seccompProfile.type=Sometimes", "type"),
        ("replicas=3", "replicas"),
        ("operator.namespace=x", "namespace"),
    ] {
        let out = helm.helm(&["template", "x", CHART, "--set", set]).await;
        assert!(!out.success, "--set {set} was accepted: {out}");
        assert!(
            out.stderr
                .contains("values don't meet the specifications of the schema")
                && out.stderr.contains(mentions),
            "--set {set}: not rejected by the schema, or without naming {mentions}: {out}"
        );
    }
}

#[tokio::test]
async fn rendered_objects_follow_the_values() {
    let helm = offline().await;
    let render = |extra: &'static [&'static str]| {
        let helm = &helm;
        async move {
            let mut args = vec!["template", "rel", CHART, "-n", "lro-system"];
            args.extend_from_slice(extra);
            let out = helm.helm(&args).await.assert_ok();
            objects(&out.stdout)
        }
    };

    let defaults = render(&[]).await;
    let kinds: BTreeSet<&str> = defaults
        .iter()
        .map(|o| o["kind"].as_str().unwrap_or(""))
        .collect();
    let expected = [
        "ClusterRole",
        "ClusterRoleBinding",
        "Deployment",
        "PodDisruptionBudget",
        "Role",
        "RoleBinding",
        "Service",
        "ServiceAccount",
    ];
    assert_eq!(kinds, expected.into_iter().collect(), "rendered kinds");
    let deployment = find(&defaults, "Deployment");
    assert_eq!(deployment["spec"]["replicas"], 2);
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    assert_eq!(
        container["image"], "ghcr.io/lro-dev/lro-operator:0.1.0",
        "tag = appVersion"
    );
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    let sc = &container["securityContext"];
    assert_eq!(sc["runAsNonRoot"], true);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault");
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/livez");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert!(container["resources"]["requests"]["memory"].is_string());
    let env: Vec<&str> = container["env"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| {
            e["valueFrom"]["fieldRef"]["fieldPath"]
                .as_str()
                .map(|_| e["name"].as_str().unwrap_or(""))
        })
        .collect();
    assert_eq!(env, ["POD_NAME", "POD_NAMESPACE"], "downward API");
    let args = container_args(&deployment, &[("POD_NAMESPACE", "lro-system")]);
    for arg in [
        "run",
        "--health-addr=0.0.0.0:8080",
        "--leader-elect=true",
        "--lease-name=lro-operator",
        "--lease-namespace=lro-system",
        "--log-json",
        "--initial-interval=5s",
        "--max-interval=60s",
        "--multiplier=1.5",
        "--jitter=0.1",
        "--concurrency=32",
    ] {
        assert!(args.iter().any(|a| a == arg), "{arg} missing from {args:?}");
    }
    assert!(
        !args.iter().any(|a| a.starts_with("--namespace")),
        "watches all namespaces by default"
    );
    let role = find(&defaults, "Role");
    assert_eq!(
        role["metadata"]["namespace"], "lro-system",
        "leases only in the release namespace"
    );
    assert_eq!(
        find(&defaults, "PodDisruptionBudget")["spec"]["maxUnavailable"],
        1
    );

    let custom = render(&[
        "--set=metrics.serviceMonitor.enabled=true",
        "--set=operator.watchNamespace=team-a",
        "--set=operator.leaderElection.enabled=false",
        "--set=podDisruptionBudget.minAvailable=1",
        "--set=image.tag=9.9.9",
        "--set=replicaCount=1",
        "--set=operator.polling.multiplier=2.5", // `--set` passes decimals as strings
        "--set=operator.polling.jitter=0.25",
    ])
    .await;
    let kinds: BTreeSet<&str> = custom
        .iter()
        .map(|o| o["kind"].as_str().unwrap_or(""))
        .collect();
    assert!(kinds.contains("ServiceMonitor"), "{kinds:?}");
    assert!(
        !kinds.contains("Role") && !kinds.contains("RoleBinding"),
        "no lease Role without leader election: {kinds:?}"
    );
    let deployment = find(&custom, "Deployment");
    let args = container_args(&deployment, &[]);
    assert!(args.iter().any(|a| a == "--namespace=team-a"), "{args:?}");
    assert!(args.iter().any(|a| a == "--leader-elect=false"), "{args:?}");
    assert!(!args.iter().any(|a| a.starts_with("--lease-")), "{args:?}");
    assert!(args.iter().any(|a| a == "--multiplier=2.5"), "{args:?}");
    assert!(args.iter().any(|a| a == "--jitter=0.25"), "{args:?}");
    assert_eq!(deployment["spec"]["replicas"], 1);
    assert_eq!(
        deployment["spec"]["template"]["spec"]["containers"][0]["image"],
        "ghcr.io/lro-dev/lro-operator:9.9.9"
    );
    let pdb = find(&custom, "PodDisruptionBudget");
    assert_eq!(pdb["spec"]["minAvailable"], 1);
    assert!(pdb["spec"].get("maxUnavailable").is_none(), "{pdb:#}");
}

// ---------------------------------------------------------------------------------- on the cluster

#[tokio::test]
async fn every_rendered_object_passes_a_server_side_dry_run() {
    let mut env = TestEnv::new("chart-dry").await;
    env.kill_operator().await;
    let admin = Identity::admin(&env).await;
    let rendered = admin
        .helm(&["template", &env.ns, CHART, "-n", &env.ns, "--include-crds"])
        .await
        .assert_ok()
        .stdout;
    let out = admin
        .kubectl(
            &["apply", "--dry-run=server", "-n", &env.ns, "-f", "-"],
            Some(&rendered),
        )
        .await
        .assert_ok();
    for kind in [
        "customresourcedefinition.apiextensions.k8s.io/longrunningoperations.lro.dev",
        "serviceaccount/",
        "clusterrole.rbac.authorization.k8s.io/",
        "clusterrolebinding.rbac.authorization.k8s.io/",
        "role.rbac.authorization.k8s.io/",
        "rolebinding.rbac.authorization.k8s.io/",
        "service/",
        "deployment.apps/",
        "poddisruptionbudget.policy/",
    ] {
        assert!(out.stdout.contains(kind), "{kind} not applied: {out}");
    }
}

/// The operator binary, run as some identity; its log is printed if the test fails.
struct Operator {
    child: Child,
    log: tempfile::NamedTempFile,
}

impl Operator {
    fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        if std::thread::panicking() {
            let log = self.log();
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines[lines.len().saturating_sub(80)..].join("\n");
            eprintln!("===== operator (as the chart's ServiceAccount) log tail:\n{tail}\n=====");
        }
    }
}

/// The long flags `lro-operator run` knows.
async fn known_run_flags() -> BTreeSet<String> {
    let out = helm::run(Command::new(BIN).args(["run", "--help"]), None)
        .await
        .assert_ok();
    out.stdout
        .split(|c: char| c.is_whitespace() || c == ',' || c == '[' || c == '=')
        .filter(|w| w.starts_with("--") && w.len() > 2)
        .map(|w| {
            w.trim_end_matches(|c: char| !c.is_ascii_alphanumeric())
                .to_owned()
        })
        .collect()
}

#[tokio::test]
async fn installed_chart_identity_runs_the_operator_and_nothing_more() {
    let mut env = TestEnv::new("chart").await;
    // The harness's operator runs as the admin: stop it before any operation exists.
    env.kill_operator().await;
    let ns = env.ns.clone();
    let release = ns.clone(); // unique, so the cluster-scoped RBAC objects never clash
    let admin = Identity::admin(&env).await;

    // Install (no --wait: a bare apiserver never runs the pods).
    let watch = format!("--set=operator.watchNamespace={ns}");
    admin
        .helm(&["install", &release, CHART, "-n", &ns, &watch])
        .await
        .assert_ok();
    let deployment: Value = serde_json::from_str(
        &admin
            .kubectl(
                &[
                    "get",
                    "deployment",
                    "-n",
                    &ns,
                    "-l",
                    &format!("app.kubernetes.io/instance={release}"),
                    "-o",
                    "json",
                ],
                None,
            )
            .await
            .assert_ok()
            .stdout,
    )
    .unwrap_or_else(|e| panic!("deployment list is not JSON: {e}"));
    let deployment = &deployment["items"][0];
    let pod = &deployment["spec"]["template"]["spec"];
    let sa = pod["serviceAccountName"]
        .as_str()
        .unwrap_or_else(|| panic!("no serviceAccountName: {pod:#}"))
        .to_owned();

    // The chart's identity, as a pod of the Deployment would have it.
    let identity = Identity::service_account(&admin, &ns, &sa).await;
    let whoami = identity
        .kubectl(
            &[
                "auth",
                "whoami",
                "-o",
                "jsonpath={.status.userInfo.username}",
            ],
            None,
        )
        .await
        .assert_ok();
    assert_eq!(
        whoami.stdout.trim(),
        format!("system:serviceaccount:{ns}:{sa}")
    );

    // A ClusterOperationProvider that admits only this namespace (exercises clusteroperationproviders
    // and namespaces get), next to the harness's namespaced provider.
    let base_url = admin
        .kubectl(
            &[
                "get",
                "operationprovider",
                PROVIDER,
                "-n",
                &ns,
                "-o",
                "jsonpath={.spec.baseURL}",
            ],
            None,
        )
        .await
        .assert_ok()
        .stdout;
    let cluster_provider = json!({
        "apiVersion": "lro.dev/v1alpha1",
        "kind": "ClusterOperationProvider",
        "metadata": {"name": ns},
        "spec": {
            "baseURL": base_url,
            "protocol": "google",
            "polling": {"initialInterval": "500ms", "maxInterval": "2s"},
            "allowedNamespaces": {"matchLabels": {"kubernetes.io/metadata.name": ns}},
        },
    });
    admin
        .kubectl(&["apply", "-f", "-"], Some(&cluster_provider.to_string()))
        .await
        .assert_ok();

    // The operator, with the chart's arguments (those this binary knows yet), as the chart's identity.
    let pod_name = format!("{release}-0");
    let env_vars = [
        ("POD_NAME", pod_name.as_str()),
        ("POD_NAMESPACE", ns.as_str()),
    ];
    let chart_args = container_args(deployment, &env_vars);
    assert_eq!(
        chart_args.first().map(String::as_str),
        Some("run"),
        "{chart_args:?}"
    );
    assert!(
        chart_args.contains(&format!("--namespace={ns}")),
        "{chart_args:?}"
    );
    let known = known_run_flags().await;
    let health = format!("--health-addr=127.0.0.1:{}", free_port());
    let mut args = vec!["run".to_owned()];
    let mut not_yet = Vec::new();
    for arg in &chart_args[1..] {
        let flag = arg.split('=').next().unwrap_or_default();
        if !known.contains(flag) {
            not_yet.push(arg.clone());
            continue;
        }
        args.push(match flag {
            "--health-addr" => health.clone(), // a loopback port, not 0.0.0.0:8080
            "--leader-elect" => "--leader-elect=false".into(), // one process: no lease to wait for
            _ => arg.clone(),
        });
    }
    if !not_yet.is_empty() {
        eprintln!("chart arguments this lro-operator does not know yet (left out): {not_yet:?}");
    }
    let log = tempfile::Builder::new()
        .prefix(&format!("lro-chart-operator-{ns}-"))
        .suffix(".log")
        .tempfile()
        .unwrap_or_else(|e| panic!("cannot create a log file: {e}"));
    let out = log
        .reopen()
        .unwrap_or_else(|e| panic!("cannot reopen the log: {e}"));
    let err = log
        .reopen()
        .unwrap_or_else(|e| panic!("cannot reopen the log: {e}"));
    writeln!(&out, "===== lro-operator {}", args.join(" ")).ok();
    let child = Command::new(BIN)
        .args(&args)
        .env("KUBECONFIG", &identity.kubeconfig)
        .envs(env_vars)
        .env("RUST_LOG", "info,lro_operator=debug,kube_runtime=debug")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {BIN}: {e}"));
    let operator = Operator { child, log };

    // Operations through both kinds of provider complete.
    let lro = |name: &str, provider: Value| {
        json!({
            "apiVersion": "lro.dev/v1alpha1",
            "kind": "LongRunningOperation",
            "metadata": {"name": name},
            "spec": {
                "providerRef": provider,
                "start": {"path": "projects/demo/clusters", "body": {"simulate": {"durationSeconds": 2}}},
            },
        })
        .to_string()
    };
    env.apply(&lro("via-namespaced", json!({"name": PROVIDER})))
        .await
        .assert_ok();
    env.apply(&lro(
        "via-cluster",
        json!({"kind": "ClusterOperationProvider", "name": ns}),
    ))
    .await
    .assert_ok();
    for name in ["via-namespaced", "via-cluster"] {
        env.wait_phase(name, Phase::Succeeded, TIMEOUT).await;
    }

    // Its Events were recorded (events.k8s.io create).
    let events: Value = serde_json::from_str(
        &admin
            .kubectl(
                &["get", "events.events.k8s.io", "-n", &ns, "-o", "json"],
                None,
            )
            .await
            .assert_ok()
            .stdout,
    )
    .unwrap_or_else(|e| panic!("events are not JSON: {e}"));
    let ours: Vec<&Value> = events["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| {
            e["reportingController"] == "lro-operator" && e["regarding"]["name"] == "via-namespaced"
        })
        .collect();
    assert!(
        !ours.is_empty(),
        "no Event from the operator: {}",
        pretty(&events)
    );
    assert!(
        ours.iter()
            .any(|e| e["reportingInstance"] == pod_name.as_str()),
        "the Event reporter is POD_NAME: {}",
        pretty(&ours)
    );

    // Nothing it tried was refused (a missing watch or Event permission only shows in the log).
    tokio::time::sleep(Duration::from_secs(1)).await;
    let log = operator.log();
    let refused: Vec<&str> = log
        .lines()
        .filter(|l| l.to_ascii_lowercase().contains("forbidden"))
        .collect();
    assert!(
        refused.is_empty(),
        "the chart's RBAC refused the operator:\n{}",
        refused.join("\n")
    );
    drop(operator);

    // What the identity may do: exactly what the operator needs …
    let here = format!("--namespace={ns}");
    let lease = "leases.coordination.k8s.io/lro-operator";
    let allowed: &[(&str, &str, &[&str])] = &[
        (
            "watch",
            "longrunningoperations.lro.dev",
            &["--all-namespaces"],
        ),
        ("list", "clusteroperationproviders.lro.dev", &[]),
        (
            "patch",
            "longrunningoperations.lro.dev",
            &["--subresource=status", "-n", "default"],
        ),
        ("create", "events.events.k8s.io", &["-n", "default"]),
        ("get", "namespaces", &[]),
        ("create", "leases.coordination.k8s.io", &[&here]),
        ("get", lease, &[&here]),
        ("update", lease, &[&here]),
        ("patch", lease, &[&here]),
    ];
    // … and nothing more.
    let denied: &[(&str, &str, &[&str])] = &[
        ("get", "secrets", &[&here]),
        ("get", "secrets", &["--all-namespaces"]),
        ("list", "secrets", &["-n", "default"]),
        ("get", "configmaps", &[&here]),
        ("create", "deployments.apps", &[&here]),
        ("create", "pods", &[&here]),
        ("delete", "longrunningoperations.lro.dev", &[&here]),
        ("create", "longrunningoperations.lro.dev", &[&here]),
        ("update", "longrunningoperations.lro.dev", &[&here]),
        ("patch", "operationproviders.lro.dev", &[&here]),
        ("update", "namespaces", &[]),
        ("create", "clusterroles.rbac.authorization.k8s.io", &[]),
        ("create", "rolebindings.rbac.authorization.k8s.io", &[&here]),
        (
            "update",
            "leases.coordination.k8s.io/lro-operator",
            &["-n", "default"],
        ),
        ("create", "leases.coordination.k8s.io", &["-n", "default"]),
        (
            "update",
            "leases.coordination.k8s.io/someone-else",
            &[&here],
        ),
        (
            "delete",
            "leases.coordination.k8s.io/lro-operator",
            &[&here],
        ),
        ("create", "serviceaccounts/token", &[&here]),
    ];
    let mut wrong = Vec::new();
    for (expect, checks) in [(true, allowed), (false, denied)] {
        for (verb, resource, flags) in checks {
            if identity.can_i(verb, resource, flags).await != expect {
                wrong.push(format!(
                    "can-i {verb} {resource} {} → {}",
                    flags.join(" "),
                    if expect { "no" } else { "yes" }
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "the chart's identity has the wrong permissions:\n{}",
        wrong.join("\n")
    );

    // The documented upgrade path: CRDs first (server-side; dry run, the CRDs are shared), then helm upgrade.
    let crds = format!("{CHART}/crds/");
    admin
        .kubectl(
            &["apply", "--server-side", "--dry-run=server", "-f", &crds],
            None,
        )
        .await
        .assert_ok();
    admin
        .helm(&[
            "upgrade",
            &release,
            CHART,
            "-n",
            &ns,
            &watch,
            "--set=replicaCount=3",
        ])
        .await
        .assert_ok();
    let replicas = admin
        .kubectl(
            &[
                "get",
                "deployment",
                "-n",
                &ns,
                "-l",
                &format!("app.kubernetes.io/instance={release}"),
                "-o",
                "jsonpath={.items[0].spec.replicas}",
            ],
            None,
        )
        .await
        .assert_ok();
    assert_eq!(replicas.stdout.trim(), "3");

    // Leave no cluster-scoped objects behind (the CRDs stay: Helm never deletes them).
    admin
        .helm(&["uninstall", &release, "-n", &ns])
        .await
        .assert_ok();
    admin
        .kubectl(&["delete", "clusteroperationprovider", &ns], None)
        .await
        .assert_ok();
    let left = admin
        .kubectl(
            &[
                "get",
                "clusterrole,clusterrolebinding",
                "-l",
                &format!("app.kubernetes.io/instance={release}"),
                "-o",
                "name",
            ],
            None,
        )
        .await
        .assert_ok();
    assert_eq!(
        left.stdout.trim(),
        "",
        "helm uninstall left cluster-scoped objects"
    );
}

// ---------------------------------------------------------------------------------- helpers

/// The objects of a multi-document YAML stream (empty documents left out).
fn objects(yaml: &str) -> Vec<Value> {
    let docs: Vec<Value> =
        serde_saphyr::from_multiple(yaml).unwrap_or_else(|e| panic!("the render is not YAML: {e}"));
    docs.into_iter().filter(|d| !d.is_null()).collect()
}

/// The one object of `kind` in `objects`.
#[track_caller]
fn find(objects: &[Value], kind: &str) -> Value {
    let found: Vec<&Value> = objects.iter().filter(|o| o["kind"] == kind).collect();
    assert_eq!(found.len(), 1, "expected one {kind}, found {}", found.len());
    found[0].clone()
}
