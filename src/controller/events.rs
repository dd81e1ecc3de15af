//! Kubernetes Events (`events.k8s.io/v1`) on operations, for `kubectl describe`.
//!
//! As kube's `Recorder` does, an event that repeats on the same object (same type, reason and
//! action) within six minutes is not created again: the first one becomes a series and counts
//! it (a merge patch), keeping its first note. Unlike it, what this remembers of recent events is
//! small and bounded: a few fields for each of the newest [`CAPACITY`] keys, where kube's keeps
//! every whole event of the last six minutes and scans them all on each publish (at thousands of
//! operations, each with a start and an end event within minutes: memory that grows with them
//! and a quadratic cost). An object is known by its uid, not its `resourceVersion` (which every
//! status write changes, so that repeats were never merged).

use std::collections::HashMap;
use std::sync::Mutex;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::events::v1::{Event, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client, Resource, ResourceExt};

use crate::api::LongRunningOperation;
use crate::reconcile::Notice;

/// How long a repeat joins the series of the first event.
const SERIES_WINDOW: SignedDuration = SignedDuration::from_mins(6);
/// The most recent events remembered; beyond, the oldest are forgotten (a repeat of one of them
/// is a new event).
pub const CAPACITY: usize = 4096;

/// Who publishes: `reportingController` and `reportingInstance`.
#[derive(Clone, Debug)]
pub struct Reporter {
    /// `reportingController`.
    pub controller: String,
    /// `reportingInstance` (the pod's name); the controller's name when not known.
    pub instance: Option<String>,
}

/// One remembered event: enough to count a repeat into its series.
#[derive(Clone, Debug)]
struct Recent {
    name: String,
    count: i32,
    last: Timestamp,
}

/// (object uid, warning, reason, action).
type Key = (String, bool, &'static str, &'static str);

/// Publishes [`Notice`]s as Events.
pub struct Recorder {
    client: Client,
    reporter: Reporter,
    recent: Mutex<HashMap<Key, Recent>>,
}

impl Recorder {
    /// A recorder that publishes as `reporter`.
    pub fn new(client: Client, reporter: Reporter) -> Self {
        Recorder {
            client,
            reporter,
            recent: Mutex::new(HashMap::new()),
        }
    }

    /// Publishes `notice` on `op`: a new event, or one more of a recent series.
    pub async fn publish(
        &self,
        op: &LongRunningOperation,
        notice: &Notice,
        note: String,
    ) -> Result<(), kube::Error> {
        let namespace = op.namespace().unwrap_or_else(|| "default".into());
        let api: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
        let key: Key = (
            op.uid().unwrap_or_default(),
            notice.warning,
            notice.reason,
            notice.action,
        );
        let now = Timestamp::now();
        if let Some(repeat) = self.repeat(&key, now) {
            let series = serde_json::json!({"series": EventSeries {
                count: repeat.count,
                last_observed_time: MicroTime(now),
            }});
            match api
                .patch(
                    &repeat.name,
                    &PatchParams::default(),
                    &Patch::Merge(&series),
                )
                .await
            {
                Ok(_) => return Ok(()),
                // The event is gone (expired, deleted): a new one.
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        let event = self.event(op, notice, note, now);
        let name = event.name_any();
        api.create(&PostParams::default(), &event).await?;
        self.remember(key, name, now);
        Ok(())
    }

    /// The series `key` joins now, if a recent event has it (counted).
    fn repeat(&self, key: &Key, now: Timestamp) -> Option<Recent> {
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        let entry = recent.get_mut(key)?;
        if now.duration_since(entry.last) >= SERIES_WINDOW {
            recent.remove(key);
            return None;
        }
        entry.count = entry.count.saturating_add(1);
        entry.last = now;
        Some(entry.clone())
    }

    fn remember(&self, key: Key, name: String, now: Timestamp) {
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        if recent.len() >= CAPACITY {
            // Expired first; if that is not enough, the older half.
            recent.retain(|_, r| now.duration_since(r.last) < SERIES_WINDOW);
            if recent.len() >= CAPACITY {
                let mut times: Vec<Timestamp> = recent.values().map(|r| r.last).collect();
                times.sort_unstable();
                let median = times[times.len() / 2];
                recent.retain(|_, r| r.last > median);
            }
        }
        recent.insert(
            key,
            Recent {
                name,
                count: 1,
                last: now,
            },
        );
    }

    fn event(
        &self,
        op: &LongRunningOperation,
        notice: &Notice,
        note: String,
        now: Timestamp,
    ) -> Event {
        let regarding = op.object_ref(&());
        let controller = self.reporter.controller.clone();
        Event {
            metadata: ObjectMeta {
                name: Some(format!(
                    "{}.{:x}",
                    regarding.name.as_deref().unwrap_or(&controller),
                    now.as_nanosecond()
                )),
                namespace: regarding.namespace.clone(),
                ..ObjectMeta::default()
            },
            action: Some(notice.action.to_owned()),
            reason: Some(notice.reason.to_owned()),
            note: Some(note),
            type_: Some(if notice.warning { "Warning" } else { "Normal" }.to_owned()),
            event_time: Some(MicroTime(now)),
            reporting_instance: Some(
                self.reporter
                    .instance
                    .clone()
                    .unwrap_or_else(|| controller.clone()),
            ),
            reporting_controller: Some(controller),
            regarding: Some(regarding),
            ..Event::default()
        }
    }

    /// How many recent events are remembered (for tests).
    pub fn remembered(&self) -> usize {
        self.recent.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use http::{Request, Response};
    use kube::client::Body;
    use serde_json::{Value, json};

    use super::*;

    /// A mocked API server that echoes what it is sent; the (method, path, body) it was sent.
    type Log = Arc<Mutex<Vec<(String, String, Value)>>>;

    fn api_server() -> (Client, Log) {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let log: Log = Arc::default();
        let seen = Arc::clone(&log);
        tokio::spawn(async move {
            while let Some((request, respond)) = handle.next_request().await {
                let (parts, body) = request.into_parts();
                let bytes = body.collect_bytes().await.unwrap_or_default();
                let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                let mut answer = body.clone();
                answer["apiVersion"] = json!("events.k8s.io/v1");
                answer["kind"] = json!("Event");
                if answer["metadata"]["name"].is_null() {
                    answer["metadata"]["name"] = json!("patched");
                }
                seen.lock().unwrap().push((
                    parts.method.to_string(),
                    parts.uri.path().to_owned(),
                    body,
                ));
                respond.send_response(
                    Response::builder()
                        .body(Body::from(serde_json::to_vec(&answer).unwrap()))
                        .unwrap(),
                );
            }
        });
        (Client::new(service, "default"), log)
    }

    fn op(name: &str) -> LongRunningOperation {
        serde_json::from_value(json!({
            "apiVersion": "lro.dev/v1alpha1", "kind": "LongRunningOperation",
            "metadata": {"name": name, "namespace": "ns", "uid": format!("uid-{name}"),
                         "resourceVersion": "1"},
            "spec": {"providerRef": {"name": "sim"}, "operation": {"name": "operations/1"}},
        }))
        .unwrap()
    }

    fn notice(reason: &'static str, action: &'static str) -> Notice {
        Notice {
            warning: reason == "UpstreamUnavailable",
            reason,
            action,
            message: format!("{reason} happened"),
        }
    }

    #[tokio::test]
    async fn a_repeat_counts_into_the_first_events_series_and_memory_stays_bounded() {
        let (client, log) = api_server();
        let recorder = Recorder::new(
            client,
            Reporter {
                controller: "lro-operator".into(),
                instance: Some("pod-1".into()),
            },
        );
        let (mut a, b) = (op("a"), op("b"));
        let unavailable = notice("UpstreamUnavailable", "Reconcile");
        recorder
            .publish(&a, &unavailable, "first".into())
            .await
            .unwrap();
        // The same event on the same object, after a status write changed its resourceVersion:
        // one more of the series, the first note kept.
        a.metadata.resource_version = Some("2".into());
        recorder
            .publish(&a, &unavailable, "second".into())
            .await
            .unwrap();
        // Another action, or another object: new events.
        let progress = notice("Progress", "Progress50");
        recorder
            .publish(&a, &progress, "half".into())
            .await
            .unwrap();
        recorder
            .publish(&b, &unavailable, "b".into())
            .await
            .unwrap();
        let log = log.lock().unwrap().clone();
        let methods: Vec<&str> = log.iter().map(|(m, _, _)| m.as_str()).collect();
        assert_eq!(methods, ["POST", "PATCH", "POST", "POST"]);
        let (_, _, first) = &log[0];
        assert_eq!(first["type"], "Warning");
        assert_eq!(first["reason"], "UpstreamUnavailable");
        assert_eq!(first["action"], "Reconcile");
        assert_eq!(first["note"], "first");
        assert_eq!(first["regarding"]["uid"], "uid-a");
        assert_eq!(first["reportingController"], "lro-operator");
        assert_eq!(first["reportingInstance"], "pod-1");
        let name = first["metadata"]["name"].as_str().unwrap();
        assert!(name.starts_with("a."), "{name}");
        let (_, path, patch) = &log[1];
        assert_eq!(
            path,
            &format!("/apis/events.k8s.io/v1/namespaces/ns/events/{name}")
        );
        assert_eq!(patch["series"]["count"], 2);
        assert!(patch.get("note").is_none(), "{patch}");
        assert_eq!(log[2].2["action"], "Progress50");
        assert_eq!(log[3].2["regarding"]["name"], "b");

        // Thousands of objects with an event each: only the newest are remembered.
        for i in 0..(CAPACITY + 100) {
            let o = op(&format!("op-{i}"));
            recorder
                .publish(&o, &notice("Succeeded", "Reconcile"), "done".into())
                .await
                .unwrap();
        }
        assert!(
            recorder.remembered() <= CAPACITY,
            "{}",
            recorder.remembered()
        );
    }
}
