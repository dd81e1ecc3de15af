//! Workload identity end to end (`spec.auth.workloadIdentity`), on a real kube-apiserver: its
//! TokenRequest issues the ServiceAccount tokens and its OIDC keys (`/openid/v1/jwks`) verify
//! them. The simulator's Google STS and IAM Credentials, AWS STS and Microsoft Entra endpoints
//! (`sim/src/identity.rs`) check each token's signature, issuer, audience, expiry and subject
//! against what the test posts to `/sim/identity`, and its protocol routes then accept only the
//! credentials those exchanges issued.
//!
//! - an operation succeeds through each of the three flows, and the credentials are exchanged
//!   again before they expire (they live 5 s; the operations 15 s), while the ServiceAccount
//!   token is reused;
//! - a refused exchange (an untrusted ServiceAccount) and a missing ServiceAccount show on the
//!   provider's `Ready` condition with the step, the cloud's error and the fix, never a token;
//!   their operations wait (`ProviderNotReady`);
//! - with the chart's admission policy, a user who may not create a ServiceAccount's tokens
//!   cannot make a provider use it; once allowed for that ServiceAccount, they can;
//! - run as the chart's own identity (`operator.workloadIdentity.enabled`, limited to one
//!   ServiceAccount name), the operator exchanges that ServiceAccount's tokens and no other's:
//!   the API server refuses it the token of a ServiceAccount the chart did not name.

use lro_testkit as support;

use std::time::Duration;

use lro_operator::api::{Phase, condition};
use serde_json::{Value, json};
use support::helm::{CHART, Identity, Operator, container_args, runnable_args};
use support::{TestEnv, samples, status_of};

const WAIT: Duration = Duration::from_secs(90);
const AUDIENCE: &str = "//iam.googleapis.com/projects/123456789012/locations/global/workloadIdentityPools/lro/providers/cluster";
const EMAIL: &str = "lro@demo-project.iam.gserviceaccount.com";
const ROLE: &str = "arn:aws:iam::123456789012:role/lro";
const TENANT: &str = "00000000-0000-0000-0000-000000000001";
const CLIENT: &str = "11111111-1111-1111-1111-111111111111";
/// How long every credential the simulator issues lives.
const TTL_SECONDS: u64 = 5;
/// How long each operation runs upstream.
const OPERATION_SECONDS: f64 = 15.0;

// ---------------------------------------------------------------------------------- helpers

async fn sim_post(env: &TestEnv, path: &str, body: Value) -> Value {
    reqwest::Client::new()
        .post(format!("{}{path}", env.sim_url()))
        .json(&body)
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .unwrap_or_else(|e| panic!("POST {path}: {e}"))
        .json()
        .await
        .unwrap_or_else(|e| panic!("POST {path}: not JSON: {e}"))
}

async fn sim_get(env: &TestEnv, path: &str) -> Value {
    reqwest::get(format!("{}{path}", env.sim_url()))
        .await
        .and_then(reqwest::Response::error_for_status)
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
        .json()
        .await
        .unwrap_or_else(|e| panic!("GET {path}: not JSON: {e}"))
}

/// `kubectl get --raw PATH` as JSON.
async fn raw(env: &TestEnv, path: &str) -> Value {
    let out = env.kubectl(&["get", "--raw", path]).await.assert_ok();
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{path}: not JSON: {e}"))
}

async fn service_account(env: &TestEnv, name: &str) {
    let sa = json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name}});
    env.apply(&sa.to_string()).await.assert_ok();
}

fn subject(env: &TestEnv, name: &str) -> String {
    format!("system:serviceaccount:{}:{name}", env.ns)
}

/// Tells the simulator's identity endpoints to trust this API server's ServiceAccount tokens
/// for `trust`, with credentials living `ttl` seconds.
async fn trust(env: &TestEnv, ttl: u64, trust: Value) {
    let jwks = raw(env, "/openid/v1/jwks").await;
    let issuer = raw(env, "/.well-known/openid-configuration").await["issuer"].clone();
    assert!(issuer.is_string(), "the API server names no issuer");
    sim_post(
        env,
        "/sim/identity",
        json!({"issuer": issuer, "jwks": jwks, "tokenTtlSeconds": ttl, "trust": trust}),
    )
    .await;
}

fn google(env: &TestEnv, service_account: &str) -> Value {
    json!({"workloadIdentity": {"serviceAccountName": service_account, "google": {
        "audience": AUDIENCE, "serviceAccount": EMAIL,
        "tokenURL": format!("{}/google-sts/v1/token", env.sim_url()),
        "iamCredentialsURL": format!("{}/google-iam/v1", env.sim_url())}}})
}

fn aws(env: &TestEnv, service_account: &str) -> Value {
    json!({"workloadIdentity": {"serviceAccountName": service_account, "aws": {
        "roleArn": ROLE, "sessionName": "lro-e2e", "durationSeconds": 900,
        "region": "us-east-1", "service": "cloudcontrolapi",
        "stsURL": format!("{}/aws-sts/", env.sim_url())}}})
}

fn azure(env: &TestEnv, service_account: &str) -> Value {
    json!({"workloadIdentity": {"serviceAccountName": service_account, "azure": {
        "tenantID": TENANT, "clientID": CLIENT,
        "authorityURL": format!("{}/azure-login", env.sim_url())}}})
}

/// The `Ready` condition of provider `name` as `(status, reason, message)`, once `accept` holds.
async fn provider_ready(
    env: &TestEnv,
    name: &str,
    accept: impl Fn(&str, &str) -> bool,
) -> (String, String, String) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let out = env
            .kubectl(&["get", "operationprovider", name, "-o", "json"])
            .await;
        let object: Value = serde_json::from_str(&out.stdout).unwrap_or_default();
        let ready = object["status"]["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
            .map(|c| {
                let s = |k: &str| c[k].as_str().unwrap_or_default().to_owned();
                (s("status"), s("reason"), s("message"))
            });
        if let Some((status, reason, message)) = ready
            && accept(&status, &reason)
        {
            return (status, reason, message);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "operationprovider/{name}: Ready not as expected within {WAIT:?}: {}",
            object["status"]
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// What would give a credential away: a ServiceAccount token (a JWT: `{"alg":…` in base64),
/// an access token the simulator issued, an AWS temporary access key id.
fn leaked(text: &str) -> Option<String> {
    for marker in ["eyJhbGci", "sim-sts-", "sim-iam-", "sim-aad-"] {
        if let Some(at) = text.find(marker) {
            let end = text.len().min(at + 24);
            return Some(text[at..end].to_owned());
        }
    }
    text.match_indices("ASIA").find_map(|(at, _)| {
        let key = text.get(at..at + 20)?;
        key[4..]
            .chars()
            .all(|c| c.is_ascii_uppercase() || ('2'..='7').contains(&c))
            .then(|| key.to_owned())
    })
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

// ---------------------------------------------------------------------------------- tests

/// One operation through each flow; credentials refreshed before expiry; a refused exchange and
/// a missing ServiceAccount on the provider's condition; no token anywhere.
#[tokio::test]
async fn every_cloud_exchanges_a_service_account_token_and_refreshes_it() {
    let mut env = TestEnv::new("identity").await;
    env.set_operator_log_filter("debug");
    env.restart_operator_with(&[]).await;
    for sa in ["lro-google", "lro-aws", "lro-azure", "stranger"] {
        service_account(&env, sa).await;
    }
    // Protocol routes accept only configured or issued credentials once /sim/auth is configured:
    // none is configured, so every request must carry what an exchange issued.
    sim_post(
        &env,
        "/sim/auth",
        json!({"bearerTokens": [{"id": "nobody", "token": random("unused")}]}),
    )
    .await;
    trust(
        &env,
        TTL_SECONDS,
        json!([
            {"subject": subject(&env, "lro-google"),
             "google": {"audience": AUDIENCE, "serviceAccounts": [EMAIL]}},
            {"subject": subject(&env, "lro-aws"), "aws": {"roleArn": ROLE}},
            {"subject": subject(&env, "lro-azure"),
             "azure": {"tenantId": TENANT, "clientId": CLIENT}},
        ]),
    )
    .await;

    let with_google =
        |auth: Value| json!({"auth": auth, "google": {"requestIdParameter": "requestId"}});
    env.provider(
        "google",
        "google",
        "/v1",
        with_google(google(&env, "lro-google")),
    )
    .await;
    env.provider(
        "aws",
        "awsCloudControl",
        "/aws",
        json!({"auth": aws(&env, "lro-aws")}),
    )
    .await;
    env.provider(
        "azure",
        "azure",
        "/azure",
        json!({"auth": azure(&env, "lro-azure")}),
    )
    .await;
    env.provider(
        "stranger",
        "google",
        "/v1",
        with_google(google(&env, "stranger")),
    )
    .await;
    env.provider(
        "nobody",
        "azure",
        "/azure",
        json!({"auth": azure(&env, "nobody-here")}),
    )
    .await;

    let simulate = json!({"durationSeconds": OPERATION_SECONDS});
    env.operation(
        "via-google",
        "google",
        json!({"start": {"path": "projects/demo/clusters",
                         "body": {"displayName": "wi", "simulate": simulate}}}),
    )
    .await;
    env.operation(
        "via-aws",
        "aws",
        json!({"start": {"path": "/", "body": {"TypeName": "AWS::Logs::LogGroup",
            "DesiredState": {"LogGroupName": "wi-log-group"}, "simulate": simulate}}}),
    )
    .await;
    env.operation(
        "via-azure",
        "azure",
        json!({"start": {"method": "PUT",
            "path": "subscriptions/sub-1/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/wi",
            "query": {"api-version": "2023-05-01"},
            "body": {"location": "westeurope", "sku": {"name": "Standard_LRS"}, "simulate": simulate}}}),
    )
    .await;
    env.operation(
        "via-stranger",
        "stranger",
        json!({"start": {"path": "projects/demo/clusters",
                         "body": {"simulate": {"durationSeconds": 1}}}}),
    )
    .await;

    // Each flow works, and each provider says how.
    for name in ["via-google", "via-aws", "via-azure"] {
        let op = env.wait_phase(name, Phase::Succeeded, WAIT).await;
        assert_eq!(status_of(&op).phase, Some(Phase::Succeeded));
    }
    for (provider, cloud) in [("google", "google"), ("aws", "aws"), ("azure", "azure")] {
        let (status, reason, message) = provider_ready(&env, provider, |s, _| s == "True").await;
        assert_eq!(
            (status.as_str(), reason.as_str()),
            ("True", "CredentialsResolved")
        );
        assert!(
            message.contains(&format!(
                "exchanged a ServiceAccount token for {cloud} credentials"
            )),
            "{message}"
        );
    }

    // Refreshed before expiry: credentials living 5 s were exchanged again during 15 s
    // operations, and no request reached the upstream with an expired (or any other) one.
    let identity = sim_get(&env, "/sim/identity/stats").await;
    for cloud in ["google", "googleImpersonation", "aws", "azure"] {
        let exchanges = identity["exchanges"][cloud].as_u64().unwrap_or(0);
        assert!(
            (3..=40).contains(&exchanges),
            "{cloud}: {exchanges} exchanges in {OPERATION_SECONDS} s of credentials living {TTL_SECONDS} s: {identity:#}"
        );
    }
    let auth = sim_get(&env, "/sim/auth/stats").await;
    for (cloud, sa) in [
        ("googleImpersonation", "lro-google"),
        ("aws", "lro-aws"),
        ("azure", "lro-azure"),
    ] {
        let id = format!("identity:{cloud}:{}", subject(&env, sa));
        assert!(
            auth["accepted"][&id].as_u64().unwrap_or(0) >= 3,
            "{id}: the start and polls were authenticated with the exchanged credentials: {auth:#}"
        );
    }
    assert_eq!(
        auth["rejected"],
        json!({}),
        "no request was refused: {auth:#}"
    );
    // The ServiceAccount token is reused across exchanges (it lives 10 minutes): far fewer
    // TokenRequests than exchanges.
    let (_, metrics) = env.health_get("/metrics").await;
    let token_requests: f64 = samples(
        &metrics,
        "lro_apiserver_requests_total",
        &[r#"verb="create""#, r#"resource="serviceaccounts/token""#],
    )
    .iter()
    .sum();
    let exchanges: u64 = ["google", "aws", "azure"]
        .iter()
        .map(|c| identity["exchanges"][c].as_u64().unwrap_or(0))
        .sum();
    eprintln!(
        "exchanges: {}; TokenRequests: {token_requests}",
        identity["exchanges"]
    );
    assert!(
        token_requests >= 3.0 && token_requests < exchanges as f64,
        "{token_requests} TokenRequests for {exchanges} exchanges"
    );
    let refreshed: f64 = samples(
        &metrics,
        "lro_token_refreshes_total",
        &[&format!(r#"provider="{}/aws""#, env.ns)],
    )
    .iter()
    .sum();
    assert!(
        refreshed >= 3.0,
        "lro_token_refreshes_total for aws: {refreshed}"
    );

    // A ServiceAccount the cloud does not trust: the exchange is refused, and the provider says
    // which step, the cloud's words and what to check.
    let (_, reason, message) = provider_ready(&env, "stranger", |s, _| s == "False").await;
    assert_eq!(reason, "TokenExchangeFailed", "{message}");
    for needle in [
        "spec.auth.workloadIdentity: google: STS",
        "refused the token exchange: HTTP 400: invalid_grant: The given credential is rejected by the attribute condition.",
        &subject(&env, "stranger"),
    ] {
        assert!(message.contains(needle), "{needle:?} not in {message}");
    }
    let waiting = env
        .wait_for("via-stranger", "waiting for its provider", WAIT, |op| {
            op.status.as_ref().is_some_and(|s| {
                s.conditions.iter().any(|c| {
                    c.type_ == condition::RECONCILING
                        && c.reason == "ProviderNotReady"
                        && c.message.contains("TokenExchangeFailed")
                })
            })
        })
        .await;
    assert_eq!(status_of(&waiting).phase, Some(Phase::Pending));
    assert!(
        identity["rejected"]["untrustedSubject"]
            .as_u64()
            .unwrap_or(0)
            >= 1,
        "{identity:#}"
    );
    // A ServiceAccount that does not exist: the TokenRequest step fails, saying so.
    let (_, reason, message) = provider_ready(&env, "nobody", |s, _| s == "False").await;
    assert_eq!(reason, "TokenRequestFailed", "{message}");
    assert!(
        message.contains(&format!("ServiceAccount {}/nobody-here not found", env.ns))
            && message.contains("kubectl create serviceaccount nobody-here"),
        "{message}"
    );

    // No token anywhere: the operator's log (debug everywhere), Events, statuses.
    let log = std::fs::read_to_string(env.operator_log_path()).expect("operator log");
    let events = env
        .kubectl(&["get", "events", "-o", "yaml"])
        .await
        .assert_ok()
        .stdout;
    let objects = env
        .kubectl(&["get", "lro,operationprovider", "-o", "yaml"])
        .await
        .assert_ok()
        .stdout;
    assert!(log.contains("DEBUG"), "debug logging is on");
    for (place, text) in [
        ("operator log", &log),
        ("events", &events),
        ("statuses", &objects),
    ] {
        if let Some(found) = leaked(text) {
            panic!("{place} holds a credential: {found}…");
        }
    }
}

/// The chart's admission policy: a provider may use a ServiceAccount only if its author may
/// create that ServiceAccount's tokens.
#[tokio::test]
async fn a_service_account_the_author_may_not_use_is_refused_at_admission() {
    let mut env = TestEnv::new("identity-admission").await;
    env.kill_operator().await; // admission only
    let ns = env.ns.clone();
    let admin = Identity::admin(&env).await;
    // The chart's policy, bound to this namespace only (the control plane is shared).
    let rendered = admin
        .helm(&[
            "template",
            &ns,
            CHART,
            "-n",
            &ns,
            "--show-only",
            "templates/admission-policy.yaml",
        ])
        .await
        .assert_ok()
        .stdout;
    let mut objects: Vec<Value> = serde_saphyr::from_multiple(&rendered)
        .unwrap_or_else(|e| panic!("the render is not YAML: {e}"));
    objects.retain(|o| !o.is_null());
    assert_eq!(objects.len(), 2, "a policy and its binding: {objects:#?}");
    let mut cleanup = Cleanup {
        kubeconfig: admin.kubeconfig.clone(),
        names: Vec::new(),
    };
    for object in &mut objects {
        if object["kind"] == "ValidatingAdmissionPolicyBinding" {
            object["spec"]["matchResources"] = json!({"namespaceSelector":
                {"matchLabels": {"kubernetes.io/metadata.name": ns}}});
        }
        cleanup.names.push(format!(
            "{}/{}",
            object["kind"].as_str().unwrap_or_default().to_lowercase(),
            object["metadata"]["name"].as_str().unwrap_or_default()
        ));
        admin
            .kubectl(&["apply", "-f", "-"], Some(&object.to_string()))
            .await
            .assert_ok();
    }

    // The tenant may manage providers, nothing else; two ServiceAccounts exist.
    for manifest in [
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "tenant"}}),
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "lro-deployer"}}),
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "ci-admin"}}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
               "metadata": {"name": "tenant"},
               "rules": [{"apiGroups": ["lro.dev"], "resources": ["operationproviders"], "verbs": ["*"]}]}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
               "metadata": {"name": "tenant"},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "tenant"},
               "subjects": [{"kind": "ServiceAccount", "name": "tenant", "namespace": ns}]}),
    ] {
        env.apply(&manifest.to_string()).await.assert_ok();
    }
    let tenant = Identity::service_account(&admin, &ns, "tenant").await;
    let provider = |sa: &str| {
        json!({"apiVersion": "lro.dev/v1alpha1", "kind": "OperationProvider",
               "metadata": {"name": format!("uses-{}", sa.replace('/', "-")), "namespace": ns},
               "spec": {"baseURL": "https://cloudcontrolapi.us-east-1.amazonaws.com",
                        "protocol": "awsCloudControl",
                        "auth": {"workloadIdentity": {"serviceAccountName": sa, "aws": {
                            "roleArn": ROLE, "region": "us-east-1", "service": "cloudcontrolapi"}}}}})
        .to_string()
    };
    let apply = |who: &'static str, sa: &'static str| {
        let (tenant, admin) = (&tenant, &admin);
        let manifest = provider(sa);
        async move {
            let identity = if who == "tenant" { tenant } else { admin };
            identity
                .kubectl(&["apply", "--dry-run=server", "-f", "-"], Some(&manifest))
                .await
        }
    };
    const REFUSED: &str = "you may not create its tokens (create serviceaccounts/token): a provider may only use a ServiceAccount whose tokens its author may create";

    // Refused: the tenant may not create lro-deployer's tokens (waiting for the new policy to
    // be in force).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let out = loop {
        let out = apply("tenant", "lro-deployer").await;
        if !out.success || tokio::time::Instant::now() > deadline {
            break out;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(!out.success, "the tenant's provider was admitted: {out}");
    assert!(
        out.stderr.contains(REFUSED)
            && out
                .stderr
                .contains(&format!("ServiceAccount {ns}/lro-deployer")),
        "{out}"
    );
    // The admin may.
    apply("admin", "lro-deployer").await.assert_ok();
    // Allowed to create lro-deployer's tokens (and only its), the tenant may use it, and still
    // not ci-admin.
    let grant = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": "tenant"},
        "rules": [{"apiGroups": ["lro.dev"], "resources": ["operationproviders"], "verbs": ["*"]},
                  {"apiGroups": [""], "resources": ["serviceaccounts/token"],
                   "resourceNames": ["lro-deployer"], "verbs": ["create"]}]});
    env.apply(&grant.to_string()).await.assert_ok();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let out = apply("tenant", "lro-deployer").await;
        if out.success {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the allowed ServiceAccount is still refused: {out}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let out = apply("tenant", "ci-admin").await;
    assert!(
        !out.success && out.stderr.contains(REFUSED) && out.stderr.contains("ci-admin"),
        "{out}"
    );
    // Another namespace's ServiceAccount cannot even be named.
    let out = apply("tenant", "kube-system/default").await;
    assert!(
        !out.success
            && out
                .stderr
                .contains("serviceAccountName must be the name of a ServiceAccount"),
        "{out}"
    );
}

/// The operator as the chart's identity, with `operator.workloadIdentity.enabled` for one
/// ServiceAccount name: an operation through that ServiceAccount succeeds, and a provider naming
/// another one gets the API server's refusal on its `Ready` condition (the chart's RBAC, not the
/// operator, draws the line).
#[tokio::test]
async fn the_chart_identity_exchanges_only_the_service_accounts_it_was_granted() {
    let mut env = TestEnv::new("identity-chart").await;
    // The harness's operator runs as the admin: stop it before any provider exists.
    env.kill_operator().await;
    let ns = env.ns.clone();
    let sys = format!("{ns}-sys");
    let admin = Identity::admin(&env).await;
    admin
        .kubectl(&["create", "namespace", &sys], None)
        .await
        .assert_ok();
    // As `tests/chart.rs` installs it (no webhook: this apiserver cannot reach a Service), with
    // workload identity for ServiceAccounts named `lro-azure` only.
    let watch = format!("--set=operator.watchNamespace={ns}");
    admin
        .helm(&[
            "install",
            &ns,
            CHART,
            "-n",
            &sys,
            &watch,
            "--set=webhook.enabled=false",
            "--set=operator.allowPrivateNetworks=true",
            "--set=operator.workloadIdentity.enabled=true",
            "--set=operator.workloadIdentity.serviceAccountNames={lro-azure}",
        ])
        .await
        .assert_ok();
    let (deployment, chart) = admin.release_operator(&ns, &sys).await;
    // What RBAC says before anything runs: that ServiceAccount's tokens, and no other's.
    let in_ns = format!("--namespace={ns}");
    assert!(
        chart
            .can_i(
                "create",
                "serviceaccounts/lro-azure",
                &["--subresource=token", &in_ns]
            )
            .await
    );
    assert!(
        !chart
            .can_i(
                "create",
                "serviceaccounts/other",
                &["--subresource=token", &in_ns]
            )
            .await
    );

    for name in ["lro-azure", "other"] {
        service_account(&env, name).await;
    }
    sim_post(
        &env,
        "/sim/auth",
        json!({"bearerTokens": [{"id": "nobody", "token": random("unused")}]}),
    )
    .await;
    // The simulator would trust both: only RBAC stands between the operator and `other`.
    trust(
        &env,
        600,
        json!([
            {"subject": subject(&env, "lro-azure"),
             "azure": {"tenantId": TENANT, "clientId": CLIENT}},
            {"subject": subject(&env, "other"),
             "azure": {"tenantId": TENANT, "clientId": CLIENT}},
        ]),
    )
    .await;
    env.provider(
        "azure",
        "azure",
        "/azure",
        json!({"auth": azure(&env, "lro-azure")}),
    )
    .await;
    env.provider(
        "other",
        "azure",
        "/azure",
        json!({"auth": azure(&env, "other")}),
    )
    .await;

    let pod_name = format!("{ns}-0");
    let env_vars = [
        ("POD_NAME", pod_name.as_str()),
        ("POD_NAMESPACE", sys.as_str()),
    ];
    let args = runnable_args(&container_args(&deployment, &env_vars)).await;
    let operator = Operator::start(&args, &chart, &env_vars, &ns);

    let simulate = json!({"durationSeconds": 3});
    let start = |name: &str| {
        json!({"start": {"method": "PUT",
            "path": format!("subscriptions/sub-1/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/{name}"),
            "query": {"api-version": "2023-05-01"},
            "body": {"location": "westeurope", "sku": {"name": "Standard_LRS"}, "simulate": simulate}}})
    };
    env.operation("granted", "azure", start("granted")).await;
    env.operation("not-granted", "other", start("notgranted"))
        .await;
    let op = env.wait_phase("granted", Phase::Succeeded, WAIT).await;
    assert_eq!(status_of(&op).phase, Some(Phase::Succeeded));
    let (status, reason, message) = provider_ready(&env, "azure", |s, _| s == "True").await;
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("True", "CredentialsResolved")
    );
    assert!(message.contains("azure credentials"), "{message}");
    let (status, reason, message) = provider_ready(&env, "other", |s, _| s == "False").await;
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "TokenRequestFailed"),
        "{message}"
    );
    assert!(message.contains("other"), "{message}");
    // Its operation waits, and nothing reached the upstream with anything but the granted
    // ServiceAccount's exchanged credentials.
    let waiting = env.get("not-granted").await;
    assert_ne!(status_of(&waiting).phase, Some(Phase::Succeeded));
    let auth = sim_get(&env, "/sim/auth/stats").await;
    let accepted: Vec<&String> = auth["accepted"]
        .as_object()
        .map(|a| a.keys().collect())
        .unwrap_or_default();
    assert_eq!(
        accepted,
        [&format!("identity:azure:{}", subject(&env, "lro-azure"))],
        "{auth:#}"
    );
    let exchanged = sim_get(&env, "/sim/identity/stats").await;
    assert!(
        !exchanged.to_string().contains(&subject(&env, "other")),
        "the other ServiceAccount's token reached the exchange: {exchanged:#}"
    );
    if let Some(found) = leaked(&operator.log()) {
        panic!("the operator log holds a credential: {found}…");
    }
    drop(operator);
    let _ = admin.helm(&["uninstall", &ns, "-n", &sys]).await;
}

/// Deletes the cluster-scoped objects a test created, whether it passed or not.
struct Cleanup {
    kubeconfig: std::path::PathBuf,
    names: Vec<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for name in &self.names {
            let _ = std::process::Command::new("kubectl")
                .arg("--kubeconfig")
                .arg(&self.kubeconfig)
                .args(["delete", name, "--ignore-not-found"])
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
}
