//! The Markdown section and the SVG charts of docs/benchmarks.md, from the
//! rows of one `cargo xtask bench peers` run.
//!
//! Ratios compare a configuration with the floor (the client straight to a
//! backend) and with kube-proxy's iptables mode on the legacy back-end at
//! the same number of Services: the two references a reader asks about.

use std::{
    collections::BTreeSet,
    fmt::Write as _,
    ops::Range,
    path::{Path as FsPath, PathBuf},
    time::Duration,
};

use anyhow::Context as _;
use plotters::{
    coord::{
        Shift,
        combinators::BindKeyPoints,
        ranged1d::{DefaultFormatting, KeyPointHint, Ranged, ValueFormatter},
        types::RangedCoordf64,
    },
    prelude::{
        ChartBuilder, Circle, DrawingArea, EmptyElement, IntoDrawingArea, IntoFont, IntoLogRange,
        LineSeries, PathElement, RGBColor, Rectangle, SVGBackend, Text, WHITE,
    },
    style::{
        Color, TextStyle,
        text_anchor::{HPos, Pos, VPos},
    },
};

use super::{IptablesBackend, Path, Report, Row};

/// The charts [`charts`] writes, in that order; docs/benchmarks.md links
/// them by these names.
pub const CHARTS: [&str; 5] = [
    "peers-connect.svg",
    "peers-load.svg",
    "peers-udp.svg",
    "peers-cpu.svg",
    "peers-http.svg",
];

const LEGACY: Path = Path::Iptables(IptablesBackend::Legacy);

/// The Markdown section for docs/benchmarks.md (the caller writes the
/// `## ...` heading above it).
pub fn markdown(r: &Report) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail, hence the `let _ = writeln!`s.
    let _ = writeln!(
        out,
        "Measured on {}, Linux {}, on {}, with `{}`. Ratios divide a row's \
         value by the floor's (direct) and, for connect time, by iptables \
         (legacy)'s at the same number of Services; CPU excess is the row's \
         CPU time per million packets minus the floor's, in ms.",
        r.machine, r.kernel, r.date, r.command
    );
    if r.quick {
        let _ = writeln!(
            out,
            "\n**A smoke run (`--quick`: few samples, one number of Services), \
             not a measurement: do not quote these numbers.**"
        );
    }
    for n in services(r) {
        let at = |path: Path| {
            r.rows
                .iter()
                .find(|row| row.path == path && row.services == n)
        };
        let direct = at(Path::Direct);
        let legacy = at(LEGACY);
        let _ = writeln!(out, "\n### {}\n", services_label(n));
        out.push_str(
            "| Configuration | Rule load (s) | Connect p50 (µs) | Connect p99 (µs) \
             | Connect p50 vs direct / iptables (legacy) | HTTP req/s | HTTP vs direct \
             | HTTP p50 / p99 (ms) | UDP kpps | UDP vs direct | CPU ms/Mpkt \
             | CPU vs direct (ms/Mpkt) |\n",
        );
        out.push_str("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n");
        for row in Path::ALL.into_iter().filter_map(at) {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} / {} | {} | {} | {} / {} | {} | {} | {} | {} |",
                row.path,
                row.load.map_or_else(|| "-".to_owned(), seconds),
                micros(row.connect_us.median),
                micros(row.connect_us.p99),
                ratio(row.connect_us.median, direct.map(|d| d.connect_us.median)),
                ratio(row.connect_us.median, legacy.map(|l| l.connect_us.median)),
                thousands(row.http.requests_per_s),
                ratio(
                    row.http.requests_per_s,
                    direct.map(|d| d.http.requests_per_s)
                ),
                number(row.http.latency_ms.median),
                number(row.http.latency_ms.p99),
                number(row.udp_pps / 1e3),
                ratio(row.udp_pps, direct.map(|d| d.udp_pps)),
                number(row.cpu_ms_per_mpkt),
                excess(row.cpu_ms_per_mpkt, direct.map(|d| d.cpu_ms_per_mpkt)),
            );
        }
    }
    if !r.k8s_sync.is_empty() {
        let mut sync = r.k8s_sync.clone();
        sync.sort_by_key(|s| s.services);
        out.push_str(
            "\nxlb's Kubernetes source: time from the daemon's start until every \
             Service (3 endpoints each, from the harness API server) is in the maps.\n\n\
             | Services | Synced (s) |\n|--:|--:|\n",
        );
        for s in sync {
            let _ = writeln!(
                out,
                "| {} | {} |",
                thousands(s.services as f64),
                seconds(s.synced)
            );
        }
    }
    out
}

/// `value / reference` as "1.08x"; "-" when there is no reference to
/// divide by (row missing, zero or not a number).
fn ratio(value: f64, reference: Option<f64>) -> String {
    match reference {
        Some(reference) if reference != 0.0 && (value / reference).is_finite() => {
            format!("{:.2}x", value / reference)
        }
        _ => "-".to_owned(),
    }
}

/// `value - reference` with its sign, "+12.3"; "-" without a reference.
fn excess(value: f64, reference: Option<f64>) -> String {
    match reference {
        Some(reference) if (value - reference).is_finite() => format!("{:+.1}", value - reference),
        _ => "-".to_owned(),
    }
}

/// Microseconds: a decimal below 100, where it still says something.
fn micros(us: f64) -> String {
    if !us.is_finite() {
        "-".to_owned()
    } else if us < 100.0 {
        format!("{us:.1}")
    } else {
        format!("{us:.0}")
    }
}

/// About three significant digits, never fewer than the integer part.
fn number(v: f64) -> String {
    match v.abs() {
        a if !a.is_finite() => "-".to_owned(),
        0.0 => "0".to_owned(),
        a if a < 1.0 => format!("{v:.3}"),
        a if a < 10.0 => format!("{v:.2}"),
        a if a < 100.0 => format!("{v:.1}"),
        a if a < 1_000.0 => format!("{v:.0}"),
        _ => thousands(v),
    }
}

fn seconds(d: Duration) -> String {
    number(d.as_secs_f64())
}

/// An integer with thousands separators, "12,345".
fn thousands(v: f64) -> String {
    if !v.is_finite() {
        return "-".to_owned();
    }
    let digits = format!("{:.0}", v.abs());
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if v.round() < 0.0 {
        out.insert(0, '-');
    }
    out
}

/// "1 Service", "10,000 Services".
fn services_label(n: usize) -> String {
    format!(
        "{} Service{}",
        thousands(n as f64),
        if n == 1 { "" } else { "s" }
    )
}

/// The numbers of Services measured, smallest first.
fn services(r: &Report) -> Vec<usize> {
    r.rows
        .iter()
        .map(|row| row.services)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

const SIZE: (u32, u32) = (800, 450);
/// Right of the plot, so the legend never covers a line.
const LEGEND_WIDTH: u32 = 185;

/// The same colour for a configuration in every chart; the floor in black.
fn colour(path: Path) -> RGBColor {
    const PALETTE: [RGBColor; Path::ALL.len()] = [
        RGBColor(0, 0, 0),
        RGBColor(31, 119, 180),
        RGBColor(23, 190, 207),
        RGBColor(44, 160, 44),
        RGBColor(148, 103, 189),
        RGBColor(188, 189, 34),
        RGBColor(127, 127, 127),
        RGBColor(214, 39, 40),
        RGBColor(255, 127, 14),
        RGBColor(140, 86, 75),
    ];
    let i = Path::ALL.iter().position(|p| *p == path).unwrap_or(0);
    PALETTE[i]
}

/// SVG charts into `dir` (created if missing), named as in [`CHARTS`];
/// returns the files written.
pub fn charts(r: &Report, dir: &FsPath) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("creating the chart directory {}", dir.display()))?;
    let largest = services(r).last().copied();
    let at_largest = largest.map_or_else(String::new, |n| format!(" at {}", services_label(n)));
    let files: Vec<PathBuf> = CHARTS.iter().map(|name| dir.join(name)).collect();

    let connect = series(r, |row| Some(row.connect_us.median));
    line_chart(
        &files[0],
        "TCP connect time, median (µs, log scale)",
        "µs",
        &connect,
    )?;
    let load = series(r, |row| row.load.map(|d| d.as_secs_f64()));
    line_chart(
        &files[1],
        "Time to load the rules (s, log scale)",
        "seconds",
        &load,
    )?;
    let largest_rows: Vec<&Row> = Path::ALL
        .iter()
        .filter_map(|p| {
            r.rows
                .iter()
                .find(|row| row.path == *p && Some(row.services) == largest)
        })
        .collect();
    bar_chart(
        &files[2],
        &format!("UDP delivered{} (kpps, higher is better)", at_largest),
        &bars(&largest_rows, |row| row.udp_pps / 1e3),
        number,
    )?;
    bar_chart(
        &files[3],
        &format!(
            "CPU per million packets{} (ms, lower is better)",
            at_largest
        ),
        &bars(&largest_rows, |row| row.cpu_ms_per_mpkt),
        number,
    )?;
    bar_chart(
        &files[4],
        &format!("HTTP requests per second{} (higher is better)", at_largest),
        &bars(&largest_rows, |row| row.http.requests_per_s),
        thousands,
    )?;
    Ok(files)
}

/// One line: a configuration's values against the number of Services.
struct Series {
    path: Path,
    points: Vec<(f64, f64)>,
}

/// A series per configuration, keeping only the points a log axis can
/// show (positive and finite); configurations left without points drop out.
fn series(r: &Report, value: impl Fn(&Row) -> Option<f64>) -> Vec<Series> {
    Path::ALL
        .into_iter()
        .filter_map(|path| {
            let mut points: Vec<(f64, f64)> = r
                .rows
                .iter()
                .filter(|row| row.path == path)
                .filter_map(|row| Some((row.services as f64, value(row)?)))
                .filter(|&(n, v)| n > 0.0 && v > 0.0 && v.is_finite())
                .collect();
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            (!points.is_empty()).then_some(Series { path, points })
        })
        .collect()
}

fn bars(rows: &[&Row], value: impl Fn(&Row) -> f64) -> Vec<(Path, f64)> {
    rows.iter()
        .map(|row| (row.path, value(row)))
        .filter(|(_, v)| v.is_finite())
        .collect()
}

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;

fn no_data(area: &Area<'_>, title: &str) -> anyhow::Result<()> {
    area.titled(title, ("sans-serif", 20))?;
    area.draw(&Text::new(
        "no data",
        (i32::try_from(SIZE.0 / 2 - 30)?, i32::try_from(SIZE.1 / 2)?),
        ("sans-serif", 16),
    ))?;
    Ok(())
}

/// Values against Services, y on a log scale; x too when there are
/// several numbers of Services (a single one gets a plain axis around it).
/// Ticks are placed by hand: plotters' own log ticks start at the first
/// power of ten inside the range, leaving e.g. 20 to 99 µs unlabelled.
fn line_chart(file: &FsPath, title: &str, y_desc: &str, series: &[Series]) -> anyhow::Result<()> {
    let root = SVGBackend::new(file, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let xs: Vec<f64> = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0 as u64))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .map(|n| n as f64)
        .collect();
    let ys = series.iter().flat_map(|s| s.points.iter().map(|p| p.1));
    let (y_min, y_max) = ys.fold((f64::INFINITY, 0.0_f64), |(lo, hi), y| {
        (lo.min(y), hi.max(y))
    });
    let (Some(&x_min), Some(&x_max)) = (xs.first(), xs.last()) else {
        no_data(&root, title)?;
        root.present()
            .with_context(|| format!("writing {}", file.display()))?;
        return Ok(());
    };
    // Room above and below the extreme points so markers are not cut.
    let (y_lo, y_hi) = (y_min / 1.6, y_max * 1.6);
    let y = (y_lo..y_hi)
        .log_scale()
        .with_key_points(log_ticks(y_lo, y_hi));
    if xs.len() > 1 {
        let x = ((x_min / 1.8)..(x_max * 1.8))
            .log_scale()
            .with_key_points(xs.clone());
        draw_lines(&root, title, "Services (log scale)", y_desc, x, y, series)?;
    } else {
        let step = (x_min / 2.0).max(1.0);
        let x = OneTick {
            range: (x_min - step)..(x_max + step),
            at: x_min,
        };
        draw_lines(&root, title, "Services", y_desc, x, y, series)?;
    }
    root.present()
        .with_context(|| format!("writing {}", file.display()))?;
    Ok(())
}

/// A plain axis whose one tick is the one number of Services measured
/// (plotters' `with_key_points` on a linear f64 axis loses the label
/// formatter the mesh needs).
#[derive(Clone)]
struct OneTick {
    range: Range<f64>,
    at: f64,
}

impl Ranged for OneTick {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        RangedCoordf64::from(self.range.clone()).map(value, limit)
    }

    fn key_points<Hint: KeyPointHint>(&self, _hint: Hint) -> Vec<f64> {
        vec![self.at]
    }

    fn range(&self) -> Range<f64> {
        self.range.clone()
    }
}

fn draw_lines<X, Y>(
    root: &Area<'_>,
    title: &str,
    x_desc: &str,
    y_desc: &str,
    x: X,
    y: Y,
    series: &[Series],
) -> anyhow::Result<()>
where
    X: Ranged<ValueType = f64> + ValueFormatter<f64>,
    Y: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    let root = root.titled(title, ("sans-serif", 20))?;
    let (plot, legend) = root.split_horizontally(SIZE.0 - LEGEND_WIDTH);
    let mut chart = ChartBuilder::on(&plot)
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(x, y)?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .max_light_lines(0)
        .x_label_formatter(&|v| thousands(*v))
        .y_label_formatter(&|v| tick_label(*v))
        .draw()?;
    for s in series {
        let c = colour(s.path);
        chart.draw_series(LineSeries::new(s.points.iter().copied(), c.stroke_width(2)))?;
        chart.draw_series(s.points.iter().map(|&p| Circle::new(p, 4, c.filled())))?;
    }
    let font = ("sans-serif", 14).into_font();
    for (i, s) in series.iter().enumerate() {
        let y = 40 + 24 * i32::try_from(i)?;
        let c = colour(s.path);
        legend.draw(&PathElement::new([(4, y), (32, y)], c.stroke_width(2)))?;
        legend.draw(&Circle::new((18, y), 4, c.filled()))?;
        legend.draw(&Text::new(
            s.path.to_string(),
            (40, y),
            TextStyle::from(font.clone()).pos(Pos::new(HPos::Left, VPos::Center)),
        ))?;
    }
    Ok(())
}

/// 1, 2 and 5 times the powers of ten within `lo..=hi`; powers of ten
/// alone when that would crowd the axis (more than three decades).
fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let (first, last) = (lo.log10().floor() as i32, hi.log10().ceil() as i32);
    let mantissas: &[f64] = if last - first > 3 {
        &[1.0]
    } else {
        &[1.0, 2.0, 5.0]
    };
    (first..=last)
        .flat_map(|e| mantissas.iter().map(move |m| power_of_ten(*m, e)))
        .filter(|v| (lo..=hi).contains(v))
        .collect()
}

/// `m` times ten to the `e`, dividing for negative `e` so that 5e-3 prints
/// as 0.005 and not 0.005000000000000001.
fn power_of_ten(m: f64, e: i32) -> f64 {
    if e < 0 {
        m / 10f64.powi(-e)
    } else {
        m * 10f64.powi(e)
    }
}

fn tick_label(v: f64) -> String {
    if v.abs() >= 1_000.0 {
        thousands(v)
    } else {
        format!("{v}")
    }
}

/// Horizontal bars, one per configuration, the first on top, each with
/// its value at its end.
fn bar_chart(
    file: &FsPath,
    title: &str,
    bars: &[(Path, f64)],
    label: fn(f64) -> String,
) -> anyhow::Result<()> {
    let root = SVGBackend::new(file, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    if bars.is_empty() {
        no_data(&root, title)?;
    } else {
        let n = bars.len() as f64;
        let max = bars.iter().map(|b| b.1).fold(0.0_f64, f64::max);
        // Room at the right for the value written past the longest bar.
        let x_max = if max > 0.0 { max * 1.18 } else { 1.0 };
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(30)
            .y_label_area_size(170)
            .build_cartesian_2d(0.0..x_max, 0.0..n)?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .max_light_lines(0)
            .y_labels(0)
            .x_labels(6)
            .x_label_formatter(&|v| label(*v))
            .draw()?;
        let font = ("sans-serif", 14).into_font();
        let left = TextStyle::from(font.clone()).pos(Pos::new(HPos::Left, VPos::Center));
        let right = TextStyle::from(font).pos(Pos::new(HPos::Right, VPos::Center));
        for (i, &(path, v)) in bars.iter().enumerate() {
            let top = n - i as f64;
            let centre = top - 0.5;
            chart.draw_series([Rectangle::new(
                [(0.0, top - 0.2), (v.max(0.0), top - 0.8)],
                colour(path).filled(),
            )])?;
            // The name sits in the label area left of the axis, the value
            // past the bar's end.
            chart.draw_series([EmptyElement::at((0.0, centre))
                + Text::new(path.to_string(), (-8, 0), right.clone())])?;
            chart
                .draw_series([EmptyElement::at((v.max(0.0), centre))
                    + Text::new(label(v), (6, 0), left.clone())])?;
        }
    }
    root.present()
        .with_context(|| format!("writing {}", file.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peers::{Encap, Http, K8sSync, Quantiles, XdpMode};

    const NATIVE_IPIP: Path = Path::Xlb {
        mode: XdpMode::Native,
        encap: Encap::Ipip,
    };

    /// Made-up numbers, distinct per path and N, with a few that a log
    /// axis cannot show: a zero load time and a zero connect time.
    fn row(i: usize, path: Path, services: usize) -> Row {
        let k = 1.0 + i as f64 * 0.1;
        let n = services as f64;
        let kube = path.replies_via_balancer();
        Row {
            path,
            services,
            load: match path {
                Path::Direct => None,
                _ if services == 1 && i == 3 => Some(Duration::ZERO),
                _ => Some(Duration::from_secs_f64(0.002 * k * n.sqrt())),
            },
            connect_us: Quantiles {
                median: if kube { 30.0 * k + n * 0.05 } else { 30.0 * k },
                p99: 90.0 * k,
            },
            http: Http {
                requests_per_s: 40_000.0 / k,
                latency_ms: Quantiles {
                    median: 0.4 * k,
                    p99: 2.5 * k,
                },
            },
            udp_pps: 900_000.0 / k,
            cpu_ms_per_mpkt: 1_500.0 * k,
        }
    }

    fn report(paths: &[Path], services: &[usize], quick: bool) -> Report {
        Report {
            machine: "test CPU x2, 24 GiB".to_owned(),
            kernel: "6.1.0-test".to_owned(),
            date: "2025-01-02".to_owned(),
            command: "cargo xtask bench peers".to_owned(),
            quick,
            rows: services
                .iter()
                .flat_map(|&n| paths.iter().enumerate().map(move |(i, &p)| row(i, p, n)))
                .collect(),
            k8s_sync: vec![
                K8sSync {
                    services: 10_000,
                    synced: Duration::from_millis(4_200),
                },
                K8sSync {
                    services: 1,
                    synced: Duration::from_millis(310),
                },
            ],
        }
    }

    fn full() -> Report {
        report(&Path::ALL, &[1, 1_000, 10_000], false)
    }

    /// The table row of `path` under the heading for `n` Services.
    fn table_row(md: &str, n: &str, path: Path) -> Vec<String> {
        let section = md
            .split("\n### ")
            .find(|s| s.starts_with(&format!("{n} Service")))
            .unwrap_or_else(|| panic!("no section for {n} Services in:\n{md}"));
        let line = section
            .lines()
            .find(|l| l.starts_with(&format!("| {path} |")))
            .unwrap_or_else(|| panic!("no row for {path} at {n} in:\n{section}"));
        line.split('|').map(|c| c.trim().to_owned()).collect()
    }

    #[test]
    fn ratio_divides_or_says_dash() {
        assert_eq!(ratio(108.0, Some(100.0)), "1.08x");
        assert_eq!(ratio(5.0, Some(100.0)), "0.05x");
        assert_eq!(ratio(1.0, Some(1.0)), "1.00x");
        assert_eq!(ratio(1.0, None), "-");
        assert_eq!(ratio(1.0, Some(0.0)), "-");
        assert_eq!(ratio(f64::NAN, Some(1.0)), "-");
    }

    #[test]
    fn numbers_have_sensible_precision() {
        assert_eq!(micros(42.345), "42.3");
        assert_eq!(micros(1234.5), "1234");
        assert_eq!(thousands(1_234_567.4), "1,234,567");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(-1_000.0), "-1,000");
        assert_eq!(excess(1_512.34, Some(1_500.0)), "+12.3");
        assert_eq!(excess(1_400.0, Some(1_500.0)), "-100.0");
        assert_eq!(excess(1.0, None), "-");
        assert_eq!(seconds(Duration::from_millis(12)), "0.012");
        assert_eq!(number(4.2), "4.20");
        assert_eq!(number(0.0), "0");
        assert_eq!(number(2_550.0), "2,550");
        assert_eq!(log_ticks(18.75, 881.0), [20.0, 50.0, 100.0, 200.0, 500.0]);
        assert_eq!(log_ticks(0.5, 2e5), [1.0, 10.0, 100.0, 1e3, 1e4, 1e5]);
        assert_eq!(tick_label(power_of_ten(5.0, -3)), "0.005");
        assert_eq!(tick_label(power_of_ten(1.0, 4)), "10,000");
    }

    #[test]
    fn markdown_has_every_path_and_the_ratios() {
        let r = full();
        let md = markdown(&r);
        assert!(!md.starts_with('#'), "the caller owns the heading:\n{md}");
        assert!(md.contains("6.1.0-test") && md.contains("2025-01-02"));
        assert!(md.contains("`cargo xtask bench peers`"));
        assert!(!md.contains("smoke run"));
        for path in Path::ALL {
            assert!(md.contains(&format!("| {path} |")), "{path} missing:\n{md}");
        }
        for heading in [
            "### 1 Service\n",
            "### 1,000 Services",
            "### 10,000 Services",
        ] {
            assert!(md.contains(heading), "{heading} missing:\n{md}");
        }

        let find = |p: Path, n: usize| r.rows.iter().find(|x| x.path == p && x.services == n);
        let cells = table_row(&md, "10,000", LEGACY);
        let legacy = find(LEGACY, 10_000).expect("legacy row");
        let direct = find(Path::Direct, 10_000).expect("direct row");
        let want = format!(
            "{:.2}x / 1.00x",
            legacy.connect_us.median / direct.connect_us.median
        );
        assert_eq!(cells[5], want);
        let xlb = find(NATIVE_IPIP, 1_000).expect("xlb row");
        let cells = table_row(&md, "1,000", NATIVE_IPIP);
        let (d, l) = (
            find(Path::Direct, 1_000).expect("direct row"),
            find(LEGACY, 1_000).expect("legacy row"),
        );
        assert_eq!(
            cells[5],
            format!(
                "{:.2}x / {:.2}x",
                xlb.connect_us.median / d.connect_us.median,
                xlb.connect_us.median / l.connect_us.median
            )
        );
        assert_eq!(
            cells[7],
            format!("{:.2}x", xlb.http.requests_per_s / d.http.requests_per_s)
        );
        assert_eq!(
            cells[12],
            format!("{:+.1}", xlb.cpu_ms_per_mpkt - d.cpu_ms_per_mpkt)
        );
        // No load time for the floor.
        assert_eq!(table_row(&md, "1", Path::Direct)[2], "-");

        // Sorted by Services.
        let sync = md.find("| 1 | 0.310 |").expect("1 Service sync");
        let sync_10k = md.find("| 10,000 | 4.20 |").expect("10,000 Services sync");
        assert!(sync < sync_10k, "{md}");
    }

    #[test]
    fn markdown_without_references_says_dash() {
        let paths = [NATIVE_IPIP, Path::Nftables];
        let mut r = report(&paths, &[1_000], true);
        r.k8s_sync.clear();
        let md = markdown(&r);
        assert!(md.contains("**A smoke run"), "{md}");
        assert!(!md.contains("Kubernetes"), "{md}");
        let cells = table_row(&md, "1,000", Path::Nftables);
        assert_eq!(cells[5], "- / -");
        assert_eq!(cells[7], "-");
        assert_eq!(cells[10], "-");
        assert_eq!(cells[12], "-");
        assert!(!md.contains("direct (floor) |"), "{md}");
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("xlb-peers-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    /// Every chart is a whole SVG without NaN or infinity, naming each
    /// path it should.
    fn check_charts(r: &Report, dir: &FsPath, paths: &[Path]) {
        let files = charts(r, dir).expect("charts");
        let names: Vec<String> = files
            .iter()
            .map(|f| f.file_name().expect("name").to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, CHARTS);
        for file in &files {
            let svg = std::fs::read_to_string(file).expect("read the chart");
            let head = svg.trim_start();
            assert!(
                head.starts_with("<svg") || head.starts_with("<?xml"),
                "{}",
                file.display()
            );
            assert!(svg.trim_end().ends_with("</svg>"), "{}", file.display());
            for bad in ["NaN", "inf"] {
                assert!(!svg.contains(bad), "{bad} in {}", file.display());
            }
            for path in paths {
                // The floor has no load time, so no line in that chart.
                if *path == Path::Direct && file.ends_with("peers-load.svg") {
                    assert!(!svg.contains(&path.to_string()));
                    continue;
                }
                assert!(
                    svg.contains(&path.to_string()),
                    "{path} missing from {}",
                    file.display()
                );
            }
        }
    }

    #[test]
    fn charts_are_whole_svgs_naming_every_path() {
        let dir = temp_dir("full");
        check_charts(&full(), &dir, &Path::ALL);
        std::fs::remove_dir_all(&dir).expect("remove the temp dir");
    }

    #[test]
    fn charts_with_one_number_of_services_and_some_paths() {
        let paths = [Path::Direct, NATIVE_IPIP, LEGACY];
        let dir = temp_dir("one-n");
        check_charts(&report(&paths, &[1_000], true), &dir, &paths);
        std::fs::remove_dir_all(&dir).expect("remove the temp dir");
    }

    #[test]
    fn charts_without_rows_still_write_every_file() {
        let mut r = full();
        r.rows.clear();
        let dir = temp_dir("empty");
        check_charts(&r, &dir, &[]);
        std::fs::remove_dir_all(&dir).expect("remove the temp dir");
    }

    /// `XLB_PEERS_CHARTS=dir cargo test ... render_for_a_look -- --ignored`
    /// keeps the synthetic charts to look at.
    #[test]
    #[ignore = "writes into XLB_PEERS_CHARTS for a person to look at"]
    fn render_for_a_look() {
        let dir = std::env::var_os("XLB_PEERS_CHARTS").expect("XLB_PEERS_CHARTS");
        let dir = PathBuf::from(dir);
        charts(&full(), &dir.join("full")).expect("charts");
        let paths = [Path::Direct, NATIVE_IPIP, LEGACY];
        charts(&report(&paths, &[1_000], true), &dir.join("one-n")).expect("charts");
        let mut empty = full();
        empty.rows.clear();
        charts(&empty, &dir.join("empty")).expect("charts");
        std::fs::write(dir.join("full.md"), markdown(&full())).expect("markdown");
    }
}
