//! The invariant checker against the three real services: clean after real
//! orders (completed, declined, short of stock), and it catches a corrupted
//! stock level and a held reservation, and reports an order that needs
//! attention (its stock committed, its payment voided after the pivot).

use crate::harness::{self, DECLINE, Suite, VISA};
use backroom::audit::{Tolerances, audit};
use diesel::connection::SimpleConnection as _;

pub(crate) async fn findings(suite: &Suite, tolerances: Tolerances) -> Vec<String> {
    let url = suite.admin_url.clone();
    tokio::task::spawn_blocking(move || {
        let mut conn = backroom_shared::db::connect(&url).unwrap();
        audit(&mut conn, tolerances).unwrap()
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn real_orders_leave_every_invariant_intact_and_corruption_is_reported() {
    let suite = Suite::spawn().await;
    suite.product("MUG", 1299, 3).await;
    let ada = suite.customer("audit@example.com", VISA).await;
    let declined = suite.card(&ada.token, DECLINE).await;
    let id = || uuid::Uuid::new_v4().to_string();
    suite
        .place(&ada, &ada.card, &[("MUG", 2)], &id())
        .await
        .unwrap();
    suite
        .place(&ada, &declined, &[("MUG", 1)], &id())
        .await
        .unwrap();
    suite
        .place(&ada, &ada.card, &[("MUG", 5)], &id())
        .await
        .unwrap();
    assert_eq!(
        findings(&suite, Tolerances::default()).await,
        Vec::<String>::new()
    );

    // Corrupt a level behind the movement log's back: the audit says so.
    let url = suite.admin_url.clone();
    tokio::task::spawn_blocking(move || {
        backroom_shared::db::connect(&url)
            .unwrap()
            .batch_execute(
                "UPDATE inventory.stock_levels SET available = available + 5 WHERE sku = 'MUG'",
            )
            .unwrap();
    })
    .await
    .unwrap();
    let found = findings(&suite, Tolerances::default()).await;
    assert!(
        found
            .iter()
            .any(|f| f.starts_with("movement log replays to every level: MUG@main")),
        "{found:#?}"
    );
}

#[tokio::test]
async fn an_order_whose_payment_was_voided_after_the_pivot_is_reported_as_needing_attention() {
    use backroom_payment::checkout::saga::{Fault, State};
    use backroom_proto::payment::v1 as pb;
    let suite = Suite::spawn().await;
    suite.product("MUG", 1299, 3).await;
    let ada = suite.customer("attention@example.com", VISA).await;
    // A healthy order first: the audit stays quiet about it.
    suite
        .place(
            &ada,
            &ada.card,
            &[("MUG", 1)],
            &uuid::Uuid::new_v4().to_string(),
        )
        .await
        .unwrap();
    // Stopped right after the pivot; the authorization is then voided (by
    // the one principal still allowed to: checkout's own).
    suite.saga.plant_fault(Fault::Before(State::Capturing));
    let order = suite
        .place(
            &ada,
            &ada.card,
            &[("MUG", 1)],
            &uuid::Uuid::new_v4().to_string(),
        )
        .await
        .unwrap();
    suite
        .payments
        .clone()
        .cancel_payment_intent(harness::authed(
            &suite.service_token("payment", "backroom.payment"),
            pb::CancelPaymentIntentRequest {
                name: order.payment_intent.clone(),
                cancellation_reason: pb::CancellationReason::Abandoned as i32,
                request_id: uuid::Uuid::new_v4().to_string(),
            },
        ))
        .await
        .unwrap();
    suite.clock.advance(chrono::Duration::seconds(31));
    suite.restarted_saga().recover_due().await.unwrap();
    assert_eq!(
        suite.order(&order.name).await.state,
        pb::OrderState::NeedsAttention as i32
    );
    // Strict tolerances: NEEDS_ATTENTION is not "unfinished", it is its own
    // finding, with why, the payment and the stock.
    let found = findings(
        &suite,
        Tolerances {
            stuck_after: std::time::Duration::ZERO,
            ..Tolerances::default()
        },
    )
    .await;
    assert_eq!(found.len(), 1, "{found:#?}");
    let finding = &found[0];
    for part in [
        format!("no order needs attention: {} NEEDS_ATTENTION", order.name),
        "CAPTURE_REFUSED".to_owned(),
        format!("payment {} canceled", order.payment_intent),
        "reservation COMMITTED".to_owned(),
    ] {
        assert!(finding.contains(&part), "{part:?} not in {finding}");
    }
    println!("audit reports: {finding}");
}
