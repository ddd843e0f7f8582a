//! Carrying out one event's plan: the executor holds what every plan shares (the API, the breaker, the ids and the
//! workspace a warm function learned); a [`Run`] holds what one plan spends. The jobs a plan's operations need live in
//! their own files, each an `impl Run`.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::num::NonZeroUsize;
use std::sync::Arc;

use serde_json::Value;
use tokio::time::Instant;

use super::breaker::{Breaker, BreakerPolicy};
use super::guard::Guarded;
use super::identities::{StoreHealth, StoreView};
use super::ids::KnownIds;
use super::workspace::Workspace;
use super::written::WriteMemory;
use crate::identity::IdentityStore;
use crate::intercom::requests::{Dialect, Request};
use crate::intercom::{IntercomApi, IntercomError, TagId};
use crate::mapping::{Dropped, Operation, Plan};
use crate::retry::RetryPolicy;

/// What carrying out a plan took.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Delivery {
    /// Intercom calls made, the failed ones included.
    pub calls: usize,
    /// Values left out, the plan's own and those dropped here (values the workspace cannot hold).
    pub dropped: Vec<Dropped>,
    /// Set when the plan turned out to have nothing Intercom can act on (e.g. an alias for contacts that do not exist).
    pub skipped: Option<&'static str>,
}

/// Why a plan was not carried out, and how hard we tried.
#[derive(Debug)]
pub struct Failed {
    pub(crate) error: IntercomError,
    /// Tries of the call that failed.
    pub(crate) attempts: u32,
    /// Intercom calls made for the plan, the failed ones included.
    pub(crate) calls: usize,
}

/// Carries out plans against one Intercom workspace; one per cold start, shared by every invocation.
pub struct Executor<A> {
    api: A,
    /// Holds calls back while every call fails for a reason of the workspace.
    breaker: Breaker,
    pub(super) dialect: Dialect,
    pub(super) create_attributes: bool,
    pub(super) ids: KnownIds,
    pub(super) workspace: Workspace,
    /// Whom the relay made in Intercom, shared with other forwarders; none: the warm cache alone.
    pub(super) identities: Option<Arc<dyn IdentityStore>>,
    /// How long what the store says was written goes by.
    pub(super) memory: WriteMemory,
    /// Whether the store is resting after a failure, and the keys whose last write it may not know of.
    pub(super) store_health: StoreHealth,
}

/// One plan's run: the executor's shared knowledge, Intercom as this plan's policy calls it, and what it spends.
pub(super) struct Run<'a, A> {
    pub(super) executor: &'a Executor<A>,
    pub(super) intercom: Guarded<'a, A>,
    /// Values left out so far.
    pub(super) dropped: Vec<Dropped>,
    /// The only custom attributes the plan may create, when it may not create any it likes (a browser key's event).
    pub(super) may_create: Option<BTreeSet<String>>,
    /// The batch's view of the identity store.
    pub(super) view: Arc<StoreView>,
}

impl<A: IntercomApi> Executor<A> {
    /// An executor remembering up to `cache_size` contacts and companies.
    pub fn new(api: A, create_attributes: bool, cache_size: NonZeroUsize) -> Executor<A> {
        Executor {
            dialect: Dialect::of(api.version()),
            api,
            create_attributes,
            ids: KnownIds::new(cache_size),
            workspace: Workspace::default(),
            breaker: Breaker::new(BreakerPolicy::default()),
            identities: None,
            memory: WriteMemory::default(),
            store_health: StoreHealth::default(),
        }
    }

    /// The same executor, finding contacts in `store` before asking Intercom, and claiming a lead's key there before
    /// making it.
    pub fn with_identities(self, store: Arc<dyn IdentityStore>) -> Executor<A> {
        Executor { identities: Some(store), ..self }
    }

    /// The same executor, going by what the store says was written as `memory` allows.
    pub(crate) fn with_memory(self, memory: WriteMemory) -> Executor<A> {
        Executor { memory, ..self }
    }

    /// Whether it has an identity store that works now (not resting after a failure): without one, the forwarder
    /// does as it did before the store (an alias is handed back for `ALIAS_WAIT`, a visitor's lead is searched for).
    pub(crate) fn remembers(&self) -> bool {
        self.identities.is_some() && !self.store_health.resting()
    }

    /// The same executor with its circuit breaker following `policy`.
    pub(crate) fn with_breaker(self, policy: BreakerPolicy) -> Executor<A> {
        Executor { breaker: Breaker::new(policy), ..self }
    }

    /// The circuit breaker in front of its calls.
    pub fn breaker(&self) -> &Breaker {
        &self.breaker
    }

    /// The API this executor calls.
    pub fn api(&self) -> &A {
        &self.api
    }

    /// A run with `made` calls spent already, trying each call as `retry` allows, no try starting after `until`.
    pub(super) fn run(&self, retry: RetryPolicy, until: Instant, made: usize) -> Run<'_, A> {
        let intercom = Guarded::new(&self.api, &self.breaker, retry, until, made);
        Run { executor: self, intercom, dropped: Vec::new(), may_create: None, view: Arc::default() }
    }

    /// Carries out `plan` in order, trying a call that failed for a retryable reason again as `retry` allows, no try
    /// starting after `until`; the first failure that remains stops it (the caller hands the event back to SQS or
    /// dead-letters it). While the breaker is open, calls are withheld and fail at once.
    pub async fn execute(&self, plan: &Plan, retry: RetryPolicy, until: Instant) -> Result<Delivery, Failed> {
        self.execute_in(plan, retry, until, Arc::default()).await
    }

    /// `execute`, reading the identity store through the batch's `view`.
    pub(super) async fn execute_in(
        &self,
        plan: &Plan,
        retry: RetryPolicy,
        until: Instant,
        view: Arc<StoreView>,
    ) -> Result<Delivery, Failed> {
        let mut run = self.run(retry, until, 0);
        run.view = view;
        run.dropped = plan.dropped.clone();
        run.may_create = plan.may_create.clone();
        let outcome = run.carry_out(plan).await;
        let (skipped, dropped, calls) = run.finish(outcome)?;
        Ok(Delivery { calls, dropped, skipped })
    }
}

impl<A: IntercomApi> Run<'_, A> {
    /// Makes `request` through the breaker and this plan's retries.
    pub(super) async fn call(&self, request: Request) -> Result<Value, IntercomError> {
        self.intercom.send(request).await
    }

    /// What the run came to: `(value, dropped, calls)`, or the failure with the tries and calls it took.
    #[expect(clippy::result_large_err, reason = "made once per plan: the same `Failed` that `execute` answers")]
    pub(super) fn finish<T>(self, outcome: Result<T, IntercomError>) -> Result<(T, Vec<Dropped>, usize), Failed> {
        let calls = self.intercom.made();
        match outcome {
            Ok(value) => Ok((value, self.dropped, calls)),
            Err(error) => Err(Failed { error, attempts: self.intercom.attempts(), calls }),
        }
    }

    /// The plan's operations in order; `Some(reason)` when it turned out to have nothing Intercom can act on.
    async fn carry_out(&mut self, plan: &Plan) -> Result<Option<&'static str>, IntercomError> {
        let mut skipped = None;
        // Whether this plan created its user: only a new user can have a visitor's lead still to take in.
        let mut created = false;
        // The tags the contact and companies upserted showed.
        let mut contact_tags: Option<HashSet<TagId>> = None;
        let mut company_tags: HashMap<&str, Option<HashSet<String>>> = HashMap::new();
        for operation in &plan.operations {
            match operation {
                Operation::UpsertContact(upsert) => (created, contact_tags) = self.upsert_contact(upsert).await?,
                Operation::SubmitEvent(event) => self.submit_event(event).await?,
                Operation::UpsertCompany(company) => {
                    let tags = self.upsert_company(company).await?;
                    company_tags.insert(&company.company_id, tags);
                }
                Operation::TagContact { contact, tags, remove_missing } => {
                    self.tag_contact(contact, tags, *remove_missing, contact_tags.take()).await?;
                }
                Operation::TagCompany { company_id, tags, remove_missing } => {
                    let held = company_tags.remove(company_id.as_str()).flatten();
                    self.tag_company(company_id, tags, *remove_missing, held).await?;
                }
                Operation::AttachCompany { contact, company_id } => self.attach(contact, company_id).await?,
                Operation::DetachCompany { contact, company_id } => self.detach(contact, company_id).await?,
                Operation::Merge { from, into } => skipped = self.alias(from, into).await?.or(skipped),
                Operation::MergeVisitor { anonymous_id, into } => {
                    self.merge_visitor(anonymous_id, into, created).await?;
                }
            }
        }
        Ok(skipped)
    }
}
