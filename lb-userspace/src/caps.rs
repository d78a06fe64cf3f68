//! Linux capabilities the daemon needs, and a check of which ones this
//! process actually holds.
//!
//! `xlb run` with the XDP data plane needs:
//!
//! * **`CAP_BPF`** (39) — to load the balancer's BPF programs and to create
//!   (and look up / update) its BPF maps.
//! * **`CAP_NET_ADMIN`** (12) — to attach the XDP program to network
//!   interfaces; it is also what the kernel requires for loading the
//!   networking program types (XDP, TC, ...) on top of `CAP_BPF`.
//! * **`CAP_PERFMON`** (38) — needed by the verifier for pointer arithmetic
//!   beyond what `CAP_BPF` allows: the balancer's arithmetic on packet and
//!   map-value pointers is only accepted when the loader is perfmon-capable
//!   (the kernel gates the verifier's pointer-leak and Spectre-v1 checks on
//!   `perfmon_capable()`, not on `CAP_BPF`).
//!
//! **`CAP_SYS_ADMIN`** (21) is *not* needed for any of that. The only thing
//! it is needed for is mounting the BPF filesystem (`bpffs`, usually at
//! `/sys/fs/bpf`) when it is not mounted already; with bpffs in place (or
//! mounted by the init system / container runtime) the daemon runs without
//! it. It is listed in [`Capability`] so callers can report on it.
//!
//! `CAP_BPF` and `CAP_PERFMON` were split out of `CAP_SYS_ADMIN` in
//! Linux 5.8; on older kernels they do not exist, [`effective`] never reports
//! them and `CAP_SYS_ADMIN` is required instead.
//!
//! Capabilities are per thread; [`effective`] reports the calling thread's
//! effective set, which for the daemon is the same in every thread.

use std::fmt;
use std::io;

/// A Linux capability relevant to the daemon.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Capability {
    /// `CAP_NET_ADMIN` (12).
    NetAdmin,
    /// `CAP_SYS_ADMIN` (21).
    SysAdmin,
    /// `CAP_PERFMON` (38).
    Perfmon,
    /// `CAP_BPF` (39).
    Bpf,
}

impl Capability {
    /// The capability's name as in `capabilities(7)`, e.g. `"CAP_NET_ADMIN"`.
    pub fn name(self) -> &'static str {
        match self {
            Capability::NetAdmin => "CAP_NET_ADMIN",
            Capability::SysAdmin => "CAP_SYS_ADMIN",
            Capability::Perfmon => "CAP_PERFMON",
            Capability::Bpf => "CAP_BPF",
        }
    }

    /// The capability's number (its bit in the capability sets).
    pub fn number(self) -> u32 {
        match self {
            Capability::NetAdmin => 12,
            Capability::SysAdmin => 21,
            Capability::Perfmon => 38,
            Capability::Bpf => 39,
        }
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The capabilities `xlb run` with the XDP data plane needs.
pub const XDP_REQUIRED: &[Capability] =
    &[Capability::Bpf, Capability::NetAdmin, Capability::Perfmon];

/// `_LINUX_CAPABILITY_VERSION_3`: 64-bit capability sets, passed as two
/// 32-bit words.
const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
/// Number of `CapData` words for version 3 (`_LINUX_CAPABILITY_U32S_3`).
const LINUX_CAPABILITY_U32S_3: usize = 2;

/// `struct __user_cap_header_struct` from `<linux/capability.h>`.
#[repr(C)]
#[derive(Debug)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

/// `struct __user_cap_data_struct` from `<linux/capability.h>`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// Effective capabilities of this process (of the calling thread): bit `n`
/// set means capability `n` is effective.
///
/// Uses `capget(2)` with `_LINUX_CAPABILITY_VERSION_3` (two 32-bit words;
/// word 0 holds capabilities 0–31, word 1 holds 32–63).
pub fn effective() -> io::Result<u64> {
    let mut header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0, // 0 = the calling thread
    };
    let mut data = [CapData::default(); LINUX_CAPABILITY_U32S_3];
    // SAFETY: capget(2) reads `header` and, for version 3, writes exactly
    // `_LINUX_CAPABILITY_U32S_3` (2) `__user_cap_data_struct`s to `data`;
    // both are valid, properly laid out (`repr(C)`) and live for the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_capget,
            &mut header as *mut CapHeader,
            data.as_mut_ptr(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(u64::from(data[0].effective) | (u64::from(data[1].effective) << 32))
}

/// Which of `required` are missing from this process's effective set, in
/// the order given.
pub fn missing(required: &[Capability]) -> io::Result<Vec<Capability>> {
    if required.is_empty() {
        return Ok(Vec::new());
    }
    let eff = effective()?;
    Ok(missing_from(eff, required))
}

/// Which of [`XDP_REQUIRED`] are missing, counting CAP_SYS_ADMIN as CAP_BPF
/// and CAP_PERFMON (the kernel does: before 5.8 they did not exist, and a
/// loader with CAP_SYS_ADMIN passes both checks).
pub fn missing_for_xdp() -> io::Result<Vec<Capability>> {
    Ok(missing_for_xdp_from(effective()?))
}

fn missing_for_xdp_from(effective: u64) -> Vec<Capability> {
    let sys_admin = effective & (1u64 << Capability::SysAdmin.number()) != 0;
    missing_from(effective, XDP_REQUIRED)
        .into_iter()
        .filter(|c| !(sys_admin && matches!(c, Capability::Bpf | Capability::Perfmon)))
        .collect()
}

fn missing_from(effective: u64, required: &[Capability]) -> Vec<Capability> {
    required
        .iter()
        .copied()
        .filter(|c| effective & (1u64 << c.number()) == 0)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Capability; 4] = [
        Capability::NetAdmin,
        Capability::SysAdmin,
        Capability::Perfmon,
        Capability::Bpf,
    ];

    fn is_root() -> bool {
        // SAFETY: geteuid(2) has no preconditions and cannot fail.
        unsafe { libc::geteuid() == 0 }
    }

    /// A capability set line (`CapEff:`, `CapBnd:`, ...) of this thread's
    /// `/proc` status, which the kernel prints as 16 hex digits.
    fn proc_caps(field: &str) -> u64 {
        let status = std::fs::read_to_string("/proc/thread-self/status")
            .or_else(|_| std::fs::read_to_string("/proc/self/status"))
            .expect("read /proc status");
        let line = status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .unwrap_or_else(|| panic!("{field} not in /proc status"));
        u64::from_str_radix(line.trim(), 16).expect("hex capability set")
    }

    #[test]
    fn names_and_numbers() {
        let expected = [
            ("CAP_NET_ADMIN", 12),
            ("CAP_SYS_ADMIN", 21),
            ("CAP_PERFMON", 38),
            ("CAP_BPF", 39),
        ];
        for (cap, (name, number)) in ALL.into_iter().zip(expected) {
            assert_eq!(cap.name(), name);
            assert_eq!(cap.to_string(), name);
            assert_eq!(cap.number(), number);
        }
        assert!(!XDP_REQUIRED.contains(&Capability::SysAdmin));
    }

    #[test]
    fn effective_works_and_matches_proc() {
        let eff = effective().expect("capget");
        // Same set the kernel reports in /proc: checks the header version and
        // that both data words land in the right halves.
        assert_eq!(eff, proc_caps("CapEff:"), "capget vs /proc CapEff");
    }

    #[test]
    fn missing_of_empty_is_empty() {
        assert!(missing(&[]).expect("missing").is_empty());
    }

    #[test]
    fn missing_from_bits() {
        assert_eq!(missing_from(0, XDP_REQUIRED), XDP_REQUIRED.to_vec());
        assert_eq!(
            missing_from(1 << 39, XDP_REQUIRED),
            vec![Capability::NetAdmin, Capability::Perfmon]
        );
        let all = (1 << 12) | (1 << 21) | (1 << 38) | (1 << 39);
        assert!(missing_from(all, &ALL).is_empty());
        assert_eq!(
            missing_from(all & !(1 << 21), &ALL),
            vec![Capability::SysAdmin]
        );
    }

    /// Root whose bounding set allows the capability should have it; a
    /// bounding set without it (e.g. a container) is an environment limit.
    fn root_with_bounding(caps: &[Capability]) -> bool {
        if !is_root() {
            eprintln!("skipped: not running as root (euid != 0)");
            return false;
        }
        let bnd = proc_caps("CapBnd:");
        let not_bounded = missing_from(bnd, caps);
        if !not_bounded.is_empty() {
            eprintln!("skipped: running as root, but the bounding set lacks {not_bounded:?}");
            return false;
        }
        true
    }

    #[test]
    fn root_has_all_four() {
        if !root_with_bounding(&ALL) {
            return;
        }
        assert_eq!(missing(&ALL).expect("missing"), Vec::<Capability>::new());
        assert!(missing(XDP_REQUIRED).expect("missing").is_empty());
    }

    #[test]
    fn root_layout_gives_cap_bpf_bit_39() {
        if !root_with_bounding(&[Capability::Bpf]) {
            return;
        }
        let eff = effective().expect("capget");
        // CAP_BPF lives in the second data word: bit 39 = word 1, bit 7.
        assert_ne!(eff & (1 << 39), 0, "CAP_BPF (bit 39) not set in {eff:#x}");
        assert_ne!(
            eff & (1 << 12),
            0,
            "CAP_NET_ADMIN (bit 12) not set in {eff:#x}"
        );
        assert_eq!(eff, proc_caps("CapEff:"));
    }

    #[test]
    fn sys_admin_stands_in_for_bpf_and_perfmon() {
        let bit = |c: Capability| 1u64 << c.number();
        assert_eq!(
            missing_for_xdp_from(bit(Capability::NetAdmin)),
            [Capability::Bpf, Capability::Perfmon]
        );
        assert!(
            missing_for_xdp_from(bit(Capability::NetAdmin) | bit(Capability::SysAdmin)).is_empty()
        );
        assert_eq!(
            missing_for_xdp_from(bit(Capability::SysAdmin)),
            [Capability::NetAdmin]
        );
    }
}
