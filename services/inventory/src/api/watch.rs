//! WatchStock: the handler, and [`hub`], the one poller that feeds every
//! open stream.

pub mod hub;

use backroom_proto::inventory::v1 as pb;
use backroom_shared::{catalog::Sku, errors::Violations};
use tokio_stream::StreamExt as _;
use tonic::{Request, Response, Status};

pub use self::hub::{WatchConfig, WatchHub, WatchStats};
use super::{InventoryApi, WatchStream, anyone, caller};
use crate::{
    db::repo,
    domain::{
        Error,
        stock::{MAX_WATCHED_SKUS, WatchStock},
        values::LocationId,
    },
};

pub(super) async fn watch_stock(
    api: &InventoryApi,
    request: Request<pb::WatchStockRequest>,
) -> Result<Response<WatchStream>, Status> {
    let caller = caller(&request, anyone)?;
    let address = backroom_shared::ratelimit::client_addr(&request).map(|c| c.key().to_string());
    let watch = WatchStock::try_from(request.into_inner())?;
    let hub = &api.deps.watch;
    // The cap first: a caller at it costs no query.
    let slot = hub.reserve(&caller, address.as_deref())?;
    let skus = watch.skus.clone();
    api.store()
        .read(move |conn| {
            let skus: Vec<&Sku> = skus.iter().collect();
            repo::products::require(conn, &skus).map(drop)
        })
        .await?;
    let levels = hub.subscribe(slot, caller, watch)?;
    Ok(Response::new(Box::pin(levels.map(|item| {
        item.map(|level| pb::StockLevel::from(&*level))
            .map_err(Status::from)
    }))))
}

impl TryFrom<pb::WatchStockRequest> for WatchStock {
    type Error = Error;

    fn try_from(req: pb::WatchStockRequest) -> Result<Self, Error> {
        let mut violations = Violations::default();
        if req.skus.is_empty() {
            violations.push("skus", "at least one SKU is required");
        } else if req.skus.len() > MAX_WATCHED_SKUS {
            violations.push("skus", format!("at most {MAX_WATCHED_SKUS} SKUs"));
        }
        let mut skus: Vec<Sku> = Vec::with_capacity(req.skus.len().min(MAX_WATCHED_SKUS));
        for (i, raw) in req.skus.iter().enumerate().take(MAX_WATCHED_SKUS) {
            if let Some(sku) = violations.check(Sku::parse(&format!("skus[{i}]"), raw)) {
                if skus.contains(&sku) {
                    violations.push(format!("skus[{i}]"), "duplicates an earlier SKU");
                } else {
                    skus.push(sku);
                }
            }
        }
        let location = violations.check(LocationId::parse_optional("location", &req.location));
        let location = violations.finish_with(location)?;
        Ok(Self { skus, location })
    }
}
