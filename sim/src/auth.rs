//! The upstream's side of authentication: which credentials the simulated APIs accept, a token
//! endpoint (OAuth 2.0 client credentials and Google's JWT-bearer grant), a SigV4 verifier, and
//! counters for tests.
//!
//! Until `POST /sim/auth` configures credentials, every request is let through (the other tests
//! send none), and the token endpoint gives a token to any client that names itself (the demo's
//! examples use it; nothing is verified in this open mode). Once configured, every request to a
//! protocol route must carry one accepted credential, else it gets `401`, and the token endpoint
//! checks client secrets and JWT signatures. Besides the configured credentials, protocol routes
//! then also accept what the workload identity endpoints ([`crate::identity`]) issue: their
//! bearer tokens and their temporary AWS keys (SigV4 with a signed `X-Amz-Security-Token`), each
//! until it expires (then `401`, reason `expired`; an expired AWS key gets AWS's `403`
//! `ExpiredTokenException`), counted under credential ids
//! `identity:<cloud>:<subject>`. The configuration (all fields optional):
//!
//! ```json
//! {
//!   "bearerTokens": [{"id": "t1", "token": "…"}],
//!   "apiKeys": [{"id": "k1", "header": "X-API-Key", "value": "…"},
//!               {"id": "k2", "queryParameter": "key", "value": "…"}],
//!   "basic": [{"id": "b1", "username": "…", "password": "…"}],
//!   "oauthClients": [{"id": "c1", "clientId": "…", "clientSecret": "…", "audience": "…"}],
//!   "serviceAccounts": [{"id": "g1", "clientEmail": "…", "publicKeyPem": "-----BEGIN PUBLIC KEY-----…"}],
//!   "awsKeys": [{"id": "a1", "accessKeyId": "…", "secretAccessKey": "…", "sessionToken": "…",
//!                "region": "us-east-1", "service": "cloudcontrolapi"}],
//!   "tokenTtlSeconds": 3600
//! }
//! ```
//!
//! | route | what |
//! |---|---|
//! | `POST /sim/auth` | replaces the accepted credentials (tokens already issued stay valid while their client is still configured; those of the workload identity endpoints until they expire) |
//! | `POST /sim/auth/revoke` | every issued access token (and every temporary AWS key of `/aws-sts`) stops working (as if the upstream revoked them) |
//! | `GET /sim/auth/stats` | `tokenRequests` (by client id, and `rejected`), `accepted` (by credential id), `rejected` (by reason: `missing`, `invalid`, `expired`, `badSignature`), `requests` (`[{path, credential, outcome}]`, last 10,000) |
//! | `POST /sim/identity`, `GET /sim/identity/stats` | workload identity: the token exchanges of Google STS and IAM Credentials, AWS STS and Microsoft Entra ID ([`crate::identity`]) |
//! | `POST /sim/oauth/token` | the token endpoint: `grant_type=client_credentials` (`client_id`/`client_secret` in the form or HTTP basic, optional `audience` that must match) or `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer` (`assertion`: an RS256 JWT from a configured service account, `aud` ending in `/sim/oauth/token`) |

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use ring::{digest, hmac, rand::SecureRandom};
use serde::Deserialize;
use serde_json::{Value, json};

/// How many requests the auth log keeps.
const MAX_LOG: usize = 10_000;
/// The largest request body the SigV4 verifier reads.
const MAX_BODY: usize = 4 * 1024 * 1024;
/// How far a SigV4 `X-Amz-Date` may be from now.
const MAX_SKEW_SECS: i64 = 300;

/// The credentials the simulated upstream accepts (see the module documentation).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthConfig {
    #[serde(default)]
    bearer_tokens: Vec<BearerToken>,
    #[serde(default)]
    api_keys: Vec<ApiKey>,
    #[serde(default)]
    basic: Vec<Basic>,
    #[serde(default)]
    oauth_clients: Vec<OAuthClient>,
    #[serde(default)]
    service_accounts: Vec<ServiceAccount>,
    #[serde(default)]
    aws_keys: Vec<AwsKey>,
    #[serde(default)]
    token_ttl_seconds: Option<f64>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct BearerToken {
    id: String,
    token: String,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ApiKey {
    id: String,
    header: Option<String>,
    query_parameter: Option<String>,
    value: String,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Basic {
    id: String,
    username: String,
    password: String,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct OAuthClient {
    id: String,
    client_id: String,
    client_secret: String,
    audience: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ServiceAccount {
    id: String,
    client_email: String,
    public_key_pem: String,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct AwsKey {
    id: String,
    access_key_id: String,
    secret_access_key: String,
    session_token: Option<String>,
    region: Option<String>,
    service: Option<String>,
}

impl AuthConfig {
    fn enforced(&self) -> bool {
        !(self.bearer_tokens.is_empty()
            && self.api_keys.is_empty()
            && self.basic.is_empty()
            && self.oauth_clients.is_empty()
            && self.service_accounts.is_empty()
            && self.aws_keys.is_empty())
    }

    fn ttl_ms(&self) -> u64 {
        let secs = self
            .token_ttl_seconds
            .unwrap_or(3600.0)
            .clamp(0.1, 86_400.0);
        (secs * 1000.0) as u64
    }

    fn has_client(&self, id: &str) -> bool {
        self.oauth_clients.iter().any(|c| c.id == id)
            || self.service_accounts.iter().any(|s| s.id == id)
    }
}

/// One issued access token.
#[derive(Debug)]
struct Issued {
    client: String,
    expires_at_ms: u64,
}

/// Temporary AWS credentials issued by the simulated AWS STS ([`crate::identity`]).
#[derive(Debug)]
struct TemporaryAwsKey {
    key: AwsKey,
    expires_at_ms: u64,
}

#[derive(Debug, Default)]
struct Inner {
    config: AuthConfig,
    issued: HashMap<String, Issued>,
    /// By access key id.
    temporary_aws_keys: HashMap<String, TemporaryAwsKey>,
    token_requests: BTreeMap<String, u64>,
    token_rejections: u64,
    accepted: BTreeMap<String, u64>,
    rejected: BTreeMap<&'static str, u64>,
    log: VecDeque<Value>,
}

/// The auth state of one simulator (cheap to clone).
#[derive(Clone, Debug, Default)]
pub struct AuthState {
    inner: Arc<Mutex<Inner>>,
}

impl AuthState {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Accepts `token` as a bearer token of credential `client` until `expires_at_ms` (tokens
    /// issued by the simulated clouds' token endpoints, [`crate::identity`]; their client ids
    /// start with `identity:`, which keeps them across `POST /sim/auth`).
    pub(crate) fn accept_issued_token(&self, token: String, client: String, expires_at_ms: u64) {
        let mut inner = self.lock();
        let now = now_ms();
        inner.issued.retain(|_, t| t.expires_at_ms + 60_000 > now);
        inner.issued.insert(
            token,
            Issued {
                client,
                expires_at_ms,
            },
        );
    }

    /// The credential id and expiry of an issued (not configured) bearer token.
    pub(crate) fn issued_token(&self, token: &str) -> Option<(String, u64)> {
        self.lock()
            .issued
            .get(token)
            .map(|t| (t.client.clone(), t.expires_at_ms))
    }

    /// Accepts temporary AWS credentials (SigV4 with `X-Amz-Security-Token`) as credential
    /// `client` until `expires_at_ms`, in any region and for any service.
    pub(crate) fn accept_temporary_aws_key(
        &self,
        client: String,
        access_key_id: String,
        secret_access_key: String,
        session_token: String,
        expires_at_ms: u64,
    ) {
        let mut inner = self.lock();
        let now = now_ms();
        inner
            .temporary_aws_keys
            .retain(|_, k| k.expires_at_ms + 60_000 > now);
        inner.temporary_aws_keys.insert(
            access_key_id.clone(),
            TemporaryAwsKey {
                key: AwsKey {
                    id: client,
                    access_key_id,
                    secret_access_key,
                    session_token: Some(session_token),
                    region: None,
                    service: None,
                },
                expires_at_ms,
            },
        );
    }

    fn log(&self, path: &str, credential: Option<&str>, outcome: &'static str) {
        let mut inner = self.lock();
        match credential {
            Some(id) if outcome == "accepted" => {
                *inner.accepted.entry(id.to_owned()).or_default() += 1
            }
            _ => *inner.rejected.entry(outcome).or_default() += 1,
        }
        if inner.log.len() >= MAX_LOG {
            inner.log.pop_front();
        }
        inner.log.push_back(json!({
            "atMs": now_ms(),
            "path": path,
            "credential": credential,
            "outcome": outcome,
        }));
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn unauthorized(message: &str) -> Response {
    let mut response = (
        StatusCode::UNAUTHORIZED,
        Json(json!({"error": {"code": 401, "message": message, "status": "UNAUTHENTICATED"}})),
    )
        .into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer error=\"invalid_token\""),
    );
    response
}

/// `POST /sim/auth`.
pub async fn configure(State(auth): State<AuthState>, body: Bytes) -> Response {
    let config: AuthConfig = match serde_json::from_slice(&body) {
        Ok(config) => config,
        Err(e) => {
            return super::render::error_response(
                StatusCode::BAD_REQUEST,
                format!("invalid auth config: {e}"),
            );
        }
    };
    let mut inner = auth.lock();
    // Tokens of the workload identity endpoints do not depend on this configuration.
    let still = |client: &str| client.starts_with("identity:") || config.has_client(client);
    inner.issued.retain(|_, issued| still(&issued.client));
    inner.config = config;
    Json(json!({})).into_response()
}

/// `POST /sim/auth/revoke`.
pub async fn revoke(State(auth): State<AuthState>) -> Response {
    let mut inner = auth.lock();
    inner.issued.clear();
    inner.temporary_aws_keys.clear();
    Json(json!({})).into_response()
}

/// `GET /sim/auth/stats`.
pub async fn stats(State(auth): State<AuthState>) -> Response {
    let inner = auth.lock();
    let mut token_requests: Map = inner
        .token_requests
        .iter()
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect();
    token_requests.insert("rejected".into(), json!(inner.token_rejections));
    Json(json!({
        "tokenRequests": token_requests,
        "tokensIssued": inner.issued.len(),
        "accepted": inner.accepted,
        "rejected": inner.rejected,
        "requests": inner.log,
    }))
    .into_response()
}

type Map = serde_json::Map<String, Value>;

/// The middleware on protocol routes: lets a request through only with an accepted credential
/// (when credentials are configured).
pub async fn require(State(auth): State<AuthState>, request: Request, next: Next) -> Response {
    let config = auth.lock().config.clone();
    if !config.enforced() {
        return next.run(request).await;
    }
    let path = request.uri().path().to_owned();
    let (parts, body) = request.into_parts();
    let body = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(body) => body,
        Err(_) => {
            return super::render::error_response(StatusCode::PAYLOAD_TOO_LARGE, "body too large");
        }
    };
    match check(&auth, &config, &parts, &body) {
        Ok(id) => {
            auth.log(&path, Some(&id), "accepted");
            next.run(Request::from_parts(parts, Body::from(body))).await
        }
        Err((outcome, message)) => {
            auth.log(&path, None, outcome);
            let signed = parts
                .headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with("AWS4-HMAC-SHA256 "));
            if signed && outcome == "expired" {
                return aws_expired_token();
            }
            unauthorized(&message)
        }
    }
}

/// What AWS answers a request signed with temporary credentials that expired: `403`
/// `ExpiredTokenException` ("Common Errors" of every AWS API reference, the Cloud Control API's
/// included), in the JSON protocols' error shape (`__type`, `message`, and the
/// `x-amzn-ErrorType` header).
fn aws_expired_token() -> Response {
    let mut response = (
        StatusCode::FORBIDDEN,
        Json(json!({
            "__type": "ExpiredTokenException",
            "message": "The security token included in the request is expired",
        })),
    )
        .into_response();
    response.headers_mut().insert(
        "x-amzn-ErrorType",
        header::HeaderValue::from_static("ExpiredTokenException"),
    );
    response
}

type Rejection = (&'static str, String);

/// Which configured credential `request` carries.
fn check(
    auth: &AuthState,
    config: &AuthConfig,
    parts: &axum::http::request::Parts,
    body: &[u8],
) -> Result<String, Rejection> {
    let headers = &parts.headers;
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if let Some(token) = authorization.strip_prefix("Bearer ") {
        if let Some(t) = config.bearer_tokens.iter().find(|t| t.token == token) {
            return Ok(t.id.clone());
        }
        let inner = auth.lock();
        return match inner.issued.get(token) {
            Some(issued) if issued.expires_at_ms > now_ms() => Ok(issued.client.clone()),
            Some(_) => Err(("expired", "the access token has expired".into())),
            None => Err(("invalid", "the access token is not valid".into())),
        };
    }
    if let Some(encoded) = authorization.strip_prefix("Basic ") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .ok()
            .and_then(|d| String::from_utf8(d).ok())
            .unwrap_or_default();
        let (user, password) = decoded.split_once(':').unwrap_or_default();
        return config
            .basic
            .iter()
            .find(|b| b.username == user && b.password == password)
            .map(|b| b.id.clone())
            .ok_or(("invalid", "wrong user name or password".into()));
    }
    if authorization.starts_with("AWS4-HMAC-SHA256 ") {
        let lookup = |access_key: &str| -> Result<AwsKey, Rejection> {
            if let Some(key) = config
                .aws_keys
                .iter()
                .find(|k| k.access_key_id == access_key)
            {
                return Ok(key.clone());
            }
            match auth.lock().temporary_aws_keys.get(access_key) {
                Some(t) if t.expires_at_ms > now_ms() => Ok(t.key.clone()),
                Some(_) => Err((
                    "expired",
                    "SigV4: the security token included in the request is expired".into(),
                )),
                None => Err(("invalid", "SigV4: unknown access key".into())),
            }
        };
        return verify_sigv4(&lookup, parts, body, SystemTime::now());
    }
    let query: Vec<(String, String)> =
        url::form_urlencoded::parse(parts.uri.query().unwrap_or_default().as_bytes())
            .into_owned()
            .collect();
    let mut offered = false;
    for key in &config.api_keys {
        let value = match (&key.header, &key.query_parameter) {
            (Some(h), _) => headers
                .get(h.as_str())
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            (None, Some(q)) => query.iter().find(|(k, _)| k == q).map(|(_, v)| v.clone()),
            (None, None) => None,
        };
        if let Some(value) = value {
            offered = true;
            if value == key.value {
                return Ok(key.id.clone());
            }
        }
    }
    if offered {
        return Err(("invalid", "the API key is not valid".into()));
    }
    Err(("missing", "the request carries no credentials".into()))
}

/// Verifies an AWS SigV4 `Authorization` header (an independent implementation of the spec);
/// `lookup` finds the key of an access key id.
fn verify_sigv4(
    lookup: &dyn Fn(&str) -> Result<AwsKey, Rejection>,
    parts: &axum::http::request::Parts,
    body: &[u8],
    now: SystemTime,
) -> Result<String, Rejection> {
    let bad = |why: &str| ("badSignature", format!("SigV4: {why}"));
    let authorization = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let fields = authorization.trim_start_matches("AWS4-HMAC-SHA256 ");
    let mut credential = None;
    let mut signed_headers = None;
    let mut signature = None;
    for field in fields.split(',') {
        let (k, v) = field.trim().split_once('=').unwrap_or_default();
        match k {
            "Credential" => credential = Some(v),
            "SignedHeaders" => signed_headers = Some(v),
            "Signature" => signature = Some(v),
            _ => {}
        }
    }
    let (Some(credential), Some(signed_headers), Some(signature)) =
        (credential, signed_headers, signature)
    else {
        return Err(bad("malformed Authorization header"));
    };
    let scope: Vec<&str> = credential.split('/').collect();
    let [access_key, date, region, service, "aws4_request"] = scope[..] else {
        return Err(bad("malformed credential scope"));
    };
    let key = lookup(access_key)?;
    if key.region.as_deref().is_some_and(|r| r != region)
        || key.service.as_deref().is_some_and(|s| s != service)
    {
        return Err(bad("wrong region or service in the credential scope"));
    }
    let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
    let amz_date = header("x-amz-date").ok_or_else(|| bad("no X-Amz-Date"))?;
    if !amz_date.starts_with(date) {
        return Err(bad("X-Amz-Date does not match the credential scope"));
    }
    let signed_at = jiff::civil::DateTime::strptime("%Y%m%dT%H%M%SZ", amz_date)
        .ok()
        .and_then(|d| d.to_zoned(jiff::tz::TimeZone::UTC).ok())
        .map(|z| z.timestamp().as_second())
        .ok_or_else(|| bad("X-Amz-Date is not a date"))?;
    let now_secs = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    if (now_secs - signed_at).abs() > MAX_SKEW_SECS {
        return Err(bad("the signature is too old or from the future"));
    }
    let names: Vec<&str> = signed_headers.split(';').collect();
    if !names.contains(&"host") {
        return Err(bad("host is not signed"));
    }
    if let Some(token) = &key.session_token {
        if header("x-amz-security-token") != Some(token.as_str()) {
            return Err(("invalid", "SigV4: wrong or missing session token".into()));
        }
        if !names.contains(&"x-amz-security-token") {
            return Err(bad("the session token is not signed"));
        }
    }
    let mut canonical_headers = String::new();
    for name in &names {
        let values: Vec<String> = parts
            .headers
            .get_all(*name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
        if values.is_empty() && *name != "host" {
            return Err(bad("a signed header is missing"));
        }
        let value = if *name == "host" && values.is_empty() {
            parts
                .uri
                .authority()
                .map(|a| a.to_string())
                .unwrap_or_default()
        } else {
            values.join(",")
        };
        canonical_headers.push_str(&format!("{name}:{value}\n"));
    }
    let payload_hash = match header("x-amz-content-sha256") {
        Some(h) => h.to_owned(),
        None => hex(digest::digest(&digest::SHA256, body).as_ref()),
    };
    let canonical_uri = encode(parts.uri.path(), true);
    let mut query: Vec<(String, String)> =
        url::form_urlencoded::parse(parts.uri.query().unwrap_or_default().as_bytes())
            .map(|(k, v)| (encode(&k, false), encode(&v, false)))
            .collect();
    query.sort();
    let canonical_query = query
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    let canonical_request = format!(
        "{}\n{canonical_uri}\n{canonical_query}\n{canonical_headers}\n{signed_headers}\n{payload_hash}",
        parts.method.as_str()
    );
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{date}/{region}/{service}/aws4_request\n{}",
        hex(digest::digest(&digest::SHA256, canonical_request.as_bytes()).as_ref())
    );
    let sign = |key: &[u8], data: &str| {
        hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data.as_bytes())
    };
    let k_date = sign(format!("AWS4{}", key.secret_access_key).as_bytes(), date);
    let k_region = sign(k_date.as_ref(), region);
    let k_service = sign(k_region.as_ref(), service);
    let k_signing = hmac::Key::new(
        hmac::HMAC_SHA256,
        sign(k_service.as_ref(), "aws4_request").as_ref(),
    );
    let given = unhex(signature).ok_or_else(|| bad("the signature is not hex"))?;
    hmac::verify(&k_signing, string_to_sign.as_bytes(), &given)
        .map_err(|_| bad("the signature does not match"))?;
    Ok(key.id.clone())
}

/// URI-encodes `s` as SigV4 does (unreserved characters kept; `/` kept in paths). A path is
/// encoded as received (already percent-encoded), i.e. twice, as SigV4 wants for non-S3 services.
fn encode(s: &str, path: bool) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'_' | b'.' | b'~')
            || (path && b == b'/')
        {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// `POST /sim/oauth/token`.
pub async fn token(State(auth): State<AuthState>, headers: HeaderMap, body: Bytes) -> Response {
    let form: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    let config = auth.lock().config.clone();
    let client = match form.get("grant_type").map(String::as_str) {
        // Open mode: nothing configured, nothing checked.
        Some(_) if !config.enforced() => Ok("open".to_owned()),
        Some("client_credentials") => client_credentials(&config, &headers, &form),
        Some("urn:ietf:params:oauth:grant-type:jwt-bearer") => jwt_bearer(&config, &form),
        Some(other) => Err((
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            format!("grant_type {other} is not supported"),
        )),
        None => Err((
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "grant_type is missing".into(),
        )),
    };
    let client = match client {
        Ok(client) => client,
        Err((status, error, description)) => {
            auth.lock().token_rejections += 1;
            return (
                status,
                Json(json!({"error": error, "error_description": description})),
            )
                .into_response();
        }
    };
    let mut bytes = [0u8; 16];
    if ring::rand::SystemRandom::new().fill(&mut bytes).is_err() {
        return super::render::error_response(StatusCode::INTERNAL_SERVER_ERROR, "no randomness");
    }
    let token = format!("sim-at-{}", hex(&bytes));
    let ttl_ms = config.ttl_ms();
    let mut inner = auth.lock();
    *inner.token_requests.entry(client.clone()).or_default() += 1;
    let now = now_ms();
    inner.issued.retain(|_, t| t.expires_at_ms + 60_000 > now);
    inner.issued.insert(
        token.clone(),
        Issued {
            client,
            expires_at_ms: now + ttl_ms,
        },
    );
    Json(json!({
        "access_token": token,
        "token_type": "Bearer",
        "expires_in": ttl_ms as f64 / 1000.0,
    }))
    .into_response()
}

type TokenRejection = (StatusCode, &'static str, String);

fn client_credentials(
    config: &AuthConfig,
    headers: &HeaderMap,
    form: &HashMap<String, String>,
) -> Result<String, TokenRejection> {
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|v| {
            base64::engine::general_purpose::STANDARD
                .decode(v.trim())
                .ok()
        })
        .and_then(|d| String::from_utf8(d).ok());
    let (id, secret) = match (&basic, form.get("client_id"), form.get("client_secret")) {
        (Some(pair), _, _) => {
            let (id, secret) = pair.split_once(':').unwrap_or_default();
            (id.to_owned(), secret.to_owned())
        }
        (None, Some(id), Some(secret)) => (id.clone(), secret.clone()),
        _ => {
            return Err((
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "no client credentials".into(),
            ));
        }
    };
    let client = config
        .oauth_clients
        .iter()
        .find(|c| c.client_id == id && c.client_secret == secret)
        .ok_or((
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "unknown client or wrong secret".to_owned(),
        ))?;
    if let Some(audience) = &client.audience
        && form.get("audience") != Some(audience)
    {
        return Err((
            StatusCode::FORBIDDEN,
            "access_denied",
            "wrong or missing audience".into(),
        ));
    }
    Ok(client.id.clone())
}

fn jwt_bearer(
    config: &AuthConfig,
    form: &HashMap<String, String>,
) -> Result<String, TokenRejection> {
    let invalid = |why: &str| (StatusCode::BAD_REQUEST, "invalid_grant", why.to_owned());
    let assertion = form
        .get("assertion")
        .ok_or_else(|| invalid("no assertion"))?;
    // The issuer picks the key; the signature is verified with it below.
    let claims: Value = assertion
        .split('.')
        .nth(1)
        .and_then(|c| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(c)
                .ok()
        })
        .and_then(|c| serde_json::from_slice(&c).ok())
        .ok_or_else(|| invalid("the assertion is not a JWT"))?;
    let issuer = claims["iss"].as_str().unwrap_or_default();
    let account = config
        .service_accounts
        .iter()
        .find(|s| s.client_email == issuer)
        .ok_or_else(|| invalid("unknown service account"))?;
    let key = jsonwebtoken::DecodingKey::from_rsa_pem(account.public_key_pem.as_bytes())
        .map_err(|_| invalid("the configured public key is not a PEM RSA key"))?;
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.validate_aud = false;
    validation.set_required_spec_claims(&["exp", "iat", "aud", "iss"]);
    let verified = jsonwebtoken::decode::<Value>(assertion, &key, &validation)
        .map_err(|e| invalid(&format!("the assertion does not verify: {e}")))?;
    let audience = verified.claims["aud"].as_str().unwrap_or_default();
    if !audience.ends_with("/sim/oauth/token") {
        return Err(invalid("the assertion's aud is not this token endpoint"));
    }
    if verified.claims["scope"]
        .as_str()
        .unwrap_or_default()
        .is_empty()
    {
        return Err(invalid("the assertion has no scope"));
    }
    Ok(account.id.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(method: &str, uri: &str, headers: &[(&str, &str)]) -> axum::http::request::Parts {
        let mut builder = axum::http::Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            builder = builder.header(*k, *v);
        }
        builder.body(()).expect("request").into_parts().0
    }

    /// `verify_sigv4` with the keys of `config`.
    fn verify_with(
        config: &AuthConfig,
        parts: &axum::http::request::Parts,
        body: &[u8],
        now: SystemTime,
    ) -> Result<String, Rejection> {
        let lookup = |access_key: &str| {
            config
                .aws_keys
                .iter()
                .find(|k| k.access_key_id == access_key)
                .cloned()
                .ok_or_else(|| ("invalid", "SigV4: unknown access key".to_owned()))
        };
        verify_sigv4(&lookup, parts, body, now)
    }

    fn aws_config() -> AuthConfig {
        serde_json::from_value(json!({"awsKeys": [{
            "id": "a1", "accessKeyId": "AKIDEXAMPLE",
            "secretAccessKey": "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"}]}))
        .expect("config")
    }

    /// The `get-vanilla` case of the AWS SigV4 test suite, verified by the simulator.
    #[test]
    fn the_verifier_accepts_the_aws_test_suite_vanilla_get() {
        let now = UNIX_EPOCH + std::time::Duration::from_secs(1_440_938_160);
        let p = parts(
            "GET",
            "/",
            &[
                ("host", "example.amazonaws.com"),
                ("x-amz-date", "20150830T123600Z"),
                (
                    "authorization",
                    "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
                ),
            ],
        );
        assert_eq!(verify_with(&aws_config(), &p, b"", now), Ok("a1".into()));
        let tampered = parts(
            "GET",
            "/?x=1",
            &[
                ("host", "example.amazonaws.com"),
                ("x-amz-date", "20150830T123600Z"),
                (
                    "authorization",
                    "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
                ),
            ],
        );
        assert_eq!(
            verify_with(&aws_config(), &tampered, b"", now).map_err(|e| e.0),
            Err("badSignature")
        );
        let late = now + std::time::Duration::from_secs(3600);
        assert!(
            verify_with(&aws_config(), &p, b"", late).is_err(),
            "replayed an hour later"
        );
    }

    /// What the operator's signer produces, the simulator accepts (body, query, target header).
    #[test]
    fn the_verifier_accepts_the_operators_signatures() {
        let keys = lro_operator::upstream::sigv4::AwsKeys {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
            session_token: None,
            region: "us-east-1".into(),
            service: "cloudcontrolapi".into(),
        };
        let mut request = reqwest::Request::new(
            reqwest::Method::POST,
            "http://127.0.0.1:8480/v1/projects/p/clusters:create?requestId=a%20b&z=1"
                .parse()
                .expect("url"),
        );
        request.headers_mut().insert(
            "x-amz-target",
            "CloudApiService.CreateResource".parse().expect("value"),
        );
        request
            .headers_mut()
            .insert("content-type", "application/json".parse().expect("value"));
        *request.body_mut() = Some(reqwest::Body::from(r#"{"a": 1}"#));
        let now = SystemTime::now();
        lro_operator::upstream::sigv4::sign(&mut request, &keys, now).expect("signed");
        let mut builder = axum::http::Request::builder()
            .method("POST")
            .uri("/v1/projects/p/clusters:create?requestId=a%20b&z=1")
            .header("host", "127.0.0.1:8480");
        for (k, v) in request.headers() {
            builder = builder.header(k.as_str(), v.to_str().expect("ascii"));
        }
        let p = builder.body(()).expect("request").into_parts().0;
        assert_eq!(
            verify_with(&aws_config(), &p, br#"{"a": 1}"#, now),
            Ok("a1".into())
        );
        assert!(
            verify_with(&aws_config(), &p, br#"{"a": 2}"#, now).is_err(),
            "body is signed"
        );
    }

    #[tokio::test]
    async fn the_token_endpoint_is_open_until_configured_then_checks_secrets() {
        let auth = AuthState::default();
        let form = |body: &'static str| Bytes::from_static(body.as_bytes());
        let open = token(
            State(auth.clone()),
            HeaderMap::new(),
            form("grant_type=client_credentials&client_id=anyone&client_secret=x"),
        )
        .await;
        assert_eq!(open.status(), StatusCode::OK);
        let config = serde_json::from_value(json!({"oauthClients": [
            {"id": "c", "clientId": "id", "clientSecret": "secret", "audience": "aud"}]}))
        .expect("config");
        auth.lock().config = config;
        for (body, status) in [
            (
                "grant_type=client_credentials&client_id=id&client_secret=x&audience=aud",
                StatusCode::UNAUTHORIZED,
            ),
            (
                "grant_type=client_credentials&client_id=id&client_secret=secret",
                StatusCode::FORBIDDEN,
            ),
            (
                "grant_type=client_credentials&client_id=id&client_secret=secret&audience=aud",
                StatusCode::OK,
            ),
            ("grant_type=password", StatusCode::BAD_REQUEST),
        ] {
            let answer = token(State(auth.clone()), HeaderMap::new(), form(body)).await;
            assert_eq!(answer.status(), status, "{body}");
        }
    }

    #[test]
    fn credentials_are_matched_and_rejections_classified() {
        let auth = AuthState::default();
        let config: AuthConfig = serde_json::from_value(json!({
            "bearerTokens": [{"id": "t", "token": "tok"}],
            "apiKeys": [{"id": "k", "header": "x-api-key", "value": "kv"},
                        {"id": "q", "queryParameter": "key", "value": "qv"}],
            "basic": [{"id": "b", "username": "u", "password": "p"}],
        }))
        .expect("config");
        let ok = |h: &[(&str, &str)], uri: &str| check(&auth, &config, &parts("GET", uri, h), b"");
        assert_eq!(
            ok(&[("authorization", "Bearer tok")], "/v1/x"),
            Ok("t".into())
        );
        assert_eq!(ok(&[("x-api-key", "kv")], "/v1/x"), Ok("k".into()));
        assert_eq!(ok(&[], "/v1/x?key=qv"), Ok("q".into()));
        assert_eq!(
            ok(&[("authorization", "Basic dTpw")], "/v1/x"),
            Ok("b".into())
        );
        assert_eq!(ok(&[], "/v1/x").map_err(|e| e.0), Err("missing"));
        assert_eq!(
            ok(&[("authorization", "Bearer nope")], "/v1/x").map_err(|e| e.0),
            Err("invalid")
        );
        assert_eq!(
            ok(&[("x-api-key", "wrong")], "/v1/x").map_err(|e| e.0),
            Err("invalid")
        );
    }
}
