//! Warning Events on Services xlb refuses, posted once per distinct refusal
//! (a refusal that clears and comes back is posted again), with the same
//! line in the log. Aggregated as client-go's recorder does: one Event
//! object per refusal, named after it, whatever the router and however
//! often it restarts; a router that finds it already there adds one to its
//! `count` and moves `lastTimestamp`.

use std::collections::BTreeSet;

use k8s_openapi::{
    api::core::v1::{Event, EventSource, ObjectReference},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time},
    jiff::Timestamp,
};
use kube::{
    Client,
    api::{Api, PostParams},
};

use super::translate::Refusal;

/// `reportingComponent` of every Event xlb writes.
pub const COMPONENT: &str = "xlb.io/xlb";

pub struct Events {
    client: Client,
    node: String,
    posted: BTreeSet<Refusal>,
}

impl Events {
    pub fn new(client: Client, node: String) -> Self {
        Self {
            client,
            node,
            posted: BTreeSet::new(),
        }
    }

    /// Posts what is new in `now`; forgets refusals that have cleared.
    pub async fn report(&mut self, now: &[Refusal]) {
        let current: BTreeSet<Refusal> = now.iter().cloned().collect();
        self.posted.retain(|r| current.contains(r));
        for r in current {
            if self.posted.contains(&r) {
                continue;
            }
            tracing::warn!(service = %r.service, reason = r.reason, "{}", r.message);
            match self.report_one(&r).await {
                Ok(()) => {
                    self.posted.insert(r);
                }
                // Not remembered: the next change tries again.
                Err(e) => tracing::warn!(service = %r.service, "posting the Event: {e}"),
            }
        }
    }

    /// Creates the refusal's Event, or counts one more report on it.
    async fn report_one(&self, r: &Refusal) -> Result<(), kube::Error> {
        let api: Api<Event> = Api::namespaced(self.client.clone(), &r.service.namespace);
        let name = event_name(r);
        match api
            .create(&PostParams::default(), &self.event(r, &name))
            .await
        {
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            other => return other.map(drop),
        }
        // Already reported (by another router, or before a restart): one
        // more, optimistic like every write (a 409 is tried at the next
        // change).
        let mut e = api.get(&name).await?;
        e.count = Some(e.count.unwrap_or(1) + 1);
        e.last_timestamp = Some(Time(Timestamp::now()));
        api.replace(&name, &PostParams::default(), &e)
            .await
            .map(drop)
    }

    fn event(&self, r: &Refusal, name: &str) -> Event {
        let now = Timestamp::now();
        Event {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                namespace: Some(r.service.namespace.clone()),
                ..Default::default()
            },
            involved_object: ObjectReference {
                api_version: Some("v1".to_owned()),
                kind: Some("Service".to_owned()),
                name: Some(r.service.name.clone()),
                namespace: Some(r.service.namespace.clone()),
                uid: Some(r.uid.clone()).filter(|u| !u.is_empty()),
                ..Default::default()
            },
            reason: Some(r.reason.to_owned()),
            message: Some(r.message.clone()),
            type_: Some("Warning".to_owned()),
            action: Some("Allocate".to_owned()),
            count: Some(1),
            first_timestamp: Some(Time(now)),
            last_timestamp: Some(Time(now)),
            event_time: Some(MicroTime(now)),
            reporting_component: Some(COMPONENT.to_owned()),
            reporting_instance: Some(self.node.clone()),
            source: Some(EventSource {
                component: Some("xlb".to_owned()),
                host: Some(self.node.clone()),
            }),
            ..Default::default()
        }
    }
}

/// The refusal's Event name: the Service's name and a fixed hash (FNV-1a)
/// of what the refusal is, so every router and every restart names it the
/// same.
fn event_name(r: &Refusal) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in [
        r.service.namespace.as_str(),
        r.service.name.as_str(),
        r.uid.as_str(),
        r.reason,
        r.message.as_str(),
    ] {
        for b in part.bytes().chain(std::iter::once(0)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    format!("{}.xlb-{h:016x}", r.service.name)
}
