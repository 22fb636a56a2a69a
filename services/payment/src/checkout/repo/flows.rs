//! What the tables of the flows after checkout — shipments, cancellations,
//! returns, goodwill refunds — share: the recovery scan (claiming what has
//! waited longest since its last attempt, so flows waiting for an operator
//! never starve the others, and skipping rows another replica is claiming)
//! and the record of the remote steps a flow finished (a replay skips them,
//! however long after: the callees' idempotency keys expire, this does
//! not).

use chrono::{DateTime, Utc};
use diesel::{
    QueryableByName, RunQueryDsl as _,
    prelude::*,
    sql_query,
    sql_types::{BigInt, Text, Timestamptz},
};
use uuid::Uuid;

use crate::domain::{Error, OrderId};

/// A flow's table and the state in which recovery finishes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowTable {
    /// `shipments`, PENDING.
    Shipment,
    /// `cancellations`, PENDING.
    Cancellation,
    /// `returns`, RECEIVING.
    Return,
    /// `order_refunds`, PENDING.
    Refund,
}

impl FlowTable {
    fn table(self) -> &'static str {
        match self {
            Self::Shipment => "payment.shipments",
            Self::Cancellation => "payment.cancellations",
            Self::Return => "payment.returns",
            Self::Refund => "payment.order_refunds",
        }
    }

    fn waiting_state(self) -> &'static str {
        match self {
            Self::Return => "RECEIVING",
            Self::Shipment | Self::Cancellation | Self::Refund => "PENDING",
        }
    }

    /// The flow's name in logs.
    pub fn flow(self) -> &'static str {
        match self {
            Self::Shipment => "shipment",
            Self::Cancellation => "cancellation",
            Self::Return => "return",
            Self::Refund => "refund",
        }
    }
}

#[derive(QueryableByName)]
struct Due {
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    id: Uuid,
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    order_id: Uuid,
}

/// Claims for an attempt at `now` the flows of `table` waiting since before
/// `before` and not tried since then: at most `limit`, least recently tried
/// first, none another transaction is claiming. Returns each with its
/// order.
pub fn claim_due(
    conn: &mut PgConnection,
    table: FlowTable,
    now: DateTime<Utc>,
    before: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<(Uuid, OrderId)>, Error> {
    let t = table.table();
    let due: Vec<Due> = sql_query(format!(
        "UPDATE {t} SET attempted_at = $1 WHERE id IN (
             SELECT id FROM {t}
             WHERE state = $2 AND updated_at < $3 AND (attempted_at IS NULL OR attempted_at < $3)
             ORDER BY attempted_at NULLS FIRST, updated_at
             LIMIT $4 FOR UPDATE SKIP LOCKED)
         RETURNING id, order_id"
    ))
    .bind::<Timestamptz, _>(now)
    .bind::<Text, _>(table.waiting_state())
    .bind::<Timestamptz, _>(before)
    .bind::<BigInt, _>(limit)
    .load(conn)?;
    Ok(due
        .into_iter()
        .map(|d| (d.id, OrderId::from_uuid(d.order_id)))
        .collect())
}

/// Records that flow `id` of `table` finished its remote step `step`.
pub fn step_done(
    conn: &mut PgConnection,
    table: FlowTable,
    id: Uuid,
    step: &str,
) -> Result<(), Error> {
    sql_query(format!(
        "UPDATE {} SET steps_done = array_append(steps_done, $1)
         WHERE id = $2 AND NOT ($1 = ANY (steps_done))",
        table.table()
    ))
    .bind::<Text, _>(step)
    .bind::<diesel::sql_types::Uuid, _>(id)
    .execute(conn)?;
    Ok(())
}
