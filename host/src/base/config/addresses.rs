//! Which addresses a tenant may never reach by name alone: loopback,
//! private, link-local, shared (CGNAT), documentation, multicast,
//! unspecified and reserved ranges, in IPv4 and IPv6 (IPv4-mapped IPv6
//! addresses count as their IPv4 address), and the host's own.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Whether `address` is where the host listens (`own`, which may be the
/// unspecified address: every interface).
pub fn is_own_address(address: SocketAddr, own: SocketAddr) -> bool {
    own.port() == address.port()
        && (own.ip().is_unspecified() || own.ip().to_canonical() == address.ip().to_canonical())
}

/// Whether an address is on the public internet (not loopback, private,
/// link-local, shared, documentation, multicast, unspecified …).
pub fn is_public(ip: IpAddr) -> bool {
    match ip.to_canonical() {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0                              // "this network"
        || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT)
        || (a == 192 && b == 0 && ip.octets()[2] == 0) // IETF protocol assignments
        || (a == 198 && (b == 18 || b == 19))  // benchmarking
        || a >= 240) // reserved
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00   // unique local fc00::/7
        || (first & 0xffc0) == 0xfe80   // link-local fe80::/10
        || (first & 0xffc0) == 0xfec0   // site-local (deprecated) fec0::/10
        || first == 0x2001 && ip.segments()[1] == 0x0db8 // documentation
        || first == 0x0064 && ip.segments()[1] == 0xff9b) // NAT64 maps onto IPv4
}
