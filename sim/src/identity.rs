//! Workload identity: the three clouds' token-exchange endpoints, which take a Kubernetes
//! ServiceAccount token (a JWT from the API server's `TokenRequest`) and give cloud credentials.
//!
//! Every endpoint **verifies** the presented token against the configuration of
//! `POST /sim/identity`: the JWS signature (RS256, RS384, RS512, ES256 or ES384) with a key of
//! the configured JWKS (the API server's `/openid/v1/jwks`; a `kid` in the token header selects
//! the key, else every key of that type is tried), `iss` equal to `issuer`, `exp` in the future,
//! `nbf` and `iat` not more than 30 s in the future, `aud` containing the audience the cloud
//! requires, and a `sub` (`system:serviceaccount:NS:NAME`) that the `trust` list allows for that
//! cloud (and that role, client or service account). Anything else is refused in the cloud's own
//! error format. Until `POST /sim/identity` is posted, every exchange is refused (reason
//! `notConfigured`): nothing can be verified.
//!
//! ```json
//! {
//!   "issuer": "https://127.0.0.1:6443/",
//!   "jwks": {"keys": [{"kty": "RSA", "kid": "…", "alg": "RS256", "use": "sig", "n": "…", "e": "AQAB"}]},
//!   "tokenTtlSeconds": 3600,
//!   "trust": [
//!     {"subject": "system:serviceaccount:ns:sa",
//!      "google": {"audience": "//iam.googleapis.com/projects/123/locations/global/workloadIdentityPools/pool/providers/prov",
//!                 "serviceAccounts": ["lro@proj.iam.gserviceaccount.com"]}},
//!     {"subject": "system:serviceaccount:ns:sa", "aws": {"roleArn": "arn:aws:iam::123456789012:role/lro"}},
//!     {"subject": "system:serviceaccount:ns:sa",
//!      "azure": {"tenantId": "00000000-0000-0000-0000-000000000001", "clientId": "11111111-1111-1111-1111-111111111111"}}
//!   ]
//! }
//! ```
//!
//! * `issuer` (required): the exact `iss` of accepted tokens.
//! * `jwks` (required): a JWK set; `RSA` keys (`n`, `e`) and `EC` keys (`crv` `P-256` or `P-384`,
//!   `x`, `y`), base64url. Keys of other types are skipped; at least one must be usable. A key's
//!   optional `alg` must match the token's; a key with `use` other than `sig` is skipped.
//! * `tokenTtlSeconds` (default 3600, 1–86,400, whole seconds): the lifetime of every credential
//!   issued here (bounded further as each endpoint says below).
//! * `trust`: entries of `subject` plus any of `google` (`audience`: the workload identity pool
//!   provider's full name `//iam.googleapis.com/projects/…/providers/…`; `serviceAccounts`: the
//!   emails this subject may impersonate), `aws` (`roleArn`, `arn:PARTITION:iam::ACCOUNT:role/NAME`)
//!   and `azure` (`tenantId`, `clientId`). A subject may appear in several entries.
//!
//! Posting replaces the configuration; credentials already issued stay valid until they expire
//! (as with the real clouds), unless `POST /sim/auth/revoke` revokes them.
//!
//! | route | what |
//! |---|---|
//! | `POST /sim/identity` | replaces the configuration above (`400` with the reason if invalid) |
//! | `GET /sim/identity/stats` | `configured` (bool), `exchanges` (by cloud: `google`, `googleImpersonation`, `aws`, `azure`), `exchangesByCredential` (by credential id), `rejected` (by reason, below), `rejectedByCloud` (by cloud) |
//! | `POST /google-sts/v1/token` | Google Security Token Service token exchange |
//! | `POST /google-iam/v1/projects/-/serviceAccounts/EMAIL:generateAccessToken` | Google IAM Credentials impersonation |
//! | `POST` or `GET /aws-sts/` (or `/aws-sts`) | AWS STS `AssumeRoleWithWebIdentity` |
//! | `POST /azure-login/TENANT/oauth2/v2.0/token` | Microsoft Entra ID client credentials with a federated client assertion |
//!
//! Rejection reasons: `notConfigured`, `malformed` (not a JWT, or a claim missing or of the
//! wrong type), `badSignature` (no key, no matching key, unsupported `alg`, or the signature does
//! not verify), `wrongIssuer`, `expired`, `notYetValid` (`nbf` or `iat` in the future),
//! `wrongAudience`, `untrustedSubject`, `unknownProvider` (Google: an `audience` no trust entry
//! names), `wrongRole` (AWS: the subject is trusted, for another role), `unknownTenant`,
//! `unknownClient` (Azure), `permissionDenied` (Google impersonation of an email the subject may
//! not use), `badBearer` (Google impersonation without a live STS token), `invalidRequest` and
//! `unsupportedGrantType` (a missing or wrong parameter).
//!
//! # Credentials issued, and where they are accepted
//! Credentials are registered with [`crate::auth`]: while `/sim/auth` is configured (protocol
//! routes require credentials only then; these need not be listed there), every protocol route
//! accepts them until they expire, then answers `401` (reason `expired`), like other expired
//! tokens. Accepted requests are counted in `/sim/auth/stats` `accepted` under the credential id
//! `identity:<cloud>:<subject>`, e.g. `identity:google:system:serviceaccount:ns:sa`:
//! * `identity:google:SUBJECT` — the STS federated token (a bearer token; usable directly, and
//!   the only bearer `generateAccessToken` accepts);
//! * `identity:googleImpersonation:SUBJECT` — the `generateAccessToken` token (bearer);
//! * `identity:aws:SUBJECT` — the temporary AWS credentials, for SigV4 with
//!   `X-Amz-Security-Token` (signed) in any region and for any service;
//! * `identity:azure:SUBJECT` — the Entra access token (bearer).
//!
//! `POST /sim/auth/revoke` revokes all of them. Token values are never logged.
//!
//! # The endpoints and the references their payloads follow
//! Where the real services' exact error wording is not published, the messages below are close
//! paraphrases of what they are observed to answer; codes, statuses and shapes are the real ones.
//!
//! ## Google Security Token Service — `POST /google-sts/v1/token`
//! Reference: <https://cloud.google.com/iam/docs/reference/sts/rest/v1/TopLevel/token>.
//! Body form-urlencoded or JSON: `grant_type=urn:ietf:params:oauth:grant-type:token-exchange`,
//! `audience` (the pool provider's full name), `scope` (optional),
//! `requested_token_type=urn:ietf:params:oauth:token-type:access_token`, `subject_token`,
//! `subject_token_type` (`urn:ietf:params:oauth:token-type:jwt` or `…:id_token`). The token's
//! `aud` must contain `audience` exactly, or `https:` + `audience`. Answers `200
//! {"access_token", "issued_token_type": "urn:ietf:params:oauth:token-type:access_token",
//! "token_type": "Bearer", "expires_in"}`, living `tokenTtlSeconds`, at most until the subject
//! token's `exp` (as Google does); refusals are `400 {"error", "error_description"}`:
//! `invalid_request` (a missing or wrong parameter, e.g. `Invalid value for "audience". …`),
//! `unsupported_grant_type`, `invalid_target` (a provider no trust entry names, or nothing
//! configured: `The target service indicated by the "audience" parameters is invalid. …`), and
//! `invalid_grant` for the token (`The issuer in ID Token … does not match the expected ones: …`,
//! `The audience in ID Token [...] does not match the expected audience ….`, an invalid
//! signature, an expired token, and for an untrusted subject `The given credential is rejected
//! by the attribute condition.`).
//!
//! ## Google IAM Credentials — `POST /google-iam/v1/projects/-/serviceAccounts/EMAIL:generateAccessToken`
//! Reference: <https://cloud.google.com/iam/docs/reference/credentials/rest/v1/projects.serviceAccounts/generateAccessToken>.
//! `Authorization: Bearer` an unexpired STS token issued above; JSON `{"scope": [...],
//! "lifetime": "3600s"}` (`scope` non-empty; `lifetime` optional, 1–43,200 s). Answers `200
//! {"accessToken", "expireTime"}` (RFC 3339, UTC), living min(`lifetime`, `tokenTtlSeconds`).
//! The email must be in `google.serviceAccounts` of a trust entry of the STS token's subject,
//! else `403` `PERMISSION_DENIED` `Permission 'iam.serviceAccounts.getAccessToken' denied on
//! resource (or it may not exist).` with an `ErrorInfo` (`IAM_PERMISSION_DENIED`); a missing,
//! unknown or expired bearer (or any bearer not from the STS above) is `401` `UNAUTHENTICATED`;
//! a bad body `400` `INVALID_ARGUMENT`. Errors are AIP-193 `{"error": {"code", "message",
//! "status", "details"}}`. The project segment may be `-` or anything.
//!
//! ## AWS STS — `AssumeRoleWithWebIdentity` at `/aws-sts/`
//! Reference: <https://docs.aws.amazon.com/STS/latest/APIReference/API_AssumeRoleWithWebIdentity.html>
//! (errors: <https://docs.aws.amazon.com/STS/latest/APIReference/CommonErrors.html>).
//! Query-protocol parameters in a form body or the query string: `Action=AssumeRoleWithWebIdentity`,
//! `Version=2011-06-15`, `RoleArn`, `RoleSessionName` (2–64 of `[\w+=,.@-]`),
//! `WebIdentityToken`, `DurationSeconds` (900–43,200, default 3600). The token's `aud` must
//! contain `sts.amazonaws.com`; `RoleArn` must be the `aws.roleArn` of a trust entry of the
//! subject. Answers `200` `text/xml` `AssumeRoleWithWebIdentityResponse` (namespace
//! `https://sts.amazonaws.com/doc/2011-06-15/`) with `SubjectFromWebIdentityToken`, `Audience`,
//! `AssumedRoleUser` (`Arn` `arn:PARTITION:sts::ACCOUNT:assumed-role/NAME/SESSION`,
//! `AssumedRoleId` `AROA…:SESSION`), `Credentials` (`SessionToken`, `SecretAccessKey`,
//! `Expiration` = now + min(`DurationSeconds`, `tokenTtlSeconds`), `AccessKeyId` `ASIA…`),
//! `Provider` (`arn:PARTITION:iam::ACCOUNT:oidc-provider/ISSUER-WITHOUT-SCHEME`) and
//! `ResponseMetadata/RequestId`. Errors are `ErrorResponse` XML (`Error/Type` `Sender`, `Code`,
//! `Message`, `RequestId`): `400 InvalidIdentityToken` (malformed or badly signed token:
//! `The web identity token that was passed could not be validated by AWS. …`; wrong issuer or
//! nothing configured: `No OpenIDConnect provider found in your account for ISSUER`; wrong
//! audience: `Incorrect token audience`), `400 ExpiredTokenException` (`Token expired: current
//! date/time N must be before the expiration date/time M`), `403 AccessDenied` (`Not authorized to
//! perform sts:AssumeRoleWithWebIdentity`: untrusted subject or another role), `400
//! ValidationError` (`1 validation error detected: Value … at '…' failed to satisfy constraint:
//! …`), `400 InvalidAction` (another `Action` or `Version`).
//!
//! ## Microsoft Entra ID — `POST /azure-login/TENANT/oauth2/v2.0/token`
//! References: <https://learn.microsoft.com/en-us/entra/identity-platform/v2-oauth2-client-creds-grant-flow#second-case-access-token-request-with-a-certificate>,
//! <https://learn.microsoft.com/en-us/entra/workload-id/workload-identity-federation> and
//! <https://learn.microsoft.com/en-us/entra/identity-platform/reference-error-codes>.
//! Form `grant_type=client_credentials`, `client_id`, `scope` (ending in `/.default`),
//! `client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer`,
//! `client_assertion` (the ServiceAccount token). The token's `aud` must contain
//! `api://AzureADTokenExchange`; the tenant and client id must be the `azure` of a trust entry of
//! the subject. Answers `200 {"token_type": "Bearer", "expires_in", "ext_expires_in",
//! "access_token"}`. Errors are `{"error", "error_description": "AADSTSn: …\r\nTrace ID: …\r\nCorrelation
//! ID: …\r\nTimestamp: …", "error_codes": [n], "timestamp", "trace_id", "correlation_id",
//! "error_uri"}`: `400 invalid_request` AADSTS900144 (a missing parameter), AADSTS90002 (unknown
//! tenant, or nothing configured), AADSTS50027 (malformed token); `400 unsupported_grant_type`
//! AADSTS70003; `400 invalid_scope` AADSTS1002012; `400 unauthorized_client` AADSTS700016
//! (unknown client id in the tenant); `401 invalid_client` AADSTS7000218 (no assertion),
//! AADSTS50013 (signature), AADSTS700024 (expired or not yet valid), AADSTS700211 (issuer),
//! AADSTS700212 (audience), AADSTS700213 (subject).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use ring::rand::SecureRandom as _;
use ring::{digest, signature};
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::AuthState;

/// How far `nbf` and `iat` may be in the future.
const SKEW_SECS: i64 = 30;
const GOOGLE_GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const TOKEN_TYPE_JWT: &str = "urn:ietf:params:oauth:token-type:jwt";
const TOKEN_TYPE_ID_TOKEN: &str = "urn:ietf:params:oauth:token-type:id_token";
const TOKEN_TYPE_ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";
const AWS_AUDIENCE: &str = "sts.amazonaws.com";
const AWS_XMLNS: &str = "https://sts.amazonaws.com/doc/2011-06-15/";
const AZURE_AUDIENCE: &str = "api://AzureADTokenExchange";
const AZURE_ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
const AZURE_FIC_HELP: &str = "Check your federated identity credential Subject, Audience and Issuer against the presented assertion. https://learn.microsoft.com/entra/workload-id/workload-identity-federation";
/// The clouds counted in the stats.
const CLOUDS: [&str; 4] = ["google", "googleImpersonation", "aws", "azure"];
/// The rejection reasons counted in the stats (see the module documentation).
const REASONS: [&str; 16] = [
    "notConfigured",
    "malformed",
    "badSignature",
    "wrongIssuer",
    "expired",
    "notYetValid",
    "wrongAudience",
    "untrustedSubject",
    "unknownProvider",
    "wrongRole",
    "unknownTenant",
    "unknownClient",
    "permissionDenied",
    "badBearer",
    "invalidRequest",
    "unsupportedGrantType",
];

/// The routes of this module (see the module documentation), issuing into `auth`.
pub fn routes(auth: AuthState) -> Router {
    Router::new()
        .route("/sim/identity", post(configure))
        .route("/sim/identity/stats", get(stats))
        .route("/google-sts/v1/token", post(google_sts))
        .route("/google-iam/v1/{*rest}", post(google_iam))
        .route("/aws-sts", get(aws_sts).post(aws_sts))
        .route("/aws-sts/", get(aws_sts).post(aws_sts))
        .route("/azure-login/{tenant}/oauth2/v2.0/token", post(azure_token))
        .with_state(IdentityState {
            auth,
            inner: Arc::default(),
        })
}

// ---------------------------------------------------------------------------------------------
// Configuration and state

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct IdentityConfig {
    issuer: String,
    jwks: Jwks,
    #[serde(default)]
    token_ttl_seconds: Option<u64>,
    #[serde(default)]
    trust: Vec<Trust>,
}

#[derive(Debug, Deserialize)]
struct Jwks {
    keys: Vec<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Trust {
    subject: String,
    #[serde(default)]
    google: Option<GoogleTrust>,
    #[serde(default)]
    aws: Option<AwsTrust>,
    #[serde(default)]
    azure: Option<AzureTrust>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct GoogleTrust {
    audience: String,
    #[serde(default)]
    service_accounts: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct AwsTrust {
    role_arn: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct AzureTrust {
    tenant_id: String,
    client_id: String,
}

/// A usable verification key of the JWKS.
#[derive(Debug)]
struct Key {
    kid: Option<String>,
    alg: Option<String>,
    material: Material,
}

#[derive(Debug)]
enum Material {
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
    },
    /// An uncompressed SEC1 point.
    P256(Vec<u8>),
    P384(Vec<u8>),
}

/// A validated configuration.
#[derive(Debug)]
struct Loaded {
    issuer: String,
    keys: Vec<Key>,
    ttl_secs: u64,
    trust: Vec<Trust>,
}

impl Loaded {
    fn google_audience_known(&self, audience: &str) -> bool {
        self.trust
            .iter()
            .filter_map(|t| t.google.as_ref())
            .any(|g| g.audience == audience)
    }
}

#[derive(Debug, Default)]
struct Inner {
    config: Option<Arc<Loaded>>,
    exchanges: BTreeMap<&'static str, u64>,
    by_credential: BTreeMap<String, u64>,
    rejected: BTreeMap<&'static str, u64>,
    rejected_by_cloud: BTreeMap<&'static str, u64>,
}

/// The workload identity state of one simulator (cheap to clone).
#[derive(Clone, Debug)]
pub struct IdentityState {
    auth: AuthState,
    inner: Arc<Mutex<Inner>>,
}

impl IdentityState {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn config(&self) -> Option<Arc<Loaded>> {
        self.lock().config.clone()
    }

    fn refused(&self, cloud: &'static str, reason: &'static str) {
        tracing::info!(cloud, reason, "workload identity exchange refused");
        let mut inner = self.lock();
        *inner.rejected.entry(reason).or_default() += 1;
        *inner.rejected_by_cloud.entry(cloud).or_default() += 1;
    }

    /// Counts an exchange and returns the credential id of what it issues.
    fn exchanged(&self, cloud: &'static str, subject: &str) -> String {
        tracing::info!(cloud, subject, "workload identity exchange");
        let credential = format!("identity:{cloud}:{subject}");
        let mut inner = self.lock();
        *inner.exchanges.entry(cloud).or_default() += 1;
        *inner.by_credential.entry(credential.clone()).or_default() += 1;
        credential
    }
}

/// `POST /sim/identity`.
async fn configure(State(state): State<IdentityState>, body: Bytes) -> Response {
    let loaded = serde_json::from_slice::<IdentityConfig>(&body)
        .map_err(|e| e.to_string())
        .and_then(load);
    match loaded {
        Ok(loaded) => {
            state.lock().config = Some(Arc::new(loaded));
            Json(json!({})).into_response()
        }
        Err(e) => super::render::error_response(
            StatusCode::BAD_REQUEST,
            format!("invalid identity config: {e}"),
        ),
    }
}

fn load(config: IdentityConfig) -> Result<Loaded, String> {
    if config.issuer.is_empty() {
        return Err("issuer is empty".into());
    }
    let mut keys = Vec::new();
    for (i, jwk) in config.jwks.keys.iter().enumerate() {
        if let Some(key) = parse_jwk(jwk).map_err(|e| format!("jwks.keys[{i}]: {e}"))? {
            keys.push(key);
        }
    }
    if keys.is_empty() {
        return Err("jwks has no usable RSA or EC (P-256, P-384) signing key".into());
    }
    let ttl_secs = config.token_ttl_seconds.unwrap_or(3600);
    if !(1..=86_400).contains(&ttl_secs) {
        return Err("tokenTtlSeconds must be 1 to 86400".into());
    }
    for (i, t) in config.trust.iter().enumerate() {
        if t.subject.is_empty() {
            return Err(format!("trust[{i}].subject is empty"));
        }
        if t.google.is_none() && t.aws.is_none() && t.azure.is_none() {
            return Err(format!("trust[{i}] names no cloud (google, aws, azure)"));
        }
        if let Some(aws) = &t.aws {
            parse_role_arn(&aws.role_arn)
                .ok_or_else(|| format!("trust[{i}].aws.roleArn is not a role ARN"))?;
        }
        if let Some(google) = &t.google
            && google.audience.is_empty()
        {
            return Err(format!("trust[{i}].google.audience is empty"));
        }
    }
    Ok(Loaded {
        issuer: config.issuer,
        keys,
        ttl_secs,
        trust: config.trust,
    })
}

fn b64url(s: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s.trim_end_matches('='))
        .ok()
}

/// A JWK as a verification key; `None` for a key of a type (or use) this module does not use.
fn parse_jwk(jwk: &Value) -> Result<Option<Key>, String> {
    let field = |name: &str| jwk.get(name).and_then(Value::as_str);
    if field("use").is_some_and(|u| u != "sig") {
        return Ok(None);
    }
    let bytes = |name: &str| {
        field(name)
            .and_then(b64url)
            .filter(|b| !b.is_empty())
            .ok_or_else(|| format!("{name} is missing or not base64url"))
    };
    let material = match field("kty") {
        Some("RSA") => {
            let strip = |b: Vec<u8>| {
                let first = b.iter().position(|&x| x != 0).unwrap_or(b.len());
                b[first..].to_vec()
            };
            Material::Rsa {
                n: strip(bytes("n")?),
                e: strip(bytes("e")?),
            }
        }
        Some("EC") => {
            let (x, y) = (bytes("x")?, bytes("y")?);
            let len = match field("crv") {
                Some("P-256") => 32,
                Some("P-384") => 48,
                _ => return Ok(None),
            };
            if x.len() != len || y.len() != len {
                return Err("x or y has the wrong length for the curve".into());
            }
            let point = [&[4u8][..], &x, &y].concat();
            if len == 32 {
                Material::P256(point)
            } else {
                Material::P384(point)
            }
        }
        _ => return Ok(None),
    };
    Ok(Some(Key {
        kid: field("kid").map(str::to_owned),
        alg: field("alg").map(str::to_owned),
        material,
    }))
}

/// `GET /sim/identity/stats`.
async fn stats(State(state): State<IdentityState>) -> Response {
    let inner = state.lock();
    let zeroed = |names: &[&'static str], counts: &BTreeMap<&'static str, u64>| {
        let mut all: BTreeMap<&str, u64> = names.iter().map(|n| (*n, 0)).collect();
        all.extend(counts.iter().map(|(k, v)| (*k, *v)));
        all
    };
    Json(json!({
        "configured": inner.config.is_some(),
        "exchanges": zeroed(&CLOUDS, &inner.exchanges),
        "exchangesByCredential": inner.by_credential,
        "rejected": zeroed(&REASONS, &inner.rejected),
        "rejectedByCloud": zeroed(&CLOUDS, &inner.rejected_by_cloud),
    }))
    .into_response()
}

// ---------------------------------------------------------------------------------------------
// Verifying a ServiceAccount token

/// The verified claims this module uses.
#[derive(Debug)]
struct Claims {
    sub: String,
    aud: Vec<String>,
    exp: i64,
}

/// Why a token does not verify.
#[derive(Debug, PartialEq)]
enum Failure {
    Malformed(&'static str),
    /// No key of the JWKS fits the token's `kid` and `alg`.
    KeyNotFound,
    BadSignature,
    WrongIssuer(String),
    Expired {
        exp: i64,
        now: i64,
    },
    NotYetValid {
        at: i64,
        now: i64,
        exp: i64,
    },
    WrongAudience(Vec<String>),
}

impl Failure {
    fn reason(&self) -> &'static str {
        match self {
            Failure::Malformed(_) => "malformed",
            Failure::KeyNotFound | Failure::BadSignature => "badSignature",
            Failure::WrongIssuer(_) => "wrongIssuer",
            Failure::Expired { .. } => "expired",
            Failure::NotYetValid { .. } => "notYetValid",
            Failure::WrongAudience(_) => "wrongAudience",
        }
    }
}

fn json_part(part: &str) -> Option<serde_json::Map<String, Value>> {
    b64url(part).and_then(|b| serde_json::from_slice(&b).ok())
}

fn number(claims: &serde_json::Map<String, Value>, name: &str) -> Result<Option<i64>, Failure> {
    match claims.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_i64()
            .or_else(|| v.as_f64().map(|f| f.floor() as i64))
            .map(Some)
            .ok_or(Failure::Malformed("a time claim is not a number")),
    }
}

/// The unverified `iss` of a token (for messages about unknown issuers).
fn unverified_issuer(token: &str) -> String {
    token
        .split('.')
        .nth(1)
        .and_then(json_part)
        .and_then(|c| c.get("iss").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_default()
}

/// Verifies `token` (signature, issuer, times, audience) at `now` (unix seconds).
fn verify(
    config: &Loaded,
    token: &str,
    audience_ok: &dyn Fn(&str) -> bool,
    now: i64,
) -> Result<Claims, Failure> {
    let parts: Vec<&str> = token.trim().split('.').collect();
    let [header, payload, sig] = parts[..] else {
        return Err(Failure::Malformed("not a compact JWS (three parts)"));
    };
    let header_json =
        json_part(header).ok_or(Failure::Malformed("the header is not base64url JSON"))?;
    let claims =
        json_part(payload).ok_or(Failure::Malformed("the payload is not base64url JSON"))?;
    let iss = claims
        .get("iss")
        .and_then(Value::as_str)
        .ok_or(Failure::Malformed("no iss"))?;
    if iss != config.issuer {
        return Err(Failure::WrongIssuer(iss.to_owned()));
    }
    let signature = b64url(sig).ok_or(Failure::Malformed("the signature is not base64url"))?;
    let alg = header_json
        .get("alg")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let kid = header_json.get("kid").and_then(Value::as_str);
    let signed = &token.trim().as_bytes()[..header.len() + 1 + payload.len()];
    verify_signature(config, alg, kid, signed, &signature)?;
    let exp = number(&claims, "exp")?.ok_or(Failure::Malformed("no exp"))?;
    if exp <= now {
        return Err(Failure::Expired { exp, now });
    }
    for name in ["nbf", "iat"] {
        if let Some(at) = number(&claims, name)?
            && at > now + SKEW_SECS
        {
            return Err(Failure::NotYetValid { at, now, exp });
        }
    }
    let aud: Vec<String> = match claims.get("aud") {
        Some(Value::String(a)) => vec![a.clone()],
        Some(Value::Array(all)) => all
            .iter()
            .map(|a| a.as_str().map(str::to_owned))
            .collect::<Option<_>>()
            .ok_or(Failure::Malformed("aud is not a string array"))?,
        _ => return Err(Failure::Malformed("no aud")),
    };
    if !aud.iter().any(|a| audience_ok(a)) {
        return Err(Failure::WrongAudience(aud));
    }
    let sub = claims
        .get("sub")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or(Failure::Malformed("no sub"))?;
    Ok(Claims {
        sub: sub.to_owned(),
        aud,
        exp,
    })
}

fn verify_signature(
    config: &Loaded,
    alg: &str,
    kid: Option<&str>,
    signed: &[u8],
    sig: &[u8],
) -> Result<(), Failure> {
    let candidates = config.keys.iter().filter(|k| {
        kid.is_none_or(|kid| k.kid.as_deref() == Some(kid))
            && k.alg.as_deref().is_none_or(|a| a == alg)
    });
    let mut found = false;
    for key in candidates {
        let ok = match (&key.material, alg) {
            (Material::Rsa { n, e }, "RS256" | "RS384" | "RS512") => {
                let params = match alg {
                    "RS256" => &signature::RSA_PKCS1_2048_8192_SHA256,
                    "RS384" => &signature::RSA_PKCS1_2048_8192_SHA384,
                    _ => &signature::RSA_PKCS1_2048_8192_SHA512,
                };
                signature::RsaPublicKeyComponents { n, e }
                    .verify(params, signed, sig)
                    .is_ok()
            }
            (Material::P256(point), "ES256") => {
                signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
                    .verify(signed, sig)
                    .is_ok()
            }
            (Material::P384(point), "ES384") => {
                signature::UnparsedPublicKey::new(&signature::ECDSA_P384_SHA384_FIXED, point)
                    .verify(signed, sig)
                    .is_ok()
            }
            _ => continue,
        };
        found = true;
        if ok {
            return Ok(());
        }
    }
    Err(if found {
        Failure::BadSignature
    } else {
        Failure::KeyNotFound
    })
}

// ---------------------------------------------------------------------------------------------
// Shared helpers

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn random(n: usize) -> Option<Vec<u8>> {
    let mut bytes = vec![0u8; n];
    ring::rand::SystemRandom::new().fill(&mut bytes).ok()?;
    Some(bytes)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A random opaque token `PREFIX-<64 hex>`.
fn opaque(prefix: &str) -> Option<String> {
    random(32).map(|b| format!("{prefix}-{}", hex(&b)))
}

/// A random UUID-shaped id.
fn uuid() -> String {
    let h = hex(&random(16).unwrap_or_else(|| vec![0; 16]));
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

fn rfc3339(secs: i64) -> String {
    jiff::Timestamp::from_second(secs)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// The request's parameters: a form body, or a JSON object body (string values; arrays joined
/// with spaces).
fn params(headers: &HeaderMap, body: &[u8]) -> HashMap<String, String> {
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("json"))
        || body.trim_ascii_start().starts_with(b"{");
    if !json {
        return url::form_urlencoded::parse(body).into_owned().collect();
    }
    let Ok(object) = serde_json::from_slice::<serde_json::Map<String, Value>>(body) else {
        return HashMap::new();
    };
    object
        .into_iter()
        .filter_map(|(k, v)| {
            let v = match v {
                Value::String(s) => s,
                Value::Array(all) => all
                    .iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(" "),
                Value::Null => return None,
                other => other.to_string(),
            };
            Some((k, v))
        })
        .collect()
}

fn given<'a>(params: &'a HashMap<String, String>, name: &str) -> Option<&'a str> {
    params
        .get(name)
        .map(String::as_str)
        .filter(|v| !v.is_empty())
}

// ---------------------------------------------------------------------------------------------
// Google STS

/// A refusal: reason, HTTP status, OAuth error code, description.
type OAuthRefusal = (&'static str, StatusCode, &'static str, String);

/// `POST /google-sts/v1/token`.
async fn google_sts(
    State(state): State<IdentityState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let params = params(&headers, &body);
    match google_exchange(&state, &params) {
        Ok(response) => response,
        Err((reason, status, error, description)) => {
            state.refused("google", reason);
            (
                status,
                Json(json!({"error": error, "error_description": description})),
            )
                .into_response()
        }
    }
}

fn google_exchange(
    state: &IdentityState,
    params: &HashMap<String, String>,
) -> Result<Response, OAuthRefusal> {
    let invalid_request = |message: String| {
        (
            "invalidRequest",
            StatusCode::BAD_REQUEST,
            "invalid_request",
            message,
        )
    };
    let invalid_value = |name: &str, hint: &str| {
        invalid_request(format!(
            "Invalid value for \"{name}\". {hint}See https://cloud.google.com/iam/docs/reference/sts/rest/v1/TopLevel/token for the list of possible formats."
        ))
    };
    match given(params, "grant_type") {
        None => return Err(invalid_value("grant_type", "")),
        Some(GOOGLE_GRANT_TYPE) => {}
        Some(other) => {
            return Err((
                "unsupportedGrantType",
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                format!(
                    "Unsupported grant type: {other}. The only supported value is {GOOGLE_GRANT_TYPE}."
                ),
            ));
        }
    }
    let audience = given(params, "audience").ok_or_else(|| {
        invalid_value(
            "audience",
            "This value should be the full resource name of the Identity Provider. ",
        )
    })?;
    match given(params, "subject_token_type") {
        Some(TOKEN_TYPE_JWT | TOKEN_TYPE_ID_TOKEN) => {}
        _ => {
            return Err(invalid_value(
                "subject_token_type",
                "Supported values for a workload identity pool OIDC provider are urn:ietf:params:oauth:token-type:jwt and urn:ietf:params:oauth:token-type:id_token. ",
            ));
        }
    }
    if given(params, "requested_token_type") != Some(TOKEN_TYPE_ACCESS_TOKEN) {
        return Err(invalid_value(
            "requested_token_type",
            "The only supported value is urn:ietf:params:oauth:token-type:access_token. ",
        ));
    }
    let subject_token =
        given(params, "subject_token").ok_or_else(|| invalid_value("subject_token", ""))?;
    let invalid_target = |reason| {
        (
            reason,
            StatusCode::BAD_REQUEST,
            "invalid_target",
            "The target service indicated by the \"audience\" parameters is invalid. This might either be because the pool or provider is disabled or deleted or because it doesn't exist.".to_owned(),
        )
    };
    let config = state
        .config()
        .ok_or_else(|| invalid_target("notConfigured"))?;
    if !config.google_audience_known(audience) {
        return Err(invalid_target("unknownProvider"));
    }
    let https = format!("https:{audience}");
    let now = now_ms() / 1000;
    let now_secs = now as i64;
    let claims = verify(
        &config,
        subject_token,
        &|a| a == audience || a == https,
        now_secs,
    )
    .map_err(|failure| {
        let description = match &failure {
            Failure::Malformed(why) => format!("Unable to parse the ID Token: {why}."),
            Failure::KeyNotFound => {
                "Invalid ID Token: no key of the provider's JWKS matches the token's key id and algorithm.".into()
            }
            Failure::BadSignature => {
                "Invalid ID Token: the signature cannot be verified with the provider's JWKS.".into()
            }
            Failure::WrongIssuer(iss) => format!(
                "The issuer in ID Token {iss} does not match the expected ones: {}.",
                config.issuer
            ),
            Failure::Expired { exp, now } => {
                format!("ID Token expired at {exp}; the current time is {now}.")
            }
            Failure::NotYetValid { at, now, .. } => {
                format!("ID Token is not valid before {at}; the current time is {now}.")
            }
            Failure::WrongAudience(aud) => format!(
                "The audience in ID Token [{}] does not match the expected audience {audience}.",
                aud.join(", ")
            ),
        };
        (
            failure.reason(),
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            description,
        )
    })?;
    let trusted = config.trust.iter().any(|t| {
        t.subject == claims.sub && t.google.as_ref().is_some_and(|g| g.audience == audience)
    });
    if !trusted {
        return Err((
            "untrustedSubject",
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "The given credential is rejected by the attribute condition.".into(),
        ));
    }
    // A federated token lives at most as long as the subject token.
    let ttl = config
        .ttl_secs
        .min(u64::try_from(claims.exp - now_secs).unwrap_or(1))
        .max(1);
    let token = opaque("sim-sts").ok_or_else(|| {
        (
            "invalidRequest",
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "no randomness".to_owned(),
        )
    })?;
    let credential = state.exchanged("google", &claims.sub);
    state
        .auth
        .accept_issued_token(token.clone(), credential, now_ms() + ttl * 1000);
    Ok(Json(json!({
        "access_token": token,
        "issued_token_type": TOKEN_TYPE_ACCESS_TOKEN,
        "token_type": "Bearer",
        "expires_in": ttl,
    }))
    .into_response())
}

// ---------------------------------------------------------------------------------------------
// Google IAM Credentials

fn google_error(status: StatusCode, message: &str, details: Value) -> Response {
    let mut error = json!({
        "code": status.as_u16(),
        "message": message,
        "status": super::render::status_name(status),
    });
    if details.as_array().is_some_and(|d| !d.is_empty()) {
        error["details"] = details;
    }
    let mut response = (status, Json(json!({ "error": error }))).into_response();
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"https://accounts.google.com/\""),
        );
    }
    response
}

/// `POST /google-iam/v1/projects/-/serviceAccounts/EMAIL:generateAccessToken`.
async fn google_iam(
    State(state): State<IdentityState>,
    Path(rest): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let email = rest
        .strip_suffix(":generateAccessToken")
        .and_then(|p| p.strip_prefix("projects/"))
        .and_then(|p| p.split_once("/serviceAccounts/"))
        .filter(|(project, email)| !project.is_empty() && !email.is_empty() && !email.contains('/'))
        .map(|(_, email)| email.to_owned());
    let Some(email) = email else {
        return google_error(
            StatusCode::NOT_FOUND,
            &format!("Method not found: {rest}"),
            json!([]),
        );
    };
    match impersonate(&state, &email, &headers, &body) {
        Ok(response) => response,
        Err((reason, status, message, details)) => {
            state.refused("googleImpersonation", reason);
            google_error(status, &message, details)
        }
    }
}

/// A refusal: reason, status, message, `details`.
type GoogleRefusal = (&'static str, StatusCode, String, Value);

fn impersonate(
    state: &IdentityState,
    email: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, GoogleRefusal> {
    let unauthenticated = || {
        (
            "badBearer",
            StatusCode::UNAUTHORIZED,
            "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project.".to_owned(),
            json!([]),
        )
    };
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(unauthenticated)?;
    let subject = match state.auth.issued_token(bearer.trim()) {
        Some((credential, expires_at_ms)) if expires_at_ms > now_ms() => credential
            .strip_prefix("identity:google:")
            .map(str::to_owned)
            .ok_or_else(unauthenticated)?,
        _ => return Err(unauthenticated()),
    };
    let invalid = |message: &str| {
        (
            "invalidRequest",
            StatusCode::BAD_REQUEST,
            message.to_owned(),
            json!([]),
        )
    };
    let request: serde_json::Map<String, Value> = serde_json::from_slice(body)
        .map_err(|_| invalid("Invalid JSON payload received. Expected an object."))?;
    let scopes: Vec<&str> = match request.get("scope") {
        Some(Value::Array(all)) => all.iter().filter_map(Value::as_str).collect(),
        Some(Value::String(one)) => vec![one.as_str()],
        _ => vec![],
    };
    if scopes.is_empty() || scopes.iter().any(|s| s.is_empty()) {
        return Err(invalid("Scope required."));
    }
    let lifetime = match request.get("lifetime") {
        None | Some(Value::Null) => 3600,
        Some(Value::String(l)) => l
            .strip_suffix('s')
            .and_then(|n| n.parse::<f64>().ok())
            .filter(|n| n.is_finite() && *n >= 1.0 && *n <= 43_200.0)
            .map(|n| n.ceil() as u64)
            .ok_or_else(|| {
                invalid(
                    "The lifetime must be a duration in seconds (\"3600s\") between 1s and 43200s.",
                )
            })?,
        Some(_) => {
            return Err(invalid(
                "Invalid value at 'lifetime' (type.googleapis.com/google.protobuf.Duration)",
            ));
        }
    };
    let denied = || {
        (
            "permissionDenied",
            StatusCode::FORBIDDEN,
            "Permission 'iam.serviceAccounts.getAccessToken' denied on resource (or it may not exist).".to_owned(),
            json!([{
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "IAM_PERMISSION_DENIED",
                "domain": "iam.googleapis.com",
                "metadata": {"permission": "iam.serviceAccounts.getAccessToken"}
            }]),
        )
    };
    let config = state.config().ok_or_else(denied)?;
    let allowed = config.trust.iter().any(|t| {
        t.subject == subject
            && t.google
                .as_ref()
                .is_some_and(|g| g.service_accounts.iter().any(|e| e == email))
    });
    if !allowed {
        return Err(denied());
    }
    let ttl = lifetime.min(config.ttl_secs);
    let token = opaque("sim-iam").ok_or_else(|| invalid("no randomness"))?;
    let now = now_ms();
    let expires_at_ms = now + ttl * 1000;
    let credential = state.exchanged("googleImpersonation", &subject);
    state
        .auth
        .accept_issued_token(token.clone(), credential, expires_at_ms);
    Ok(Json(json!({
        "accessToken": token,
        "expireTime": rfc3339((expires_at_ms / 1000) as i64),
    }))
    .into_response())
}

// ---------------------------------------------------------------------------------------------
// AWS STS

/// `(partition, account, role name)` of `arn:PARTITION:iam::ACCOUNT:role/PATH/NAME`.
fn parse_role_arn(arn: &str) -> Option<(&str, &str, &str)> {
    let rest = arn.strip_prefix("arn:")?;
    let (partition, rest) = rest.split_once(':')?;
    let rest = rest.strip_prefix("iam::")?;
    let (account, resource) = rest.split_once(':')?;
    let path = resource.strip_prefix("role/")?;
    let name = path.rsplit('/').next()?;
    let ok = !partition.is_empty()
        && account.len() == 12
        && account.bytes().all(|b| b.is_ascii_digit())
        && !name.is_empty();
    ok.then_some((partition, account, name))
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;")
}

const BASE32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

fn base32(bytes: &[u8], len: usize) -> String {
    bytes
        .iter()
        .take(len)
        .map(|b| BASE32[usize::from(b % 32)] as char)
        .collect()
}

fn aws_xml(status: StatusCode, request_id: &str, body: String) -> Response {
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/xml"));
    if let Ok(id) = HeaderValue::from_str(request_id) {
        headers.insert("x-amzn-requestid", id);
    }
    response
}

/// A refusal: reason, status, error code, message.
type AwsRefusal = (&'static str, StatusCode, &'static str, String);

/// `GET`/`POST /aws-sts/`.
async fn aws_sts(
    State(state): State<IdentityState>,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> Response {
    let mut params: HashMap<String, String> =
        url::form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes())
            .into_owned()
            .collect();
    if method == Method::POST {
        params.extend(url::form_urlencoded::parse(&body).into_owned());
    }
    let request_id = uuid();
    match assume_role(&state, &params, &request_id) {
        Ok(body) => aws_xml(StatusCode::OK, &request_id, body),
        Err((reason, status, code, message)) => {
            state.refused("aws", reason);
            aws_xml(
                status,
                &request_id,
                format!(
                    "<ErrorResponse xmlns=\"{AWS_XMLNS}\">\n  <Error>\n    <Type>Sender</Type>\n    <Code>{code}</Code>\n    <Message>{}</Message>\n  </Error>\n  <RequestId>{request_id}</RequestId>\n</ErrorResponse>\n",
                    xml_escape(&message)
                ),
            )
        }
    }
}

fn assume_role(
    state: &IdentityState,
    params: &HashMap<String, String>,
    request_id: &str,
) -> Result<String, AwsRefusal> {
    let validation = |message: String| {
        (
            "invalidRequest",
            StatusCode::BAD_REQUEST,
            "ValidationError",
            format!("1 validation error detected: {message}"),
        )
    };
    let action = given(params, "Action").unwrap_or_default();
    let version = given(params, "Version").unwrap_or("2011-06-15");
    if action != "AssumeRoleWithWebIdentity" || version != "2011-06-15" {
        return Err((
            "invalidRequest",
            StatusCode::BAD_REQUEST,
            "InvalidAction",
            format!("Could not find operation {action} for version {version}"),
        ));
    }
    let required = |name: &str, member: &str| {
        given(params, name).ok_or_else(|| {
            validation(format!(
                "Value null at '{member}' failed to satisfy constraint: Member must not be null"
            ))
        })
    };
    let role_arn = required("RoleArn", "roleArn")?;
    let session = required("RoleSessionName", "roleSessionName")?;
    let token = required("WebIdentityToken", "webIdentityToken")?;
    if !(20..=2048).contains(&role_arn.len()) {
        return Err(validation(format!(
            "Value '{role_arn}' at 'roleArn' failed to satisfy constraint: Member must have length greater than or equal to 20"
        )));
    }
    if !(2..=64).contains(&session.len()) {
        return Err(validation(format!(
            "Value '{session}' at 'roleSessionName' failed to satisfy constraint: Member must have length {}",
            if session.len() < 2 {
                "greater than or equal to 2"
            } else {
                "less than or equal to 64"
            }
        )));
    }
    if !session
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"_+=,.@-".contains(&b))
    {
        return Err(validation(format!(
            "Value '{session}' at 'roleSessionName' failed to satisfy constraint: Member must satisfy regular expression pattern: [\\w+=,.@-]*"
        )));
    }
    let duration = match given(params, "DurationSeconds") {
        None => 3600,
        Some(d) => {
            let value = d.parse::<i64>().map_err(|_| {
                validation(format!(
                    "Value '{d}' at 'durationSeconds' failed to satisfy constraint: Member must be an integer"
                ))
            })?;
            if value < 900 {
                return Err(validation(format!(
                    "Value '{value}' at 'durationSeconds' failed to satisfy constraint: Member must have value greater than or equal to 900"
                )));
            }
            if value > 43_200 {
                return Err(validation(format!(
                    "Value '{value}' at 'durationSeconds' failed to satisfy constraint: Member must have value less than or equal to 43200"
                )));
            }
            value as u64
        }
    };
    let invalid_token = |reason, message: String| {
        (
            reason,
            StatusCode::BAD_REQUEST,
            "InvalidIdentityToken",
            message,
        )
    };
    let no_provider =
        |iss: &str| format!("No OpenIDConnect provider found in your account for {iss}");
    let Some(config) = state.config() else {
        return Err(invalid_token(
            "notConfigured",
            no_provider(&unverified_issuer(token)),
        ));
    };
    let now = (now_ms() / 1000) as i64;
    let claims = verify(&config, token, &|a| a == AWS_AUDIENCE, now).map_err(|failure| {
        let reason = failure.reason();
        match failure {
            Failure::WrongIssuer(iss) => invalid_token(reason, no_provider(&iss)),
            Failure::WrongAudience(_) => invalid_token(reason, "Incorrect token audience".into()),
            Failure::Expired { exp, now } => (
                reason,
                StatusCode::BAD_REQUEST,
                "ExpiredTokenException",
                format!(
                    "Token expired: current date/time {now} must be before the expiration date/time {exp}"
                ),
            ),
            Failure::KeyNotFound => invalid_token(
                reason,
                "Couldn't retrieve verification key from your identity provider,  please reference AssumeRoleWithWebIdentity documentation for requirements".into(),
            ),
            Failure::Malformed(_) | Failure::BadSignature | Failure::NotYetValid { .. } => {
                invalid_token(
                    reason,
                    "The web identity token that was passed could not be validated by AWS. Get a new identity token from the identity provider and then retry the request.".into(),
                )
            }
        }
    })?;
    let roles: Vec<&str> = config
        .trust
        .iter()
        .filter(|t| t.subject == claims.sub)
        .filter_map(|t| t.aws.as_ref().map(|a| a.role_arn.as_str()))
        .collect();
    if !roles.contains(&role_arn) {
        return Err((
            if roles.is_empty() {
                "untrustedSubject"
            } else {
                "wrongRole"
            },
            StatusCode::FORBIDDEN,
            "AccessDenied",
            "Not authorized to perform sts:AssumeRoleWithWebIdentity".into(),
        ));
    }
    let (partition, account, role_name) = parse_role_arn(role_arn).ok_or_else(|| {
        validation(format!(
            "Value '{role_arn}' at 'roleArn' failed to satisfy constraint: not a role ARN"
        ))
    })?;
    let randomness = || {
        (
            "invalidRequest",
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalFailure",
            "no randomness".to_owned(),
        )
    };
    let access_key_id = format!("ASIA{}", base32(&random(16).ok_or_else(randomness)?, 16));
    let secret_access_key =
        base64::engine::general_purpose::STANDARD.encode(random(30).ok_or_else(randomness)?);
    let session_token =
        base64::engine::general_purpose::STANDARD.encode(random(96).ok_or_else(randomness)?);
    let role_id = format!(
        "AROA{}",
        base32(
            digest::digest(&digest::SHA256, role_arn.as_bytes()).as_ref(),
            17
        )
    );
    let ttl = duration.min(config.ttl_secs);
    let expires_at_ms = now_ms() + ttl * 1000;
    let provider = format!(
        "arn:{partition}:iam::{account}:oidc-provider/{}",
        config
            .issuer
            .trim_start_matches("https://")
            .trim_start_matches("http://")
            .trim_end_matches('/')
    );
    let credential = state.exchanged("aws", &claims.sub);
    state.auth.accept_temporary_aws_key(
        credential,
        access_key_id.clone(),
        secret_access_key.clone(),
        session_token.clone(),
        expires_at_ms,
    );
    let audience = claims
        .aud
        .iter()
        .find(|a| *a == AWS_AUDIENCE)
        .map_or(AWS_AUDIENCE, String::as_str);
    let e = xml_escape;
    Ok(format!(
        "<AssumeRoleWithWebIdentityResponse xmlns=\"{AWS_XMLNS}\">
  <AssumeRoleWithWebIdentityResult>
    <SubjectFromWebIdentityToken>{sub}</SubjectFromWebIdentityToken>
    <Audience>{audience}</Audience>
    <AssumedRoleUser>
      <Arn>arn:{partition}:sts::{account}:assumed-role/{role_name}/{session}</Arn>
      <AssumedRoleId>{role_id}:{session}</AssumedRoleId>
    </AssumedRoleUser>
    <Credentials>
      <SessionToken>{session_token}</SessionToken>
      <SecretAccessKey>{secret_access_key}</SecretAccessKey>
      <Expiration>{expiration}</Expiration>
      <AccessKeyId>{access_key_id}</AccessKeyId>
    </Credentials>
    <Provider>{provider}</Provider>
  </AssumeRoleWithWebIdentityResult>
  <ResponseMetadata>
    <RequestId>{request_id}</RequestId>
  </ResponseMetadata>
</AssumeRoleWithWebIdentityResponse>
",
        sub = e(&claims.sub),
        audience = e(audience),
        partition = e(partition),
        account = e(account),
        role_name = e(role_name),
        session = e(session),
        session_token = e(&session_token),
        secret_access_key = e(&secret_access_key),
        expiration = rfc3339((expires_at_ms / 1000) as i64),
        provider = e(&provider),
    ))
}

// ---------------------------------------------------------------------------------------------
// Microsoft Entra ID

/// A refusal: reason, status, OAuth error, AADSTS code, message.
type AzureRefusal = (&'static str, StatusCode, &'static str, u32, String);

/// `POST /azure-login/{tenant}/oauth2/v2.0/token`.
async fn azure_token(
    State(state): State<IdentityState>,
    Path(tenant): Path<String>,
    body: Bytes,
) -> Response {
    let params: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    match azure_exchange(&state, &tenant, &params) {
        Ok(response) => response,
        Err((reason, status, error, code, message)) => {
            state.refused("azure", reason);
            let trace_id = uuid();
            let correlation_id = uuid();
            let now = (now_ms() / 1000) as i64;
            let timestamp = jiff::Timestamp::from_second(now)
                .map(|t| t.strftime("%Y-%m-%d %H:%M:%SZ").to_string())
                .unwrap_or_default();
            (
                status,
                Json(json!({
                    "error": error,
                    "error_description": format!(
                        "AADSTS{code}: {message}\r\nTrace ID: {trace_id}\r\nCorrelation ID: {correlation_id}\r\nTimestamp: {timestamp}"
                    ),
                    "error_codes": [code],
                    "timestamp": timestamp,
                    "trace_id": trace_id,
                    "correlation_id": correlation_id,
                    "error_uri": format!("https://login.microsoftonline.com/error?code={code}"),
                })),
            )
                .into_response()
        }
    }
}

fn azure_exchange(
    state: &IdentityState,
    tenant: &str,
    params: &HashMap<String, String>,
) -> Result<Response, AzureRefusal> {
    let missing = |name: &str| {
        (
            "invalidRequest",
            StatusCode::BAD_REQUEST,
            "invalid_request",
            900_144,
            format!("The request body must contain the following parameter: '{name}'."),
        )
    };
    match given(params, "grant_type") {
        None => return Err(missing("grant_type")),
        Some("client_credentials") => {}
        Some(other) => {
            return Err((
                "unsupportedGrantType",
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                70_003,
                format!("The app requested an unsupported grant type '{other}'."),
            ));
        }
    }
    let client_id = given(params, "client_id").ok_or_else(|| missing("client_id"))?;
    let scope = given(params, "scope").ok_or_else(|| missing("scope"))?;
    if !scope.split(' ').all(|s| s.ends_with("/.default")) {
        return Err((
            "invalidRequest",
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            1_002_012,
            format!(
                "The provided value for scope {scope} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI)."
            ),
        ));
    }
    let assertion = match (
        given(params, "client_assertion_type"),
        given(params, "client_assertion"),
    ) {
        (Some(AZURE_ASSERTION_TYPE), Some(assertion)) => assertion,
        _ => {
            return Err((
                "invalidRequest",
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                7_000_218,
                "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.".into(),
            ));
        }
    };
    let tenant_not_found = |reason| {
        (
            reason,
            StatusCode::BAD_REQUEST,
            "invalid_request",
            90_002,
            format!(
                "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud. Check with your subscription administrator, this may happen if there are no active subscriptions for the tenant."
            ),
        )
    };
    let config = state
        .config()
        .ok_or_else(|| tenant_not_found("notConfigured"))?;
    let apps: Vec<(&str, &AzureTrust)> = config
        .trust
        .iter()
        .filter_map(|t| t.azure.as_ref().map(|a| (t.subject.as_str(), a)))
        .filter(|(_, a)| a.tenant_id.eq_ignore_ascii_case(tenant))
        .collect();
    if apps.is_empty() {
        return Err(tenant_not_found("unknownTenant"));
    }
    if !apps
        .iter()
        .any(|(_, a)| a.client_id.eq_ignore_ascii_case(client_id))
    {
        return Err((
            "unknownClient",
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            700_016,
            format!(
                "Application with identifier '{client_id}' was not found in the directory '{tenant}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant."
            ),
        ));
    }
    let now = (now_ms() / 1000) as i64;
    let claims = verify(&config, assertion, &|a| a == AZURE_AUDIENCE, now).map_err(|failure| {
        let reason = failure.reason();
        let client = |code, message: String| {
            (
                reason,
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                code,
                message,
            )
        };
        let entra_time = |secs: i64| {
            jiff::Timestamp::from_second(secs)
                .map(|t| t.strftime("%Y-%m-%dT%H:%M:%S.0000000Z").to_string())
                .unwrap_or_default()
        };
        match failure {
            Failure::Malformed(_) => (
                reason,
                StatusCode::BAD_REQUEST,
                "invalid_request",
                50_027,
                "JWT token is invalid or malformed.".into(),
            ),
            Failure::KeyNotFound => client(
                50_013,
                "Assertion failed signature validation. [Reason - The key was not found.]".into(),
            ),
            Failure::BadSignature => client(
                50_013,
                "Assertion failed signature validation. [Reason - Key was found, but use of the key to verify the signature failed.]".into(),
            ),
            Failure::WrongIssuer(iss) => client(
                700_211,
                format!("No matching federated identity record found for presented assertion issuer '{iss}'. {AZURE_FIC_HELP}"),
            ),
            Failure::WrongAudience(aud) => client(
                700_212,
                format!(
                    "No matching federated identity record found for presented assertion audience '{}'. {AZURE_FIC_HELP}",
                    aud.join(",")
                ),
            ),
            Failure::Expired { exp, now } => client(
                700_024,
                format!(
                    "Client assertion is not within its valid time range. Current time: {}, expiry time of assertion {}.",
                    entra_time(now),
                    entra_time(exp)
                ),
            ),
            Failure::NotYetValid { at, now, exp } => client(
                700_024,
                format!(
                    "Client assertion is not within its valid time range. Current time: {}, assertion valid from {}, expiry time of assertion {}.",
                    entra_time(now),
                    entra_time(at),
                    entra_time(exp)
                ),
            ),
        }
    })?;
    let trusted = apps
        .iter()
        .any(|(subject, a)| *subject == claims.sub && a.client_id.eq_ignore_ascii_case(client_id));
    if !trusted {
        return Err((
            "untrustedSubject",
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            700_213,
            format!(
                "No matching federated identity record found for presented assertion subject '{}'. {AZURE_FIC_HELP}",
                claims.sub
            ),
        ));
    }
    let token = opaque("sim-aad").ok_or_else(|| {
        (
            "invalidRequest",
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            0,
            "no randomness".to_owned(),
        )
    })?;
    let ttl = config.ttl_secs;
    let credential = state.exchanged("azure", &claims.sub);
    state
        .auth
        .accept_issued_token(token.clone(), credential, now_ms() + ttl * 1000);
    Ok(Json(json!({
        "token_type": "Bearer",
        "expires_in": ttl,
        "ext_expires_in": ttl,
        "access_token": token,
    }))
    .into_response())
}

#[cfg(test)]
#[path = "identity_tests.rs"]
mod tests;
