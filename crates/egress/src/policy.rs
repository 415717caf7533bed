//! Which IP addresses the manager may connect to.
//!
//! Addresses of the public internet are allowed. Addresses that reach into the manager's own surroundings are
//! refused unless a CIDR given with `--allow-egress` holds them: loopback (the manager's own ports), link-local
//! (cloud metadata services such as 169.254.169.254), private and shared ranges (the nodes and services of the
//! management cluster's network), unspecified, multicast and reserved ranges, and the management cluster's
//! Service range (`--service-cidr`). IPv6 addresses that carry an IPv4 address (mapped, compatible, NAT64,
//! 6to4) are judged by the IPv4 address they carry, so `::ffff:127.0.0.1` is loopback too.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

/// The management cluster's Service range when `--service-cidr` is not given: kubeadm's default.
pub const DEFAULT_SERVICE_CIDR: &str = "10.96.0.0/12";

/// Why an address is refused by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressClass {
    Loopback,
    LinkLocal,
    Private,
    Unspecified,
    Multicast,
    Reserved,
    /// Inside the management cluster's Service range: in-cluster Services, the apiserver's own among them.
    ServiceRange(IpNet),
}

impl fmt::Display for AddressClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Loopback => f.write_str("loopback"),
            Self::LinkLocal => f.write_str("link-local"),
            Self::Private => f.write_str("private"),
            Self::Unspecified => f.write_str("unspecified"),
            Self::Multicast => f.write_str("multicast"),
            Self::Reserved => f.write_str("reserved"),
            Self::ServiceRange(net) => {
                write!(
                    f,
                    "in the management cluster's Service range {net} (--service-cidr)"
                )
            }
        }
    }
}

/// Ranges refused unless allowed, with their class. The IPv6 ranges that embed an IPv4 address are not here:
/// [`embedded_v4`] judges them by that address.
const REFUSED_V4: &[(Ipv4Addr, u8, AddressClass)] = &[
    (Ipv4Addr::new(0, 0, 0, 0), 8, AddressClass::Unspecified),
    (Ipv4Addr::new(10, 0, 0, 0), 8, AddressClass::Private),
    // Shared address space (RFC 6598): carrier NAT, and some clouds' metadata services (100.100.100.200).
    (Ipv4Addr::new(100, 64, 0, 0), 10, AddressClass::Private),
    (Ipv4Addr::new(127, 0, 0, 0), 8, AddressClass::Loopback),
    (Ipv4Addr::new(169, 254, 0, 0), 16, AddressClass::LinkLocal),
    (Ipv4Addr::new(172, 16, 0, 0), 12, AddressClass::Private),
    (Ipv4Addr::new(192, 0, 0, 0), 24, AddressClass::Reserved),
    (Ipv4Addr::new(192, 168, 0, 0), 16, AddressClass::Private),
    // Benchmarking (RFC 2544): not routed on the internet, so only ever someone's internal network.
    (Ipv4Addr::new(198, 18, 0, 0), 15, AddressClass::Private),
    (Ipv4Addr::new(224, 0, 0, 0), 4, AddressClass::Multicast),
    (Ipv4Addr::new(240, 0, 0, 0), 4, AddressClass::Reserved),
];

const REFUSED_V6: &[(Ipv6Addr, u8, AddressClass)] = &[
    (Ipv6Addr::UNSPECIFIED, 128, AddressClass::Unspecified),
    (Ipv6Addr::LOCALHOST, 128, AddressClass::Loopback),
    (
        Ipv6Addr::new(0x100, 0, 0, 0, 0, 0, 0, 0),
        64,
        AddressClass::Reserved,
    ),
    // Teredo hides an IPv4 address (obfuscated) behind a relay: nothing a manager needs.
    (
        Ipv6Addr::new(0x2001, 0, 0, 0, 0, 0, 0, 0),
        32,
        AddressClass::Reserved,
    ),
    (
        Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0),
        7,
        AddressClass::Private,
    ),
    (
        Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0),
        10,
        AddressClass::LinkLocal,
    ),
    // Site-local, deprecated but still routed inside some networks.
    (
        Ipv6Addr::new(0xfec0, 0, 0, 0, 0, 0, 0, 0),
        10,
        AddressClass::Private,
    ),
    (
        Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0),
        8,
        AddressClass::Multicast,
    ),
];

/// The IPv4 address an IPv6 address carries, for the forms that reach it: IPv4-mapped (`::ffff:a.b.c.d`),
/// IPv4-compatible (`::a.b.c.d`), NAT64 (`64:ff9b::/96`, `64:ff9b:1::/48`) and 6to4 (`2002:AABB:CCDD::/48`).
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(v4);
    }
    let s = ip.segments();
    let low = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    let compatible = s[..6] == [0; 6] && !(ip.is_unspecified() || ip.is_loopback());
    let nat64 = s[..6] == [0x64, 0xff9b, 0, 0, 0, 0];
    let local_nat64 = s[..3] == [0x64, 0xff9b, 1];
    if compatible || nat64 || local_nat64 {
        return Some(low);
    }
    if s[0] == 0x2002 {
        return Some(Ipv4Addr::new(
            (s[1] >> 8) as u8,
            s[1] as u8,
            (s[2] >> 8) as u8,
            s[2] as u8,
        ));
    }
    None
}

/// Parses a CIDR (`10.0.0.0/8`, `fd00::/8`) or a single address (`192.0.2.7`, a /32 or /128). Host bits are
/// cleared: `10.1.2.3/8` is `10.0.0.0/8`.
pub fn parse_cidr(text: &str) -> Result<IpNet, String> {
    let text = text.trim();
    if let Ok(net) = text.parse::<IpNet>() {
        return Ok(net.trunc());
    }
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Ok(IpNet::from(ip));
    }
    Err(format!(
        "{text:?} is not a CIDR; write it as 10.0.0.0/8, fd00::/8 or a single address"
    ))
}

/// What the manager may connect to: the default refusals above, the Service range, and the CIDRs an operator
/// allowed. An allowed CIDR wins over every refusal, the Service range included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressPolicy {
    allowed: Vec<IpNet>,
    service_ranges: Vec<IpNet>,
}

impl Default for EgressPolicy {
    /// Nothing allowed beyond the public internet; the Service range is [`DEFAULT_SERVICE_CIDR`].
    fn default() -> Self {
        Self {
            allowed: Vec::new(),
            service_ranges: vec![
                DEFAULT_SERVICE_CIDR
                    .parse()
                    .expect("the default Service CIDR parses"),
            ],
        }
    }
}

impl EgressPolicy {
    /// The default policy plus the `allowed` CIDRs.
    pub fn allowing(allowed: impl IntoIterator<Item = IpNet>) -> Self {
        Self {
            allowed: allowed.into_iter().map(|n| n.trunc()).collect(),
            ..Self::default()
        }
    }

    /// The same policy with `ranges` as the management cluster's Service range(s) (dual-stack clusters have two).
    pub fn with_service_ranges(mut self, ranges: impl IntoIterator<Item = IpNet>) -> Self {
        self.service_ranges = ranges.into_iter().map(|n| n.trunc()).collect();
        self
    }

    pub fn allowed(&self) -> &[IpNet] {
        &self.allowed
    }

    pub fn service_ranges(&self) -> &[IpNet] {
        &self.service_ranges
    }

    /// Why `ip` is refused, or `None` when the manager may connect to it.
    pub fn refusal(&self, ip: IpAddr) -> Option<AddressClass> {
        if self.allowed.iter().any(|net| net.contains(&ip)) {
            return None;
        }
        if let IpAddr::V6(v6) = ip
            && let Some(v4) = embedded_v4(v6)
        {
            return self.refusal(IpAddr::V4(v4));
        }
        if let Some(net) = self.service_ranges.iter().find(|net| net.contains(&ip)) {
            return Some(AddressClass::ServiceRange(*net));
        }
        match ip {
            IpAddr::V4(v4) => REFUSED_V4
                .iter()
                .find(|(base, len, _)| in_v4(v4, *base, *len))
                .map(|(_, _, class)| *class),
            IpAddr::V6(v6) => REFUSED_V6
                .iter()
                .find(|(base, len, _)| in_v6(v6, *base, *len))
                .map(|(_, _, class)| *class),
        }
    }
}

fn in_v4(ip: Ipv4Addr, base: Ipv4Addr, len: u8) -> bool {
    let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
    u32::from(ip) & mask == u32::from(base) & mask
}

fn in_v6(ip: Ipv6Addr, base: Ipv6Addr, len: u8) -> bool {
    let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
    u128::from(ip) & mask == u128::from(base) & mask
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn addresses_inside_the_manager_s_surroundings_are_refused_by_default() {
        let policy = EgressPolicy::default();
        for (address, class) in [
            ("169.254.169.254", AddressClass::LinkLocal),
            ("127.0.0.1", AddressClass::Loopback),
            ("127.255.0.9", AddressClass::Loopback),
            ("10.0.0.1", AddressClass::Private),
            ("172.16.5.4", AddressClass::Private),
            ("172.31.255.255", AddressClass::Private),
            ("192.168.1.1", AddressClass::Private),
            ("100.100.100.200", AddressClass::Private),
            ("0.0.0.0", AddressClass::Unspecified),
            ("0.1.2.3", AddressClass::Unspecified),
            ("224.0.0.1", AddressClass::Multicast),
            ("255.255.255.255", AddressClass::Reserved),
            ("::1", AddressClass::Loopback),
            ("::", AddressClass::Unspecified),
            ("fe80::1", AddressClass::LinkLocal),
            ("fd00:ec2::254", AddressClass::Private),
            ("fc00::1", AddressClass::Private),
            ("ff02::1", AddressClass::Multicast),
            // IPv6 forms that carry a refused IPv4 address.
            ("::ffff:127.0.0.1", AddressClass::Loopback),
            ("::ffff:169.254.169.254", AddressClass::LinkLocal),
            ("::10.0.0.1", AddressClass::Private),
            ("64:ff9b::a9fe:a9fe", AddressClass::LinkLocal),
            ("64:ff9b:1::7f00:1", AddressClass::Loopback),
            ("2002:a9fe:a9fe::1", AddressClass::LinkLocal),
        ] {
            assert_eq!(policy.refusal(ip(address)), Some(class), "{address}");
        }
    }

    #[test]
    fn the_service_range_is_refused_and_named() {
        let policy = EgressPolicy::default();
        let default: IpNet = DEFAULT_SERVICE_CIDR.parse().unwrap();
        assert_eq!(
            policy.refusal(ip("10.96.0.1")),
            Some(AddressClass::ServiceRange(default))
        );
        assert_eq!(
            policy.refusal(ip("10.111.255.254")),
            Some(AddressClass::ServiceRange(default))
        );
        // Outside the Service range, 10/8 is still private.
        assert_eq!(
            policy.refusal(ip("10.112.0.1")),
            Some(AddressClass::Private)
        );

        // A Service range outside the private ranges is refused too, and named.
        let custom: IpNet = "198.51.100.0/24".parse().unwrap();
        let policy = EgressPolicy::default().with_service_ranges([custom]);
        assert_eq!(
            policy.refusal(ip("198.51.100.10")),
            Some(AddressClass::ServiceRange(custom))
        );
        assert!(
            AddressClass::ServiceRange(custom)
                .to_string()
                .contains("198.51.100.0/24 (--service-cidr)")
        );
    }

    #[test]
    fn public_addresses_are_allowed() {
        let policy = EgressPolicy::default();
        for address in [
            "93.184.215.14",
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700::6810:85e5",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
        ] {
            assert_eq!(policy.refusal(ip(address)), None, "{address}");
        }
    }

    #[test]
    fn an_allowed_cidr_wins_over_every_refusal_and_nothing_else() {
        let policy = EgressPolicy::allowing([
            parse_cidr("127.0.0.0/8").unwrap(),
            parse_cidr("10.96.0.10").unwrap(),
        ]);
        assert_eq!(policy.refusal(ip("127.0.0.1")), None);
        assert_eq!(policy.refusal(ip("127.8.9.10")), None);
        // The mapped form of an allowed address is allowed too.
        assert_eq!(policy.refusal(ip("::ffff:127.0.0.1")), None);
        // A single allowed address inside the Service range; its neighbour stays refused.
        assert_eq!(policy.refusal(ip("10.96.0.10")), None);
        assert!(matches!(
            policy.refusal(ip("10.96.0.11")),
            Some(AddressClass::ServiceRange(_))
        ));
        assert_eq!(
            policy.refusal(ip("169.254.169.254")),
            Some(AddressClass::LinkLocal)
        );
        assert_eq!(policy.refusal(ip("::1")), Some(AddressClass::Loopback));
    }

    #[test]
    fn cidrs_parse_with_host_bits_cleared_and_single_addresses_as_hosts() {
        assert_eq!(
            parse_cidr("10.1.2.3/8").unwrap(),
            "10.0.0.0/8".parse::<IpNet>().unwrap()
        );
        assert_eq!(
            parse_cidr(" 192.0.2.7 ").unwrap(),
            "192.0.2.7/32".parse::<IpNet>().unwrap()
        );
        assert_eq!(
            parse_cidr("fd00::1").unwrap(),
            "fd00::1/128".parse::<IpNet>().unwrap()
        );
        for bad in ["", "10.0.0.0/33", "example.com", "10.0.0/8"] {
            let error = parse_cidr(bad).unwrap_err();
            assert!(error.contains("not a CIDR"), "{bad}: {error}");
        }
    }
}
