//! [`Revocations`]: which accounts' older access tokens no longer count.
//!
//! Access tokens are stateless JWTs, so disabling an account, demoting an
//! admin or changing a password cannot recall the tokens already out there.
//! Instead every token carries the account's *security version* (`sv`),
//! which those changes raise, and every verifier keeps the list of accounts
//! whose version moved recently (AccountService.ListTokenRevocations): a
//! token whose `sv` is below its account's current version is refused
//! (UNAUTHENTICATED TOKEN_REVOKED).
//!
//! The list is polled every [`RevocationPolicy::poll_interval`] (2 s by
//! default), so a revocation takes effect everywhere within about that long.
//! If the list cannot be refreshed (the account service is down), the
//! verifier fails closed, but not at once: tokens with role admin are
//! refused (UNAVAILABLE) once the list is older than
//! [`RevocationPolicy::privileged_staleness`] (10 s), every other person's
//! token once it is older than [`RevocationPolicy::staleness`] (60 s).
//! Service principals are configured, not revoked: their tokens are not
//! checked here.

use std::{
    collections::HashMap,
    future::Future,
    pin::Pin,
    sync::{Arc, RwLock, Weak},
    time::{Duration, Instant},
};

use uuid::Uuid;

use super::{ServiceCredentials, TokenError, audience};

/// Fetches the current revocation list: account id → the least security
/// version its tokens must carry.
pub type RevocationFetcher = Arc<
    dyn Fn() -> Pin<Box<dyn Future<Output = anyhow::Result<HashMap<Uuid, i64>>> + Send>>
        + Send
        + Sync,
>;

/// How fresh the revocation list is kept, and how stale it may get before
/// tokens are refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RevocationPolicy {
    /// How often the list is fetched.
    pub poll_interval: Duration,
    /// Oldest list that still admits a token with role admin.
    pub privileged_staleness: Duration,
    /// Oldest list that still admits any other person's token.
    pub staleness: Duration,
}

impl Default for RevocationPolicy {
    fn default() -> Self {
        Self::polling_every(Duration::from_secs(2))
    }
}

impl RevocationPolicy {
    /// Polls every `interval`; admin tokens need a list at most five polls
    /// old (at least 10 s), other tokens one at most a minute old.
    pub fn polling_every(interval: Duration) -> Self {
        let interval = interval.max(Duration::from_millis(50));
        Self {
            poll_interval: interval,
            privileged_staleness: (interval * 5).max(Duration::from_secs(10)),
            staleness: (interval * 5).max(Duration::from_secs(60)),
        }
    }
}

/// Least time between two fetches that calls (not the schedule) trigger.
const MIN_ON_DEMAND_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug, Default)]
struct Snapshot {
    min_versions: HashMap<Uuid, i64>,
    fetched_at: Option<Instant>,
    /// Versions applied from account events since the last fetch began
    /// (a fetch that started before them must not undo them).
    pushed: Vec<(Uuid, i64, Instant)>,
}

/// The revocation list of one verifier; see the module docs.
pub struct Revocations {
    fetch: RevocationFetcher,
    policy: RevocationPolicy,
    snapshot: RwLock<Snapshot>,
    /// Held while fetching (one fetch at a time); when the last fetch that
    /// a call (not the schedule) asked for began.
    fetching: tokio::sync::Mutex<Option<Instant>>,
    /// Where account events come from, when the list is the account
    /// service's ([`Self::follow_events`]).
    events: Option<(crate::client::TracedChannel, Arc<ServiceCredentials>)>,
}

impl std::fmt::Debug for Revocations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let snapshot = self.snapshot.read().unwrap_or_else(|e| e.into_inner());
        f.debug_struct("Revocations")
            .field("policy", &self.policy)
            .field("revoked_accounts", &snapshot.min_versions.len())
            .field("age", &snapshot.fetched_at.map(|at| at.elapsed()))
            .finish_non_exhaustive()
    }
}

impl Revocations {
    /// A list fetched with `fetch` under `policy`.
    pub fn new(fetch: RevocationFetcher, policy: RevocationPolicy) -> Self {
        Self {
            fetch,
            policy,
            snapshot: RwLock::new(Snapshot::default()),
            fetching: tokio::sync::Mutex::new(None),
            events: None,
        }
    }

    /// The list of the account service behind `channel`, read with this
    /// service's `credentials` (ListTokenRevocations needs role service).
    pub fn from_account_service(
        channel: crate::client::TracedChannel,
        credentials: Arc<ServiceCredentials>,
        policy: RevocationPolicy,
    ) -> Self {
        use backroom_proto::account::v1::{
            ListTokenRevocationsRequest, account_service_client::AccountServiceClient,
        };
        let events = Some((channel.clone(), credentials.clone()));
        let fetch: RevocationFetcher = Arc::new(move || {
            let mut client = AccountServiceClient::new(channel.clone());
            let credentials = credentials.clone();
            Box::pin(async move {
                let mut versions = HashMap::new();
                let mut page_token = String::new();
                loop {
                    let request = credentials
                        .authorize(
                            audience::ACCOUNT,
                            tonic::Request::new(ListTokenRevocationsRequest {
                                page_size: 1000,
                                page_token,
                            }),
                        )
                        .await?;
                    let page = client.list_token_revocations(request).await?.into_inner();
                    for revocation in page.token_revocations {
                        let id = revocation
                            .account
                            .strip_prefix("accounts/")
                            .and_then(|id| Uuid::try_parse(id).ok())
                            .ok_or_else(|| {
                                anyhow::anyhow!("malformed revocation {:?}", revocation.account)
                            })?;
                        versions.insert(id, revocation.min_security_version);
                    }
                    if page.next_page_token.is_empty() {
                        return Ok(versions);
                    }
                    page_token = page.next_page_token;
                }
            })
        });
        Self {
            events,
            ..Self::new(fetch, policy)
        }
    }

    /// Raises `account`'s least security version to `min_version` now (an
    /// account event said its version moved): its older tokens stop
    /// counting at once, without waiting for the next fetch.
    pub fn apply(&self, account: Uuid, min_version: i64) {
        let mut snapshot = self.snapshot.write().unwrap_or_else(|e| e.into_inner());
        let entry = snapshot.min_versions.entry(account).or_insert(min_version);
        *entry = (*entry).max(min_version);
        snapshot.pushed.push((account, min_version, Instant::now()));
    }

    /// Follows the account service's events (WatchEvents: disables, role
    /// and password changes) and applies each security version as it
    /// arrives, until the list is dropped; reconnects with backoff and
    /// resumes after the last event seen. The poll stays the backstop (and
    /// the fail-closed staleness rule still holds): with the stream up a
    /// revocation takes effect within the event's trip (milliseconds), with
    /// it down within the poll interval.
    pub async fn follow_events(revocations: Weak<Self>) {
        use backroom_proto::{
            account::v1 as account,
            events::v1::{WatchEventsRequest, event_service_client::EventServiceClient},
        };
        use futures_util::StreamExt as _;
        use prost::Name as _;
        let Some((channel, credentials)) = revocations.upgrade().and_then(|r| r.events.clone())
        else {
            return;
        };
        let types = vec![
            account::AccountDisabled::full_name(),
            account::AccountRolesChanged::full_name(),
            account::AccountPasswordChanged::full_name(),
        ];
        let mut after = -1;
        let mut backoff = Duration::from_millis(100);
        loop {
            let request = WatchEventsRequest {
                after_sequence: after,
                types: types.clone(),
            };
            let stream = async {
                let request = credentials
                    .authorize(audience::ACCOUNT, tonic::Request::new(request))
                    .await?;
                anyhow::Ok(
                    EventServiceClient::new(channel.clone())
                        .watch_events(request)
                        .await?
                        .into_inner(),
                )
            }
            .await;
            match stream {
                Ok(mut stream) => {
                    backoff = Duration::from_millis(100);
                    while let Some(event) = stream.next().await {
                        let Ok(event) = event else { break };
                        let Some(list) = revocations.upgrade() else {
                            return;
                        };
                        after = event.sequence;
                        if let Some((account, version)) = revoked_by(&event) {
                            list.apply(account, version);
                            tracing::debug!(%account, version, "revocation applied from an account event");
                        }
                    }
                }
                Err(err) => {
                    tracing::warn!(
                        error = format!("{err:#}"),
                        "cannot follow the account events"
                    );
                }
            }
            if revocations.strong_count() == 0 {
                return;
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    /// The policy in force.
    pub fn policy(&self) -> RevocationPolicy {
        self.policy
    }

    /// Whether a token of `account` with security version `sv` still counts;
    /// `privileged` tokens (role admin) need a fresher list.
    pub async fn check(&self, account: Uuid, sv: i64, privileged: bool) -> Result<(), TokenError> {
        let bound = if privileged {
            self.policy.privileged_staleness
        } else {
            self.policy.staleness
        };
        if !self.fresh_within(bound) {
            // Too stale to trust: try once now (rate-limited), then decide.
            let _ = self.refresh(false).await;
            if !self.fresh_within(bound) {
                return Err(TokenError::RevocationsUnavailable);
            }
        }
        let snapshot = self.snapshot.read().unwrap_or_else(|e| e.into_inner());
        match snapshot.min_versions.get(&account) {
            Some(min) if *min > sv => Err(TokenError::Revoked),
            _ => Ok(()),
        }
    }

    fn fresh_within(&self, bound: Duration) -> bool {
        self.snapshot
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .fetched_at
            .is_some_and(|at| at.elapsed() <= bound)
    }

    /// Fetches the list once. Calls waiting on a stale list share one
    /// fetch at a time (the lock), and when not `scheduled` fetch at most
    /// once per [`MIN_ON_DEMAND_INTERVAL`], so a flood of calls while the
    /// account service is down cannot become a flood of fetches.
    pub async fn refresh(&self, scheduled: bool) -> anyhow::Result<()> {
        let mut last_on_demand = self.fetching.lock().await;
        let started = Instant::now();
        if !scheduled {
            // Someone refreshed while this call waited for the lock: done.
            if self.fresh_within(self.policy.poll_interval) {
                return Ok(());
            }
            if last_on_demand.is_some_and(|at| at.elapsed() < MIN_ON_DEMAND_INTERVAL) {
                return Ok(());
            }
            *last_on_demand = Some(started);
        }
        let versions = (self.fetch)().await.inspect_err(|err| {
            tracing::warn!(%err, "cannot refresh the token revocation list");
        })?;
        let mut snapshot = self.snapshot.write().unwrap_or_else(|e| e.into_inner());
        // The list is as fresh as the moment the fetch started; versions
        // pushed by events since then may be newer than it.
        snapshot.fetched_at = Some(started);
        snapshot.min_versions = versions;
        snapshot.pushed.retain(|(_, _, at)| *at >= started);
        let pushed = snapshot.pushed.clone();
        for (account, version, _) in pushed {
            let entry = snapshot.min_versions.entry(account).or_insert(version);
            *entry = (*entry).max(version);
        }
        Ok(())
    }

    /// Refreshes the list every poll interval until it is dropped.
    pub async fn run(revocations: Weak<Self>) {
        let Some(interval) = revocations.upgrade().map(|r| r.policy.poll_interval) else {
            return;
        };
        super::refresh_every(revocations, interval, |revocations| async move {
            // Failures are logged by `refresh`.
            let _ = revocations.refresh(true).await;
        })
        .await;
    }
}

/// The account and least security version an account event asks for: a
/// disable, a role change or a password change makes the tokens below the
/// account's new version stop counting.
fn revoked_by(event: &backroom_proto::events::v1::Event) -> Option<(Uuid, i64)> {
    use backroom_proto::account::v1 as account;
    use prost::{Message as _, Name as _};
    let payload = event.payload.as_ref()?;
    let version = if event.r#type == account::AccountDisabled::full_name() {
        account::AccountDisabled::decode(payload.value.as_slice())
            .ok()?
            .security_version
    } else if event.r#type == account::AccountRolesChanged::full_name() {
        account::AccountRolesChanged::decode(payload.value.as_slice())
            .ok()?
            .security_version
    } else if event.r#type == account::AccountPasswordChanged::full_name() {
        account::AccountPasswordChanged::decode(payload.value.as_slice())
            .ok()?
            .security_version
    } else {
        return None;
    };
    let id = event.subject.strip_prefix("accounts/")?;
    Some((Uuid::try_parse(id).ok()?, version))
}
