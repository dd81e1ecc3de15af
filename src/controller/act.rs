//! Acting on a step's plan: write the status if the plan says so, record its Events, perform its
//! one effect (a finalizer patch, the outputs, an upstream request under the provider's rate
//! limit and the Lease), and report what came of it. No rule is decided here.

use std::time::Instant;

use kube::{Api, ResourceExt};
use tracing::debug;

use super::observations::{SHARED_FOR, Seen};
use super::observe::{ProviderRuntime, listed};
use super::requests::{self, Upstreaming};
use super::sweeps::{Cover, shared_key};
use super::{Context, ReconcileError, finalizer, outputs, status};
use crate::api::{LongRunningOperation, LongRunningOperationStatus};
use crate::reconcile::step::{Effect, Finalizer, Outcome, Plan, Request};
use crate::reconcile::{Event, Fact, Notice, template};
use crate::upstream::rate_limit::Turn;

/// What acting needs besides the plan.
pub struct Acting<'a> {
    /// The shared state.
    pub ctx: &'a Context,
    /// The operation.
    pub op: &'a LongRunningOperation,
    /// Its API.
    pub api: &'a Api<LongRunningOperation>,
    /// Its provider, when it can be used.
    pub provider: Option<&'a ProviderRuntime>,
    /// When its next poll was due (for the poll-lateness metric), taken by the poll.
    pub poll_due: Option<jiff::Timestamp>,
    /// The status the apiserver holds, as far as this process knows.
    pub written: LongRunningOperationStatus,
    /// Events waiting for their status to be written.
    pub notices: Vec<Notice>,
}

impl Acting<'_> {
    /// Performs `plan`; `None` when the reconcile is over.
    pub async fn perform(&mut self, plan: &Plan) -> Result<Option<Outcome>, ReconcileError> {
        self.notices.extend(plan.notices.iter().cloned());
        if plan.write_first {
            self.flush(&plan.status).await?;
        }
        Ok(match &plan.effect {
            Effect::Done { .. } => None,
            Effect::Finalizer(change) => {
                let done = match change {
                    Finalizer::Add => finalizer::add(self.api, self.op).await,
                    Finalizer::Remove => finalizer::remove(self.api, self.op).await,
                };
                done.map_err(ReconcileError::Finalizer)?;
                Some(Outcome::FinalizerChanged)
            }
            Effect::PublishOutputs(rendered) => {
                let (written, error) = outputs::write(&self.ctx.client, self.op, rendered).await;
                if let Some(e) = &error {
                    tracing::warn!(reason = e.reason, error = %e.message, "outputs not written");
                }
                Some(Outcome::OutputsWritten {
                    rendered: rendered.clone(),
                    written,
                    error,
                })
            }
            Effect::Send { request, turn } => Some(self.send(plan, request, *turn).await),
        })
    }

    /// A poll's answer at hand without a request: a list sweep's (or the sweeps cover the
    /// operation: `Covered`), or another object's poll of the same handle within the last second.
    fn answered_already(&self, provider: &ProviderRuntime, plan: &Plan) -> Option<Outcome> {
        let news = |seen: Seen| {
            Outcome::Upstream(
                Box::new(Event::Polled(seen.observation)),
                Some(Fact::Answered {
                    at: seen.at,
                    retry_after: None,
                }),
            )
        };
        match listed(self.ctx, provider, &plan.status, &plan.memory) {
            Some(Cover::News(seen)) => return Some(news(*seen)),
            Some(Cover::Covered) => return Some(Outcome::Covered),
            _ => {}
        }
        // Another object's poll of the same handle since this one's last request stands for this
        // poll: answered now, as far as this object's schedule goes.
        let key = self.shared_key(provider, plan)?;
        let now = jiff::Timestamp::now();
        let seen = self
            .ctx
            .observations
            .recent_poll(&provider.key, &key, now, SHARED_FOR)
            .filter(|seen| seen.at > plan.memory.last_request_at)?;
        debug!(key, "another object's poll of this handle answers this one");
        Some(news(Seen { at: now, ..seen }))
    }

    fn shared_key(&self, provider: &ProviderRuntime, plan: &Plan) -> Option<String> {
        shared_key(&*provider.entry.dialect, plan.status.operation.as_ref()?)
    }

    /// Writes `status` if it is not what was last written, then the Events waiting for it.
    pub async fn flush(
        &mut self,
        current: &LongRunningOperationStatus,
    ) -> Result<(), ReconcileError> {
        if *current != self.written {
            status::write(self.api, &self.op.name_any(), current)
                .await
                .map_err(ReconcileError::Status)?;
            self.ctx.metrics.status_written();
            self.written = current.clone();
            if let Some(handle) = super::reconcile::handle_of(Some(current)) {
                tracing::Span::current().record("operation", handle);
            }
        }
        let notices = std::mem::take(&mut self.notices);
        status::publish(self.ctx, self.op, &notices).await;
        Ok(())
    }

    /// Sends `request` when this replica holds the Lease and the provider's rate limit allows;
    /// a poll that a list sweep or another object's poll just answered is not sent.
    async fn send(&mut self, plan: &Plan, request: &Request, held: Option<Instant>) -> Outcome {
        let Some(provider) = self.provider else {
            return Outcome::Upstream(
                Box::new(Event::ProviderUnavailable("no provider".into())),
                None,
            );
        };
        if *request == Request::Poll
            && let Some(answered) = self.answered_already(provider, plan)
        {
            return answered;
        }
        // Upstream requests only while this replica surely holds the Lease (see `leader`).
        if !self.ctx.leadership.is_valid() {
            debug!("not sure to hold the Lease: no upstream request");
            return Outcome::NotLeader;
        }
        // The namespace's share of requests in flight, held until the answer is read.
        let namespace = self.op.namespace().unwrap_or_default();
        let Some(_seat) = self.ctx.fair_share.take(&namespace) else {
            debug!("the namespace's upstream requests in flight are at their cap: held back");
            self.ctx.metrics.held_back_by_fair_share();
            return Outcome::Busy;
        };
        // The provider's rate limit: a request over it waits for its turn, off the workers.
        if let Some(limit) = &provider.spec.rate_limit {
            let now = Instant::now();
            if let Turn::At(turn) = self.ctx.rate_limits.admit(&provider.key, limit, held, now) {
                let wait = turn.saturating_duration_since(now);
                if held.is_none() {
                    self.ctx.metrics.rate_limit_waited(&provider.key, wait);
                }
                debug!(?wait, "waiting for the provider's rate limit");
                return Outcome::HeldBack { turn, wait };
            }
            // Its turn has come; the gate spreads requests that came back late together.
            let wait = self
                .ctx
                .rate_limits
                .gate(&provider.key, limit, Instant::now());
            if !wait.is_zero() {
                self.ctx.metrics.rate_limit_waited(&provider.key, wait);
                tokio::time::sleep(wait).await;
            }
        }
        let meter = self
            .ctx
            .metrics
            .upstream(provider.spec.protocol.as_str(), provider.key.clone());
        let to = Upstreaming {
            upstream: &provider.entry.upstream,
            meter: &meter,
            base_url: &provider.spec.base_url,
            dialect: &*provider.entry.dialect,
            on_unauthorized: &|| provider.entry.refused(),
        };
        let start = self
            .op
            .spec
            .start
            .as_ref()
            .map(|start| match &plan.status.rendered_start {
                // A templated start sends what was rendered (and recorded) before it.
                Some(rendered) => template::apply(start, rendered),
                None => start.clone(),
            });
        let (event, fact) = match (request, start) {
            (Request::Start { .. } | Request::Recover, None) => (
                // Not reached: spec.start cannot go once the operation began (a CEL rule).
                Event::StartRejected(crate::api::OperationError {
                    code: "FAILED_PRECONDITION".into(),
                    message: "spec.start is gone".into(),
                    ..Default::default()
                }),
                None,
            ),
            (Request::Start { request_id }, Some(start)) => {
                debug!(request_id, "sending the start request");
                requests::start(&to, &start, request_id).await
            }
            (Request::Recover, Some(start)) => {
                let sent_at = plan
                    .status
                    .started_at
                    .as_ref()
                    .map_or_else(jiff::Timestamp::now, |t| t.0);
                debug!("looking for the operation a lost start may have begun");
                requests::recover(&to, &start, sent_at).await
            }
            (Request::Poll, _) => {
                self.ctx
                    .metrics
                    .polled(self.poll_due.take(), jiff::Timestamp::now());
                let answer = requests::poll(&to, &plan.status).await;
                // Shared with every object tracking the same handle, at the time this object
                // learns as its last request's (so that its own answer is not news to it).
                if let (Event::Polled(observation), Some(Fact::Answered { at, .. }), Some(key)) =
                    (&answer.0, &answer.1, self.shared_key(provider, plan))
                {
                    self.ctx.observations.polled(
                        &provider.key,
                        &key,
                        Seen {
                            observation: observation.clone(),
                            at: *at,
                        },
                    );
                }
                answer
            }
            (Request::Cancel, _) => requests::cancel(&to, &plan.status).await,
        };
        debug!(?event, "upstream answered");
        Outcome::Upstream(Box::new(event), fact)
    }
}
