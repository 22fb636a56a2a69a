//! The inventory service's runtime role against its real schema: stock
//! moves through the service, and the movement log is append-only as a
//! matter of privilege — UPDATE and DELETE are refused before the trigger
//! is even asked — with the guards out of the role's reach.

use crate::helpers::TestApp;
use backroom_shared::testing::{assert_refused_for_privilege, attempt_statement};

#[tokio::test]
async fn the_runtime_role_appends_stock_movements_but_has_no_privilege_to_rewrite_them() {
    let app = TestApp::spawn().await;
    app.product("MUG-1", 1299, 350).await;
    app.stock("MUG-1", "main", 10).await;
    app.reserve("0190d4a8-7a5e-7c3a-9d2e-1f2a3b4c5d6e", &[("MUG-1", 2)])
        .await
        .expect("a reservation through the service");
    assert_eq!(
        attempt_statement(&app.pool, "SELECT * FROM stock_movements").await,
        Ok(())
    );

    for statement in [
        "UPDATE stock_movements SET note = 'rewritten'",
        "DELETE FROM stock_movements",
        "TRUNCATE stock_movements",
    ] {
        let refused = attempt_statement(&app.pool, statement).await.unwrap_err();
        assert!(
            refused.starts_with("permission denied for table stock_movements"),
            "{statement}: {refused}"
        );
    }
    assert_refused_for_privilege(
        &app.pool,
        &[
            "DROP TRIGGER stock_movements_append_only ON stock_movements",
            "ALTER TABLE stock_movements DISABLE TRIGGER stock_movements_append_only",
            "ALTER TABLE stock_levels DROP CONSTRAINT stock_levels_available_check",
            "CREATE OR REPLACE FUNCTION stock_movements_append_only() RETURNS trigger \
             LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$",
        ],
    )
    .await;
}
