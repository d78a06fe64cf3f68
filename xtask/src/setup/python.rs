//! Python tools from PyPI that the tests run: kubernetes-validate, which
//! checks deploy/'s manifests against the Kubernetes API's schemas
//! (tests/tests/deploy.rs). Installed like virtme-ng, with python3's pip.

use anyhow::{Result, ensure};

use crate::cmd::Cmd;

/// `(distribution, version)`, pinned so that every machine validates
/// against the same schemas. kubernetes-validate 1.37.0 carries those of
/// Kubernetes 1.25 to 1.37; the tests take 1.33, the API that
/// k8s-openapi's `v1_33` feature (the daemon's) describes.
const TOOLS: &[(&str, &str)] = &[("kubernetes-validate", "1.37.0")];

pub(super) fn ensure() -> Result<()> {
    for &(name, version) in TOOLS {
        if installed(name).as_deref() == Some(version) {
            continue;
        }
        eprintln!("installing {name} {version} (it validates the Kubernetes manifests in deploy/)");
        Cmd::new("python3")
            .args(["-m", "pip", "install", "--quiet"])
            .arg(format!("{name}=={version}"))
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
