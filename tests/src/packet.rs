//! Frames built by hand, with their own checksum code, so that a test
//! compares the program's output with bytes it did not help compute.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const ETH_P_ARP: u16 = 0x0806;
pub const ETH_P_8021Q: u16 = 0x8100;

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_PSH: u8 = 0x08;
pub const TCP_ACK: u8 = 0x10;

/// RFC 1071 sum folded and complemented.
pub fn checksum(chunks: &[&[u8]]) -> u16 {
    let mut sum = 0u32;
    for c in chunks {
        for pair in c.chunks(2) {
            let w = if pair.len() == 2 {
                u16::from_be_bytes([pair[0], pair[1]])
            } else {
                u16::from(pair[0]) << 8
            };
            sum += u32::from(w);
        }
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Checksum over data that already contains its checksum: 0 when valid.
pub fn verify(chunks: &[&[u8]]) -> bool {
    checksum(chunks) == 0
}

pub fn eth(dst: [u8; 6], src: [u8; 6], ether_type: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + payload.len());
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ether_type.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

pub fn eth_vlan(dst: [u8; 6], src: [u8; 6], tci: u16, ether_type: u16, payload: &[u8]) -> Vec<u8> {
    let mut tag = tci.to_be_bytes().to_vec();
    tag.extend_from_slice(&ether_type.to_be_bytes());
    tag.extend_from_slice(payload);
    eth(dst, src, ETH_P_8021Q, &tag)
}

/// An IPv4 header's adjustable fields.
#[derive(Clone, Debug)]
pub struct V4 {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub proto: u8,
    pub ttl: u8,
    pub tos: u8,
    pub id: u16,
    /// Flags and fragment offset (DF = 0x4000, MF = 0x2000).
    pub frag: u16,
    /// Options, padded by the caller to a multiple of 4.
    pub options: Vec<u8>,
}

impl V4 {
    pub fn new(src: Ipv4Addr, dst: Ipv4Addr, proto: u8) -> Self {
        Self {
            src,
            dst,
            proto,
            ttl: 64,
            tos: 0,
            id: 0x1234,
            frag: 0x4000,
            options: Vec::new(),
        }
    }
}

pub fn ipv4(h: &V4, payload: &[u8]) -> Vec<u8> {
    assert_eq!(
        h.options.len() % 4,
        0,
        "IPv4 options must be padded to 4 bytes"
    );
    let hl = 20 + h.options.len();
    let total = (hl + payload.len()) as u16;
    let mut p = vec![0x40 | (hl / 4) as u8, h.tos];
    p.extend_from_slice(&total.to_be_bytes());
    p.extend_from_slice(&h.id.to_be_bytes());
    p.extend_from_slice(&h.frag.to_be_bytes());
    p.extend_from_slice(&[h.ttl, h.proto, 0, 0]);
    p.extend_from_slice(&h.src.octets());
    p.extend_from_slice(&h.dst.octets());
    p.extend_from_slice(&h.options);
    let c = checksum(&[&p]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

/// An IPv6 header's adjustable fields.
#[derive(Clone, Debug)]
pub struct V6 {
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    pub next: u8,
    pub hop: u8,
    pub tclass: u8,
    pub flow: u32,
}

impl V6 {
    pub fn new(src: Ipv6Addr, dst: Ipv6Addr, next: u8) -> Self {
        Self {
            src,
            dst,
            next,
            hop: 64,
            tclass: 0,
            flow: 0,
        }
    }
}

pub fn ipv6(h: &V6, payload: &[u8]) -> Vec<u8> {
    let vcf: u32 = (6 << 28) | (u32::from(h.tclass) << 20) | (h.flow & 0xf_ffff);
    let mut p = vcf.to_be_bytes().to_vec();
    p.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    p.extend_from_slice(&[h.next, h.hop]);
    p.extend_from_slice(&h.src.octets());
    p.extend_from_slice(&h.dst.octets());
    p.extend_from_slice(payload);
    p
}

fn pseudo(src: IpAddr, dst: IpAddr, proto: u8, len: usize) -> Vec<u8> {
    let mut p = Vec::new();
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            p.extend_from_slice(&s.octets());
            p.extend_from_slice(&d.octets());
            p.extend_from_slice(&[0, proto]);
            p.extend_from_slice(&(len as u16).to_be_bytes());
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            p.extend_from_slice(&s.octets());
            p.extend_from_slice(&d.octets());
            p.extend_from_slice(&(len as u32).to_be_bytes());
            p.extend_from_slice(&[0, 0, 0, proto]);
        }
        _ => panic!("mixed address families in a pseudo-header"),
    }
    p
}

pub fn tcp(src: IpAddr, dst: IpAddr, sport: u16, dport: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut t = Vec::with_capacity(20 + payload.len());
    t.extend_from_slice(&sport.to_be_bytes());
    t.extend_from_slice(&dport.to_be_bytes());
    t.extend_from_slice(&0x0102_0304u32.to_be_bytes());
    t.extend_from_slice(
        &(if flags & TCP_ACK != 0 {
            0x0a0b_0c0du32
        } else {
            0
        })
        .to_be_bytes(),
    );
    t.extend_from_slice(&[0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    t.extend_from_slice(payload);
    let c = checksum(&[&pseudo(src, dst, 6, t.len()), &t]);
    t[16..18].copy_from_slice(&c.to_be_bytes());
    t
}

pub fn udp(src: IpAddr, dst: IpAddr, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let len = 8 + payload.len();
    let mut u = Vec::with_capacity(len);
    u.extend_from_slice(&sport.to_be_bytes());
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&(len as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(payload);
    let c = checksum(&[&pseudo(src, dst, 17, len), &u]);
    u[6..8].copy_from_slice(&c.to_be_bytes());
    u
}

/// ICMP (v4) message: type, code, the 4 "rest of header" bytes, payload.
pub fn icmp4(kind: u8, code: u8, rest: [u8; 4], payload: &[u8]) -> Vec<u8> {
    let mut m = vec![kind, code, 0, 0];
    m.extend_from_slice(&rest);
    m.extend_from_slice(payload);
    let c = checksum(&[&m]);
    m[2..4].copy_from_slice(&c.to_be_bytes());
    m
}

pub fn icmp6(
    src: Ipv6Addr,
    dst: Ipv6Addr,
    kind: u8,
    code: u8,
    rest: [u8; 4],
    payload: &[u8],
) -> Vec<u8> {
    let mut m = vec![kind, code, 0, 0];
    m.extend_from_slice(&rest);
    m.extend_from_slice(payload);
    let c = checksum(&[&pseudo(IpAddr::V6(src), IpAddr::V6(dst), 58, m.len()), &m]);
    m[2..4].copy_from_slice(&c.to_be_bytes());
    m
}

/// Bytes of an IP packet starting at `l3` in a frame, by its own length
/// field (Ethernet padding excluded).
pub fn ip_packet(frame: &[u8], l3: usize) -> &[u8] {
    let len = match frame[l3] >> 4 {
        4 => usize::from(u16::from_be_bytes([frame[l3 + 2], frame[l3 + 3]])),
        6 => 40 + usize::from(u16::from_be_bytes([frame[l3 + 4], frame[l3 + 5]])),
        v => panic!("not an IP packet at {l3}: version {v}"),
    };
    &frame[l3..l3 + len]
}
