//! Tests of the workload identity endpoints: ServiceAccount-like tokens signed here (a fixed RSA
//! test key — `ring` cannot generate RSA keys — and fresh P-256 keys), exchanged over HTTP with
//! a simulator on 127.0.0.1:0, and the issued credentials used on protocol routes.

use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use reqwest::StatusCode;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair as _, RsaKeyPair};
use serde_json::{Value, json};

use super::{Failure, load, verify};
use crate::{SimState, router};

const ISSUER: &str = "https://127.0.0.1:6443/";
const SUBJECT: &str = "system:serviceaccount:team-a:lro";
const OTHER_SUBJECT: &str = "system:serviceaccount:team-b:other";
const UNTRUSTED: &str = "system:serviceaccount:team-c:intruder";
const GOOGLE_AUD: &str =
    "//iam.googleapis.com/projects/123/locations/global/workloadIdentityPools/pool/providers/prov";
const SA_EMAIL: &str = "lro@proj.iam.gserviceaccount.com";
const OTHER_EMAIL: &str = "admin@proj.iam.gserviceaccount.com";
const ROLE: &str = "arn:aws:iam::123456789012:role/lro";
const OTHER_ROLE: &str = "arn:aws:iam::123456789012:role/other";
const TENANT: &str = "00000000-0000-0000-0000-000000000001";
const CLIENT: &str = "11111111-1111-1111-1111-111111111111";
const OTHER_CLIENT: &str = "22222222-2222-2222-2222-222222222222";
/// A 2048-bit RSA key made with `openssl genpkey` for these tests only.
const RSA_PEM: &str = include_str!("../testdata/workload-identity-rsa.pem");

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// The "API server": its signing keys and JWKS.
struct Issuer {
    rsa: RsaKeyPair,
    ec: EcdsaKeyPair,
    /// A key that is not in the JWKS.
    foreign: EcdsaKeyPair,
}

fn ec_key() -> EcdsaKeyPair {
    let rng = SystemRandom::new();
    let alg = &signature::ECDSA_P256_SHA256_FIXED_SIGNING;
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap();
    EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).unwrap()
}

impl Issuer {
    fn new() -> Issuer {
        let body: String = RSA_PEM
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect();
        let der = STANDARD.decode(body).unwrap();
        Issuer {
            rsa: RsaKeyPair::from_pkcs8(&der).unwrap(),
            ec: ec_key(),
            foreign: ec_key(),
        }
    }

    fn jwks(&self) -> Value {
        let rsa = signature::RsaPublicKeyComponents::<Vec<u8>>::from(self.rsa.public());
        let point = self.ec.public_key().as_ref();
        json!({"keys": [
            {"use": "sig", "kty": "RSA", "kid": "rsa-1", "alg": "RS256", "n": b64(&rsa.n), "e": b64(&rsa.e)},
            {"use": "sig", "kty": "EC", "kid": "ec-1", "alg": "ES256", "crv": "P-256",
             "x": b64(&point[1..33]), "y": b64(&point[33..])},
        ]})
    }

    fn rs256(&self, claims: &Value) -> String {
        let input = signing_input(&json!({"alg": "RS256", "kid": "rsa-1"}), claims);
        let mut sig = vec![0; self.rsa.public().modulus_len()];
        self.rsa
            .sign(
                &signature::RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                input.as_bytes(),
                &mut sig,
            )
            .unwrap();
        format!("{input}.{}", b64(&sig))
    }

    fn es256_with(key: &EcdsaKeyPair, claims: &Value) -> String {
        let input = signing_input(&json!({"alg": "ES256", "kid": "ec-1"}), claims);
        let sig = key.sign(&SystemRandom::new(), input.as_bytes()).unwrap();
        format!("{input}.{}", b64(sig.as_ref()))
    }
}

fn signing_input(header: &Value, claims: &Value) -> String {
    format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    )
}

/// Claims as a kube-apiserver TokenRequest writes them.
fn claims(sub: &str, aud: &[&str]) -> Value {
    let now = now();
    json!({
        "aud": aud, "exp": now + 600, "iat": now, "nbf": now, "iss": ISSUER, "sub": sub,
        "jti": "5f0b8a7e-0000-4000-8000-000000000000",
        "kubernetes.io": {"namespace": "team-a", "serviceaccount": {"name": "lro", "uid": "u-1"}},
    })
}

fn with(mut claims: Value, key: &str, value: Value) -> Value {
    claims[key] = value;
    claims
}

fn config(issuer: &Issuer, ttl: u64) -> Value {
    json!({
        "issuer": ISSUER,
        "jwks": issuer.jwks(),
        "tokenTtlSeconds": ttl,
        "trust": [
            {"subject": SUBJECT, "google": {"audience": GOOGLE_AUD, "serviceAccounts": [SA_EMAIL]}},
            {"subject": SUBJECT, "aws": {"roleArn": ROLE}},
            {"subject": SUBJECT, "azure": {"tenantId": TENANT, "clientId": CLIENT}},
            {"subject": OTHER_SUBJECT, "aws": {"roleArn": OTHER_ROLE},
             "azure": {"tenantId": TENANT, "clientId": OTHER_CLIENT}},
        ],
    })
}

struct Sim {
    base: String,
    http: reqwest::Client,
}

impl Sim {
    async fn start() -> Sim {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(axum::serve(listener, router(SimState::default())).into_future());
        Sim {
            base: format!("http://{addr}"),
            http: reqwest::Client::new(),
        }
    }

    async fn json(&self, req: reqwest::RequestBuilder) -> (StatusCode, Value) {
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn post_json(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.json(self.http.post(format!("{}{path}", self.base)).json(&body))
            .await
    }

    async fn post_form(&self, path: &str, form: &[(&str, &str)]) -> (StatusCode, Value) {
        self.json(self.http.post(format!("{}{path}", self.base)).form(form))
            .await
    }

    async fn get(&self, path: &str, bearer: Option<&str>) -> (StatusCode, Value) {
        let mut req = self.http.get(format!("{}{path}", self.base));
        if let Some(token) = bearer {
            req = req.bearer_auth(token);
        }
        self.json(req).await
    }

    async fn identity_stats(&self) -> Value {
        self.get("/sim/identity/stats", None).await.1
    }

    async fn auth_stats(&self) -> Value {
        self.get("/sim/auth/stats", None).await.1
    }

    async fn configure(&self, config: Value) {
        let (status, body) = self.post_json("/sim/identity", config).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }

    /// Makes protocol routes require credentials.
    async fn enforce_auth(&self) {
        let (status, _) = self
            .post_json(
                "/sim/auth",
                json!({"bearerTokens": [{"id": "static", "token": "static-token"}]}),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
    }

    async fn google_sts(&self, token: &str, audience: &str) -> (StatusCode, Value) {
        self.post_form(
            "/google-sts/v1/token",
            &[
                (
                    "grant_type",
                    "urn:ietf:params:oauth:grant-type:token-exchange",
                ),
                ("audience", audience),
                ("scope", "https://www.googleapis.com/auth/cloud-platform"),
                (
                    "requested_token_type",
                    "urn:ietf:params:oauth:token-type:access_token",
                ),
                ("subject_token", token),
                ("subject_token_type", "urn:ietf:params:oauth:token-type:jwt"),
            ],
        )
        .await
    }

    async fn generate_access_token(&self, bearer: &str, email: &str) -> (StatusCode, Value) {
        let url = format!(
            "{}/google-iam/v1/projects/-/serviceAccounts/{email}:generateAccessToken",
            self.base
        );
        let body = json!({"scope": ["https://www.googleapis.com/auth/cloud-platform"], "lifetime": "3600s"});
        self.json(self.http.post(url).bearer_auth(bearer).json(&body))
            .await
    }

    async fn aws_sts(&self, token: &str, role: &str, duration: &str) -> (StatusCode, String) {
        let (status, body) = self
            .post_form(
                "/aws-sts/",
                &[
                    ("Action", "AssumeRoleWithWebIdentity"),
                    ("Version", "2011-06-15"),
                    ("RoleArn", role),
                    ("RoleSessionName", "lro-operator"),
                    ("WebIdentityToken", token),
                    ("DurationSeconds", duration),
                ],
            )
            .await;
        (status, body.as_str().unwrap_or_default().to_owned())
    }

    async fn azure(&self, tenant: &str, client: &str, token: &str) -> (StatusCode, Value) {
        self.post_form(
            &format!("/azure-login/{tenant}/oauth2/v2.0/token"),
            &[
                ("grant_type", "client_credentials"),
                ("client_id", client),
                ("scope", "https://management.azure.com/.default"),
                (
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                ),
                ("client_assertion", token),
            ],
        )
        .await
    }
}

/// The text of the first `<name>` element of `xml`.
fn tag(xml: &str, name: &str) -> String {
    let open = format!("<{name}>");
    let start = xml.find(&open).map(|i| i + open.len());
    let end = xml.find(&format!("</{name}>"));
    match (start, end) {
        (Some(s), Some(e)) if s <= e => xml[s..e].to_owned(),
        _ => panic!("no <{name}> in {xml}"),
    }
}

#[tokio::test]
async fn every_exchange_is_refused_until_configured_and_bad_configs_are_400() {
    let sim = Sim::start().await;
    let issuer = Issuer::new();
    let token = issuer.rs256(&claims(SUBJECT, &[GOOGLE_AUD]));
    let (status, body) = sim.google_sts(&token, GOOGLE_AUD).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "invalid_target", "{body}");
    let (status, xml) = sim.aws_sts(&token, ROLE, "3600").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(tag(&xml, "Code"), "InvalidIdentityToken");
    assert!(tag(&xml, "Message").contains(ISSUER), "{xml}");
    let (status, body) = sim.azure(TENANT, CLIENT, &token).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error_codes"], json!([90002]), "{body}");
    let stats = sim.identity_stats().await;
    assert_eq!(stats["configured"], false);
    assert_eq!(stats["rejected"]["notConfigured"], 3, "{stats}");
    assert_eq!(stats["exchanges"]["google"], 0);

    for bad in [
        json!({"issuer": ISSUER, "jwks": {"keys": []}}),
        json!({"issuer": ISSUER, "jwks": issuer.jwks(), "tokenTtlSeconds": 0}),
        json!({"issuer": ISSUER, "jwks": issuer.jwks(), "trust": [{"subject": SUBJECT}]}),
        json!({"issuer": ISSUER, "jwks": issuer.jwks(), "trust": [{"subject": SUBJECT, "aws": {"roleArn": "lro"}}]}),
        json!({"issuer": ISSUER, "jwks": issuer.jwks(), "typo": 1}),
    ] {
        let (status, _) = sim.post_json("/sim/identity", bad.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
    }
}

#[tokio::test]
async fn google_sts_verifies_the_service_account_token() {
    let sim = Sim::start().await;
    let issuer = Issuer::new();
    sim.configure(config(&issuer, 3600)).await;

    let good = issuer.rs256(&claims(SUBJECT, &[GOOGLE_AUD]));
    let (status, body) = sim.google_sts(&good, GOOGLE_AUD).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["issued_token_type"],
        "urn:ietf:params:oauth:token-type:access_token"
    );
    assert_eq!(body["token_type"], "Bearer");
    let expires_in = body["expires_in"].as_u64().unwrap();
    assert!(
        (590..=600).contains(&expires_in),
        "capped by the token's exp: {body}"
    );
    assert!(
        body["access_token"]
            .as_str()
            .unwrap()
            .starts_with("sim-sts-")
    );

    // ES256, an `https:` audience, and a JSON body are accepted too.
    let es = Issuer::es256_with(
        &issuer.ec,
        &claims(SUBJECT, &[&format!("https:{GOOGLE_AUD}")]),
    );
    let (status, body) = sim
        .post_json(
            "/google-sts/v1/token",
            json!({
                "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
                "audience": GOOGLE_AUD,
                "scope": "https://www.googleapis.com/auth/cloud-platform",
                "requested_token_type": "urn:ietf:params:oauth:token-type:access_token",
                "subject_token": es,
                "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
            }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // One character in the middle of the signature changed (the last one may carry padding bits).
    let at = good.len() - 20;
    let flipped = if &good[at..=at] == "A" { "B" } else { "A" };
    let tampered = format!("{}{flipped}{}", &good[..at], &good[at + 1..]);
    let base = claims(SUBJECT, &[GOOGLE_AUD]);
    let cases: Vec<(&str, String, &str, &str)> = vec![
        ("badSignature", tampered, "invalid_grant", "signature"),
        (
            "badSignature",
            Issuer::es256_with(&issuer.foreign, &base),
            "invalid_grant",
            "signature",
        ),
        (
            "wrongIssuer",
            issuer.rs256(&with(base.clone(), "iss", json!("https://evil.example/"))),
            "invalid_grant",
            "The issuer in ID Token https://evil.example/ does not match the expected ones",
        ),
        (
            "wrongAudience",
            issuer.rs256(&claims(SUBJECT, &["sts.amazonaws.com"])),
            "invalid_grant",
            "The audience in ID Token [sts.amazonaws.com] does not match the expected audience //iam.googleapis.com/",
        ),
        (
            "expired",
            issuer.rs256(&with(base.clone(), "exp", json!(now() - 5))),
            "invalid_grant",
            "expired",
        ),
        (
            "notYetValid",
            issuer.rs256(&with(base.clone(), "iat", json!(now() + 3600))),
            "invalid_grant",
            "not valid before",
        ),
        (
            "untrustedSubject",
            issuer.rs256(&claims(UNTRUSTED, &[GOOGLE_AUD])),
            "invalid_grant",
            "The given credential is rejected by the attribute condition.",
        ),
        ("malformed", "not-a-jwt".into(), "invalid_grant", "parse"),
    ];
    for (reason, token, error, text) in &cases {
        let (status, body) = sim.google_sts(token, GOOGLE_AUD).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{reason}: {body}");
        assert_eq!(body["error"], *error, "{reason}: {body}");
        let description = body["error_description"].as_str().unwrap();
        assert!(description.contains(text), "{reason}: {description}");
    }
    let (status, body) = sim
        .google_sts(&good, "//iam.googleapis.com/projects/9/other")
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_target"))
    );
    let (status, body) = sim
        .post_form(
            "/google-sts/v1/token",
            &[("grant_type", "client_credentials")],
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "unsupported_grant_type");
    let (status, body) = sim
        .post_form(
            "/google-sts/v1/token",
            &[
                (
                    "grant_type",
                    "urn:ietf:params:oauth:grant-type:token-exchange",
                ),
                ("audience", GOOGLE_AUD),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "invalid_request");

    let stats = sim.identity_stats().await;
    assert_eq!(stats["exchanges"]["google"], 2, "{stats}");
    assert_eq!(
        stats["exchangesByCredential"][format!("identity:google:{SUBJECT}")],
        2
    );
    for (reason, count) in [
        ("badSignature", 2),
        ("wrongIssuer", 1),
        ("wrongAudience", 1),
        ("expired", 1),
        ("notYetValid", 1),
        ("untrustedSubject", 1),
        ("malformed", 1),
        ("unknownProvider", 1),
        ("unsupportedGrantType", 1),
        ("invalidRequest", 1),
    ] {
        assert_eq!(stats["rejected"][reason], count, "{reason}: {stats}");
    }
    assert_eq!(stats["rejectedByCloud"]["google"], 11);
}

#[tokio::test]
async fn impersonation_needs_a_live_sts_token_and_a_trusted_service_account() {
    let sim = Sim::start().await;
    let issuer = Issuer::new();
    sim.configure(config(&issuer, 3600)).await;
    let (_, body) = sim
        .google_sts(&issuer.rs256(&claims(SUBJECT, &[GOOGLE_AUD])), GOOGLE_AUD)
        .await;
    let sts = body["access_token"].as_str().unwrap().to_owned();

    let (status, body) = sim.generate_access_token(&sts, SA_EMAIL).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        body["accessToken"]
            .as_str()
            .unwrap()
            .starts_with("sim-iam-")
    );
    let expire: jiff::Timestamp = body["expireTime"].as_str().unwrap().parse().unwrap();
    let left = expire.as_second() - now();
    assert!((3590..=3600).contains(&left), "{body}");

    let (status, body) = sim.generate_access_token(&sts, OTHER_EMAIL).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"]["status"], "PERMISSION_DENIED");
    assert_eq!(body["error"]["code"], 403);
    assert_eq!(
        body["error"]["message"],
        "Permission 'iam.serviceAccounts.getAccessToken' denied on resource (or it may not exist)."
    );
    assert_eq!(
        body["error"]["details"][0]["reason"],
        "IAM_PERMISSION_DENIED"
    );

    for bearer in ["sim-sts-unknown", "static-token"] {
        let (status, body) = sim.generate_access_token(bearer, SA_EMAIL).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
        assert_eq!(body["error"]["status"], "UNAUTHENTICATED");
    }
    let stats = sim.identity_stats().await;
    assert_eq!(stats["exchanges"]["googleImpersonation"], 1, "{stats}");
    assert_eq!(stats["rejected"]["permissionDenied"], 1);
    assert_eq!(stats["rejected"]["badBearer"], 2);
}

#[tokio::test]
async fn issued_bearer_tokens_work_on_protocol_routes_until_they_expire() {
    let sim = Sim::start().await;
    let issuer = Issuer::new();
    sim.enforce_auth().await;
    sim.configure(config(&issuer, 2)).await;

    let (_, body) = sim
        .google_sts(&issuer.rs256(&claims(SUBJECT, &[GOOGLE_AUD])), GOOGLE_AUD)
        .await;
    assert_eq!(body["expires_in"], 2, "{body}");
    let sts = body["access_token"].as_str().unwrap().to_owned();
    let (status, body) = sim.generate_access_token(&sts, SA_EMAIL).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let impersonated = body["accessToken"].as_str().unwrap().to_owned();
    let (status, body) = sim
        .azure(
            TENANT,
            CLIENT,
            &issuer.rs256(&claims(SUBJECT, &["api://AzureADTokenExchange"])),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let azure = body["access_token"].as_str().unwrap().to_owned();

    let google_path = "/v1/projects/p/operations/op-unknown";
    let azure_path = "/azure/subscriptions/s/providers/Microsoft.Sim/locations/l/operationStatuses/x?api-version=2023-01-01";
    let (status, _) = sim.get(google_path, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "credentials are required");
    for (path, token) in [
        (google_path, &sts),
        (google_path, &impersonated),
        (azure_path, &azure),
    ] {
        let (status, body) = sim.get(path, Some(token)).await;
        assert_ne!(status, StatusCode::UNAUTHORIZED, "{path}: {body}");
    }
    let stats = sim.auth_stats().await;
    for cloud in ["google", "googleImpersonation", "azure"] {
        assert_eq!(
            stats["accepted"][format!("identity:{cloud}:{SUBJECT}")],
            1,
            "{cloud}: {stats}"
        );
    }

    // Reconfiguring /sim/auth keeps them; expiry ends them.
    sim.enforce_auth().await;
    tokio::time::sleep(Duration::from_millis(2300)).await;
    for (path, token) in [
        (google_path, &sts),
        (google_path, &impersonated),
        (azure_path, &azure),
    ] {
        let (status, body) = sim.get(path, Some(token)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}: {body}");
    }
    assert_eq!(sim.auth_stats().await["rejected"]["expired"], 3);
    let (status, _) = sim.generate_access_token(&sts, SA_EMAIL).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "an expired STS token");
}

fn cloud_control_request(
    sim: &Sim,
    keys: &lro_operator::upstream::sigv4::AwsKeys,
) -> reqwest::Request {
    let mut request = sim
        .http
        .post(format!("{}/aws/", sim.base))
        .header("x-amz-target", "CloudApiService.GetResourceRequestStatus")
        .header("content-type", "application/x-amz-json-1.0")
        .body(r#"{"RequestToken": "unknown"}"#)
        .build()
        .unwrap();
    lro_operator::upstream::sigv4::sign(&mut request, keys, SystemTime::now()).unwrap();
    request
}

#[tokio::test]
async fn aws_assume_role_with_web_identity_issues_credentials_sigv4_accepts() {
    let sim = Sim::start().await;
    let issuer = Issuer::new();
    sim.enforce_auth().await;
    sim.configure(config(&issuer, 2)).await;
    let token = issuer.rs256(&claims(SUBJECT, &["sts.amazonaws.com"]));

    let (status, xml) = sim.aws_sts(&token, ROLE, "900").await;
    assert_eq!(status, StatusCode::OK, "{xml}");
    assert!(xml.starts_with(
        "<AssumeRoleWithWebIdentityResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">"
    ));
    assert_eq!(tag(&xml, "SubjectFromWebIdentityToken"), SUBJECT);
    assert_eq!(tag(&xml, "Audience"), "sts.amazonaws.com");
    assert_eq!(
        tag(&xml, "Arn"),
        "arn:aws:sts::123456789012:assumed-role/lro/lro-operator"
    );
    assert!(tag(&xml, "AssumedRoleId").starts_with("AROA"));
    assert!(tag(&xml, "AssumedRoleId").ends_with(":lro-operator"));
    assert_eq!(
        tag(&xml, "Provider"),
        "arn:aws:iam::123456789012:oidc-provider/127.0.0.1:6443"
    );
    assert!(!tag(&xml, "RequestId").is_empty());
    let expiration: jiff::Timestamp = tag(&xml, "Expiration").parse().unwrap();
    assert!(
        expiration.as_second() - now() <= 2,
        "min(DurationSeconds, tokenTtlSeconds): {xml}"
    );
    let access_key_id = tag(&xml, "AccessKeyId");
    assert!(access_key_id.starts_with("ASIA") && access_key_id.len() == 20);
    let keys = |session: bool| lro_operator::upstream::sigv4::AwsKeys {
        access_key_id: access_key_id.clone().into(),
        secret_access_key: tag(&xml, "SecretAccessKey").into(),
        session_token: session.then(|| tag(&xml, "SessionToken").into()),
        region: "us-east-1".into(),
        service: "cloudcontrolapi".into(),
    };

    let response = sim
        .http
        .execute(cloud_control_request(&sim, &keys(true)))
        .await
        .unwrap();
    assert_ne!(response.status(), StatusCode::UNAUTHORIZED);
    let response = sim
        .http
        .execute(cloud_control_request(&sim, &keys(false)))
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        StatusCode::UNAUTHORIZED,
        "no session token"
    );
    let stats = sim.auth_stats().await;
    assert_eq!(
        stats["accepted"][format!("identity:aws:{SUBJECT}")],
        1,
        "{stats}"
    );
    tokio::time::sleep(Duration::from_millis(2300)).await;
    let response = sim
        .http
        .execute(cloud_control_request(&sim, &keys(true)))
        .await
        .unwrap();
    // As AWS answers: 403 ExpiredTokenException.
    assert_eq!(response.status(), StatusCode::FORBIDDEN, "expired");
    assert_eq!(
        response.headers()["x-amzn-ErrorType"],
        "ExpiredTokenException"
    );
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["__type"], "ExpiredTokenException");
    assert_eq!(sim.auth_stats().await["rejected"]["expired"], 1);

    // The same exchange as a GET query.
    let query: String = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs([
            ("Action", "AssumeRoleWithWebIdentity"),
            ("Version", "2011-06-15"),
            ("RoleArn", ROLE),
            ("RoleSessionName", "s1"),
            ("WebIdentityToken", &token),
        ])
        .finish();
    let (status, body) = sim.get(&format!("/aws-sts/?{query}"), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let base = claims(SUBJECT, &["sts.amazonaws.com"]);
    let cases = [
        (
            issuer.rs256(&claims(SUBJECT, &["api://AzureADTokenExchange"])),
            ROLE,
            "3600",
            StatusCode::BAD_REQUEST,
            "InvalidIdentityToken",
            "Incorrect token audience",
        ),
        (
            issuer.rs256(&with(base.clone(), "exp", json!(now() - 5))),
            ROLE,
            "3600",
            StatusCode::BAD_REQUEST,
            "ExpiredTokenException",
            "Token expired",
        ),
        (
            issuer.rs256(&with(base.clone(), "iss", json!("https://evil.example"))),
            ROLE,
            "3600",
            StatusCode::BAD_REQUEST,
            "InvalidIdentityToken",
            "No OpenIDConnect provider found in your account for https://evil.example",
        ),
        (
            Issuer::es256_with(&issuer.foreign, &base),
            ROLE,
            "3600",
            StatusCode::BAD_REQUEST,
            "InvalidIdentityToken",
            "could not be validated",
        ),
        (
            token.clone(),
            OTHER_ROLE,
            "3600",
            StatusCode::FORBIDDEN,
            "AccessDenied",
            "Not authorized to perform sts:AssumeRoleWithWebIdentity",
        ),
        (
            issuer.rs256(&claims(UNTRUSTED, &["sts.amazonaws.com"])),
            ROLE,
            "3600",
            StatusCode::FORBIDDEN,
            "AccessDenied",
            "Not authorized",
        ),
        (
            token.clone(),
            ROLE,
            "100",
            StatusCode::BAD_REQUEST,
            "ValidationError",
            "greater than or equal to 900",
        ),
        (
            token.clone(),
            ROLE,
            "43201",
            StatusCode::BAD_REQUEST,
            "ValidationError",
            "less than or equal to 43200",
        ),
    ];
    for (token, role, duration, status, code, text) in &cases {
        let (got, xml) = sim.aws_sts(token, role, duration).await;
        assert_eq!(got, *status, "{code}: {xml}");
        assert!(
            xml.starts_with("<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">")
        );
        assert_eq!(tag(&xml, "Type"), "Sender");
        assert_eq!(tag(&xml, "Code"), *code, "{xml}");
        assert!(tag(&xml, "Message").contains(text), "{xml}");
        assert!(!tag(&xml, "RequestId").is_empty());
    }
    let stats = sim.identity_stats().await;
    assert_eq!(stats["exchanges"]["aws"], 2, "{stats}");
    for (reason, count) in [
        ("wrongAudience", 1),
        ("expired", 1),
        ("wrongIssuer", 1),
        ("badSignature", 1),
        ("wrongRole", 1),
        ("untrustedSubject", 1),
        ("invalidRequest", 2),
    ] {
        assert_eq!(stats["rejected"][reason], count, "{reason}: {stats}");
    }
}

#[tokio::test]
async fn azure_client_assertion_flow_verifies_the_token() {
    let sim = Sim::start().await;
    let issuer = Issuer::new();
    sim.configure(config(&issuer, 3600)).await;
    let aud = "api://AzureADTokenExchange";
    let good = issuer.rs256(&claims(SUBJECT, &[aud]));
    let (status, body) = sim.azure(TENANT, CLIENT, &good).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3600);
    assert_eq!(body["ext_expires_in"], 3600);
    assert!(
        body["access_token"]
            .as_str()
            .unwrap()
            .starts_with("sim-aad-")
    );

    let base = claims(SUBJECT, &[aud]);
    let cases = [
        (
            TENANT,
            CLIENT,
            issuer.rs256(&claims(UNTRUSTED, &[aud])),
            401,
            "invalid_client",
            700213,
        ),
        // Trusted, but for another application.
        (
            TENANT,
            OTHER_CLIENT,
            good.clone(),
            401,
            "invalid_client",
            700213,
        ),
        (
            TENANT,
            CLIENT,
            issuer.rs256(&claims(SUBJECT, &[GOOGLE_AUD])),
            401,
            "invalid_client",
            700212,
        ),
        (
            TENANT,
            CLIENT,
            issuer.rs256(&with(base.clone(), "iss", json!("https://evil.example/"))),
            401,
            "invalid_client",
            700211,
        ),
        (
            TENANT,
            CLIENT,
            issuer.rs256(&with(base.clone(), "exp", json!(now() - 1))),
            401,
            "invalid_client",
            700024,
        ),
        (
            TENANT,
            CLIENT,
            Issuer::es256_with(&issuer.foreign, &base),
            401,
            "invalid_client",
            50013,
        ),
        (
            TENANT,
            CLIENT,
            "x.y.z".to_owned(),
            400,
            "invalid_request",
            50027,
        ),
        (
            "99999999-0000-0000-0000-000000000000",
            CLIENT,
            good.clone(),
            400,
            "invalid_request",
            90002,
        ),
        (
            TENANT,
            "33333333-3333-3333-3333-333333333333",
            good.clone(),
            400,
            "unauthorized_client",
            700016,
        ),
    ];
    for (tenant, client, token, status, error, code) in &cases {
        let (got, body) = sim.azure(tenant, client, token).await;
        assert_eq!(got.as_u16(), *status, "{code}: {body}");
        assert_eq!(body["error"], *error, "{code}: {body}");
        assert_eq!(body["error_codes"], json!([code]), "{body}");
        let description = body["error_description"].as_str().unwrap();
        assert!(
            description.starts_with(&format!("AADSTS{code}: ")),
            "{description}"
        );
        assert!(description.contains("Trace ID: "), "{description}");
        for field in ["timestamp", "trace_id", "correlation_id"] {
            assert!(
                body[field].as_str().is_some_and(|v| !v.is_empty()),
                "{field}: {body}"
            );
        }
    }
    let (_, body) = sim
        .azure(TENANT, CLIENT, &issuer.rs256(&claims(UNTRUSTED, &[aud])))
        .await;
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains(&format!("presented assertion subject '{UNTRUSTED}'")),
        "{body}"
    );
    let (status, body) = sim
        .post_form(
            &format!("/azure-login/{TENANT}/oauth2/v2.0/token"),
            &[
                ("grant_type", "client_credentials"),
                ("client_id", CLIENT),
                ("scope", "https://management.azure.com/user_impersonation"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "invalid_scope");
    let stats = sim.identity_stats().await;
    assert_eq!(stats["exchanges"]["azure"], 1, "{stats}");
    assert_eq!(stats["rejected"]["untrustedSubject"], 3);
    assert_eq!(stats["rejected"]["unknownTenant"], 1);
    assert_eq!(stats["rejected"]["unknownClient"], 1);
    assert_eq!(stats["rejectedByCloud"]["azure"], 11);
}

#[test]
fn verification_picks_keys_by_kid_and_alg_and_rejects_unsigned_tokens() {
    let issuer = Issuer::new();
    let config = load(serde_json::from_value(config(&issuer, 60)).unwrap()).unwrap();
    let claims = claims(SUBJECT, &["a"]);
    let any = |_: &str| true;
    let now = now();
    let ok = issuer.rs256(&claims);
    assert_eq!(verify(&config, &ok, &any, now).unwrap().sub, SUBJECT);
    // No kid: every key of the type is tried.
    let input = signing_input(&json!({"alg": "ES256"}), &claims);
    let sig = issuer
        .ec
        .sign(&SystemRandom::new(), input.as_bytes())
        .unwrap();
    let no_kid = format!("{input}.{}", b64(sig.as_ref()));
    assert!(verify(&config, &no_kid, &any, now).is_ok());
    // An unknown kid, and `alg: none`.
    let input = signing_input(&json!({"alg": "ES256", "kid": "nope"}), &claims);
    let unknown = format!("{input}.{}", b64(sig.as_ref()));
    assert_eq!(
        verify(&config, &unknown, &any, now).unwrap_err(),
        Failure::KeyNotFound
    );
    let none = format!("{}.", signing_input(&json!({"alg": "none"}), &claims));
    assert_eq!(
        verify(&config, &none, &any, now).unwrap_err().reason(),
        "badSignature"
    );
    // An RS256 header over an EC signature: the RSA key does not verify it.
    let parts: Vec<&str> = ok.split('.').collect();
    let swapped = format!("{}.{}.{}", parts[0], parts[1], b64(sig.as_ref()));
    assert_eq!(
        verify(&config, &swapped, &any, now).unwrap_err(),
        Failure::BadSignature
    );
    // The audience check is the caller's.
    assert!(matches!(
        verify(&config, &ok, &|a| a == "b", now),
        Err(Failure::WrongAudience(aud)) if aud == ["a"]
    ));
    // A small clock skew is tolerated for iat/nbf, none for exp.
    let soon = issuer.rs256(&with(claims.clone(), "iat", json!(now + 10)));
    assert!(verify(&config, &soon, &any, now).is_ok());
    let at_exp = claims["exp"].as_i64().unwrap();
    assert!(matches!(
        verify(&config, &ok, &any, at_exp),
        Err(Failure::Expired { .. })
    ));
}
