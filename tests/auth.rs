//! Authentication and the security boundary, end to end: every auth method against the
//! simulator's side of it, token expiry and the 401 retry, Secret rotation without a restart,
//! TLS with a test CA and mTLS, the address policy, the namespace boundary, bad input, and a
//! search of logs, events and statuses for every secret value.

use lro_testkit as support;

use std::time::Duration;

use lro_operator::api::{Phase, condition};
use serde_json::{Value, json};
use support::{TestEnv, status_of};

const WAIT: Duration = Duration::from_secs(45);
const SA_KEY: &str = include_str!("fixtures/sa-test-key.pem");
const SA_PUBLIC_KEY: &str = include_str!("fixtures/sa-test-key.pub.pem");
const SA_EMAIL: &str = "lro-e2e@sim.iam.gserviceaccount.com";

// ---------------------------------------------------------------------------------- helpers

async fn sim_post(root: &str, path: &str, body: Value) -> Value {
    reqwest::Client::new()
        .post(format!("{root}{path}"))
        .json(&body)
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .unwrap_or_else(|e| panic!("POST {path}: {e}"))
        .json()
        .await
        .unwrap_or_else(|e| panic!("POST {path}: not JSON: {e}"))
}

async fn auth_stats(root: &str) -> Value {
    reqwest::get(format!("{root}/sim/auth/stats"))
        .await
        .and_then(reqwest::Response::error_for_status)
        .unwrap_or_else(|e| panic!("auth stats: {e}"))
        .json()
        .await
        .unwrap_or_else(|e| panic!("auth stats: not JSON: {e}"))
}

/// Applies a generic Secret with `data` (string values).
async fn secret(env: &TestEnv, name: &str, data: &[(&str, &str)]) {
    let data: serde_json::Map<String, Value> = data
        .iter()
        .map(|(k, v)| ((*k).to_owned(), json!(v)))
        .collect();
    let manifest = json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "stringData": data,
    });
    env.apply(&manifest.to_string()).await.assert_ok();
}

/// Applies an `OperationProvider` on the environment's simulator (Google protocol) with `extra`
/// merged into its spec.
async fn provider(env: &TestEnv, name: &str, extra: Value) {
    provider_at(env, name, &format!("{}/v1", env.sim_url()), extra).await;
}

async fn provider_at(env: &TestEnv, name: &str, base_url: &str, extra: Value) {
    let mut spec = json!({
        "baseURL": base_url,
        "protocol": "google",
        "google": {"requestIdParameter": "requestId"},
        "polling": {"initialInterval": "500ms", "maxInterval": "1s"},
    });
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
        spec.extend(extra.clone());
    }
    let manifest = json!({
        "apiVersion": "lro.dev/v1alpha1", "kind": "OperationProvider",
        "metadata": {"name": name}, "spec": spec,
    });
    env.apply(&manifest.to_string()).await.assert_ok();
}

/// Applies an operation that starts a simulated cluster taking `seconds`.
async fn operation(env: &TestEnv, name: &str, provider_ref: Value, seconds: f64) {
    let manifest = json!({
        "apiVersion": "lro.dev/v1alpha1", "kind": "LongRunningOperation",
        "metadata": {"name": name},
        "spec": {
            "providerRef": provider_ref,
            "start": {"path": "projects/demo/clusters",
                      "body": {"displayName": name, "simulate": {"durationSeconds": seconds}}},
        },
    });
    env.apply(&manifest.to_string()).await.assert_ok();
}

/// The `Ready` condition of provider `name` as `(status, reason, message)`, once `accept` holds.
async fn provider_ready(
    env: &TestEnv,
    kind: &str,
    name: &str,
    accept: impl Fn(&str, &str) -> bool,
) -> (String, String, String) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let out = env.kubectl(&["get", kind, name, "-o", "json"]).await;
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
            "{kind}/{name}: Ready not as expected within {WAIT:?}: {}",
            object["status"]
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The `(reason, message)` of an operation's condition.
fn condition_of(op: &lro_operator::api::LongRunningOperation, kind: &str) -> (String, String) {
    status_of(op)
        .conditions
        .iter()
        .find(|c| c.type_ == kind)
        .map(|c| (c.reason.clone(), c.message.clone()))
        .unwrap_or_default()
}

/// Waits until operation `name`'s `Reconciling` condition has `reason`; returns its message.
async fn wait_reason(env: &TestEnv, name: &str, reason: &str) -> String {
    let op = env
        .wait_for(name, &format!("Reconciling={reason}"), WAIT, |op| {
            op.status.as_ref().is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.type_ == condition::RECONCILING && c.reason == reason)
            })
        })
        .await;
    condition_of(&op, condition::RECONCILING).1
}

fn random(prefix: &str) -> String {
    format!("{prefix}-{:016x}{:08x}", rand_u64(), std::process::id())
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish()
}

// ---------------------------------------------------------------------------------- tests

/// Every auth method, with the operator logging at debug level everywhere: each operation
/// succeeds through an upstream that checks its credentials, every provider says Ready, and no
/// secret value or access token appears in the operator's log, in any event or in any status.
#[tokio::test]
async fn every_auth_method_works_and_no_secret_leaks() {
    let mut env = TestEnv::new("auth-all").await;
    env.set_operator_log_filter("debug");
    env.restart_operator_with(&[]).await;
    let root = env.sim_url().to_owned();
    let bearer = random("bearer");
    let header_key = random("hkey");
    let query_key = random("qkey");
    let (user, password) = (random("user"), random("pass"));
    let (client_id, client_secret) = (random("client"), random("csecret"));
    let (access_key, secret_key, session) =
        (random("AKID"), random("awssecret"), random("session"));
    sim_post(
        &root,
        "/sim/auth",
        json!({
            "bearerTokens": [{"id": "bearer", "token": bearer}],
            "apiKeys": [{"id": "header", "header": "X-API-Key", "value": header_key},
                        {"id": "query", "queryParameter": "key", "value": query_key}],
            "basic": [{"id": "basic", "username": user, "password": password}],
            "oauthClients": [{"id": "oauth", "clientId": client_id, "clientSecret": client_secret,
                              "audience": "sim-audience"}],
            "serviceAccounts": [{"id": "google", "clientEmail": SA_EMAIL, "publicKeyPem": SA_PUBLIC_KEY}],
            "awsKeys": [{"id": "aws", "accessKeyId": access_key, "secretAccessKey": secret_key,
                         "sessionToken": session, "region": "us-east-1", "service": "sim"}],
        }),
    )
    .await;
    let sa_json = json!({
        "type": "service_account", "project_id": "sim", "private_key_id": "k1",
        "private_key": SA_KEY, "client_email": SA_EMAIL,
        "token_uri": format!("{root}/sim/oauth/token"),
    })
    .to_string();
    secret(&env, "bearer", &[("token", &bearer)]).await;
    secret(
        &env,
        "keys",
        &[("header", &header_key), ("query", &query_key)],
    )
    .await;
    secret(
        &env,
        "basic",
        &[("username", &user), ("password", &password)],
    )
    .await;
    secret(
        &env,
        "oauth",
        &[("id", &client_id), ("secret", &client_secret)],
    )
    .await;
    secret(&env, "google", &[("key.json", &sa_json)]).await;
    secret(
        &env,
        "aws",
        &[
            ("id", &access_key),
            ("secret", &secret_key),
            ("session", &session),
        ],
    )
    .await;
    let r = |name: &str, key: &str| json!({"secretKeyRef": {"name": name, "key": key}});
    let methods = [
        ("bearer", json!({"bearerToken": r("bearer", "token")})),
        (
            "header",
            json!({"apiKey": {"secretKeyRef": {"name": "keys", "key": "header"}, "header": "X-API-Key"}}),
        ),
        (
            "query",
            json!({"apiKey": {"secretKeyRef": {"name": "keys", "key": "query"}, "queryParameter": "key"}}),
        ),
        (
            "basic",
            json!({"basic": {"username": r("basic", "username"), "password": r("basic", "password")}}),
        ),
        (
            "oauth",
            json!({"oauth2ClientCredentials": {"tokenURL": format!("{root}/sim/oauth/token"),
            "clientID": r("oauth", "id"), "clientSecret": r("oauth", "secret"), "audience": "sim-audience"}}),
        ),
        (
            "google",
            json!({"googleServiceAccount": {"secretKeyRef": {"name": "google", "key": "key.json"}}}),
        ),
        (
            "aws",
            json!({"awsSigV4": {"accessKeyID": r("aws", "id"), "secretAccessKey": r("aws", "secret"),
            "sessionToken": r("aws", "session"), "region": "us-east-1", "service": "sim"}}),
        ),
    ];
    for (name, auth) in &methods {
        provider(&env, name, json!({"auth": auth})).await;
        operation(&env, &format!("op-{name}"), json!({"name": name}), 1.0).await;
    }
    for (name, _) in &methods {
        env.wait_phase(&format!("op-{name}"), Phase::Succeeded, WAIT)
            .await;
        let (status, reason, message) =
            provider_ready(&env, "operationprovider", name, |s, _| s == "True").await;
        assert_eq!(
            (status.as_str(), reason.as_str()),
            ("True", "CredentialsResolved"),
            "{message}"
        );
    }
    let stats = auth_stats(&root).await;
    for (name, _) in &methods {
        assert!(
            stats["accepted"][name].as_u64().unwrap_or(0) >= 2,
            "{name}: the start and at least one poll were authenticated: {stats}"
        );
    }
    assert_eq!(
        stats["rejected"],
        json!({}),
        "no request was refused: {stats}"
    );

    // The leak search: the log (debug everywhere), every event, every status.
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
    assert!(
        log.contains("Authorization") || log.contains("connecting to"),
        "debug logging is on"
    );
    let basic_header = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    };
    let key_line = SA_KEY.lines().nth(2).expect("a key line").to_owned();
    let secrets = [
        bearer,
        header_key,
        query_key,
        user,
        password,
        client_id,
        client_secret,
        access_key,
        secret_key,
        session,
        basic_header,
        key_line,
    ];
    for (place, text) in [
        ("operator log", &log),
        ("events", &events),
        ("statuses", &objects),
    ] {
        for value in &secrets {
            assert!(
                !text.contains(value.as_str()),
                "{place} contains a secret value"
            );
        }
        assert!(
            !text.contains("sim-at-"),
            "{place} contains an access token"
        );
        assert!(
            !text.contains("PRIVATE KEY"),
            "{place} contains a private key"
        );
    }
}

/// Tokens that live two seconds: refreshed before they expire (no request is refused as
/// expired); after the upstream revokes them, the next request gets exactly one new token and
/// one retry, and the operation never notices.
#[tokio::test]
async fn oauth2_tokens_are_refreshed_before_expiry_and_once_after_a_401() {
    let env = TestEnv::new("auth-expiry").await;
    let root = env.sim_url().to_owned();
    let clients = json!([{"id": "c1", "clientId": "id-1", "clientSecret": "secret-1"}]);
    sim_post(
        &root,
        "/sim/auth",
        json!({"oauthClients": clients, "tokenTtlSeconds": 2}),
    )
    .await;
    secret(&env, "oauth", &[("id", "id-1"), ("secret", "secret-1")]).await;
    let auth = json!({"oauth2ClientCredentials": {
        "tokenURL": format!("{root}/sim/oauth/token"),
        "clientID": {"secretKeyRef": {"name": "oauth", "key": "id"}},
        "clientSecret": {"secretKeyRef": {"name": "oauth", "key": "secret"}},
    }});
    provider(&env, "oauth", json!({"auth": auth})).await;
    operation(&env, "short-tokens", json!({"name": "oauth"}), 8.0).await;
    env.wait_phase("short-tokens", Phase::Succeeded, WAIT).await;
    let stats = auth_stats(&root).await;
    let tokens = stats["tokenRequests"]["c1"].as_u64().unwrap_or(0);
    assert!(
        (3..=20).contains(&tokens),
        "refreshed every ~1.5 s over 8 s: {stats}"
    );
    assert_eq!(
        stats["rejected"],
        json!({}),
        "no request with an expired token: {stats}"
    );

    // Long-lived tokens, then a revocation in the middle of an operation.
    sim_post(
        &root,
        "/sim/auth",
        json!({"oauthClients": clients, "tokenTtlSeconds": 600}),
    )
    .await;
    operation(&env, "revoked", json!({"name": "oauth"}), 12.0).await;
    env.wait_phase("revoked", Phase::Running, WAIT).await;
    // A two-second token still held is replaced at the first request after 1.5 s of its life:
    // the long-lived one is in use once no token was requested for 2.5 s.
    let token_requests = async || {
        auth_stats(&root).await["tokenRequests"]["c1"]
            .as_u64()
            .unwrap_or(0)
    };
    let mut before = token_requests().await;
    loop {
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let now = token_requests().await;
        if now == before {
            break;
        }
        before = now;
    }
    sim_post(&root, "/sim/auth/revoke", json!({})).await;
    let op = env.wait_phase("revoked", Phase::Succeeded, WAIT).await;
    let stats = auth_stats(&root).await;
    assert_eq!(
        stats["tokenRequests"]["c1"].as_u64().unwrap_or(0),
        before + 1,
        "one refresh after the 401: {stats}"
    );
    assert_eq!(
        stats["rejected"],
        json!({"invalid": 1}),
        "one 401, then the retry worked: {stats}"
    );
    let reasons: Vec<String> = env
        .status_writes("revoked")
        .iter()
        .filter_map(|w| {
            w.status
                .conditions
                .iter()
                .find(|c| c.type_ == condition::RECONCILING)
        })
        .map(|c| c.reason.clone())
        .collect();
    assert!(
        !reasons.iter().any(|r| r == "UpstreamUnavailable"),
        "{reasons:?}"
    );
    assert_eq!(status_of(&op).phase, Some(Phase::Succeeded));
}

/// A changed Secret is used without a restart (re-read every 20 s: Secrets are not watched, so
/// that the operator needs no `list`/`watch` on them): once the new token has been seen upstream
/// the old one never is again, and the upstream can drop it.
#[tokio::test]
async fn a_rotated_secret_is_used_without_a_restart() {
    let env = TestEnv::new("auth-rotate").await;
    let root = env.sim_url().to_owned();
    let tokens = |both: bool| {
        let mut t = vec![json!({"id": "new", "token": "token-new"})];
        if both {
            t.push(json!({"id": "old", "token": "token-old"}));
        }
        json!({"bearerTokens": t})
    };
    sim_post(&root, "/sim/auth", tokens(true)).await;
    secret(&env, "token", &[("token", "token-old")]).await;
    let auth = json!({"bearerToken": {"secretKeyRef": {"name": "token", "key": "token"}}});
    provider(&env, "rotating", json!({"auth": auth})).await;
    operation(&env, "long", json!({"name": "rotating"}), 30.0).await;
    env.wait_phase("long", Phase::Running, WAIT).await;
    let pid = env.operator_pid();
    secret(&env, "token", &[("token", "token-new")]).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while auth_stats(&root).await["accepted"]["new"]
        .as_u64()
        .unwrap_or(0)
        == 0
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the new token was never used"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    sim_post(&root, "/sim/auth", tokens(false)).await;
    env.wait_phase("long", Phase::Succeeded, WAIT).await;
    let stats = auth_stats(&root).await;
    let used: Vec<&str> = stats["requests"]
        .as_array()
        .expect("request log")
        .iter()
        .filter_map(|r| r["credential"].as_str())
        .collect();
    let first_new = used.iter().position(|c| *c == "new").expect("new used");
    assert!(
        used[first_new..].iter().all(|c| *c == "new"),
        "after the first request with the new token, only the new one: {used:?}"
    );
    assert!(used[..first_new].iter().all(|c| *c == "old"), "{used:?}");
    assert_eq!(stats["rejected"], json!({}), "{stats}");
    assert_eq!(env.operator_pid(), pid, "no restart");
}

/// A test CA and a client certificate: the provider trusts only its CA bundle (a ConfigMap)
/// and presents its certificate (a `kubernetes.io/tls` Secret); without the certificate the
/// mTLS upstream refuses it; an unparsable bundle is a clear condition.
#[tokio::test]
async fn tls_with_a_test_ca_and_mutual_tls() {
    let env = TestEnv::new("auth-tls").await;
    let pki = Pki::new();
    let dir = tempfile::tempdir().expect("dir");
    let (_sim, root) = tls_sim(&pki, dir.path()).await;
    let ca = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ca"},
                    "data": {"ca.crt": pki.ca}});
    env.apply(&ca.to_string()).await.assert_ok();
    let client = json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
        "metadata": {"name": "client"},
        "stringData": {"tls.crt": pki.client.0, "tls.key": pki.client.1}});
    env.apply(&client.to_string()).await.assert_ok();
    secret(&env, "junk", &[("ca.crt", "this is not a certificate")]).await;
    let base = format!("{root}/v1");
    let bundle = json!({"configMapKeyRef": {"name": "ca", "key": "ca.crt"}});
    provider_at(
        &env,
        "mtls",
        &base,
        json!({"tls": {"caBundle": bundle,
        "clientCertificate": {"secretName": "client"}}}),
    )
    .await;
    provider_at(&env, "no-cert", &base, json!({"tls": {"caBundle": bundle}})).await;
    provider_at(
        &env,
        "junk-ca",
        &base,
        json!({"tls": {"caBundle":
        {"secretKeyRef": {"name": "junk", "key": "ca.crt"}}}}),
    )
    .await;
    operation(&env, "with-cert", json!({"name": "mtls"}), 1.0).await;
    operation(&env, "without-cert", json!({"name": "no-cert"}), 1.0).await;
    env.wait_phase("with-cert", Phase::Succeeded, WAIT).await;
    let op = env
        .wait_for("without-cert", "retrying its start", WAIT, |op| {
            condition_of(op, condition::RECONCILING).0 == "StartRetrying"
        })
        .await;
    let (_, message) = condition_of(&op, condition::RECONCILING);
    assert!(message.contains("failed"), "{message}");
    let (_, reason, message) =
        provider_ready(&env, "operationprovider", "junk-ca", |s, _| s == "False").await;
    assert_eq!(reason, "InvalidCABundle", "{message}");
    assert!(message.contains("spec.tls.caBundle"), "{message}");
}

/// Link-local and metadata addresses are refused before any connection; loopback needs a
/// cluster admin's opt-in, which a tenant's own provider cannot give itself.
#[tokio::test]
async fn metadata_and_private_addresses_are_refused() {
    let mut env = TestEnv::new("auth-address").await;
    env.set_operator_log_filter("debug");
    // The operator as installed: no `--allow-private-networks`.
    env.set_private_networks(false);
    env.restart_operator_with(&[]).await;
    provider_at(
        &env,
        "metadata",
        "http://169.254.169.254/computeMetadata/v1",
        json!({}),
    )
    .await;
    let loopback = format!("{}/v1", env.sim_url());
    let strict = json!({
        "apiVersion": "lro.dev/v1alpha1", "kind": "OperationProvider", "metadata": {"name": "strict"},
        "spec": {"baseURL": loopback, "protocol": "google"},
    });
    env.apply(&strict.to_string()).await.assert_ok();
    operation(&env, "to-metadata", json!({"name": "metadata"}), 1.0).await;
    operation(&env, "to-loopback", json!({"name": "strict"}), 1.0).await;
    let message = wait_reason(&env, "to-metadata", "ProviderNotReady").await;
    assert!(
        message.contains("AddressNotAllowed") && message.contains("link-local"),
        "{message}"
    );
    assert!(message.contains("spec.baseURL"), "{message}");
    let message = wait_reason(&env, "to-loopback", "ProviderNotReady").await;
    assert!(message.contains("allowPrivateNetworks"), "{message}");
    let (_, reason, _) =
        provider_ready(&env, "operationprovider", "metadata", |s, _| s == "False").await;
    assert_eq!(reason, "AddressNotAllowed");
    assert_eq!(phase(&env, "to-metadata").await, Some(Phase::Pending));
    // A tenant's provider cannot open private networks for itself: the API server refuses it.
    let opened = json!({
        "apiVersion": "lro.dev/v1alpha1", "kind": "OperationProvider", "metadata": {"name": "opened"},
        "spec": {"baseURL": loopback, "protocol": "google", "allowPrivateNetworks": true},
    });
    let refused = env.apply(&opened.to_string()).await;
    assert!(!refused.success, "{refused}");
    assert!(
        refused
            .stderr
            .contains("allowPrivateNetworks is a cluster admin's decision"),
        "{refused}"
    );
    let log = std::fs::read_to_string(env.operator_log_path()).expect("operator log");
    assert!(
        log.contains("connecting to 127.0.0.1"),
        "hyper's connection log is on"
    );
    assert!(
        !log.contains("connecting to 169.254"),
        "no connection to the metadata address"
    );
    assert_eq!(
        env.sim_stats().await["creates"],
        json!(0),
        "nothing reached the simulator"
    );
}

async fn phase(env: &TestEnv, name: &str) -> Option<Phase> {
    env.get(name).await.status.and_then(|s| s.phase)
}

/// An operation may use only a provider of its own namespace; a ClusterOperationProvider only
/// from the namespaces its `allowedNamespaces` admits.
#[tokio::test]
async fn namespaces_are_a_boundary() {
    let mut a = TestEnv::new("auth-ns-a").await;
    let mut b = TestEnv::new("auth-ns-b").await;
    provider(&a, "only-a", json!({})).await;
    operation(&a, "in-a", json!({"name": "only-a"}), 1.0).await;
    operation(&b, "in-b", json!({"name": "only-a"}), 1.0).await;
    a.wait_phase("in-a", Phase::Succeeded, WAIT).await;
    let message = wait_reason(&b, "in-b", "ProviderNotReady").await;
    assert!(
        message.contains("not found in namespace") && message.contains(&b.ns),
        "{message}"
    );
    let cluster_name = format!("{}-shared", a.ns);
    let cluster = json!({
        "apiVersion": "lro.dev/v1alpha1", "kind": "ClusterOperationProvider",
        "metadata": {"name": cluster_name},
        "spec": {"baseURL": format!("{}/v1", a.sim_url()), "protocol": "google",
                 "polling": {"initialInterval": "500ms", "maxInterval": "1s"},
                 "allowedNamespaces": {"matchLabels": {"kubernetes.io/metadata.name": a.ns}}},
    });
    a.apply(&cluster.to_string()).await.assert_ok();
    let reference = json!({"kind": "ClusterOperationProvider", "name": cluster_name});
    operation(&a, "cluster-in-a", reference.clone(), 1.0).await;
    operation(&b, "cluster-in-b", reference, 1.0).await;
    a.wait_phase("cluster-in-a", Phase::Succeeded, WAIT).await;
    let message = wait_reason(&b, "cluster-in-b", "ProviderNotReady").await;
    assert!(
        message.contains("does not admit namespace") && message.contains("allowedNamespaces"),
        "{message}"
    );
    // A cluster provider's Secrets come from the operator's namespace, nowhere else.
    let operator_ns = a.ns.clone();
    a.restart_operator_with(&["--operator-namespace", &operator_ns])
        .await;
    b.restart_operator_with(&["--operator-namespace", &operator_ns])
        .await;
    secret(&a, "cluster-token", &[("token", "t")]).await;
    secret(&b, "only-in-b", &[("token", "t")]).await;
    let with_secret = |name: &str, secret: &str| {
        json!({
            "apiVersion": "lro.dev/v1alpha1", "kind": "ClusterOperationProvider",
            "metadata": {"name": name},
            "spec": {"baseURL": format!("{}/v1", a.sim_url()), "protocol": "google",
                     "auth": {"bearerToken": {"secretKeyRef": {"name": secret, "key": "token"}}}},
        })
    };
    let good = format!("{}-secret", a.ns);
    let bad = format!("{}-elsewhere", a.ns);
    a.apply(&with_secret(&good, "cluster-token").to_string())
        .await
        .assert_ok();
    a.apply(&with_secret(&bad, "only-in-b").to_string())
        .await
        .assert_ok();
    provider_ready(&a, "clusteroperationprovider", &good, |s, _| s == "True").await;
    // Operators of other tests on this shared apiserver (started without --operator-namespace)
    // report on cluster-scoped providers too; wait for this test's operators' verdict.
    let (_, reason, message) = provider_ready(&a, "clusteroperationprovider", &bad, |s, r| {
        s == "False" && r == "SecretNotFound"
    })
    .await;
    assert_eq!(reason, "SecretNotFound", "{message}");
    assert!(
        message.contains(&a.ns),
        "read from the operator's namespace: {message}"
    );
    // Closed by default: without allowedNamespaces no namespace may use it.
    operation(
        &a,
        "closed",
        json!({"kind": "ClusterOperationProvider", "name": good}),
        1.0,
    )
    .await;
    let message = wait_reason(&a, "closed", "ProviderNotReady").await;
    assert!(
        message.contains("admits no namespace") && message.contains("allowedNamespaces"),
        "{message}"
    );
    // `{}` admits every namespace; a tenant learns that the provider is not usable, not which
    // Secret of the operator's namespace it lacks.
    a.kubectl(&[
        "patch",
        "clusteroperationprovider",
        &bad,
        "--type=merge",
        "-p",
        r#"{"spec": {"allowedNamespaces": {}}}"#,
    ])
    .await
    .assert_ok();
    operation(
        &b,
        "not-usable",
        json!({"kind": "ClusterOperationProvider", "name": bad}),
        1.0,
    )
    .await;
    let message = wait_reason(&b, "not-usable", "ProviderNotReady").await;
    assert!(message.contains("not usable"), "{message}");
    for hidden in ["only-in-b", "SecretNotFound", "operator's namespace"] {
        assert!(
            !message.contains(hidden),
            "{hidden:?} shown to a tenant: {message}"
        );
    }
    for name in [&cluster_name, &good, &bad] {
        a.kubectl(&["delete", "clusteroperationprovider", name, "--wait=false"])
            .await
            .assert_ok();
    }
}

/// Configurations that cannot work give a condition naming the field and the fix, and the
/// operator keeps running; fixing the Secret makes the provider Ready and the operation go on.
#[tokio::test]
async fn bad_input_gives_conditions_not_crashes() {
    let mut env = TestEnv::new("auth-bad").await;
    env.restart_operator_with(&["--max-status-result-bytes", "200"])
        .await;
    let pid = env.operator_pid();
    let root = env.sim_url().to_owned();
    sim_post(
        &root,
        "/sim/auth",
        json!({"bearerTokens": [{"id": "t", "token": "right"}]}),
    )
    .await;
    // Two methods: refused by the API server, with the rule's message.
    let both = json!({
        "apiVersion": "lro.dev/v1alpha1", "kind": "OperationProvider", "metadata": {"name": "both"},
        "spec": {"baseURL": format!("{root}/v1"), "protocol": "google", "auth": {
            "bearerToken": {"secretKeyRef": {"name": "t", "key": "token"}},
            "basic": {"username": {"secretKeyRef": {"name": "b", "key": "u"}},
                      "password": {"secretKeyRef": {"name": "b", "key": "p"}}}}},
    });
    let out = env.apply(&both.to_string()).await;
    assert!(
        !out.success && out.stderr.contains("set exactly one of spec.auth"),
        "{out}"
    );

    secret(&env, "token", &[("wrong-key", "right")]).await;
    secret(
        &env,
        "sa",
        &[("key.json", "{\"type\": \"service_account\"}")],
    )
    .await;
    let bearer = json!({"bearerToken": {"secretKeyRef": {"name": "token", "key": "token"}}});
    provider(&env, "missing-key", json!({"auth": bearer})).await;
    provider(
        &env,
        "missing-secret",
        json!({"auth":
        {"bearerToken": {"secretKeyRef": {"name": "nope", "key": "token"}}}}),
    )
    .await;
    provider(
        &env,
        "bad-sa",
        json!({"auth":
        {"googleServiceAccount": {"secretKeyRef": {"name": "sa", "key": "key.json"}}}}),
    )
    .await;
    provider(
        &env,
        "bad-client",
        json!({"auth": {"oauth2ClientCredentials": {
        "tokenURL": format!("{root}/sim/oauth/token"),
        "clientID": {"secretKeyRef": {"name": "token", "key": "wrong-key"}},
        "clientSecret": {"secretKeyRef": {"name": "token", "key": "wrong-key"}}}}}),
    )
    .await;
    for (name, reason, field) in [
        (
            "missing-key",
            "SecretKeyMissing",
            "spec.auth.bearerToken.secretKeyRef",
        ),
        (
            "missing-secret",
            "SecretNotFound",
            "spec.auth.bearerToken.secretKeyRef",
        ),
        (
            "bad-sa",
            "InvalidServiceAccountKey",
            "spec.auth.googleServiceAccount.secretKeyRef",
        ),
        (
            "bad-client",
            "TokenRequestFailed",
            "spec.auth.oauth2ClientCredentials",
        ),
    ] {
        let (_, got, message) =
            provider_ready(&env, "operationprovider", name, |s, _| s == "False").await;
        assert_eq!(got, reason, "{name}: {message}");
        assert!(message.contains(field), "{name}: {message}");
    }
    let (_, _, message) = provider_ready(&env, "operationprovider", "missing-key", |s, _| {
        s == "False"
    })
    .await;
    // The author may not be able to read the Secret: its key names are not shown.
    assert!(
        message.contains("has no key") && !message.contains("wrong-key"),
        "names the missing key, not the keys there are: {message}"
    );

    // An operation on it waits, saying why; fixing the Secret lets it run.
    let manifest = json!({
        "apiVersion": "lro.dev/v1alpha1", "kind": "LongRunningOperation",
        "metadata": {"name": "waits"},
        "spec": {"providerRef": {"name": "missing-key"},
                 "start": {"path": "projects/demo/clusters",
                           "body": {"blob": "x".repeat(300), "simulate": {"durationSeconds": 1}}}},
    });
    env.apply(&manifest.to_string()).await.assert_ok();
    let message = wait_reason(&env, "waits", "ProviderNotReady").await;
    assert!(message.contains("SecretKeyMissing"), "{message}");
    secret(&env, "token", &[("wrong-key", "right"), ("token", "right")]).await;
    provider_ready(&env, "operationprovider", "missing-key", |s, _| s == "True").await;
    let op = env
        .wait_phase("waits", Phase::Succeeded, Duration::from_secs(60))
        .await;
    // The result is over the 200-byte cap: left out, with a condition saying where it is.
    let status = status_of(&op);
    assert_eq!(status.result, None);
    let (reason, message) = condition_of(&op, lro_operator::reconcile::RESULT_TRUNCATED);
    assert_eq!(reason, "ResultTooLarge", "{message}");
    assert!(message.contains("operations/op-"), "{message}");
    assert_eq!(env.operator_pid(), pid, "the operator never crashed");
}

// ---------------------------------------------------------------------------------- TLS

/// A test CA with a server certificate for 127.0.0.1 and a client certificate (PEM).
struct Pki {
    ca: String,
    server: (String, String),
    client: (String, String),
}

impl Pki {
    fn new() -> Pki {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
            KeyPair, KeyUsagePurpose,
        };
        let ca_key = KeyPair::generate().expect("key");
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("params");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "lro e2e test CA");
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = ca.self_signed(&ca_key).expect("ca");
        let issuer = Issuer::new(ca, ca_key);
        let leaf = |usage: ExtendedKeyUsagePurpose| {
            let key = KeyPair::generate().expect("key");
            let mut params = CertificateParams::new(vec!["127.0.0.1".to_owned()]).expect("params");
            params.extended_key_usages = vec![usage];
            let cert = params.signed_by(&key, &issuer).expect("cert");
            (cert.pem(), key.serialize_pem())
        };
        Pki {
            ca: ca_cert.pem(),
            server: leaf(ExtendedKeyUsagePurpose::ServerAuth),
            client: leaf(ExtendedKeyUsagePurpose::ClientAuth),
        }
    }
}

/// `lro-sim` over HTTPS requiring client certificates from the test CA.
async fn tls_sim(pki: &Pki, dir: &std::path::Path) -> (tokio::process::Child, String) {
    use tokio::io::AsyncBufReadExt;
    let write = |name: &str, pem: &str| {
        let path = dir.join(name);
        std::fs::write(&path, pem).expect("write");
        path
    };
    let cert = write("server.crt", &pki.server.0);
    let key = write("server.key", &pki.server.1);
    let ca = write("ca.crt", &pki.ca);
    let mut child = tokio::process::Command::new(support::sim_bin())
        .args(["--listen", "127.0.0.1:0"])
        .arg("--tls-cert")
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key)
        .arg("--tls-client-ca")
        .arg(&ca)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start the TLS simulator");
    let stdout = child.stdout.take().expect("piped");
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("the TLS simulator announces itself")
        .expect("readable")
        .expect("a line");
    let url = first
        .strip_prefix("sim listening on ")
        .expect("announcement")
        .to_owned();
    assert!(url.starts_with("https://"), "{url}");
    (child, url)
}
