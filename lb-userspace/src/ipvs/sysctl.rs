//! The IPVS sysctls a DSR director wants (per network namespace, under
//! `/proc/sys/net/ipv4/vs/`, for both families).

/// `(name, value, why)`.
pub const DIRECTOR: &[(&str, &str, &str)] = &[
    (
        "expire_nodest_conn",
        "1",
        "a removed backend's connections are expired at their next packet instead of being black-holed until they time out",
    ),
    (
        "conn_reuse_mode",
        "1",
        "a new connection that reuses a port of one in TIME_WAIT is scheduled afresh, so it follows the current backend set",
    ),
    (
        "sloppy_tcp",
        "1",
        "a mid-stream TCP packet (a flow moved here by ECMP or a failover) is scheduled too; mh sends it to the backend the other director chose",
    ),
    (
        "conntrack",
        "0",
        "a DSR director sees one direction only: netfilter connection tracking would only cost",
    ),
];

/// Sets each director sysctl that differs; returns what it changed, or
/// the first failure with the file it was writing.
pub fn apply() -> Result<Vec<String>, String> {
    let mut changed = Vec::new();
    for (name, want, why) in DIRECTOR {
        let path = format!("/proc/sys/net/ipv4/vs/{name}");
        let now = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
        if now.trim() != *want {
            std::fs::write(&path, want).map_err(|e| format!("{path}: {e}"))?;
            tracing::info!(sysctl = %format!("net.ipv4.vs.{name}"), value = want, "{why}");
            changed.push(format!("net.ipv4.vs.{name}={want}"));
        }
    }
    Ok(changed)
}
