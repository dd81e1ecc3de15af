//! Workload identity (`spec.auth.workloadIdentity`): a token of a Kubernetes ServiceAccount,
//! obtained from the API server's TokenRequest with the audience the cloud requires, exchanged
//! for the cloud's credentials:
//!
//! - **Google** (workload identity federation): the Security Token Service's token exchange
//!   (RFC 8693), then optionally `generateAccessToken` to impersonate a service account; the
//!   result is a bearer token.
//! - **AWS** (IAM roles for service accounts): STS `AssumeRoleWithWebIdentity`; the temporary
//!   credentials sign requests (SigV4 with `X-Amz-Security-Token`).
//! - **Azure** (workload identity): the Microsoft identity platform's client-credentials grant
//!   with the token as client assertion; the result is a bearer token.
//!
//! Request building and answer reading are pure functions here (tested against the clouds'
//! documented payloads, `tests/fixtures/upstream/identity/`); the ServiceAccount token comes from
//! a [`ServiceAccountTokens`] (the controller's TokenRequest), the exchanges go through the
//! provider's [`TokenTransport`] (its address policy applies). The [`super::Authenticator`]
//! caches what [`WorkloadIdentity::obtain`] returns and refreshes it before it expires.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use futures::future::BoxFuture;
use reqwest::Url;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::auth::{AuthError, GOOGLE_DEFAULT_SCOPE, TokenCall, TokenTransport, scrub};
use super::sigv4::AwsKeys;
use crate::api;

/// Google's Security Token Service token endpoint.
pub const GOOGLE_STS_URL: &str = "https://sts.googleapis.com/v1/token";
/// Google's IAM Service Account Credentials API root.
pub const GOOGLE_IAM_CREDENTIALS_URL: &str = "https://iamcredentials.googleapis.com/v1";
/// AWS STS's global endpoint.
pub const AWS_STS_URL: &str = "https://sts.amazonaws.com/";
/// The `RoleSessionName` when the provider names none.
pub const AWS_DEFAULT_SESSION_NAME: &str = "lro-operator";
/// The audience EKS (IAM roles for service accounts) gives ServiceAccount tokens.
pub const AWS_AUDIENCE: &str = "sts.amazonaws.com";
/// The Microsoft identity platform's public-cloud authority.
pub const AZURE_AUTHORITY_URL: &str = "https://login.microsoftonline.com";
/// The scope of an Azure access token when the provider names none (Azure Resource Manager).
pub const AZURE_DEFAULT_SCOPE: &str = "https://management.azure.com/.default";
/// The audience Azure workload identity requires of the client assertion.
pub const AZURE_AUDIENCE: &str = "api://AzureADTokenExchange";
/// The lifetime asked of a ServiceAccount token (the API server's minimum is 600 s).
pub const SERVICE_ACCOUNT_TOKEN_SECONDS: i64 = 600;
/// A ServiceAccount token is renewed after this fraction of its lifetime (the kubelet's rule).
const SUBJECT_RENEW_AFTER: f64 = 0.8;
/// The lifetime asked of an impersonated Google access token.
const GENERATED_TOKEN_LIFETIME: &str = "3600s";
/// How much of an answer's error text is kept in a message.
const DETAIL_CHARS: usize = 400;

const TOKEN_EXCHANGE_GRANT: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";
const JWT_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:jwt";
const JWT_BEARER_ASSERTION: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// The cloud a ServiceAccount token is exchanged with, and how.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cloud {
    /// Google Cloud workload identity federation.
    Google(GoogleFederation),
    /// AWS `AssumeRoleWithWebIdentity`.
    Aws(AwsWebIdentity),
    /// Azure workload identity.
    Azure(AzureFederation),
}

/// Google Cloud workload identity federation, resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GoogleFederation {
    /// The pool provider's full name: the audience of the ServiceAccount token and of the exchange.
    pub audience: String,
    /// The service account to impersonate, if any.
    pub service_account: Option<String>,
    /// OAuth scopes (never empty).
    pub scopes: Vec<String>,
    /// The STS token endpoint.
    pub token_url: Url,
    /// The IAM Service Account Credentials API root.
    pub iam_credentials_url: Url,
}

/// AWS `AssumeRoleWithWebIdentity`, resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AwsWebIdentity {
    /// `RoleArn`.
    pub role_arn: String,
    /// `RoleSessionName`.
    pub session_name: String,
    /// `DurationSeconds`, if set.
    pub duration_seconds: Option<u32>,
    /// The region requests are signed for.
    pub region: String,
    /// The service's signing name.
    pub service: String,
    /// The STS endpoint.
    pub sts_url: Url,
}

/// Azure workload identity, resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AzureFederation {
    /// The tenant.
    pub tenant_id: String,
    /// The application (client) id.
    pub client_id: String,
    /// The access token's scope.
    pub scope: String,
    /// `{authority}/{tenant}/oauth2/v2.0/token`.
    pub token_url: Url,
}

/// The field names a spec error names (`spec.auth.workloadIdentity.<cloud>.<field>`).
const SPEC: &str = "spec.auth.workloadIdentity";

fn http_url(field: &str, value: Option<&str>, default: &str) -> Result<Url, String> {
    let text = value.unwrap_or(default);
    Url::parse(text)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
        .filter(|u| u.username().is_empty() && u.password().is_none())
        .ok_or_else(|| {
            format!("{SPEC}.{field} must be an absolute http:// or https:// URL, e.g. {default}")
        })
}

impl Cloud {
    /// The cloud of `spec`, with defaults filled in; `Err` names the field and the fix.
    pub fn from_spec(spec: &api::WorkloadIdentity) -> Result<Cloud, String> {
        let set = [
            spec.google.is_some(),
            spec.aws.is_some(),
            spec.azure.is_some(),
        ];
        if set.iter().filter(|s| **s).count() != 1 {
            return Err(format!("{SPEC}: set exactly one of google, aws or azure"));
        }
        if let Some(g) = &spec.google {
            if g.audience.is_empty() {
                return Err(format!(
                    "{SPEC}.google.audience must name the workload identity pool provider"
                ));
            }
            let service_account = g.service_account.clone().filter(|s| !s.is_empty());
            if let Some(email) = &service_account
                && (!email.contains('@') || email.contains(['/', '?', '#', '%']))
            {
                return Err(format!(
                    "{SPEC}.google.serviceAccount must be a service account email, e.g. lro@my-project.iam.gserviceaccount.com"
                ));
            }
            return Ok(Cloud::Google(GoogleFederation {
                audience: g.audience.clone(),
                service_account,
                scopes: if g.scopes.is_empty() {
                    vec![GOOGLE_DEFAULT_SCOPE.to_owned()]
                } else {
                    g.scopes.clone()
                },
                token_url: http_url("google.tokenURL", g.token_url.as_deref(), GOOGLE_STS_URL)?,
                iam_credentials_url: http_url(
                    "google.iamCredentialsURL",
                    g.iam_credentials_url.as_deref(),
                    GOOGLE_IAM_CREDENTIALS_URL,
                )?,
            }));
        }
        if let Some(a) = &spec.aws {
            if a.region.is_empty() || a.service.is_empty() {
                return Err(format!(
                    "{SPEC}.aws: region (e.g. us-east-1) and service (e.g. cloudcontrolapi) must be set"
                ));
            }
            if !a.role_arn.starts_with("arn:") || !a.role_arn.contains(":role/") {
                return Err(format!(
                    "{SPEC}.aws.roleArn must be an IAM role ARN, e.g. arn:aws:iam::123456789012:role/lro"
                ));
            }
            let duration_seconds = match a.duration_seconds {
                None => None,
                Some(s) if (900..=43_200).contains(&s) => u32::try_from(s).ok(),
                Some(_) => {
                    return Err(format!(
                        "{SPEC}.aws.durationSeconds must be between 900 and 43200"
                    ));
                }
            };
            return Ok(Cloud::Aws(AwsWebIdentity {
                role_arn: a.role_arn.clone(),
                session_name: a
                    .session_name
                    .clone()
                    .filter(|s| !s.is_empty())
                    .unwrap_or_else(|| AWS_DEFAULT_SESSION_NAME.to_owned()),
                duration_seconds,
                region: a.region.clone(),
                service: a.service.clone(),
                sts_url: http_url("aws.stsURL", a.sts_url.as_deref(), AWS_STS_URL)?,
            }));
        }
        let Some(z) = &spec.azure else {
            return Err(format!("{SPEC}: set exactly one of google, aws or azure"));
        };
        if z.tenant_id.is_empty()
            || !z
                .tenant_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
            || z.tenant_id.starts_with('.')
        {
            return Err(format!(
                "{SPEC}.azure.tenantID must be a tenant id (a GUID) or domain"
            ));
        }
        if z.client_id.is_empty() {
            return Err(format!(
                "{SPEC}.azure.clientID must be the application (client) id"
            ));
        }
        let authority = http_url(
            "azure.authorityURL",
            z.authority_url.as_deref(),
            AZURE_AUTHORITY_URL,
        )?;
        Ok(Cloud::Azure(AzureFederation {
            token_url: azure_token_url(&authority, &z.tenant_id)?,
            tenant_id: z.tenant_id.clone(),
            client_id: z.client_id.clone(),
            scope: z
                .scope
                .clone()
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| AZURE_DEFAULT_SCOPE.to_owned()),
        }))
    }

    /// `google`, `aws` or `azure`, as in the spec.
    pub fn name(&self) -> &'static str {
        match self {
            Cloud::Google(_) => "google",
            Cloud::Aws(_) => "aws",
            Cloud::Azure(_) => "azure",
        }
    }

    /// The audience the ServiceAccount token must carry.
    pub fn audience(&self) -> &str {
        match self {
            Cloud::Google(g) => &g.audience,
            Cloud::Aws(_) => AWS_AUDIENCE,
            Cloud::Azure(_) => AZURE_AUDIENCE,
        }
    }

    /// Every endpoint the exchange calls (for the address policy).
    pub fn endpoints(&self) -> Vec<&Url> {
        match self {
            Cloud::Google(g) if g.service_account.is_some() => {
                vec![&g.token_url, &g.iam_credentials_url]
            }
            Cloud::Google(g) => vec![&g.token_url],
            Cloud::Aws(a) => vec![&a.sts_url],
            Cloud::Azure(z) => vec![&z.token_url],
        }
    }
}

/// `{authority}/{tenant}/oauth2/v2.0/token` (each part one path segment).
pub fn azure_token_url(authority: &Url, tenant: &str) -> Result<Url, String> {
    let mut url = authority.clone();
    url.set_query(None);
    url.set_fragment(None);
    url.path_segments_mut()
        .map_err(|()| format!("{SPEC}.azure.authorityURL cannot hold a path"))?
        .pop_if_empty()
        .extend([tenant, "oauth2", "v2.0", "token"]);
    Ok(url)
}

// ------------------------------------------------------------------------------ requests

/// The Google STS token-exchange form (RFC 8693, as Google's `token` method documents it).
pub fn google_sts_form(g: &GoogleFederation, subject_token: &str) -> Vec<(String, String)> {
    [
        ("grant_type", TOKEN_EXCHANGE_GRANT),
        ("audience", g.audience.as_str()),
        ("scope", &g.scopes.join(" ")),
        ("requested_token_type", ACCESS_TOKEN_TYPE),
        ("subject_token", subject_token),
        ("subject_token_type", JWT_TOKEN_TYPE),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// `{iamCredentialsURL}/projects/-/serviceAccounts/{email}:generateAccessToken`.
pub fn generate_access_token_url(g: &GoogleFederation, email: &str) -> Result<Url, String> {
    let mut url = g.iam_credentials_url.clone();
    url.set_query(None);
    url.path_segments_mut()
        .map_err(|()| format!("{SPEC}.google.iamCredentialsURL cannot hold a path"))?
        .pop_if_empty()
        .extend([
            "projects",
            "-",
            "serviceAccounts",
            &format!("{email}:generateAccessToken"),
        ]);
    Ok(url)
}

/// The `generateAccessToken` request body.
pub fn generate_access_token_body(g: &GoogleFederation) -> serde_json::Value {
    serde_json::json!({"scope": g.scopes, "lifetime": GENERATED_TOKEN_LIFETIME})
}

/// The STS `AssumeRoleWithWebIdentity` form (the Query API, version 2011-06-15).
pub fn aws_form(a: &AwsWebIdentity, web_identity_token: &str) -> Vec<(String, String)> {
    let mut form: Vec<(String, String)> = [
        ("Action", "AssumeRoleWithWebIdentity"),
        ("Version", "2011-06-15"),
        ("RoleArn", a.role_arn.as_str()),
        ("RoleSessionName", a.session_name.as_str()),
        ("WebIdentityToken", web_identity_token),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    if let Some(seconds) = a.duration_seconds {
        form.push(("DurationSeconds".into(), seconds.to_string()));
    }
    form
}

/// The Microsoft identity platform client-credentials form with a federated client assertion.
pub fn azure_form(z: &AzureFederation, assertion: &str) -> Vec<(String, String)> {
    [
        ("grant_type", "client_credentials"),
        ("client_id", z.client_id.as_str()),
        ("scope", z.scope.as_str()),
        ("client_assertion_type", JWT_BEARER_ASSERTION),
        ("client_assertion", assertion),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

// ------------------------------------------------------------------------------ answers

/// What an exchange gave: a bearer token, or AWS temporary credentials.
#[derive(Clone)]
pub enum Issued {
    /// `Authorization: Bearer <token>`.
    Bearer(SecretString),
    /// SigV4 keys with a session token.
    Aws(AwsKeys),
}

impl fmt::Debug for Issued {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Issued::Bearer(_) => f.write_str("Issued::Bearer([REDACTED])"),
            Issued::Aws(_) => f.write_str("Issued::Aws([REDACTED])"),
        }
    }
}

impl Issued {
    /// What a request carries of it (for redaction).
    pub(super) fn carried(&self) -> Vec<String> {
        match self {
            Issued::Bearer(token) => vec![token.expose_secret().to_owned()],
            Issued::Aws(keys) => keys.carried(),
        }
    }
}

/// Why an endpoint gave nothing usable: the status and the endpoint's own words.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// The HTTP status.
    pub status: u16,
    /// The cloud's error code (`invalid_grant`, `AccessDenied`, `PERMISSION_DENIED`, …).
    pub code: Option<String>,
    /// The cloud's description, on one line, bounded.
    pub message: Option<String>,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HTTP {}", self.status)?;
        if let Some(code) = &self.code {
            write!(f, ": {code}")?;
        }
        if let Some(message) = &self.message {
            write!(f, ": {message}")?;
        }
        Ok(())
    }
}

/// One line, at most [`DETAIL_CHARS`] characters.
fn one_line(text: &str) -> String {
    let joined = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if joined.chars().count() > DETAIL_CHARS {
        let cut: String = joined.chars().take(DETAIL_CHARS).collect();
        format!("{cut}…")
    } else {
        joined
    }
}

fn refusal(status: u16, code: Option<&str>, message: Option<&str>) -> Refusal {
    Refusal {
        status,
        code: code.filter(|c| !c.is_empty()).map(one_line),
        message: message.filter(|m| !m.is_empty()).map(one_line),
    }
}

/// An answer that is 2xx but unusable.
fn unusable(status: u16, why: &str) -> Refusal {
    Refusal {
        status,
        code: None,
        message: Some(why.to_owned()),
    }
}

/// `expires_in` as a number or a numeric string (seconds), when positive.
fn seconds(value: Option<&serde_json::Value>) -> Option<Duration> {
    let s = match value? {
        serde_json::Value::Number(n) => n.as_f64(),
        serde_json::Value::String(s) => s.parse().ok(),
        _ => None,
    }?;
    (s.is_finite() && s > 0.0).then(|| Duration::from_secs_f64(s.min(86_400.0 * 365.0)))
}

/// From `now` until an RFC 3339 time, if it is later.
fn until(time: &str, now: SystemTime) -> Option<Duration> {
    let at: jiff::Timestamp = time.trim().parse().ok()?;
    let at = SystemTime::from(at);
    at.duration_since(now).ok().filter(|d| !d.is_zero())
}

/// An OAuth 2.0 token answer (`access_token`, `expires_in`) or error (`error`,
/// `error_description`): Google STS and the Microsoft identity platform.
fn read_oauth(status: u16, body: &[u8]) -> Result<(SecretString, Option<Duration>), Refusal> {
    #[derive(Deserialize)]
    struct Answer {
        access_token: Option<String>,
        expires_in: Option<serde_json::Value>,
        error: Option<String>,
        error_description: Option<String>,
    }
    let answer: Option<Answer> = serde_json::from_slice(body).ok();
    if !(200..300).contains(&status) {
        return Err(match &answer {
            Some(a) => refusal(status, a.error.as_deref(), a.error_description.as_deref()),
            None => unusable(status, "the answer is not an OAuth 2.0 error (JSON)"),
        });
    }
    let answer = answer.ok_or_else(|| unusable(status, "the answer is not JSON"))?;
    let token = answer
        .access_token
        .filter(|t| !t.is_empty())
        .ok_or_else(|| unusable(status, "the answer has no access_token"))?;
    Ok((
        SecretString::from(token),
        seconds(answer.expires_in.as_ref()),
    ))
}

/// Google STS `token`: `{access_token, issued_token_type, token_type, expires_in}`, or
/// `{error, error_description}`.
pub fn read_google_sts(
    status: u16,
    body: &[u8],
) -> Result<(SecretString, Option<Duration>), Refusal> {
    read_oauth(status, body)
}

/// `generateAccessToken`: `{accessToken, expireTime}` (RFC 3339), or Google's error envelope
/// `{"error": {code, message, status}}`.
pub fn read_generate_access_token(
    status: u16,
    body: &[u8],
    now: SystemTime,
) -> Result<(SecretString, Option<Duration>), Refusal> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Answer {
        access_token: Option<String>,
        expire_time: Option<String>,
        error: Option<GoogleError>,
    }
    #[derive(Deserialize)]
    struct GoogleError {
        message: Option<String>,
        status: Option<String>,
    }
    let answer: Option<Answer> = serde_json::from_slice(body).ok();
    if !(200..300).contains(&status) {
        return Err(match answer.as_ref().and_then(|a| a.error.as_ref()) {
            Some(e) => refusal(status, e.status.as_deref(), e.message.as_deref()),
            None => unusable(status, "the answer is not a Google error (JSON)"),
        });
    }
    let answer = answer.ok_or_else(|| unusable(status, "the answer is not JSON"))?;
    let token = answer
        .access_token
        .filter(|t| !t.is_empty())
        .ok_or_else(|| unusable(status, "the answer has no accessToken"))?;
    let lifetime = answer.expire_time.as_deref().and_then(|t| until(t, now));
    Ok((SecretString::from(token), lifetime))
}

/// The Microsoft identity platform's token endpoint: `{token_type, expires_in, access_token}`,
/// or `{error, error_description, error_codes, …}`.
pub fn read_azure(status: u16, body: &[u8]) -> Result<(SecretString, Option<Duration>), Refusal> {
    read_oauth(status, body)
}

/// STS `AssumeRoleWithWebIdentity`: the XML
/// `AssumeRoleWithWebIdentityResponse/AssumeRoleWithWebIdentityResult/Credentials` (`AccessKeyId`,
/// `SecretAccessKey`, `SessionToken`, `Expiration`), or `ErrorResponse/Error` (`Code`,
/// `Message`). The keys sign for `region` and `service`.
pub fn read_aws(
    status: u16,
    body: &[u8],
    now: SystemTime,
    region: &str,
    service: &str,
) -> Result<(AwsKeys, Option<Duration>), Refusal> {
    let text = String::from_utf8_lossy(body);
    if !(200..300).contains(&status) {
        let code = xml_text(&text, &["ErrorResponse", "Error", "Code"]);
        let message = xml_text(&text, &["ErrorResponse", "Error", "Message"]);
        if code.is_none() && message.is_none() {
            return Err(unusable(
                status,
                "the answer is not an STS ErrorResponse (XML)",
            ));
        }
        return Err(refusal(status, code.as_deref(), message.as_deref()));
    }
    let credential = |field: &str| {
        xml_text(
            &text,
            &[
                "AssumeRoleWithWebIdentityResponse",
                "AssumeRoleWithWebIdentityResult",
                "Credentials",
                field,
            ],
        )
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
    };
    let missing = |field: &str| unusable(status, &format!("the answer has no Credentials/{field}"));
    let access_key_id = credential("AccessKeyId").ok_or_else(|| missing("AccessKeyId"))?;
    let secret_access_key =
        credential("SecretAccessKey").ok_or_else(|| missing("SecretAccessKey"))?;
    let session_token = credential("SessionToken").ok_or_else(|| missing("SessionToken"))?;
    let lifetime = credential("Expiration").and_then(|t| until(&t, now));
    Ok((
        AwsKeys {
            access_key_id: SecretString::from(access_key_id),
            secret_access_key: SecretString::from(secret_access_key),
            session_token: Some(SecretString::from(session_token)),
            region: region.to_owned(),
            service: service.to_owned(),
        },
        lifetime,
    ))
}

/// The text of the element at `path` (local names from the root, namespace prefixes ignored),
/// entities decoded. A small reader for the flat documents STS answers with: no DTDs, `>` not
/// inside attribute values.
pub fn xml_text(xml: &str, path: &[&str]) -> Option<String> {
    let mut stack: Vec<&str> = Vec::new();
    let mut rest = xml;
    let mut text: Option<String> = None;
    while let Some(lt) = rest.find('<') {
        if let Some(t) = text.as_mut() {
            t.push_str(&unescape(&rest[..lt]));
        }
        rest = &rest[lt..];
        if let Some(after) = rest.strip_prefix("<!--") {
            rest = &after[after.find("-->")? + 3..];
            continue;
        }
        if let Some(after) = rest.strip_prefix("<![CDATA[") {
            let end = after.find("]]>")?;
            if let Some(t) = text.as_mut() {
                t.push_str(&after[..end]);
            }
            rest = &after[end + 3..];
            continue;
        }
        let end = rest.find('>')?;
        let tag = &rest[1..end];
        rest = &rest[end + 1..];
        if tag.starts_with('?') || tag.starts_with('!') {
            continue;
        }
        if tag.starts_with('/') {
            if text.is_some() && stack.as_slice() == path {
                return text;
            }
            stack.pop();
            continue;
        }
        let name = tag
            .trim_end_matches('/')
            .split(|c: char| c.is_whitespace())
            .next()
            .unwrap_or_default();
        let local = name.rsplit(':').next().unwrap_or(name);
        stack.push(local);
        if tag.ends_with('/') {
            if stack.as_slice() == path {
                return Some(String::new());
            }
            stack.pop();
        } else if text.is_none() && stack.as_slice() == path {
            text = Some(String::new());
        }
    }
    None
}

fn unescape(text: &str) -> String {
    if !text.contains('&') {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        let Some(end) = rest.find(';').filter(|e| *e <= 10) else {
            out.push('&');
            rest = &rest[1..];
            continue;
        };
        let entity = &rest[1..end];
        let decoded = match entity {
            "lt" => Some('<'),
            "gt" => Some('>'),
            "amp" => Some('&'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ => entity
                .strip_prefix("#x")
                .and_then(|h| u32::from_str_radix(h, 16).ok())
                .or_else(|| entity.strip_prefix('#').and_then(|d| d.parse().ok()))
                .and_then(char::from_u32),
        };
        match decoded {
            Some(c) => {
                out.push(c);
                rest = &rest[end + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

// ------------------------------------------------------------------------------ the flow

/// A ServiceAccount token and how long it is valid.
pub struct SubjectToken {
    /// The token (a JWT signed by the API server).
    pub value: SecretString,
    /// How long it is valid from now.
    pub valid_for: Duration,
}

/// Where ServiceAccount tokens come from: the API server's TokenRequest (a fake in tests).
pub trait ServiceAccountTokens: Send + Sync {
    /// The token's subject, `system:serviceaccount:NAMESPACE:NAME` (for hints).
    fn subject(&self) -> String;
    /// A token for `audience`, or why there is none: a message naming the ServiceAccount, what
    /// went wrong and how to fix it (never a token).
    fn request(&self, audience: &str) -> BoxFuture<'_, Result<SubjectToken, String>>;
}

/// The ServiceAccount token at hand and when it is renewed.
struct Subject {
    value: SecretString,
    renew_at: Instant,
}

/// One provider's workload identity: the cloud, the ServiceAccount, and its cached token.
pub struct WorkloadIdentity {
    cloud: Cloud,
    source: Arc<dyn ServiceAccountTokens>,
    subject: std::sync::Mutex<Option<Subject>>,
    /// ServiceAccount tokens requested (for tests).
    subject_requests: AtomicU64,
}

impl fmt::Debug for WorkloadIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkloadIdentity")
            .field("cloud", &self.cloud.name())
            .finish_non_exhaustive()
    }
}

impl WorkloadIdentity {
    /// Exchanges tokens of `source` with `cloud`.
    pub fn new(cloud: Cloud, source: Arc<dyn ServiceAccountTokens>) -> Self {
        WorkloadIdentity {
            cloud,
            source,
            subject: std::sync::Mutex::new(None),
            subject_requests: AtomicU64::new(0),
        }
    }

    /// The cloud.
    pub fn cloud(&self) -> &Cloud {
        &self.cloud
    }

    /// How many ServiceAccount tokens were requested.
    pub fn subject_requests(&self) -> u64 {
        self.subject_requests.load(Ordering::Relaxed)
    }

    /// A ServiceAccount token: the cached one until 80 % of its lifetime, else a new one.
    async fn subject_token(&self) -> Result<SecretString, AuthError> {
        let now = Instant::now();
        if let Ok(slot) = self.subject.lock()
            && let Some(subject) = slot.as_ref().filter(|s| now < s.renew_at)
        {
            return Ok(subject.value.clone());
        }
        self.subject_requests.fetch_add(1, Ordering::Relaxed);
        let issued = self
            .source
            .request(self.cloud.audience())
            .await
            .map_err(AuthError::ServiceAccountToken)?;
        let value = issued.value.clone();
        if let Ok(mut slot) = self.subject.lock() {
            *slot = Some(Subject {
                value: issued.value,
                renew_at: now + issued.valid_for.mul_f64(SUBJECT_RENEW_AFTER),
            });
        }
        Ok(value)
    }

    /// Forgets the ServiceAccount token (the cloud refused it: the next exchange gets a new one).
    fn forget_subject(&self) {
        if let Ok(mut slot) = self.subject.lock() {
            *slot = None;
        }
    }

    /// A ServiceAccount token exchanged for the cloud's credentials and their lifetime (when
    /// the cloud says). Errors say which step failed and how to fix it; they never hold a token.
    pub async fn obtain(
        &self,
        tokens: &dyn TokenTransport,
    ) -> Result<(Issued, Option<Duration>), AuthError> {
        let subject = self.subject_token().await?;
        let result = self.exchange(&subject, tokens).await;
        if result.is_err() {
            self.forget_subject();
        }
        result
    }

    async fn exchange(
        &self,
        subject: &SecretString,
        tokens: &dyn TokenTransport,
    ) -> Result<(Issued, Option<Duration>), AuthError> {
        let who = self.source.subject();
        let sub = subject.expose_secret();
        match &self.cloud {
            Cloud::Google(g) => {
                let shown = super::display_url(&g.token_url);
                let call = TokenCall::form(
                    g.token_url.clone(),
                    google_sts_form(g, subject.expose_secret()),
                );
                let (status, body) = tokens.call(call).await.map_err(|e| {
                    exchange_error(
                        format!("google: the token exchange at {shown} failed: {e}"),
                        &[sub],
                    )
                })?;
                let (federated, lifetime) = read_google_sts(status, &body).map_err(|r| {
                    exchange_error(
                        format!(
                            "google: STS ({shown}) refused the token exchange: {r}; check that spec.auth.workloadIdentity.google.audience is the workload identity pool provider, that the provider's issuer is this cluster's service-account issuer (and its keys the cluster's JWKS), and that its attribute condition admits {who}"
                        ),
                        &[sub],
                    )
                })?;
                let Some(email) = &g.service_account else {
                    return Ok((Issued::Bearer(federated), lifetime));
                };
                let url =
                    generate_access_token_url(g, email).map_err(|e| exchange_error(e, &[sub]))?;
                let shown = super::display_url(&url);
                let call = TokenCall::json(url, generate_access_token_body(g))
                    .with_bearer(federated.clone());
                let also = [sub, federated.expose_secret()];
                let (status, body) = tokens.call(call).await.map_err(|e| {
                    exchange_error(
                        format!("google: generateAccessToken at {shown} failed: {e}"),
                        &also,
                    )
                })?;
                let (token, lifetime) =
                    read_generate_access_token(status, &body, SystemTime::now()).map_err(|r| {
                        exchange_error(
                            format!(
                                "google: generateAccessToken for {email} was refused: {r}; grant the federated principal of {who} roles/iam.workloadIdentityUser on the service account {email} (or remove serviceAccount to use the federated token)"
                            ),
                            &also,
                        )
                    })?;
                Ok((Issued::Bearer(token), lifetime))
            }
            Cloud::Aws(a) => {
                let shown = super::display_url(&a.sts_url);
                let call = TokenCall::form(a.sts_url.clone(), aws_form(a, subject.expose_secret()))
                    .accepting("text/xml");
                let (status, body) = tokens.call(call).await.map_err(|e| {
                    exchange_error(
                        format!("aws: AssumeRoleWithWebIdentity at {shown} failed: {e}"),
                        &[sub],
                    )
                })?;
                let (keys, lifetime) =
                    read_aws(status, &body, SystemTime::now(), &a.region, &a.service).map_err(
                        |r| {
                            exchange_error(
                                format!(
                                    "aws: STS ({shown}) refused AssumeRoleWithWebIdentity for {}: {r}; check the role's trust policy: it must trust this cluster's OIDC provider (its service-account issuer) for sts:AssumeRoleWithWebIdentity with aud {AWS_AUDIENCE} and sub {who}",
                                    a.role_arn
                                ),
                                &[sub],
                            )
                        },
                    )?;
                Ok((Issued::Aws(keys), lifetime))
            }
            Cloud::Azure(z) => {
                let shown = super::display_url(&z.token_url);
                let call =
                    TokenCall::form(z.token_url.clone(), azure_form(z, subject.expose_secret()));
                let (status, body) = tokens.call(call).await.map_err(|e| {
                    exchange_error(
                        format!("azure: the token request to {shown} failed: {e}"),
                        &[sub],
                    )
                })?;
                let (token, lifetime) = read_azure(status, &body).map_err(|r| {
                    exchange_error(
                        format!(
                            "azure: Microsoft Entra ({shown}) refused the client assertion: {r}; check the application {}'s federated credential: issuer = this cluster's service-account issuer, subject = {who}, audience = {AZURE_AUDIENCE}",
                            z.client_id
                        ),
                        &[sub],
                    )
                })?;
                Ok((Issued::Bearer(token), lifetime))
            }
        }
    }
}

/// An exchange error, scrubbed of `secrets` (the tokens the request carried).
fn exchange_error(message: String, secrets: &[&str]) -> AuthError {
    AuthError::Exchange(scrub(&message, secrets))
}

#[cfg(test)]
mod tests;
