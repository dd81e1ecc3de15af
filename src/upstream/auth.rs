//! Credentials: what each auth method adds to a request, and the access tokens of the
//! token-based methods (cached, refreshed before expiry, refreshed once after a 401).
//!
//! Secret values live in [`SecretString`]s (their `Debug` prints `[REDACTED]`); no type here
//! prints a secret, and messages built from an endpoint's answers are scrubbed of them.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use reqwest::Url;
use reqwest::header::{AUTHORIZATION, HeaderName, HeaderValue};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::identity::{Issued, WorkloadIdentity};
use super::sigv4;

/// Scope of a Google access token when the provider names none.
pub const GOOGLE_DEFAULT_SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
/// Lifetime assumed when a token endpoint does not say (`expires_in` absent).
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(3600);
/// Lifetime of a Google JWT assertion (Google accepts at most one hour).
const ASSERTION_LIFETIME: u64 = 3600;
/// The longest a token is refreshed ahead of its expiry.
const MAX_REFRESH_AHEAD: Duration = Duration::from_secs(60);
/// After a workload identity exchange failed, how long the failure is reported again instead of
/// asking again (the operations of one provider reconcile together).
const FAILURE_HOLD: Duration = Duration::from_secs(5);

/// The secret material of one provider, ready to be used.
pub enum Credential {
    /// `Authorization: Bearer <token>`.
    Bearer(SecretString),
    /// An API key in a header or a query parameter.
    ApiKey {
        /// The key.
        value: SecretString,
        /// Where it goes.
        placement: KeyPlacement,
    },
    /// `Authorization: Basic base64(user:password)`.
    Basic {
        /// The user name.
        username: SecretString,
        /// The password.
        password: SecretString,
    },
    /// OAuth 2.0 client credentials.
    OAuth2(OAuth2Client),
    /// A Google service-account key.
    Google(GoogleKey),
    /// AWS SigV4 keys.
    AwsSigV4(sigv4::AwsKeys),
    /// A Kubernetes ServiceAccount token exchanged for cloud credentials.
    WorkloadIdentity(WorkloadIdentity),
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Credential({}, [REDACTED])", self.method())
    }
}

impl Credential {
    /// The method's name as in `spec.auth`.
    pub fn method(&self) -> &'static str {
        match self {
            Credential::Bearer(_) => "bearerToken",
            Credential::ApiKey { .. } => "apiKey",
            Credential::Basic { .. } => "basic",
            Credential::OAuth2(_) => "oauth2ClientCredentials",
            Credential::Google(_) => "googleServiceAccount",
            Credential::AwsSigV4(_) => "awsSigV4",
            Credential::WorkloadIdentity(_) => "workloadIdentity",
        }
    }

    /// Whether requests carry credentials obtained from a token endpoint (an access token, or
    /// temporary AWS keys).
    pub fn uses_tokens(&self) -> bool {
        matches!(
            self,
            Credential::OAuth2(_) | Credential::Google(_) | Credential::WorkloadIdentity(_)
        )
    }

    /// The token endpoints, for token-based methods (every one the address policy must admit).
    pub fn token_urls(&self) -> Vec<&Url> {
        match self {
            Credential::OAuth2(c) => vec![&c.token_url],
            Credential::Google(k) => vec![&k.token_uri],
            Credential::WorkloadIdentity(w) => w.cloud().endpoints(),
            _ => Vec::new(),
        }
    }

    /// Every secret value, to scrub messages with.
    fn secrets(&self) -> Vec<&str> {
        match self {
            Credential::Bearer(t) => vec![t.expose_secret()],
            Credential::ApiKey { value, .. } => vec![value.expose_secret()],
            Credential::Basic { username, password } => {
                vec![username.expose_secret(), password.expose_secret()]
            }
            Credential::OAuth2(c) => {
                vec![c.client_id.expose_secret(), c.client_secret.expose_secret()]
            }
            Credential::Google(k) => vec![k.private_key_pem.expose_secret()],
            Credential::AwsSigV4(k) => k.secrets(),
            // Its tokens are obtained, not configured: messages are scrubbed where they are.
            Credential::WorkloadIdentity(_) => Vec::new(),
        }
    }
}

/// Where an API key goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyPlacement {
    /// In this header.
    Header(HeaderName),
    /// In this query parameter.
    Query(String),
}

/// An OAuth 2.0 client (client credentials grant).
pub struct OAuth2Client {
    /// The token endpoint.
    pub token_url: Url,
    /// The client id.
    pub client_id: SecretString,
    /// The client secret.
    pub client_secret: SecretString,
    /// `audience`, if any.
    pub audience: Option<String>,
    /// Scopes, if any.
    pub scopes: Vec<String>,
}

/// A Google service-account key, parsed and checked.
pub struct GoogleKey {
    /// `client_email`: the JWT's issuer.
    pub client_email: String,
    /// `private_key_id`: the JWT's `kid`.
    pub private_key_id: Option<String>,
    /// `token_uri`: where the JWT is exchanged.
    pub token_uri: Url,
    /// Scopes requested.
    pub scopes: Vec<String>,
    private_key_pem: SecretString,
    signing_key: jsonwebtoken::EncodingKey,
}

/// The fields of a service-account JSON key that are used.
#[derive(Deserialize)]
struct KeyFile {
    #[serde(rename = "type")]
    kind: Option<String>,
    client_email: Option<String>,
    private_key: Option<String>,
    private_key_id: Option<String>,
    token_uri: Option<String>,
}

impl GoogleKey {
    /// Parses a service-account JSON key; `Err` says what is wrong (never the key itself).
    pub fn parse(json: &[u8], scopes: Vec<String>) -> Result<GoogleKey, String> {
        let file: KeyFile = serde_json::from_slice(json).map_err(|e| {
            format!(
                "is not a service-account JSON key (not JSON: line {}, column {})",
                e.line(),
                e.column()
            )
        })?;
        if let Some(kind) = file.kind.as_deref().filter(|k| *k != "service_account") {
            return Err(format!(
                "is a {kind:?} credential, not a service-account key (\"type\": \"service_account\")"
            ));
        }
        let missing = |field: &str| format!("is not a service-account JSON key: it has no {field}");
        let client_email = file.client_email.ok_or_else(|| missing("client_email"))?;
        let private_key = file.private_key.ok_or_else(|| missing("private_key"))?;
        let token_uri = file.token_uri.ok_or_else(|| missing("token_uri"))?;
        let token_uri = Url::parse(&token_uri)
            .ok()
            .filter(|u| matches!(u.scheme(), "https" | "http"))
            .ok_or("has a token_uri that is not an http(s) URL")?;
        let signing_key = jsonwebtoken::EncodingKey::from_rsa_pem(private_key.as_bytes())
            .map_err(|_| "has a private_key that is not a PEM RSA private key".to_owned())?;
        Ok(GoogleKey {
            client_email,
            private_key_id: file.private_key_id,
            token_uri,
            scopes: if scopes.is_empty() {
                vec![GOOGLE_DEFAULT_SCOPE.to_owned()]
            } else {
                scopes
            },
            private_key_pem: SecretString::from(private_key),
            signing_key,
        })
    }

    /// The signed JWT assertion (RS256) for the JWT-bearer grant, issued at `now`.
    pub fn assertion(&self, now: SystemTime) -> Result<String, String> {
        #[derive(serde::Serialize)]
        struct Claims<'a> {
            iss: &'a str,
            scope: String,
            aud: &'a str,
            iat: u64,
            exp: u64,
        }
        let iat = now
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        header.kid = self.private_key_id.clone();
        let claims = Claims {
            iss: &self.client_email,
            scope: self.scopes.join(" "),
            aud: self.token_uri.as_str(),
            iat,
            exp: iat + ASSERTION_LIFETIME,
        };
        jsonwebtoken::encode(&header, &claims, &self.signing_key)
            .map_err(|e| format!("cannot sign the JWT assertion: {e}"))
    }
}

/// An access token (or temporary keys) and when it stops being used.
struct Token {
    value: Issued,
    /// When it is refreshed: shortly before it expires.
    refresh_at: Instant,
    id: u64,
}

/// Why credentials could not be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The token endpoint did not give a token.
    #[error("{0}")]
    TokenRequest(String),
    /// No token of the workload identity's ServiceAccount could be obtained (TokenRequest).
    #[error("{0}")]
    ServiceAccountToken(String),
    /// The cloud refused to exchange the ServiceAccount token for credentials.
    #[error("{0}")]
    Exchange(String),
    /// The request could not be signed or shaped.
    #[error("{0}")]
    Request(String),
}

/// What one request was sent with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Attached {
    /// Credentials were attached.
    pub credentials: bool,
    /// The id of the access token used, if any.
    pub token: Option<u64>,
}

/// Attaches one provider's credential to requests, and holds its access token.
pub struct Authenticator {
    credential: Credential,
    token: tokio::sync::Mutex<Option<Token>>,
    /// Token requests sent (for tests and metrics).
    token_requests: AtomicU64,
    /// Called for every access token obtained (a metric).
    on_token: Option<TokenHook>,
    /// The last failure of a workload identity exchange, and when (see [`FAILURE_HOLD`]).
    failure: std::sync::Mutex<Option<(Instant, AuthError)>>,
}

/// Called for every access token obtained.
pub type TokenHook = std::sync::Arc<dyn Fn() + Send + Sync>;

impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authenticator")
            .field("method", &self.credential.method())
            .finish_non_exhaustive()
    }
}

static TOKEN_IDS: AtomicU64 = AtomicU64::new(1);

impl Authenticator {
    /// An authenticator for `credential`.
    pub fn new(credential: Credential) -> Self {
        Authenticator {
            credential,
            token: tokio::sync::Mutex::new(None),
            token_requests: AtomicU64::new(0),
            on_token: None,
            failure: std::sync::Mutex::new(None),
        }
    }

    /// Calls `hook` for every access token obtained.
    pub fn with_token_hook(mut self, hook: TokenHook) -> Self {
        self.on_token = Some(hook);
        self
    }

    /// The credential.
    pub fn credential(&self) -> &Credential {
        &self.credential
    }

    /// How many token requests were sent.
    pub fn token_requests(&self) -> u64 {
        self.token_requests.load(Ordering::Relaxed)
    }

    /// The secret values this credential puts on requests, in every form an answer could echo
    /// them (as sent, JSON-escaped, percent-encoded; `basic` also base64-encoded as sent), each
    /// of at least 4 bytes: what [`super::redact`] removes from answers.
    pub async fn carried(&self) -> Vec<String> {
        let mut values: Vec<String> = match &self.credential {
            Credential::Bearer(token) => vec![token.expose_secret().to_owned()],
            Credential::ApiKey { value, .. } => vec![value.expose_secret().to_owned()],
            Credential::Basic { username, password } => {
                let (user, pass) = (username.expose_secret(), password.expose_secret());
                let encoded =
                    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
                vec![user.to_owned(), pass.to_owned(), encoded]
            }
            // The client secret and the private key go to the token endpoint only (and the
            // key not even there); the API gets the access token.
            // Workload identity: what the exchange gave, below (the ServiceAccount token goes
            // to the exchange endpoints only).
            Credential::OAuth2(_) | Credential::Google(_) | Credential::WorkloadIdentity(_) => {
                Vec::new()
            }
            Credential::AwsSigV4(keys) => keys.carried(),
        };
        if let Some(token) = self.token.lock().await.as_ref() {
            values.extend(token.value.carried());
        }
        let mut forms = Vec::new();
        for value in values.into_iter().filter(|v| v.len() >= 4) {
            let json = serde_json::to_string(&value).unwrap_or_default();
            let json = json.trim_matches('"').to_owned();
            // Some encoders escape `/` too.
            let slashes = json.replace('/', "\\/");
            let percent: String = url::form_urlencoded::byte_serialize(value.as_bytes()).collect();
            for form in [json, slashes, percent] {
                if form != value && form.len() >= 4 {
                    forms.push(form);
                }
            }
            forms.push(value);
        }
        // Longest first: a value that contains another is replaced whole.
        forms.sort_by_key(|f| std::cmp::Reverse(f.len()));
        forms.dedup();
        forms
    }

    /// Replaces every secret value in `message` by `[redacted]`.
    pub fn scrub(&self, message: &str) -> String {
        scrub(message, &self.credential.secrets())
    }

    /// Attaches the credential to `request` (fetching an access token if none is fresh).
    pub async fn attach(
        &self,
        request: &mut reqwest::Request,
        tokens: &dyn TokenTransport,
    ) -> Result<Attached, AuthError> {
        let mut attached = Attached {
            credentials: true,
            token: None,
        };
        match &self.credential {
            Credential::Bearer(token) => set_bearer(request, token.expose_secret())?,
            Credential::ApiKey { value, placement } => match placement {
                KeyPlacement::Header(name) => {
                    let value = sensitive(value.expose_secret())?;
                    request.headers_mut().insert(name.clone(), value);
                }
                KeyPlacement::Query(name) => {
                    request
                        .url_mut()
                        .query_pairs_mut()
                        .append_pair(name, value.expose_secret());
                }
            },
            Credential::Basic { username, password } => {
                let encoded = base64::engine::general_purpose::STANDARD.encode(format!(
                    "{}:{}",
                    username.expose_secret(),
                    password.expose_secret()
                ));
                let value = sensitive(&format!("Basic {encoded}"))?;
                request.headers_mut().insert(AUTHORIZATION, value);
            }
            Credential::OAuth2(_) | Credential::Google(_) | Credential::WorkloadIdentity(_) => {
                let (issued, id) = self.access_token(tokens).await?;
                match &issued {
                    Issued::Bearer(value) => set_bearer(request, value.expose_secret())?,
                    Issued::Aws(keys) => {
                        sigv4::sign(request, keys, SystemTime::now())
                            .map_err(AuthError::Request)?;
                    }
                }
                attached.token = Some(id);
            }
            Credential::AwsSigV4(keys) => {
                sigv4::sign(request, keys, SystemTime::now()).map_err(AuthError::Request)?;
            }
        }
        Ok(attached)
    }

    /// Makes sure a fresh access token is at hand (token-based methods; others: nothing to do).
    pub async fn ensure_token(&self, tokens: &dyn TokenTransport) -> Result<(), AuthError> {
        if self.credential.uses_tokens() {
            self.access_token(tokens).await?;
        }
        Ok(())
    }

    /// After a 401 to a request sent with `attached`: gets a new access token unless another
    /// request already did. `Ok(true)`: a retry may succeed.
    pub async fn refresh_after_unauthorized(
        &self,
        attached: Attached,
        tokens: &dyn TokenTransport,
    ) -> Result<bool, AuthError> {
        let Some(used) = attached.token else {
            return Ok(false);
        };
        let mut slot = self.token.lock().await;
        if slot.as_ref().is_some_and(|t| t.id != used) {
            return Ok(true);
        }
        *slot = Some(self.request_token(tokens).await?);
        Ok(true)
    }

    async fn access_token(&self, tokens: &dyn TokenTransport) -> Result<(Issued, u64), AuthError> {
        let mut slot = self.token.lock().await;
        let now = Instant::now();
        if let Some(token) = slot.as_ref().filter(|t| now < t.refresh_at) {
            return Ok((token.value.clone(), token.id));
        }
        let held = matches!(self.credential, Credential::WorkloadIdentity(_));
        if held
            && let Ok(failure) = self.failure.lock()
            && let Some((at, error)) = failure.as_ref()
            && at.elapsed() < FAILURE_HOLD
        {
            return Err(error.clone());
        }
        let token = match self.request_token(tokens).await {
            Ok(token) => token,
            Err(error) => {
                if held && let Ok(mut failure) = self.failure.lock() {
                    *failure = Some((Instant::now(), error.clone()));
                }
                return Err(error);
            }
        };
        let out = (token.value.clone(), token.id);
        *slot = Some(token);
        Ok(out)
    }

    async fn request_token(&self, tokens: &dyn TokenTransport) -> Result<Token, AuthError> {
        let began = Instant::now();
        let (value, lifetime) = match &self.credential {
            Credential::WorkloadIdentity(identity) => {
                self.token_requests.fetch_add(1, Ordering::Relaxed);
                identity.obtain(tokens).await?
            }
            _ => {
                let (value, lifetime) = self.request_access_token(tokens).await?;
                (Issued::Bearer(value), lifetime)
            }
        };
        if let Some(hook) = &self.on_token {
            hook();
        }
        let lifetime = lifetime.unwrap_or(DEFAULT_TOKEN_LIFETIME);
        let ahead = (lifetime / 4).min(MAX_REFRESH_AHEAD);
        Ok(Token {
            value,
            refresh_at: began + lifetime.saturating_sub(ahead),
            id: TOKEN_IDS.fetch_add(1, Ordering::Relaxed),
        })
    }

    /// An access token of an OAuth 2.0 client or a Google service-account key.
    async fn request_access_token(
        &self,
        tokens: &dyn TokenTransport,
    ) -> Result<(SecretString, Option<Duration>), AuthError> {
        let (url, form): (&Url, Vec<(&str, String)>) = match &self.credential {
            Credential::OAuth2(c) => {
                let mut form = vec![
                    ("grant_type", "client_credentials".to_owned()),
                    ("client_id", c.client_id.expose_secret().to_owned()),
                    ("client_secret", c.client_secret.expose_secret().to_owned()),
                ];
                if let Some(audience) = &c.audience {
                    form.push(("audience", audience.clone()));
                }
                if !c.scopes.is_empty() {
                    form.push(("scope", c.scopes.join(" ")));
                }
                (&c.token_url, form)
            }
            Credential::Google(key) => {
                let assertion = key
                    .assertion(SystemTime::now())
                    .map_err(AuthError::TokenRequest)?;
                let form = vec![
                    (
                        "grant_type",
                        "urn:ietf:params:oauth:grant-type:jwt-bearer".to_owned(),
                    ),
                    ("assertion", assertion),
                ];
                (&key.token_uri, form)
            }
            _ => return Err(AuthError::TokenRequest("this method has no tokens".into())),
        };
        self.token_requests.fetch_add(1, Ordering::Relaxed);
        let shown = super::display_url(url);
        let form = form.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        let answer = tokens
            .call(TokenCall::form(url.clone(), form))
            .await
            .map_err(|e| {
                AuthError::TokenRequest(
                    self.scrub(&format!("token request to {shown} failed: {e}")),
                )
            })?;
        parse_token_answer(&answer.0, &answer.1).map_err(|why| {
            AuthError::TokenRequest(self.scrub(&format!("token endpoint {shown} {why}")))
        })
    }
}

/// One request to a token endpoint (a POST).
pub struct TokenCall {
    /// Where.
    pub url: Url,
    /// The body.
    pub body: TokenBody,
    /// `Authorization: Bearer` (marked sensitive), if any.
    pub bearer: Option<SecretString>,
    /// The `Accept` header.
    pub accept: &'static str,
}

/// The body of a [`TokenCall`].
pub enum TokenBody {
    /// `application/x-www-form-urlencoded`.
    Form(Vec<(String, String)>),
    /// `application/json`.
    Json(serde_json::Value),
}

impl TokenCall {
    /// A form POST accepting JSON.
    pub fn form(url: Url, form: Vec<(String, String)>) -> Self {
        TokenCall {
            url,
            body: TokenBody::Form(form),
            bearer: None,
            accept: "application/json",
        }
    }

    /// A JSON POST accepting JSON.
    pub fn json(url: Url, body: serde_json::Value) -> Self {
        TokenCall {
            url,
            body: TokenBody::Json(body),
            bearer: None,
            accept: "application/json",
        }
    }

    /// With `Authorization: Bearer <token>`.
    pub fn with_bearer(mut self, token: SecretString) -> Self {
        self.bearer = Some(token);
        self
    }

    /// With another `Accept` header.
    pub fn accepting(mut self, accept: &'static str) -> Self {
        self.accept = accept;
        self
    }
}

/// Sends token requests: the provider's HTTP client (a fake in tests).
pub trait TokenTransport: Send + Sync {
    /// Sends `call`; returns the status and the (capped) body, or a description of the
    /// transport failure (without secrets).
    fn call(
        &self,
        call: TokenCall,
    ) -> futures::future::BoxFuture<'_, Result<(u16, Vec<u8>), String>>;
}

/// Reads a token endpoint's answer: the token and its lifetime, or why there is none.
fn parse_token_answer(
    status: &u16,
    body: &[u8],
) -> Result<(SecretString, Option<Duration>), String> {
    #[derive(Deserialize)]
    struct Answer {
        access_token: Option<String>,
        expires_in: Option<serde_json::Value>,
        error: Option<String>,
        error_description: Option<String>,
    }
    let answer: Option<Answer> = serde_json::from_slice(body).ok();
    if !(200..300).contains(status) {
        let detail = answer
            .as_ref()
            .and_then(|a| match (&a.error, &a.error_description) {
                (Some(e), Some(d)) => Some(format!(": {e}: {d}")),
                (Some(e), None) => Some(format!(": {e}")),
                (None, Some(d)) => Some(format!(": {d}")),
                (None, None) => None,
            })
            .unwrap_or_default();
        let detail: String = detail.chars().take(300).collect();
        let hint = if matches!(status, 400 | 401 | 403) {
            " (check the client credentials, audience and scopes)"
        } else {
            ""
        };
        return Err(format!("answered HTTP {status}{detail}{hint}"));
    }
    let answer = answer.ok_or("answered with a body that is not a JSON token response")?;
    let token = answer
        .access_token
        .filter(|t| !t.is_empty())
        .ok_or("answered without an access_token")?;
    let lifetime = answer.expires_in.and_then(|v| match v {
        serde_json::Value::Number(n) => n.as_f64(),
        serde_json::Value::String(s) => s.parse().ok(),
        _ => None,
    });
    let lifetime = lifetime
        .filter(|s| s.is_finite() && *s > 0.0)
        .map(|s| Duration::from_secs_f64(s.min(86_400.0 * 365.0)));
    Ok((SecretString::from(token), lifetime))
}

fn sensitive(value: &str) -> Result<HeaderValue, AuthError> {
    let mut value = HeaderValue::from_str(value).map_err(|_| {
        AuthError::Request("the credential holds characters a header cannot carry".into())
    })?;
    value.set_sensitive(true);
    Ok(value)
}

fn set_bearer(request: &mut reqwest::Request, token: &str) -> Result<(), AuthError> {
    let value = sensitive(&format!("Bearer {token}"))?;
    request.headers_mut().insert(AUTHORIZATION, value);
    Ok(())
}

/// Replaces each of `secrets` (of at least 4 characters) in `message` by `[redacted]`.
pub fn scrub(message: &str, secrets: &[&str]) -> String {
    let mut out = message.to_owned();
    for secret in secrets {
        for part in std::iter::once(*secret).chain(secret.lines()) {
            let part = part.trim();
            if part.len() >= 4 && out.contains(part) {
                out = out.replace(part, "[redacted]");
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[tokio::test]
    async fn what_requests_carry_is_listed_in_every_form_longest_first() {
        let basic = Authenticator::new(Credential::Basic {
            username: SecretString::from("admin"),
            password: SecretString::from("p@ss/word"),
        });
        let carried = basic.carried().await;
        assert!(carried.contains(&"p@ss/word".to_owned()), "{carried:?}");
        assert!(carried.contains(&"p%40ss%2Fword".to_owned()), "{carried:?}");
        assert!(carried.contains(&r"p@ss\/word".to_owned()), "{carried:?}");
        let encoded = base64::engine::general_purpose::STANDARD.encode("admin:p@ss/word");
        assert!(carried.contains(&encoded), "{carried:?}");
        assert!(
            carried.windows(2).all(|w| w[0].len() >= w[1].len()),
            "{carried:?}"
        );
        let short = Authenticator::new(Credential::Bearer(SecretString::from("abc")));
        assert!(
            short.carried().await.is_empty(),
            "values under 4 bytes are not searched for"
        );
    }

    /// The RSA key of the test service account (test-only, never used anywhere real).
    pub const TEST_KEY: &str = include_str!("../../tests/fixtures/sa-test-key.pem");
    pub const TEST_PUBLIC_KEY: &str = include_str!("../../tests/fixtures/sa-test-key.pub.pem");

    fn request(url: &str) -> reqwest::Request {
        reqwest::Request::new(reqwest::Method::GET, Url::parse(url).expect("url"))
    }

    type Seen = Arc<Mutex<Vec<(Url, Vec<(String, String)>)>>>;

    /// A token endpoint that answers `answers` in turn and records the forms it got.
    struct Fake {
        answers: Mutex<std::vec::IntoIter<(u16, &'static str)>>,
        seen: Seen,
    }

    impl TokenTransport for Fake {
        fn call(
            &self,
            call: TokenCall,
        ) -> futures::future::BoxFuture<'_, Result<(u16, Vec<u8>), String>> {
            let form = match call.body {
                TokenBody::Form(form) => form,
                TokenBody::Json(body) => vec![("json".into(), body.to_string())],
            };
            self.seen.lock().expect("lock").push((call.url, form));
            let next = self.answers.lock().expect("lock").next();
            Box::pin(async move {
                let (status, body) = next.ok_or("no more answers")?;
                Ok((status, body.as_bytes().to_vec()))
            })
        }
    }

    fn fake(answers: Vec<(u16, &'static str)>) -> (Fake, Seen) {
        let seen: Seen = Arc::default();
        let fake = Fake {
            answers: Mutex::new(answers.into_iter()),
            seen: Arc::clone(&seen),
        };
        (fake, seen)
    }

    fn header(request: &reqwest::Request, name: &str) -> String {
        request
            .headers()
            .get(name)
            .map(|v| v.to_str().expect("ascii").to_owned())
            .unwrap_or_default()
    }

    #[tokio::test]
    async fn static_methods_shape_the_request() {
        let (tokens, _) = fake(vec![]);
        let bearer = Authenticator::new(Credential::Bearer("t0ken-value".into()));
        let mut r = request("https://api.example.com/v1/x");
        bearer.attach(&mut r, &tokens).await.expect("attach");
        assert_eq!(header(&r, "authorization"), "Bearer t0ken-value");
        assert!(r.headers()["authorization"].is_sensitive());

        let key = Authenticator::new(Credential::ApiKey {
            value: "k3y-value".into(),
            placement: KeyPlacement::Header(HeaderName::from_static("x-api-key")),
        });
        let mut r = request("https://api.example.com/v1/x");
        key.attach(&mut r, &tokens).await.expect("attach");
        assert_eq!(header(&r, "x-api-key"), "k3y-value");

        let query = Authenticator::new(Credential::ApiKey {
            value: "k 3y&".into(),
            placement: KeyPlacement::Query("key".into()),
        });
        let mut r = request("https://api.example.com/v1/x?a=1");
        query.attach(&mut r, &tokens).await.expect("attach");
        assert_eq!(r.url().query(), Some("a=1&key=k+3y%26"));

        let basic = Authenticator::new(Credential::Basic {
            username: "aladdin".into(),
            password: "opensesame".into(),
        });
        let mut r = request("https://api.example.com/v1/x");
        basic.attach(&mut r, &tokens).await.expect("attach");
        assert_eq!(
            header(&r, "authorization"),
            "Basic YWxhZGRpbjpvcGVuc2VzYW1l"
        );
    }

    fn oauth() -> Authenticator {
        Authenticator::new(Credential::OAuth2(OAuth2Client {
            token_url: Url::parse("https://auth.example.com/oauth/token").expect("url"),
            client_id: "client-1".into(),
            client_secret: "s3cret-value".into(),
            audience: Some("cloudv2-production.redpanda.cloud".into()),
            scopes: vec!["a".into(), "b".into()],
        }))
    }

    #[tokio::test]
    async fn oauth2_sends_the_redpanda_form_and_caches_the_token() {
        let (tokens, seen) = fake(vec![(
            200,
            r#"{"access_token":"at-1","expires_in":3600,"token_type":"Bearer"}"#,
        )]);
        let auth = oauth();
        for _ in 0..3 {
            let mut r = request("https://api.example.com/v1/x");
            auth.attach(&mut r, &tokens).await.expect("attach");
            assert_eq!(header(&r, "authorization"), "Bearer at-1");
        }
        let seen = seen.lock().expect("lock");
        assert_eq!(seen.len(), 1, "one token request for three requests");
        assert_eq!(seen[0].0.as_str(), "https://auth.example.com/oauth/token");
        let form: Vec<(&str, &str)> = seen[0]
            .1
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            form,
            [
                ("grant_type", "client_credentials"),
                ("client_id", "client-1"),
                ("client_secret", "s3cret-value"),
                ("audience", "cloudv2-production.redpanda.cloud"),
                ("scope", "a b"),
            ]
        );
    }

    #[tokio::test]
    async fn short_lived_tokens_are_refreshed_before_they_expire() {
        let (tokens, seen) = fake(vec![
            (200, r#"{"access_token":"at-1","expires_in":1}"#),
            (200, r#"{"access_token":"at-2","expires_in":1}"#),
        ]);
        let auth = oauth();
        let mut r = request("https://api.example.com/v1/x");
        auth.attach(&mut r, &tokens).await.expect("attach");
        assert_eq!(header(&r, "authorization"), "Bearer at-1");
        // Refreshed a quarter of the lifetime ahead: at 0.75 s, before the expiry at 1 s.
        tokio::time::sleep(Duration::from_millis(800)).await;
        let mut r = request("https://api.example.com/v1/x");
        auth.attach(&mut r, &tokens).await.expect("attach");
        assert_eq!(header(&r, "authorization"), "Bearer at-2");
        assert_eq!(seen.lock().expect("lock").len(), 2);
    }

    #[tokio::test]
    async fn a_401_refreshes_once_even_when_many_requests_saw_it() {
        let (tokens, seen) = fake(vec![
            (200, r#"{"access_token":"at-1"}"#),
            (200, r#"{"access_token":"at-2"}"#),
            (200, r#"{"access_token":"at-3"}"#),
        ]);
        let auth = oauth();
        let mut r = request("https://api.example.com/v1/x");
        let first = auth.attach(&mut r, &tokens).await.expect("attach");
        let mut r2 = request("https://api.example.com/v1/x");
        let second = auth.attach(&mut r2, &tokens).await.expect("attach");
        assert_eq!(first, second);
        assert!(
            auth.refresh_after_unauthorized(first, &tokens)
                .await
                .expect("refresh")
        );
        assert!(
            auth.refresh_after_unauthorized(second, &tokens)
                .await
                .expect("refresh")
        );
        let mut r = request("https://api.example.com/v1/x");
        auth.attach(&mut r, &tokens).await.expect("attach");
        assert_eq!(header(&r, "authorization"), "Bearer at-2");
        assert_eq!(
            seen.lock().expect("lock").len(),
            2,
            "one refresh for both 401s"
        );
        // Static credentials have nothing to refresh.
        let bearer = Authenticator::new(Credential::Bearer("t".into()));
        let attached = bearer.attach(&mut r, &tokens).await.expect("attach");
        assert!(
            !bearer
                .refresh_after_unauthorized(attached, &tokens)
                .await
                .expect("refresh")
        );
    }

    #[tokio::test]
    async fn token_errors_name_the_endpoint_and_never_the_secret() {
        let (tokens, _) = fake(vec![(
            401,
            r#"{"error":"invalid_client","error_description":"bad secret s3cret-value for client-1"}"#,
        )]);
        let auth = oauth();
        let mut r = request("https://api.example.com/v1/x");
        let error = auth.attach(&mut r, &tokens).await.expect_err("401");
        let text = error.to_string();
        assert!(
            text.contains("https://auth.example.com/oauth/token"),
            "{text}"
        );
        assert!(text.contains("HTTP 401: invalid_client"), "{text}");
        assert!(
            !text.contains("s3cret-value") && !text.contains("client-1"),
            "{text}"
        );
    }

    fn key_json() -> String {
        serde_json::json!({
            "type": "service_account",
            "project_id": "demo",
            "private_key_id": "kid-1",
            "private_key": TEST_KEY,
            "client_email": "lro@demo.iam.gserviceaccount.com",
            "token_uri": "https://oauth2.example.com/token",
        })
        .to_string()
    }

    #[tokio::test]
    async fn google_signs_an_rs256_assertion_for_the_token_uri() {
        let key = GoogleKey::parse(key_json().as_bytes(), vec![]).expect("key");
        let (tokens, seen) = fake(vec![(
            200,
            r#"{"access_token":"ya29.x","expires_in":3599}"#,
        )]);
        let auth = Authenticator::new(Credential::Google(key));
        let mut r = request("https://api.example.com/v1/x");
        auth.attach(&mut r, &tokens).await.expect("attach");
        assert_eq!(header(&r, "authorization"), "Bearer ya29.x");
        let seen = seen.lock().expect("lock");
        assert_eq!(seen[0].0.as_str(), "https://oauth2.example.com/token");
        assert_eq!(
            seen[0].1[0].1,
            "urn:ietf:params:oauth:grant-type:jwt-bearer"
        );
        let jwt = &seen[0].1[1].1;
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
        validation.set_audience(&["https://oauth2.example.com/token"]);
        let decoded = jsonwebtoken::decode::<serde_json::Value>(
            jwt,
            &jsonwebtoken::DecodingKey::from_rsa_pem(TEST_PUBLIC_KEY.as_bytes()).expect("pub"),
            &validation,
        )
        .expect("a valid RS256 JWT");
        assert_eq!(decoded.header.kid.as_deref(), Some("kid-1"));
        assert_eq!(decoded.claims["iss"], "lro@demo.iam.gserviceaccount.com");
        assert_eq!(decoded.claims["scope"], GOOGLE_DEFAULT_SCOPE);
    }

    #[test]
    fn malformed_service_account_keys_say_what_is_wrong() {
        let err = |json: &str| {
            GoogleKey::parse(json.as_bytes(), vec![])
                .err()
                .expect("an error")
        };
        assert!(err("nope").contains("not JSON"));
        assert!(err(r#"{"type":"authorized_user"}"#).contains("not a service-account key"));
        assert!(err(r#"{"type":"service_account"}"#).contains("client_email"));
        let bad_key = serde_json::json!({"client_email": "a@b", "private_key": "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", "token_uri": "https://x/token"});
        assert!(err(&bad_key.to_string()).contains("private_key"));
    }

    #[test]
    fn debug_never_shows_a_secret() {
        let shown = format!(
            "{:?} {:?}",
            Credential::Bearer("t0ken-value".into()),
            Authenticator::new(Credential::Basic {
                username: "user-name".into(),
                password: "pass-word".into()
            })
        );
        assert!(
            !shown.contains("t0ken")
                && !shown.contains("pass-word")
                && !shown.contains("user-name"),
            "{shown}"
        );
        let key = GoogleKey::parse(key_json().as_bytes(), vec![]).expect("key");
        let shown = format!("{:?}", Credential::Google(key));
        assert!(!shown.contains("PRIVATE"), "{shown}");
        assert_eq!(
            scrub("echo s3cret and s3cret", &["s3cret"]),
            "echo [redacted] and [redacted]"
        );
    }
}
