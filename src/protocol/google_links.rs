//! Google API links (`selfLink`, `targetLink`, `zone`) name a host of their own — Compute Engine
//! and Deployment Manager write `https://www.googleapis.com/compute/v1/…` or
//! `…/deploymentmanager/v2/…` whatever host was called (`compute.googleapis.com`, a regional or
//! private endpoint), GKE `https://container.googleapis.com/v1/…`. Credentials must not follow
//! such a link to its host, so a link is polled at the provider's `baseURL` with the link's
//! *resource path*: what follows the API's version root (`v1`, `v2`, `beta`, `v1beta1`, …).

/// Whether a path segment is an API version root: `v1`, `v2`, `v1beta1`, `v1p1beta1`, `v2alpha`,
/// `alpha`, `beta`.
fn is_version(segment: &str) -> bool {
    if matches!(segment, "alpha" | "beta") {
        return true;
    }
    let Some(rest) = segment.strip_prefix('v') else {
        return false;
    };
    let digits = rest.chars().take_while(char::is_ascii_digit).count();
    if digits == 0 {
        return false;
    }
    let mut rest = &rest[digits..];
    // `p1` as in v1p1beta1.
    if let Some(p) = rest.strip_prefix('p') {
        let n = p.chars().take_while(char::is_ascii_digit).count();
        if n == 0 {
            return false;
        }
        rest = &p[n..];
    }
    let rest = rest
        .strip_prefix("alpha")
        .or_else(|| rest.strip_prefix("beta"))
        .unwrap_or(rest);
    rest.chars().all(|c| c.is_ascii_digit())
}

/// Where to poll a link: an absolute link becomes its resource path (relative to `baseURL`), or,
/// when its path has no version root, its whole path (which the client also puts under
/// `baseURL`); anything else (a path the user gave relative to `baseURL`) is returned as it is.
/// Never a URL with a host.
pub fn resource_path(link: &str) -> String {
    let Ok(url) = url::Url::parse(link) else {
        return link.to_owned();
    };
    if url.cannot_be_a_base() {
        return link.to_owned();
    }
    let segments: Vec<&str> = url
        .path_segments()
        .map(Iterator::collect)
        .unwrap_or_default();
    match segments.iter().position(|s| is_version(s)) {
        Some(root) => segments[root + 1..].join("/"),
        None => url.path().to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_on_any_host_become_resource_paths() {
        let cases = [
            // Deployment Manager's guide "Managing long-running operations".
            (
                "https://www.googleapis.com/deploymentmanager/v2/projects/example-project/global/operations/operation-11233234311678-587af2c0xyz9c-0987fa54-baccd59f",
                "projects/example-project/global/operations/operation-11233234311678-587af2c0xyz9c-0987fa54-baccd59f",
            ),
            (
                "https://www.googleapis.com/compute/v1/projects/p/zones/us-central1-a/operations/operation-1",
                "projects/p/zones/us-central1-a/operations/operation-1",
            ),
            (
                "https://compute.googleapis.com/compute/beta/projects/p/regions/r/operations/o",
                "projects/p/regions/r/operations/o",
            ),
            (
                "https://container.googleapis.com/v1/projects/123/zones/us-central1-a/operations/operation-9",
                "projects/123/zones/us-central1-a/operations/operation-9",
            ),
            (
                "https://example.googleapis.com/v1p1beta1/projects/p/operations/o",
                "projects/p/operations/o",
            ),
            ("https://private.example/ops/o-1", "/ops/o-1"),
            (
                "projects/p/global/operations/operation-2",
                "projects/p/global/operations/operation-2",
            ),
        ];
        for (link, want) in cases {
            assert_eq!(resource_path(link), want, "{link}");
        }
    }

    #[test]
    fn version_roots_are_recognised() {
        for yes in [
            "v1",
            "v2",
            "v1beta1",
            "v1p1beta1",
            "v2alpha",
            "beta",
            "alpha",
            "v1beta",
        ] {
            assert!(is_version(yes), "{yes}");
        }
        for no in [
            "v",
            "projects",
            "vm-1",
            "v1x",
            "version",
            "us-central1-a",
            "",
        ] {
            assert!(!is_version(no), "{no}");
        }
    }
}
