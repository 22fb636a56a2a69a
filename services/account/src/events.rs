//! What the account service tells other services: the domain events of
//! `backroom/account/v1/events.proto`, recorded with
//! [`backroom_shared::events::record`] in the transaction of the change
//! (the repository calls these on its connection). Subject: the account.
//! No payload holds a password, a hash or a token; disables, role and
//! password changes carry the account's new security version, which the
//! other services' verifiers apply as the events arrive.

use backroom_proto::account::v1 as pb;
use backroom_shared::events::{NewEvent, record};
use chrono::{DateTime, Utc};
use diesel::PgConnection;

use crate::{
    api::{account_name, account_to_proto},
    domain::{Account, Error},
};

/// An account was created.
pub fn registered(
    conn: &mut PgConnection,
    account: &Account,
    now: DateTime<Utc>,
) -> Result<(), Error> {
    let payload = pb::AccountRegistered {
        account: Some(account_to_proto(account, now)),
    };
    Ok(record(
        conn,
        now,
        [NewEvent::new(account_name(account.id), &payload)],
    )?)
}

/// An account was disabled or enabled again (as it is now).
pub fn disabled_changed(
    conn: &mut PgConnection,
    account: &Account,
    now: DateTime<Utc>,
) -> Result<(), Error> {
    let security_version = account.security_version;
    let subject = account_name(account.id);
    let wire = Some(account_to_proto(account, now));
    let event = if account.disabled {
        NewEvent::new(
            subject,
            &pb::AccountDisabled {
                account: wire,
                security_version,
            },
        )
    } else {
        NewEvent::new(
            subject,
            &pb::AccountEnabled {
                account: wire,
                security_version,
            },
        )
    };
    Ok(record(conn, now, [event])?)
}

/// An account's roles changed from `previous_roles`.
pub fn roles_changed(
    conn: &mut PgConnection,
    account: &Account,
    previous_roles: Vec<String>,
    now: DateTime<Utc>,
) -> Result<(), Error> {
    let payload = pb::AccountRolesChanged {
        account: Some(account_to_proto(account, now)),
        previous_roles,
        security_version: account.security_version,
    };
    Ok(record(
        conn,
        now,
        [NewEvent::new(account_name(account.id), &payload)],
    )?)
}

/// An account's password changed.
pub fn password_changed(
    conn: &mut PgConnection,
    account: &Account,
    now: DateTime<Utc>,
) -> Result<(), Error> {
    let payload = pb::AccountPasswordChanged {
        account: account_name(account.id),
        security_version: account.security_version,
    };
    Ok(record(
        conn,
        now,
        [NewEvent::new(account_name(account.id), &payload)],
    )?)
}
