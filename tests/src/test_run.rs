//! Timing XDP programs with `BPF_PROG_TEST_RUN`, as `xlb-bench` does.
//!
//! Each subject is timed over many calls with repeat=1, each on a fresh
//! copy of its frame (the kernel copies `data_in` per call): with repeat > 1
//! the kernel would rerun the program on the buffer it had just rewritten,
//! and an encapsulating program would time its own output. The figure is
//! the median of the kernel's per-call duration, which includes ~30 ns of
//! timer overhead on every subject alike. Every call's return value is
//! checked.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use anyhow::{Result, ensure};
use aya::programs::{TestRun as _, TestRunOptions, Xdp};

use crate::{lab, packet::*};

pub const XDP_PASS: u32 = 2;
pub const XDP_TX: u32 = 3;

/// Writes the frame for call `i` into the buffer.
pub type FrameFor<'a> = Box<dyn FnMut(usize, &mut Vec<u8>) + 'a>;

/// One program under measurement: its frames, and the action it must return.
pub struct Subject<'a> {
    pub prog: &'a Xdp,
    pub want: u32,
    pub frame_for: FrameFor<'a>,
}

pub fn subject<'a>(
    prog: &'a Xdp,
    want: u32,
    frame_for: impl FnMut(usize, &mut Vec<u8>) + 'a,
) -> Subject<'a> {
    Subject {
        prog,
        want,
        frame_for: Box::new(frame_for),
    }
}

/// Median kernel-measured ns of each subject over `calls` rounds. In every
/// round each subject runs once, in turn: a shared, noisy machine's drift
/// then falls on a class and its floor alike, and their ratio holds.
pub fn measure(ifindex: u32, calls: usize, subjects: &mut [Subject<'_>]) -> Result<Vec<f64>> {
    let mut frame = Vec::new();
    let mut out = vec![0u8; 4096];
    let mut ns = vec![Vec::with_capacity(calls); subjects.len()];
    for i in 0..calls {
        for (j, s) in subjects.iter_mut().enumerate() {
            (s.frame_for)(i, &mut frame);
            let ctx = lab::xdp_md(ifindex, frame.len());
            let r = s.prog.test_run(TestRunOptions {
                data_in: Some(&frame),
                data_out: Some(&mut out),
                ctx_in: Some(&ctx),
                ..TestRunOptions::new()
            })?;
            ensure!(
                r.return_value == s.want,
                "subject {j}, call {i}: action {} instead of {}",
                r.return_value,
                s.want
            );
            ns[j].push(r.duration.as_nanos() as u64);
        }
    }
    Ok(ns
        .into_iter()
        .map(|mut v| {
            v.sort_unstable();
            v[v.len() / 2] as f64
        })
        .collect())
}

pub fn tcp4_frame(src: Ipv4Addr, sport: u16, dst: Ipv4Addr) -> Vec<u8> {
    lab::tcp_frame(
        IpAddr::V4(src),
        sport,
        IpAddr::V4(dst),
        80,
        TCP_ACK,
        &[0x61; 64],
    )
}

pub fn tcp6_frame(src: Ipv6Addr, sport: u16, dst: Ipv6Addr) -> Vec<u8> {
    lab::tcp_frame(
        IpAddr::V6(src),
        sport,
        IpAddr::V6(dst),
        80,
        TCP_ACK,
        &[0x61; 64],
    )
}

/// Rewrites the client address of a frame built by `tcp4_frame`/`tcp6_frame`
/// so that call `i` is a flow never seen before. The program verifies the
/// IPv4 header checksum (not the TCP one), so that one is made right again.
pub fn new_client(frame: &mut [u8], i: usize, class: u8) {
    let i = i as u32;
    match u16::from_be_bytes([frame[12], frame[13]]) {
        ETH_P_IP => {
            frame[26] = 100 + class;
            frame[27..30].copy_from_slice(&i.to_be_bytes()[1..]);
            ipv4_checksum(frame);
        }
        _ => {
            frame[22 + 12] = class;
            frame[22 + 13..22 + 16].copy_from_slice(&i.to_be_bytes()[1..]);
        }
    }
}

/// Rewrites the destination of a frame built by `tcp4_frame` to `base + i
/// mod span`: non-VIP traffic to many addresses, so that the VIP filter's
/// false positives (addresses that look further) count at their real rate
/// rather than as one address's luck.
pub fn other_destination(frame: &mut [u8], i: usize, base: Ipv4Addr, span: u32) {
    let dst = u32::from(base) + (i as u32 % span);
    frame[30..34].copy_from_slice(&dst.to_be_bytes());
    ipv4_checksum(frame);
}

/// Makes the IPv4 header checksum of an Ethernet frame right again.
fn ipv4_checksum(frame: &mut [u8]) {
    frame[24..26].fill(0);
    let sum = frame[14..34]
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum::<u32>();
    let folded = (sum & 0xffff) + (sum >> 16);
    let folded = (folded & 0xffff) + (folded >> 16);
    frame[24..26].copy_from_slice(&(!(folded as u16)).to_be_bytes());
}
