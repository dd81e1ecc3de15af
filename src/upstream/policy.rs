//! The address policy: which IP addresses the operator may connect to, checked on the addresses
//! a name resolves to (a custom reqwest resolver) and on IP-literal URLs.
//!
//! Link-local and cloud-metadata addresses are refused always; loopback and private ranges only
//! when the provider (`spec.allowPrivateNetworks`) or the operator (`--allow-private-networks`)
//! allows them.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// What the policy thinks of one address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddressClass {
    /// A public address: always allowed.
    Public,
    /// Loopback or private: allowed only when private networks are.
    Private(&'static str),
    /// Link-local, cloud metadata, unspecified, multicast or broadcast: never.
    Forbidden(&'static str),
}

/// Classifies `ip` (IPv4-mapped and NAT64 IPv6 addresses are judged by their IPv4 address).
pub fn classify(ip: IpAddr) -> AddressClass {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = embedded_v4(v6) {
                return classify_v4(v4);
            }
            classify_v6(v6)
        }
    }
}

fn classify_v4(ip: Ipv4Addr) -> AddressClass {
    use AddressClass::{Forbidden, Private, Public};
    let o = ip.octets();
    if ip.is_link_local() {
        return Forbidden(
            "a link-local address (169.254.0.0/16, where cloud metadata services live)",
        );
    }
    if ip == Ipv4Addr::new(100, 100, 100, 200) {
        return Forbidden("a cloud metadata address (100.100.100.200)");
    }
    if ip == Ipv4Addr::new(168, 63, 129, 16) {
        return Forbidden("the Azure host service address (168.63.129.16)");
    }
    if o[0] == 0 || ip.is_broadcast() || ip.is_multicast() {
        return Forbidden("an unspecified, broadcast or multicast address");
    }
    if ip.is_loopback() {
        return Private("a loopback address");
    }
    if ip.is_private() {
        return Private("a private address (RFC 1918)");
    }
    if o[0] == 100 && (o[1] & 0xc0) == 64 {
        return Private("a shared address (100.64.0.0/10)");
    }
    Public
}

fn classify_v6(ip: Ipv6Addr) -> AddressClass {
    use AddressClass::{Forbidden, Private, Public};
    let s = ip.segments();
    if ip == Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254) {
        return Forbidden("a cloud metadata address (fd00:ec2::254)");
    }
    if (s[0] & 0xffc0) == 0xfe80 {
        return Forbidden("a link-local address (fe80::/10)");
    }
    if ip.is_unspecified() || ip.is_multicast() {
        return Forbidden("an unspecified or multicast address");
    }
    if ip.is_loopback() {
        return Private("a loopback address");
    }
    if (s[0] & 0xfe00) == 0xfc00 {
        return Private("a unique local address (fc00::/7)");
    }
    if (s[0] & 0xffc0) == 0xfec0 {
        return Private("a site-local address (fec0::/10)");
    }
    Public
}

/// The IPv4 address inside an IPv4-mapped (`::ffff:a.b.c.d`), IPv4-compatible (`::a.b.c.d`)
/// or NAT64 (`64:ff9b::a.b.c.d`) IPv6 address.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(v4);
    }
    let s = ip.segments();
    let tail = || Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    if s[..6] == [0, 0, 0, 0, 0, 0] && !ip.is_loopback() && !ip.is_unspecified() {
        return Some(tail());
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return Some(tail());
    }
    None
}

/// Which addresses may be connected to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AddressPolicy {
    /// Loopback and private addresses are allowed.
    pub allow_private: bool,
}

impl AddressPolicy {
    /// `Err` says why `ip` is refused.
    pub fn check(self, ip: IpAddr) -> Result<(), String> {
        match classify(ip) {
            AddressClass::Public => Ok(()),
            AddressClass::Private(_) if self.allow_private => Ok(()),
            AddressClass::Private(what) => Err(format!(
                "{ip} is {what}; only a cluster admin may allow it: spec.allowPrivateNetworks on a ClusterOperationProvider, or the operator's --allow-private-networks"
            )),
            AddressClass::Forbidden(what) => {
                Err(format!("{ip} is {what}; the operator never connects there"))
            }
        }
    }

    /// Checks a URL host: an IP literal now; a name only once it is resolved (`Ok`).
    pub fn check_host(self, host: &url::Host<&str>) -> Result<(), String> {
        match host {
            url::Host::Ipv4(v4) => self.check(IpAddr::V4(*v4)),
            url::Host::Ipv6(v6) => self.check(IpAddr::V6(*v6)),
            url::Host::Domain(_) => Ok(()),
        }
    }

    /// Resolves `host` and checks every address; `Ok` holds the allowed ones (at least one).
    pub async fn resolve(self, host: &str, port: u16) -> Result<Vec<SocketAddr>, AddressRefused> {
        let found: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| AddressRefused {
                host: host.to_owned(),
                why: format!("it does not resolve ({e})"),
            })?
            .collect();
        let mut allowed = Vec::new();
        let mut refused = None;
        for addr in found {
            match self.check(addr.ip()) {
                Ok(()) => allowed.push(addr),
                Err(why) => refused = Some(why),
            }
        }
        match (allowed.is_empty(), refused) {
            (false, _) => Ok(allowed),
            (true, Some(why)) => Err(AddressRefused {
                host: host.to_owned(),
                why: format!("it resolves to {why}"),
            }),
            (true, None) => Err(AddressRefused {
                host: host.to_owned(),
                why: "it resolves to no address".into(),
            }),
        }
    }
}

/// A connection refused by the address policy (also the resolver's error, so that it can be
/// told apart from other connection errors).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("refusing to connect to {host}: {why}")]
pub struct AddressRefused {
    /// The host name or address.
    pub host: String,
    /// Why.
    pub why: String,
}

/// A reqwest DNS resolver that applies an [`AddressPolicy`] to what names resolve to.
#[derive(Clone, Debug)]
pub struct PolicyResolver(pub AddressPolicy);

impl Resolve for PolicyResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.0;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs = policy.resolve(&host, 0).await?;
            let addrs: Addrs = Box::new(addrs.into_iter());
            Ok(addrs)
        })
    }
}

/// The [`AddressRefused`] somewhere in an error's source chain.
pub fn refused_in<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a AddressRefused> {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(refused) = e.downcast_ref::<AddressRefused>() {
            return Some(refused);
        }
        current = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(s: &str) -> AddressClass {
        classify(s.parse().expect("an IP address"))
    }

    #[test]
    fn metadata_and_link_local_are_forbidden() {
        for ip in [
            "169.254.169.254",
            "169.254.0.1",
            "100.100.100.200",
            "168.63.129.16",
            "fd00:ec2::254",
            "fe80::1",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "::169.254.169.254",
            "0.0.0.0",
            "::",
            "255.255.255.255",
            "224.0.0.1",
            "ff02::1",
        ] {
            assert!(
                matches!(class(ip), AddressClass::Forbidden(_)),
                "{ip} must be forbidden"
            );
            assert!(
                AddressPolicy {
                    allow_private: true
                }
                .check(ip.parse().expect("ip"))
                .is_err(),
                "{ip} is refused even with private networks allowed"
            );
        }
    }

    #[test]
    fn private_ranges_need_an_opt_in() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "100.64.0.1",
            "::1",
            "fd12::1",
            "::ffff:10.0.0.1",
        ] {
            assert!(
                matches!(class(ip), AddressClass::Private(_)),
                "{ip} is private"
            );
            let ip: IpAddr = ip.parse().expect("ip");
            let refused = AddressPolicy {
                allow_private: false,
            }
            .check(ip)
            .expect_err("refused by default");
            assert!(
                refused.contains("allowPrivateNetworks") && refused.contains("cluster admin"),
                "{refused}"
            );
            assert!(
                AddressPolicy {
                    allow_private: true
                }
                .check(ip)
                .is_ok()
            );
        }
    }

    #[test]
    fn public_addresses_are_allowed() {
        for ip in ["8.8.8.8", "172.32.0.1", "100.128.0.1", "2001:4860::8888"] {
            assert_eq!(class(ip), AddressClass::Public, "{ip}");
        }
    }

    #[tokio::test]
    async fn names_are_judged_by_what_they_resolve_to() {
        let strict = AddressPolicy {
            allow_private: false,
        };
        let refused = strict.resolve("localhost", 80).await.expect_err("loopback");
        assert!(refused.to_string().contains("loopback"), "{refused}");
        let open = AddressPolicy {
            allow_private: true,
        };
        assert!(open.resolve("127.0.0.1", 80).await.is_ok());
        let metadata = open
            .resolve("169.254.169.254", 80)
            .await
            .expect_err("metadata");
        assert!(metadata.to_string().contains("link-local"), "{metadata}");
    }
}
