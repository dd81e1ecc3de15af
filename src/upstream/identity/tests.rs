use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde_json::{Value, json};

use super::*;
use crate::upstream::auth::{Authenticator, Credential, TokenBody};

// ------------------------------------------------------------------------------ fixtures

fn fixtures() -> Vec<(String, Value)> {
    let dir: PathBuf =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/upstream/identity");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("tests/fixtures/upstream/identity")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).expect("readable");
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let value =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: not JSON: {e}"));
            (name, value)
        })
        .collect()
}

fn spec_of(fixture: &Value) -> api::WorkloadIdentity {
    serde_json::from_value(fixture["spec"].clone()).expect("a workloadIdentity spec")
}

fn form_of(expected: &Value) -> Vec<(String, String)> {
    expected
        .as_array()
        .into_iter()
        .flatten()
        .map(|pair| {
            (
                pair[0].as_str().unwrap_or_default().to_owned(),
                pair[1].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// Checks a request fixture; returns what is wrong.
fn check_request(fixture: &Value) -> Vec<String> {
    let mut wrong = Vec::new();
    let cloud = match Cloud::from_spec(&spec_of(fixture)) {
        Ok(cloud) => cloud,
        Err(e) => return vec![format!("spec refused: {e}")],
    };
    let expect = &fixture["expect"];
    if let Some(audience) = expect["audience"].as_str()
        && cloud.audience() != audience
    {
        wrong.push(format!("audience {:?}, not {audience:?}", cloud.audience()));
    }
    let subject = fixture["subjectToken"].as_str().unwrap_or_default();
    let (url, form, body) = match (fixture["request"].as_str(), &cloud) {
        (Some("googleSts"), Cloud::Google(g)) => {
            (g.token_url.clone(), google_sts_form(g, subject), None)
        }
        (Some("generateAccessToken"), Cloud::Google(g)) => {
            let email = g.service_account.clone().unwrap_or_default();
            let url = generate_access_token_url(g, &email).expect("url");
            (url, Vec::new(), Some(generate_access_token_body(g)))
        }
        (Some("aws"), Cloud::Aws(a)) => (a.sts_url.clone(), aws_form(a, subject), None),
        (Some("azure"), Cloud::Azure(z)) => (z.token_url.clone(), azure_form(z, subject), None),
        (kind, _) => return vec![format!("unknown request {kind:?} for {}", cloud.name())],
    };
    if expect["url"].as_str() != Some(url.as_str()) {
        wrong.push(format!("url {url}, not {}", expect["url"]));
    }
    if expect.get("form").is_some() && form != form_of(&expect["form"]) {
        wrong.push(format!("form {form:?}, not {}", expect["form"]));
    }
    if let Some(json) = expect.get("json")
        && body.as_ref() != Some(json)
    {
        wrong.push(format!("body {body:?}, not {json}"));
    }
    wrong
}

/// What an answer gave: named values and the lifetime.
type Read = (Vec<(&'static str, String)>, Option<Duration>);

/// Checks an answer fixture; returns what is wrong.
fn check_answer(fixture: &Value) -> Vec<String> {
    let answer = &fixture["answer"];
    let status = answer["status"]
        .as_u64()
        .and_then(|s| u16::try_from(s).ok());
    let Some(status) = status else {
        return vec!["answer.status is missing".into()];
    };
    let body = match (&answer["bodyText"], &answer["body"]) {
        (Value::String(text), _) => text.clone().into_bytes(),
        (_, body) => serde_json::to_vec(body).unwrap_or_default(),
    };
    let now = fixture["now"]
        .as_str()
        .and_then(|t| t.parse::<jiff::Timestamp>().ok())
        .map(SystemTime::from)
        .unwrap_or_else(SystemTime::now);
    let read: Result<Read, Refusal> = match fixture["exchange"].as_str() {
        Some("googleSts") => read_google_sts(status, &body)
            .map(|(t, l)| (vec![("token", t.expose_secret().to_owned())], l)),
        Some("generateAccessToken") => read_generate_access_token(status, &body, now)
            .map(|(t, l)| (vec![("token", t.expose_secret().to_owned())], l)),
        Some("azure") => read_azure(status, &body)
            .map(|(t, l)| (vec![("token", t.expose_secret().to_owned())], l)),
        Some("aws") => {
            read_aws(status, &body, now, "us-east-1", "cloudcontrolapi").map(|(keys, l)| {
                let session = keys
                    .session_token
                    .as_ref()
                    .map(|t| t.expose_secret().to_owned())
                    .unwrap_or_default();
                (
                    vec![
                        ("accessKeyId", keys.access_key_id.expose_secret().to_owned()),
                        (
                            "secretAccessKey",
                            keys.secret_access_key.expose_secret().to_owned(),
                        ),
                        ("sessionToken", session),
                    ],
                    l,
                )
            })
        }
        other => return vec![format!("unknown exchange {other:?}")],
    };
    let expect = &fixture["expect"];
    let mut wrong = Vec::new();
    match (read, expect.get("refused")) {
        (Ok((values, lifetime)), None) => {
            for (field, value) in values {
                if expect[field].as_str() != Some(value.as_str()) {
                    wrong.push(format!("{field} {value:?}, not {}", expect[field]));
                }
            }
            let seconds = lifetime.map(|l| l.as_secs());
            if expect.get("lifetimeSeconds").is_some()
                && seconds != expect["lifetimeSeconds"].as_u64()
            {
                wrong.push(format!(
                    "lifetime {seconds:?} s, not {}",
                    expect["lifetimeSeconds"]
                ));
            }
        }
        (Ok(_), Some(_)) => wrong.push("read as a success, the reference says refused".into()),
        (Err(refusal), None) => wrong.push(format!("refused ({refusal}), expected a success")),
        (Err(refusal), Some(refused)) => {
            if refused["status"].as_u64() != Some(u64::from(refusal.status)) {
                wrong.push(format!(
                    "status {}, not {}",
                    refusal.status, refused["status"]
                ));
            }
            if refused["code"].as_str() != refusal.code.as_deref() {
                wrong.push(format!("code {:?}, not {}", refusal.code, refused["code"]));
            }
            let shown = refusal.to_string();
            for needle in refused["messageContains"].as_array().into_iter().flatten() {
                let needle = needle.as_str().unwrap_or_default();
                if !shown.contains(needle) {
                    wrong.push(format!("{shown:?} does not contain {needle:?}"));
                }
            }
            if shown.contains('\n') || shown.contains('\r') {
                wrong.push(format!("{shown:?} spans lines"));
            }
        }
    }
    wrong
}

/// Every request and answer in `tests/fixtures/upstream/identity/`, each following its cloud's
/// published reference field for field, reads as that reference says.
#[test]
fn every_identity_fixture_follows_its_reference() {
    let mut wrong = Vec::new();
    let mut kinds = std::collections::BTreeSet::new();
    for (name, fixture) in fixtures() {
        let references = fixture["reference"].as_array().map(Vec::len).unwrap_or(0);
        if references == 0 {
            wrong.push(format!("{name}: names no reference"));
        }
        let problems = if let Some(kind) = fixture["request"].as_str() {
            kinds.insert(format!("request {kind}"));
            check_request(&fixture)
        } else {
            kinds.insert(format!(
                "answer {}",
                fixture["exchange"].as_str().unwrap_or_default()
            ));
            check_answer(&fixture)
        };
        wrong.extend(problems.into_iter().map(|p| format!("{name}: {p}")));
    }
    for kind in [
        "request googleSts",
        "request generateAccessToken",
        "request aws",
        "request azure",
        "answer googleSts",
        "answer generateAccessToken",
        "answer aws",
        "answer azure",
    ] {
        if !kinds.contains(kind) {
            wrong.push(format!("no fixture for {kind}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

// ------------------------------------------------------------------------------ spec

#[test]
fn the_spec_is_resolved_with_the_clouds_defaults() {
    let spec = |v: Value| -> api::WorkloadIdentity {
        serde_json::from_value(v).expect("a workloadIdentity spec")
    };
    let google = Cloud::from_spec(&spec(
        json!({"serviceAccountName": "x", "google": {"audience": "//iam/p"}}),
    ))
    .expect("google");
    assert_eq!(google.endpoints().len(), 1, "no impersonation: STS only");
    let Cloud::Google(g) = &google else {
        panic!("{google:?}")
    };
    assert_eq!(g.token_url.as_str(), GOOGLE_STS_URL);
    assert_eq!(g.iam_credentials_url.as_str(), GOOGLE_IAM_CREDENTIALS_URL);
    assert_eq!(g.scopes, [GOOGLE_DEFAULT_SCOPE]);
    let aws = Cloud::from_spec(&spec(json!({"serviceAccountName": "x", "aws": {
        "roleArn": "arn:aws:iam::123456789012:role/lro", "region": "eu-west-1", "service": "s"}})))
    .expect("aws");
    let Cloud::Aws(a) = &aws else {
        panic!("{aws:?}")
    };
    assert_eq!(a.sts_url.as_str(), AWS_STS_URL);
    assert_eq!(a.session_name, AWS_DEFAULT_SESSION_NAME);
    assert_eq!(a.duration_seconds, None);
    assert!(!aws_form(a, "t").iter().any(|(k, _)| k == "DurationSeconds"));
    let azure = Cloud::from_spec(&spec(json!({"serviceAccountName": "x", "azure": {
        "tenantID": "contoso.onmicrosoft.com", "clientID": "c",
        "authorityURL": "https://login.microsoftonline.us/"}})))
    .expect("azure");
    let Cloud::Azure(z) = &azure else {
        panic!("{azure:?}")
    };
    assert_eq!(
        z.token_url.as_str(),
        "https://login.microsoftonline.us/contoso.onmicrosoft.com/oauth2/v2.0/token"
    );
    assert_eq!(z.scope, AZURE_DEFAULT_SCOPE);

    for (bad, says) in [
        (
            json!({"serviceAccountName": "x"}),
            "exactly one of google, aws or azure",
        ),
        (
            json!({"serviceAccountName": "x", "google": {"audience": "a"}, "azure": {"tenantID": "t", "clientID": "c"}}),
            "exactly one",
        ),
        (
            json!({"serviceAccountName": "x", "google": {"audience": "a", "tokenURL": "ftp://x"}}),
            "google.tokenURL must be an absolute http",
        ),
        (
            json!({"serviceAccountName": "x", "google": {"audience": "a", "serviceAccount": "a/b@c"}}),
            "serviceAccount must be a service account email",
        ),
        (
            json!({"serviceAccountName": "x", "aws": {"roleArn": "arn:aws:iam::1:user/u", "region": "r", "service": "s"}}),
            "roleArn must be an IAM role ARN",
        ),
        (
            json!({"serviceAccountName": "x", "aws": {"roleArn": "arn:aws:iam::123456789012:role/r", "region": "r", "service": "s", "durationSeconds": 60}}),
            "durationSeconds must be between 900 and 43200",
        ),
        (
            json!({"serviceAccountName": "x", "azure": {"tenantID": "../evil", "clientID": "c"}}),
            "tenantID must be a tenant id",
        ),
    ] {
        let error = Cloud::from_spec(&spec(bad.clone())).expect_err(&bad.to_string());
        assert!(error.contains(says), "{bad}: {error}");
    }
}

#[test]
fn the_xml_reader_finds_paths_and_decodes_entities() {
    let xml = r#"<?xml version="1.0"?><!-- c --><a:R xmlns:a="x"><B><C attr="1">one &lt;&amp;&gt; &#65;&#x42;</C><C/></B><![CDATA[]]></a:R>"#;
    assert_eq!(
        xml_text(xml, &["R", "B", "C"]).as_deref(),
        Some("one <&> AB")
    );
    assert_eq!(xml_text(xml, &["R", "C"]), None, "paths start at the root");
    assert_eq!(xml_text("<R><B/></R>", &["R", "B"]).as_deref(), Some(""));
    assert_eq!(
        xml_text("<R><B><![CDATA[a<b]]></B></R>", &["R", "B"]).as_deref(),
        Some("a<b")
    );
    assert_eq!(xml_text("not xml", &["R"]), None);
    assert_eq!(xml_text("<R><B>unterminated", &["R", "B"]), None);
    assert_eq!(unescape("a & b &bogus; &#xZZ;"), "a & b &bogus; &#xZZ;");
}

// ------------------------------------------------------------------------------ the flow

/// A ServiceAccount token source: counts requests, answers `answers` in turn (then the last).
struct FakeSource {
    audiences: Mutex<Vec<String>>,
    answers: Mutex<Vec<Result<(&'static str, u64), String>>>,
}

impl FakeSource {
    fn new(answers: Vec<Result<(&'static str, u64), String>>) -> Arc<Self> {
        Arc::new(FakeSource {
            audiences: Mutex::new(Vec::new()),
            answers: Mutex::new(answers),
        })
    }

    fn requests(&self) -> Vec<String> {
        self.audiences.lock().expect("lock").clone()
    }
}

impl ServiceAccountTokens for FakeSource {
    fn subject(&self) -> String {
        "system:serviceaccount:team-a:lro-deployer".into()
    }

    fn request(&self, audience: &str) -> BoxFuture<'_, Result<SubjectToken, String>> {
        self.audiences
            .lock()
            .expect("lock")
            .push(audience.to_owned());
        let mut answers = self.answers.lock().expect("lock");
        let next = if answers.len() > 1 {
            answers.remove(0)
        } else {
            answers
                .first()
                .cloned()
                .unwrap_or_else(|| Err("no answer".into()))
        };
        Box::pin(async move {
            next.map(|(token, seconds)| SubjectToken {
                value: SecretString::from(token),
                valid_for: Duration::from_secs(seconds),
            })
        })
    }
}

/// One call the exchange made: URL, form or JSON, bearer, accept.
#[derive(Debug)]
struct Seen {
    url: String,
    form: Vec<(String, String)>,
    json: Option<Value>,
    bearer: Option<String>,
    accept: &'static str,
}

/// Token endpoints answering `answers` in turn.
struct FakeEndpoints {
    answers: Mutex<std::vec::IntoIter<(u16, String)>>,
    seen: Mutex<Vec<Seen>>,
}

impl FakeEndpoints {
    fn new(answers: Vec<(u16, String)>) -> Self {
        FakeEndpoints {
            answers: Mutex::new(answers.into_iter()),
            seen: Mutex::new(Vec::new()),
        }
    }
}

impl TokenTransport for FakeEndpoints {
    fn call(&self, call: TokenCall) -> BoxFuture<'_, Result<(u16, Vec<u8>), String>> {
        let (form, json) = match call.body {
            TokenBody::Form(form) => (form, None),
            TokenBody::Json(json) => (Vec::new(), Some(json)),
        };
        self.seen.lock().expect("lock").push(Seen {
            url: call.url.to_string(),
            form,
            json,
            bearer: call.bearer.map(|b| b.expose_secret().to_owned()),
            accept: call.accept,
        });
        let next = self.answers.lock().expect("lock").next();
        Box::pin(async move {
            let (status, body) = next.ok_or("no more answers")?;
            Ok((status, body.into_bytes()))
        })
    }
}

fn identity(spec: Value, source: Arc<FakeSource>) -> Authenticator {
    let spec: api::WorkloadIdentity = serde_json::from_value(spec).expect("spec");
    let cloud = Cloud::from_spec(&spec).expect("cloud");
    Authenticator::new(Credential::WorkloadIdentity(WorkloadIdentity::new(
        cloud, source,
    )))
}

fn request() -> reqwest::Request {
    reqwest::Request::new(
        reqwest::Method::GET,
        Url::parse("https://api.example.com/v1/x").expect("url"),
    )
}

fn header(request: &reqwest::Request, name: &str) -> String {
    request
        .headers()
        .get(name)
        .map(|v| v.to_str().expect("ascii").to_owned())
        .unwrap_or_default()
}

const SUBJECT: &str = "eyJhbGciOiJSUzI1NiJ9.sa-token-value.sig";

#[tokio::test]
async fn google_exchanges_then_impersonates_and_the_result_is_the_bearer() {
    let source = FakeSource::new(vec![Ok((SUBJECT, 600))]);
    let auth = identity(
        json!({"serviceAccountName": "lro-deployer", "google": {
            "audience": "//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/providers/q",
            "serviceAccount": "lro@proj.iam.gserviceaccount.com",
            "tokenURL": "https://sts.example.com/v1/token",
            "iamCredentialsURL": "https://iam.example.com/v1"}}),
        Arc::clone(&source),
    );
    let in_an_hour = jiff::Timestamp::now()
        .checked_add(jiff::SignedDuration::from_secs(3600))
        .expect("time");
    let endpoints = FakeEndpoints::new(vec![
        (
            200,
            json!({"access_token": "federated-1", "expires_in": 3600, "token_type": "Bearer",
                   "issued_token_type": "urn:ietf:params:oauth:token-type:access_token"})
            .to_string(),
        ),
        (
            200,
            json!({"accessToken": "impersonated-1", "expireTime": in_an_hour.to_string()})
                .to_string(),
        ),
    ]);
    let mut r = request();
    auth.attach(&mut r, &endpoints).await.expect("attach");
    assert_eq!(header(&r, "authorization"), "Bearer impersonated-1");
    assert!(r.headers()["authorization"].is_sensitive());
    let seen = std::mem::take(&mut *endpoints.seen.lock().expect("lock"));
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[0].url, "https://sts.example.com/v1/token");
    assert!(
        seen[0]
            .form
            .contains(&("subject_token".into(), SUBJECT.into())),
        "{seen:?}"
    );
    assert_eq!(seen[0].bearer, None);
    assert_eq!(
        seen[1].url,
        "https://iam.example.com/v1/projects/-/serviceAccounts/lro@proj.iam.gserviceaccount.com:generateAccessToken"
    );
    assert_eq!(seen[1].bearer.as_deref(), Some("federated-1"));
    assert_eq!(
        seen[1].json,
        Some(json!({"scope": [GOOGLE_DEFAULT_SCOPE], "lifetime": "3600s"}))
    );
    assert_eq!(
        source.requests(),
        ["//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/providers/q"],
        "the ServiceAccount token's audience is the pool provider"
    );
    // What a request carries is what redaction looks for: the final token only.
    let carried = auth.carried().await;
    assert!(
        carried.contains(&"impersonated-1".to_owned()),
        "{carried:?}"
    );
    assert!(!carried.iter().any(|c| c.contains("sa-token-value")));
}

#[tokio::test]
async fn aws_credentials_sign_with_their_session_token_and_are_renewed_before_expiry() {
    let source = FakeSource::new(vec![Ok((SUBJECT, 600))]);
    let auth = identity(
        json!({"serviceAccountName": "lro-deployer", "aws": {
            "roleArn": "arn:aws:iam::123456789012:role/lro", "region": "eu-west-1",
            "service": "cloudcontrolapi", "stsURL": "https://sts.example.com/"}}),
        Arc::clone(&source),
    );
    let answer = |key: &str, seconds: i64| {
        let expiration = jiff::Timestamp::now()
            .checked_add(jiff::SignedDuration::from_secs(seconds))
            .expect("time");
        format!(
            "<AssumeRoleWithWebIdentityResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><AssumeRoleWithWebIdentityResult><Credentials><SessionToken>session-{key}</SessionToken><SecretAccessKey>secret-{key}</SecretAccessKey><Expiration>{expiration}</Expiration><AccessKeyId>ASIA{key}</AccessKeyId></Credentials></AssumeRoleWithWebIdentityResult></AssumeRoleWithWebIdentityResponse>"
        )
    };
    let endpoints = FakeEndpoints::new(vec![(200, answer("ONE", 2)), (200, answer("TWO", 3600))]);
    let mut r = request();
    auth.attach(&mut r, &endpoints).await.expect("attach");
    let signed = header(&r, "authorization");
    assert!(
        signed.starts_with("AWS4-HMAC-SHA256 Credential=ASIAONE/")
            && signed.contains("/eu-west-1/cloudcontrolapi/aws4_request")
            && signed.contains("x-amz-security-token"),
        "{signed}"
    );
    assert_eq!(header(&r, "x-amz-security-token"), "session-ONE");
    // A quarter of two seconds ahead: renewed after 1.5 s.
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let mut r = request();
    auth.attach(&mut r, &endpoints).await.expect("attach");
    assert_eq!(header(&r, "x-amz-security-token"), "session-TWO");
    let seen = std::mem::take(&mut *endpoints.seen.lock().expect("lock"));
    assert_eq!(seen.len(), 2, "two exchanges");
    assert_eq!(seen[0].accept, "text/xml");
    assert_eq!(
        source.requests(),
        [AWS_AUDIENCE],
        "one ServiceAccount token for both"
    );
    let carried = auth.carried().await;
    assert!(carried.contains(&"ASIATWO".to_owned()) && carried.contains(&"session-TWO".to_owned()));
    assert!(
        !carried.iter().any(|c| c.contains("secret-TWO")),
        "the secret key only signs"
    );
}

#[tokio::test]
async fn azure_sends_the_token_as_client_assertion_and_a_401_renews_once() {
    let source = FakeSource::new(vec![Ok((SUBJECT, 600))]);
    let auth = identity(
        json!({"serviceAccountName": "lro-deployer", "azure": {
            "tenantID": "tenant-1", "clientID": "client-1",
            "authorityURL": "https://login.example.com"}}),
        Arc::clone(&source),
    );
    let token = |t: &str| {
        json!({"token_type": "Bearer", "expires_in": 3599, "access_token": t}).to_string()
    };
    let endpoints = FakeEndpoints::new(vec![(200, token("az-1")), (200, token("az-2"))]);
    let mut r = request();
    let attached = auth.attach(&mut r, &endpoints).await.expect("attach");
    assert_eq!(header(&r, "authorization"), "Bearer az-1");
    assert!(
        auth.refresh_after_unauthorized(attached, &endpoints)
            .await
            .expect("refresh")
    );
    let mut r = request();
    auth.attach(&mut r, &endpoints).await.expect("attach");
    assert_eq!(header(&r, "authorization"), "Bearer az-2");
    let seen = std::mem::take(&mut *endpoints.seen.lock().expect("lock"));
    assert_eq!(
        seen[0].url,
        "https://login.example.com/tenant-1/oauth2/v2.0/token"
    );
    assert!(
        seen[0]
            .form
            .contains(&("client_assertion".into(), SUBJECT.into()))
    );
    assert_eq!(source.requests(), [AZURE_AUDIENCE]);
}

#[tokio::test]
async fn a_refused_exchange_says_which_cloud_and_why_and_never_the_token() {
    let source = FakeSource::new(vec![Ok((SUBJECT, 600))]);
    let auth = identity(
        json!({"serviceAccountName": "lro-deployer", "google": {"audience": "//iam/p"}}),
        Arc::clone(&source),
    );
    // The cloud echoes the subject token in its description.
    let endpoints = FakeEndpoints::new(vec![(
        400,
        json!({"error": "invalid_grant",
               "error_description": format!("ID Token {SUBJECT} issued by an untrusted issuer")})
        .to_string(),
    )]);
    let error = auth.ensure_token(&endpoints).await.expect_err("refused");
    let AuthError::Exchange(message) = &error else {
        panic!("{error:?}")
    };
    assert!(
        message.contains("google: STS (https://sts.googleapis.com/v1/token) refused the token exchange: HTTP 400: invalid_grant: ID Token [redacted] issued by an untrusted issuer"),
        "{message}"
    );
    assert!(
        message.contains("system:serviceaccount:team-a:lro-deployer"),
        "{message}"
    );
    assert!(!message.contains("sa-token-value"), "{message}");
    // The failure is reported again for a few seconds without asking the cloud again.
    let again = auth.ensure_token(&endpoints).await.expect_err("held");
    assert_eq!(again, error);
    assert_eq!(endpoints.seen.lock().expect("lock").len(), 1);
}

#[tokio::test]
async fn a_refused_token_request_is_its_own_step() {
    let source = FakeSource::new(vec![Err(
        "the operator may not create a token for ServiceAccount team-a/lro-deployer".into(),
    )]);
    let auth = identity(
        json!({"serviceAccountName": "lro-deployer", "azure": {"tenantID": "t", "clientID": "c"}}),
        source,
    );
    let endpoints = FakeEndpoints::new(vec![]);
    let error = auth.ensure_token(&endpoints).await.expect_err("refused");
    assert!(
        matches!(&error, AuthError::ServiceAccountToken(m) if m.contains("may not create a token")),
        "{error:?}"
    );
    assert!(
        endpoints.seen.lock().expect("lock").is_empty(),
        "no exchange"
    );
}

#[tokio::test]
async fn the_service_account_token_is_reused_until_most_of_its_life_is_gone() {
    // Tokens valid for 1 s: renewed after 0.8 s.
    let source = FakeSource::new(vec![Ok((SUBJECT, 1))]);
    let spec: api::WorkloadIdentity = serde_json::from_value(
        json!({"serviceAccountName": "x", "azure": {"tenantID": "t", "clientID": "c"}}),
    )
    .expect("spec");
    let identity = WorkloadIdentity::new(
        Cloud::from_spec(&spec).expect("cloud"),
        Arc::clone(&source) as Arc<dyn ServiceAccountTokens>,
    );
    let ok = || {
        (
            200,
            json!({"access_token": "a", "expires_in": 60}).to_string(),
        )
    };
    let endpoints = FakeEndpoints::new(vec![ok(), ok(), ok()]);
    identity.obtain(&endpoints).await.expect("first");
    identity.obtain(&endpoints).await.expect("second");
    assert_eq!(identity.subject_requests(), 1);
    tokio::time::sleep(Duration::from_millis(850)).await;
    identity.obtain(&endpoints).await.expect("third");
    assert_eq!(identity.subject_requests(), 2);
    // A refused exchange drops the token: the next attempt asks for a fresh one.
    let endpoints = FakeEndpoints::new(vec![(401, "{}".into()), ok()]);
    identity.obtain(&endpoints).await.expect_err("refused");
    identity.obtain(&endpoints).await.expect("again");
    assert_eq!(identity.subject_requests(), 3);
}
