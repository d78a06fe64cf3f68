//! Strict reverse-path filtering drops what the DSR path brings back: the
//! backends answer from the VIP, and a router whose route to the VIP does
//! not point out of the receiving interface (none does, usually) discards
//! the answer under `rp_filter = 1`. Every DSR-path check then times out,
//! which looks like every backend dead; so the checker says why up front.

/// The interfaces among `interfaces` whose IPv4 reverse-path filter is
/// strict. The kernel applies the larger of `all` and the interface's own
/// value.
pub fn strict_on(interfaces: &[String]) -> Vec<String> {
    let all = read("all");
    interfaces
        .iter()
        .filter(|i| effective(all, read(i)) == 1)
        .cloned()
        .collect()
}

fn read(conf: &str) -> u8 {
    std::fs::read_to_string(format!("/proc/sys/net/ipv4/conf/{conf}/rp_filter"))
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// 0 off, 1 strict, 2 loose: the kernel takes the larger.
fn effective(all: u8, iface: u8) -> u8 {
    all.max(iface)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loose_anywhere_wins_over_strict() {
        assert_eq!(effective(0, 1), 1);
        assert_eq!(effective(1, 0), 1);
        assert_eq!(effective(1, 2), 2, "loose on the interface");
        assert_eq!(effective(2, 1), 2, "loose for all");
        assert_eq!(effective(0, 0), 0);
    }

    #[test]
    fn a_missing_interface_counts_as_all_says() {
        let strict = strict_on(&["xlb-no-such-if".to_owned()]);
        assert_eq!(strict.is_empty(), read("all") != 1, "{strict:?}");
    }
}
