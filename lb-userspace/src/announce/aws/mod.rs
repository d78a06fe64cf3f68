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
