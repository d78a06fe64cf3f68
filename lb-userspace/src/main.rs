//! `xlb`: the load balancer daemon and its command line.

use std::net::IpAddr;

use anyhow::{Context as _, Result, bail};
use aya::programs::XdpMode;
use clap::{Parser, ValueEnum};
use lb_userspace::xdp::{Balancer, Decapsulator, Settings};

#[derive(Parser)]
#[command(name = "xlb", version, about = "eBPF/XDP L4 load balancer")]
enum Cli {
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
        #[arg(long, value_enum, default_value_t = Mode::Native)]
        xdp_mode: Mode,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Mode {
    Native,
    Generic,
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // The whole cause chain on one line; no backtrace for operators.
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli {
        Cli::Verify => {
            let b = Balancer::load(&Settings::default())?;
            println!(
                "xlb balancer loaded: program {:?}",
                b.program().info().ok().map(|i| i.id())
            );
        }
        Cli::Decap {
            ifaces,
            vips,
            xdp_mode,
        } => decap(&ifaces, &vips, xdp_mode)?,
    }
    Ok(())
}

fn decap(ifaces: &[String], vips: &[IpAddr], mode: Mode) -> Result<()> {
    let mut d = Decapsulator::load().context("loading the decapsulator")?;
    for vip in vips {
        d.add_vip(*vip)
            .with_context(|| format!("adding VIP {vip}"))?;
    }
    let prog = d.program_mut();
    for iface in ifaces {
        if std::fs::metadata(format!("/sys/class/net/{iface}")).is_err() {
            bail!("interface {iface} does not exist (check --iface)");
        }
        match mode {
            Mode::Native => {
                if let Err(e) = prog.attach(iface, XdpMode::Driver) {
                    tracing::warn!(%iface, "native XDP refused ({e}); using generic mode");
                    prog.attach(iface, XdpMode::Skb)
                        .with_context(|| format!("attaching to {iface} in generic mode"))?;
                }
            }
            Mode::Generic => {
                prog.attach(iface, XdpMode::Skb)
                    .with_context(|| format!("attaching to {iface} in generic mode"))?;
            }
        }
        tracing::info!(%iface, ?vips, "decapsulating");
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
