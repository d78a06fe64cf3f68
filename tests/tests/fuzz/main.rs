//! Seeded fuzzing of the balancer: two million frames (random bytes, valid
//! frames of every kind the parser knows, and mutations of them) pushed
//! through the real program with BPF_PROG_TEST_RUN, each judged by an
//! oracle of the data-plane contract written here (`oracle`, `model`),
//! independent of the program's parser, hash and Maglev code.
//!
//! What is checked for every frame: never ABORTED; PASS leaves the frame
//! untouched; TX/REDIRECT only for a well-formed packet to a VIP, with the
//! exact encapsulation, the backend the model's Maglev and hash pick, and
//! the checksums; DROP where the contract drops; a flow always goes to the
//! same backend, across flow-table flushes too. ARP requests and neighbour
//! solicitations for the lab's owned addresses (`neighbour`): answered
//! byte for byte where the contract answers, else passed untouched, never
//! dropped.
//!
//! `XLB_SEED` sets the seed (printed at the start; random otherwise),
//! `XLB_FUZZ_FRAMES` the number of random frames, `XLB_FUZZ_INDEX` replays
//! one frame of a seeded run and prints it. Violations are reported by
//! class with a count and an example; every class's first examples go to a
//! file under the temporary directory, as hex.

mod check;
mod generate;
mod model;
mod neighbour;
mod neighbour_gen;
mod oracle;
mod rng;

use std::{
    collections::{BTreeMap, HashMap},
    fmt::Write as _,
    time::{Duration, Instant},
};

use aya::programs::{TestRun as _, TestRunOptions, Xdp};
use lb_userspace::xdp::{Balancer, Settings};
use xlb_tests::{
    lab::{self, LB0_MAC, LB1_MAC, Lab},
    netns::privileged,
};

use crate::{
    check::{action_name, check},
    model::{MAGLEV_SIZE, Model, Tuple},
    oracle::{Expect, judge},
};

/// Random frames per run. The rate measured on a loaded 2-core VM is about
/// 120,000 frames/s (debug build, one BPF_PROG_TEST_RUN per frame), so this
/// takes 15-40 s.
const DEFAULT_FRAMES: u64 = 2_000_000;
/// The flow table is emptied this often, so that flows are picked both
/// from the table and afresh by Maglev, and must agree.
const FLUSH_EVERY: u64 = 200_000;
/// Examples kept per violation class (in memory and in the file).
const EXAMPLES: usize = 8;

#[test]
fn fuzz_balancer() {
    if !privileged("fuzz_balancer") {
        return;
    }
    let frames = env_u64("XLB_FUZZ_FRAMES").unwrap_or(DEFAULT_FRAMES);
    let seed = env_u64("XLB_SEED").unwrap_or_else(fresh_seed);
    let only = env_u64("XLB_FUZZ_INDEX");
    eprintln!(
        "fuzz: seed {seed:#018x}, {frames} random frames (replay: XLB_SEED={seed:#x}; one frame: XLB_FUZZ_INDEX=<index>)"
    );
    let model = Model::new();
    let lab = Lab::new();
    lab.ns.run(|| {
        let mut b = Balancer::load(&Settings {
            maglev_size: MAGLEV_SIZE,
            max_vips: 16,
            max_backends: 64,
            flow_table_size: 65_536,
            ..Settings::default()
        })
        .expect("balancer loads through the verifier");
        lab::program(&mut b, &model.vips);
        fill_ifaces(&mut b);
        // The program answers ARP and solicitations for these; held (with
        // its hour-long heartbeat) until the run ends.
        let _claims = lab::claim_owned(&mut b);
        let mut fuzz = Fuzz::new(&model, lab::ifindex("lb0"), seed);
        if let Some(index) = only {
            fuzz.replay(b.program(), index);
            return;
        }
        let start = Instant::now();
        for index in generate::sweep(seed, &model) {
            fuzz.one(b.program(), index);
        }
        let sweep = fuzz.report.frames;
        let mut next = 0;
        while next < frames {
            let end = (next + FLUSH_EVERY).min(frames);
            let prog = b.program();
            for index in next..end {
                fuzz.one(prog, index);
            }
            flush_flows(&mut b);
            next = end;
        }
        fuzz.finish(start.elapsed(), sweep);
    });
}

/// The run's state: the model, the reusable output buffer, what each flow
/// was sent to, the outer IPv4 IDs seen, and the report.
struct Fuzz<'m> {
    model: &'m Model,
    ifindex: u32,
    seed: u64,
    out: Vec<u8>,
    /// Flow -> the output's backend-identifying bytes (outer destination
    /// address, or destination MAC for l2).
    sticky: HashMap<Tuple, [u8; 16]>,
    /// Outer IPv4 IDs of DF-clear encapsulations: (count, first, varied).
    ids: (u64, u16, bool),
    report: Report,
}

impl<'m> Fuzz<'m> {
    fn new(model: &'m Model, ifindex: u32, seed: u64) -> Self {
        Self {
            model,
            ifindex,
            seed,
            out: vec![0; 4096],
            sticky: HashMap::new(),
            ids: (0, 0, false),
            report: Report::default(),
        }
    }

    /// Runs frame `index` through the program and judges it.
    fn one(&mut self, prog: &Xdp, index: u64) {
        let frame = generate::by_index(self.seed, index, self.model);
        let want = judge(self.model, &frame);
        let (action, len) = run(prog, self.ifindex, &frame, &mut self.out);
        let out = &self.out[..len];
        self.report.frames += 1;
        *self.report.expected.entry(want.reason()).or_default() += 1;
        let verdict = check(&want, &frame, action, out);
        if let (Expect::Forward(fw), Ok(())) = (&want, &verdict) {
            let v4_outer = fw.outer_v4_df;
            let sent_to = sent_to(out, fw.head.len());
            if let Some(before) = self.sticky.insert(fw.flow, sent_to)
                && before != sent_to
            {
                self.report.add(
                    format!("{}: flow moved to another backend", fw.reason),
                    index,
                    &frame,
                    action,
                    out,
                );
            }
            if v4_outer == Some(false) {
                let id = u16::from_be_bytes([out[18], out[19]]);
                if self.ids.0 == 0 {
                    self.ids.1 = id;
                } else if id != self.ids.1 {
                    self.ids.2 = true;
                }
                self.ids.0 += 1;
            }
        }
        if let Err(class) = verdict {
            self.report.add(class, index, &frame, action, out);
        }
        // The userspace answerer (the IPVS data plane's) under the same
        // oracle.
        if let Some(want) = neighbour::judge(&frame)
            && let Err(class) = neighbour::check_userspace(&want, &frame)
        {
            self.report.add(class, index, &frame, action, out);
        }
    }

    /// Prints one frame of the run, what the oracle wants and what the
    /// program did.
    fn replay(&mut self, prog: &Xdp, index: u64) {
        let frame = generate::by_index(self.seed, index, self.model);
        let want = judge(self.model, &frame);
        let (action, len) = run(prog, self.ifindex, &frame, &mut self.out);
        let out = &self.out[..len];
        eprintln!("frame #{index}: {}", hex(&frame));
        eprintln!("oracle: {want:?}");
        eprintln!("program: {} {}", action_name(action), hex(out));
        match check(&want, &frame, action, out) {
            Ok(()) => eprintln!("verdict: as the contract says"),
            Err(class) => panic!("frame #{index} violates the contract: {class}"),
        }
    }

    fn finish(self, took: Duration, sweep: u64) {
        let r = &self.report;
        let rate = r.frames as f64 / took.as_secs_f64();
        eprintln!(
            "fuzz: {} frames ({sweep} of the truncation/length sweep) in {:.1} s, {rate:.0} frames/s; seed {:#x}",
            r.frames,
            took.as_secs_f64(),
            self.seed
        );
        let (arp, arp_tx) = tally(&r.expected, "ARP ");
        let (ns, ns_tx) = tally(&r.expected, "NS ");
        eprintln!(
            "fuzz: {arp} ARP frames ({arp_tx} to answer), {ns} neighbour solicitations ({ns_tx} to answer)"
        );
        eprintln!("fuzz: what the oracle expected, by deciding rule:");
        for (reason, n) in &r.expected {
            eprintln!("  {n:>9}  {reason}");
        }
        let forwarded: u64 = r
            .expected
            .iter()
            .filter(|(k, _)| k.starts_with("forward") || k.starts_with("steer"))
            .map(|(_, n)| n)
            .sum();
        assert!(
            r.frames < 10_000 || forwarded * 10 >= r.frames,
            "the generator is broken: only {forwarded} of {} frames were forwardable",
            r.frames
        );
        let mut report = self.report;
        let (n, first, varied) = self.ids;
        if n >= 2 && !varied {
            report.add(
                format!("M2 outer ID {first} in all {n} DF-clear encapsulations"),
                u64::MAX,
                &[],
                0,
                &[],
            );
        }
        report.fail_if_any(self.seed);
    }
}

/// Frames whose deciding rule starts with `prefix`, and how many of them
/// were to be answered.
fn tally(expected: &BTreeMap<&'static str, u64>, prefix: &str) -> (u64, u64) {
    expected.iter().filter(|(k, _)| k.starts_with(prefix)).fold(
        (0, 0),
        |(all, answered), (k, n)| {
            let to_answer = if k.contains("answered") { *n } else { 0 };
            (all + n, answered + to_answer)
        },
    )
}

/// Bytes of the output that name the backend it went to.
fn sent_to(out: &[u8], head: usize) -> [u8; 16] {
    let mut id = [0u8; 16];
    match head {
        34 => id[..4].copy_from_slice(&out[30..34]),
        54 => id.copy_from_slice(&out[38..54]),
        _ => id[..6].copy_from_slice(&out[..6]),
    }
    id
}

/// One BPF_PROG_TEST_RUN on `frame`: the action and the output's length.
fn run(prog: &Xdp, ifindex: u32, frame: &[u8], out: &mut [u8]) -> (u32, usize) {
    let ctx = lab::xdp_md(ifindex, frame.len());
    let r = prog
        .test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(out),
            ctx_in: Some(&ctx),
            ..TestRunOptions::new()
        })
        .unwrap_or_else(|e| panic!("BPF_PROG_TEST_RUN on {}: {e}", hex(frame)));
    (r.return_value, r.data_size_out as usize)
}

/// Tells the program lb0's and lb1's MACs (contract rule E1), when it has
/// the XLB_IFACES map (ifindex -> MAC and padding).
fn fill_ifaces(b: &mut Balancer) {
    let Some(map) = b.ebpf.map_mut("XLB_IFACES") else {
        // Absent (a program older than rule E1), or owned by the loader's
        // maps and then filled by `lab::program`.
        eprintln!("fuzz: XLB_IFACES is not among the object's unclaimed maps; not filled here");
        return;
    };
    for (dev, mac) in [("lb0", LB0_MAC), ("lb1", LB1_MAC)] {
        let i = lab::ifindex(dev);
        let done =
            put_mac::<8>(map, i, mac) || put_mac::<12>(map, i, mac) || put_mac::<16>(map, i, mac);
        assert!(
            done,
            "XLB_IFACES: cannot store {dev}'s MAC (unexpected value size)"
        );
    }
}

fn put_mac<const N: usize>(map: &mut aya::maps::Map, ifindex: u32, mac: [u8; 6]) -> bool {
    let Ok(mut m) = aya::maps::HashMap::<_, u32, [u8; N]>::try_from(map) else {
        return false;
    };
    let mut v = [0u8; N];
    v[..6].copy_from_slice(&mac);
    m.insert(ifindex, v, 0).is_ok()
}

fn flush_flows(b: &mut Balancer) {
    let keys: Vec<_> = b.maps.flows.keys().filter_map(Result::ok).collect();
    for k in keys {
        let _ = b.maps.flows.remove(&k);
    }
}

#[derive(Default)]
struct Report {
    frames: u64,
    /// Frames by the rule that decided the oracle's expectation.
    expected: BTreeMap<&'static str, u64>,
    violations: BTreeMap<String, Class>,
}

#[derive(Default)]
struct Class {
    count: u64,
    examples: Vec<Example>,
}

struct Example {
    index: u64,
    input: Vec<u8>,
    action: u32,
    output: Vec<u8>,
}

impl Report {
    fn add(&mut self, class: String, index: u64, input: &[u8], action: u32, output: &[u8]) {
        let c = self.violations.entry(class).or_default();
        c.count += 1;
        if c.examples.len() < EXAMPLES {
            c.examples.push(Example {
                index,
                input: input.to_vec(),
                action,
                output: output.to_vec(),
            });
        }
    }

    fn fail_if_any(self, seed: u64) {
        if self.violations.is_empty() {
            eprintln!("fuzz: no violations");
            return;
        }
        let path = std::env::temp_dir().join(format!("xlb-fuzz-{seed:016x}.txt"));
        let mut file = String::new();
        let mut msg = String::new();
        let total: u64 = self.violations.values().map(|c| c.count).sum();
        for (class, c) in &self.violations {
            let e = &c.examples[0];
            let _ = writeln!(msg, "{:>9}  {class}", c.count);
            let _ = writeln!(
                msg,
                "           e.g. frame #{}: {}",
                e.index,
                short_hex(&e.input)
            );
            let _ = writeln!(file, "## {class} ({} frames)", c.count);
            for e in &c.examples {
                let _ = writeln!(
                    file,
                    "seed {seed:#x} index {}\n  in  {}\n  {} {}",
                    e.index,
                    hex(&e.input),
                    action_name(e.action),
                    hex(&e.output)
                );
            }
        }
        let saved = match std::fs::write(&path, file) {
            Ok(()) => format!("examples saved to {}", path.display()),
            Err(e) => format!("could not save examples to {}: {e}", path.display()),
        };
        panic!(
            "{total} of {} frames broke the contract, in {} classes (seed {seed:#x}; {saved}; replay one with XLB_SEED={seed:#x} XLB_FUZZ_INDEX=<index>):\n{msg}",
            self.frames,
            self.violations.len()
        );
    }
}

fn hex(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        let _ = write!(s, "{x:02x}");
    }
    s
}

fn short_hex(b: &[u8]) -> String {
    if b.len() <= 160 {
        hex(b)
    } else {
        format!("{}... ({} bytes)", hex(&b[..160]), b.len())
    }
}

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    let parsed = match v.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16),
        None => v.parse(),
    };
    Some(parsed.unwrap_or_else(|e| panic!("{name}={v}: not a number ({e})")))
}

fn fresh_seed() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos() as u64;
    rng::Rng::new(t ^ u64::from(std::process::id())).next()
}
