//! Where reports may be delivered: `http(s)` URLs whose addresses are public, so that whoever
//! can configure an endpoint (or make a DNS name point somewhere) cannot turn the workers
//! against the internal network (the cloud's metadata service at 169.254.169.254, the
//! cluster's services, the pod's own loopback). Addresses in networks the operator allows
//! explicitly are the exception.
//!
//! URLs with an address are checked when the endpoints file is read; names are checked at every
//! attempt, by [`Policy::addresses`], which is how the delivery client resolves them: it connects
//! only to the addresses returned, so a name which resolves to a public address at start-up and
//! to a private one later (DNS rebinding) is refused too.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

use hyper::Uri;

/// A network in CIDR notation (`10.0.0.0/8`, `fd00::/8`, or one address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    address: IpAddr,
    prefix: u8,
}

impl FromStr for Network {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let (address, prefix) = match text.trim().split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text.trim(), None),
        };
        let address: IpAddr = address.parse().map_err(|_| format!("{text:?} is not an address or network"))?;
        let bits = if address.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(prefix) => prefix.parse::<u8>().ok().filter(|p| *p <= bits).ok_or(format!("{text:?}: bad prefix"))?,
            None => bits,
        };
        Ok(Network { address, prefix })
    }
}

impl Network {
    fn contains(&self, ip: IpAddr) -> bool {
        match (self.address, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => prefix_matches(&net.octets(), &ip.octets(), self.prefix),
            (IpAddr::V6(net), IpAddr::V6(ip)) => prefix_matches(&net.octets(), &ip.octets(), self.prefix),
            _ => false,
        }
    }
}

fn prefix_matches(network: &[u8], address: &[u8], prefix: u8) -> bool {
    let (whole, rest) = (usize::from(prefix / 8), prefix % 8);
    if network[..whole] != address[..whole] {
        return false;
    }
    rest == 0 || {
        let mask = 0xffu8 << (8 - rest);
        network[whole] & mask == address[whole] & mask
    }
}

/// An IPv4 address carried in IPv6 (mapped `::ffff:a.b.c.d`, or NAT64 `64:ff9b::a.b.c.d`) is
/// judged as the IPv4 address it reaches.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return IpAddr::V4(v4);
            }
            let segments = v6.segments();
            if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                let [a, b] = segments[6].to_be_bytes();
                let [c, d] = segments[7].to_be_bytes();
                return IpAddr::V4(Ipv4Addr::new(a, b, c, d));
            }
            ip
        }
        IpAddr::V4(_) => ip,
    }
}

/// Whether `ip` is only reachable inside a host or a private network: loopback, private
/// (RFC 1918, unique local), link-local (which holds the cloud metadata services), shared
/// (carrier-grade NAT, RFC 6598), unspecified, broadcast, multicast, or reserved.
pub fn is_internal(ip: IpAddr) -> bool {
    match canonical(ip) {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
                || a >= 240
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || v6 == Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 1)
        }
    }
}

/// The networks an operator allowed besides public addresses (`DELIVERY_ALLOWED_NETWORKS`).
#[derive(Debug, Clone, Default)]
pub struct Policy {
    allowed: Vec<Network>,
}

/// A list of networks, comma-separated (`10.0.0.0/8,fd00::/8`); empty for none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetworkList(pub Vec<Network>);

impl FromStr for NetworkList {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        text.split(',')
            .map(str::trim)
            .filter(|part| !part.is_empty())
            .map(str::parse)
            .collect::<Result<_, _>>()
            .map(NetworkList)
    }
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum DestinationError {
    #[error("{0}: not a URL")]
    NotAUrl(String),
    #[error("{0}: only http and https URLs are delivered to")]
    Scheme(String),
    #[error("{0}: credentials in the URL are not accepted (they would be logged with it)")]
    Credentials(String),
    #[error("{url}: {address} is an internal address; allow its network in DELIVERY_ALLOWED_NETWORKS to deliver there")]
    Internal { url: String, address: IpAddr },
    #[error(
        "{host} resolves to internal addresses only ({}); allow their network in DELIVERY_ALLOWED_NETWORKS to deliver there",
        addresses.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
    )]
    ResolvesToInternal { host: String, addresses: Vec<IpAddr> },
    #[error("cannot resolve {host}: {reason}")]
    Unresolved { host: String, reason: String },
}

/// A URL that passed [`Policy::check_url`]: http or https, a host, no credentials, and not an
/// internal address (a name is checked when it is resolved).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    uri: Uri,
    https: bool,
    /// The host without the brackets of an IPv6 address.
    host: String,
    port: u16,
    /// The host, when it is an address.
    address: Option<IpAddr>,
}

impl Destination {
    pub fn is_https(&self) -> bool {
        self.https
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// What the `Host` header says: the URL's authority.
    pub fn authority(&self) -> &str {
        self.uri.authority().map_or("", |authority| authority.as_str())
    }

    /// The request target: path and query (`/` when the URL has none).
    pub fn path_and_query(&self) -> &str {
        self.uri.path_and_query().map_or("/", |target| target.as_str())
    }

    /// The whole URL, as configured (it may hold a token in its path or query: not for logs).
    pub fn url(&self) -> String {
        self.uri.to_string()
    }

    /// The URL without its path and query, for logs and errors.
    pub fn origin(&self) -> String {
        format!("{}://{}", if self.https { "https" } else { "http" }, self.authority())
    }
}

impl Policy {
    pub fn new(allowed: Vec<Network>) -> Self {
        Policy { allowed }
    }

    pub fn permits(&self, ip: IpAddr) -> bool {
        !is_internal(ip) || self.allowed.iter().any(|network| network.contains(ip))
    }

    /// Checks what can be checked of `url` without resolving it. Errors name the URL without
    /// its path and query (which may hold a token).
    pub fn check_url(&self, url: &str) -> Result<Destination, DestinationError> {
        let url = url.trim();
        let scheme = url.split_once("://").map(|(scheme, _)| scheme.to_ascii_lowercase());
        let shown = || match url.split_once("://") {
            Some((scheme, rest)) => format!("{scheme}://{}", rest.split(['/', '?', '#']).next().unwrap_or_default()),
            None => url.chars().take(40).collect(),
        };
        match scheme.as_deref() {
            Some("http" | "https") => {}
            Some(_) => return Err(DestinationError::Scheme(shown())),
            None => return Err(DestinationError::NotAUrl(shown())),
        }
        let uri: Uri = url.parse().map_err(|_| DestinationError::NotAUrl(shown()))?;
        let authority = uri.authority().ok_or_else(|| DestinationError::NotAUrl(shown()))?;
        if authority.as_str().contains('@') {
            return Err(DestinationError::Credentials(format!(
                "{}://…@{}",
                scheme.as_deref().unwrap_or_default(),
                authority.host()
            )));
        }
        let host = authority.host().trim_start_matches('[').trim_end_matches(']').to_owned();
        if host.is_empty() {
            return Err(DestinationError::NotAUrl(shown()));
        }
        let https = scheme.as_deref() == Some("https");
        let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
        let address = host.parse::<IpAddr>().ok();
        if let Some(address) = address
            && !self.permits(address)
        {
            return Err(DestinationError::Internal { url: shown(), address });
        }
        Ok(Destination { uri, https, host, port, address })
    }

    /// The addresses to connect to for `destination`: its address, or those its name resolves
    /// to now that this policy permits; an error when none is left.
    pub async fn addresses(&self, destination: &Destination) -> Result<Vec<SocketAddr>, DestinationError> {
        let port = destination.port;
        if let Some(address) = destination.address {
            return if self.permits(address) {
                Ok(vec![SocketAddr::new(address, port)])
            } else {
                Err(DestinationError::Internal { url: destination.origin(), address })
            };
        }
        let host = destination.host.as_str();
        let resolved: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
            .await
            .map_err(|error| DestinationError::Unresolved { host: host.to_owned(), reason: error.to_string() })?
            .collect();
        let permitted: Vec<SocketAddr> = resolved.iter().copied().filter(|a| self.permits(a.ip())).collect();
        if permitted.is_empty() {
            return Err(DestinationError::ResolvesToInternal {
                host: host.to_owned(),
                addresses: resolved.iter().map(SocketAddr::ip).collect(),
            });
        }
        Ok(permitted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn internal_addresses_are_refused_and_public_ones_taken() {
        for internal in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "fc00::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "ff02::1",
        ] {
            assert!(is_internal(ip(internal)), "{internal} is internal");
        }
        for public in ["8.8.8.8", "172.32.0.1", "100.128.0.1", "2606:4700::1111", "::ffff:1.1.1.1", "64:ff9b::808:808"]
        {
            assert!(!is_internal(ip(public)), "{public} is public");
        }
    }

    #[test]
    fn allowed_networks_make_exceptions() {
        let policy = Policy::new(vec!["10.0.0.0/8".parse().unwrap(), "127.0.0.1".parse().unwrap()]);
        assert!(policy.permits(ip("10.200.0.7")));
        assert!(policy.permits(ip("127.0.0.1")));
        assert!(policy.permits(ip("::ffff:127.0.0.1")));
        assert!(!policy.permits(ip("127.0.0.2")));
        assert!(!policy.permits(ip("169.254.169.254")));
        assert!("10.0.0.0/33".parse::<Network>().is_err());
        assert!("nonsense".parse::<Network>().is_err());
        assert!("fd00::/8".parse::<Network>().unwrap().contains(ip("fd12::1")));
        assert!(!"172.16.0.0/12".parse::<Network>().unwrap().contains(ip("172.32.0.1")));
    }

    #[test]
    fn urls_are_http_without_credentials_and_literal_addresses_are_checked() {
        let policy = Policy::default();
        let destination = policy.check_url("https://hooks.example.org/attendance?token=t0k3n").unwrap();
        assert_eq!((destination.host(), destination.port(), destination.is_https()), ("hooks.example.org", 443, true));
        assert_eq!(destination.path_and_query(), "/attendance?token=t0k3n");
        assert_eq!(destination.origin(), "https://hooks.example.org");
        assert_eq!(policy.check_url("http://example.org:8080").unwrap().path_and_query(), "/");
        assert!(matches!(policy.check_url("ftp://example.org/"), Err(DestinationError::Scheme(_))));
        assert!(matches!(policy.check_url("file:///etc/passwd"), Err(DestinationError::Scheme(_))));
        assert!(matches!(policy.check_url("example.org/hooks"), Err(DestinationError::NotAUrl(_))));
        let credentials = policy.check_url("https://user:hunter2@example.org/").unwrap_err().to_string();
        assert!(!credentials.contains("hunter2"), "{credentials}");
        let metadata = policy.check_url("http://169.254.169.254/latest/meta-data/?secret=s").unwrap_err();
        assert!(matches!(metadata, DestinationError::Internal { .. }), "{metadata}");
        assert!(!metadata.to_string().contains("secret"), "{metadata}");
        assert!(matches!(policy.check_url("http://[::1]:8080/"), Err(DestinationError::Internal { .. })));
        let allowed = Policy::new(vec!["127.0.0.0/8".parse().unwrap()]);
        assert_eq!(allowed.check_url("http://127.0.0.1:9/").unwrap().port(), 9);
        assert_eq!(allowed.check_url("http://[::1]:9/").map(|d| d.host().to_owned()).ok(), None);
        assert_eq!("10.0.0.0/8, ::1".parse::<NetworkList>().unwrap().0.len(), 2);
        assert_eq!("".parse::<NetworkList>().unwrap(), NetworkList::default());
    }

    #[tokio::test]
    async fn names_resolving_to_internal_addresses_only_are_refused() {
        let destination =
            Policy::default().check_url("http://localhost:8080/hooks").expect("a name passes the URL check");
        let refused = Policy::default().addresses(&destination).await.expect_err("localhost is refused");
        assert!(matches!(refused, DestinationError::ResolvesToInternal { .. }), "{refused}");
        assert!(refused.to_string().contains("DELIVERY_ALLOWED_NETWORKS"), "{refused}");
        let allowed = Policy::new(vec!["127.0.0.0/8".parse().unwrap(), "::1".parse().unwrap()]);
        let addresses = allowed.addresses(&destination).await.unwrap();
        assert!(
            !addresses.is_empty() && addresses.iter().all(|a| a.ip().is_loopback() && a.port() == 8080),
            "{addresses:?}"
        );
    }
}
