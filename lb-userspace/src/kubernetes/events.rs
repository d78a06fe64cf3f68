//! Warning Events on Services xlb refuses, posted once per distinct refusal
//! (a refusal that clears and comes back is posted again), with the same
//! line in the log.

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
            match self.post(&r).await {
                Ok(()) => {
                    self.posted.insert(r);
                }
                // Not remembered: the next change tries again.
                Err(e) => tracing::warn!(service = %r.service, "posting the Event: {e}"),
            }
        }
    }

    async fn post(&self, r: &Refusal) -> Result<(), kube::Error> {
        let now = Timestamp::now();
        let api: Api<Event> = Api::namespaced(self.client.clone(), &r.service.namespace);
        let event = Event {
            metadata: ObjectMeta {
                // As client-go names them: object name, then a unique suffix.
                name: Some(format!("{}.{:x}", r.service.name, now.as_nanosecond())),
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
        };
        api.create(&PostParams::default(), &event).await.map(|_| ())
    }
}
