//! `cargo xtask bench scale`: what the number of VIPs costs, from 1 to
//! 1,000,000 VIPs of [`BACKENDS`] backends each (a [`ManyVips`] config,
//! Maglev sizes and `maglev_slots` at their defaults; `max_vips` and
//! `max_backends` exactly what the VIPs need).
//!
//! ```text
//!  peer ns: c0 10.0.0.2 ──veth── lb0 10.0.0.1 (LB ns: xlb run, generic XDP)
//!  backends 10.128.0.0/9 and 11.0.0.0/8: default route via 10.0.0.2 (a permanent
//!  neighbour: none of them exists)
//! ```
//!
//! Per size, one after the other:
//!
//! 1. `xlb check` of the config: wall time and peak RSS (wait4's
//!    `ru_maxrss` of that child).
//! 2. The real `xlb run` (release build, pins in a fresh bpffs directory),
//!    timed from spawn until its first "reconciled" log line, which it
//!    writes once the whole config is in the maps (then checked: every VIP
//!    in the pinned VIP map). Its memory (/proc/PID/status) then, and the
//!    kernel memory of its maps (the `memlock` of each BPF map it holds,
//!    from /proc/PID/fdinfo). Then a restart on the same pins and config
//!    (SIGTERM, `xlb run` again), timed the same way; its log says how many
//!    VIPs it adopted and how many map writes its first reconcile made.
//!
//! Then, in this process, the sizes side by side: one balancer per size
//! (`Balancer::load` with the daemon's settings for that config, no pins),
//! filled by `Applied::empty(..).reconcile(..)` (timed: the reconcile into
//! empty maps alone), and the per-packet cost of an established flow and
//! of non-VIP traffic on each, by `BPF_PROG_TEST_RUN`, every size in every
//! round ([`crate::test_run::measure`]); each size is compared with the
//! 1-VIP balancer of the same run.
//!
//! A size whose kernel memory (estimated from the map sizes before
//! anything is loaded) or config file does not fit what the machine has
//! left is skipped with the reason printed, and so are the larger ones.

use std::{
    collections::BTreeMap,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};
use lb_common::{Backend, Counters, FlowKey, FlowValue, NextHop, Owned, OwnedKey, VipInfo, VipKey};
use lb_userspace::xdp::{
    Balancer, Maps, Settings,
    loader::{MAX_MAGLEV_SLOTS, default_maglev_slots},
};

use crate::procfs::{Memory, cpu_time, mb, memory};
use crate::{
    daemon::{Daemon, free_port, xlb_bin},
    lab::{self, Lab},
    many_vips::{ManyVips, wait_with_peak},
    netns::{NetNs, PinDir},
    test_run::{Subject, XDP_PASS, XDP_TX, measure, other_destination, subject, tcp4_frame},
};

/// VIPs per case.
const SIZES: [u32; 4] = [1, 10_000, 100_000, 1_000_000];
/// Backends of every VIP.
const BACKENDS: u32 = 3;
/// How long a start (or a stop) may take before the bench gives up.
const START_LIMIT: Duration = Duration::from_secs(600);
/// How long the daemon is watched once serving: its CPU meanwhile (the
/// config file's change check every second, the neighbour refresh every 5
/// s), and its memory after it (the start's scratch freed).
const IDLE: Duration = Duration::from_secs(6);
/// Targets of the scale issue, at 100,000 VIPs x 3 backends.
const TARGET_VIPS: u32 = 100_000;
const PARSE_TARGET_S: f64 = 1.0;
const PARSE_PEAK_TARGET_MB: f64 = 150.0;
const RSS_TARGET_MB: f64 = 200.0;
const RECONCILE_TARGET_S: f64 = 2.0;
/// What the daemon's own memory is assumed to need at most, per VIP, when
/// deciding whether a size fits (measured: well under this).
const DAEMON_BYTES_PER_VIP: u64 = 4_000;

/// Runs every size that fits and prints the tables; skips (Ok) without root.
pub fn run(calls: usize) -> Result<()> {
    if unsafe { libc::geteuid() } != 0 {
        println!("\nSKIPPED the scale benchmark: it needs root (network namespaces, BPF, XDP)");
        return Ok(());
    }
    // Built before any clock starts (cargo, release profile like this binary).
    let bin = xlb_bin();
    println!(
        "\n## Scale: VIPs x {BACKENDS} backends (xlb run {}, generic XDP on a veth)",
        bin.display()
    );
    let started = Instant::now();
    // XLB_BENCH_SCALE_SIZES=1,100000 runs only those sizes.
    let only: Option<Vec<u32>> = std::env::var("XLB_BENCH_SCALE_SIZES")
        .ok()
        .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect());
    let sizes: Vec<u32> = SIZES
        .into_iter()
        .filter(|n| only.as_ref().is_none_or(|o| o.contains(n)))
        .collect();
    let mut cases = Vec::new();
    let mut stopped = None;
    for &n in &sizes {
        let plan = Plan::new(n);
        if let Err(why) = plan.fits(0) {
            stopped = Some(format!("stopped before {n} VIPs: {why}"));
            break;
        }
        eprintln!(
            "scale bench: {n} VIPs: kernel maps estimated at {:.0} MB ({:.0} s so far)",
            mb(plan.kernel_estimate),
            started.elapsed().as_secs_f64()
        );
        let c = case(&plan).with_context(|| format!("{n} VIPs"))?;
        eprintln!(
            "scale bench: {n} VIPs: serving after {:.2} s, restart {:.2} s ({} writes), VmRSS {:.0} MB",
            c.start.serving.as_secs_f64(),
            c.restart.serving.as_secs_f64(),
            c.restart.writes,
            mb(c.start.memory.rss)
        );
        cases.push(c);
    }
    let plans: Vec<Plan> = cases.iter().map(|c| c.plan.clone()).collect();
    let packets = packets(&plans, calls)?;
    eprintln!(
        "scale bench: done in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    print(&cases, &packets, stopped.as_deref());
    Ok(())
}

/// One size's config and what it should cost.
#[derive(Clone)]
struct Plan {
    vips: u32,
    many: ManyVips,
    /// The daemon's settings for this config (pins aside).
    settings: Settings,
    kernel_estimate: u64,
    /// About the config's size (measured: ~150 bytes a VIP of 3 backends).
    config_estimate: u64,
}

impl Plan {
    fn new(vips: u32) -> Self {
        let many = ManyVips {
            maglev_table_size: None,
            ..ManyVips::new(vips, BACKENDS, 0)
        };
        // What ManyVips writes; the defaults for the rest.
        let largest = lb_common::DEFAULT_MAGLEV_SIZE;
        let max_vips = vips.max(1);
        let settings = Settings {
            maglev_size: largest,
            maglev_slots: default_maglev_slots(max_vips, largest),
            max_vips,
            max_backends: vips * BACKENDS + 1,
            flow_table_size: 1024,
            pin_dir: None,
            ..Settings::default()
        };
        Self {
            vips,
            many,
            kernel_estimate: kernel_estimate(&settings),
            settings,
            config_estimate: 200 + u64::from(vips) * 160,
        }
    }

    /// Whether this size fits the memory and disk left, with `held` bytes
    /// more already taken by this process.
    fn fits(&self, held: u64) -> Result<(), String> {
        let need =
            self.kernel_estimate + u64::from(self.vips) * DAEMON_BYTES_PER_VIP + 100_000_000 + held;
        let avail = mem_available();
        if need > avail / 10 * 8 {
            return Err(format!(
                "needs about {:.1} GB (kernel maps {:.1} GB + the daemon), more than 80% of the {:.1} GB available (MemAvailable)",
                need as f64 / 1e9,
                self.kernel_estimate as f64 / 1e9,
                avail as f64 / 1e9
            ));
        }
        if self.settings.maglev_slots >= MAX_MAGLEV_SLOTS {
            return Err(format!(
                "the default maglev_slots would exceed {MAX_MAGLEV_SLOTS}"
            ));
        }
        let disk = disk_available(&std::env::temp_dir());
        if self.config_estimate * 2 > disk {
            return Err(format!(
                "a config of about {:.0} MB does not fit the {:.0} MB free in {}",
                mb(self.config_estimate),
                mb(disk),
                std::env::temp_dir().display()
            ));
        }
        Ok(())
    }
}

/// The kernel memory of the balancer's maps at `s`, by the kernel's own
/// accounting (`htab_map_mem_usage`, `array_map_mem_usage`): a hash
/// element is a 48-byte header, the key and the value (each rounded to 8
/// bytes), every map preallocated; buckets of 16 bytes, a power of two of
/// them; per-CPU values once per possible CPU.
fn kernel_estimate(s: &Settings) -> u64 {
    let cpus = possible_cpus();
    let r8 = |n: usize| n.next_multiple_of(8) as u64;
    let hash = |entries: u32, key: usize, value: usize| {
        u64::from(entries) * (48 + r8(key) + r8(value))
            + u64::from(entries).next_power_of_two() * 16
    };
    let array = |entries: u32, value: usize| u64::from(entries) * r8(value);
    let per_cpu = |entries: u32, value: usize| u64::from(entries) * (r8(value) * cpus + 8);
    hash(s.max_vips, size_of::<VipKey>(), size_of::<VipInfo>())
        + hash(s.max_vips, size_of::<OwnedKey>(), size_of::<Owned>())
        + per_cpu(s.max_vips, size_of::<Counters>())
        + array(
            s.maglev_slots.div_ceil(lb_common::MAGLEV_SLOTS_PER_ENTRY),
            8,
        )
        + array(s.max_backends, size_of::<Backend>())
        + per_cpu(s.max_backends, size_of::<Counters>())
        + per_cpu(s.max_backends, size_of::<NextHop>())
        + hash(
            s.flow_table_size,
            size_of::<FlowKey>(),
            size_of::<FlowValue>(),
        )
        + array(s.filter_bits() / 64, 8)
}

fn possible_cpus() -> u64 {
    std::fs::read_to_string("/sys/devices/system/cpu/possible")
        .ok()
        .and_then(|s| {
            let last = s.trim().rsplit([',', '-']).next()?.parse::<u64>().ok()?;
            Some(last + 1)
        })
        .unwrap_or(1)
}

fn mem_available() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap_or(0)
        * 1024
}

fn disk_available(dir: &Path) -> u64 {
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()) else {
        return 0;
    };
    // SAFETY: statvfs is plain data the call fills.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated path and a pointer to a live local.
    if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
        return 0;
    }
    s.f_bavail * s.f_frsize
}

/// What one size measured with the daemon.
struct Case {
    plan: Plan,
    config_bytes: u64,
    /// `xlb check`: wall time, peak RSS (bytes).
    check: Duration,
    check_peak: u64,
    start: Start,
    restart: Start,
    /// Each BPF map the daemon held once serving: name, `memlock` bytes.
    maps: Vec<(String, u64)>,
}

/// One start of the daemon, up to its first reconcile.
struct Start {
    /// From spawn to the "reconciled" line.
    serving: Duration,
    /// That reconcile's own time and map writes (its log line).
    reconcile_s: f64,
    writes: u64,
    /// VIPs it adopted from the pins ("adopted pinned maps"), 0 if none.
    adopted: u64,
    memory: Memory,
    /// After [`IDLE`] more: memory, and CPU over that time (% of one core).
    idle_memory: Memory,
    idle_cpu: f64,
}

/// One namespace pair and a scratch directory; the daemon (when any) is
/// stopped before the rest goes.
struct Scratch {
    daemon: Option<Daemon>,
    pins: PinDir,
    lb: NetNs,
    _peer: NetNs,
    dir: PathBuf,
    done: bool,
}

impl Drop for Scratch {
    fn drop(&mut self) {
        self.daemon.take();
        if !self.done || std::thread::panicking() {
            eprintln!("kept {} (config, daemon logs)", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn scratch(vips: u32) -> Scratch {
    let lb = NetNs::new();
    let peer = NetNs::new();
    lb.ip(&["link", "add", "lb0", "type", "veth", "peer", "name", "c0"]);
    lb.ip(&["link", "set", "c0", "netns", &peer.name]);
    lb.ip(&["addr", "add", "10.0.0.1/24", "dev", "lb0"]);
    lb.ip(&["link", "set", "lb0", "up"]);
    peer.ip(&["addr", "add", "10.0.0.2/24", "dev", "c0"]);
    peer.ip(&["link", "set", "c0", "up"]);
    lb.static_neighbours("lb0", &[("10.0.0.2", "02:00:00:00:00:02")]);
    // One gateway for every backend: the daemon keeps each backend's next
    // hop resolved, and 3,000,000 neighbours would not fit the table. A
    // default route: past 524,288 VIPs the ManyVips backends leave
    // 10.128.0.0/9 for 11.0.0.0/8.
    lb.ip(&["route", "add", "default", "via", "10.0.0.2", "dev", "lb0"]);
    lb.sysctl("net.ipv4.ip_forward", "1");
    let dir = std::env::temp_dir().join(format!("xlb-bench-scale-{vips}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("bench scratch directory");
    Scratch {
        daemon: None,
        pins: PinDir::new(),
        lb,
        _peer: peer,
        dir,
        done: false,
    }
}

fn case(plan: &Plan) -> Result<Case> {
    let n = plan.vips;
    let mut s = scratch(n);
    let dataplane = format!(
        "interfaces = [\"lb0\"]\nxdp_mode = \"generic\"\npin_path = \"{}\"\nstate_dir = \"{}\"\n",
        s.pins.path.display(),
        s.dir.join("state").display()
    );
    let config = s.dir.join("xlb.toml");
    let text = plan.many.toml_with(&dataplane);
    let config_bytes = text.len() as u64;
    std::fs::write(&config, text).context("write the config")?;
    let (check, check_peak) = check(&config)?;
    let metrics = format!("127.0.0.1:{}", free_port());
    let args = [
        "--config",
        config.to_str().context("UTF-8 path")?,
        "--metrics",
        &metrics,
    ];
    let start = spawn_until_serving(&mut s, &args, "xlb.log", n)?;
    ensure!(
        start.adopted == 0,
        "the first start adopted {} VIPs from fresh pins",
        start.adopted
    );
    let pid = s.daemon.as_ref().context("daemon")?.pid();
    let maps = daemon_maps(pid);
    let in_maps = vips_in_maps(&s.pins.path)?;
    ensure!(
        in_maps == u64::from(n),
        "{in_maps} VIPs in the pinned map once serving, not {n}"
    );
    stop(&mut s)?;
    let restart = spawn_until_serving(&mut s, &args, "xlb-restart.log", n)?;
    ensure!(
        restart.adopted == u64::from(n),
        "the restart adopted {} VIPs, not {n}",
        restart.adopted
    );
    stop(&mut s)?;
    s.done = true;
    Ok(Case {
        plan: plan.clone(),
        config_bytes,
        check,
        check_peak,
        start,
        restart,
        maps,
    })
}

/// `xlb check --config FILE`: wall time and peak RSS in bytes.
fn check(config: &Path) -> Result<(Duration, u64)> {
    let t = Instant::now();
    // Reaped by wait4, which also says its peak RSS.
    let child = Command::new(xlb_bin())
        .arg("check")
        .arg("--config")
        .arg(config)
        .stdout(Stdio::null())
        .spawn()
        .context("spawn xlb check")?;
    let (status, peak_kb) = wait_with_peak(child.id());
    let took = t.elapsed();
    ensure!(status.success(), "xlb check: {status}");
    Ok((took, peak_kb.max(0) as u64 * 1024))
}

/// Spawns `xlb run ARGS` logging to `log` and waits for its first
/// "reconciled" line, which must count `n` VIPs.
fn spawn_until_serving(s: &mut Scratch, args: &[&str], log: &str, n: u32) -> Result<Start> {
    let log = s.dir.join(log);
    let t = Instant::now();
    s.daemon = Some(Daemon::spawn(&s.lb, args, &log));
    let d = s.daemon.as_mut().context("daemon")?;
    let line = loop {
        let text = d.log_text();
        if let Some(l) = text.lines().find(|l| l.contains(" reconciled ")) {
            break l.to_owned();
        }
        if let Ok(Some(status)) = d.child.try_wait() {
            bail!("xlb exited ({status}) before serving; log:\n{text}");
        }
        ensure!(
            t.elapsed() < START_LIMIT,
            "xlb not serving within {START_LIMIT:?} (see {})",
            log.display()
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    let serving = t.elapsed();
    let memory = memory(d.pid());
    let cpu0 = cpu_time(d.pid());
    std::thread::sleep(IDLE);
    let idle_cpu = (cpu_time(d.pid()) - cpu0).as_secs_f64() / IDLE.as_secs_f64() * 100.0;
    let idle_memory = self::memory(d.pid());
    let vips = field(&line, "vips").unwrap_or(-1.0);
    ensure!(
        vips == f64::from(n),
        "the first reconcile served {vips} VIPs, not {n}: {line}"
    );
    let adopted = d
        .log_text()
        .lines()
        .find(|l| l.contains("adopted pinned maps"))
        .and_then(|l| field(l, "vips"))
        .unwrap_or(0.0);
    Ok(Start {
        serving,
        reconcile_s: field(&line, "seconds").unwrap_or(f64::NAN),
        writes: field(&line, "writes").context("no writes= in the reconciled line")? as u64,
        adopted: adopted as u64,
        memory,
        idle_memory,
        idle_cpu,
    })
}

/// The value of `key=` in a log line.
fn field(line: &str, key: &str) -> Option<f64> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
}

/// SIGTERM, then waits for the daemon to exit.
fn stop(s: &mut Scratch) -> Result<()> {
    let mut d = s.daemon.take().context("no daemon")?;
    d.signal(libc::SIGTERM);
    let t = Instant::now();
    loop {
        if let Ok(Some(status)) = d.child.try_wait() {
            ensure!(
                status.success(),
                "xlb exited with {status}; log:\n{}",
                d.log_text()
            );
            return Ok(());
        }
        ensure!(
            t.elapsed() < START_LIMIT,
            "xlb did not stop within {START_LIMIT:?} of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn vips_in_maps(pins: &Path) -> Result<u64> {
    let maps = Maps::open_pinned(pins).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(maps.vips.keys().filter(Result::is_ok).count() as u64)
}

/// Each BPF map process `pid` holds (once, by id): its name and `memlock`.
fn daemon_maps(pid: i32) -> Vec<(String, u64)> {
    let mut by_id = BTreeMap::new();
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    for fd in fds.flatten() {
        let is_map =
            std::fs::read_link(fd.path()).is_ok_and(|t| t.to_string_lossy().contains("bpf-map"));
        if !is_map {
            continue;
        }
        let info = std::fs::read_to_string(format!(
            "/proc/{pid}/fdinfo/{}",
            fd.file_name().to_string_lossy()
        ))
        .unwrap_or_default();
        let value = |key: &str| {
            info.lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        if let (Some(id), Some(bytes)) = (value("map_id:"), value("memlock:")) {
            by_id.insert(id, bytes);
        }
    }
    let mut maps: Vec<(String, u64)> = by_id
        .into_iter()
        .map(|(id, bytes)| {
            let name = aya::maps::MapInfo::from_id(id as u32)
                .ok()
                .and_then(|i| i.name_as_str().map(str::to_owned))
                .unwrap_or_else(|| format!("map {id}"));
            (name, bytes)
        })
        .collect();
    maps.sort_by_key(|m| std::cmp::Reverse(m.1));
    maps
}

/// The in-process part: per size, the reconcile into empty maps and the
/// per-packet costs.
struct Packets {
    vips: u32,
    reconcile: Duration,
    established_ns: f64,
    non_vip_ns: f64,
    non_vip_one_ns: f64,
}

/// Loads one balancer per size in `plans` (those that fit beside the
/// others), fills each by a reconcile into empty maps, then times an
/// established flow and non-VIP traffic on all of them, round-robin.
fn packets(plans: &[Plan], calls: usize) -> Result<Vec<Packets>> {
    use lb_userspace::{config, desired::Desired, xdp::reconcile::Applied};

    if plans.is_empty() {
        return Ok(Vec::new());
    }
    let lab = Lab::new();
    // ManyVips backends: behind the lab's gateway, a permanent neighbour.
    lab.ns
        .ip(&["route", "add", "10.128.0.0/9", "via", "10.0.0.254"]);
    lab.ns.run(|| -> Result<Vec<Packets>> {
        let mut loaded = Vec::new();
        let mut held = 0;
        for p in plans {
            if let Err(why) = p.fits(held) {
                eprintln!(
                    "scale bench: per-packet costs without {} VIPs and more: {why}",
                    p.vips
                );
                break;
            }
            let cfg =
                config::parse(&p.many.toml(), "scale.toml").map_err(|e| anyhow::anyhow!("{e}"))?;
            let settings = Settings {
                pin_dir: None,
                ..lb_userspace::daemon::settings(&cfg, None)
            };
            ensure!(
                settings.maglev_slots == p.settings.maglev_slots
                    && settings.max_backends == p.settings.max_backends,
                "the daemon's settings are not the plan's"
            );
            let desired = Desired::from_config(&cfg);
            drop(cfg);
            let mut b = Balancer::load(&settings)?;
            lab::register_ifaces(&mut b);
            let mut applied = Applied::empty(&b.settings);
            let t = Instant::now();
            let r = applied.reconcile(&mut b.maps, &desired)?;
            let reconcile = t.elapsed();
            ensure!(
                r.vips_added == p.vips as usize,
                "{} VIPs: the reconcile wrote {r:?}",
                p.vips
            );
            eprintln!(
                "scale bench: {} VIPs reconciled into empty maps in-process in {:.2} s",
                p.vips,
                reconcile.as_secs_f64()
            );
            held += p.kernel_estimate;
            loaded.push((p.vips, b, reconcile));
        }
        let ifx = lab::ifindex("lb0");
        // VIP 0 of every config: 10.64.0.0:80.
        let est = tcp4_frame(lab::CLIENT_V4, 40_000, Ipv4Addr::new(10, 64, 0, 0));
        let fixed = |f: Vec<u8>| move |_: usize, buf: &mut Vec<u8>| buf.clone_from(&f);
        let mut subjects: Vec<Subject<'_>> = loaded
            .iter()
            .map(|(_, b, _)| subject(b.program(), XDP_TX, fixed(est.clone())))
            .collect();
        // 100.64.0.0/10 (shared address space): no VIP, backend or lab
        // address; 65,536 of them.
        subjects.extend(loaded.iter().map(|(_, b, _)| {
            let f = est.clone();
            subject(b.program(), XDP_PASS, move |i, buf| {
                buf.clone_from(&f);
                other_destination(buf, i, Ipv4Addr::new(100, 64, 0, 0), 1 << 16);
            })
        }));
        // And to one address, whose VIP filter word stays in the cache.
        let one = tcp4_frame(lab::CLIENT_V4, 40_000, Ipv4Addr::new(100, 64, 0, 1));
        subjects.extend(
            loaded
                .iter()
                .map(|(_, b, _)| subject(b.program(), XDP_PASS, fixed(one.clone()))),
        );
        let ns = measure(ifx, calls, &mut subjects)?;
        let k = loaded.len();
        Ok(loaded
            .iter()
            .enumerate()
            .map(|(j, (vips, _, reconcile))| Packets {
                vips: *vips,
                reconcile: *reconcile,
                established_ns: ns[j],
                non_vip_ns: ns[k + j],
                non_vip_one_ns: ns[2 * k + j],
            })
            .collect())
    })
}

fn print(cases: &[Case], packets: &[Packets], stopped: Option<&str>) {
    println!(
        "\nConfig parse (`xlb check`, wait4's peak RSS) and the daemon (`xlb run`, from spawn to \
         its first \"reconciled\" line, the whole config in the maps; its own time for that \
         reconcile in brackets; memory then, and {IDLE:?} later with its CPU meanwhile, in % \
         of one core). Restart: SIGTERM, then `xlb run` again on the same \
         pins and config."
    );
    println!(
        "\n| VIPs | config | xlb check | check peak RSS | start -> serving (reconcile) | VmRSS / VmHWM (RssAnon) | {IDLE:?} later: VmRSS, CPU | restart -> serving (reconcile) | restart: adopted, writes | VmRSS / VmHWM after restart |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for c in cases {
        let (s, r) = (&c.start, &c.restart);
        println!(
            "| {} | {:.1} MB | {:.2} s | {:.0} MB | {:.2} s ({:.2} s) | {:.0} / {:.0} MB ({:.0}) | {:.0} MB, {:.0}% | {:.2} s ({:.2} s) | {}, {} | {:.0} / {:.0} MB |",
            c.plan.vips,
            mb(c.config_bytes),
            c.check.as_secs_f64(),
            mb(c.check_peak),
            s.serving.as_secs_f64(),
            s.reconcile_s,
            mb(s.memory.rss),
            mb(s.memory.hwm),
            mb(s.memory.anon),
            mb(s.idle_memory.rss),
            s.idle_cpu,
            r.serving.as_secs_f64(),
            r.reconcile_s,
            r.adopted,
            r.writes,
            mb(r.memory.rss),
            mb(r.memory.hwm),
        );
    }
    println!(
        "\nKernel memory of the daemon's BPF maps (the `memlock` of each map it holds, from \
         /proc/PID/fdinfo) beside the estimate made before loading; max_backends = VIPs x \
         {BACKENDS} + 1, maglev_slots at its default (512 per VIP of max_vips)"
    );
    println!(
        "\n| VIPs | max_vips / max_backends / maglev_slots | estimate | memlock total | largest maps |"
    );
    println!("|---:|---|---:|---:|---|");
    for c in cases {
        let s = &c.plan.settings;
        let total: u64 = c.maps.iter().map(|(_, b)| b).sum();
        let largest: Vec<String> = c
            .maps
            .iter()
            .take(4)
            .map(|(n, b)| format!("{n} {:.1}", mb(*b)))
            .collect();
        println!(
            "| {} | {} / {} / {} | {:.0} MB | {:.0} MB | {} MB |",
            c.plan.vips,
            s.max_vips,
            s.max_backends,
            s.maglev_slots,
            mb(c.plan.kernel_estimate),
            mb(total),
            largest.join(", "),
        );
    }
    if let Some(one) = packets.iter().find(|p| p.vips == 1) {
        println!(
            "\nIn-process, every size loaded at once (the daemon's settings, no pins): the reconcile \
             into empty maps, and ns/packet by BPF_PROG_TEST_RUN (median; every size in every \
             round), compared with the 1-VIP balancer; non-VIP traffic to 65,536 addresses \
             (100.64.0.0/16) and to one"
        );
        println!(
            "\n| VIPs | reconcile into empty maps | established v4 ipip | vs 1 VIP | non-VIP pass, 65,536 addresses | vs 1 VIP | non-VIP pass, one address | vs 1 VIP |"
        );
        println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
        for p in packets {
            println!(
                "| {} | {:.2} s | {:.0} ns | {:.2}x | {:.0} ns | {:.2}x | {:.0} ns | {:.2}x |",
                p.vips,
                p.reconcile.as_secs_f64(),
                p.established_ns,
                p.established_ns / one.established_ns,
                p.non_vip_ns,
                p.non_vip_ns / one.non_vip_ns,
                p.non_vip_one_ns,
                p.non_vip_one_ns / one.non_vip_one_ns,
            );
        }
    }
    if let Some(why) = stopped {
        println!("\n{why}");
    }
    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
    println!();
    if let Some(c) = cases.iter().find(|c| c.plan.vips == TARGET_VIPS) {
        let (t, peak) = (c.check.as_secs_f64(), mb(c.check_peak));
        println!(
            "target: {TARGET_VIPS}-VIP config parsed in <= {PARSE_TARGET_S} s with peak <= {PARSE_PEAK_TARGET_MB} MB: {} ({t:.2} s, {peak:.0} MB)",
            verdict(t <= PARSE_TARGET_S && peak <= PARSE_PEAK_TARGET_MB)
        );
        let rss = mb(c.start.memory.rss.max(c.restart.memory.rss));
        println!(
            "target: daemon RSS at {TARGET_VIPS} VIPs x {BACKENDS} <= {RSS_TARGET_MB} MB: {} (VmRSS {rss:.0} MB once serving, the larger of start and restart; {:.0} MB {IDLE:?} later)",
            verdict(rss <= RSS_TARGET_MB),
            mb(c.start.idle_memory.rss)
        );
        println!(
            "target: reconcile of {TARGET_VIPS} VIPs into empty maps <= {RECONCILE_TARGET_S} s: {} (the daemon's {:.2} s)",
            verdict(c.start.reconcile_s <= RECONCILE_TARGET_S),
            c.start.reconcile_s
        );
    }
    if let Some(p) = packets.iter().find(|p| p.vips == TARGET_VIPS) {
        println!("  (in-process: {:.2} s)", p.reconcile.as_secs_f64());
    }
    if !cases.is_empty() {
        let wrote: Vec<String> = cases
            .iter()
            .filter(|c| c.restart.writes > 0)
            .map(|c| format!("{} at {} VIPs", c.restart.writes, c.plan.vips))
            .collect();
        println!(
            "target: an unchanged restart writes nothing: {}{}",
            verdict(wrote.is_empty()),
            if wrote.is_empty() {
                String::new()
            } else {
                format!(" ({})", wrote.join(", "))
            }
        );
    }
}
