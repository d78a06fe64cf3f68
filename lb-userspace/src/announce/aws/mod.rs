//! The `aws` announce mode: each VIP is a secondary private IP of the
//! leader's ENI, with an Elastic IP associated to it; the leader moves
//! both to itself, confirms the move, and repairs drift (see docs/aws.md).
//! The task is `daemon::aws_announcer`; these are its parts.
//!
//! - [`imds`]: the region and ENI, from the instance metadata (IMDSv2).
//! - [`api`]: the EC2 calls, counted, with our own throttling backoff.
//! - [`plan`]: which calls to make, from what EC2 reports (pure).
//! - [`error`]: EC2 errors sorted by what to do, and the backoff.
//! - [`status`]: what `xlb status` and the metrics show.

pub mod api;
pub mod error;
pub mod imds;
pub mod plan;
pub mod status;

use aws_sdk_ec2::config::SharedHttpClient;
use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};

/// The HTTP client of every AWS client we build (EC2, IMDS, STS): hyper
/// and rustls on ring, the provider kube's client uses. With one provider
/// linked, rustls picks it by itself; the SDK's default client would bring
/// aws-lc-rs as a second (and a C build). aws-config is built without a
/// default client, so a client not given this one fails at its first call
/// ("no HTTP client"), never silently on another TLS stack.
#[must_use]
pub fn http_client() -> SharedHttpClient {
    aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https()
}
