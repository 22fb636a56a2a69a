//! GetStockLevel, ListStockLevels, AdjustStock, ListStockMovements.

use backroom_proto::inventory::v1 as pb;
use backroom_shared::{
    auth::Access,
    clock::to_timestamp,
    errors::Violations,
    idempotency,
    paging::{self, page},
    validate::optional_text,
};
use tonic::{Request, Response, Status};

use super::{InventoryApi, Retryable, anyone, caller, mutation, one_violation};
use crate::{
    db::repo::{self, Lock},
    domain::{
        Error,
        products::ProductScope,
        stock::{
            AdjustStock, AdjustmentReason, LevelCursor, LevelKey, ListStockLevels,
            ListStockMovements, MAX_NOTE, Movement, MovementCursor, MovementKind, MovementScope,
            StockLevel,
        },
        values::{LocationId, OrderId},
    },
};

pub(super) async fn get(
    api: &InventoryApi,
    request: Request<pb::GetStockLevelRequest>,
) -> Result<Response<pb::StockLevel>, Status> {
    caller(&request, anyone)?;
    let key = LevelKey::parse("name", &request.get_ref().name).map_err(one_violation)?;
    let level = api
        .store()
        .write(move |conn, now| {
            // Holds past their expiry do not count: give them back first.
            repo::reservations::expire_due(
                conn,
                Some(std::slice::from_ref(&key.sku)),
                now,
                Lock::SkipLocked,
            )?;
            repo::stock::get(conn, &key)
        })
        .await?;
    Ok(Response::new((&level).into()))
}

pub(super) async fn list(
    api: &InventoryApi,
    request: Request<pb::ListStockLevelsRequest>,
) -> Result<Response<pb::ListStockLevelsResponse>, Status> {
    caller(&request, anyone)?;
    let list = ListStockLevels::try_from(request.into_inner())?;
    let page = list.page.clone();
    let levels = api
        .store()
        .write(move |conn, now| {
            let skus = list.scope.sku().map(std::slice::from_ref);
            repo::reservations::expire_due(conn, skus, now, Lock::SkipLocked)?;
            repo::stock::list(conn, &list)
        })
        .await?;
    let (levels, next_page_token) = page.finish(levels, |l| LevelCursor::of(l).encode());
    Ok(Response::new(pb::ListStockLevelsResponse {
        stock_levels: levels.iter().map(pb::StockLevel::from).collect(),
        next_page_token,
    }))
}

pub(super) async fn adjust(
    api: &InventoryApi,
    request: Request<pb::AdjustStockRequest>,
) -> Result<Response<pb::StockLevel>, Status> {
    let caller = caller(&request, Access::require_admin)?;
    let adjustment = mutation::<_, AdjustStock>(&caller, request.into_inner())?;
    let level = adjustment
        .run(api.store(), |conn, cmd, now| {
            Ok(pb::StockLevel::from(&repo::stock::adjust(conn, cmd, now)?))
        })
        .await?;
    tracing::info!(level = %level.name, version = level.version, "stock adjusted");
    Ok(Response::new(level))
}

pub(super) async fn movements(
    api: &InventoryApi,
    request: Request<pb::ListStockMovementsRequest>,
) -> Result<Response<pb::ListStockMovementsResponse>, Status> {
    caller(&request, Access::require_admin)?;
    let list = ListStockMovements::try_from(request.into_inner())?;
    let page = list.page.clone();
    let movements = api
        .store()
        .read(move |conn| repo::stock::movements(conn, &list))
        .await?;
    let (movements, next_page_token) = page.finish(movements, |m| MovementCursor::of(m).encode());
    Ok(Response::new(pb::ListStockMovementsResponse {
        stock_movements: movements.iter().map(pb::StockMovement::from).collect(),
        next_page_token,
    }))
}

impl TryFrom<pb::ListStockLevelsRequest> for ListStockLevels {
    type Error = Error;

    fn try_from(req: pb::ListStockLevelsRequest) -> Result<Self, Error> {
        let mut violations = Violations::default();
        let scope = violations.check(ProductScope::parse("parent", &req.parent));
        let location = violations.check(LocationId::parse_optional("location", &req.location));
        let page = page(
            &mut violations,
            req.page_size,
            &req.page_token,
            &[&req.parent, &req.location],
        );
        let (scope, location, page) = violations.finish_with((scope, location, page))?;
        let after = cursor(page.after.as_deref(), LevelCursor::decode)?;
        Ok(Self {
            scope,
            location,
            page,
            after,
        })
    }
}

impl TryFrom<pb::ListStockMovementsRequest> for ListStockMovements {
    type Error = Error;

    fn try_from(req: pb::ListStockMovementsRequest) -> Result<Self, Error> {
        let mut violations = Violations::default();
        let scope = violations.check(MovementScope::parse("parent", &req.parent));
        let reservation = if req.reservation.is_empty() {
            Some(None)
        } else {
            violations
                .check(OrderId::parse_reservation_name(
                    "reservation",
                    &req.reservation,
                ))
                .map(Some)
        };
        let page = page(
            &mut violations,
            req.page_size,
            &req.page_token,
            &[&req.parent, &req.reservation],
        );
        let (scope, reservation, page) = violations.finish_with((scope, reservation, page))?;
        let after = cursor(page.after.as_deref(), MovementCursor::decode)?;
        Ok(Self {
            scope,
            reservation,
            page,
            after,
        })
    }
}

/// The sort key a page token carries, decoded; a token whose key does not
/// decode is one this API did not issue.
fn cursor<T>(
    after: Option<&str>,
    decode: impl FnOnce(&str) -> Option<T>,
) -> Result<Option<T>, Error> {
    after
        .map(|raw| decode(raw).ok_or_else(|| one_violation(paging::bad_token())))
        .transpose()
}

impl Retryable for pb::AdjustStockRequest {
    const METHOD: &'static str = "AdjustStock";

    fn request_id(&self) -> &str {
        &self.request_id
    }

    fn fingerprint(&self) -> Vec<u8> {
        idempotency::fingerprint(&pb::AdjustStockRequest {
            request_id: String::new(),
            ..self.clone()
        })
    }
}

impl TryFrom<pb::AdjustStockRequest> for AdjustStock {
    type Error = Error;

    fn try_from(req: pb::AdjustStockRequest) -> Result<Self, Error> {
        let mut violations = Violations::default();
        let key = violations.check(LevelKey::parse("name", &req.name));
        let reason = pb::StockAdjustmentReason::try_from(req.reason)
            .ok()
            .and_then(adjustment_reason);
        if reason.is_none() {
            violations.push("reason", "is required (a StockAdjustmentReason)");
        }
        violations.check(AdjustStock::check_delta("delta", req.delta, reason));
        let note = violations.check(optional_text("note", &req.note, MAX_NOTE));
        if req.expected_version < 0 {
            violations.push("expected_version", "must not be negative");
        }
        let (key, reason, note) = violations.finish_with((key, reason, note))?;
        Ok(Self {
            key,
            delta: req.delta,
            reason,
            note,
            expected_version: req.expected_version,
        })
    }
}

/// The domain's reason of a proto reason (`None`: unspecified).
fn adjustment_reason(reason: pb::StockAdjustmentReason) -> Option<AdjustmentReason> {
    use pb::StockAdjustmentReason as Reason;
    match reason {
        Reason::Unspecified => None,
        Reason::Received => Some(AdjustmentReason::Received),
        Reason::Damaged => Some(AdjustmentReason::Damaged),
        Reason::Lost => Some(AdjustmentReason::Lost),
        Reason::CycleCount => Some(AdjustmentReason::CycleCount),
        Reason::Returned => Some(AdjustmentReason::Returned),
        Reason::Correction => Some(AdjustmentReason::Correction),
    }
}

/// The proto reason of a movement's (`UNSPECIFIED`: not an adjustment).
fn proto_reason(reason: Option<AdjustmentReason>) -> pb::StockAdjustmentReason {
    use pb::StockAdjustmentReason as Reason;
    match reason {
        None => Reason::Unspecified,
        Some(AdjustmentReason::Received) => Reason::Received,
        Some(AdjustmentReason::Damaged) => Reason::Damaged,
        Some(AdjustmentReason::Lost) => Reason::Lost,
        Some(AdjustmentReason::CycleCount) => Reason::CycleCount,
        Some(AdjustmentReason::Returned) => Reason::Returned,
        Some(AdjustmentReason::Correction) => Reason::Correction,
    }
}

impl From<&StockLevel> for pb::StockLevel {
    fn from(level: &StockLevel) -> Self {
        Self {
            name: level.key.name(),
            sku: level.key.sku.as_str().to_owned(),
            location: level.key.location.as_str().to_owned(),
            on_hand: level.on_hand(),
            available: level.available,
            reserved: level.reserved,
            committed: level.committed,
            version: level.version,
            update_time: Some(to_timestamp(level.updated_at)),
        }
    }
}

impl From<&Movement> for pb::StockMovement {
    fn from(movement: &Movement) -> Self {
        let kind = match movement.kind {
            MovementKind::Adjustment => pb::StockMovementKind::Adjustment,
            MovementKind::Reserve => pb::StockMovementKind::Reserve,
            MovementKind::Release => pb::StockMovementKind::Release,
            MovementKind::Commit => pb::StockMovementKind::Commit,
            MovementKind::Expire => pb::StockMovementKind::Expire,
            MovementKind::Ship => pb::StockMovementKind::Ship,
            MovementKind::Uncommit => pb::StockMovementKind::Uncommit,
            MovementKind::Return => pb::StockMovementKind::Return,
            MovementKind::Damaged => pb::StockMovementKind::Damaged,
        };
        Self {
            name: movement.name(),
            sku: movement.key.sku.as_str().to_owned(),
            location: movement.key.location.as_str().to_owned(),
            kind: kind as i32,
            delta_on_hand: movement.deltas.on_hand(),
            delta_available: movement.deltas.available,
            delta_reserved: movement.deltas.reserved,
            delta_committed: movement.deltas.committed,
            reason: proto_reason(movement.reason) as i32,
            note: movement.note.clone(),
            reservation: movement
                .order_id
                .map(OrderId::reservation_name)
                .unwrap_or_default(),
            create_time: Some(to_timestamp(movement.created_at)),
            sequence: movement.sequence,
        }
    }
}
