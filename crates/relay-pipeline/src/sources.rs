//! The sender allow-list: the webhook route accepts requests only from these networks (the monitoring
//! product's egress addresses), checked before the signature, so a caller outside them costs no secret
//! fetch and no HMAC. Empty means every source. On AWS the source is API Gateway's
//! `requestContext.http.sourceIp`; locally the TCP peer (behind a reverse proxy that is the proxy: filter there).

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;

/// The networks a webhook may come from (empty: any).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceAllowList(Vec<IpNet>);

/// The address a request came from, inserted as a request extension by each deployment adapter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceAddr(pub IpAddr);

/// A network in the allow-list that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a network in CIDR notation (e.g. 203.0.113.0/24, 2001:db8::/32) or an IP address")]
pub struct BadNetwork(pub String);

impl SourceAllowList {
    /// The list from networks separated by commas or whitespace; a bare address is a /32 (or /128).
    pub fn parse(text: &str) -> Result<SourceAllowList, BadNetwork> {
        text.split(|c: char| c == ',' || c.is_whitespace())
            .filter(|s| !s.is_empty())
            .map(|s| {
                IpNet::from_str(s)
                    .or_else(|_| IpAddr::from_str(s).map(IpNet::from))
                    .map_err(|_| BadNetwork(s.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(SourceAllowList)
    }

    /// Whether the list lets every source through.
    pub fn is_open(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether a request from `source` may pass (an unknown source passes only an open list). An
    /// IPv4-mapped IPv6 address counts as its IPv4 address.
    pub fn admits(&self, source: Option<IpAddr>) -> bool {
        if self.is_open() {
            return true;
        }
        let Some(ip) = source else { return false };
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        self.0.iter().any(|net| net.contains(&ip))
    }
}

impl fmt::Display for SourceAllowList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nets: Vec<String> = self.0.iter().map(IpNet::to_string).collect();
        f.write_str(&nets.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_and_addresses_parse_and_bad_ones_are_named() {
        let list = SourceAllowList::parse(" 203.0.113.0/24, 198.51.100.7 2001:db8::/32 ").unwrap();
        assert_eq!(list.to_string(), "203.0.113.0/24, 198.51.100.7/32, 2001:db8::/32");
        assert!(SourceAllowList::parse("").unwrap().is_open());
        assert_eq!(
            SourceAllowList::parse("10.0.0.0/8, 10.0.0.0/33").unwrap_err(),
            BadNetwork("10.0.0.0/33".into())
        );
        assert!(
            BadNetwork("x".into()).to_string().contains("CIDR"),
            "the error says what is expected"
        );
    }

    #[test]
    fn only_listed_sources_pass_a_closed_list() {
        let list = SourceAllowList::parse("203.0.113.0/24,2001:db8::/32").unwrap();
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        assert!(list.admits(ip("203.0.113.9")));
        assert!(list.admits(ip("::ffff:203.0.113.9")), "IPv4-mapped IPv6");
        assert!(list.admits(ip("2001:db8::1")));
        assert!(!list.admits(ip("198.51.100.1")));
        assert!(!list.admits(None), "an unknown source does not pass a closed list");
        assert!(
            SourceAllowList::default().admits(None),
            "an open list lets everything through"
        );
    }
}
