//! AWS Signature Version 4 for any request the upstream client sends (`aws-sigv4`).

use std::time::SystemTime;

use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign as sigv4_sign};
use aws_sigv4::sign::v4;
use reqwest::header::{HeaderName, HeaderValue};
use secrecy::{ExposeSecret, SecretString};

/// An AWS access key (and session token), plus where it is used.
#[derive(Clone)]
pub struct AwsKeys {
    /// The access key id.
    pub access_key_id: SecretString,
    /// The secret access key.
    pub secret_access_key: SecretString,
    /// The session token of temporary credentials.
    pub session_token: Option<SecretString>,
    /// The region, e.g. `us-east-1`.
    pub region: String,
    /// The service's signing name, e.g. `cloudcontrolapi`.
    pub service: String,
}

impl AwsKeys {
    /// Every secret value (to scrub messages with).
    /// What a signed request carries of the keys: the access key id and the session token
    /// (the secret key only signs).
    pub(super) fn carried(&self) -> Vec<String> {
        let mut carried = vec![self.access_key_id.expose_secret().to_owned()];
        if let Some(token) = &self.session_token {
            carried.push(token.expose_secret().to_owned());
        }
        carried
    }

    pub(super) fn secrets(&self) -> Vec<&str> {
        let mut all = vec![
            self.access_key_id.expose_secret(),
            self.secret_access_key.expose_secret(),
        ];
        if let Some(token) = &self.session_token {
            all.push(token.expose_secret());
        }
        all
    }
}

/// Signs `request` at `now`: adds `Authorization`, `X-Amz-Date` and, with a session token,
/// `X-Amz-Security-Token`. Every header already on the request is signed, and `host`.
pub fn sign(request: &mut reqwest::Request, keys: &AwsKeys, now: SystemTime) -> Result<(), String> {
    let identity = aws_credential_types::Credentials::new(
        keys.access_key_id.expose_secret(),
        keys.secret_access_key.expose_secret(),
        keys.session_token
            .as_ref()
            .map(|t| t.expose_secret().to_owned()),
        None,
        "lro-operator",
    )
    .into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(&keys.region)
        .name(&keys.service)
        .time(now)
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| format!("cannot sign the request (SigV4): {e}"))?
        .into();
    let headers: Vec<(String, String)> = request
        .headers()
        .iter()
        .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
        .collect();
    let body = request
        .body()
        .and_then(reqwest::Body::as_bytes)
        .unwrap_or_default()
        .to_vec();
    let url = request.url().to_string();
    let signable = SignableRequest::new(
        request.method().as_str(),
        url,
        headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        SignableBody::Bytes(&body),
    )
    .map_err(|e| format!("cannot sign the request (SigV4): {e}"))?;
    let (instructions, _signature) = sigv4_sign(signable, &params)
        .map_err(|e| format!("cannot sign the request (SigV4): {e}"))?
        .into_parts();
    for (name, value) in instructions.headers() {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| "SigV4 produced an invalid header name".to_owned())?;
        let mut value = HeaderValue::from_str(value)
            .map_err(|_| "SigV4 produced an invalid header value".to_owned())?;
        value.set_sensitive(true);
        request.headers_mut().insert(name, value);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    /// The `get-vanilla` case of the AWS SigV4 test suite.
    #[test]
    fn signs_the_aws_test_suite_vanilla_get() {
        let keys = AwsKeys {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
            session_token: None,
            region: "us-east-1".into(),
            service: "service".into(),
        };
        let mut request = reqwest::Request::new(
            reqwest::Method::GET,
            "https://example.amazonaws.com/".parse().expect("url"),
        );
        // 2015-08-30T12:36:00Z
        let now = UNIX_EPOCH + Duration::from_secs(1_440_938_160);
        sign(&mut request, &keys, now).expect("signed");
        let auth = request.headers()["authorization"].to_str().expect("ascii");
        assert_eq!(
            auth,
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
        );
        assert_eq!(request.headers()["x-amz-date"], "20150830T123600Z");
        assert!(request.headers()["authorization"].is_sensitive());
    }

    #[test]
    fn session_tokens_and_request_headers_are_signed() {
        let keys = AwsKeys {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "secret".into(),
            session_token: Some("session-token-value".into()),
            region: "eu-west-1".into(),
            service: "cloudcontrolapi".into(),
        };
        let mut request = reqwest::Request::new(
            reqwest::Method::POST,
            "http://127.0.0.1:8480/aws".parse().expect("url"),
        );
        request.headers_mut().insert(
            "x-amz-target",
            HeaderValue::from_static("CloudApiService.CreateResource"),
        );
        *request.body_mut() = Some(reqwest::Body::from("{}"));
        sign(&mut request, &keys, SystemTime::now()).expect("signed");
        let auth = request.headers()["authorization"].to_str().expect("ascii");
        assert!(
            auth.contains("SignedHeaders=host;x-amz-date;x-amz-security-token;x-amz-target"),
            "{auth}"
        );
        assert!(
            auth.contains("/eu-west-1/cloudcontrolapi/aws4_request"),
            "{auth}"
        );
        assert_eq!(
            request.headers()["x-amz-security-token"],
            "session-token-value"
        );
    }
}
