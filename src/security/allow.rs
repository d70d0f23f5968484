//! `--allow`: the addresses peers may connect from, as CIDR blocks.
//!
//! `10.0.0.0/8` is every address whose first 8 bits are those of 10.0.0.0;
//! a plain address (`192.168.1.20`, `::1`) is a block of one. IPv4 and IPv6
//! both work. A block written with bits set past its prefix (`10.0.0.1/8`)
//! is refused as a likely typo rather than silently widened.
//!
//! The ZAP handler gets the peer's address from libzmq as text (`10.1.2.3`,
//! `::1`). An IPv4 peer of an IPv6 socket shows as `::ffff:10.1.2.3`; it is
//! matched against the IPv4 blocks, as the address it really is. A block
//! written in that IPv4-mapped form, within `::ffff:0:0/96`, is the IPv4
//! block it stands for: `::ffff:127.0.0.1` is `127.0.0.1/32`, and
//! `::ffff:127.0.0.0/104` is `127.0.0.0/8`. A wider IPv6 block (`::/0`)
//! matches IPv6 peers only.

use std::fmt;
use std::net::IpAddr;

/// An address block: `10.0.0.0/8`, `::1/128`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Net {
    address: IpAddr,
    prefix: u8,
}

impl Net {
    /// Whether `ip` lies in the block.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.address, unmapped(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                same_prefix(&net.octets(), &ip.octets(), self.prefix)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                same_prefix(&net.octets(), &ip.octets(), self.prefix)
            }
            _ => false,
        }
    }
}

impl fmt::Display for Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix)
    }
}

/// A clap value parser for `--allow`: one CIDR block or address.
pub fn parse_net(text: &str) -> Result<Net, String> {
    let text = text.trim();
    let (address, prefix) = match text.split_once('/') {
        Some((address, prefix)) => (address, Some(prefix)),
        None => (text, None),
    };
    let address: IpAddr = address.parse().map_err(|_| {
        format!(
            "'{address}' is not an IPv4 or IPv6 address (write 10.0.0.0/8, 192.168.1.20 or ::1)"
        )
    })?;
    let bits = if address.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix {
        None => bits,
        Some(prefix) => match prefix.parse::<u8>() {
            Ok(prefix) if prefix <= bits => prefix,
            _ => {
                return Err(format!(
                    "prefix '/{prefix}' must be a number from 0 to {bits} for an IPv{} address",
                    if bits == 32 { 4 } else { 6 }
                ));
            }
        },
    };
    let base = network_of(address, prefix);
    if base != address {
        return Err(format!(
            "{text} has bits set past its /{prefix} prefix; did you mean {}/{prefix}?",
            base
        ));
    }
    // Peers are matched as what they are (`unmapped`): so are blocks.
    Ok(match unmapped(address) {
        IpAddr::V4(v4) if address.is_ipv6() && prefix >= 96 => Net {
            address: IpAddr::V4(v4),
            prefix: prefix - 96,
        },
        _ => Net { address, prefix },
    })
}

/// The address libzmq reports for a peer (ZAP's Address field), as an IP
/// address: `None` for anything else (an ipc peer, say).
pub fn parse_peer(address: &str) -> Option<IpAddr> {
    // A link-local IPv6 peer may carry its interface: fe80::1%eth0.
    let address = address.split('%').next().unwrap_or(address);
    address.parse().ok().map(unmapped)
}

/// `::ffff:a.b.c.d` (an IPv4 peer of a dual-stack socket) as IPv4.
fn unmapped(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Whether the first `prefix` bits of `a` and `b` agree.
fn same_prefix(a: &[u8], b: &[u8], prefix: u8) -> bool {
    let whole = usize::from(prefix / 8);
    let rest = prefix % 8;
    if a[..whole] != b[..whole] {
        return false;
    }
    rest == 0 || (a[whole] ^ b[whole]) >> (8 - rest) == 0
}

/// `address` with every bit past `prefix` cleared.
fn network_of(address: IpAddr, prefix: u8) -> IpAddr {
    fn clear<const N: usize>(mut octets: [u8; N], prefix: u8) -> [u8; N] {
        for (i, octet) in octets.iter_mut().enumerate() {
            let first_bit = i * 8;
            let keep = usize::from(prefix).saturating_sub(first_bit).min(8);
            *octet &= if keep == 0 { 0 } else { 0xffu8 << (8 - keep) };
        }
        octets
    }
    match address {
        IpAddr::V4(v4) => IpAddr::from(clear(v4.octets(), prefix)),
        IpAddr::V6(v6) => IpAddr::from(clear(v6.octets(), prefix)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn blocks_contain_what_their_prefix_says() {
        let cases = [
            ("10.0.0.0/8", "10.255.1.2", true),
            ("10.0.0.0/8", "11.0.0.1", false),
            ("192.168.1.20", "192.168.1.20", true),
            ("192.168.1.20", "192.168.1.21", false),
            ("172.16.0.0/12", "172.31.255.255", true),
            ("172.16.0.0/12", "172.32.0.0", false),
            ("127.0.0.0/30", "127.0.0.3", true),
            ("127.0.0.0/30", "127.0.0.4", false),
            ("0.0.0.0/0", "8.8.8.8", true),
            ("0.0.0.0/0", "::1", false),
            ("::1", "::1", true),
            ("::1", "::2", false),
            ("fe80::/10", "fe80::1", true),
            ("fe80::/10", "febf::1", true),
            ("fe80::/10", "fec0::1", false),
            ("2001:db8::/32", "2001:db8:ffff::1", true),
            ("::/0", "10.0.0.1", false),
        ];
        for (net, address, expected) in cases {
            let net = parse_net(net).unwrap();
            assert_eq!(net.contains(ip(address)), expected, "{net} {address}");
        }
    }

    #[test]
    fn ipv4_peers_of_ipv6_sockets_match_ipv4_blocks() {
        let peer = parse_peer("::ffff:10.1.2.3").unwrap();
        assert_eq!(peer, ip("10.1.2.3"));
        assert!(parse_net("10.0.0.0/8").unwrap().contains(peer));
        assert_eq!(parse_peer("fe80::1%eth0"), Some(ip("fe80::1")));
        assert_eq!(parse_peer(""), None);
        assert_eq!(parse_peer(":1000:1000:42"), None);
    }

    #[test]
    fn ipv4_mapped_blocks_are_the_ipv4_blocks_they_stand_for() {
        for (block, same) in [
            ("::ffff:127.0.0.1", "127.0.0.1/32"),
            ("::ffff:127.0.0.0/104", "127.0.0.0/8"),
            ("::ffff:0:0/96", "0.0.0.0/0"),
            ("::FFFF:10.0.0.0/104", "10.0.0.0/8"),
        ] {
            assert_eq!(parse_net(block).unwrap().to_string(), same, "{block}");
        }
        let loopback = parse_net("::ffff:127.0.0.0/104").unwrap();
        assert!(loopback.contains(ip("127.0.0.1")));
        assert!(loopback.contains(parse_peer("::ffff:127.9.9.9").unwrap()));
        assert!(!loopback.contains(ip("10.0.0.1")));
        assert!(
            parse_net("::ffff:127.0.0.1")
                .unwrap()
                .contains(ip("127.0.0.1"))
        );
        // Only blocks within the mapped range: a wider one stays IPv6.
        for wider in ["::/0", "::fffe:0:0/95"] {
            let net = parse_net(wider).unwrap();
            assert_eq!(net.to_string(), wider);
            assert!(!net.contains(ip("127.0.0.1")), "{wider}");
        }
        assert!(parse_net("::ffff:127.0.0.1/104").is_err());
    }

    #[test]
    fn mistakes_are_explained() {
        let cases = [
            ("10.0.0.1/8", "did you mean 10.0.0.0/8?"),
            ("fe80::1/10", "did you mean fe80::/10?"),
            ("10.0.0.0/33", "0 to 32"),
            ("::1/129", "0 to 128"),
            ("10.0.0.0/x", "0 to 32"),
            ("300.1.1.1", "'300.1.1.1' is not an IPv4 or IPv6 address"),
            ("localhost", "not an IPv4 or IPv6 address"),
            ("", "not an IPv4 or IPv6 address"),
        ];
        for (text, expected) in cases {
            let error = parse_net(text).expect_err(text);
            assert!(error.contains(expected), "{text}: {error}");
        }
        assert_eq!(parse_net(" 10.0.0.0/8 ").unwrap().to_string(), "10.0.0.0/8");
        assert_eq!(parse_net("::1").unwrap().to_string(), "::1/128");
    }
}
