//! The HTTP client to upstream APIs: URL resolution pinned to the provider's origin, timeouts,
//! and response bodies read with a size cap (streamed, never buffered past the cap).

use std::time::Duration;

use futures::StreamExt;
use reqwest::Url;

use crate::protocol::{HttpAnswer, RequestSpec};

/// Default cap on an upstream response body.
pub const DEFAULT_MAX_BODY: usize = 1024 * 1024;

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

/// Sends requests for one or more providers.
#[derive(Clone, Debug)]
pub struct Upstream {
    http: reqwest::Client,
    max_body: usize,
}

impl Upstream {
    /// A client with a per-request `timeout` and a body cap of `max_body` bytes.
    pub fn new(timeout: Duration, max_body: usize) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            // Redirects could carry a request elsewhere; they are answers, not instructions.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("lro-operator/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Upstream { http, max_body })
    }

    /// Sends `request` to the provider at `base_url` and reads the answer.
    pub async fn send(
        &self,
        base_url: &str,
        request: &RequestSpec,
    ) -> Result<HttpAnswer, UpstreamError> {
        let url = resolve(base_url, &request.path)?;
        let shown = display_url(&url);
        let mut builder = self.http.request(request.method.clone(), url);
        if !request.query.is_empty() {
            builder = builder.query(&request.query);
        }
        for (name, value) in &request.headers {
            builder = builder.header(name, value);
        }
        if let Some(body) = &request.body {
            builder = builder.json(body);
        }
        let response = builder.send().await.map_err(|e| transport(&shown, &e))?;
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
            .collect();
        if response
            .content_length()
            .is_some_and(|len| len > self.max_body as u64)
        {
            return Err(UpstreamError::TooLarge {
                url: shown,
                limit: self.max_body,
            });
        }
        let mut body = Vec::new();
        let mut stream = response.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| transport(&shown, &e))?;
            if body.len() + chunk.len() > self.max_body {
                return Err(UpstreamError::TooLarge {
                    url: shown,
                    limit: self.max_body,
                });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(HttpAnswer {
            status,
            headers,
            body,
        })
    }
}

/// Resolves `path` against `base_url`: a relative path is appended to the base URL's path; an
/// absolute URL is accepted only on the base URL's origin.
pub fn resolve(base_url: &str, path: &str) -> Result<Url, UpstreamError> {
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
    Ok(url)
}

fn display_url(url: &Url) -> String {
    let mut shown = url.clone();
    shown.set_query(None);
    shown.to_string()
}

fn transport(url: &str, error: &reqwest::Error) -> UpstreamError {
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
        assert!(
            resolve(
                "https://api.example.com/v1",
                "https://api.example.com/v1/operations/x"
            )
            .is_ok()
        );
    }
}
