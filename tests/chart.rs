//! The Helm chart (`charts/lro-operator`) against Helm 4 and a real kube-apiserver: lint, schema,
//! a server-side dry run of everything it renders, an install, and then the operator binary run
//! **as the chart's ServiceAccount** (a TokenRequest token) completing operations — so the chart's
//! RBAC is proven enough — while `kubectl auth can-i` proves that identity cannot do more.
//!
//! Run with `cargo test --test chart`. Helm comes from `hack/build-tools helm` (built on first use);
//! the control plane is the e2e harness's (`LRO_E2E_KUBECONFIG`, else `hack/control-plane up`).
//! A bare apiserver has no kubelet, so the chart's pods never run: the test runs the binary itself,
//! with the chart's arguments and the chart's identity.

use lro_testkit as support;
use lro_testkit::helm;

use std::collections::BTreeSet;
use std::time::Duration;

use helm::{CHART, Identity, Operator, ROOT, container_args, runnable_args, verify_serving_cert};
use kube::ResourceExt;
use lro_operator::api::Phase;
use serde_json::{Value, json};
use support::{PROVIDER, TestEnv, pretty};

const TIMEOUT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------- no cluster

#[test]
fn chart_crds_are_the_top_level_crds() {
    if let Some(why) = crd_drift() {
        panic!("{why}");
    }
}

/// Why `charts/lro-operator/crds/` is not a copy of `crds/`, if it is not.
fn crd_drift() -> Option<String> {
    let chart_dir = format!("{CHART}/crds");
    let top_dir = format!("{ROOT}/crds");
    let names = |dir: &str| -> BTreeSet<String> {
        std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("cannot list {dir}: {e}"))
            .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect::<Result<_, _>>()
            .unwrap_or_else(|e| panic!("cannot list {dir}: {e}"))
    };
    let fix = "run hack/gen-crds (Helm installs the chart's copy)";
    let (chart, top) = (names(&chart_dir), names(&top_dir));
    if chart != top {
        return Some(format!(
            "charts/lro-operator/crds/ has {chart:?}, crds/ has {top:?}: {fix}"
        ));
    }
    let read =
        |path: String| std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"));
    top.into_iter()
        .find(|name| read(format!("{chart_dir}/{name}")) != read(format!("{top_dir}/{name}")))
        .map(|name| format!("charts/lro-operator/crds/{name} differs from crds/{name}: {fix}"))
}

#[tokio::test]
async fn helm_lint_is_clean() {
    let helm = Identity::offline(); // lint and template never contact a cluster
    for sets in [
        vec![],
        vec![
            "--set=metrics.serviceMonitor.enabled=true",
            "--set=operator.watchNamespace=team-a",
            "--set=operator.leaderElection.enabled=false",
            "--set=podDisruptionBudget.minAvailable=1",
            "--set=image.digest=sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "--set=webhook.certManager.enabled=true",
            "--set=webhook.failurePolicy=Ignore",
        ],
        vec!["--set=webhook.enabled=false"],
        vec![
            "--set=operator.workloadIdentity.enabled=true",
            "--set=operator.workloadIdentity.namespaces={team-a,team-b}",
            "--set=operator.workloadIdentity.serviceAccountNames={lro-deployer}",
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
    let helm = Identity::offline(); // lint and template never contact a cluster
    for (set, mentions) in [
        ("replicaCount=-1", "replicaCount"),
        ("replicaCount=two", "replicaCount"),
        ("image.pullPolicy=Sometimes", "pullPolicy"),
        ("image.digest=latest", "digest"),
        ("operator.polling.initialInterval=soon", "initialInterval"),
        ("operator.polling.jitter=0.9", "jitter"),
        ("operator.polling.multiplier=0.5", "multiplier"),
        ("operator.concurrency=0", "concurrency"),
        ("operator.shard=-a-", "shard"),
        ("operator.excludeShards[0]=a b", "excludeShards"),
        ("operator.watchNamespace=Not_A_Namespace", "watchNamespace"),
        ("operator.leaderElection.enabled=maybe", "enabled"),
        ("metrics.service.type=ExternalName", "type"),
        ("podDisruptionBudget.maxUnavailable=lots", "maxUnavailable"),
        ("securityContext.seccompProfile.type=Sometimes", "type"),
        ("webhook.failurePolicy=Sometimes", "failurePolicy"),
        ("webhook.port=0", "port"),
        ("webhook.enabled=yes", "enabled"),
        ("webhook.certManager.issuerRef.kind=Vault", "kind"),
        ("webhook.objectSelector.matchNames=x", "matchNames"),
        ("operator.workloadIdentity.enabled=yes", "enabled"),
        (
            "operator.workloadIdentity.namespaces[0]=Not_A_Namespace",
            "namespaces",
        ),
        (
            "operator.workloadIdentity.serviceAccountNames[0]=team/sa",
            "serviceAccountNames",
        ),
        ("operator.workloadIdentity.audience=x", "audience"),
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
    let helm = Identity::offline(); // lint and template never contact a cluster
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
        "Secret",
        "Service",
        "ServiceAccount",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
        "ValidatingWebhookConfiguration",
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
        "--concurrency=128",
        "--webhook-addr=0.0.0.0:9443",
        "--webhook-cert-dir=/tls",
    ] {
        assert!(args.iter().any(|a| a == arg), "{arg} missing from {args:?}");
    }
    check_webhook(&defaults, "rel", "lro-system", 9443).await;
    assert!(
        !args.iter().any(|a| a.starts_with("--namespace")),
        "watches all namespaces by default"
    );
    assert!(
        !args.iter().any(|a| a == "--allow-private-networks"),
        "private networks are closed by default: {args:?}"
    );
    let role = find(&defaults, "Role");
    assert_eq!(
        role["metadata"]["namespace"], "lro-system",
        "leases only in the release namespace"
    );
    // Watching every namespace: provider Secrets may be anywhere.
    assert_eq!(
        names(&defaults, "ClusterRole"),
        ["rel-lro-operator", "rel-lro-operator-credentials"]
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
        "--set=webhook.enabled=false",
        "--set=operator.allowPrivateNetworks=true",
        "--set=admissionPolicy.enabled=false",
    ])
    .await;
    let kinds: BTreeSet<&str> = custom
        .iter()
        .map(|o| o["kind"].as_str().unwrap_or(""))
        .collect();
    assert!(kinds.contains("ServiceMonitor"), "{kinds:?}");
    // Watching one namespace: Secrets only there and in the release namespace; no lease Role.
    assert_eq!(names(&custom, "ClusterRole"), ["rel-lro-operator"]);
    let roles: Vec<(String, String)> = custom
        .iter()
        .filter(|o| o["kind"] == "Role")
        .map(|o| {
            let field = |f: &str| o["metadata"][f].as_str().unwrap_or_default().to_owned();
            (field("namespace"), field("name"))
        })
        .collect();
    assert_eq!(
        roles,
        [
            ("lro-system".into(), "rel-lro-operator-credentials".into()),
            ("team-a".into(), "rel-lro-operator-credentials".into()),
        ]
    );
    let deployment = find(&custom, "Deployment");
    let args = container_args(&deployment, &[]);
    assert!(args.iter().any(|a| a == "--namespace=team-a"), "{args:?}");
    assert!(args.iter().any(|a| a == "--leader-elect=false"), "{args:?}");
    assert!(!args.iter().any(|a| a.starts_with("--lease-")), "{args:?}");
    assert!(args.iter().any(|a| a == "--multiplier=2.5"), "{args:?}");
    assert!(args.iter().any(|a| a == "--jitter=0.25"), "{args:?}");
    assert!(
        args.iter().any(|a| a == "--allow-private-networks"),
        "{args:?}"
    );
    assert_eq!(deployment["spec"]["replicas"], 1);
    assert_eq!(
        deployment["spec"]["template"]["spec"]["containers"][0]["image"],
        "ghcr.io/lro-dev/lro-operator:9.9.9"
    );
    let pdb = find(&custom, "PodDisruptionBudget");
    assert_eq!(pdb["spec"]["minAvailable"], 1);
    assert!(pdb["spec"].get("maxUnavailable").is_none(), "{pdb:#}");
    // webhook.enabled=false: no webhook objects, arguments, port or volume; admissionPolicy off.
    for kind in [
        "ValidatingWebhookConfiguration",
        "Secret",
        "Certificate",
        "Issuer",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    ] {
        assert!(!kinds.contains(kind), "{kind} rendered: {kinds:?}");
    }
    assert_eq!(names(&custom, "Service"), ["rel-lro-operator-metrics"]);
    assert!(!args.iter().any(|a| a.starts_with("--webhook")), "{args:?}");
    let pod = &deployment["spec"]["template"]["spec"];
    assert!(pod.get("volumes").is_none(), "{pod:#}");
    assert!(
        pod["containers"][0].get("volumeMounts").is_none(),
        "{pod:#}"
    );
    assert_eq!(
        pod["containers"][0]["ports"].as_array().map(Vec::len),
        Some(1)
    );

    // cert-manager issues the certificate (a self-signed Issuer unless one is named) and injects
    // the caBundle; failurePolicy and port as set.
    let cert_manager = render(&[
        "--set=webhook.certManager.enabled=true",
        "--set=webhook.failurePolicy=Ignore",
        "--set=webhook.port=10443",
    ])
    .await;
    assert!(
        !cert_manager.iter().any(|o| o["kind"] == "Secret"),
        "cert-manager writes the Secret"
    );
    let certificate = find(&cert_manager, "Certificate");
    assert_eq!(
        certificate["spec"]["secretName"],
        "rel-lro-operator-webhook-tls"
    );
    assert_eq!(
        certificate["spec"]["dnsNames"],
        json!(webhook_dns_names("rel", "lro-system"))
    );
    let issuer = find(&cert_manager, "Issuer");
    assert_eq!(
        certificate["spec"]["issuerRef"]["name"],
        issuer["metadata"]["name"]
    );
    assert_eq!(issuer["spec"]["selfSigned"], json!({}));
    let vwc = find(&cert_manager, "ValidatingWebhookConfiguration");
    assert_eq!(
        vwc["metadata"]["annotations"]["cert-manager.io/inject-ca-from"],
        "lro-system/rel-lro-operator-webhook"
    );
    assert!(
        vwc["webhooks"][0]["clientConfig"].get("caBundle").is_none(),
        "{vwc:#}"
    );
    assert_eq!(vwc["webhooks"][0]["failurePolicy"], "Ignore");
    let args = container_args(&find(&cert_manager, "Deployment"), &[]);
    assert!(
        args.iter().any(|a| a == "--webhook-addr=0.0.0.0:10443"),
        "{args:?}"
    );
    // A shard: its flag, and its own Lease (flag and Role) unless one is named.
    let shard = render(&["--set=operator.shard=a"]).await;
    let args = container_args(&find(&shard, "Deployment"), &[]);
    for arg in ["--shard=a", "--lease-name=lro-operator-a"] {
        assert!(args.iter().any(|a| a == arg), "{arg} missing from {args:?}");
    }
    let lease_role = shard
        .iter()
        .find(|o| {
            o["kind"] == "Role" && o["metadata"]["name"] == "rel-lro-operator-leader-election"
        })
        .expect("the leader-election Role");
    assert_eq!(
        lease_role["rules"][1]["resourceNames"],
        json!(["lro-operator-a"])
    );
    let rest = render(&["--set=operator.excludeShards={a,b}"]).await;
    let args = container_args(&find(&rest, "Deployment"), &[]);
    assert!(args.iter().any(|a| a == "--exclude-shards=a,b"), "{args:?}");
    assert!(
        args.iter().any(|a| a == "--lease-name=lro-operator"),
        "{args:?}"
    );

    // Workload identity: off by default (no token grant at all, above); on, a ClusterRole that
    // may only create ServiceAccount tokens, or Roles where the values say.
    let policy = find(&defaults, "ValidatingAdmissionPolicy");
    let checks = policy["spec"]["variables"].to_string();
    assert!(
        checks.contains(".resource('serviceaccounts').subresource('token')")
            && checks.contains("check('create')"),
        "the admission policy checks ServiceAccount tokens: {policy:#}"
    );
    assert_eq!(
        policy["spec"]["validations"].as_array().map(Vec::len),
        Some(2)
    );
    let token_rule = json!([{"apiGroups": [""], "resources": ["serviceaccounts/token"],
                             "verbs": ["create"]}]);
    let identity = render(&["--set=operator.workloadIdentity.enabled=true"]).await;
    assert_eq!(
        names(&identity, "ClusterRole"),
        [
            "rel-lro-operator",
            "rel-lro-operator-credentials",
            "rel-lro-operator-workload-identity"
        ]
    );
    let role = identity
        .iter()
        .find(|o| {
            o["kind"] == "ClusterRole"
                && o["metadata"]["name"] == "rel-lro-operator-workload-identity"
        })
        .expect("the workload identity ClusterRole");
    assert_eq!(role["rules"], token_rule);
    let binding = identity
        .iter()
        .find(|o| {
            o["kind"] == "ClusterRoleBinding"
                && o["metadata"]["name"] == "rel-lro-operator-workload-identity"
        })
        .expect("its binding");
    assert_eq!(
        binding["subjects"],
        json!([{"kind": "ServiceAccount", "name": "rel-lro-operator", "namespace": "lro-system"}])
    );
    let token_roles = |objects: &[Value]| -> Vec<(String, Value)> {
        objects
            .iter()
            .filter(|o| {
                o["kind"] == "Role" && o["metadata"]["name"] == "rel-lro-operator-workload-identity"
            })
            .map(|o| {
                (
                    o["metadata"]["namespace"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                    o["rules"].clone(),
                )
            })
            .collect()
    };
    let watching = render(&[
        "--set=operator.workloadIdentity.enabled=true",
        "--set=operator.watchNamespace=team-a",
    ])
    .await;
    assert_eq!(names(&watching, "ClusterRole"), ["rel-lro-operator"]);
    assert_eq!(
        token_roles(&watching),
        [
            ("lro-system".to_owned(), token_rule.clone()),
            ("team-a".to_owned(), token_rule.clone())
        ]
    );
    let listed = render(&[
        "--set=operator.workloadIdentity.enabled=true",
        "--set=operator.workloadIdentity.namespaces={team-b,team-c}",
        "--set=operator.workloadIdentity.serviceAccountNames={lro-deployer}",
    ])
    .await;
    let named_rule = json!([{"apiGroups": [""], "resources": ["serviceaccounts/token"],
                             "resourceNames": ["lro-deployer"], "verbs": ["create"]}]);
    assert_eq!(
        token_roles(&listed),
        [
            ("team-b".to_owned(), named_rule.clone()),
            ("team-c".to_owned(), named_rule)
        ]
    );
    assert_eq!(
        names(&listed, "RoleBinding")
            .iter()
            .filter(|n| n.ends_with("-workload-identity"))
            .count(),
        2
    );

    let named = render(&[
        "--set=webhook.certManager.enabled=true",
        "--set=webhook.certManager.issuerRef.name=corp-ca",
        "--set=webhook.certManager.issuerRef.kind=ClusterIssuer",
    ])
    .await;
    assert!(
        !named.iter().any(|o| o["kind"] == "Issuer"),
        "an issuer was named"
    );
    assert_eq!(
        find(&named, "Certificate")["spec"]["issuerRef"],
        json!({"name": "corp-ca", "kind": "ClusterIssuer"})
    );
}

/// The DNS names of release `release`'s webhook Service in `namespace`, as in its certificate.
fn webhook_dns_names(release: &str, namespace: &str) -> Vec<String> {
    let svc = format!("{release}-lro-operator-webhook");
    vec![
        svc.clone(),
        format!("{svc}.{namespace}"),
        format!("{svc}.{namespace}.svc"),
        format!("{svc}.{namespace}.svc.cluster.local"),
    ]
}

/// The webhook of a render (`objects`) of release `release` in `namespace` with a Helm-generated
/// certificate: the Secret, its mount, the Service and the ValidatingWebhookConfiguration, whose
/// caBundle verifies the serving certificate.
async fn check_webhook(objects: &[Value], release: &str, namespace: &str, port: u16) {
    let fullname = format!("{release}-lro-operator");
    let deployment = find(objects, "Deployment");
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let ports = container["ports"].as_array().cloned().unwrap_or_default();
    assert!(
        ports.contains(&json!({"name": "webhook", "containerPort": port, "protocol": "TCP"})),
        "{ports:?}"
    );
    assert_eq!(
        container["volumeMounts"],
        json!([{"name": "webhook-tls", "mountPath": "/tls", "readOnly": true}])
    );
    let secret = find(objects, "Secret");
    assert_eq!(secret["type"], "kubernetes.io/tls");
    assert_eq!(secret["metadata"]["namespace"], namespace);
    assert_eq!(
        pod["volumes"],
        json!([{"name": "webhook-tls", "secret": {"secretName": secret["metadata"]["name"]}}])
    );

    // A Service port 443 to every replica's `webhook` port.
    let service = objects
        .iter()
        .find(|o| o["kind"] == "Service" && o["metadata"]["name"] == format!("{fullname}-webhook"))
        .unwrap_or_else(|| panic!("no Service {fullname}-webhook"));
    assert_eq!(
        service["spec"]["selector"], deployment["spec"]["selector"]["matchLabels"],
        "the webhook Service selects all replicas"
    );
    assert_eq!(
        service["spec"]["ports"],
        json!([{"name": "https-webhook", "port": 443, "targetPort": "webhook", "protocol": "TCP"}])
    );

    let vwc = find(objects, "ValidatingWebhookConfiguration");
    assert_eq!(vwc["metadata"]["name"], fullname.as_str());
    let webhooks = vwc["webhooks"].as_array().cloned().unwrap_or_default();
    assert_eq!(webhooks.len(), 1, "{vwc:#}");
    let webhook = &webhooks[0];
    assert_eq!(webhook["name"], "providers.lro.dev");
    assert_eq!(
        webhook["clientConfig"]["service"],
        json!({"name": service["metadata"]["name"], "namespace": namespace,
               "path": "/validate", "port": 443})
    );
    assert_eq!(
        webhook["rules"],
        json!([{"apiGroups": ["lro.dev"], "apiVersions": ["v1alpha1"],
                "operations": ["CREATE", "UPDATE"],
                "resources": ["operationproviders", "clusteroperationproviders", "longrunningoperations"], "scope": "*"}])
    );
    assert_eq!(webhook["failurePolicy"], "Fail");
    assert_eq!(webhook["sideEffects"], "None");
    assert_eq!(webhook["admissionReviewVersions"], json!(["v1"]));
    assert_eq!(webhook["timeoutSeconds"], 5);
    let ca_bundle = webhook["clientConfig"]["caBundle"]
        .as_str()
        .unwrap_or_default();
    assert!(!ca_bundle.is_empty(), "no caBundle: {vwc:#}");
    assert_eq!(
        secret["data"]["ca.crt"], ca_bundle,
        "the Secret's ca.crt is the caBundle"
    );
    // The name the apiserver dials (`<service>.<namespace>.svc`) is in the certificate.
    let host = format!("{fullname}-webhook.{namespace}.svc");
    let sans = verify_serving_cert(ca_bundle, &secret["data"], &host).await;
    assert_eq!(sans, webhook_dns_names(release, namespace));
}

// ---------------------------------------------------------------------------------- on the cluster

#[tokio::test]
async fn every_rendered_object_passes_a_server_side_dry_run() {
    let mut env = TestEnv::new("chart-dry").await;
    env.kill_operator().await;
    let admin = Identity::admin(&env).await;
    let rendered = admin
        .helm(&[
            "template",
            &env.ns,
            CHART,
            "-n",
            &env.ns,
            "--include-crds",
            "--set=operator.workloadIdentity.enabled=true",
        ])
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
        "secret/",
        "validatingwebhookconfiguration.admissionregistration.k8s.io/",
    ] {
        assert!(out.stdout.contains(kind), "{kind} not applied: {out}");
    }
}

#[tokio::test]
async fn installed_chart_identity_runs_the_operator_and_nothing_more() {
    let mut env = TestEnv::new("chart").await;
    // The harness's operator runs as the admin: stop it before any operation exists.
    env.kill_operator().await;
    // Operations, providers and their Secrets live in `ns`; the release (ServiceAccount, Lease,
    // ClusterOperationProvider Secrets) in `sys`; `default` stands for every other namespace.
    let ns = env.ns.clone();
    let sys = format!("{ns}-sys");
    let release = ns.clone(); // unique, so the cluster-scoped RBAC objects never clash
    let admin = Identity::admin(&env).await;
    // The harness applied crds/; Helm 4 applies the chart's copy server-side and stops on a conflict.
    if let Some(why) = crd_drift() {
        panic!("{why}");
    }
    admin
        .kubectl(&["create", "namespace", &sys], None)
        .await
        .assert_ok();

    // Install (no --wait: a bare apiserver never runs the pods), WITHOUT the admission webhook.
    // Its ValidatingWebhookConfiguration is cluster-wide and points at a Service this apiserver
    // cannot reach (no kube-proxy, no pods): with failurePolicy Fail it would refuse every
    // OperationProvider create or update in the whole shared cluster, this test's and every
    // parallel test's. The webhook objects are checked rendered (`rendered_objects_follow_the_values`),
    // dry-run on the server, and installed by the upgrade below in a form that never intercepts.
    let watch = format!("--set=operator.watchNamespace={ns}");
    admin
        .helm(&[
            "install",
            &release,
            CHART,
            "-n",
            &sys,
            &watch,
            "--set=webhook.enabled=false",
            // The harness's simulator listens on loopback: the admin opens private networks.
            "--set=operator.allowPrivateNetworks=true",
        ])
        .await
        .assert_ok();
    let selector = format!("app.kubernetes.io/instance={release}");
    // The chart's identity, as a pod of the Deployment would have it.
    let (deployment, identity) = admin.release_operator(&release, &sys).await;
    let sa = deployment["spec"]["template"]["spec"]["serviceAccountName"]
        .as_str()
        .unwrap_or_default();
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
        format!("system:serviceaccount:{sys}:{sa}")
    );

    // Providers whose bearer token is in a Secret: a namespaced one (Secret in `ns`) and a
    // ClusterOperationProvider admitting only `ns` (Secret in `sys`, the operator's namespace).
    // The harness's provider spec (its simulator, and whatever it needs to reach it), plus auth.
    let harness = admin
        .kubectl(
            &[
                "get",
                "operationprovider",
                PROVIDER,
                "-n",
                &ns,
                "-o",
                "json",
            ],
            None,
        )
        .await
        .assert_ok();
    let harness: Value = serde_json::from_str(&harness.stdout)
        .unwrap_or_else(|e| panic!("provider {PROVIDER} is not JSON: {e}"));
    for namespace in [&ns, &sys] {
        admin
            .kubectl(
                &[
                    "create",
                    "secret",
                    "generic",
                    "upstream-token",
                    "-n",
                    namespace,
                    "--from-literal=token=t0k3n",
                ],
                None,
            )
            .await
            .assert_ok();
    }
    let mut spec = harness["spec"].clone();
    spec["auth"] =
        json!({"bearerToken": {"secretKeyRef": {"name": "upstream-token", "key": "token"}}});
    let mut cluster_spec = spec.clone();
    cluster_spec["allowedNamespaces"] = json!({"matchLabels": {"kubernetes.io/metadata.name": ns}});
    let providers = [
        json!({"apiVersion": "lro.dev/v1alpha1", "kind": "OperationProvider",
               "metadata": {"name": "with-token", "namespace": ns}, "spec": spec}),
        json!({"apiVersion": "lro.dev/v1alpha1", "kind": "ClusterOperationProvider",
               "metadata": {"name": ns}, "spec": cluster_spec}),
    ];
    for provider in &providers {
        admin
            .kubectl(&["apply", "-f", "-"], Some(&provider.to_string()))
            .await
            .assert_ok();
    }

    // The operator, with the chart's arguments (those this binary knows yet), as the chart's identity.
    let pod_name = format!("{release}-0");
    let env_vars = [
        ("POD_NAME", pod_name.as_str()),
        ("POD_NAMESPACE", sys.as_str()),
    ];
    let chart_args = container_args(&deployment, &env_vars);
    assert_eq!(
        chart_args.first().map(String::as_str),
        Some("run"),
        "{chart_args:?}"
    );
    assert!(
        chart_args.contains(&format!("--namespace={ns}")),
        "{chart_args:?}"
    );
    let args = runnable_args(&chart_args).await;
    let operator = Operator::start(&args, &identity, &env_vars, &ns);

    // Operations through both providers complete …
    let lro = |name: &str, provider: Value, seconds: u64| {
        json!({
            "apiVersion": "lro.dev/v1alpha1",
            "kind": "LongRunningOperation",
            "metadata": {"name": name},
            "spec": {
                "providerRef": provider,
                "start": {"path": "projects/demo/clusters", "body": {"simulate": {"durationSeconds": seconds}}},
            },
        })
    };
    let cluster_ref = json!({"kind": "ClusterOperationProvider", "name": ns});
    let mut cancel_on_delete = lro("cancel-on-delete", json!({"name": PROVIDER}), 120);
    cancel_on_delete["spec"]["onDelete"] = json!("Cancel");
    for op in [
        lro("via-namespaced", json!({"name": "with-token"}), 2),
        lro("via-cluster", cluster_ref, 2),
        cancel_on_delete,
    ] {
        env.apply(&op.to_string()).await.assert_ok();
    }
    for name in ["via-namespaced", "via-cluster"] {
        env.wait_phase(name, Phase::Succeeded, TIMEOUT).await;
    }
    // … and both providers are Ready (their Secrets were read, their status written).
    for (kind, name, namespace) in [
        ("operationprovider", "with-token", ns.as_str()),
        ("clusteroperationprovider", ns.as_str(), sys.as_str()),
    ] {
        let jsonpath = "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}";
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        loop {
            let ready = admin
                .kubectl(&["get", kind, name, "-n", namespace, "-o", jsonpath], None)
                .await
                .assert_ok();
            if ready.stdout.trim() == "True" {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{kind}/{name} not Ready within {TIMEOUT:?}: {ready}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    // `onDelete: Cancel`: the finalizer goes on, and comes off after the cancel.
    let running = env
        .wait_for(
            "cancel-on-delete",
            "Running with its finalizer",
            TIMEOUT,
            |op| support::phase_of(op) == Some(Phase::Running) && !op.finalizers().is_empty(),
        )
        .await;
    let upstream = support::status_of(&running)
        .operation
        .as_ref()
        .and_then(|h| h.name.clone())
        .unwrap_or_else(|| panic!("no upstream handle: {}", pretty(&running.status)));
    env.kubectl(&["delete", "lro", "cancel-on-delete", "--wait=false"])
        .await
        .assert_ok();
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while env
        .lros
        .get_opt("cancel-on-delete")
        .await
        .unwrap_or_else(|e| panic!("cannot get lro/cancel-on-delete: {e}"))
        .is_some()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "lro/cancel-on-delete still there after {TIMEOUT:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let cancelled = env.sim_operation(&upstream).await;
    assert!(cancelled["cancels"].as_u64() >= Some(1), "{cancelled}");

    // It led through the chart's Lease in the release namespace, under its POD_NAME.
    if args.iter().any(|a| a == "--leader-elect=true") {
        let holder = admin
            .kubectl(
                &[
                    "get",
                    "lease",
                    "lro-operator",
                    "-n",
                    &sys,
                    "-o",
                    "jsonpath={.spec.holderIdentity}",
                ],
                None,
            )
            .await
            .assert_ok();
        assert_eq!(holder.stdout.trim(), pod_name, "the Lease holder");
    }

    // Its Events were recorded (events.k8s.io create).
    let events = admin
        .kubectl(
            &["get", "events.events.k8s.io", "-n", &ns, "-o", "json"],
            None,
        )
        .await
        .assert_ok();
    let events: Value =
        serde_json::from_str(&events.stdout).unwrap_or_else(|e| panic!("events are not JSON: {e}"));
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

    // What the identity may do: what the operator needs …
    let (in_ns, in_sys, elsewhere) = (
        format!("--namespace={ns}"),
        format!("--namespace={sys}"),
        "--namespace=default".to_owned(),
    );
    let (in_ns, in_sys, elsewhere) = (in_ns.as_str(), in_sys.as_str(), elsewhere.as_str());
    let all = "--all-namespaces";
    let lease = "leases.coordination.k8s.io/lro-operator";
    let lros = "longrunningoperations.lro.dev";
    let allowed: &[(&str, &str, &[&str])] = &[
        ("watch", lros, &[all]),
        ("list", "clusteroperationproviders.lro.dev", &[]),
        ("patch", lros, &["--subresource=status", elsewhere]),
        ("patch", lros, &[in_ns]), // its finalizer
        (
            "patch",
            "operationproviders.lro.dev",
            &["--subresource=status", in_ns],
        ),
        (
            "patch",
            "clusteroperationproviders.lro.dev",
            &["--subresource=status"],
        ),
        ("create", "events.events.k8s.io", &[elsewhere]),
        ("patch", "events.events.k8s.io", &[elsewhere]),
        ("get", "namespaces", &[]),
        ("get", "secrets", &[in_ns]),
        ("get", "secrets", &[in_sys]),
        ("get", "configmaps", &[in_sys]),
        ("create", "secrets", &[in_ns]),   // spec.outputs
        ("patch", "configmaps", &[in_ns]), // spec.outputs
        ("create", "leases.coordination.k8s.io", &[in_sys]),
        ("get", lease, &[in_sys]),
        ("update", lease, &[in_sys]),
        ("patch", lease, &[in_sys]),
    ];
    // … and nothing more.
    let denied: &[(&str, &str, &[&str])] = &[
        ("get", "secrets", &[elsewhere]),
        ("list", "secrets", &[all]),
        // Secrets and ConfigMaps are read by name only: never listed nor watched.
        ("list", "secrets", &[in_ns]),
        ("watch", "secrets", &[in_ns]),
        ("list", "configmaps", &[in_sys]),
        ("watch", "configmaps", &[in_ns]),
        ("get", "configmaps", &[elsewhere]),
        ("create", "secrets", &[elsewhere]),
        ("update", "secrets", &[in_sys]),
        ("delete", "configmaps", &[in_ns]),
        ("create", "deployments.apps", &[in_sys]),
        ("create", "pods", &[in_ns]),
        ("delete", lros, &[in_ns]),
        ("create", lros, &[in_ns]),
        ("update", lros, &[in_ns]),
        ("patch", "operationproviders.lro.dev", &[in_ns]),
        ("delete", "clusteroperationproviders.lro.dev", &[]),
        ("update", "namespaces", &[]),
        ("create", "clusterroles.rbac.authorization.k8s.io", &[]),
        (
            "create",
            "rolebindings.rbac.authorization.k8s.io",
            &[in_sys],
        ),
        ("update", lease, &[in_ns]),
        ("update", lease, &[elsewhere]),
        ("create", "leases.coordination.k8s.io", &[in_ns]),
        (
            "update",
            "leases.coordination.k8s.io/someone-else",
            &[in_sys],
        ),
        ("delete", lease, &[in_sys]),
        // Workload identity is off unless enabled (see the upgrade below).
        (
            "create",
            "serviceaccounts/default",
            &["--subresource=token", in_ns],
        ),
        (
            "create",
            "serviceaccounts/default",
            &["--subresource=token", in_sys],
        ),
    ];
    let mut wrong = Vec::new();
    for (expect, checks) in [(true, allowed), (false, denied)] {
        for (verb, resource, flags) in checks {
            if identity.can_i(verb, resource, flags).await != expect {
                let answer = if expect { "no" } else { "yes" };
                wrong.push(format!(
                    "can-i {verb} {resource} {} → {answer}",
                    flags.join(" ")
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "the chart's identity has the wrong permissions:\n{}",
        wrong.join("\n")
    );

    // The documented upgrade path: CRDs first (server-side; a dry run, the CRDs are shared), then
    // `helm upgrade`.
    let crds = format!("{CHART}/crds/");
    admin
        .kubectl(
            &["apply", "--server-side", "--dry-run=server", "-f", &crds],
            None,
        )
        .await
        .assert_ok();
    // The upgrades turn the webhook on, so that Helm's `lookup` of its certificate Secret is
    // exercised against the cluster. Safe for the shared cluster: the objectSelector matches a
    // label no object has, so the apiserver never calls it (and Ignore, should one have it).
    let webhook_selector =
        format!("--set=webhook.objectSelector.matchLabels.lro-chart-test-never-set={ns}");
    let upgrade = [
        "upgrade",
        &release,
        CHART,
        "-n",
        &sys,
        &watch,
        "--set=replicaCount=3",
        "--set=webhook.enabled=true",
        "--set=webhook.failurePolicy=Ignore",
        &webhook_selector,
        "--set=operator.workloadIdentity.enabled=true",
    ];
    let webhook_name = format!("{release}-lro-operator");
    let tls_secret = format!("{release}-lro-operator-webhook-tls");
    let ca_bundle = || async {
        let vwc = admin
            .kubectl(
                &[
                    "get",
                    "validatingwebhookconfiguration",
                    &webhook_name,
                    "-o",
                    "json",
                ],
                None,
            )
            .await
            .assert_ok();
        let vwc: Value = serde_json::from_str(&vwc.stdout)
            .unwrap_or_else(|e| panic!("the webhook configuration is not JSON: {e}"));
        assert_eq!(
            vwc["webhooks"][0]["objectSelector"]["matchLabels"]["lro-chart-test-never-set"],
            ns.as_str(),
            "the test's webhook must never intercept: {vwc:#}"
        );
        let secret = admin
            .kubectl(
                &["get", "secret", &tls_secret, "-n", &sys, "-o", "json"],
                None,
            )
            .await
            .assert_ok();
        let secret: Value = serde_json::from_str(&secret.stdout)
            .unwrap_or_else(|e| panic!("the webhook Secret is not JSON: {e}"));
        let bundle = vwc["webhooks"][0]["clientConfig"]["caBundle"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        (bundle, secret["data"].clone())
    };
    admin.helm(&upgrade).await.assert_ok();
    let (first_bundle, first_data) = ca_bundle().await;
    assert!(!first_bundle.is_empty(), "no caBundle after the upgrade");
    let host = format!("{release}-lro-operator-webhook.{sys}.svc");
    verify_serving_cert(&first_bundle, &first_data, &host).await;
    // Upgrading again re-renders the templates: the Secret is looked up and reused, so the
    // caBundle (and the serving certificate the pods mount) stay the same.
    admin.helm(&upgrade).await.assert_ok();
    let (second_bundle, second_data) = ca_bundle().await;
    assert_eq!(
        second_bundle, first_bundle,
        "the upgrade changed the caBundle"
    );
    assert_eq!(
        second_data, first_data,
        "the upgrade changed the serving certificate"
    );
    let replicas = admin
        .kubectl(
            &[
                "get",
                "deployment",
                "-n",
                &sys,
                "-l",
                &selector,
                "-o",
                "jsonpath={.items[0].spec.replicas}",
            ],
            None,
        )
        .await
        .assert_ok();
    assert_eq!(replicas.stdout.trim(), "3");
    // With workload identity on (and watchNamespace): ServiceAccount tokens in the watched and
    // the release namespaces, nowhere else.
    for (flags, expect) in [(in_ns, true), (in_sys, true), (elsewhere, false)] {
        assert_eq!(
            identity
                .can_i(
                    "create",
                    "serviceaccounts/lro-deployer",
                    &["--subresource=token", flags]
                )
                .await,
            expect,
            "create serviceaccounts/lro-deployer/token {flags}"
        );
    }

    // Leave no cluster-scoped objects behind (the CRDs stay: Helm never deletes them).
    admin
        .helm(&["uninstall", &release, "-n", &sys])
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
                "clusterrole,clusterrolebinding,validatingwebhookconfiguration",
                "-l",
                &selector,
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
    let _ = admin
        .kubectl(&["delete", "namespace", &sys, "--wait=false"], None)
        .await;
}

// ---------------------------------------------------------------------------------- helpers

/// The objects of a multi-document YAML stream (empty documents left out).
fn objects(yaml: &str) -> Vec<Value> {
    let docs: Vec<Value> =
        serde_saphyr::from_multiple(yaml).unwrap_or_else(|e| panic!("the render is not YAML: {e}"));
    docs.into_iter().filter(|d| !d.is_null()).collect()
}

/// The names of the objects of `kind` in `objects`, sorted.
fn names(objects: &[Value], kind: &str) -> Vec<String> {
    let mut names: Vec<String> = objects
        .iter()
        .filter(|o| o["kind"] == kind)
        .map(|o| {
            o["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    names.sort();
    names
}

/// The one object of `kind` in `objects`.
#[track_caller]
fn find(objects: &[Value], kind: &str) -> Value {
    let found: Vec<&Value> = objects.iter().filter(|o| o["kind"] == kind).collect();
    assert_eq!(found.len(), 1, "expected one {kind}, found {}", found.len());
    found[0].clone()
}
