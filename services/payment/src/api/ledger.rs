//! The ledger RPCs (admins and services only): ListLedgerAccounts,
//! GetLedgerAccount, GetJournal, ListJournals and ListLedgerEntries.

use backroom_proto::payment::v1 as pb;
use backroom_shared::{
    auth::Caller,
    clock::to_timestamp,
    errors::Violations,
    paging::{self, page},
};
use tonic::{Request, Response, Status};
use tracing::instrument;

use super::{PaymentApi, optional, record};
use crate::{
    db::repo,
    domain::{
        Error, IntentId, JournalId, LedgerCode,
        ledger::{
            Direction, Entry, GetJournal, GetLedgerAccount, Journal, JournalKind, LedgerAccount,
            LedgerKind, ListJournals, ListLedgerAccounts, ListLedgerEntries,
        },
    },
};

impl TryFrom<pb::ListLedgerAccountsRequest> for ListLedgerAccounts {
    type Error = Error;

    fn try_from(req: pb::ListLedgerAccountsRequest) -> Result<Self, Error> {
        let mut violations = Violations::default();
        let page = page(&mut violations, req.page_size, &req.page_token, &[]);
        let page = violations.finish_with(page)?;
        Ok(Self { page })
    }
}

impl TryFrom<pb::GetLedgerAccountRequest> for GetLedgerAccount {
    type Error = Error;

    fn try_from(req: pb::GetLedgerAccountRequest) -> Result<Self, Error> {
        Ok(Self {
            code: LedgerCode::parse("name", &req.name)?,
        })
    }
}

impl TryFrom<pb::GetJournalRequest> for GetJournal {
    type Error = Error;

    fn try_from(req: pb::GetJournalRequest) -> Result<Self, Error> {
        Ok(Self {
            id: JournalId::parse("name", &req.name)?,
        })
    }
}

impl TryFrom<pb::ListJournalsRequest> for ListJournals {
    type Error = Error;

    fn try_from(req: pb::ListJournalsRequest) -> Result<Self, Error> {
        let mut violations = Violations::default();
        let intent = optional(&mut violations, &req.payment_intent, |raw| {
            IntentId::parse("payment_intent", raw)
        });
        let kind = match pb::JournalKind::try_from(req.kind) {
            Ok(pb::JournalKind::Unspecified) => Some(None),
            Ok(pb::JournalKind::AuthorizationHold) => Some(Some(JournalKind::AuthorizationHold)),
            Ok(pb::JournalKind::Capture) => Some(Some(JournalKind::Capture)),
            Ok(pb::JournalKind::Release) => Some(Some(JournalKind::Release)),
            Ok(pb::JournalKind::Refund) => Some(Some(JournalKind::Refund)),
            Err(_) => {
                violations.push("kind", "is not a known journal kind");
                None
            }
        };
        let page = page(
            &mut violations,
            req.page_size,
            &req.page_token,
            &[&req.payment_intent, &req.kind.to_string()],
        );
        let after = page.as_ref().and_then(|p| violations.check(p.after_uuid()));
        let (intent, kind, page, after) = violations.finish_with((intent, kind, page, after))?;
        Ok(Self {
            intent,
            kind,
            page,
            after: after.map(JournalId::from_uuid),
        })
    }
}

impl TryFrom<pb::ListLedgerEntriesRequest> for ListLedgerEntries {
    type Error = Error;

    fn try_from(req: pb::ListLedgerEntriesRequest) -> Result<Self, Error> {
        let mut violations = Violations::default();
        let code = violations.check(LedgerCode::parse("ledger_account", &req.ledger_account));
        let page = page(
            &mut violations,
            req.page_size,
            &req.page_token,
            &[&req.ledger_account],
        );
        // Entries are keyed by their sequence number.
        let after = page.as_ref().and_then(|p| {
            violations.check(
                p.after
                    .as_deref()
                    .map(|after| after.parse::<i64>().map_err(|_| paging::bad_token()))
                    .transpose(),
            )
        });
        let (code, page, after) = violations.finish_with((code, page, after))?;
        Ok(Self { code, page, after })
    }
}

fn kind_to_proto(kind: JournalKind) -> pb::JournalKind {
    match kind {
        JournalKind::AuthorizationHold => pb::JournalKind::AuthorizationHold,
        JournalKind::Capture => pb::JournalKind::Capture,
        JournalKind::Release => pb::JournalKind::Release,
        JournalKind::Refund => pb::JournalKind::Refund,
    }
}

impl From<&Entry> for pb::LedgerEntry {
    fn from(entry: &Entry) -> Self {
        Self {
            journal: entry.journal.name(),
            ledger_account: entry.account.name(),
            direction: match entry.direction {
                Direction::Debit => pb::EntryDirection::Debit,
                Direction::Credit => pb::EntryDirection::Credit,
            }
            .into(),
            amount: Some(entry.amount.into()),
            create_time: Some(to_timestamp(entry.created_at)),
        }
    }
}

impl From<&Journal> for pb::Journal {
    fn from(journal: &Journal) -> Self {
        Self {
            name: journal.id.name(),
            payment_intent: journal.intent.name(),
            kind: kind_to_proto(journal.kind).into(),
            entries: journal.entries.iter().map(Into::into).collect(),
            refund: journal
                .refund
                .map(|refund| refund.name_under(journal.intent))
                .unwrap_or_default(),
            create_time: Some(to_timestamp(journal.created_at)),
        }
    }
}

impl From<&LedgerAccount> for pb::LedgerAccount {
    fn from(account: &LedgerAccount) -> Self {
        Self {
            name: account.code.name(),
            code: account.code.as_str().to_owned(),
            display_name: account.display_name.clone(),
            kind: match account.kind {
                LedgerKind::Asset => pb::LedgerAccountKind::Asset,
                LedgerKind::Liability => pb::LedgerAccountKind::Liability,
                LedgerKind::Equity => pb::LedgerAccountKind::Equity,
                LedgerKind::Revenue => pb::LedgerAccountKind::Revenue,
                LedgerKind::Expense => pb::LedgerAccountKind::Expense,
            }
            .into(),
            balances: account.balances.iter().map(|b| (*b).into()).collect(),
        }
    }
}

/// Admins and services only: the ledger is the business's, not a customer's.
fn require_admin_or_service<T>(request: &Request<T>) -> Result<(), Status> {
    Caller::of(request)?
        .access()
        .require_admin_or_service()
        .map_err(|denied| Error::from(denied).into())
}

impl PaymentApi {
    #[instrument(skip_all)]
    pub(super) async fn ledger_accounts(
        &self,
        request: Request<pb::ListLedgerAccountsRequest>,
    ) -> Result<Response<pb::ListLedgerAccountsResponse>, Status> {
        require_admin_or_service(&request)?;
        let cmd = ListLedgerAccounts::try_from(request.into_inner())?;
        let page = cmd.page.clone();
        let accounts = self
            .store()
            .read(move |conn| repo::ledger::list_accounts(conn, &page))
            .await?;
        let (accounts, next_page_token) = cmd.page.finish(accounts, |a| a.code.as_str().to_owned());
        Ok(Response::new(pb::ListLedgerAccountsResponse {
            ledger_accounts: accounts.iter().map(Into::into).collect(),
            next_page_token,
        }))
    }

    #[instrument(skip_all, fields(ledger_account))]
    pub(super) async fn ledger_account(
        &self,
        request: Request<pb::GetLedgerAccountRequest>,
    ) -> Result<Response<pb::LedgerAccount>, Status> {
        require_admin_or_service(&request)?;
        let cmd = GetLedgerAccount::try_from(request.into_inner())?;
        record("ledger_account", &cmd.code);
        let account = self
            .store()
            .read(move |conn| {
                repo::ledger::get_account(conn, &cmd.code)?
                    .ok_or(Error::LedgerAccountNotFound(cmd.code))
            })
            .await?;
        Ok(Response::new((&account).into()))
    }

    #[instrument(skip_all, fields(journal))]
    pub(super) async fn journal(
        &self,
        request: Request<pb::GetJournalRequest>,
    ) -> Result<Response<pb::Journal>, Status> {
        require_admin_or_service(&request)?;
        let cmd = GetJournal::try_from(request.into_inner())?;
        record("journal", cmd.id);
        let journal = self
            .store()
            .read(move |conn| {
                repo::ledger::get_journal(conn, cmd.id)?.ok_or(Error::JournalNotFound(cmd.id))
            })
            .await?;
        Ok(Response::new((&journal).into()))
    }

    #[instrument(skip_all, fields(intent))]
    pub(super) async fn journals(
        &self,
        request: Request<pb::ListJournalsRequest>,
    ) -> Result<Response<pb::ListJournalsResponse>, Status> {
        require_admin_or_service(&request)?;
        let cmd = ListJournals::try_from(request.into_inner())?;
        if let Some(intent) = cmd.intent {
            record("intent", intent);
        }
        let lookup = cmd.clone();
        let journals = self
            .store()
            .read(move |conn| {
                repo::ledger::list_journals(
                    conn,
                    lookup.intent,
                    lookup.kind,
                    &lookup.page,
                    lookup.after,
                )
            })
            .await?;
        let (journals, next_page_token) = cmd.page.finish(journals, |j| j.id.to_string());
        Ok(Response::new(pb::ListJournalsResponse {
            journals: journals.iter().map(Into::into).collect(),
            next_page_token,
        }))
    }

    #[instrument(skip_all, fields(ledger_account))]
    pub(super) async fn ledger_entries(
        &self,
        request: Request<pb::ListLedgerEntriesRequest>,
    ) -> Result<Response<pb::ListLedgerEntriesResponse>, Status> {
        require_admin_or_service(&request)?;
        let cmd = ListLedgerEntries::try_from(request.into_inner())?;
        record("ledger_account", &cmd.code);
        let lookup = cmd.clone();
        let entries = self
            .store()
            .read(move |conn| {
                repo::ledger::get_account(conn, &lookup.code)?
                    .ok_or_else(|| Error::LedgerAccountNotFound(lookup.code.clone()))?;
                repo::ledger::list_entries(conn, &lookup.code, &lookup.page, lookup.after)
            })
            .await?;
        let (entries, next_page_token) = cmd.page.finish(entries, |e| e.id.to_string());
        Ok(Response::new(pb::ListLedgerEntriesResponse {
            ledger_entries: entries.iter().map(Into::into).collect(),
            next_page_token,
        }))
    }
}
