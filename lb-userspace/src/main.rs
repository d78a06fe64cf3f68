//! `xlb`: the load balancer daemon and its command line.

use std::net::IpAddr;

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use clap::{Parser, ValueEnum};
use lb_userspace::{
    announce::bgp::BgpStatus,
    announce::{aws::status::AwsStatus, status::AnnounceStatus},
    config::{self, DataplaneMode, XdpMode},
    daemon,
    health::status::HealthStatus,
    ipvs::IpvsDataplane,
    kubernetes::Leadership,
    owned_routes::{Kind, OwnedRoutes},
    runstate::RunState,
    xdp::{Balancer, Decapsulator, Maps, Settings, attach, pins::PinDir, status as xdp_status},
};

#[derive(Parser)]
#[command(name = "xlb", version, about = "eBPF/XDP L4 load balancer")]
struct Cli {
    /// Log format.
    #[arg(long, value_enum, global = true, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Run the daemon: load and attach the data plane, apply the config,
    /// serve metrics, reload on SIGHUP or file change.
    Run {
        #[arg(long, default_value = "/etc/xlb/xlb.toml")]
        config: PathBuf,
        /// Overrides dataplane.mode.
        #[arg(long, value_enum)]
        dataplane: Option<DataplaneMode>,
        /// Overrides dataplane.interfaces (repeatable).
        #[arg(long = "iface")]
        ifaces: Vec<String>,
        /// Overrides dataplane.pin_path.
        #[arg(long)]
        pin_path: Option<PathBuf>,
        /// Overrides metrics.listen.
        #[arg(long)]
        metrics: Option<std::net::SocketAddr>,
        /// How often the config file is checked for changes (milliseconds).
        #[arg(long, default_value_t = 1000)]
        watch_interval_ms: u64,
    },
    /// Show VIPs, backends, counters and flows from the pinned maps (works
    /// with or without a running daemon).
    Status {
        #[arg(long)]
        json: bool,
        #[arg(long, default_value = "/sys/fs/bpf/xlb")]
        pin_path: PathBuf,
        /// The daemon's dataplane.state_dir (says which data plane runs).
        #[arg(long, default_value = "/run/xlb")]
        state_dir: PathBuf,
    },
    /// Validate a config file; errors as FILE:LINE:COLUMN: reason, exit 1.
    Check {
        #[arg(long)]
        config: PathBuf,
    },
    /// Remove the data plane: detach the XDP balancer and remove its pins,
    /// or delete the IPVS services and VIP routes xlb owns (never others).
    Stop {
        #[arg(long, default_value = "/sys/fs/bpf/xlb")]
        pin_path: PathBuf,
        #[arg(long, default_value = "/run/xlb")]
        state_dir: PathBuf,
        /// After withdrawing BGP routes, how long the data plane keeps
        /// forwarding before it is removed (milliseconds), so the upstream
        /// routes around this node first; 0 removes it at once.
        #[arg(long, default_value_t = 1000)]
        withdraw_wait_ms: u64,
    },
    /// Maintenance: withdraw every BGP route of this node and keep them
    /// withdrawn (across restarts) until `xlb undrain`; waits until the
    /// running daemon has withdrawn them and they are gone from the kernel
    /// table, with no table write failing.
    Drain {
        #[arg(long, default_value = "/run/xlb")]
        state_dir: PathBuf,
        /// How long to wait for the daemon (seconds).
        #[arg(long, default_value_t = 30)]
        timeout: u64,
    },
    /// End a drain: the daemon announces again what it may.
    Undrain {
        #[arg(long, default_value = "/run/xlb")]
        state_dir: PathBuf,
        #[arg(long, default_value_t = 30)]
        timeout: u64,
    },
    /// Check that the XDP balancer loads through this kernel's verifier.
    Verify,
    /// Backend side: strip the IPIP/IP6IP6 header of packets for local VIPs
    /// (for kernels without the ipip module), until SIGINT/SIGTERM.
    Decap {
        /// Interface(s) the encapsulated traffic arrives on.
        #[arg(long = "iface", required = true)]
        ifaces: Vec<String>,
        /// VIP address(es) this backend serves.
        #[arg(long = "vip", required = true)]
        vips: Vec<IpAddr>,
        /// XDP attach mode; native falls back to generic when the driver refuses.
        #[arg(long, value_enum, default_value_t = XdpMode::Native)]
        xdp_mode: XdpMode,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let env =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(env)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => fmt.init(),
        LogFormat::Json => fmt.json().init(),
    }
    match run(cli.command) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // The whole cause chain on one line; no backtrace for operators.
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cmd: Command) -> Result<()> {
    match cmd {
        Command::Run {
            config,
            dataplane,
            ifaces,
            pin_path,
            metrics,
            watch_interval_ms,
        } => {
            let opts = daemon::RunOptions {
                config,
                dataplane,
                interfaces: ifaces,
                pin_path,
                metrics,
                watch_interval: std::time::Duration::from_millis(watch_interval_ms.max(10)),
            };
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?
                .block_on(daemon::run(opts))?;
        }
        Command::Status {
            json,
            pin_path,
            state_dir,
        } => match RunState::read(&state_dir) {
            Some(r) if r.dataplane == "ipvs" => ipvs_status(&state_dir, r.reason, json)?,
            _ => status(&pin_path, &state_dir, json)?,
        },
        Command::Check { config } => {
            let c = config::load(&config).map_err(|e| anyhow::anyhow!("{e}"))?;
            let backends: usize = c.vips.iter().map(|v| v.backends.len()).sum();
            let largest = c.dataplane.maglev_table_size;
            let slots: u64 = c
                .vips
                .iter()
                .map(|v| u64::from(v.maglev_table_size(largest)))
                .sum();
            println!(
                "{}: ok ({} VIPs, {backends} backends); Maglev tables take {slots} of {} slots",
                config.display(),
                c.vips.len(),
                c.dataplane.maglev_slots()
            );
        }
        Command::Drain { state_dir, timeout } => drain(&state_dir, true, timeout)?,
        Command::Undrain { state_dir, timeout } => drain(&state_dir, false, timeout)?,
        Command::Stop {
            pin_path,
            state_dir,
            withdraw_wait_ms,
        } => {
            // Stopping for good: the network must stop sending here first.
            if let Some(b) = BgpStatus::read(&state_dir) {
                let mut routes = OwnedRoutes::open(b.table, b.protocol, Kind::Blackhole)?;
                let withdrawn = routes.list()?;
                for addr in &withdrawn {
                    routes.remove(*addr)?;
                    println!("withdrew the BGP route for {addr} (table {})", b.table);
                }
                // The routing daemon sends the withdrawal and the upstream
                // reroutes within milliseconds to a second; packets it sends
                // here meanwhile are still forwarded.
                if !withdrawn.is_empty() && withdraw_wait_ms > 0 {
                    let wait = std::time::Duration::from_millis(withdraw_wait_ms);
                    println!("waiting {wait:?} for the upstream to route around this node");
                    std::thread::sleep(wait);
                }
            }
            let ipvs_owned = state_dir.join(lb_userspace::ipvs::ownership::FILE).exists();
            let pins = PinDir::new(&pin_path);
            let xdp = pins.has_maps() || !pins.links().is_empty();
            if !ipvs_owned && !xdp {
                bail!(
                    "nothing to stop: no xlb pins at {} and no IPVS services recorded in {}",
                    pin_path.display(),
                    state_dir.display()
                );
            }
            if ipvs_owned {
                let removed = IpvsDataplane::open(&state_dir)?.remove_all()?;
                for key in removed {
                    println!("removed IPVS service {key}");
                }
            }
            if xdp {
                let links = pins.links();
                pins.remove(true)
                    .with_context(|| format!("removing pins under {}", pin_path.display()))?;
                for l in links {
                    println!("detached from {}", l.iface);
                }
                println!("removed {}", pin_path.display());
            }
            RunState::remove(&state_dir);
        }
        Command::Verify => {
            let b = Balancer::load(&Settings::default())?;
            println!(
                "xlb balancer loaded: program {:?}",
                b.program().info().ok().map(|i| i.id())
            );
        }
        Command::Decap {
            ifaces,
            vips,
            xdp_mode,
        } => decap(&ifaces, &vips, xdp_mode)?,
    }
    Ok(())
}

fn decap(ifaces: &[String], vips: &[IpAddr], mode: XdpMode) -> Result<()> {
    let mut d = Decapsulator::load().context("loading the decapsulator")?;
    for vip in vips {
        d.add_vip(*vip)
            .with_context(|| format!("adding VIP {vip}"))?;
    }
    let prog = d.program_mut();
    for iface in ifaces {
        if !attach::interface_exists(iface) {
            bail!("interface {iface} does not exist (check --iface)");
        }
        let (_, used) = attach::attach_with_fallback(prog, iface, mode)?;
        tracing::info!(%iface, mode = attach::mode_name(used), ?vips, "decapsulating");
    }
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
            tokio::select! {
                r = tokio::signal::ctrl_c() => r,
                _ = term.recv() => Ok(()),
            }
        })?;
    tracing::info!("stopping: detaching from {}", ifaces.join(", "));
    Ok(())
}

fn ipvs_status(state_dir: &Path, reason: String, json: bool) -> Result<()> {
    let mut dp = IpvsDataplane::open(state_dir)?;
    let s = lb_userspace::ipvs::status::read(&mut dp, reason)?;
    show(&s, lb_userspace::ipvs::status::render(&s), state_dir, json)
}

/// Prints a data plane's status, with what the daemon's tasks left in the
/// state directory: who leads each VIP (the Kubernetes source), how VIPs
/// are announced, and each checked backend's health.
fn show(status: &impl serde::Serialize, text: String, state_dir: &Path, json: bool) -> Result<()> {
    let leaders = Leadership::read(state_dir);
    let announce = AnnounceStatus::read(state_dir);
    let aws = AwsStatus::read(state_dir);
    let health = HealthStatus::read(state_dir);
    let bgp = BgpStatus::read(state_dir);
    if json {
        let mut v = serde_json::to_value(status)?;
        if let (Some(l), Some(obj)) = (&leaders, v.as_object_mut()) {
            obj.insert("leadership".to_owned(), serde_json::to_value(l)?);
        }
        if let (Some(a), Some(obj)) = (&announce, v.as_object_mut()) {
            obj.insert("announce".to_owned(), serde_json::to_value(a)?);
        }
        if let (Some(a), Some(obj)) = (&aws, v.as_object_mut()) {
            obj.insert("aws".to_owned(), serde_json::to_value(a)?);
        }
        if let (Some(h), Some(obj)) = (&health, v.as_object_mut()) {
            obj.insert("health".to_owned(), serde_json::to_value(h)?);
        }
        if let (Some(b), Some(obj)) = (&bgp, v.as_object_mut()) {
            obj.insert("bgp".to_owned(), serde_json::to_value(b)?);
        }
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    print!("{text}");
    if let Some(a) = announce.filter(|a| !a.vips.is_empty()) {
        println!(
            "\nannouncement (liveness bound {} ms; {} gratuitous sent, {} transitions)",
            a.liveness_bound_ms, a.gratuitous_sent, a.transitions
        );
        println!(
            "  {:<40} {:<5} {:<7} {:<30} last announcement",
            "VIP", "mode", "owned", "leader"
        );
        for (vip, v) in &a.vips {
            let mode = v.mode.name();
            let last = v.last_announcement_unix.map_or("-".to_owned(), |t| {
                let ago = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0.0, |d| d.as_secs_f64())
                    - t;
                format!("{ago:.1} s ago ({} sent)", v.announcements)
            });
            println!(
                "  {:<40} {mode:<5} {:<7} {:<30} {last}",
                vip.to_string(),
                if v.owned { "yes" } else { "no" },
                v.leader.as_deref().unwrap_or("-"),
            );
        }
    }
    if let Some(a) = aws.filter(|a| !a.vips.is_empty()) {
        show_aws(&a);
    }
    if let Some(b) = bgp.filter(|b| !b.vips.is_empty() || b.draining) {
        show_bgp(&b);
    }
    if let Some(h) = health.filter(|h| !h.backends.is_empty()) {
        show_health(&h);
    }
    if let Some(l) = leaders {
        println!("\nleadership (Leases; this node is {})", l.identity);
        println!("  {:<40} {:<30} this node", "VIP", "holder");
        for (vip, v) in &l.vips {
            let holder = v.holder.as_deref().unwrap_or("-");
            let me = if v.leading { "leads" } else { "follows" };
            println!("  {:<40} {holder:<30} {me}", vip.to_string());
        }
    }
    Ok(())
}

fn status(pin_path: &Path, state_dir: &Path, json: bool) -> Result<()> {
    let pins = PinDir::new(pin_path);
    if !pins.has_maps() {
        bail!(
            "no xlb data plane pinned at {} (is `xlb run` using another --pin-path?)",
            pin_path.display()
        );
    }
    let maps = Maps::open_pinned(pin_path)?;
    let s = xdp_status::read(&maps, &pins)?;
    show(&s, xdp_status::render(&s), state_dir, json)
}

/// Starts (`on`) or ends a drain and waits until the daemon's status shows
/// it: every route withdrawn, or the drain over.
fn drain(state_dir: &Path, on: bool, timeout: u64) -> Result<()> {
    let marker = state_dir.join(lb_userspace::announce::bgp::DRAIN_FILE);
    if on {
        std::fs::create_dir_all(state_dir)?;
        std::fs::write(&marker, b"xlb drain\n")
            .with_context(|| format!("writing {}", marker.display()))?;
    } else if let Err(e) = std::fs::remove_file(&marker)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        return Err(e).with_context(|| format!("removing {}", marker.display()));
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(timeout);
    let mut last = None;
    loop {
        let b = BgpStatus::read(state_dir);
        // The daemon's decision, its writes, and the kernel's table all
        // agree: what the routing daemon exports is what was asked for.
        if let Some(b) = &b
            && b.draining == on
            && b.settled()
            && (!on || b.installed.is_empty())
            && table_routes(b).is_ok_and(|r| r == b.installed)
        {
            if on {
                println!(
                    "drained: no VIP announced from this node ({} withheld); `xlb undrain` ends it",
                    b.vips.len()
                );
            } else {
                println!("undrained: {} VIP addresses announced", b.announced());
            }
            return Ok(());
        }
        last = b.or(last);
        if std::time::Instant::now() >= deadline {
            let what = if on { "drain" } else { "end of the drain" };
            if let Some(b) = last.filter(|b| b.draining == on) {
                let routes = table_routes(&b)
                    .map_or_else(|e| format!("unreadable ({e})"), |r| format!("{r:?}"));
                bail!(
                    "the daemon took up the {what} but the table did not follow within {timeout} s: \
                     table {} holds {routes}{} (see xlb status and the daemon's log)",
                    b.table,
                    b.error
                        .as_ref()
                        .map_or(String::new(), |e| format!("; last write error: {e}"))
                );
            }
            bail!(
                "no running daemon confirmed the {what} within {timeout} s (it is recorded in {} and \
                 takes effect when one starts)",
                marker.display()
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// The addresses routed in the `bgp` announcer's table now, read from the
/// kernel.
fn table_routes(b: &BgpStatus) -> std::io::Result<std::collections::BTreeSet<IpAddr>> {
    OwnedRoutes::open(b.table, b.protocol, Kind::Blackhole)?.list()
}

/// The `bgp` announcer's view: per VIP address, announced or why not.
fn show_bgp(b: &BgpStatus) {
    println!(
        "\nbgp (table {}, protocol {}{}; {} announced, {} withdrawn since start)",
        b.table,
        b.protocol,
        if b.draining { ", DRAINING" } else { "" },
        b.announcements,
        b.withdrawals
    );
    if let Some(e) = &b.error {
        println!(
            "  error writing the table ({} failed writes since start): {e}",
            b.write_errors
        );
    }
    for (addr, why) in &b.vips {
        let installed = b.installed.contains(addr);
        let state = match (why, installed) {
            (None, true) => "announced".to_owned(),
            (None, false) => "NOT ANNOUNCED: its route could not be added".to_owned(),
            (Some(w), false) => format!("withheld: {}", w.as_str()),
            (Some(w), true) => format!(
                "withheld: {}, but its route is still in the table",
                w.as_str()
            ),
        };
        println!("  {:<40} {state}", addr.to_string());
    }
    for addr in b.installed.iter().filter(|a| !b.vips.contains_key(a)) {
        println!(
            "  {:<40} no longer a bgp VIP, but its route is still in the table",
            addr.to_string()
        );
    }
}

/// Each checked backend: its state, since when, and its last probe.
fn show_health(h: &HealthStatus) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    println!(
        "\nhealth ({} transitions; DSR path: {})",
        h.transitions,
        h.dsr_path.as_deref().unwrap_or("not in use")
    );
    for vip in &h.fail_open {
        println!("  FAIL-OPEN {vip}: every backend is down; all kept in rotation");
    }
    let reasons: std::collections::BTreeSet<&str> = h
        .backends
        .iter()
        .filter_map(|b| b.why_direct.as_deref())
        .collect();
    for why in reasons {
        println!("  probed direct although via = dsr: {why}");
    }
    println!(
        "  {:<28} {:<40} {:<5} {:<7} {:<8} {:<10} last",
        "VIP", "backend", "kind", "via", "state", "since"
    );
    for b in &h.backends {
        let last = match (&b.last_failure, b.last_latency_ms, b.last_unix) {
            (_, _, None) => "-".to_owned(),
            (Some(f), _, Some(t)) => format!("{f} ({:.1} s ago)", now - t),
            (None, Some(ms), Some(t)) => format!("ok in {ms:.2} ms ({:.1} s ago)", now - t),
            (None, None, Some(t)) => format!("ok ({:.1} s ago)", now - t),
        };
        println!(
            "  {:<28} {:<40} {:<5} {:<7} {:<8} {:<10} {last}",
            b.vip,
            b.backend.to_string(),
            b.kind,
            b.via,
            b.state.as_str(),
            format!("{:.0} s", now - b.since_unix),
        );
    }
}

/// The `aws` announcer's view: per VIP the association wanted and the one
/// EC2 last reported.
fn show_aws(a: &AwsStatus) {
    println!(
        "
aws (region {}, ENI {}, subnet {}, source/dest check {})",
        a.region.as_deref().unwrap_or("-"),
        a.network_interface_id.as_deref().unwrap_or("-"),
        a.subnet.map_or("-".to_owned(), |s| s.to_string()),
        match a.source_dest_check {
            Some(true) => "ON (must be off)",
            Some(false) => "off",
            None => "-",
        }
    );
    if let Some(e) = &a.error {
        println!("  error: {e}");
    }
    println!(
        "  {:<16} {:<6} {:<26} {:<24} {:<40} state",
        "VIP", "leads", "Elastic IP", "desired", "observed"
    );
    for (vip, v) in &a.vips {
        let desired = v
            .desired_network_interface_id
            .as_deref()
            .map_or("-".to_owned(), |e| format!("{e}/{vip}"));
        let observed = v.observed.as_ref().map_or("-".to_owned(), |o| {
            format!(
                "{} on {}/{}",
                o.public_ip.as_deref().unwrap_or("?"),
                o.network_interface_id.as_deref().unwrap_or("(none)"),
                o.private_ip.map_or("-".to_owned(), |p| p.to_string())
            )
        });
        let state = match (&v.error, v.leads, v.in_place) {
            (Some(e), _, _) => e.clone(),
            (None, false, _) => "not led here".to_owned(),
            (None, true, true) => "in place".to_owned(),
            (None, true, false) => "moving".to_owned(),
        };
        println!(
            "  {:<16} {:<6} {:<26} {desired:<24} {observed:<40} {state}",
            vip.to_string(),
            if v.leads { "yes" } else { "no" },
            v.allocation_id
                .as_ref()
                .map_or("-".to_owned(), |e| e.to_string()),
        );
    }
    let calls: Vec<String> = a
        .calls
        .iter()
        .map(|c| format!("{} {} {}", c.operation, c.result, c.count))
        .collect();
    println!(
        "  calls: {}; throttled {}; moves confirmed {} (last {})",
        if calls.is_empty() {
            "-".to_owned()
        } else {
            calls.join(", ")
        },
        a.throttled,
        a.moves_confirmed,
        a.last_confirm_seconds
            .map_or("-".to_owned(), |s| format!("{s:.2} s"))
    );
    for b in &a.backends_with_source_dest_check {
        println!(
            "  backend {} ({}{}): source/destination check ON: it drops DSR replies",
            b.address,
            b.network_interface_id,
            b.instance_id
                .as_deref()
                .map_or(String::new(), |i| format!(", {i}"))
        );
    }
}
