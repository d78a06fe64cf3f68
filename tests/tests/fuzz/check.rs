//! Compares what the program did with what the oracle expects. A
//! violation is named by its class: the rule that decided, what was
//! wanted and what happened (and, for a wrong forward, the first field
//! that differs), so that a run's violations group by cause.

use xlb_tests::packet::verify;

use crate::{
    model::{XDP_ABORTED, XDP_DROP, XDP_PASS, XDP_REDIRECT, XDP_TX},
    neighbour::{self, Answer},
    oracle::{Expect, Forward, TooBig},
};

pub(crate) fn action_name(a: u32) -> &'static str {
    match a {
        XDP_ABORTED => "ABORTED",
        XDP_DROP => "DROP",
        XDP_PASS => "PASS",
        XDP_TX => "TX",
        XDP_REDIRECT => "REDIRECT",
        _ => "an unknown action",
    }
}

/// `Err(class)` when the program broke the contract on this frame.
pub(crate) fn check(want: &Expect, input: &[u8], action: u32, out: &[u8]) -> Result<(), String> {
    let got = action_name(action);
    match want {
        Expect::Pass(r) => match action {
            XDP_PASS if out == input => Ok(()),
            XDP_PASS => Err(format!("{r}: PASS changed the frame")),
            _ => Err(format!("{r}: want PASS, got {got}")),
        },
        Expect::Drop(r) => match action {
            XDP_DROP => Ok(()),
            _ => Err(format!("{r}: want DROP, got {got}")),
        },
        Expect::NotForwarded(r) => match action {
            XDP_DROP => Ok(()),
            XDP_PASS if out == input => Ok(()),
            XDP_PASS => Err(format!("{r}: PASS changed the frame")),
            _ => Err(format!("{r}: want PASS or DROP, got {got}")),
        },
        Expect::Forward(fw) => {
            if action != fw.action {
                return Err(format!(
                    "{}: want {}, got {got}",
                    fw.reason,
                    action_name(fw.action)
                ));
            }
            forwarded(fw, input, out).map_err(|what| format!("{}: {what}", fw.reason))
        }
        Expect::TooBig(t) => {
            if action != XDP_TX {
                return Err(format!("{}: want TX (ICMP too big), got {got}", t.reason));
            }
            too_big(t, input, out).map_err(|what| format!("{}: {what}", t.reason))
        }
        Expect::Answer(a) => answered(a, action, out),
    }
}

/// An ARP reply or NA: exactly the answer wanted.
fn answered(a: &Answer, action: u32, out: &[u8]) -> Result<(), String> {
    match action {
        XDP_TX if neighbour::same_answer(&a.out, out) => Ok(()),
        XDP_TX => Err(format!(
            "{}: {}",
            a.reason,
            neighbour::difference(&a.out, out)
        )),
        _ => Err(format!(
            "{}: want TX, got {}",
            a.reason,
            action_name(action)
        )),
    }
}

fn forwarded(fw: &Forward, input: &[u8], out: &[u8]) -> Result<(), String> {
    let h = fw.head.len();
    let body = h + fw.inner.len();
    if out.len() != body && out.len() != body + fw.padding.len() {
        return Err("output length".into());
    }
    if out[h..body] != input[fw.inner.clone()] {
        return Err("inner packet changed".into());
    }
    if out[body..] != input[fw.padding.start..fw.padding.start + (out.len() - body)] {
        return Err("Ethernet padding changed".into());
    }
    let v4 = fw.outer_v4_df.is_some();
    for (i, (got, want)) in out[..h].iter().zip(&fw.head).enumerate() {
        let by_rule = v4 && matches!(i, 18 | 19 | 24 | 25);
        if !by_rule && got != want {
            return Err(format!("{} differs", field(i, h)));
        }
    }
    if let Some(df) = fw.outer_v4_df {
        if !verify(&[&out[14..34]]) {
            return Err("outer header checksum".into());
        }
        if !df && out[18] == 0 && out[19] == 0 {
            return Err("M2 outer ID 0 with DF clear".into());
        }
    }
    Ok(())
}

/// Name of byte `i` of a forwarded frame whose new headers are `h` long.
fn field(i: usize, h: usize) -> &'static str {
    match i {
        0..6 => "destination MAC",
        6..12 => "source MAC",
        12..14 => "EtherType",
        _ if h == 34 => match i - 14 {
            0 => "outer version/IHL",
            1 => "outer TOS",
            2 | 3 => "outer total length",
            6 | 7 => "outer flags",
            8 => "outer TTL",
            9 => "outer protocol",
            12..16 => "outer source",
            _ => "outer destination (backend)",
        },
        _ => match i - 14 {
            0..4 => "outer traffic class/flow label",
            4 | 5 => "outer payload length",
            6 => "outer next header",
            7 => "outer hop limit",
            8..24 => "outer source",
            _ => "outer destination (backend)",
        },
    }
}

/// The ICMP "fragmentation needed" / "packet too big" answer, swapped
/// MACs and addresses, quoting the start of the client's packet.
fn too_big(t: &TooBig, input: &[u8], out: &[u8]) -> Result<(), String> {
    let (ip_hdr, quote) = if t.v4 { (20, 128) } else { (40, 256) };
    let icmp = 14 + ip_hdr;
    if out.len() != icmp + 8 + quote {
        return Err("ICMP answer length".into());
    }
    if out[..6] != input[6..12] || out[6..12] != input[..6] {
        return Err("ICMP answer MACs".into());
    }
    let quoted_ok = out[icmp + 8..] == input[14..14 + quote];
    if t.v4 {
        let ok = out[12..14] == [0x08, 0x00]
            && out[14] == 0x45
            && out[23] == 1
            && verify(&[&out[14..34]])
            && out[26..30] == input[30..34]
            && out[30..34] == input[26..30]
            && out[34] == 3
            && out[35] == 4
            && u32::from(u16::from_be_bytes([out[40], out[41]])) == t.mtu
            && verify(&[&out[icmp..]]);
        if !ok {
            return Err("ICMP fragmentation-needed fields".into());
        }
    } else {
        let len = (out.len() - icmp) as u32;
        let ok = out[12..14] == [0x86, 0xdd]
            && out[20] == 58
            && out[22..38] == input[38..54]
            && out[38..54] == input[22..38]
            && out[54] == 2
            && out[55] == 0
            && u32::from_be_bytes([out[58], out[59], out[60], out[61]]) == t.mtu
            && verify(&[
                &out[22..54],
                &len.to_be_bytes(),
                &[0, 0, 0, 58],
                &out[icmp..],
            ]);
        if !ok {
            return Err("ICMPv6 packet-too-big fields".into());
        }
    }
    if !quoted_ok {
        return Err("ICMP answer quote".into());
    }
    Ok(())
}
