//! A cluster shared by teams: every attack of a tenant on the operator, run as a **restricted
//! user** (a ServiceAccount token bound to a Role that may create the project's objects and
//! ConfigMaps, but may not read Secrets) against a real kube-apiserver, with the operator
//! installed by the chart with its defaults (every namespace, the admission policy on) and run as
//! the chart's ServiceAccount. Each attack asserts the refusal and the untouched victim; at the
//! end the operator is the same process, still holding its Lease, and no secret value is in any
//! status, Event or the operator's log.
//!
//! The test has a control plane of its own: the default install watches every namespace, which
//! would disturb the other tests' operators on the shared one. `docs/security.md` maps each
//! point of the threat model to the assertions here.

use lro_testkit as support;

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use lro_operator::api::{LongRunningOperation, Phase, condition};
use serde_json::{Value, json};
use support::helm::{CHART, Identity, Operator, container_args, runnable_args};
use support::leader::{ControlPlane, holder};
use support::{TestEnv, phase_of, pretty};

const WAIT: Duration = Duration::from_secs(60);

/// What the restricted user may do in its namespace: the project's objects and ConfigMaps, read
/// Events. No Secrets; nothing cluster-scoped.
const TENANT_ROLE: &str = r#"{
  "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
  "metadata": {"name": "tenant"},
  "rules": [
    {"apiGroups": ["lro.dev"], "resources": ["longrunningoperations", "operationproviders"], "verbs": ["*"]},
    {"apiGroups": ["lro.dev"], "resources": ["longrunningoperations/status", "operationproviders/status"], "verbs": ["get"]},
    {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["*"]},
    {"apiGroups": ["", "events.k8s.io"], "resources": ["events"], "verbs": ["get", "list", "watch"]}
  ]
}"#;

/// Everything the attacks share.
struct World {
    env: TestEnv,
    admin: Identity,
    tenant: Identity,
    operator: Operator,
    /// The tenant's namespace (the harness's).
    team_a: String,
    /// Another tenant's namespace.
    team_b: String,
    /// The release namespace (the operator's).
    sys: String,
    /// The admin's ClusterOperationProvider admitting both teams (bearer token `cluster_token`).
    shared: String,
    /// A Secret value of `team_a` the tenant may not read.
    victim_token: String,
    /// The token of `shared`, in the release namespace.
    cluster_token: String,
    kube: kube::Client,
}

impl World {
    fn ops(&self, namespace: &str) -> Api<LongRunningOperation> {
        Api::namespaced(self.kube.clone(), namespace)
    }

    /// `kubectl apply` of `manifest` in `team_a` as the restricted user.
    async fn tenant_apply(&self, manifest: &Value) -> support::Output {
        self.tenant
            .kubectl(
                &["apply", "-n", &self.team_a, "-f", "-"],
                Some(&manifest.to_string()),
            )
            .await
    }

    /// An operation in `team_a`, applied by the tenant through `provider` (`{"kind", "name"}`).
    async fn tenant_operation(&self, name: &str, provider: Value, spec: Value) {
        let mut manifest = json!({
            "apiVersion": "lro.dev/v1alpha1", "kind": "LongRunningOperation",
            "metadata": {"name": name},
            "spec": {"providerRef": provider},
        });
        if let (Some(s), Some(extra)) = (manifest["spec"].as_object_mut(), spec.as_object()) {
            s.extend(extra.clone());
        }
        self.tenant_apply(&manifest).await.assert_ok();
    }

    fn shared_ref(&self) -> Value {
        json!({"kind": "ClusterOperationProvider", "name": self.shared})
    }

    /// Waits until `namespace/name` satisfies `accept`; returns it.
    async fn wait(
        &self,
        namespace: &str,
        name: &str,
        what: &str,
        accept: impl Fn(&LongRunningOperation) -> bool,
    ) -> LongRunningOperation {
        let api = self.ops(namespace);
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let last = match api.get_opt(name).await {
                Ok(Some(op)) if accept(&op) => return op,
                Ok(Some(op)) => pretty(&op.status),
                Ok(None) => "(not found)".into(),
                Err(e) => format!("(get failed: {e})"),
            };
            assert!(
                tokio::time::Instant::now() < deadline,
                "{namespace}/{name}: not {what} within {WAIT:?}; last status:\n{last}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until the operation's condition `kind` has `reason`; returns its message.
    async fn wait_reason(&self, namespace: &str, name: &str, kind: &str, reason: &str) -> String {
        let op = self
            .wait(namespace, name, &format!("{kind}={reason}"), |op| {
                condition(op, kind).is_some_and(|(r, _)| r == reason)
            })
            .await;
        condition(&op, kind).map(|(_, m)| m).unwrap_or_default()
    }

    async fn sim_post(&self, path: &str, body: Value) -> Value {
        reqwest::Client::new()
            .post(format!("{}{path}", self.env.sim_url()))
            .json(&body)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .unwrap_or_else(|e| panic!("POST {path}: {e}"))
            .json()
            .await
            .unwrap_or_else(|e| panic!("POST {path}: not JSON: {e}"))
    }

    /// The paths the simulator was asked for, in order (its auth log).
    async fn sim_paths(&self) -> Vec<String> {
        let stats: Value = reqwest::get(format!("{}/sim/auth/stats", self.env.sim_url()))
            .await
            .and_then(reqwest::Response::error_for_status)
            .unwrap_or_else(|e| panic!("auth stats: {e}"))
            .json()
            .await
            .unwrap_or_else(|e| panic!("auth stats: not JSON: {e}"));
        stats["requests"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r["path"].as_str().map(str::to_owned))
            .collect()
    }

    async fn admin_json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        let out = self.admin.kubectl(&all, None).await.assert_ok();
        serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{args:?}: not JSON: {e}"))
    }
}

/// The `(reason, message)` of an operation's condition `kind`.
fn condition(op: &LongRunningOperation, kind: &str) -> Option<(String, String)> {
    op.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == kind)
        .map(|c| (c.reason.clone(), c.message.clone()))
}

fn random(prefix: &str) -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    format!("{prefix}-{:016x}", h.finish())
}

/// The control plane, the default chart install, the operator as the chart's identity, the
/// tenant, the victims and the admin's providers.
async fn world(control_plane: &ControlPlane) -> World {
    let mut env = TestEnv::on(control_plane.cluster, "tenancy").await;
    // The harness's operator runs as the admin: the chart's identity takes over.
    env.kill_operator().await;
    let admin = Identity::admin(&env).await;
    let team_a = env.ns.clone();
    let team_b = format!("{team_a}-b");
    let sys = format!("{team_a}-sys");
    for ns in [&team_b, &sys] {
        admin
            .kubectl(&["create", "namespace", ns], None)
            .await
            .assert_ok();
    }

    // The chart with its defaults (every namespace, admission policy, no private networks), but
    // without the webhook: a bare apiserver cannot reach its Service (tests/chart.rs and the
    // webhook's own tests cover it). Small concurrency, so that point 8 is visible.
    admin
        .helm(&[
            "install",
            "lro",
            CHART,
            "-n",
            &sys,
            "--set=webhook.enabled=false",
            "--set=operator.concurrency=6",
            "--set=operator.namespaceConcurrency=2",
        ])
        .await
        .assert_ok();
    let (deployment, identity) = admin.release_operator("lro", &sys).await;
    let env_vars = [("POD_NAME", "lro-0"), ("POD_NAMESPACE", sys.as_str())];
    let chart_args = container_args(&deployment, &env_vars);
    assert!(
        !chart_args.iter().any(|a| a.starts_with("--namespace=")),
        "the default install watches every namespace: {chart_args:?}"
    );
    let args = runnable_args(&chart_args).await;
    let operator = Operator::start(&args, &identity, &env_vars, "tenancy");

    // The tenant: a ServiceAccount of team_a bound to the tenant Role.
    for manifest in [
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "tenant"}}),
        serde_json::from_str(TENANT_ROLE).expect("role JSON"),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
               "metadata": {"name": "tenant"},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "tenant"},
               "subjects": [{"kind": "ServiceAccount", "name": "tenant", "namespace": team_a}]}),
    ] {
        env.apply(&manifest.to_string()).await.assert_ok();
    }
    let tenant = Identity::service_account(&admin, &team_a, "tenant").await;
    assert!(
        !tenant.can_i("get", "secrets", &["-n", &team_a]).await,
        "the tenant may not read Secrets"
    );

    // Victims: a Secret of team_a, the cluster provider's token in the release namespace, and a
    // ConfigMap and a Secret of team_a that no operation owns.
    let victim_token = random("victim");
    let cluster_token = random("cluster");
    let secret = |ns: &str, name: &str, value: &str| {
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": ns},
               "stringData": {"token": value}})
    };
    for manifest in [
        secret(&team_a, "victim", &victim_token),
        secret(&sys, "upstream-token", &cluster_token),
        secret(&team_a, "shared-secret", "original"),
        json!({"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": "shared-config", "namespace": team_a},
               "data": {"k": "original"}}),
    ] {
        admin
            .kubectl(&["apply", "-f", "-"], Some(&manifest.to_string()))
            .await
            .assert_ok();
    }

    // The upstream checks the cluster provider's token.
    let world = World {
        kube: control_plane.cluster.client().await,
        env,
        admin,
        tenant,
        operator,
        shared: format!("{team_a}-shared"),
        team_a,
        team_b,
        sys,
        victim_token,
        cluster_token,
    };
    world
        .sim_post(
            "/sim/auth",
            json!({"bearerTokens": [{"id": "cluster", "token": world.cluster_token}]}),
        )
        .await;

    // The admin's cluster providers: `shared` (both teams; the simulator is on loopback, which
    // the admin opens for it alone), `closed` (no allowedNamespaces), `broken` (every
    // namespace, a Secret that does not exist in the release namespace).
    let base = format!("{}/v1", world.env.sim_url());
    let cluster_provider = |name: String, extra: Value| {
        let mut spec = json!({
            "baseURL": base, "protocol": "google",
            "google": {"requestIdParameter": "requestId"},
            "allowPrivateNetworks": true,
            "polling": {"initialInterval": "500ms", "maxInterval": "1s"},
            "auth": {"bearerToken": {"secretKeyRef": {"name": "upstream-token", "key": "token"}}},
        });
        if let (Some(s), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
            s.extend(extra.clone());
        }
        json!({"apiVersion": "lro.dev/v1alpha1", "kind": "ClusterOperationProvider",
               "metadata": {"name": name}, "spec": spec})
    };
    let both = json!({"matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "In",
                                            "values": [world.team_a, world.team_b]}]});
    for manifest in [
        cluster_provider(world.shared.clone(), json!({"allowedNamespaces": both})),
        cluster_provider(format!("{}-closed", world.team_a), json!({})),
        cluster_provider(
            format!("{}-broken", world.team_a),
            json!({"allowedNamespaces": {},
                   "auth": {"bearerToken": {"secretKeyRef": {"name": "sys-only-secret-name", "key": "token"}}}}),
        ),
    ] {
        world
            .admin
            .kubectl(&["apply", "-f", "-"], Some(&manifest.to_string()))
            .await
            .assert_ok();
    }
    world
}

#[tokio::test]
async fn a_tenant_gets_nothing_rbac_would_refuse() {
    let control_plane = ControlPlane::up("tenancy").await;
    let mut w = world(&control_plane).await;
    let pid = w.operator.pid();
    assert!(pid.is_some(), "the operator runs");

    // A control group: the other team's operation through the shared provider completes.
    let b_op = |name: &str, seconds: f64| {
        json!({"apiVersion": "lro.dev/v1alpha1", "kind": "LongRunningOperation",
               "metadata": {"name": name, "namespace": w.team_b},
               "spec": {"providerRef": {"kind": "ClusterOperationProvider", "name": w.shared},
                        "start": {"path": "projects/b/clusters",
                                  "body": {"simulate": {"durationSeconds": seconds}}}}})
    };
    w.admin
        .kubectl(
            &["apply", "-f", "-"],
            Some(&b_op("b-first", 1.0).to_string()),
        )
        .await
        .assert_ok();
    w.wait(&w.team_b, "b-first", "Succeeded", |op| {
        phase_of(op) == Some(Phase::Succeeded)
    })
    .await;

    eprintln!("point 2: a provider may only name Secrets its author may read");
    attack_secret_exfiltration(&w).await;
    eprintln!("point 3: outputs may not overwrite or adopt what the operation does not own");
    attack_outputs(&w).await;
    eprintln!("point 4: a tenant cannot open private networks");
    attack_private_networks(&w).await;
    eprintln!("point 5: requests stay under baseURL; no Host or credential headers");
    attack_urls_and_headers(&w).await;
    eprintln!("point 6: cluster providers are closed by default and say nothing of their Secrets");
    attack_cluster_providers(&w).await;
    eprintln!("point 1: expressions over their budget fail their object only");
    attack_expressions(&w).await;
    eprintln!("point 9: credential values echoed by the upstream are redacted");
    attack_echoed_credentials(&w).await;
    eprintln!("point 10: the default install's RBAC is the least that works");
    check_least_privilege(&w).await;
    // Last: its hanging upstream keeps team_a's own requests waiting (its share is in use).
    eprintln!("point 8: deep JSON and a slow upstream in one namespace");
    attack_depth_and_fairness(&w).await;

    // The operator is the same process, it still holds its Lease, and it still works.
    assert!(w.operator.is_running(), "the operator exited");
    assert_eq!(w.operator.pid(), pid, "the operator restarted");
    let leases: Api<Lease> = Api::namespaced(w.kube.clone(), &w.sys);
    let lease = leases.get("lro-operator").await.expect("the Lease");
    assert_eq!(holder(&lease).as_deref(), Some("lro-0"));
    let renewed = lease
        .spec
        .as_ref()
        .and_then(|s| s.renew_time.as_ref())
        .map(|t| t.0)
        .expect("renewed");
    let age = jiff::Timestamp::now().duration_since(renewed);
    assert!(
        age < jiff::SignedDuration::from_secs(20),
        "the Lease was last renewed {age:?} ago"
    );
    w.admin
        .kubectl(
            &["apply", "-f", "-"],
            Some(&b_op("b-last", 1.0).to_string()),
        )
        .await
        .assert_ok();
    w.wait(&w.team_b, "b-last", "Succeeded", |op| {
        phase_of(op) == Some(Phase::Succeeded)
    })
    .await;
    no_secret_anywhere(&w).await;
}

/// Point 2: the admission policy refuses a provider naming a Secret its author may not read —
/// whatever the field — so the operator never reads it, and the upstream never sees it.
async fn attack_secret_exfiltration(w: &World) {
    let base = format!("{}/v1", w.env.sim_url());
    let secret_ref = json!({"secretKeyRef": {"name": "victim", "key": "token"}});
    for (name, auth) in [
        ("exfil-bearer", json!({"bearerToken": secret_ref})),
        (
            "exfil-oauth",
            json!({"oauth2ClientCredentials": {
                "tokenURL": format!("{}/oauth/token", w.env.sim_url()),
                "clientID": secret_ref, "clientSecret": secret_ref}}),
        ),
        (
            "exfil-basic",
            json!({"basic": {"username": secret_ref, "password": secret_ref}}),
        ),
    ] {
        let provider = json!({"apiVersion": "lro.dev/v1alpha1", "kind": "OperationProvider",
            "metadata": {"name": name},
            "spec": {"baseURL": base, "protocol": "google", "auth": auth}});
        let out = w.tenant_apply(&provider).await;
        assert!(!out.success, "{name} was admitted: {out}");
        assert!(
            out.stderr
                .contains("a provider may only use Secrets its author may read"),
            "{name}: {out}"
        );
    }
    // Nor a ServiceAccount whose tokens the tenant may not create (workload identity: the
    // operator would request its token and exchange it).
    let identity = json!({"apiVersion": "lro.dev/v1alpha1", "kind": "OperationProvider",
        "metadata": {"name": "exfil-identity"},
        "spec": {"baseURL": base, "protocol": "google",
                 "auth": {"workloadIdentity": {"serviceAccountName": "default", "google": {
                     "audience": "//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/providers/q",
                     "tokenURL": format!("{}/google-sts/v1/token", w.env.sim_url())}}}}});
    let out = w.tenant_apply(&identity).await;
    assert!(
        !out.success,
        "a ServiceAccount the tenant may not use was admitted: {out}"
    );
    assert!(
        out.stderr.contains(
            "a provider may only use a ServiceAccount whose tokens its author may create"
        ),
        "{out}"
    );
    let tls = json!({"apiVersion": "lro.dev/v1alpha1", "kind": "OperationProvider",
        "metadata": {"name": "exfil-tls"},
        "spec": {"baseURL": base, "protocol": "google",
                 "tls": {"clientCertificate": {"secretName": "victim"}}}});
    let out = w.tenant_apply(&tls).await;
    assert!(!out.success, "a TLS Secret reference was admitted: {out}");
    // Nor can the tenant make a cluster provider (whose Secrets live in the release namespace).
    let cluster = json!({"apiVersion": "lro.dev/v1alpha1", "kind": "ClusterOperationProvider",
        "metadata": {"name": format!("{}-mine", w.team_a)},
        "spec": {"baseURL": base, "protocol": "google", "allowedNamespaces": {},
                 "auth": {"bearerToken": {"secretKeyRef": {"name": "upstream-token", "key": "token"}}}}});
    let out = w
        .tenant
        .kubectl(&["apply", "-f", "-"], Some(&cluster.to_string()))
        .await;
    assert!(!out.success && out.stderr.contains("forbidden"), "{out}");
    // Nothing was created, nothing was read: the operator has no such provider to use.
    let providers = w
        .admin_json(&["get", "operationproviders", "-n", &w.team_a])
        .await;
    let names: Vec<&str> = providers["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["metadata"]["name"].as_str())
        .collect();
    assert!(names.iter().all(|n| !n.starts_with("exfil")), "{names:?}");
    // The admin (who may read the Secret) still may: the policy judges the author, not the kind.
    let admins = json!({"apiVersion": "lro.dev/v1alpha1", "kind": "OperationProvider",
        "metadata": {"name": "admins", "namespace": w.team_a},
        "spec": {"baseURL": "https://api.example.com/v1", "protocol": "google",
                 "auth": {"bearerToken": secret_ref}}});
    w.admin
        .kubectl(
            &["apply", "--dry-run=server", "-f", "-"],
            Some(&admins.to_string()),
        )
        .await
        .assert_ok();
}

/// Point 3: outputs naming an existing ConfigMap and Secret the operation does not own are a
/// conflict on the operation; both objects are left exactly as they were.
async fn attack_outputs(w: &World) {
    let before = |kind: &'static str, name: &'static str| async move {
        w.admin_json(&["get", kind, name, "-n", &w.team_a]).await
    };
    let (cm_before, secret_before) = (
        before("configmap", "shared-config").await,
        before("secret", "shared-secret").await,
    );
    w.tenant_operation(
        "steal-outputs",
        w.shared_ref(),
        json!({"start": {"path": "projects/a/clusters", "body": {"simulate": {"durationSeconds": 1}}},
               "outputs": {"configMap": {"name": "shared-config", "data": {"k": "'hijacked'"}},
                           "secret": {"name": "shared-secret", "data": {"token": "'hijacked'"}}}}),
    )
    .await;
    let message = w
        .wait_reason(
            &w.team_a,
            "steal-outputs",
            "OutputsPublished",
            "OutputConflict",
        )
        .await;
    assert!(
        message.contains("ConfigMap shared-config exists and this operation does not control it"),
        "{message}"
    );
    let (cm_after, secret_after) = (
        before("configmap", "shared-config").await,
        before("secret", "shared-secret").await,
    );
    for (what, before, after) in [
        ("ConfigMap", &cm_before, &cm_after),
        ("Secret", &secret_before, &secret_after),
    ] {
        assert_eq!(
            before["metadata"]["resourceVersion"], after["metadata"]["resourceVersion"],
            "the {what} was written"
        );
        assert!(
            after["metadata"]["ownerReferences"].is_null(),
            "the {what} was adopted: {after:#}"
        );
    }
    // A name nobody holds is created, owned by the operation.
    w.tenant_operation(
        "own-outputs",
        w.shared_ref(),
        json!({"start": {"path": "projects/a/clusters", "body": {"simulate": {"durationSeconds": 1}}},
               "outputs": {"configMap": {"name": "fresh-config", "data": {"k": "'mine'"}}}}),
    )
    .await;
    w.wait_reason(&w.team_a, "own-outputs", "OutputsPublished", "Published")
        .await;
    let fresh = w
        .admin_json(&["get", "configmap", "fresh-config", "-n", &w.team_a])
        .await;
    assert_eq!(fresh["data"]["k"], "mine");
    assert_eq!(
        fresh["metadata"]["ownerReferences"][0]["name"],
        "own-outputs"
    );
}

/// Point 4: a tenant's provider may not open private networks, and without them the
/// simulator's loopback address is refused before any connection.
async fn attack_private_networks(w: &World) {
    let loopback = format!("{}/v1", w.env.sim_url());
    let opened = json!({"apiVersion": "lro.dev/v1alpha1", "kind": "OperationProvider",
        "metadata": {"name": "opened"},
        "spec": {"baseURL": loopback, "protocol": "google", "allowPrivateNetworks": true}});
    let out = w.tenant_apply(&opened).await;
    assert!(
        !out.success
            && out
                .stderr
                .contains("allowPrivateNetworks is a cluster admin's decision"),
        "{out}"
    );
    let inside = json!({"apiVersion": "lro.dev/v1alpha1", "kind": "OperationProvider",
        "metadata": {"name": "inside"},
        "spec": {"baseURL": loopback, "protocol": "google"}});
    w.tenant_apply(&inside).await.assert_ok();
    let paths_before = w.sim_paths().await.len();
    w.tenant_operation(
        "to-loopback",
        json!({"name": "inside"}),
        json!({"start": {"path": "projects/a/clusters", "body": {"simulate": {"durationSeconds": 1}}}}),
    )
    .await;
    let message = w
        .wait_reason(
            &w.team_a,
            "to-loopback",
            condition::RECONCILING,
            "ProviderNotReady",
        )
        .await;
    assert!(
        message.contains("AddressNotAllowed") && message.contains("cluster admin"),
        "{message}"
    );
    assert_eq!(
        w.sim_paths().await.len(),
        paths_before,
        "the simulator got a request"
    );
}

/// Point 5: absolute URLs from the tenant must stay under the provider's baseURL, and a start
/// may not set Host, credentials, hop-by-hop, proxy or forwarding headers.
async fn attack_urls_and_headers(w: &World) {
    // Adopting by a URL on the same origin but outside baseURL's path (the Compute API).
    let outside = format!(
        "{}/compute/v1/projects/p/global/operations/x",
        w.env.sim_url()
    );
    w.tenant_operation(
        "adopt-outside",
        w.shared_ref(),
        json!({"operation": {"url": outside}}),
    )
    .await;
    w.tenant_operation(
        "adopt-outside-by-name",
        w.shared_ref(),
        json!({"operation": {"name": outside}}),
    )
    .await;
    // A templated path rendering to another path of the origin, and one climbing out of it.
    let absolute = format!(
        "${{'http:' + '//{}/compute/v1/x'}}",
        w.env.sim_url().trim_start_matches("http://")
    );
    w.tenant_operation(
        "template-outside",
        w.shared_ref(),
        json!({"start": {"path": absolute}}),
    )
    .await;
    w.tenant_operation(
        "template-climbs",
        w.shared_ref(),
        json!({"start": {"path": "${'..' + '/compute/v1/x'}"}}),
    )
    .await;
    for name in ["adopt-outside", "adopt-outside-by-name"] {
        // Never sent; the handle is kept, the condition says why.
        let op = w
            .wait(&w.team_a, name, "refusing its URL", |op| {
                condition(op, condition::READY)
                    .is_some_and(|(_, m)| m.contains("not under the provider's baseURL path"))
            })
            .await;
        assert_ne!(phase_of(&op), Some(Phase::Succeeded));
    }
    for name in ["template-outside", "template-climbs"] {
        let message = w
            .wait_reason(&w.team_a, name, condition::READY, "StartRefused")
            .await;
        assert!(message.contains("baseURL"), "{name}: {message}");
    }
    assert!(
        w.sim_paths()
            .await
            .iter()
            .all(|p| !p.starts_with("/compute")),
        "a request left the base path"
    );
    for header in [
        "Host",
        "authorization",
        "Cookie",
        "X-Forwarded-For",
        "Proxy-Authorization",
        "Transfer-Encoding",
    ] {
        let op = json!({"apiVersion": "lro.dev/v1alpha1", "kind": "LongRunningOperation",
            "metadata": {"name": "with-header"},
            "spec": {"providerRef": w.shared_ref(),
                     "start": {"path": "projects/a/clusters", "headers": {header: "evil.example.com"}}}});
        let out = w.tenant_apply(&op).await;
        assert!(
            !out.success && out.stderr.contains("start.headers may not set Host"),
            "{header}: {out}"
        );
    }
}

/// Point 6: a cluster provider without `allowedNamespaces` admits nobody, and a tenant sees
/// only that a cluster provider is not usable, not why.
async fn attack_cluster_providers(w: &World) {
    let closed = format!("{}-closed", w.team_a);
    let broken = format!("{}-broken", w.team_a);
    w.tenant_operation(
        "via-closed",
        json!({"kind": "ClusterOperationProvider", "name": closed}),
        json!({"start": {"path": "projects/a/clusters"}}),
    )
    .await;
    let message = w
        .wait_reason(
            &w.team_a,
            "via-closed",
            condition::RECONCILING,
            "ProviderNotReady",
        )
        .await;
    assert!(message.contains("admits no namespace"), "{message}");
    w.tenant_operation(
        "via-broken",
        json!({"kind": "ClusterOperationProvider", "name": broken}),
        json!({"start": {"path": "projects/a/clusters"}}),
    )
    .await;
    let message = w
        .wait_reason(
            &w.team_a,
            "via-broken",
            condition::RECONCILING,
            "ProviderNotReady",
        )
        .await;
    assert!(message.contains("not usable"), "{message}");
    for hidden in ["sys-only-secret-name", w.sys.as_str(), "SecretNotFound"] {
        assert!(
            !message.contains(hidden),
            "{hidden:?} shown to a tenant: {message}"
        );
    }
    // The admin sees why.
    let provider = w
        .admin_json(&["get", "clusteroperationprovider", &broken])
        .await;
    assert!(
        provider["status"]
            .to_string()
            .contains("sys-only-secret-name"),
        "{provider:#}"
    );
}

/// Point 1: a `${…}` template and an output expression that would build hundreds of millions of
/// values fail their own operation, naming the field; everything else goes on.
async fn attack_expressions(w: &World) {
    // The issue's example: `l.map(x, l)` over a 20,000-element list (4·10⁸ values), the list
    // in the object itself (a template sees `self`) or in the upstream's answer (an output
    // sees `result`; the simulator returns the request body in it).
    let big: Vec<u32> = (0..20_000).collect();
    w.tenant_operation(
        "template-bomb",
        w.shared_ref(),
        json!({"start": {"path": "projects/a/clusters", "body": {
            "big": big,
            "x": "${self.spec.start.body.big.map(x, self.spec.start.body.big)}"}}}),
    )
    .await;
    w.tenant_operation(
        "output-bomb",
        w.shared_ref(),
        json!({"start": {"path": "projects/a/clusters",
                         "body": {"big": big, "simulate": {"durationSeconds": 1}}},
               "outputs": {"configMap": {"name": "bomb-config",
                                         "data": {"k": "result.spec.big.map(x, result.spec.big)"}}}}),
    )
    .await;
    w.admin
        .kubectl(
            &["apply", "-f", "-"],
            Some(
                &json!({"apiVersion": "lro.dev/v1alpha1", "kind": "LongRunningOperation",
                    "metadata": {"name": "b-during-bombs", "namespace": w.team_b},
                    "spec": {"providerRef": w.shared_ref(),
                             "start": {"path": "projects/b/clusters",
                                       "body": {"simulate": {"durationSeconds": 1}}}}})
                .to_string(),
            ),
        )
        .await
        .assert_ok();
    let message = w
        .wait_reason(
            &w.team_a,
            "template-bomb",
            condition::READY,
            "TemplateError",
        )
        .await;
    assert!(message.contains("start.body"), "{message}");
    let message = w
        .wait_reason(&w.team_a, "output-bomb", "OutputsPublished", "OutputError")
        .await;
    assert!(message.contains("configMap key k"), "{message}");
    w.wait(&w.team_b, "b-during-bombs", "Succeeded", |op| {
        phase_of(op) == Some(Phase::Succeeded)
    })
    .await;
}

/// Point 8: a spec nested 1,000 levels deep (the API server takes up to 10,000) fails that
/// operation without stopping the watches; an upstream answer nested deep is left out of the
/// status; and one namespace's hanging upstream requests hold only its share of the workers.
async fn attack_depth_and_fairness(w: &World) {
    let deep = format!("{}1{}", "{\"a\":".repeat(1000), "}".repeat(1000));
    let object = format!(
        r#"{{"apiVersion":"lro.dev/v1alpha1","kind":"LongRunningOperation","metadata":{{"name":"too-deep"}},"spec":{{"providerRef":{{"kind":"ClusterOperationProvider","name":"{}"}},"start":{{"path":"projects/a/clusters","body":{deep}}}}}}}"#,
        w.shared
    );
    let file = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(file.path(), object).expect("write");
    let path = format!(
        "/apis/lro.dev/v1alpha1/namespaces/{}/longrunningoperations",
        w.team_a
    );
    let file_path = file.path().to_string_lossy().into_owned();
    w.tenant
        .kubectl(&["create", "--raw", &path, "-f", &file_path], None)
        .await
        .assert_ok();
    let message = w
        .wait_reason(&w.team_a, "too-deep", condition::READY, "SpecTooDeep")
        .await;
    assert!(message.contains("spec.start.body"), "{message}");

    // An answer nested 40 levels deep (the simulator returns the request body in the result).
    let mut nested = json!("leaf");
    for _ in 0..40 {
        nested = json!({"n": nested});
    }
    w.tenant_operation(
        "deep-answer",
        w.shared_ref(),
        json!({"start": {"path": "projects/a/clusters",
                         "body": {"nested": nested, "simulate": {"durationSeconds": 1}}}}),
    )
    .await;
    let op = w
        .wait(&w.team_a, "deep-answer", "Succeeded", |op| {
            phase_of(op) == Some(Phase::Succeeded)
        })
        .await;
    let (reason, message) = condition(&op, "ResultTruncated").expect("ResultTruncated");
    assert_eq!(reason, "ResultTooLarge");
    assert!(message.contains("levels deep"), "{message}");
    assert!(op.status.as_ref().is_some_and(|s| s.result.is_none()));

    // Fairness: 6 workers, 2 upstream requests in flight per namespace. Eight operations of
    // team_a whose polls hang 20 s each would hold every worker without the share.
    for i in 0..8 {
        let name = w
            .env
            .sim_adoptable(json!({"durationSeconds": 1,
                                   "faults": [{"kind": "hang", "ms": 20_000, "times": 1}]}))
            .await;
        w.tenant_operation(
            &format!("slow-{i}"),
            w.shared_ref(),
            json!({"operation": {"name": name}}),
        )
        .await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let started = tokio::time::Instant::now();
    w.admin
        .kubectl(
            &["apply", "-f", "-"],
            Some(
                &json!({"apiVersion": "lro.dev/v1alpha1", "kind": "LongRunningOperation",
                    "metadata": {"name": "b-beside-slow", "namespace": w.team_b},
                    "spec": {"providerRef": w.shared_ref(),
                             "start": {"path": "projects/b/clusters",
                                       "body": {"simulate": {"durationSeconds": 1}}}}})
                .to_string(),
            ),
        )
        .await
        .assert_ok();
    w.wait(&w.team_b, "b-beside-slow", "Succeeded", |op| {
        phase_of(op) == Some(Phase::Succeeded)
    })
    .await;
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(12),
        "team_b waited {took:?} behind team_a's hanging upstream"
    );
    let slow_done = w
        .ops(&w.team_a)
        .list(&Default::default())
        .await
        .expect("list")
        .items
        .iter()
        .filter(|op| {
            op.metadata
                .name
                .as_deref()
                .is_some_and(|n| n.starts_with("slow-"))
                && phase_of(op) == Some(Phase::Succeeded)
        })
        .count();
    assert!(
        slow_done < 8,
        "team_a's operations were not held up by their upstream at all (the test proves nothing)"
    );
}

/// Point 9: an upstream that echoes the credential a request carried, in a start's error and in
/// a poll's: the operation's status, its Events and the operator's log say `[redacted]`.
async fn attack_echoed_credentials(w: &World) {
    let echo = format!(
        "request refused: bearer {} is not valid here",
        w.cluster_token
    );
    w.tenant_operation(
        "echo-start",
        w.shared_ref(),
        json!({"start": {"path": "projects/a/clusters",
            "body": {"simulate": {"startFaults": [{"kind": "status", "status": 400, "message": echo}]}}}}),
    )
    .await;
    let op = w
        .wait(&w.team_a, "echo-start", "Failed", |op| {
            phase_of(op) == Some(Phase::Failed)
        })
        .await;
    let error = op
        .status
        .as_ref()
        .and_then(|s| s.error.as_ref())
        .expect("status.error");
    assert!(
        error.message.contains("bearer [redacted] is not valid"),
        "{}",
        error.message
    );
    let adoptable = w
        .env
        .sim_adoptable(json!({"durationSeconds": 1,
            "faults": [{"kind": "status", "status": 503, "message": echo, "times": 3}]}))
        .await;
    w.tenant_operation(
        "echo-poll",
        w.shared_ref(),
        json!({"operation": {"name": adoptable}}),
    )
    .await;
    w.wait(&w.team_a, "echo-poll", "Succeeded", |op| {
        phase_of(op) == Some(Phase::Succeeded)
    })
    .await;
    let log = w.operator.log();
    assert!(
        log.contains("[redacted]"),
        "the echoed token is logged redacted"
    );
}

/// Point 10: what the default install's identity may and may not do.
async fn check_least_privilege(w: &World) {
    let sa = w.admin_json(&["get", "serviceaccount", "-n", &w.sys]).await["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["metadata"]["name"].as_str().map(str::to_owned))
        .find(|n| n != "default")
        .expect("the chart's ServiceAccount");
    let as_operator = format!("--as=system:serviceaccount:{}:{sa}", w.sys);
    let can = |verb: &'static str, resource: &'static str, ns: Option<String>| {
        let as_operator = as_operator.clone();
        async move {
            let mut flags = vec![as_operator.as_str()];
            let ns_flag;
            match &ns {
                Some(ns) => {
                    ns_flag = format!("--namespace={ns}");
                    flags.push(&ns_flag);
                }
                None => flags.push("--all-namespaces"),
            }
            w.admin.can_i(verb, resource, &flags).await
        }
    };
    let a = || Some(w.team_a.clone());
    for (verb, resource, ns) in [
        ("get", "secrets", a()),
        ("create", "secrets", a()),
        ("patch", "configmaps", a()),
        ("patch", "longrunningoperations.lro.dev/status", a()),
    ] {
        assert!(
            can(verb, resource, ns.clone()).await,
            "{verb} {resource} in {ns:?}"
        );
    }
    for (verb, resource, ns) in [
        ("list", "secrets", None),
        ("watch", "secrets", None),
        ("list", "secrets", a()),
        ("watch", "secrets", a()),
        ("list", "configmaps", a()),
        ("watch", "configmaps", None),
        ("update", "secrets", a()),
        ("delete", "secrets", a()),
        ("delete", "configmaps", a()),
        ("delete", "longrunningoperations.lro.dev", a()),
        ("create", "pods", a()),
        ("impersonate", "serviceaccounts", a()),
    ] {
        assert!(
            !can(verb, resource, ns.clone()).await,
            "the operator may {verb} {resource} in {ns:?}"
        );
    }
    // Workload identity is off by default: no ServiceAccount token for the operator.
    let as_operator = as_operator.as_str();
    let in_a = format!("--namespace={}", w.team_a);
    assert!(
        !w.admin
            .can_i(
                "create",
                "serviceaccounts/default",
                &[as_operator, "--subresource=token", &in_a]
            )
            .await,
        "the operator may create ServiceAccount tokens by default"
    );
}

/// No secret value in any operation's or provider's status, any Event, or the operator's log.
async fn no_secret_anywhere(w: &World) {
    let secrets = [w.victim_token.as_str(), w.cluster_token.as_str()];
    // Statuses only: the test scripted the echoing upstream in a spec (`startFaults`), with the
    // token in it, as the upstream's own answer.
    let statuses = "jsonpath={.items[*].status}";
    let mut places = Vec::new();
    for (place, args) in [
        (
            "operations' statuses",
            &["get", "longrunningoperations", "-A", "-o", statuses][..],
        ),
        (
            "providers' statuses",
            &["get", "operationproviders", "-A", "-o", statuses][..],
        ),
        (
            "cluster providers' statuses",
            &["get", "clusteroperationproviders", "-o", statuses][..],
        ),
        ("events", &["get", "events", "-A", "-o", "json"][..]),
        (
            "events.k8s.io",
            &["get", "events.events.k8s.io", "-A", "-o", "json"][..],
        ),
        ("configmaps", &["get", "configmaps", "-A", "-o", "json"][..]),
    ] {
        let out = w.admin.kubectl(args, None).await.assert_ok();
        assert!(out.stdout.contains('{'), "{place}: nothing read: {out}");
        places.push((place, out.stdout));
    }
    places.push(("the operator's log", w.operator.log()));
    for (place, text) in &places {
        for secret in secrets {
            assert!(!text.contains(secret), "a secret value is in {place}");
        }
    }
}
