//! A blocking netlink request/response channel over netlink-sys, shared by
//! the IPVS client (generic netlink) and the VIP-route keeper (rtnetlink).
//! Requests are synchronous: one in flight, answered by an ACK, an error or
//! a multipart dump ending in DONE. And rtnetlink notifications, read
//! without blocking the runtime (`Notifications`).

use std::{fmt::Debug, io};

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, NetlinkDeserializable, NetlinkHeader, NetlinkMessage,
    NetlinkPayload, NetlinkSerializable,
};
use netlink_sys::{Socket, SocketAddr, constants::NETLINK_ROUTE};
use tokio::io::{Interest, unix::AsyncFd};

pub struct Channel {
    socket: Socket,
    seq: u32,
}

impl Channel {
    /// Opens a socket of `protocol` (`NETLINK_GENERIC`, `NETLINK_ROUTE`)
    /// connected to the kernel.
    pub fn open(protocol: isize) -> io::Result<Self> {
        let mut socket = Socket::new(protocol)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        // Errors then carry the kernel's reason text where it has one.
        let _ = socket.set_ext_ack(true);
        Ok(Self { socket, seq: 0 })
    }

    /// Sends `payload` and waits for the kernel's answer: the messages of a
    /// dump (with `dump`), or nothing but an ACK. A kernel error comes back
    /// as the `io::Error` of its errno.
    pub fn request<T>(&mut self, payload: T, flags: u16, dump: bool) -> io::Result<Vec<T>>
    where
        T: NetlinkSerializable + NetlinkDeserializable + Debug,
    {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | flags | if dump { NLM_F_DUMP } else { NLM_F_ACK };
        header.sequence_number = self.seq;
        let mut msg = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(payload));
        msg.finalize();
        let mut buf = vec![0; msg.buffer_len()];
        msg.serialize(&mut buf);
        self.socket.send(&buf, 0)?;

        let mut out = Vec::new();
        loop {
            let (data, _) = self.socket.recv_from_full()?;
            for msg in messages::<T>(&data) {
                let msg = msg?;
                if msg.header.sequence_number != self.seq {
                    continue; // a late answer to an earlier request
                }
                match msg.payload {
                    NetlinkPayload::InnerMessage(m) => out.push(m),
                    NetlinkPayload::Done(_) => return Ok(out),
                    NetlinkPayload::Error(e) if e.code.is_none() => return Ok(out),
                    NetlinkPayload::Error(e) => return Err(e.to_io()),
                    NetlinkPayload::Noop | NetlinkPayload::Overrun(_) => {}
                    _ => {}
                }
            }
        }
    }
}

/// The messages packed in one netlink datagram, in order. One that does not
/// parse (or claims a length of 0) ends the walk with its error.
pub fn messages<T: NetlinkDeserializable>(
    data: &[u8],
) -> impl Iterator<Item = io::Result<NetlinkMessage<T>>> + '_ {
    let mut at = 0;
    let mut failed = false;
    std::iter::from_fn(move || {
        if failed || at >= data.len() {
            return None;
        }
        let parsed = NetlinkMessage::<T>::deserialize(&data[at..])
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))
            .and_then(|msg| match msg.header.length as usize {
                0 => Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "netlink message of length 0",
                )),
                len => {
                    at += len.next_multiple_of(4);
                    Ok(msg)
                }
            });
        failed = parsed.is_err();
        Some(parsed)
    })
}

/// rtnetlink multicast groups (`RTNLGRP_*`, linux/rtnetlink.h).
pub mod groups {
    pub const LINK: u32 = 1;
    pub const NEIGH: u32 = 3;
    pub const IPV4_ROUTE: u32 = 7;
    pub const IPV6_ROUTE: u32 = 11;
}

/// A socket subscribed to rtnetlink multicast groups: the kernel's change
/// notifications, one datagram at a time.
pub struct Notifications(AsyncFd<Socket>);

impl Notifications {
    /// Subscribes to `groups` (`groups::*`).
    pub fn open(groups: &[u32]) -> io::Result<Self> {
        let mut s = Socket::new(NETLINK_ROUTE)?;
        s.bind_auto()?;
        for &g in groups {
            s.add_membership(g)?;
        }
        s.set_non_blocking(true)?;
        // SAFETY: the AsyncFd owns the socket, which keeps its one fd open
        // until the AsyncFd is dropped.
        let fd = unsafe { AsyncFd::register_with_interest(s, Interest::READABLE) }
            .map_err(|e| e.into_parts().1)?;
        Ok(Self(fd))
    }

    /// The next datagram of notifications. `ENOBUFS` means some were lost
    /// (the socket's buffer overflowed): the caller reads the state again.
    pub async fn next(&self) -> io::Result<Vec<u8>> {
        loop {
            let mut ready = self.0.readable().await?;
            if let Ok(got) = ready.try_io(|s| s.get_ref().recv_from_full()) {
                return got.map(|(data, _)| data);
            }
        }
    }
}
