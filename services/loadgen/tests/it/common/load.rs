//! The mixed load's calls (shoppers, sessions, cards, restocks, abandoned
//! reservations) and the bookkeeping of every call attempt and every
//! acknowledged write.

use super::*;

/// One call the load made: when it began, how long its answer took, and
/// how it failed (if it did).
#[derive(Debug, Clone)]
pub struct Attempt {
    pub service: Service,
    pub rpc: &'static str,
    pub began: Instant,
    pub took: Duration,
    /// The code and the ErrorInfo reason (or, without one, the message).
    pub failure: Option<(Code, String)>,
}

impl Attempt {
    /// Whether the call was in flight at some time between `from` and `to`.
    pub fn overlaps(&self, from: Instant, to: Instant) -> bool {
        self.began < to && self.began + self.took > from
    }
}

/// Calls in flight per service, every retryable failure seen by RPC and
/// code, and every call attempt.
pub struct Tally {
    in_flight: HashMap<Service, AtomicUsize>,
    pub retried: Mutex<BTreeMap<String, usize>>,
    /// Operations acknowledged (any kind).
    pub acknowledged: AtomicUsize,
    pub attempts: Mutex<Vec<Attempt>>,
    /// Woken whenever something a test waits on changed (a call answered, a
    /// health sample taken): waits are on events, not sleeps.
    pub changed: tokio::sync::Notify,
}

impl Tally {
    pub fn new() -> Self {
        Self {
            in_flight: Service::ALL
                .iter()
                .map(|s| (*s, AtomicUsize::new(0)))
                .collect(),
            retried: Mutex::new(BTreeMap::new()),
            acknowledged: AtomicUsize::new(0),
            attempts: Mutex::new(Vec::new()),
            changed: tokio::sync::Notify::new(),
        }
    }

    /// Waits until `done` holds, checking it whenever [`Self::changed`]
    /// fires; panics with `what` after `timeout`.
    pub async fn wait_until(&self, what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let changed = self.changed.notified();
            if done() {
                return;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                assert!(done(), "{what}: not within {timeout:?}");
                return;
            }
        }
    }

    pub fn in_flight(&self, service: Service) -> usize {
        self.in_flight[&service].load(Ordering::SeqCst)
    }

    pub fn note_retry(&self, rpc: &str, status: &Status) {
        *self
            .retried
            .lock()
            .unwrap()
            .entry(format!("{rpc} {:?}", status.code()))
            .or_default() += 1;
    }

    /// Makes one call to `service`, counted in flight and recorded as an
    /// [`Attempt`].
    pub async fn attempt<T>(
        &self,
        service: Service,
        rpc: &'static str,
        call: impl Future<Output = Result<Response<T>, Status>>,
    ) -> Result<Response<T>, Status> {
        self.in_flight[&service].fetch_add(1, Ordering::SeqCst);
        let began = Instant::now();
        let result = call.await;
        let took = began.elapsed();
        self.in_flight[&service].fetch_sub(1, Ordering::SeqCst);
        let failure = result.as_ref().err().map(|status| {
            let why = reason_of(status).unwrap_or_else(|| status.message().to_owned());
            (status.code(), why)
        });
        self.attempts.lock().unwrap().push(Attempt {
            service,
            rpc,
            began,
            took,
            failure,
        });
        self.changed.notify_waiters();
        result
    }

    /// Sends the request `make` builds until it gets a definitive answer:
    /// OK, or an error that is not [`retryable`].
    pub async fn answered<T, F, Fut>(
        &self,
        service: Service,
        rpc: &'static str,
        mut make: F,
    ) -> Result<T, Status>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        let deadline = Instant::now() + OPERATION_DEADLINE;
        loop {
            match self.attempt(service, rpc, make()).await {
                Ok(response) => {
                    self.acknowledged.fetch_add(1, Ordering::SeqCst);
                    return Ok(response.into_inner());
                }
                Err(status) if retryable(&status) => {
                    self.note_retry(rpc, &status);
                    assert!(
                        Instant::now() < deadline,
                        "{rpc}: no definitive answer within {OPERATION_DEADLINE:?}; last: {status:?}"
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(status) => return Err(status),
            }
        }
    }
}

/// Every write the services acknowledged, and every secret the test handled.
#[derive(Default)]
pub struct Acked {
    /// `orders/…` names with the units ordered.
    pub orders: Vec<(String, i64)>,
    /// (email, password) of registered accounts.
    pub accounts: Vec<(String, String)>,
    /// Access and refresh tokens received.
    pub tokens: Vec<String>,
    /// (payment method name, its owner's token).
    pub cards: Vec<(String, String)>,
    /// Refund names.
    pub refunds: Vec<String>,
    /// Payments outside any order (each partly refunded).
    pub payments: i64,
    /// Units added per SKU by acknowledged AdjustStock calls.
    pub restocked: BTreeMap<String, i64>,
    /// Direct reservations granted.
    pub reservations: usize,
    /// Direct reservations refused for lack of stock.
    pub reservations_short: usize,
}

impl Acked {
    pub fn ordered_units(&self) -> i64 {
        self.orders.iter().map(|(_, units)| units).sum()
    }

    /// Initial stock plus acknowledged restocks, over all SKUs.
    pub fn supply(&self) -> i64 {
        SKUS.iter().map(|(_, units)| units).sum::<i64>() + self.restocked.values().sum::<i64>()
    }
}

/// What the load workers share.
pub struct Load {
    pub suite: Suite,
    pub admin: String,
    pub service_token: String,
    /// The deadline of each call the load makes.
    pub deadline: Duration,
    pub stop: AtomicBool,
    /// Restocks continue while set.
    pub restocking: AtomicBool,
    pub tally: Tally,
    pub acked: Mutex<Acked>,
    pub(super) run: String,
}

impl Load {
    /// `message` with a bearer token (if any) and the load's call deadline.
    pub fn call<T>(&self, token: &str, message: T) -> Request<T> {
        call_within(token, message, self.deadline)
    }

    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    pub fn record(&self, f: impl FnOnce(&mut Acked)) {
        f(&mut self.acked.lock().unwrap());
    }

    pub fn orders(&self) -> usize {
        self.acked.lock().unwrap().orders.len()
    }

    /// Waits until `orders` more orders are acknowledged and at least a
    /// second has passed: the load runs between two faults.
    pub async fn progress(&self, orders: usize) {
        let mark = self.orders();
        let since = Instant::now();
        self.tally
            .wait_until("load progress", OPERATION_DEADLINE, || {
                self.orders() >= mark + orders && since.elapsed() >= Duration::from_secs(1)
            })
            .await;
    }
}

/// One shopper ordering one or two units at a time, alternating SKUs, and
/// after every third completed order paying something outside any order,
/// part of which the admin refunds.
pub(super) async fn shop(load: Arc<Load>, shopper: Shopper, n: usize) {
    let checkout = CheckoutServiceClient::new(lazy_channel(&load.suite.payment));
    let payments = PaymentServiceClient::new(lazy_channel(&load.suite.payment));
    let mut round = 0usize;
    while !load.stopped() {
        round += 1;
        let (sku, _) = SKUS[(n + round) % SKUS.len()];
        let quantity = 1 + i64::try_from(round % 2).unwrap_or(0);
        let place = pb::PlaceOrderRequest {
            customer: "accounts/me".into(),
            lines: vec![pb::LineItem {
                sku: sku.into(),
                quantity,
            }],
            payment_method: shopper.card.clone(),
            shipping_address: shopper.address.clone(),
            currency_code: "EUR".into(),
            request_id: request_id(),
            ..Default::default()
        };
        let order = load
            .tally
            .answered(Service::Payment, "PlaceOrder", || {
                let mut client = checkout.clone();
                let request = load.call(&shopper.token, place.clone());
                async move { client.place_order(request).await }
            })
            .await
            .unwrap_or_else(|status| panic!("PlaceOrder refused: {status:?}"));
        load.record(|acked| acked.orders.push((order.name.clone(), quantity)));
        // Every third completed order, the shopper also pays something
        // outside any order, and the admin refunds part of it (an order's
        // own payment is the order's: refunded through the order only).
        if order.state == pb::OrderState::Completed as i32 && round.is_multiple_of(3) {
            let pay = pb::CreatePaymentIntentRequest {
                customer: "accounts/me".into(),
                amount: Some(Money {
                    currency_code: "EUR".into(),
                    amount_minor: 500,
                }),
                capture_method: pb::CaptureMethod::Automatic as i32,
                payment_method: shopper.card.clone(),
                confirm: true,
                request_id: request_id(),
                ..Default::default()
            };
            let paid = load
                .tally
                .answered(Service::Payment, "CreatePaymentIntent", || {
                    let mut client = payments.clone();
                    let request = load.call(&shopper.token, pay.clone());
                    async move { client.create_payment_intent(request).await }
                })
                .await
                .unwrap_or_else(|status| panic!("CreatePaymentIntent refused: {status:?}"));
            load.record(|acked| acked.payments += 1);
            let refund = pb::CreateRefundRequest {
                parent: paid.name.clone(),
                amount: Some(Money {
                    currency_code: "EUR".into(),
                    amount_minor: 100,
                }),
                reason: pb::RefundReason::RequestedByCustomer as i32,
                request_id: request_id(),
            };
            let refund = load
                .tally
                .answered(Service::Payment, "CreateRefund", || {
                    let mut client = payments.clone();
                    let request = load.call(&load.admin, refund.clone());
                    async move { client.create_refund(request).await }
                })
                .await
                .unwrap_or_else(|status| panic!("CreateRefund refused: {status:?}"));
            load.record(|acked| acked.refunds.push(refund.name));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Registers accounts, logs each in and rotates its refresh token twice.
pub(super) async fn sessions(load: Arc<Load>, n: usize) {
    let accounts = AccountServiceClient::new(lazy_channel(&load.suite.account));
    let mut round = 0usize;
    while !load.stopped() {
        round += 1;
        let email = format!("chaos-{}-{n}-{round}@example.com", load.run);
        let password = format!("chaos-pw-{}", uuid::Uuid::new_v4().simple());
        let register = account_pb::RegisterRequest {
            email: email.clone(),
            password: password.clone(),
            display_name: format!("Chaos {n}"),
            request_id: request_id(),
        };
        load.tally
            .answered(Service::Account, "Register", || {
                let mut client = accounts.clone();
                let request = load.call("", register.clone());
                async move { client.register(request).await }
            })
            .await
            .unwrap_or_else(|status| panic!("Register of {email} refused: {status:?}"));
        load.record(|acked| acked.accounts.push((email.clone(), password.clone())));
        let login = account_pb::LoginRequest {
            email: email.clone(),
            password: password.clone(),
        };
        let log_in = || async {
            load.tally
                .answered(Service::Account, "Login", || {
                    let mut client = accounts.clone();
                    let request = load.call("", login.clone());
                    async move { client.login(request).await }
                })
                .await
                .unwrap_or_else(|status| panic!("Login of {email} refused: {status:?}"))
        };
        let session = log_in().await;
        load.record(|acked| {
            acked.tokens.push(session.access_token.clone());
            acked.tokens.push(session.refresh_token.clone());
        });
        let mut refresh_token = session.refresh_token;
        for _ in 0..2 {
            // Not retried: after a lost answer the token may be rotated
            // already, and presenting it again is reuse (the family is
            // revoked). The client logs in again instead, as documented.
            let mut client = accounts.clone();
            let request = load.call(
                "",
                account_pb::RefreshSessionRequest {
                    refresh_token: refresh_token.clone(),
                },
            );
            let refreshed = load
                .tally
                .attempt(
                    Service::Account,
                    "RefreshSession",
                    client.refresh_session(request),
                )
                .await;
            let session = match refreshed {
                Ok(session) => {
                    load.tally.acknowledged.fetch_add(1, Ordering::SeqCst);
                    session.into_inner()
                }
                Err(status) if retryable(&status) => {
                    load.tally
                        .note_retry("RefreshSession (then Login)", &status);
                    log_in().await
                }
                Err(status) => panic!("RefreshSession of {email} refused: {status:?}"),
            };
            load.record(|acked| {
                acked.tokens.push(session.access_token.clone());
                acked.tokens.push(session.refresh_token.clone());
            });
            refresh_token = session.refresh_token;
        }
    }
}

/// Attaches the test cards to the shoppers in turn (a customer may hold
/// 20).
pub(super) async fn attach_cards(load: Arc<Load>, shoppers: Vec<Shopper>) {
    let payments = PaymentServiceClient::new(lazy_channel(&load.suite.payment));
    let mut round = 0usize;
    while !load.stopped() {
        let (number, cvc) = CARDS[round % CARDS.len()];
        let shopper = &shoppers[round % shoppers.len()];
        round += 1;
        let attach = pb::AttachPaymentMethodRequest {
            customer: "accounts/me".into(),
            card: Some(pb::Card {
                number: number.into(),
                exp_month: 12,
                exp_year: 2099,
                cvc: cvc.into(),
                holder_name: "Chaos Shopper".into(),
            }),
            request_id: request_id(),
        };
        let method = load
            .tally
            .answered(Service::Payment, "AttachPaymentMethod", || {
                let mut client = payments.clone();
                let request = load.call(&shopper.token, attach.clone());
                async move { client.attach_payment_method(request).await }
            })
            .await
            .unwrap_or_else(|status| panic!("AttachPaymentMethod refused: {status:?}"));
        load.record(|acked| acked.cards.push((method.name, shopper.token.clone())));
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

/// Reads products and stock levels and, until the last fault is over,
/// restocks each SKU (compare-and-swap on the level's version) every
/// [`RESTOCK_EVERY`].
pub(super) async fn restock(load: Arc<Load>) {
    let inventory = InventoryServiceClient::new(lazy_channel(&load.suite.inventory));
    while !load.stopped() {
        for (sku, _) in SKUS {
            let name = format!("products/{sku}/stockLevels/main");
            load.tally
                .answered(Service::Inventory, "GetProduct", || {
                    let mut client = inventory.clone();
                    let request = load.call(
                        &load.admin,
                        inventory_pb::GetProductRequest {
                            name: format!("products/{sku}"),
                        },
                    );
                    async move { client.get_product(request).await }
                })
                .await
                .unwrap_or_else(|status| panic!("GetProduct refused: {status:?}"));
            let level = load
                .tally
                .answered(Service::Inventory, "GetStockLevel", || {
                    let mut client = inventory.clone();
                    let request = load.call(
                        &load.admin,
                        inventory_pb::GetStockLevelRequest { name: name.clone() },
                    );
                    async move { client.get_stock_level(request).await }
                })
                .await
                .unwrap_or_else(|status| panic!("GetStockLevel refused: {status:?}"));
            if !load.restocking.load(Ordering::SeqCst) {
                continue;
            }
            let adjust = inventory_pb::AdjustStockRequest {
                name: name.clone(),
                delta: RESTOCK,
                reason: inventory_pb::StockAdjustmentReason::Received as i32,
                note: "chaos restock".into(),
                expected_version: level.version,
                request_id: request_id(),
            };
            match load
                .tally
                .answered(Service::Inventory, "AdjustStock", || {
                    let mut client = inventory.clone();
                    let request = load.call(&load.admin, adjust.clone());
                    async move { client.adjust_stock(request).await }
                })
                .await
            {
                Ok(_) => load.record(|acked| {
                    *acked.restocked.entry(sku.to_owned()).or_default() += RESTOCK;
                }),
                // Orders moved the level since the read: not applied.
                Err(status) if reason_of(&status).as_deref() == Some("VERSION_MISMATCH") => {}
                Err(status) => panic!("AdjustStock refused: {status:?}"),
            }
        }
        tokio::time::sleep(RESTOCK_EVERY).await;
    }
}

/// Reserves one unit at a time for a second, as the payment principal, and
/// never commits or releases: the sweeper must return every unit.
pub(super) async fn reserve_and_abandon(load: Arc<Load>) {
    let inventory = InventoryServiceClient::new(lazy_channel(&load.suite.inventory));
    let mut round = 0usize;
    while !load.stopped() {
        let (sku, _) = SKUS[round % SKUS.len()];
        round += 1;
        let reserve = inventory_pb::ReserveStockRequest {
            order_id: uuid::Uuid::now_v7().to_string(),
            lines: vec![inventory_pb::ReservationLine {
                sku: sku.into(),
                quantity: 1,
                ..Default::default()
            }],
            ttl: Some(prost_types::Duration {
                seconds: DIRECT_RESERVATION_TTL_SECS,
                nanos: 0,
            }),
            request_id: request_id(),
            ..Default::default()
        };
        match load
            .tally
            .answered(Service::Inventory, "ReserveStock", || {
                let mut client = inventory.clone();
                let request = load.call(&load.service_token, reserve.clone());
                async move { client.reserve_stock(request).await }
            })
            .await
        {
            Ok(_) => load.record(|acked| acked.reservations += 1),
            Err(status) if reason_of(&status).as_deref() == Some("INSUFFICIENT_STOCK") => {
                load.record(|acked| acked.reservations_short += 1);
            }
            Err(status) => panic!("ReserveStock refused: {status:?}"),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
