//! Python tools from PyPI that the tests run: kubernetes-validate, which
//! checks deploy/'s manifests against the Kubernetes API's schemas
//! (tests/tests/deploy.rs), and moto's server, the EC2 API the `aws`
//! announce mode is tested against (tests/tests/aws.rs, which runs
//! `moto_server`). Installed like virtme-ng, with python3's pip.

use anyhow::{Result, ensure};

use crate::cmd::Cmd;

/// `(distribution, extras, version, what for)`, pinned so that every
/// machine tests against the same thing. kubernetes-validate 1.37.0
/// carries the schemas of Kubernetes 1.25 to 1.37; the tests take 1.33,
/// the API that k8s-openapi's `v1_33` feature (the daemon's) describes.
/// moto's EC2 behaviour that the tests rely on (docs/testing.md) was
/// verified on 5.2.1 and 5.2.5; `server` brings Flask for `moto_server`.
const TOOLS: &[(&str, &str, &str, &str)] = &[
    (
        "kubernetes-validate",
        "",
        "1.37.0",
        "it validates the Kubernetes manifests in deploy/",
    ),
    (
        "moto",
        "[server]",
        "5.2.1",
        "its moto_server is the EC2 API the aws announce tests run against",
    ),
];

pub(super) fn ensure() -> Result<()> {
    for &(name, extras, version, why) in TOOLS {
        // The extras' own packages count too: moto without Flask has no server.
        let extras_there = extras.is_empty() || installed("flask").is_some();
        if installed(name).as_deref() == Some(version) && extras_there {
            continue;
        }
        eprintln!("installing {name}{extras} {version} ({why})");
        Cmd::new("python3")
            .args(["-m", "pip", "install", "--quiet"])
            .arg(format!("{name}{extras}=={version}"))
            .run()?;
        ensure!(
            installed(name).as_deref() == Some(version),
            "pip installed {name}=={version} but python3 does not see it; \
             is pip the one of the python3 on PATH?"
        );
    }
    Ok(())
}

/// The version of `distribution` that python3 would import, if any.
fn installed(distribution: &str) -> Option<String> {
    Cmd::new("python3")
        .args([
            "-c",
            "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))",
            distribution,
        ])
        .probe()
        .ok()
        .flatten()
        .map(|v| v.trim().to_owned())
}
