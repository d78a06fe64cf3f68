//! A [`Config`] written back as a config file that [`super::parse`] reads
//! to the same `Config`: every key explicit, so the output also documents
//! the defaults that were in effect.

use std::fmt::Write;

use super::model::{Config, Named};

pub fn to_toml(config: &Config) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail; the Results only satisfy fmt::Write.
    let _ = write_config(&mut out, config);
    out
}

fn write_config(out: &mut String, config: &Config) -> std::fmt::Result {
    let d = &config.dataplane;
    writeln!(out, "[dataplane]")?;
    writeln!(out, "mode = {}", string(d.mode.name()))?;
    let interfaces: Vec<String> = d.interfaces.iter().map(|i| string(i)).collect();
    writeln!(out, "interfaces = [{}]", interfaces.join(", "))?;
    writeln!(out, "xdp_mode = {}", string(d.xdp_mode.name()))?;
    // The path came from a TOML string, so it is UTF-8 and nothing is lost.
    writeln!(out, "pin_path = {}", string(&d.pin_path.to_string_lossy()))?;
    writeln!(
        out,
        "state_dir = {}",
        string(&d.state_dir.to_string_lossy())
    )?;
    writeln!(out, "encap = {}", string(d.encap.name()))?;
    writeln!(out, "scheduler = {}", string(&d.scheduler))?;
    writeln!(out, "maglev_table_size = {}", d.maglev_table_size)?;
    writeln!(out, "flow_table_size = {}", d.flow_table_size)?;
    writeln!(out, "max_vips = {}", d.max_vips)?;
    writeln!(out, "max_backends = {}", d.max_backends)?;
    // TOML has no null: an unset source is an absent key.
    if let Some(addr) = d.ipip_source_v4 {
        writeln!(out, "ipip_source_v4 = {}", string(&addr.to_string()))?;
    }
    if let Some(addr) = d.ipip_source_v6 {
        writeln!(out, "ipip_source_v6 = {}", string(&addr.to_string()))?;
    }
    writeln!(out, "nexthop_ttl_ms = {}", d.nexthop_ttl_ms)?;

    writeln!(out, "\n[metrics]")?;
    writeln!(
        out,
        "listen = {}",
        string(&config.metrics.listen.to_string())
    )?;

    for vip in &config.vips {
        writeln!(out, "\n[[vip]]")?;
        writeln!(out, "address = {}", string(&vip.address.to_string()))?;
        writeln!(out, "port = {}", vip.port)?;
        writeln!(out, "protocol = {}", string(vip.protocol.name()))?;
        writeln!(out, "encap = {}", string(vip.encap.name()))?;
        writeln!(out, "scheduler = {}", string(&vip.scheduler))?;
        if vip.backends.is_empty() {
            writeln!(out, "backends = []")?;
        } else {
            writeln!(out, "backends = [")?;
            for b in &vip.backends {
                writeln!(
                    out,
                    "    {{ address = {}, weight = {} }},",
                    string(&b.address.to_string()),
                    b.weight
                )?;
            }
            writeln!(out, "]")?;
        }
    }

    let k = &config.kubernetes;
    writeln!(out, "\n[kubernetes]")?;
    writeln!(out, "enabled = {}", k.enabled)?;
    writeln!(
        out,
        "load_balancer_class = {}",
        string(&k.load_balancer_class)
    )?;
    writeln!(out, "include_unclassed = {}", k.include_unclassed)?;
    if let Some(path) = &k.kubeconfig {
        writeln!(out, "kubeconfig = {}", string(&path.to_string_lossy()))?;
    }
    writeln!(out, "backend_target = {}", string(k.backend_target.name()))?;
    // The written form (CIDR or range) is not kept; a range reads back to
    // the same addresses, which is what the model holds.
    let pools: Vec<String> = k
        .pools
        .iter()
        .map(|p| string(&format!("{}-{}", p.first, p.last)))
        .collect();
    writeln!(out, "pools = [{}]", pools.join(", "))?;
    writeln!(out, "lease_namespace = {}", string(&k.lease_namespace))?;
    if let Some(name) = &k.node_name {
        writeln!(out, "node_name = {}", string(name))?;
    }
    writeln!(out, "lease_duration_ms = {}", k.lease_duration_ms)?;
    writeln!(out, "renew_deadline_ms = {}", k.renew_deadline_ms)?;
    writeln!(out, "retry_period_ms = {}", k.retry_period_ms)?;

    writeln!(out, "\n[announce]")?;
    writeln!(out, "mode = {}", string(config.announce.mode.name()))?;
    Ok(())
}

/// A TOML string literal, escaped by toml itself.
fn string(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}
