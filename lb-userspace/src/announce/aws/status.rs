//! What the `aws` announcer publishes: per VIP the association it wants
//! and the one EC2 last reported, per operation the calls it made. Written
//! to the state directory for `xlb status`, read by the metrics.

use std::{collections::BTreeMap, net::Ipv4Addr, path::Path};

use serde::{Deserialize, Serialize};

use super::plan::{Association, Cidr};
use crate::config::AllocationId;

/// The file `xlb status` reads, in the state directory.
pub const FILE: &str = "aws.json";

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AwsStatus {
    pub region: Option<String>,
    /// This node's ENI, the one that takes the VIPs it leads.
    pub network_interface_id: Option<String>,
    pub subnet: Option<Cidr>,
    /// Its source/destination check as last seen.
    pub source_dest_check: Option<bool>,
    /// What keeps the announcer from working at all (IMDS, credentials, a
    /// denied Describe call); per-VIP trouble is on the VIP.
    pub error: Option<String>,
    pub vips: BTreeMap<Ipv4Addr, AwsVip>,
    /// EC2 calls by operation and result (`ok`, `throttled`, `denied`,
    /// `error`, `unreachable`).
    pub calls: Vec<Calls>,
    pub throttled: u64,
    /// Moves (assignments, associations) EC2 was seen to have carried out.
    pub moves_confirmed: u64,
    /// Time from the first write of a move to EC2 showing it done.
    pub last_confirm_seconds: Option<f64>,
    pub confirm_seconds_sum: f64,
    /// Backends that are EC2 instances whose ENI still checks source and
    /// destination: it drops their DSR replies (source: the VIP).
    pub backends_with_source_dest_check: Vec<CheckedBackend>,
    /// Unix seconds of the last look at EC2.
    pub last_reconcile_unix: Option<f64>,
    /// Times a VIP became or stopped being this node's: led by it and in
    /// place on its ENI as EC2 shows it.
    #[serde(default)]
    pub transitions: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Calls {
    pub operation: String,
    pub result: String,
    pub count: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckedBackend {
    pub address: Ipv4Addr,
    pub network_interface_id: String,
    pub instance_id: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AwsVip {
    pub allocation_id: Option<AllocationId>,
    /// Whether this node leads it (and so is the one to announce it).
    pub leads: bool,
    /// Where it should be: this node's ENI, when it leads.
    pub desired_network_interface_id: Option<String>,
    /// Whether it is a secondary IP of this node's ENI, as last seen.
    pub on_our_interface: bool,
    /// The Elastic IP's association as last reported by EC2.
    pub observed: Option<Association>,
    /// Assigned, and the Elastic IP (if any) on it.
    pub in_place: bool,
    /// Why it is not announced (a bad VIP, an unknown Elastic IP, a
    /// denied call), with what to do.
    pub error: Option<String>,
}

impl AwsStatus {
    /// The VIPs this node owns: it leads them and EC2 shows them in place
    /// on its ENI.
    pub fn owned(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        self.vips
            .iter()
            .filter(|(_, v)| v.leads && v.in_place)
            .map(|(a, _)| *a)
    }

    pub fn write(&self, state_dir: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(state_dir)?;
        let tmp = state_dir.join(format!("{FILE}.tmp"));
        std::fs::write(&tmp, serde_json::to_vec_pretty(self)?)?;
        std::fs::rename(tmp, state_dir.join(FILE))
    }

    pub fn read(state_dir: &Path) -> Option<Self> {
        let bytes = std::fs::read(state_dir.join(FILE)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }
}
