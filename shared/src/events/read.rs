//! Reading the outbox: pages of sequenced events, the newest sequence, and
//! the `backroom.events.v1.Event` envelope.

use backroom_proto::events::v1 as pb;
use chrono::{DateTime, Utc};
use diesel::{PgConnection, QueryResult, dsl::max, prelude::*};
use uuid::Uuid;

use super::events;

/// One sequenced event as stored.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = events)]
pub struct StoredEvent {
    /// Feed position.
    pub sequence: Option<i64>,
    /// Unique id.
    pub id: Uuid,
    /// Payload type (full protobuf name).
    pub kind: String,
    /// Resource name.
    pub subject: String,
    /// When the change was made.
    pub occurred_at: DateTime<Utc>,
    /// Trace context of the change.
    pub traceparent: String,
    /// Encoded payload.
    pub payload: Vec<u8>,
}

impl StoredEvent {
    /// The feed position (stored events are always read sequenced).
    pub fn sequence(&self) -> i64 {
        self.sequence.unwrap_or_default()
    }

    /// The envelope, written by service `source`.
    pub fn to_proto(&self, source: &str) -> pb::Event {
        pb::Event {
            id: self.id.to_string(),
            r#type: self.kind.clone(),
            source: source.to_owned(),
            subject: self.subject.clone(),
            time: Some(prost_types::Timestamp {
                seconds: self.occurred_at.timestamp(),
                nanos: i32::try_from(self.occurred_at.timestamp_subsec_nanos()).unwrap_or(0),
            }),
            sequence: self.sequence(),
            traceparent: self.traceparent.clone(),
            payload: Some(prost_types::Any {
                type_url: type_url(&self.kind),
                value: self.payload.clone(),
            }),
        }
    }
}

/// `type.googleapis.com/<kind>`.
pub fn type_url(kind: &str) -> String {
    format!("type.googleapis.com/{kind}")
}

/// Up to `limit` sequenced events after `after`, oldest first, only of
/// `types` unless it is empty.
pub fn after(
    conn: &mut PgConnection,
    after: i64,
    types: &[String],
    limit: i64,
) -> QueryResult<Vec<StoredEvent>> {
    let mut query = events::table
        .filter(events::sequence.gt(after))
        .order(events::sequence.asc())
        .limit(limit)
        .select(StoredEvent::as_select())
        .into_boxed();
    if !types.is_empty() {
        query = query.filter(events::kind.eq_any(types));
    }
    query.load(conn)
}

/// The newest sequence (0 when nothing is sequenced yet).
pub fn newest(conn: &mut PgConnection) -> QueryResult<i64> {
    Ok(events::table
        .select(max(events::sequence))
        .first::<Option<i64>>(conn)?
        .unwrap_or(0))
}

/// The event with `sequence`, if sequenced.
pub fn at(conn: &mut PgConnection, sequence: i64) -> QueryResult<Option<StoredEvent>> {
    events::table
        .filter(events::sequence.eq(sequence))
        .select(StoredEvent::as_select())
        .first(conn)
        .optional()
}
