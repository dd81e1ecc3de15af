//! The headers a request may not set itself.

/// Headers a request may not set itself: the connection's own (`Host`, hop-by-hop), the
/// credentials' (`Authorization`, `Cookie`, proxies'), and forwarding claims.
pub const FORBIDDEN_HEADERS: &[&str] = &[
    "host",
    "authorization",
    "cookie",
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
    "expect",
    "forwarded",
    "via",
    "x-real-ip",
];

/// Prefixes of the header names a request may not set (proxies' credentials, forwarding
/// claims, method overrides).
pub const FORBIDDEN_HEADER_PREFIXES: &[&str] = &["proxy-", "x-forwarded-", "x-http-method"];

/// Whether a header name is one a request may not set ([`FORBIDDEN_HEADERS`],
/// [`FORBIDDEN_HEADER_PREFIXES`]).
pub fn forbidden_header(name: &str) -> bool {
    let name = name.trim().to_ascii_lowercase();
    FORBIDDEN_HEADERS.contains(&name.as_str())
        || FORBIDDEN_HEADER_PREFIXES
            .iter()
            .any(|p| name.starts_with(p))
}
