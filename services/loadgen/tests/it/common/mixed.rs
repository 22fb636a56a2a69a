//! [`MixedLoad`]: the mixed load running beside a test, and the checks
//! after it (every saga terminal, every acknowledged write there, no
//! oversell, no double charge).

use super::load::{attach_cards, reserve_and_abandon, restock, sessions, shop};
use super::*;

/// The mixed load, running: shoppers racing for less stock than they order
/// (each order retried with its request id), accounts registering, logging
/// in and rotating refresh tokens, cards attached, stock read, restocked
/// and reserved with a short TTL, payments outside orders refunded.
pub struct MixedLoad {
    pub load: Arc<Load>,
    pub shoppers: Vec<Shopper>,
    pub started: Instant,
    workers: tokio::task::JoinSet<()>,
}

impl MixedLoad {
    /// Creates the fixtures (admin and service tokens, the [`SKUS`] with
    /// their stock, six shoppers) and starts the workers, each call with
    /// `deadline`.
    pub async fn start(world: &World, deadline: Duration) -> Self {
        let suite = world.stack.suite();
        let admin = fixtures::admin_token(&suite).await.expect("admin login");
        let service_token = fixtures::service_token(&suite, "backroom.inventory")
            .await
            .expect("service token");
        for (sku, units) in SKUS {
            fixtures::product(&suite, &admin, sku, units)
                .await
                .expect("product");
        }
        let run = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
        let mut shoppers = Vec::new();
        for n in 0..6 {
            shoppers.push(
                fixtures::shopper(&suite, &format!("shopper-{run}-{n}@example.com"))
                    .await
                    .expect("shopper"),
            );
        }
        let load = Arc::new(Load {
            suite,
            admin,
            service_token,
            deadline,
            stop: AtomicBool::new(false),
            restocking: AtomicBool::new(true),
            tally: Tally::new(),
            acked: Mutex::new(Acked::default()),
            run,
        });

        let started = Instant::now();
        let mut workers = tokio::task::JoinSet::new();
        for (n, shopper) in shoppers.iter().enumerate() {
            workers.spawn(shop(load.clone(), shopper.clone(), n));
        }
        workers.spawn(sessions(load.clone(), 0));
        workers.spawn(sessions(load.clone(), 1));
        workers.spawn(attach_cards(load.clone(), shoppers.clone()));
        workers.spawn(restock(load.clone()));
        workers.spawn(reserve_and_abandon(load.clone()));
        println!(
            "load: {} shoppers ordering 1–2 units of {:?} (stock {:?}, +{RESTOCK} each per restock), 2 accounts workers (register, login, 2 refresh rotations), card attach, stock reads + restocks, {DIRECT_RESERVATION_TTL_SECS} s reservations never committed, a payment outside any order after every third completed order, partly refunded; every call with a {deadline:?} deadline",
            shoppers.len(),
            SKUS.map(|(sku, _)| sku),
            SKUS.map(|(_, units)| units),
        );
        Self {
            load,
            shoppers,
            started,
            workers,
        }
    }

    /// Stops the restocks, lets the shoppers order on until more units were
    /// ordered than ever existed (counting one restock still in flight),
    /// then stops the load and waits for every worker's last operation;
    /// returns how long the load ran.
    pub async fn finish(&mut self) -> Duration {
        let load = &self.load;
        load.restocking.store(false, Ordering::SeqCst);
        load.tally
            .wait_until("more units ordered than exist", OPERATION_DEADLINE, || {
                let acked = load.acked.lock().unwrap();
                acked.ordered_units() > acked.supply() + RESTOCK
            })
            .await;
        load.stop.store(true, Ordering::SeqCst);
        while let Some(worker) = tokio::time::timeout(OPERATION_DEADLINE, self.workers.join_next())
            .await
            .expect("load workers finish their last operation")
        {
            worker.expect("load worker");
        }
        self.started.elapsed()
    }

    /// After [`Self::finish`]: waits until every saga is terminal and the
    /// direct reservations' TTL and a few sweeps have passed, then checks
    /// that every acknowledged write is there (orders terminal, one per
    /// request id; accounts log in; cards, refunds), the stock identities
    /// (nothing oversold or held, every restock counted once), the money
    /// (one charge per completed order, nothing open), the invariant
    /// checker, and the secret scan of every row and log line. Returns the
    /// retried calls by RPC and code.
    pub async fn verify(&self, world: &World, load_time: Duration) -> BTreeMap<String, usize> {
        let load = &self.load;
        let (admin, service_token) = (load.admin.clone(), load.service_token.clone());
        let shoppers = self.shoppers.clone();
        let admin_url = world.admin_url.clone();
        let suite = world.stack.suite();

        // Every saga terminal.
        let settle = Instant::now();
        let unfinished = "SELECT '' AS label, count(*) AS n FROM payment.orders WHERE state NOT IN ('COMPLETED', 'FAILED')";
        let deadline = Instant::now() + Duration::from_secs(60);
        while count(&admin_url, unfinished).await > 0 {
            assert!(
                Instant::now() < deadline,
                "sagas still unfinished 60 s after the load: {:?}",
                counts(
                    &admin_url,
                    "SELECT state AS label, count(*) AS n FROM payment.orders GROUP BY state"
                )
                .await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let settle_time = settle.elapsed();
        // Direct reservations: the last one's TTL plus a sweep (with slack).
        tokio::time::sleep(Duration::from_secs(
            u64::try_from(DIRECT_RESERVATION_TTL_SECS).unwrap_or(1),
        ))
        .await;
        tokio::time::sleep(SWEEP * 3).await;

        let acked = std::mem::take(&mut *load.acked.lock().unwrap());
        let retried = load.tally.retried.lock().unwrap().clone();
        println!(
            "load ran {:.1} s: {} orders, {} accounts, {} token pairs, {} cards, {} refunds, {} direct reservations ({} refused short), restocked {:?}; every saga terminal {} ms after the load",
            load_time.as_secs_f64(),
            acked.orders.len(),
            acked.accounts.len(),
            acked.tokens.len() / 2,
            acked.cards.len(),
            acked.refunds.len(),
            acked.reservations,
            acked.reservations_short,
            acked.restocked,
            settle_time.as_millis()
        );
        println!("retried (no definitive answer) by RPC and code: {retried:?}");
        // What the faults did to the sagas, from payment's own log.
        let payment_log = world
            .stack
            .log_path(Service::Payment)
            .and_then(|path| std::fs::read_to_string(path).ok())
            .unwrap_or_default();
        let log_count = |needle: &str| payment_log.lines().filter(|l| l.contains(needle)).count();
        println!(
            "sagas: {} steps failed transiently (a dependency down) and were retried, {} orders compensated, {} recovery-worker passes picked up unfinished orders (retries after backoff, orders a failed process left)",
            log_count("saga step failed transiently"),
            log_count("order failed; compensating"),
            log_count("recovery pass")
        );

        // Every acknowledged write is there.
        let mut checkout = CheckoutServiceClient::new(lazy_channel(&suite.payment));
        let mut by_state: BTreeMap<i32, usize> = BTreeMap::new();
        for (name, _) in &acked.orders {
            let order = checkout
                .get_order(call(&admin, pb::GetOrderRequest { name: name.clone() }))
                .await
                .unwrap_or_else(|status| panic!("acknowledged order {name} lost: {status:?}"))
                .into_inner();
            *by_state.entry(order.state).or_default() += 1;
        }
        assert!(
            by_state.keys().all(|s| {
                *s == pb::OrderState::Completed as i32 || *s == pb::OrderState::Failed as i32
            }),
            "acknowledged orders not terminal: {by_state:?}"
        );
        let failures = counts(
            &admin_url,
            "SELECT coalesce(failure_reason, state) AS label, count(*) AS n FROM payment.orders GROUP BY 1 ORDER BY 1",
        )
        .await;
        let all_orders = count(
            &admin_url,
            "SELECT '' AS label, count(*) AS n FROM payment.orders",
        )
        .await;
        assert_eq!(
            usize::try_from(all_orders).unwrap_or_default(),
            acked.orders.len(),
            "one order per acknowledged request id, none without one"
        );
        println!(
            "checked: all {} acknowledged orders exist and are terminal; outcomes {failures:?}",
            acked.orders.len()
        );
        let mut accounts = AccountServiceClient::new(lazy_channel(&suite.account));
        let mut tokens = acked.tokens.clone();
        for (email, password) in &acked.accounts {
            let session = accounts
                .login(call(
                    "",
                    account_pb::LoginRequest {
                        email: email.clone(),
                        password: password.clone(),
                    },
                ))
                .await
                .unwrap_or_else(|status| {
                    panic!("registered account {email} cannot log in: {status:?}")
                })
                .into_inner();
            tokens.push(session.access_token);
            tokens.push(session.refresh_token);
        }
        println!(
            "checked: all {} acknowledged registrations log in with their passwords",
            acked.accounts.len()
        );
        let mut payments = PaymentServiceClient::new(lazy_channel(&suite.payment));
        for (name, token) in &acked.cards {
            payments
                .get_payment_method(call(
                    token,
                    pb::GetPaymentMethodRequest { name: name.clone() },
                ))
                .await
                .unwrap_or_else(|status| panic!("attached card {name} lost: {status:?}"));
        }
        for name in &acked.refunds {
            payments
                .get_refund(call(&admin, pb::GetRefundRequest { name: name.clone() }))
                .await
                .unwrap_or_else(|status| panic!("refund {name} lost: {status:?}"));
        }
        println!(
            "checked: all {} attached cards and {} refunds are there",
            acked.cards.len(),
            acked.refunds.len()
        );

        // Stock: no oversell, nothing held, every restock counted once.
        let ordered_units = acked.ordered_units();
        let sold = counts(
            &admin_url,
            "SELECT l.sku AS label, sum(l.quantity)::bigint AS n FROM payment.orders o JOIN payment.order_lines l ON l.order_id = o.id WHERE o.state = 'COMPLETED' GROUP BY l.sku",
        )
        .await
        .into_iter()
        .collect::<BTreeMap<_, _>>();
        let mut supply = 0;
        for (sku, initial) in SKUS {
            let levels = counts(
                &admin_url,
                &format!(
                    "SELECT unnest(ARRAY['available', 'reserved', 'committed', 'on_hand']) AS label, unnest(ARRAY[available, reserved, committed, on_hand]) AS n FROM inventory.stock_levels WHERE sku = '{sku}' AND location = 'main'"
                ),
            )
            .await
            .into_iter()
            .collect::<BTreeMap<_, _>>();
            let restocked = acked.restocked.get(sku).copied().unwrap_or_default();
            let sold = sold.get(sku).copied().unwrap_or_default();
            supply += initial + restocked;
            assert_eq!(
                levels["on_hand"],
                initial + restocked,
                "{sku}: on_hand is the initial stock plus every acknowledged restock, once: {levels:?}"
            );
            assert_eq!(
                levels["available"] + levels["reserved"] + levels["committed"],
                levels["on_hand"],
                "{sku}: {levels:?}"
            );
            assert_eq!(
                levels["committed"], sold,
                "{sku}: committed units are exactly the completed orders' units"
            );
            assert!(levels["committed"] <= levels["on_hand"], "{sku}: oversold");
            assert_eq!(levels["reserved"], 0, "{sku}: units still held: {levels:?}");
            println!(
                "checked: {sku} initial {initial} + restocked {restocked} = on_hand {}; sold (committed) {sold}, available {}, reserved 0",
                levels["on_hand"], levels["available"]
            );
        }
        assert!(
            ordered_units > supply,
            "the shoppers ordered {ordered_units} units, not more than the {supply} that existed"
        );
        println!("checked: {ordered_units} units ordered for {supply} that existed, none oversold");
        let held = count(
            &admin_url,
            &format!(
                "SELECT '' AS label, count(*) AS n FROM inventory.reservations WHERE state = 'ACTIVE' AND expire_at < now() - interval '{} milliseconds'",
                SWEEP.as_millis() + 1000
            ),
        )
        .await;
        assert_eq!(held, 0, "ACTIVE reservations past their TTL plus the sweep");
        let swept = count(
            &admin_url,
            "SELECT '' AS label, count(*) AS n FROM inventory.reservations WHERE state = 'EXPIRED'",
        )
        .await;
        println!(
            "checked: no ACTIVE reservation past its TTL + {} ms sweep (+1 s slack); {swept} expired reservations returned",
            SWEEP.as_millis()
        );

        // Money: one charge per completed order, for its total; nothing open.
        let completed = count(
            &admin_url,
            "SELECT '' AS label, count(*) AS n FROM payment.orders WHERE state = 'COMPLETED'",
        )
        .await;
        let charged_right = count(
            &admin_url,
            "SELECT '' AS label, count(*) AS n FROM payment.orders o JOIN payment.payment_intents i ON 'paymentIntents/' || i.id = o.payment_intent WHERE o.state = 'COMPLETED' AND i.status = 'succeeded' AND i.amount_received = o.total_minor",
        )
        .await;
        let succeeded = count(
            &admin_url,
            "SELECT '' AS label, count(*) AS n FROM payment.payment_intents WHERE status = 'succeeded' AND order_id IS NOT NULL",
        )
        .await;
        let outside_orders = count(
            &admin_url,
            "SELECT '' AS label, count(*) AS n FROM payment.payment_intents WHERE status = 'succeeded' AND order_id IS NULL",
        )
        .await;
        let open = count(
            &admin_url,
            "SELECT '' AS label, count(*) AS n FROM payment.payment_intents WHERE status IN ('requires_capture', 'processing', 'requires_confirmation')",
        )
        .await;
        let intents_per_order = counts(
            &admin_url,
            "SELECT metadata::jsonb ->> 'order' AS label, count(*) AS n FROM payment.payment_intents WHERE metadata::jsonb ? 'order' GROUP BY 1 HAVING count(*) > 1",
        )
        .await;
        assert_eq!(
            (charged_right, succeeded),
            (completed, completed),
            "every completed order charged once for its total, and no other order charged"
        );
        assert_eq!(
            outside_orders, acked.payments,
            "one charge per acknowledged payment outside an order"
        );
        assert_eq!(open, 0, "authorizations left open");
        assert!(
            intents_per_order.is_empty(),
            "orders with more than one payment intent: {intents_per_order:?}"
        );
        println!(
            "checked: {completed} completed orders, {succeeded} succeeded order payments each for its order's total, one intent per order, {outside_orders} payments outside orders (one per acknowledged one), no authorization open"
        );

        // The invariant checker, strict.
        let tolerances = assert_audit_clean(&admin_url).await;
        println!(
            "checked: backroom audit (grace {:?}, stuck after 0 s): {} checks, no findings (ledger balanced)",
            tolerances.grace,
            backroom::audit::check_names().len()
        );

        // Secrets: nothing the run handled is in any table or log line.
        let mut scan = world.secret_scan();
        scan.secret("shopper password", "loadgen password");
        scan.secret("admin access token", admin.clone());
        scan.secret("service token", service_token.clone());
        for shopper in &shoppers {
            scan.secret("shopper access token", shopper.token.clone());
        }
        for (_, password) in &acked.accounts {
            scan.secret("account password", password.clone());
        }
        for token in &tokens {
            scan.secret("access or refresh token", token.clone());
        }
        for (number, _) in CARDS {
            scan.secret("test card number", number);
        }
        let report = world.assert_no_secrets(scan, true).await;
        assert!(
            report.tables >= 15 && report.rows > 100 && report.log_lines > 100,
            "the scan saw too little: {} tables, {} rows, {} log lines",
            report.tables,
            report.rows,
            report.log_lines
        );
        retried
    }
}
