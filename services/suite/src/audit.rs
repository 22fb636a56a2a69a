//! The invariant checker: audits a live Backroom database (all three
//! schemas, through an admin connection) and lists every broken invariant.
//! `backroom audit` runs it; fault tests call [`audit`] after injecting
//! crashes, outages and overload.
//!
//! Checked:
//! - stock: `on_hand = available + reserved + committed`, nothing negative,
//!   the movement log replays to every level, `reserved` equals the units of
//!   ACTIVE reservations, `committed` the units of COMMITTED ones neither
//!   shipped nor uncommitted (and no line settled more than it held);
//! - no ACTIVE reservation held past its expiry plus `grace` (the sweeper's
//!   interval and some slack);
//! - the ledger (every journal balanced, the sum over accounts zero per
//!   currency, intent and refund amounts consistent — the payment crate's own
//!   [`backroom_payment::ledger::audit`]);
//! - no order charged twice; every COMPLETED order has a succeeded intent and
//!   a COMMITTED reservation; no FAILED order holds an authorization or stock;
//! - no order NEEDS_ATTENTION (stock committed, payment not capturable): each
//!   is reported with its reason, its payment and its stock until an
//!   operator resolves it;
//! - no saga left unfinished for longer than `stuck_after`, nor a shipment,
//!   cancellation or goodwill refund left PENDING, nor a return left
//!   RECEIVING;
//! - once nothing is in flight for an order, its lines' shipped and
//!   canceled units are its reservation's shipped and uncommitted ones, its
//!   received returns' restocked and written-off units the reservation's,
//!   and its refunds those of its DONE cancellations, RECEIVED returns and
//!   DONE goodwill refunds; what its refunds promised never exceeds its
//!   total, and the payment's refunded amount is the order's;
//! - VAT: `tax_payable` per currency is the VAT of every captured order
//!   less the VAT its refunds reversed in proportion, and each order's
//!   payment carries the VAT its quote found;
//! - discount codes: each code's uses are the uses reservations hold, and
//!   no released or expired reservation holds one;
//! - events: each schema's sequences are 1..n without gaps; every stock
//!   movement has its `StockLevelChanged`; every order its `OrderPlaced`, a
//!   completed or failed one its `OrderCompleted` or `OrderFailed`, every
//!   shipped shipment its `OrderShipped`; every captured intent its
//!   `PaymentIntentCaptured`; with [`Tolerances::relay_lag`] set (a relay is
//!   configured), no sequenced event unpublished for longer.

use std::time::Duration;

use diesel::{PgConnection, QueryableByName, RunQueryDsl as _, sql_query, sql_types::Text};

/// How strict to be about things still in motion.
#[derive(Debug, Clone, Copy)]
pub struct Tolerances {
    /// An ACTIVE reservation may outlive its expiry by this much (sweeper).
    pub grace: Duration,
    /// A saga may stay unfinished this long before it counts as stuck.
    pub stuck_after: Duration,
    /// With a JetStream relay configured: an event may stay unpublished
    /// this long. `None`: no relay, not checked.
    pub relay_lag: Option<Duration>,
}

impl Default for Tolerances {
    fn default() -> Self {
        Self {
            grace: Duration::from_secs(60),
            stuck_after: Duration::from_secs(300),
            relay_lag: None,
        }
    }
}

#[derive(QueryableByName)]
struct Finding {
    #[diesel(sql_type = Text)]
    finding: String,
}

/// One named check: a query returning one `finding` text per violation.
struct Check {
    name: &'static str,
    sql: String,
}

fn checks(tolerances: Tolerances) -> Vec<Check> {
    let grace = tolerances.grace.as_secs();
    let stuck = tolerances.stuck_after.as_secs();
    let mut checks = event_checks(tolerances);
    checks.extend(vec![
        Check {
            name: "stock identity",
            sql: "SELECT sku || '@' || location || ': on_hand ' || on_hand || ' <> ' || available || '+' || reserved || '+' || committed AS finding
                  FROM inventory.stock_levels
                  WHERE on_hand <> available + reserved + committed OR available < 0 OR reserved < 0 OR committed < 0"
                .into(),
        },
        Check {
            name: "movement log replays to every level",
            sql: "SELECT l.sku || '@' || l.location || ': log gives ' || coalesce(m.a, 0) || '/' || coalesce(m.r, 0) || '/' || coalesce(m.c, 0)
                         || ', level is ' || l.available || '/' || l.reserved || '/' || l.committed AS finding
                  FROM inventory.stock_levels l
                  LEFT JOIN (SELECT sku, location, sum(delta_available) a, sum(delta_reserved) r, sum(delta_committed) c
                             FROM inventory.stock_movements GROUP BY sku, location) m USING (sku, location)
                  WHERE (coalesce(m.a, 0), coalesce(m.r, 0), coalesce(m.c, 0)) <> (l.available, l.reserved, l.committed)"
                .into(),
        },
        Check {
            name: "reserved equals the units of active reservations",
            sql: "SELECT l.sku || '@' || l.location || ': reserved ' || l.reserved || ', active reservations hold ' || coalesce(h.units, 0) AS finding
                  FROM inventory.stock_levels l
                  LEFT JOIN (SELECT rl.sku, rl.location, sum(rl.quantity) units
                             FROM inventory.reservation_lines rl JOIN inventory.reservations r USING (order_id)
                             WHERE r.state = 'ACTIVE' GROUP BY rl.sku, rl.location) h USING (sku, location)
                  WHERE l.reserved <> coalesce(h.units, 0)"
                .into(),
        },
        Check {
            name: "committed equals the unsettled units of committed reservations",
            sql: "SELECT l.sku || '@' || l.location || ': committed ' || l.committed || ', committed reservations hold ' || coalesce(h.units, 0) || ' unsettled' AS finding
                  FROM inventory.stock_levels l
                  LEFT JOIN (SELECT rl.sku, rl.location, sum(rl.quantity - rl.shipped - rl.uncommitted) units
                             FROM inventory.reservation_lines rl JOIN inventory.reservations r USING (order_id)
                             WHERE r.state = 'COMMITTED' GROUP BY rl.sku, rl.location) h USING (sku, location)
                  WHERE l.committed <> coalesce(h.units, 0)
                  UNION ALL
                  SELECT 'reservations/' || order_id || ' ' || sku || ': shipped ' || shipped || ' + uncommitted ' || uncommitted || ' of ' || quantity
                         || ', restocked ' || restocked || ' + written off ' || written_off
                  FROM inventory.reservation_lines
                  WHERE shipped + uncommitted > quantity
                     OR (shipped + uncommitted > 0 AND order_id NOT IN
                         (SELECT order_id FROM inventory.reservations WHERE state = 'COMMITTED'))"
                .into(),
        },
        Check {
            name: "no reservation held past its expiry",
            sql: format!(
                "SELECT 'reservation ' || order_id || ' still ACTIVE, expired ' || expire_at AS finding
                 FROM inventory.reservations
                 WHERE state = 'ACTIVE' AND expire_at < now() - interval '{grace} seconds'"
            ),
        },
        Check {
            // By the order that owns the payment (set by checkout only), not
            // by metadata anyone may write.
            name: "no order charged twice",
            sql: "SELECT 'orders/' || order_id || ' captured by ' || count(*) || ' intents' AS finding
                  FROM payment.payment_intents
                  WHERE status = 'succeeded' AND order_id IS NOT NULL
                  GROUP BY order_id HAVING count(*) > 1"
                .into(),
        },
        Check {
            name: "completed orders are paid and their stock committed",
            sql: "SELECT 'orders/' || o.id || ': intent ' || coalesce(i.status, 'missing') || ', reservation ' || coalesce(r.state, 'missing') AS finding
                  FROM payment.orders o
                  LEFT JOIN payment.payment_intents i ON 'paymentIntents/' || i.id = o.payment_intent
                  LEFT JOIN inventory.reservations r ON r.order_id = o.id
                  WHERE o.state = 'COMPLETED' AND (i.status IS DISTINCT FROM 'succeeded' OR r.state IS DISTINCT FROM 'COMMITTED')"
                .into(),
        },
        Check {
            name: "failed orders hold neither an authorization nor stock",
            sql: "SELECT 'orders/' || o.id || ': intent ' || coalesce(i.status, '-') || ', reservation ' || coalesce(r.state, '-') AS finding
                  FROM payment.orders o
                  -- By the order that owns the intent, so an intent the order
                  -- never recorded (a step that lost its order) counts too.
                  LEFT JOIN payment.payment_intents i ON i.order_id = o.id
                  LEFT JOIN inventory.reservations r ON r.order_id = o.id
                  WHERE o.state = 'FAILED'
                    AND (i.status IN ('requires_capture', 'processing', 'succeeded') OR r.state IN ('ACTIVE', 'COMMITTED'))"
                .into(),
        },
        Check {
            name: "no order needs attention",
            sql: "SELECT 'orders/' || o.id || ' NEEDS_ATTENTION since ' || o.updated_at || ': ' || o.failure_reason
                         || coalesce(' (' || o.failure_message || ')', '')
                         || '; payment ' || coalesce(o.payment_intent, '-') || ' ' || coalesce(i.status, 'missing')
                         || ', reservation ' || coalesce(r.state, 'missing') AS finding
                  FROM payment.orders o
                  LEFT JOIN payment.payment_intents i ON 'paymentIntents/' || i.id = o.payment_intent
                  LEFT JOIN inventory.reservations r ON r.order_id = o.id
                  WHERE o.state = 'NEEDS_ATTENTION'"
                .into(),
        },
        Check {
            name: "no saga left unfinished",
            sql: format!(
                "SELECT 'orders/' || id || ' stuck in ' || state || ' since ' || updated_at AS finding
                 FROM payment.orders
                 WHERE state NOT IN ('COMPLETED', 'FAILED', 'NEEDS_ATTENTION') AND updated_at < now() - interval '{stuck} seconds'"
            ),
        },
        Check {
            name: "no shipment, cancellation, return or refund left half-way",
            sql: format!(
                "SELECT 'orders/' || order_id || '/shipments/' || id || ' PENDING since ' || updated_at AS finding
                 FROM payment.shipments WHERE state = 'PENDING' AND updated_at < now() - interval '{stuck} seconds'
                 UNION ALL
                 SELECT 'cancellation ' || id || ' of orders/' || order_id || ' PENDING since ' || updated_at
                 FROM payment.cancellations WHERE state = 'PENDING' AND updated_at < now() - interval '{stuck} seconds'
                 UNION ALL
                 SELECT 'orders/' || order_id || '/returns/' || id || ' RECEIVING since ' || updated_at
                 FROM payment.returns WHERE state = 'RECEIVING' AND updated_at < now() - interval '{stuck} seconds'
                 UNION ALL
                 SELECT 'refund ' || id || ' of orders/' || order_id || ' PENDING since ' || updated_at
                 FROM payment.order_refunds WHERE state = 'PENDING' AND updated_at < now() - interval '{stuck} seconds'"
            ),
        },
        Check {
            // Once nothing is in flight for an order, what it says shipped
            // and canceled is what inventory shipped and took back.
            name: "an order's shipped and canceled units are its reservation's shipped and uncommitted",
            sql: "SELECT 'orders/' || ol.order_id || ' ' || ol.sku || ': order shipped ' || ol.shipped || ' canceled ' || ol.canceled
                         || ', reservation shipped ' || coalesce(rl.shipped, 0) || ' uncommitted ' || coalesce(rl.uncommitted, 0) AS finding
                  FROM payment.order_lines ol
                  JOIN payment.orders o ON o.id = ol.order_id AND o.state = 'COMPLETED'
                  LEFT JOIN inventory.reservation_lines rl ON rl.order_id = ol.order_id AND rl.sku = ol.sku
                  WHERE (ol.shipped, ol.canceled) <> (coalesce(rl.shipped, 0), coalesce(rl.uncommitted, 0))
                    AND NOT EXISTS (SELECT 1 FROM payment.shipments s WHERE s.order_id = ol.order_id AND s.state = 'PENDING')
                    AND NOT EXISTS (SELECT 1 FROM payment.cancellations c WHERE c.order_id = ol.order_id AND c.state = 'PENDING')"
                .into(),
        },
        Check {
            // What came back: the received returns' decisions are what
            // inventory restocked and wrote off (that no line takes back
            // more than it shipped, the schemas' constraints hold).
            name: "an order's received returns are its reservation's restocked and written-off units",
            sql: "SELECT 'orders/' || ol.order_id || ' ' || ol.sku || ': received returns restocked ' || coalesce(rt.restocked, 0)
                         || ' written off ' || coalesce(rt.written_off, 0) || ', reservation restocked ' || coalesce(rl.restocked, 0)
                         || ' written off ' || coalesce(rl.written_off, 0) || ', returned ' || ol.returned || ' of shipped ' || ol.shipped AS finding
                  FROM payment.order_lines ol
                  JOIN payment.orders o ON o.id = ol.order_id AND o.state = 'COMPLETED'
                  LEFT JOIN inventory.reservation_lines rl ON rl.order_id = ol.order_id AND rl.sku = ol.sku
                  LEFT JOIN (SELECT r.order_id, l.sku, sum(l.restocked) restocked, sum(l.written_off) written_off
                             FROM payment.returns r JOIN payment.return_lines l ON l.return_id = r.id
                             WHERE r.state = 'RECEIVED' GROUP BY r.order_id, l.sku) rt
                         ON rt.order_id = ol.order_id AND rt.sku = ol.sku
                  WHERE (coalesce(rt.restocked, 0), coalesce(rt.written_off, 0)) <> (coalesce(rl.restocked, 0), coalesce(rl.written_off, 0))
                    AND NOT EXISTS (SELECT 1 FROM payment.returns r WHERE r.order_id = ol.order_id AND r.state = 'RECEIVING')"
                .into(),
        },
        Check {
            name: "an order's refunds are its finished cancellations', returns' and refunds', within its total and its payment's",
            sql: "WITH done AS (
                      SELECT order_id, refund_minor amount FROM payment.cancellations WHERE state = 'DONE'
                      UNION ALL SELECT order_id, refund_minor FROM payment.returns WHERE state = 'RECEIVED'
                      UNION ALL SELECT order_id, amount_minor FROM payment.order_refunds WHERE state = 'DONE'),
                  claimed AS (
                      SELECT order_id, refund_minor amount FROM payment.cancellations
                      UNION ALL SELECT order_id, refund_minor FROM payment.returns WHERE refund_minor IS NOT NULL
                      UNION ALL SELECT order_id, amount_minor FROM payment.order_refunds)
                  SELECT 'orders/' || o.id || ': refunded ' || o.refunded_minor || ', finished refunds ' || coalesce(d.amount, 0)
                         || ', claimed ' || o.refund_claimed_minor || ' of refunds ' || coalesce(c.amount, 0)
                         || ', total ' || coalesce(o.total_minor, 0) || ', payment refunded ' || coalesce(i.amount_refunded::text, '-') AS finding
                  FROM payment.orders o
                  LEFT JOIN (SELECT order_id, sum(amount) amount FROM done GROUP BY order_id) d ON d.order_id = o.id
                  LEFT JOIN (SELECT order_id, sum(amount) amount FROM claimed GROUP BY order_id) c ON c.order_id = o.id
                  LEFT JOIN payment.payment_intents i ON 'paymentIntents/' || i.id = o.payment_intent
                  WHERE o.refunded_minor <> coalesce(d.amount, 0)
                     OR o.refund_claimed_minor <> coalesce(c.amount, 0)
                     OR o.refund_claimed_minor > coalesce(o.total_minor, 0)
                     OR (o.payment_intent IS NOT NULL AND i.amount_refunded <> o.refunded_minor
                         AND NOT EXISTS (SELECT 1 FROM payment.cancellations x WHERE x.order_id = o.id AND x.state = 'PENDING')
                         AND NOT EXISTS (SELECT 1 FROM payment.returns x WHERE x.order_id = o.id AND x.state = 'RECEIVING')
                         AND NOT EXISTS (SELECT 1 FROM payment.order_refunds x WHERE x.order_id = o.id AND x.state = 'PENDING'))"
                .into(),
        },
        Check {
            // The ledger's VAT against the orders: an order's payment carries
            // the VAT its quote found, and tax_payable holds, per currency,
            // the VAT of what orders captured less what their refunds gave
            // back in proportion (half up), to the cent.
            name: "tax payable is the VAT of captured orders less their refunds'",
            sql: "WITH expected AS (
                      SELECT o.currency_code AS currency,
                             sum(o.tax_minor - (2 * o.tax_minor * i.amount_refunded + i.amount_received)
                                               / (2 * i.amount_received)) AS tax
                        FROM payment.orders o
                        JOIN payment.payment_intents i ON i.order_id = o.id
                       WHERE i.amount_received > 0 AND i.amount_received = o.total_minor
                       GROUP BY o.currency_code),
                  booked AS (
                      SELECT currency, sum(CASE direction WHEN 'credit' THEN amount ELSE -amount END) AS tax
                        FROM payment.ledger_entries WHERE ledger_account = 'tax_payable'
                       GROUP BY currency)
                  SELECT 'tax_payable in ' || coalesce(b.currency, e.currency) || ': booked '
                         || coalesce(b.tax, 0) || ', orders owe ' || coalesce(e.tax, 0) AS finding
                  FROM expected e FULL JOIN booked b ON b.currency = e.currency
                  WHERE coalesce(b.tax, 0) <> coalesce(e.tax, 0)
                  UNION ALL
                  SELECT 'orders/' || o.id || ': VAT ' || coalesce(o.tax_minor::text, '-')
                         || ', its payment carries ' || i.tax AS finding
                  FROM payment.orders o JOIN payment.payment_intents i ON i.order_id = o.id
                  WHERE o.tax_minor IS DISTINCT FROM i.tax"
                .into(),
        },
        Check {
            // A code's uses are the uses reservations hold and have not
            // given back; a reservation that ended without a sale holds none.
            name: "discount code uses are the redemptions held",
            sql: "SELECT 'discountCodes/' || c.code || ': uses ' || c.uses || ', held ' || coalesce(h.n, 0) AS finding
                  FROM inventory.discount_codes c
                  LEFT JOIN (SELECT code, count(*) n FROM inventory.discount_redemptions
                              WHERE NOT returned GROUP BY code) h ON h.code = c.code
                  WHERE c.uses <> coalesce(h.n, 0)
                  UNION ALL
                  SELECT 'reservations/' || d.order_id || ' ' || r.state || ' still holds a use of ' || d.code
                  FROM inventory.discount_redemptions d
                  JOIN inventory.reservations r ON r.order_id = d.order_id
                  WHERE NOT d.returned AND r.state IN ('RELEASED', 'EXPIRED')"
                .into(),
        },
    ]);
    checks
}

/// The outbox of every schema against the changes it must describe.
fn event_checks(tolerances: Tolerances) -> Vec<Check> {
    let gaps = ["account", "inventory", "payment"]
        .iter()
        .map(|schema| {
            format!(
                "SELECT '{schema}: ' || count(*) || ' sequenced events, newest ' || coalesce(max(sequence), 0) AS finding
                 FROM {schema}.events WHERE sequence IS NOT NULL
                 HAVING count(*) <> coalesce(max(sequence), 0)"
            )
        })
        .collect::<Vec<_>>()
        .join(" UNION ALL ");
    let mut checks = vec![
        Check {
            name: "event sequences are gap-free",
            sql: gaps,
        },
        Check {
            name: "every stock movement has its event",
            sql: "SELECT 'products/' || m.sku || '/stockLevels/' || m.location || ': ' || m.n || ' movements, ' || coalesce(e.n, 0) || ' StockLevelChanged' AS finding
                  FROM (SELECT sku, location, count(*) n FROM inventory.stock_movements GROUP BY sku, location) m
                  LEFT JOIN (SELECT subject, count(*) n FROM inventory.events
                             WHERE type = 'backroom.inventory.v1.StockLevelChanged' GROUP BY subject) e
                    ON e.subject = 'products/' || m.sku || '/stockLevels/' || m.location
                  WHERE coalesce(e.n, 0) <> m.n"
                .into(),
        },
        Check {
            name: "every order change has its event",
            sql: "WITH e AS (SELECT subject, type, count(*) n FROM payment.events GROUP BY subject, type)
                  SELECT 'orders/' || o.id || ': ' || o.state || ' without ' || t.type AS finding
                  FROM payment.orders o
                  CROSS JOIN LATERAL (VALUES ('backroom.payment.v1.OrderPlaced', true),
                                             ('backroom.payment.v1.OrderCompleted', o.state = 'COMPLETED'),
                                             ('backroom.payment.v1.OrderFailed', o.state = 'FAILED')) t(type, wanted)
                  WHERE t.wanted AND NOT EXISTS (SELECT 1 FROM e WHERE e.subject = 'orders/' || o.id AND e.type = t.type)
                  UNION ALL
                  SELECT 'orders/' || s.order_id || ': ' || s.n || ' shipped shipments, ' || coalesce(e.n, 0) || ' OrderShipped'
                  FROM (SELECT order_id, count(*) n FROM payment.shipments WHERE state = 'SHIPPED' GROUP BY order_id) s
                  LEFT JOIN e ON e.subject = 'orders/' || s.order_id AND e.type = 'backroom.payment.v1.OrderShipped'
                  WHERE coalesce(e.n, 0) <> s.n
                  UNION ALL
                  SELECT 'paymentIntents/' || i.id || ': succeeded without PaymentIntentCaptured'
                  FROM payment.payment_intents i
                  WHERE i.status = 'succeeded' AND NOT EXISTS
                        (SELECT 1 FROM e WHERE e.subject = 'paymentIntents/' || i.id AND e.type = 'backroom.payment.v1.PaymentIntentCaptured')"
                .into(),
        },
    ];
    if let Some(bound) = tolerances.relay_lag {
        let bound = bound.as_secs();
        checks.push(Check {
            name: "no event unpublished past the relay's bound",
            sql: ["account", "inventory", "payment"]
                .iter()
                .map(|schema| {
                    format!(
                        "SELECT '{schema}: ' || count(*) || ' events unpublished for over {bound} s' AS finding
                         FROM {schema}.events
                         WHERE published_at IS NULL AND sequence IS NOT NULL
                           AND occurred_at < now() - interval '{bound} seconds'
                         HAVING count(*) > 0"
                    )
                })
                .collect::<Vec<_>>()
                .join(" UNION ALL "),
        });
    }
    checks
}

/// Runs every check; returns one line per violation (empty: all hold).
pub fn audit(conn: &mut PgConnection, tolerances: Tolerances) -> anyhow::Result<Vec<String>> {
    let mut findings = Vec::new();
    for check in checks(tolerances) {
        let rows: Vec<Finding> = sql_query(&check.sql).load(conn)?;
        findings.extend(
            rows.into_iter()
                .map(|row| format!("{}: {}", check.name, row.finding)),
        );
    }
    // The payment crate's audit names its tables unqualified.
    diesel::connection::SimpleConnection::batch_execute(conn, "SET search_path TO payment")?;
    let ledger = backroom_payment::db::repo::ledger::audit(conn)
        .map_err(|err| anyhow::anyhow!("ledger audit: {err}"));
    diesel::connection::SimpleConnection::batch_execute(conn, "RESET search_path")?;
    let ledger = ledger?;
    findings.extend(
        ledger
            .into_iter()
            .map(|finding| format!("ledger: {finding}")),
    );
    Ok(findings)
}

/// The names of the checks, for reports.
pub fn check_names() -> Vec<&'static str> {
    let mut names: Vec<&'static str> = checks(Tolerances::default())
        .iter()
        .map(|c| c.name)
        .collect();
    names.push("ledger (journals balance, accounts sum to zero, intent and refund amounts)");
    names
}
