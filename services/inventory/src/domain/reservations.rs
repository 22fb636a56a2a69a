//! Reservations: an order's hold on stock, and its rules.
//!
//! - All or nothing: every line is reserved, or the reservation fails naming
//!   every short line ([`require_every_line`]) and takes nothing.
//! - One per order: a repeated ReserveStock answers with the reservation the
//!   order has, if it asks for the same lines ([`ReserveStock::matches`]).
//! - A hold lasts its [`Ttl`] (1 s – 1 h, 15 min by default); past its expiry
//!   an ACTIVE reservation no longer holds stock, whether or not the sweeper
//!   has returned its units yet ([`Reservation::state_at`]).
//! - ACTIVE is the only state that changes: to COMMITTED, RELEASED or EXPIRED
//!   ([`Ending`]). Commit and Release are the two [`Transition`]s a client
//!   asks for; each is idempotent, and [`Transition::decide`] is their state
//!   machine.

use std::collections::BTreeMap;

use backroom_shared::{
    catalog::{DiscountCode, Quantity, Sku},
    errors::FieldViolation,
};
use chrono::{DateTime, Duration, Utc};
use uuid::Uuid;

use super::{
    Error, products::sorted, stock::LevelKey, stock::MovementKind, values::LocationId,
    values::OrderId,
};

/// Shortest hold.
pub const MIN_TTL: Duration = Duration::seconds(1);
/// Longest hold.
pub const MAX_TTL: Duration = Duration::hours(1);
/// Hold when the request names none.
pub const DEFAULT_TTL: Duration = Duration::minutes(15);

backroom_shared::stored_enum!(
    /// A reservation's lifecycle state, as stored.
    pub ReservationState {
        /// Holding stock until its expiry.
        Active = "ACTIVE",
        /// Sold (terminal).
        Committed = "COMMITTED",
        /// Given back by a release (terminal).
        Released = "RELEASED",
        /// Given back on expiry (terminal).
        Expired = "EXPIRED",
    }
);

/// How long a reservation holds its stock: [`MIN_TTL`]–[`MAX_TTL`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ttl(Duration);

impl Ttl {
    /// Checks a requested hold given as (seconds, nanos); `None` is
    /// [`DEFAULT_TTL`].
    pub fn parse(field: &str, requested: Option<(i64, i32)>) -> Result<Self, FieldViolation> {
        let Some((seconds, nanos)) = requested else {
            return Ok(Self(DEFAULT_TTL));
        };
        // try_seconds: a hostile `seconds` (i64::MAX) must be a violation,
        // not chrono's overflow panic.
        let ttl = Duration::try_seconds(seconds)
            .filter(|_| (0..1_000_000_000).contains(&nanos))
            .map(|whole| whole + Duration::nanoseconds(i64::from(nanos)));
        match ttl {
            Some(ttl) if (MIN_TTL..=MAX_TTL).contains(&ttl) => Ok(Self(ttl)),
            _ => Err(FieldViolation::new(field, "must be between 1 s and 1 h")),
        }
    }

    /// The hold.
    pub fn get(self) -> Duration {
        self.0
    }
}

/// One line of a reservation: units of a product held at a location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReservationLine {
    /// The product.
    pub sku: Sku,
    /// Where the units are held.
    pub location: LocationId,
    /// Units.
    pub quantity: Quantity,
    /// Units of a committed line that have shipped.
    pub shipped: i64,
    /// Units of a committed line returned to available (they will not
    /// ship). `shipped + uncommitted ≤ quantity`; the rest are still
    /// committed at the location.
    pub uncommitted: i64,
    /// Shipped units that came back and went back on the shelf.
    pub restocked: i64,
    /// Shipped units that came back unsellable and were written off.
    /// `restocked + written_off ≤ shipped`.
    pub written_off: i64,
}

impl ReservationLine {
    /// Units still committed: neither shipped nor returned.
    pub fn unshipped(&self) -> i64 {
        self.quantity.get() - self.shipped - self.uncommitted
    }

    /// Shipped units that have not come back (neither restocked nor
    /// written off).
    pub fn out(&self) -> i64 {
        self.shipped - self.restocked - self.written_off
    }

    /// The level the line holds units of.
    pub fn level(&self) -> LevelKey {
        LevelKey {
            sku: self.sku.clone(),
            location: self.location.clone(),
        }
    }
}

/// An order's reservation with its lines (in request order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    /// The order.
    pub order_id: OrderId,
    /// The stored state.
    pub state: ReservationState,
    /// When an ACTIVE reservation stops holding stock.
    pub expire_at: DateTime<Utc>,
    /// When it was made.
    pub created_at: DateTime<Utc>,
    /// When its state last changed.
    pub updated_at: DateTime<Utc>,
    /// The lines.
    pub lines: Vec<ReservationLine>,
    /// The discount codes whose uses it holds (or held), ascending.
    pub discount_codes: Vec<DiscountCode>,
}

impl Reservation {
    /// The state as clients see it at `now`: an ACTIVE reservation past its
    /// expiry no longer holds stock, whether or not it was swept yet.
    pub fn state_at(&self, now: DateTime<Utc>) -> ReservationState {
        match self.state {
            ReservationState::Active if self.is_due(now) => ReservationState::Expired,
            state => state,
        }
    }

    /// Whether it is ACTIVE and past its expiry at `now`: its units are due
    /// back.
    pub fn is_due(&self, now: DateTime<Utc>) -> bool {
        self.state == ReservationState::Active && self.expire_at <= now
    }

    /// The lines in lock order, (sku, location): every transaction that
    /// touches several levels locks them in this order, so none waits for
    /// another in a cycle.
    pub fn lines_in_lock_order(&self) -> Vec<&ReservationLine> {
        let mut lines: Vec<&ReservationLine> = self.lines.iter().collect();
        lines.sort_by(|a, b| (&a.sku, &a.location).cmp(&(&b.sku, &b.location)));
        lines
    }
}

/// How an ACTIVE reservation ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// Sold: reserved → committed.
    Commit,
    /// Given back by a release: reserved → available.
    Release,
    /// Given back on expiry: reserved → available.
    Expire,
}

impl Ending {
    /// The state it ends in.
    pub fn state(self) -> ReservationState {
        match self {
            Self::Commit => ReservationState::Committed,
            Self::Release => ReservationState::Released,
            Self::Expire => ReservationState::Expired,
        }
    }

    /// The movement of every line's units.
    pub fn movement(self) -> MovementKind {
        match self {
            Self::Commit => MovementKind::Commit,
            Self::Release => MovementKind::Release,
            Self::Expire => MovementKind::Expire,
        }
    }
}

/// What a client asks of a reservation: CommitReservation or
/// ReleaseReservation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Sell the held units.
    Commit,
    /// Give the held units back.
    Release,
}

/// CommitReservation or ReleaseReservation: a transition of an order's
/// reservation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransitionReservation {
    /// The order.
    pub order_id: OrderId,
    /// Commit or release.
    pub transition: Transition,
}

/// What a [`Transition`] does to a reservation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Nothing: it is where the transition leads already (idempotent), or
    /// it ended in a way that answers the transition.
    Unchanged,
    /// End the ACTIVE reservation this way, moving its units.
    End(Ending),
}

impl Transition {
    /// The state machine: what this transition does to `reservation` at
    /// `now`.
    ///
    /// | state at now | Commit | Release |
    /// |---|---|---|
    /// | ACTIVE | end: COMMITTED | end: RELEASED |
    /// | COMMITTED | unchanged | RESERVATION_COMMITTED |
    /// | RELEASED | RESERVATION_RELEASED | unchanged |
    /// | EXPIRED | RESERVATION_EXPIRED | unchanged (units returned first if the sweeper has not yet) |
    pub fn decide(self, reservation: &Reservation, now: DateTime<Utc>) -> Result<Step, Error> {
        use ReservationState::{Active, Committed, Expired, Released};
        match (self, reservation.state_at(now)) {
            (Self::Commit, Active) => Ok(Step::End(Ending::Commit)),
            (Self::Commit, Committed) | (Self::Release, Released) => Ok(Step::Unchanged),
            (Self::Commit, Released) => Err(Error::ReservationReleased),
            (Self::Commit, Expired) => Err(Error::ReservationExpired),
            (Self::Release, Active) => Ok(Step::End(Ending::Release)),
            (Self::Release, Committed) => Err(Error::ReservationCommitted),
            (Self::Release, Expired) if reservation.is_due(now) => Ok(Step::End(Ending::Expire)),
            (Self::Release, Expired) => Ok(Step::Unchanged),
        }
    }
}

/// One requested line of a reservation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestedLine {
    /// The product.
    pub sku: Sku,
    /// Units.
    pub quantity: Quantity,
    /// The location, or `None` to let the server pick.
    pub location: Option<LocationId>,
}

/// ReserveStock: hold every line for an order, or nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReserveStock {
    /// The order (the reservation's id).
    pub order_id: OrderId,
    /// Distinct SKUs, in request order.
    pub lines: Vec<RequestedLine>,
    /// How long the hold lasts.
    pub ttl: Ttl,
    /// Distinct discount codes of which to hold one use each, ascending
    /// (the lock order).
    pub discount_codes: Vec<DiscountCode>,
    /// Who buys (per-customer limits); set whenever codes are.
    pub customer: Option<Uuid>,
}

impl ReserveStock {
    /// Whether the order's existing reservation answers this request: the
    /// same SKUs and quantities, and the same location wherever the request
    /// names one.
    pub fn matches(&self, existing: &Reservation) -> bool {
        if existing.lines.len() != self.lines.len()
            || existing.discount_codes != self.discount_codes
        {
            return false;
        }
        let stored: BTreeMap<&Sku, &ReservationLine> =
            existing.lines.iter().map(|l| (&l.sku, l)).collect();
        self.lines.iter().all(|requested| {
            stored.get(&requested.sku).is_some_and(|line| {
                line.quantity == requested.quantity
                    && requested
                        .location
                        .as_ref()
                        .is_none_or(|location| *location == line.location)
            })
        })
    }

    /// The lines with their request positions, in lock order (SKUs are
    /// distinct): no two reservations wait for each other's levels in
    /// opposite orders.
    pub fn lines_in_lock_order(&self) -> Vec<(usize, &RequestedLine)> {
        let mut lines: Vec<(usize, &RequestedLine)> = self.lines.iter().enumerate().collect();
        lines.sort_by(|a, b| a.1.sku.cmp(&b.1.sku));
        lines
    }

    /// When a reservation made at `now` expires.
    pub fn expire_at(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        now + self.ttl.get()
    }
}

/// All or nothing: INSUFFICIENT_STOCK naming every line that could not be
/// reserved (`short`), if any.
pub fn require_every_line(short: Vec<Sku>) -> Result<(), Error> {
    if short.is_empty() {
        Ok(())
    } else {
        Err(Error::InsufficientStock {
            skus: sorted(short),
            available: None,
        })
    }
}

/// What becomes of a committed reservation's units: committed ones ship,
/// or go back to available because they will not ship (the order canceled
/// them); shipped ones that come back (a return) go back on the shelf or
/// are written off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settlement {
    /// ShipReservation: committed units leave the building.
    Ship,
    /// UncommitReservation: committed units back to available.
    Uncommit,
    /// RestockReservation: shipped units back on the shelf.
    Restock,
    /// WriteOffReservation: shipped units back, unsellable.
    WriteOff,
}

impl Settlement {
    /// The movement of each line's units.
    pub fn movement(self) -> MovementKind {
        match self {
            Self::Ship => MovementKind::Ship,
            Self::Uncommit => MovementKind::Uncommit,
            Self::Restock => MovementKind::Return,
            Self::WriteOff => MovementKind::Damaged,
        }
    }

    /// Units of `line` this settlement may still take: committed ones for
    /// Ship and Uncommit, shipped ones not yet back for Restock and
    /// WriteOff.
    pub fn open(self, line: &ReservationLine) -> i64 {
        match self {
            Self::Ship | Self::Uncommit => line.unshipped(),
            Self::Restock | Self::WriteOff => line.out(),
        }
    }
}

/// ShipReservation or UncommitReservation: units of a committed
/// reservation's lines settled one way (a reservation settles in as many
/// calls as it takes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettleReservation {
    /// The order.
    pub order_id: OrderId,
    /// Units per SKU, distinct SKUs.
    pub lines: Vec<(Sku, Quantity)>,
    /// Ship or uncommit.
    pub settlement: Settlement,
}

impl SettleReservation {
    /// The rules: only a COMMITTED reservation settles, and no line settles
    /// more than it still holds committed — or, for Restock and WriteOff,
    /// more than it shipped and has not taken back (a SKU that is not a
    /// line of the reservation holds none). Returns each line with its units, in lock
    /// order.
    pub fn check<'r>(
        &self,
        reservation: &'r Reservation,
    ) -> Result<Vec<(&'r ReservationLine, i64)>, Error> {
        if reservation.state != ReservationState::Committed {
            return Err(Error::ReservationNotCommitted(reservation.state));
        }
        let mut shipped = Vec::with_capacity(self.lines.len());
        let mut exceeding = Vec::new();
        for (sku, units) in &self.lines {
            match reservation.lines.iter().find(|line| &line.sku == sku) {
                Some(line) if units.get() <= self.settlement.open(line) => {
                    shipped.push((line, units.get()))
                }
                _ => exceeding.push(sku.clone()),
            }
        }
        if !exceeding.is_empty() {
            let exceeding = sorted(exceeding);
            return Err(match self.settlement {
                Settlement::Ship | Settlement::Uncommit => Error::ExceedsCommitted(exceeding),
                Settlement::Restock | Settlement::WriteOff => Error::ExceedsShipped(exceeding),
            });
        }
        shipped.sort_by(|(a, _), (b, _)| (&a.sku, &a.location).cmp(&(&b.sku, &b.location)));
        Ok(shipped)
    }
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;

    fn reservation(
        state: ReservationState,
        expire_in: Duration,
        now: DateTime<Utc>,
    ) -> Reservation {
        Reservation {
            order_id: OrderId(Uuid::now_v7()),
            state,
            expire_at: now + expire_in,
            created_at: now,
            updated_at: now,
            lines: Vec::new(),
            discount_codes: Vec::new(),
        }
    }

    #[test]
    fn commit_and_release_are_idempotent_and_exclusive() {
        use ReservationState::{Active, Committed, Expired, Released};
        let now = Utc::now();
        let live = Duration::minutes(1);
        let cases = [
            (
                Active,
                live,
                Transition::Commit,
                Ok(Step::End(Ending::Commit)),
            ),
            (
                Active,
                live,
                Transition::Release,
                Ok(Step::End(Ending::Release)),
            ),
            (Committed, live, Transition::Commit, Ok(Step::Unchanged)),
            (
                Committed,
                live,
                Transition::Release,
                Err("RESERVATION_COMMITTED"),
            ),
            (Released, live, Transition::Release, Ok(Step::Unchanged)),
            (
                Released,
                live,
                Transition::Commit,
                Err("RESERVATION_RELEASED"),
            ),
            (Expired, -live, Transition::Release, Ok(Step::Unchanged)),
            (
                Expired,
                -live,
                Transition::Commit,
                Err("RESERVATION_EXPIRED"),
            ),
            // Due but not swept yet: a release returns the units as EXPIRED.
            (
                Active,
                -live,
                Transition::Release,
                Ok(Step::End(Ending::Expire)),
            ),
            (
                Active,
                Duration::zero(),
                Transition::Commit,
                Err("RESERVATION_EXPIRED"),
            ),
        ];
        for (state, expire_in, transition, expected) in cases {
            let decided = transition
                .decide(&reservation(state, expire_in, now), now)
                .map_err(|err| match err {
                    Error::ReservationCommitted => "RESERVATION_COMMITTED",
                    Error::ReservationReleased => "RESERVATION_RELEASED",
                    Error::ReservationExpired => "RESERVATION_EXPIRED",
                    other => panic!("unexpected {other}"),
                });
            assert_eq!(decided, expected, "{transition:?} of {state:?}");
        }
    }

    #[test]
    fn ttls_default_and_stay_within_bounds() {
        assert_eq!(Ttl::parse("ttl", None).unwrap().get(), DEFAULT_TTL);
        assert_eq!(Ttl::parse("ttl", Some((1, 0))).unwrap().get(), MIN_TTL);
        assert_eq!(Ttl::parse("ttl", Some((3600, 0))).unwrap().get(), MAX_TTL);
        for bad in [
            (0, 0),
            (3600, 1),
            (-5, 0),
            (1, -1),
            (1, 1_000_000_000),
            (i64::MAX, 0),
        ] {
            assert_eq!(
                Ttl::parse("ttl", Some(bad)).unwrap_err().field,
                "ttl",
                "{bad:?}"
            );
        }
    }
}
