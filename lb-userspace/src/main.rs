//! `xlb`: the load balancer daemon and its command line.

use anyhow::Result;
use clap::Parser;

#[derive(Parser)]
#[command(name = "xlb", version, about = "eBPF/XDP L4 load balancer")]
enum Cli {
    /// Check that the XDP balancer loads through this kernel's verifier.
    Verify,
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse() {
        Cli::Verify => {
            let b = lb_userspace::xdp::Balancer::load(&lb_userspace::xdp::Settings::default())?;
            println!(
                "xlb balancer loaded: program {:?}",
                b.program().info().ok().map(|i| i.id())
            );
        }
    }
    Ok(())
}
