//! The HTTP client to upstream APIs: URL resolution pinned to the provider's origin, the
//! address policy (checked after DNS resolution), credentials attached only to the provider's
//! origin, timeouts, and response bodies read with a size cap (streamed, never buffered past
//! the cap).

pub mod auth;
pub mod identity;
pub mod policy;
pub mod rate_limit;
pub mod sigv4;

#[cfg(test)]
mod sim_tests;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::future::BoxFuture;
use reqwest::Url;
use secrecy::{ExposeSecret, SecretBox};

pub use auth::{AuthError, Authenticator, Credential, TokenBody, TokenCall, TokenTransport};
pub use policy::{AddressPolicy, AddressRefused};

use crate::api::forbidden_header;
pub use crate::protocol::UrlScope;
use crate::protocol::{HttpAnswer, RequestSpec};

/// Default cap on an upstream response body.
pub const DEFAULT_MAX_BODY: usize = 1024 * 1024;
/// How long a successful check of the base URL's addresses is trusted.
const ADDRESS_CHECK_TTL: Duration = Duration::from_secs(60);

/// Why a request got no usable answer.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The target URL is not on the provider's origin, or cannot be built.
    #[error("refusing to send to {target}: {why}")]
    Url {
        /// The URL, or the path, that was refused.
        target: String,
        /// Why.
        why: &'static str,
    },
    /// The address policy refused the target's address (nothing was sent).
    #[error("{0}")]
    Refused(AddressRefused),
    /// Credentials could not be attached (e.g. no access token could be obtained); nothing was sent.
    #[error("{0}")]
    Credentials(AuthError),
    /// Connection, TLS or timeout error.
    #[error("request to {url} failed: {kind}")]
    Transport {
        /// The URL without its query.
        url: String,
        /// A short description (no secrets: reqwest errors never carry request headers).
        kind: String,
    },
    /// The response body exceeded the cap.
    #[error("response from {url} is larger than {limit} bytes")]
    TooLarge {
        /// The URL without its query.
        url: String,
        /// The cap.
        limit: usize,
    },
}

/// Why a client could not be built from a provider's TLS settings.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The CA bundle holds no usable certificate.
    #[error("{0}")]
    CaBundle(String),
    /// The client certificate or key is unusable.
    #[error("{0}")]
    ClientCertificate(String),
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client: {0}")]
    Http(String),
}

/// The TLS material of a provider.
#[derive(Default)]
pub struct TlsMaterial {
    /// PEM CA certificates that replace the system roots for the base URL.
    pub ca_pem: Option<Vec<u8>>,
    /// PEM client certificate chain followed by its private key (mTLS).
    pub identity_pem: Option<SecretBox<Vec<u8>>>,
}

/// How a provider's client is built.
#[derive(Clone, Copy, Debug)]
pub struct ClientSettings {
    /// Timeout of one request.
    pub timeout: Duration,
    /// Response body cap.
    pub max_body: usize,
    /// Which addresses may be connected to.
    pub policy: AddressPolicy,
    /// Where absolute URLs (the tenant's, the upstream's links) may point.
    pub url_scope: UrlScope,
}

/// The credentials of a provider.
pub struct ProviderAuth {
    /// The credential.
    pub credential: Credential,
    /// Called for every access token obtained.
    pub on_token: Option<auth::TokenHook>,
}

/// Sends requests for one provider (or, built with [`Upstream::new`], for any base URL and
/// without credentials).
#[derive(Clone, Debug)]
pub struct Upstream {
    http: reqwest::Client,
    /// The client for token endpoints (system roots plus the provider's CA, no client certificate).
    token_http: reqwest::Client,
    max_body: usize,
    policy: AddressPolicy,
    url_scope: UrlScope,
    auth: Option<Arc<Pinned>>,
    /// When the base URL's addresses last passed the policy.
    checked: Arc<std::sync::Mutex<Option<Instant>>>,
}

/// Credentials and the one origin they may be sent to.
#[derive(Debug)]
struct Pinned {
    origin: url::Origin,
    authenticator: Authenticator,
}

impl Upstream {
    /// A client without credentials, with a per-request `timeout` and a body cap of `max_body`
    /// bytes, that may connect to loopback and private addresses (never to link-local or
    /// metadata ones).
    pub fn new(timeout: Duration, max_body: usize) -> Result<Self, reqwest::Error> {
        let settings = ClientSettings {
            timeout,
            max_body,
            policy: AddressPolicy {
                allow_private: true,
            },
            url_scope: UrlScope::BasePath,
        };
        let http = builder(&settings).build()?;
        Ok(Upstream {
            token_http: http.clone(),
            http,
            max_body,
            policy: settings.policy,
            url_scope: settings.url_scope,
            auth: None,
            checked: Arc::default(),
        })
    }

    /// The client of one provider: `credential` is attached only to requests for `base_url`'s
    /// origin; `tls` applies to that origin.
    pub fn for_provider(
        settings: &ClientSettings,
        base_url: &Url,
        tls: &TlsMaterial,
        credential: Option<ProviderAuth>,
    ) -> Result<Self, BuildError> {
        let mut http = builder(settings);
        let mut token_http = builder(settings);
        if let Some(pem) = &tls.ca_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|_| BuildError::CaBundle("is not a PEM certificate bundle".into()))?;
            if certs.is_empty() {
                return Err(BuildError::CaBundle(
                    "holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into(),
                ));
            }
            http = http.tls_certs_only(certs.clone());
            token_http = token_http.tls_certs_merge(certs);
        }
        if let Some(pem) = &tls.identity_pem {
            let identity = reqwest::Identity::from_pem(pem.expose_secret()).map_err(|_| {
                BuildError::ClientCertificate(
                    "tls.crt and tls.key are not a PEM certificate and its private key".into(),
                )
            })?;
            http = http.identity(identity);
        }
        let http = http.build().map_err(|e| BuildError::Http(tls_error(&e)))?;
        let token_http = token_http
            .build()
            .map_err(|e| BuildError::Http(tls_error(&e)))?;
        Ok(Upstream {
            http,
            token_http,
            max_body: settings.max_body,
            policy: settings.policy,
            url_scope: settings.url_scope,
            auth: credential.map(|c| {
                let authenticator = Authenticator::new(c.credential);
                let authenticator = match c.on_token {
                    Some(hook) => authenticator.with_token_hook(hook),
                    None => authenticator,
                };
                Arc::new(Pinned {
                    origin: base_url.origin(),
                    authenticator,
                })
            }),
            checked: Arc::default(),
        })
    }

    /// The authenticator, if the provider has credentials.
    pub fn authenticator(&self) -> Option<&Authenticator> {
        self.auth.as_ref().map(|p| &p.authenticator)
    }

    /// Checks that the provider can be used: the addresses of `base_url` and of the token
    /// endpoints pass the policy (re-checked at most once a minute) and, for token-based
    /// methods, an access token (or temporary keys) is at hand (requested only when none is
    /// fresh).
    pub async fn ready(&self, base_url: &Url) -> Result<(), UpstreamError> {
        let fresh = self
            .checked
            .lock()
            .map(|c| c.is_some_and(|at| at.elapsed() < ADDRESS_CHECK_TTL))
            .unwrap_or(false);
        if !fresh {
            self.check_address(base_url).await?;
            let token_urls = self
                .authenticator()
                .map(|a| a.credential().token_urls())
                .unwrap_or_default();
            for token_url in token_urls {
                self.check_address(token_url).await?;
            }
            if let Ok(mut checked) = self.checked.lock() {
                *checked = Some(Instant::now());
            }
        }
        if let Some(pinned) = &self.auth {
            pinned
                .authenticator
                .ensure_token(self)
                .await
                .map_err(UpstreamError::Credentials)?;
        }
        Ok(())
    }

    /// Resolves `url`'s host and applies the address policy.
    async fn check_address(&self, url: &Url) -> Result<(), UpstreamError> {
        let host = url.host().ok_or_else(|| UpstreamError::Url {
            target: display_url(url),
            why: "it has no host",
        })?;
        let name = match host {
            url::Host::Domain(name) => name.to_owned(),
            _ => {
                return self
                    .policy
                    .check_host(&host)
                    .map_err(|why| refused(url, why));
            }
        };
        let port = url.port_or_known_default().unwrap_or(443);
        self.policy
            .resolve(&name, port)
            .await
            .map(|_| ())
            .map_err(UpstreamError::Refused)
    }

    /// Sends `request` to the provider at `base_url` and reads the answer. Credentials go only
    /// to the provider's origin; a 401 to a request that carried an access token (or AWS's
    /// `ExpiredTokenException` to one signed with temporary credentials) gets one new token and
    /// one retry.
    pub async fn send(
        &self,
        base_url: &str,
        request: &RequestSpec,
    ) -> Result<HttpAnswer, UpstreamError> {
        let url = resolve_in(base_url, &request.path, self.url_scope)?;
        check_headers(request)?;
        if let Some(host) = url.host() {
            self.policy
                .check_host(&host)
                .map_err(|why| refused(&url, why))?;
        }
        let pinned = self.auth.as_ref().filter(|p| p.origin == url.origin());
        let (mut answer, attached) = self.send_once(&url, request, pinned).await?;
        let (Some(pinned), Some(attached)) = (pinned, attached) else {
            return Ok(answer);
        };
        // Whatever the answer echoes of the credentials is gone before anyone reads it.
        redact(&mut answer, &pinned.authenticator.carried().await);
        if answer.status != 401 && !expired_aws_credentials(&answer) {
            return Ok(answer);
        }
        let retry = pinned
            .authenticator
            .refresh_after_unauthorized(attached, self)
            .await
            .map_err(UpstreamError::Credentials)?;
        if !retry {
            return Ok(answer);
        }
        tracing::debug!(url = %display_url(&url), status = answer.status, "credentials refused as expired: retrying once with new ones");
        let mut answer = self.send_once(&url, request, Some(pinned)).await?.0;
        redact(&mut answer, &pinned.authenticator.carried().await);
        Ok(answer)
    }

    async fn send_once(
        &self,
        url: &Url,
        request: &RequestSpec,
        pinned: Option<&Arc<Pinned>>,
    ) -> Result<(HttpAnswer, Option<auth::Attached>), UpstreamError> {
        let shown = display_url(url);
        let mut builder = self.http.request(request.method.clone(), url.clone());
        if !request.query.is_empty() {
            builder = builder.query(&request.query);
        }
        for (name, value) in &request.headers {
            builder = builder.header(name, value);
        }
        if let Some(body) = &request.body {
            builder = builder.json(body);
        }
        let mut built = builder.build().map_err(|e| transport(&shown, &e))?;
        let attached = match pinned {
            Some(p) => Some(
                p.authenticator
                    .attach(&mut built, self)
                    .await
                    .map_err(UpstreamError::Credentials)?,
            ),
            None => None,
        };
        let response = self
            .http
            .execute(built)
            .await
            .map_err(|e| transport(&shown, &e))?;
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
            .collect();
        let body = read_capped(response, self.max_body, &shown).await?;
        Ok((
            HttpAnswer {
                status,
                headers,
                body,
            },
            attached,
        ))
    }
}

impl TokenTransport for Upstream {
    fn call(&self, call: TokenCall) -> BoxFuture<'_, Result<(u16, Vec<u8>), String>> {
        Box::pin(async move {
            let url = call.url;
            let shown = display_url(&url);
            if let Some(host) = url.host() {
                self.policy
                    .check_host(&host)
                    .map_err(|why| refused(&url, why).to_string())?;
            }
            let mut builder = self
                .token_http
                .post(url)
                .header(reqwest::header::ACCEPT, call.accept);
            builder = match &call.body {
                TokenBody::Form(form) => builder.form(form),
                TokenBody::Json(body) => builder.json(body),
            };
            if let Some(token) = &call.bearer {
                let mut value = reqwest::header::HeaderValue::from_str(&format!(
                    "Bearer {}",
                    token.expose_secret()
                ))
                .map_err(|_| "the token holds characters a header cannot carry".to_owned())?;
                value.set_sensitive(true);
                builder = builder.header(reqwest::header::AUTHORIZATION, value);
            }
            let response = builder
                .send()
                .await
                .map_err(|e| transport(&shown, &e).to_string())?;
            let status = response.status().as_u16();
            let body = read_capped(response, self.max_body, &shown)
                .await
                .map_err(|e| e.to_string())?;
            Ok((status, body))
        })
    }
}

fn builder(settings: &ClientSettings) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .timeout(settings.timeout)
        .connect_timeout(settings.timeout.min(Duration::from_secs(10)))
        // Redirects could carry a request elsewhere; they are answers, not instructions.
        .redirect(reqwest::redirect::Policy::none())
        // A proxy would resolve names itself, out of reach of the address policy.
        .no_proxy()
        .dns_resolver(Arc::new(policy::PolicyResolver(settings.policy)))
        .user_agent(concat!("lro-operator/", env!("CARGO_PKG_VERSION")))
}

/// Reads a response body, failing as soon as it passes `max_body` bytes.
async fn read_capped(
    response: reqwest::Response,
    max_body: usize,
    shown: &str,
) -> Result<Vec<u8>, UpstreamError> {
    if response
        .content_length()
        .is_some_and(|len| len > max_body as u64)
    {
        return Err(UpstreamError::TooLarge {
            url: shown.to_owned(),
            limit: max_body,
        });
    }
    let mut body = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| transport(shown, &e))?;
        if body.len() + chunk.len() > max_body {
            return Err(UpstreamError::TooLarge {
                url: shown.to_owned(),
                limit: max_body,
            });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn refused(url: &Url, why: String) -> UpstreamError {
    UpstreamError::Refused(AddressRefused {
        host: url.host_str().unwrap_or_default().to_owned(),
        why,
    })
}

/// A TLS configuration error, without anything from the material.
fn tls_error(error: &reqwest::Error) -> String {
    let mut source = std::error::Error::source(error);
    let mut last = None;
    while let Some(e) = source {
        last = Some(e.to_string());
        source = e.source();
    }
    last.unwrap_or_else(|| "the TLS configuration is invalid".into())
}

/// Resolves `path` against `base_url`: a relative path is appended to the base URL's path; an
/// absolute URL is accepted only under the base URL's path, on its origin.
pub fn resolve(base_url: &str, path: &str) -> Result<Url, UpstreamError> {
    resolve_in(base_url, path, UrlScope::BasePath)
}

/// Like [`resolve`], with absolute URLs confined to `scope`.
pub fn resolve_in(base_url: &str, path: &str, scope: UrlScope) -> Result<Url, UpstreamError> {
    let refuse = |why| UpstreamError::Url {
        target: path.to_owned(),
        why,
    };
    let base = Url::parse(base_url).map_err(|_| refuse("the provider's baseURL is not a URL"))?;
    if path.contains("://") {
        let url = Url::parse(path).map_err(|_| refuse("not a URL"))?;
        if url.origin() != base.origin() {
            return Err(refuse("it is not on the provider's baseURL origin"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(refuse("it carries credentials (user@host)"));
        }
        if scope == UrlScope::BasePath && !under_base_path(&base, &url) {
            return Err(refuse("it is not under the provider's baseURL path"));
        }
        return Ok(url);
    }
    if path.starts_with("//") || path.split('/').any(|segment| segment == "..") {
        return Err(refuse("the path must stay under the provider's baseURL"));
    }
    let joined = format!(
        "{}/{}",
        base.as_str().trim_end_matches('/'),
        path.trim_start_matches('/')
    );
    let url = Url::parse(&joined).map_err(|_| refuse("not a valid path"))?;
    if url.origin() != base.origin() {
        return Err(refuse("it is not on the provider's baseURL origin"));
    }
    // The URL parser resolves dot segments in disguise (`%2e%2e`, `..\`): check where it landed.
    if !under_base_path(&base, &url) {
        return Err(refuse("the path must stay under the provider's baseURL"));
    }
    Ok(url)
}

/// Whether `url`'s path is the base URL's path or below it.
fn under_base_path(base: &Url, url: &Url) -> bool {
    let prefix = base.path().trim_end_matches('/');
    url.path()
        .strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// Refuses a request that sets a forbidden header (the admission rules refuse them in
/// `spec.start.headers` already; this holds for every other path too).
fn check_headers(request: &RequestSpec) -> Result<(), UpstreamError> {
    match request
        .headers
        .iter()
        .find(|(name, _)| forbidden_header(name))
    {
        Some((name, _)) => Err(UpstreamError::Url {
            target: request.path.clone(),
            why: match name.to_ascii_lowercase().as_str() {
                "host" => "a request may not set Host (the baseURL chooses the host)",
                "authorization" | "cookie" => {
                    "a request may not set Authorization or Cookie (credentials come from the provider's spec.auth)"
                }
                _ => "a request may not set hop-by-hop, proxy or forwarding headers",
            },
        }),
        None => Ok(()),
    }
}

/// Whether AWS refused the request because its temporary credentials expired: `403` (`400` in
/// some services) `ExpiredTokenException` or `ExpiredToken`, named by `x-amzn-ErrorType`, the
/// JSON protocols' `__type` (maybe prefixed `namespace#`), or the query/XML protocols' `<Code>`.
fn expired_aws_credentials(answer: &HttpAnswer) -> bool {
    if !matches!(answer.status, 400 | 403) {
        return false;
    }
    let expired = |code: &str| {
        let code = code.rsplit('#').next().unwrap_or(code);
        let code = code.split(':').next().unwrap_or(code).trim();
        code == "ExpiredTokenException" || code == "ExpiredToken"
    };
    if answer.header("x-amzn-errortype").is_some_and(expired) {
        return true;
    }
    if let Ok(body) = serde_json::from_slice::<serde_json::Value>(&answer.body) {
        return body
            .get("__type")
            .and_then(|t| t.as_str())
            .is_some_and(expired);
    }
    let text = String::from_utf8_lossy(&answer.body);
    text.contains("<Code>ExpiredToken</Code>")
        || text.contains("<Code>ExpiredTokenException</Code>")
}

/// Replaces each of `secrets` in the answer's body and header values by `[redacted]` (which
/// keeps JSON valid: a secret echoed inside a string stays a string).
pub fn redact(answer: &mut HttpAnswer, secrets: &[String]) {
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        let finder = memchr::memmem::Finder::new(secret.as_bytes());
        if finder.find(&answer.body).is_some() {
            answer.body = replace_all(&answer.body, &finder, b"[redacted]");
        }
        for (_, value) in &mut answer.headers {
            if value.contains(secret.as_str()) {
                *value = value.replace(secret.as_str(), "[redacted]");
            }
        }
    }
}

fn replace_all(haystack: &[u8], finder: &memchr::memmem::Finder<'_>, with: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(haystack.len());
    let mut last = 0;
    for at in finder.find_iter(haystack) {
        // Overlapping matches: the earlier one was replaced whole.
        if at < last {
            continue;
        }
        out.extend_from_slice(&haystack[last..at]);
        out.extend_from_slice(with);
        last = at + finder.needle().len();
    }
    out.extend_from_slice(&haystack[last..]);
    out
}

/// `url` without its query (which may hold an API key).
pub fn display_url(url: &Url) -> String {
    let mut shown = url.clone();
    shown.set_query(None);
    shown.to_string()
}

fn transport(url: &str, error: &reqwest::Error) -> UpstreamError {
    if let Some(refused) = policy::refused_in(error) {
        return UpstreamError::Refused(refused.clone());
    }
    let kind = if error.is_timeout() {
        "timed out".to_owned()
    } else if error.is_connect() {
        "connection failed".to_owned()
    } else if error.is_body() || error.is_decode() {
        "the response body could not be read".to_owned()
    } else {
        "transport error".to_owned()
    };
    UpstreamError::Transport {
        url: url.to_owned(),
        kind,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_append_to_the_base_path() {
        let url = resolve("http://127.0.0.1:8480/v1", "operations/op-1").unwrap();
        assert_eq!(url.as_str(), "http://127.0.0.1:8480/v1/operations/op-1");
        let url = resolve("http://h/v1/", "/projects/p/clusters").unwrap();
        assert_eq!(url.as_str(), "http://h/v1/projects/p/clusters");
        let url = resolve("http://h/v1", "operations/op-1:cancel").unwrap();
        assert_eq!(url.path(), "/v1/operations/op-1:cancel");
    }

    #[test]
    fn urls_off_the_origin_are_refused() {
        assert!(resolve("https://api.example.com/v1", "https://evil.example.com/x").is_err());
        assert!(resolve("https://api.example.com/v1", "http://api.example.com/x").is_err());
        assert!(resolve("https://api.example.com/v1", "//evil.example.com/x").is_err());
        assert!(resolve("https://api.example.com/v1", "../../x").is_err());
        assert!(resolve("https://api.example.com/v1", "%2e%2e/x").is_err());
        assert!(resolve("https://api.example.com/v1", "a/.%2E/%2e./x").is_err());
        assert!(resolve("https://api.example.com/v1", "..\\x").is_err());
        assert!(resolve("https://api.example.com/v1", "a/..\\b").is_ok());
        assert!(
            resolve(
                "https://api.example.com/v1",
                "https://api.example.com/v1/operations/x"
            )
            .is_ok()
        );
    }

    #[test]
    fn absolute_urls_stay_under_the_base_path_unless_the_protocol_says_origin() {
        let base = "https://api.example.com/v1/projects/mine";
        for outside in [
            "https://api.example.com/v1/projects/theirs/operations/x",
            "https://api.example.com/admin",
            "https://api.example.com/v1/projects/mine/../theirs",
            "https://api.example.com/v1/projects/mine/%2e%2e/theirs",
            "https://api.example.com/v1/projects/minex",
        ] {
            let refused = resolve(base, outside).expect_err(outside).to_string();
            assert!(refused.contains("baseURL path"), "{outside}: {refused}");
            assert!(
                resolve_in(base, outside, UrlScope::Origin).is_ok(),
                "{outside}"
            );
        }
        assert!(
            resolve(
                base,
                "https://api.example.com/v1/projects/mine/operations/x"
            )
            .is_ok()
        );
        for scope in [UrlScope::BasePath, UrlScope::Origin] {
            let refused = resolve_in(
                base,
                "https://u:p@api.example.com/v1/projects/mine/x",
                scope,
            )
            .expect_err("userinfo");
            assert!(refused.to_string().contains("credentials"), "{refused}");
            assert!(
                resolve_in(
                    base,
                    "https://api.example.com.evil.io/v1/projects/mine",
                    scope
                )
                .is_err()
            );
            assert!(
                resolve_in(base, "https://api.example.com:8443/v1/projects/mine", scope).is_err()
            );
        }
    }

    #[test]
    fn aws_expired_credentials_are_told_from_other_refusals() {
        let answer = |status: u16, headers: &[(&str, &str)], body: &str| HttpAnswer {
            status,
            headers: headers
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            body: body.as_bytes().to_vec(),
        };
        // The JSON protocols (Cloud Control): the header, `__type` with or without namespace.
        let json = r#"{"__type":"ExpiredTokenException","message":"The security token included in the request is expired"}"#;
        assert!(expired_aws_credentials(&answer(403, &[], json)));
        assert!(expired_aws_credentials(&answer(
            400,
            &[(
                "x-amzn-errortype",
                "ExpiredTokenException:http://internal.amazon.com/"
            )],
            "{}"
        )));
        assert!(expired_aws_credentials(&answer(
            400,
            &[],
            r#"{"__type":"com.amazon.coral.service#ExpiredTokenException","message":"…"}"#
        )));
        // The query/XML protocols.
        let xml = "<ErrorResponse><Error><Type>Sender</Type><Code>ExpiredToken</Code><Message>The security token included in the request is expired</Message></Error></ErrorResponse>";
        assert!(expired_aws_credentials(&answer(403, &[], xml)));
        // Other refusals are answers for the protocol to read, not a reason to renew.
        for (status, body) in [
            (
                403,
                r#"{"__type":"AccessDeniedException","message":"not allowed"}"#,
            ),
            (
                400,
                r#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#,
            ),
            (403, r#"{"__type":"UnrecognizedClientException"}"#),
            (500, json),
        ] {
            assert!(
                !expired_aws_credentials(&answer(status, &[], body)),
                "{body}"
            );
        }
    }

    #[test]
    fn echoed_credentials_are_redacted_in_every_form() {
        let secrets = vec![
            "s3cr3t/t0ken+x=".to_owned(),
            r"s3cr3t\/t0ken+x=".to_owned(),
            "s3cr3t%2Ft0ken%2Bx%3D".to_owned(),
        ];
        let body = br#"{"error": {"message": "bad token s3cr3t\/t0ken+x= in ?key=s3cr3t%2Ft0ken%2Bx%3D, s3cr3t/t0ken+x="}}"#;
        let mut answer = HttpAnswer {
            status: 401,
            headers: vec![("www-authenticate".into(), "Bearer s3cr3t/t0ken+x=".into())],
            body: body.to_vec(),
        };
        redact(&mut answer, &secrets);
        let text = String::from_utf8(answer.body).unwrap();
        assert!(!text.contains("t0ken"), "{text}");
        assert_eq!(text.matches("[redacted]").count(), 3, "{text}");
        let parsed: serde_json::Value = serde_json::from_str(&text).expect("still JSON");
        assert!(parsed["error"]["message"].is_string());
        assert_eq!(answer.headers[0].1, "Bearer [redacted]");
    }

    #[test]
    fn requests_may_not_set_the_host_credentials_or_forwarding_headers() {
        for name in [
            "Host",
            "host ",
            "Authorization",
            "COOKIE",
            "Connection",
            "Transfer-Encoding",
            "Proxy-Authorization",
            "Forwarded",
            "X-Forwarded-For",
            "X-Forwarded-Host",
            "X-HTTP-Method-Override",
            "Via",
            "Upgrade",
        ] {
            assert!(forbidden_header(name), "{name}");
            let request = RequestSpec {
                method: reqwest::Method::POST,
                path: "x".into(),
                query: Vec::new(),
                headers: vec![(name.into(), "v".into())],
                body: None,
            };
            assert!(check_headers(&request).is_err(), "{name}");
        }
        for name in [
            "Content-Type",
            "X-Request-Id",
            "Prefer",
            "X-Amz-Target",
            "If-Match",
        ] {
            assert!(!forbidden_header(name), "{name}");
        }
    }

    proptest::proptest! {
    #[test]
    fn resolve_never_panics_and_stays_on_the_base(
        base in proptest::prop_oneof![
            "(http|https)://[a-z]{1,8}(\\.[a-z]{2,3})?(:[0-9]{1,5})?(/[a-z0-9%.]{0,6}){0,3}/?",
            ".{0,30}",
        ],
        path in proptest::prop_oneof![
            "[a-z0-9/.:%?#@\\\\ -]{0,40}",
            "(%2e|%2E|\\.){1,2}(/|\\\\|%2f)[a-z]{0,5}",
            "(https?://[a-z.]{1,10}(:[0-9]{1,5})?)?(/[a-z.%]{0,6}){0,4}",
            ".{0,40}",
        ],
    ) {
        let Ok(url) = resolve(&base, &path) else {
            return Ok(());
        };
        let Ok(base_url) = reqwest::Url::parse(&base) else {
            return Err(proptest::test_runner::TestCaseError::fail(format!("resolved against {base:?}, not a URL")));
        };
        proptest::prop_assert_eq!(url.origin(), base_url.origin(), "left the origin: {} + {}", base, path);
        {
            let prefix = base_url.path().trim_end_matches('/');
            let stays = url.path() == prefix
                || url.path().strip_prefix(prefix).is_some_and(|rest| rest.starts_with('/'));
            proptest::prop_assert!(
                stays,
                "{} + {:?} resolved to {}, outside the base path {:?}",
                base, path, url, base_url.path()
            );
        }
    }
    }
}
