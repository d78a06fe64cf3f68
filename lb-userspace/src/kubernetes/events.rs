//! Warning Events on Services xlb refuses, posted once per distinct refusal
//! (a refusal that clears and comes back is posted again) by one router of
//! the live ones, chosen per Service, with the same line in every router's
//! log. Aggregated as client-go's recorder does: one Event
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

use super::{leadership::Leadership, translate::Refusal};

/// `reportingComponent` of every Event xlb writes.
pub const COMPONENT: &str = "xlb.io/xlb";

pub struct Events {
    client: Client,
    node: String,
    /// Refusals in this router's log, and the ones it posted.
    logged: BTreeSet<Refusal>,
    posted: BTreeSet<Refusal>,
}

impl Events {
    pub fn new(client: Client, node: String) -> Self {
        Self {
            client,
            node,
            logged: BTreeSet::new(),
            posted: BTreeSet::new(),
        }
    }

    /// Logs what is new in `now`, and posts it when this router is the one
    /// that reports about the Service ([`Leadership::reports`]): every
    /// router sees every refusal, one posts it. Forgets refusals that have cleared.
    pub async fn report(&mut self, now: &[Refusal], lead: &Leadership) {
        let current: BTreeSet<Refusal> = now.iter().cloned().collect();
        self.logged.retain(|r| current.contains(r));
        self.posted.retain(|r| current.contains(r));
        for r in current {
            if !self.logged.contains(&r) {
                tracing::warn!(service = %r.service, reason = r.reason, "{}", r.message);
                self.logged.insert(r.clone());
            }
            if self.posted.contains(&r) || !lead.reports(&r.service.to_string()) {
                continue;
            }
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
                namespace: Some(r.service.namespace.to_string()),
                ..Default::default()
            },
            involved_object: ObjectReference {
                api_version: Some("v1".to_owned()),
                kind: Some("Service".to_owned()),
                name: Some(r.service.name.to_string()),
                namespace: Some(r.service.namespace.to_string()),
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
    let h = fnv1a(&[
        &r.service.namespace,
        &r.service.name,
        r.uid.as_str(),
        r.reason,
        r.message.as_str(),
    ]);
    format!("{}.xlb-{h:016x}", r.service.name)
}

/// FNV-1a (64 bits) of the parts, each ended by a 0 byte: a hash every
/// router and every version computes alike.
pub fn fnv1a(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in part.bytes().chain(std::iter::once(0)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}
