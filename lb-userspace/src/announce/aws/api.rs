//! The EC2 calls the announcer makes, each turned into the planner's
//! types ([`super::plan`]) or an [`ApiError`], counted by operation and
//! result. The SDK's own retries are off (`RetryConfig::disabled`): a
//! throttled call is retried here, after a jittered backoff, and only
//! while `allowed` says this node still leads what the call is about.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
    time::Duration,
};

use aws_config::{
    BehaviorVersion, Region, provider_config::ProviderConfig, retry::RetryConfig,
    timeout::TimeoutConfig,
};
use aws_sdk_ec2::{
    Client,
    config::http::HttpResponse,
    error::{DisplayErrorContext, ProvideErrorMetadata, SdkError},
    types::{AttributeBooleanValue, Filter, NetworkInterface, Tag},
};

use super::{
    error::{ApiError, Backoff, Operation, jitter_unit},
    plan::{Association, Cidr, Eni, ROUTER_TAG},
};
use crate::config::AllocationId;

/// Throttled calls are tried this many times in all before the error
/// stands (the next reconcile tries again).
const THROTTLED_ATTEMPTS: u32 = 6;

pub struct Ec2 {
    client: Client,
    backoff: (Duration, Duration),
    /// Calls by (operation, result).
    pub calls: BTreeMap<(Operation, &'static str), u64>,
    pub throttled: u64,
}

/// This node's ENI as found, with the subnet it is in.
pub struct Home {
    pub eni: Eni,
    pub subnet_id: Option<String>,
}

impl Ec2 {
    pub async fn connect(
        region: String,
        endpoint_url: Option<&str>,
        imds: Option<aws_config::imds::Client>,
    ) -> Self {
        let http = super::http_client();
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .http_client(http.clone())
            .region(Region::new(region.clone()))
            // Ours, with jitter and a leadership check between attempts.
            .retry_config(RetryConfig::disabled())
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(3))
                    .operation_attempt_timeout(Duration::from_secs(10))
                    .operation_timeout(Duration::from_secs(20))
                    .build(),
            );
        if let Some(u) = endpoint_url {
            loader = loader.endpoint_url(u);
        }
        if let Some(imds) = imds {
            // The default chain, but with instance-role credentials from
            // the same metadata endpoint as everything else.
            let chain = aws_config::default_provider::credentials::Builder::default()
                .configure(
                    ProviderConfig::default()
                        .with_http_client(http)
                        .with_region(Some(Region::new(region))),
                )
                .imds_client(imds)
                .build()
                .await;
            loader = loader.credentials_provider(chain);
        }
        Self {
            client: Client::new(&loader.load().await),
            backoff: (Duration::from_millis(200), Duration::from_secs(5)),
            calls: BTreeMap::new(),
            throttled: 0,
        }
    }

    /// A client of `endpoint` with fixed credentials and no retries, for
    /// unit tests that need no environment.
    #[cfg(test)]
    pub fn for_tests(endpoint: &str) -> Self {
        let conf = aws_sdk_ec2::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .endpoint_url(endpoint)
            .credentials_provider(aws_sdk_ec2::config::Credentials::new(
                "AKIDTEST", "secret", None, None, "tests",
            ))
            .retry_config(RetryConfig::disabled())
            .http_client(super::http_client())
            .build();
        Self {
            client: Client::from_conf(conf),
            backoff: (Duration::from_millis(1), Duration::from_millis(2)),
            calls: BTreeMap::new(),
            throttled: 0,
        }
    }

    /// One call, sent only while `allowed` (asked before the first attempt
    /// and again before each retry), retried while throttled.
    async fn send<T, E, Fut>(
        &mut self,
        operation: Operation,
        allowed: &(dyn Fn() -> bool + Sync),
        mut call: impl FnMut(&Client) -> Fut,
    ) -> Result<T, ApiError>
    where
        Fut: Future<Output = Result<T, SdkError<E, HttpResponse>>>,
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let mut backoff = Backoff::new(self.backoff.0, self.backoff.1);
        loop {
            if !allowed() {
                return Err(not_leader(operation));
            }
            let r = call(&self.client)
                .await
                .map_err(|e| classify(operation, &e));
            let result = match &r {
                Ok(_) => "ok",
                Err(e) => e.result(),
            };
            *self.calls.entry((operation, result)).or_default() += 1;
            match r {
                Err(ApiError::Throttled { .. }) if backoff.attempts() + 1 < THROTTLED_ATTEMPTS => {
                    self.throttled += 1;
                    let wait = backoff.next(jitter_unit());
                    tracing::info!(operation, ?wait, "aws: throttled by EC2; backing off");
                    tokio::time::sleep(wait).await;
                }
                Err(e @ ApiError::Throttled { .. }) => {
                    self.throttled += 1;
                    return Err(e);
                }
                other => return other,
            }
        }
    }

    pub async fn home(&mut self, eni: &str) -> Result<Home, ApiError> {
        let op = "DescribeNetworkInterfaces";
        let out = self
            .send(op, &|| true, |c| {
                c.describe_network_interfaces()
                    .network_interface_ids(eni)
                    .send()
            })
            .await?;
        let ni = out
            .network_interfaces()
            .first()
            .ok_or_else(|| ApiError::Service {
                operation: op,
                code: "InvalidNetworkInterfaceID.NotFound".into(),
                message: format!("{eni} not in the answer"),
            })?;
        Ok(Home {
            eni: eni_of(ni),
            subnet_id: ni.subnet_id().map(str::to_owned),
        })
    }

    pub async fn subnet(&mut self, id: &str) -> Result<Option<Cidr>, ApiError> {
        let out = self
            .send("DescribeSubnets", &|| true, |c| {
                c.describe_subnets().subnet_ids(id).send()
            })
            .await?;
        Ok(out
            .subnets()
            .first()
            .and_then(|s| s.cidr_block())
            .and_then(Cidr::parse))
    }

    /// Every ENI of the subnet but `except`.
    pub async fn subnet_enis(&mut self, subnet: &str, except: &str) -> Result<Vec<Eni>, ApiError> {
        let filter = Filter::builder().name("subnet-id").values(subnet).build();
        let mut all = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let t = token.clone();
            let out = self
                .send("DescribeNetworkInterfaces", &|| true, |c| {
                    c.describe_network_interfaces()
                        .filters(filter.clone())
                        .set_next_token(t.clone())
                        .send()
                })
                .await?;
            all.extend(
                out.network_interfaces()
                    .iter()
                    .map(eni_of)
                    .filter(|e| e.id != except),
            );
            match out.next_token() {
                Some(t) if !t.is_empty() => token = Some(t.to_owned()),
                _ => return Ok(all),
            }
        }
    }

    /// Where each Elastic IP is; `None` for an allocation id EC2 does not
    /// know. Asked by filter: by id, one unknown id fails the whole call.
    pub async fn addresses(
        &mut self,
        ids: &BTreeSet<AllocationId>,
    ) -> Result<BTreeMap<AllocationId, Option<Association>>, ApiError> {
        if ids.is_empty() {
            return Ok(BTreeMap::new());
        }
        let filter = Filter::builder()
            .name("allocation-id")
            .set_values(Some(ids.iter().map(|i| i.to_string()).collect()))
            .build();
        let out = self
            .send("DescribeAddresses", &|| true, |c| {
                c.describe_addresses().filters(filter.clone()).send()
            })
            .await?;
        let mut found: BTreeMap<AllocationId, Option<Association>> =
            ids.iter().map(|i| (i.clone(), None)).collect();
        for a in out.addresses() {
            let Some(id) = a.allocation_id().and_then(AllocationId::parse) else {
                continue;
            };
            if let Some(slot) = found.get_mut(&id) {
                *slot = Some(Association {
                    public_ip: a.public_ip().map(str::to_owned),
                    network_interface_id: a
                        .network_interface_id()
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned),
                    private_ip: a.private_ip_address().and_then(|p| p.parse().ok()),
                });
            }
        }
        Ok(found)
    }

    /// One call for the ENI; `AllowReassignment` moves addresses another
    /// router's ENI holds (and, on AWS, their Elastic IPs with them).
    pub async fn assign(
        &mut self,
        eni: &str,
        ips: &BTreeSet<Ipv4Addr>,
        allowed: &(dyn Fn() -> bool + Sync),
    ) -> Result<(), ApiError> {
        let ips: Vec<String> = ips.iter().map(ToString::to_string).collect();
        self.send("AssignPrivateIpAddresses", allowed, |c| {
            c.assign_private_ip_addresses()
                .network_interface_id(eni)
                .set_private_ip_addresses(Some(ips.clone()))
                .allow_reassignment(true)
                .send()
        })
        .await
        .map(drop)
    }

    /// Moves the association in one step (`AllowReassociation`): never a
    /// disassociation first, which would leave the EIP nowhere meanwhile.
    pub async fn associate(
        &mut self,
        eip: &AllocationId,
        eni: &str,
        vip: Ipv4Addr,
        allowed: &(dyn Fn() -> bool + Sync),
    ) -> Result<(), ApiError> {
        self.send("AssociateAddress", allowed, |c| {
            c.associate_address()
                .allocation_id(eip.as_str())
                .network_interface_id(eni)
                .private_ip_address(vip.to_string())
                .allow_reassociation(true)
                .send()
        })
        .await
        .map(drop)
    }

    pub async fn source_dest_check_off(
        &mut self,
        eni: &str,
        allowed: &(dyn Fn() -> bool + Sync),
    ) -> Result<(), ApiError> {
        self.send("ModifyNetworkInterfaceAttribute", allowed, |c| {
            c.modify_network_interface_attribute()
                .network_interface_id(eni)
                .source_dest_check(AttributeBooleanValue::builder().value(false).build())
                .send()
        })
        .await
        .map(drop)
    }

    /// Marks `eni` as a router's, so other routers take VIPs from it (and
    /// only from such ENIs).
    pub async fn tag_router(
        &mut self,
        eni: &str,
        node: &str,
        allowed: &(dyn Fn() -> bool + Sync),
    ) -> Result<(), ApiError> {
        let tag = Tag::builder().key(ROUTER_TAG).value(node).build();
        self.send("CreateTags", allowed, |c| {
            c.create_tags().resources(eni).tags(tag.clone()).send()
        })
        .await
        .map(drop)
    }

    /// The ENIs (of EC2 instances) that have one of `ips` as an address,
    /// each with its source/destination check.
    pub async fn enis_of(&mut self, ips: &BTreeSet<Ipv4Addr>) -> Result<Vec<Eni>, ApiError> {
        if ips.is_empty() {
            return Ok(Vec::new());
        }
        let filter = Filter::builder()
            .name("addresses.private-ip-address")
            .set_values(Some(ips.iter().map(ToString::to_string).collect()))
            .build();
        let out = self
            .send("DescribeNetworkInterfaces", &|| true, |c| {
                c.describe_network_interfaces()
                    .filters(filter.clone())
                    .send()
            })
            .await?;
        Ok(out.network_interfaces().iter().map(eni_of).collect())
    }
}

fn eni_of(ni: &NetworkInterface) -> Eni {
    let mut e = Eni {
        id: ni.network_interface_id().unwrap_or_default().to_owned(),
        primary_ip: ni.private_ip_address().and_then(|p| p.parse().ok()),
        source_dest_check: ni.source_dest_check().unwrap_or(true),
        router: ni.tag_set().iter().any(|t| t.key() == Some(ROUTER_TAG)),
        instance_id: ni
            .attachment()
            .and_then(|a| a.instance_id())
            .map(str::to_owned),
        ..Eni::default()
    };
    for p in ni.private_ip_addresses() {
        let Some(a) = p.private_ip_address().and_then(|a| a.parse().ok()) else {
            continue;
        };
        if p.primary() == Some(true) {
            e.primary_ip = Some(a);
        } else {
            e.secondary_ips.insert(a);
        }
    }
    e
}

fn classify<E>(operation: Operation, e: &SdkError<E, HttpResponse>) -> ApiError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match e {
        SdkError::ServiceError(s) => {
            let err = s.err();
            ApiError::from_code(operation, err.code(), err.message())
        }
        // A throttling proxy or a load balancer in front may answer 503
        // with the code in a body the SDK still parses; anything else is
        // no answer at all.
        other => match other.code() {
            Some(code) => ApiError::from_code(operation, Some(code), other.message()),
            None => ApiError::Transport {
                operation,
                message: DisplayErrorContext(other).to_string(),
            },
        },
    }
}

/// What a write not sent, because this node no longer leads, returns.
fn not_leader(operation: Operation) -> ApiError {
    ApiError::Service {
        operation,
        code: "NotLeader".into(),
        message: "this node no longer leads what this call is about; not sent".into(),
    }
}
