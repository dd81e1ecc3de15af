//! The upstream client against the simulator, in process: each auth method end to end, token
//! expiry and the 401 retry, the address policy, TLS with a test CA and mTLS.

use std::time::Duration;

use serde_json::{Value, json};

use super::auth::{GoogleKey, KeyPlacement, OAuth2Client};
use super::sigv4::AwsKeys;
use super::*;
use lro_sim::{SimState, router};

const TEST_KEY: &str = include_str!("../../tests/fixtures/sa-test-key.pem");
const TEST_PUBLIC_KEY: &str = include_str!("../../tests/fixtures/sa-test-key.pub.pem");

/// A simulator on a free loopback port; returns its root URL.
async fn sim() -> String {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(axum::serve(listener, router(SimState::default())).into_future());
    format!("http://{addr}")
}

async fn admin(root: &str, path: &str, body: Value) -> Value {
    reqwest::Client::new()
        .post(format!("{root}{path}"))
        .json(&body)
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .expect("admin call")
        .json()
        .await
        .expect("json")
}

async fn stats(root: &str) -> Value {
    reqwest::get(format!("{root}/sim/auth/stats"))
        .await
        .expect("stats")
        .json()
        .await
        .expect("json")
}

fn settings(allow_private: bool) -> ClientSettings {
    ClientSettings {
        timeout: Duration::from_secs(5),
        max_body: DEFAULT_MAX_BODY,
        policy: AddressPolicy { allow_private },
        url_scope: UrlScope::BasePath,
    }
}

fn client(base: &str, credential: Option<Credential>) -> Upstream {
    let url = Url::parse(base).expect("url");
    let auth = credential.map(|credential| ProviderAuth {
        credential,
        on_token: None,
    });
    Upstream::for_provider(&settings(true), &url, &TlsMaterial::default(), auth).expect("client")
}

/// Lists operations (an authenticated GET on the Google surface).
async fn list(upstream: &Upstream, base: &str) -> u16 {
    upstream
        .send(base, &RequestSpec::get("operations".into()))
        .await
        .expect("answered")
        .status
}

#[tokio::test]
async fn every_static_method_is_accepted_and_nothing_else() {
    let root = sim().await;
    let base = format!("{root}/v1");
    admin(
        &root,
        "/sim/auth",
        json!({
            "bearerTokens": [{"id": "bearer", "token": "bearer-secret"}],
            "apiKeys": [{"id": "header", "header": "X-API-Key", "value": "header-secret"},
                        {"id": "query", "queryParameter": "key", "value": "query-secret"}],
            "basic": [{"id": "basic", "username": "user", "password": "basic-secret"}],
            "awsKeys": [{"id": "aws", "accessKeyId": "AKIDSIM", "secretAccessKey": "aws-secret",
                         "sessionToken": "aws-session", "region": "us-east-1", "service": "sim"}],
        }),
    )
    .await;
    assert_eq!(list(&client(&base, None), &base).await, 401);
    let methods = [
        Credential::Bearer("bearer-secret".into()),
        Credential::ApiKey {
            value: "header-secret".into(),
            placement: KeyPlacement::Header(reqwest::header::HeaderName::from_static("x-api-key")),
        },
        Credential::ApiKey {
            value: "query-secret".into(),
            placement: KeyPlacement::Query("key".into()),
        },
        Credential::Basic {
            username: "user".into(),
            password: "basic-secret".into(),
        },
        Credential::AwsSigV4(AwsKeys {
            access_key_id: "AKIDSIM".into(),
            secret_access_key: "aws-secret".into(),
            session_token: Some("aws-session".into()),
            region: "us-east-1".into(),
            service: "sim".into(),
        }),
    ];
    for credential in methods {
        let method = credential.method();
        assert_eq!(
            list(&client(&base, Some(credential)), &base).await,
            200,
            "{method}"
        );
    }
    assert_eq!(
        list(
            &client(&base, Some(Credential::Bearer("wrong".into()))),
            &base
        )
        .await,
        401
    );
    let accepted = &stats(&root).await["accepted"];
    for id in ["bearer", "header", "query", "basic", "aws"] {
        assert_eq!(accepted[id], json!(1), "{id}: {accepted}");
    }
}

fn oauth(root: &str, secret: &str) -> Credential {
    Credential::OAuth2(OAuth2Client {
        token_url: Url::parse(&format!("{root}/sim/oauth/token")).expect("url"),
        client_id: "client-1".into(),
        client_secret: secret.into(),
        audience: Some("sim-audience".into()),
        scopes: vec![],
    })
}

#[tokio::test]
async fn oauth2_tokens_are_cached_refreshed_before_expiry_and_once_after_a_401() {
    let root = sim().await;
    let base = format!("{root}/v1");
    admin(
        &root,
        "/sim/auth",
        json!({"oauthClients": [{"id": "c1", "clientId": "client-1", "clientSecret": "client-secret",
               "audience": "sim-audience"}], "tokenTtlSeconds": 1}),
    )
    .await;
    let upstream = client(&base, Some(oauth(&root, "client-secret")));
    assert_eq!(list(&upstream, &base).await, 200);
    assert_eq!(list(&upstream, &base).await, 200);
    assert_eq!(
        stats(&root).await["tokenRequests"]["c1"],
        json!(1),
        "cached"
    );
    // Past the refresh point (0.75 s) but before the expiry (1 s): a new token, no 401.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(list(&upstream, &base).await, 200);
    let s = stats(&root).await;
    assert_eq!(s["tokenRequests"]["c1"], json!(2), "{s}");
    assert_eq!(s["rejected"], json!({}), "{s}");
    // Revoked upstream: the 401 gets exactly one new token and one retry.
    admin(&root, "/sim/auth/revoke", json!({})).await;
    assert_eq!(list(&upstream, &base).await, 200);
    let s = stats(&root).await;
    assert_eq!(s["tokenRequests"]["c1"], json!(3), "{s}");
    assert_eq!(s["rejected"]["invalid"], json!(1), "{s}");
    // A wrong client secret: the token endpoint's refusal, without the secret.
    let wrong = client(&base, Some(oauth(&root, "not-the-secret")));
    let error = wrong
        .ready(&Url::parse(&base).expect("url"))
        .await
        .expect_err("refused");
    let text = error.to_string();
    assert!(
        text.contains("HTTP 401") && text.contains("invalid_client"),
        "{text}"
    );
    assert!(!text.contains("not-the-secret"), "{text}");
}

#[tokio::test]
async fn google_service_accounts_exchange_a_verified_jwt() {
    let root = sim().await;
    let base = format!("{root}/v1");
    admin(
        &root,
        "/sim/auth",
        json!({"serviceAccounts": [{"id": "sa", "clientEmail": "lro@sim.iam.gserviceaccount.com",
               "publicKeyPem": TEST_PUBLIC_KEY}]}),
    )
    .await;
    let key = json!({
        "type": "service_account",
        "client_email": "lro@sim.iam.gserviceaccount.com",
        "private_key": TEST_KEY,
        "private_key_id": "k1",
        "token_uri": format!("{root}/sim/oauth/token"),
    });
    let key = GoogleKey::parse(key.to_string().as_bytes(), vec![]).expect("key");
    let upstream = client(&base, Some(Credential::Google(key)));
    assert_eq!(list(&upstream, &base).await, 200);
    assert_eq!(stats(&root).await["accepted"]["sa"], json!(1));
}

#[tokio::test]
async fn credentials_never_leave_the_providers_origin() {
    let root = sim().await;
    let other = sim().await;
    admin(
        &other,
        "/sim/auth",
        json!({"bearerTokens": [{"id": "t", "token": "origin-secret"}]}),
    )
    .await;
    let upstream = client(
        &format!("{root}/v1"),
        Some(Credential::Bearer("origin-secret".into())),
    );
    // The same client asked to send elsewhere (as a second base URL): no credentials go there.
    let status = list(&upstream, &format!("{other}/v1")).await;
    assert_eq!(status, 401);
    assert_eq!(stats(&other).await["rejected"]["missing"], json!(1));
}

#[tokio::test]
async fn metadata_addresses_are_refused_before_any_connection() {
    let upstream = client(
        "http://169.254.169.254/v1",
        Some(Credential::Bearer("x".into())),
    );
    let error = upstream
        .send(
            "http://169.254.169.254/v1",
            &RequestSpec::get("operations".into()),
        )
        .await
        .expect_err("refused");
    assert!(matches!(error, UpstreamError::Refused(_)), "{error}");
    assert!(error.to_string().contains("link-local"), "{error}");
    let ready = upstream
        .ready(&Url::parse("http://169.254.169.254/v1").expect("url"))
        .await
        .expect_err("refused");
    assert!(matches!(ready, UpstreamError::Refused(_)), "{ready}");
}

#[tokio::test]
async fn private_addresses_need_the_opt_in_even_behind_a_name() {
    let root = sim().await;
    let port = Url::parse(&root).expect("url").port().expect("port");
    let by_name = format!("http://localhost:{port}/v1");
    let strict = Upstream::for_provider(
        &settings(false),
        &Url::parse(&by_name).expect("url"),
        &TlsMaterial::default(),
        None,
    )
    .expect("client");
    let error = strict
        .send(&by_name, &RequestSpec::get("operations".into()))
        .await
        .expect_err("refused after resolution");
    assert!(matches!(error, UpstreamError::Refused(_)), "{error}");
    assert!(
        error.to_string().contains("allowPrivateNetworks"),
        "{error}"
    );
    let literal = format!("{root}/v1");
    assert!(
        strict
            .send(&literal, &RequestSpec::get("operations".into()))
            .await
            .is_err()
    );
    let open = client(&by_name, None);
    assert_eq!(list(&open, &by_name).await, 200);
}

/// A test CA with a server certificate for 127.0.0.1 and a client certificate.
struct Pki {
    ca: String,
    server: (String, String),
    client: (String, String),
}

fn pki() -> Pki {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    let ca_key = KeyPair::generate().expect("key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "lro test CA");
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

/// A TLS simulator (mTLS when `client_ca`); returns its root URL.
async fn tls_sim(pki: &Pki, client_ca: bool) -> (String, tempfile::TempDir) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().expect("dir");
    let write = |name: &str, pem: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, pem).expect("write");
        path
    };
    let args = lro_sim::SimArgs {
        listen: "127.0.0.1:0".parse().expect("addr"),
        tls_cert: Some(write("server.crt", &pki.server.0)),
        tls_key: Some(write("server.key", &pki.server.1)),
        tls_client_ca: client_ca.then(|| write("ca.crt", &pki.ca)),
    };
    let acceptor = lro_sim::tls::acceptor(&args)
        .expect("tls")
        .expect("acceptor");
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(lro_sim::tls::serve(
        listener,
        acceptor,
        router(SimState::default()),
        std::future::pending(),
    ));
    (format!("https://{addr}"), dir)
}

fn tls_client(
    base: &str,
    ca: Option<&str>,
    identity: Option<&(String, String)>,
) -> Result<Upstream, BuildError> {
    let tls = TlsMaterial {
        ca_pem: ca.map(|c| c.as_bytes().to_vec()),
        identity_pem: identity
            .map(|(c, k)| SecretBox::new(Box::new(format!("{c}\n{k}").into_bytes()))),
    };
    Upstream::for_provider(&settings(true), &Url::parse(base).expect("url"), &tls, None)
}

#[tokio::test]
async fn a_ca_bundle_is_trusted_and_nothing_else() {
    let pki = pki();
    let (root, _dir) = tls_sim(&pki, false).await;
    let base = format!("{root}/v1");
    let trusted = tls_client(&base, Some(&pki.ca), None).expect("client");
    assert_eq!(list(&trusted, &base).await, 200);
    let other = pki_other_ca();
    let untrusted = tls_client(&base, Some(&other), None).expect("client");
    let error = untrusted
        .send(&base, &RequestSpec::get("operations".into()))
        .await
        .expect_err("unknown CA");
    assert!(matches!(error, UpstreamError::Transport { .. }), "{error}");
    assert!(matches!(
        tls_client(&base, Some("not a pem"), None),
        Err(BuildError::CaBundle(_))
    ));
}

fn pki_other_ca() -> String {
    pki().ca
}

#[tokio::test]
async fn mutual_tls_needs_the_client_certificate() {
    let pki = pki();
    let (root, _dir) = tls_sim(&pki, true).await;
    let base = format!("{root}/v1");
    let with_cert = tls_client(&base, Some(&pki.ca), Some(&pki.client)).expect("client");
    assert_eq!(list(&with_cert, &base).await, 200);
    let without = tls_client(&base, Some(&pki.ca), None).expect("client");
    assert!(
        without
            .send(&base, &RequestSpec::get("operations".into()))
            .await
            .is_err()
    );
    let broken = (pki.client.0.clone(), "garbage".to_owned());
    assert!(matches!(
        tls_client(&base, Some(&pki.ca), Some(&broken)),
        Err(BuildError::ClientCertificate(_))
    ));
}
