//! The payment service's runtime role against its real schema: it serves
//! checkout-sized work end to end, may append to the ledger, and is refused
//! on privilege grounds — not merely by the append-only trigger — when it
//! tries to rewrite the ledger or remove the guards around it.

use crate::helpers::{self, TestApp};
use backroom_shared::testing::{assert_refused_for_privilege, attempt_statement};

#[tokio::test]
async fn the_runtime_role_appends_to_the_ledger_but_has_no_privilege_to_rewrite_it() {
    let app = TestApp::spawn().await;
    let ada = app.customer();
    // End to end through the service: authorize, capture, refund — every
    // step posts journals and entries as the runtime role.
    let intent = app.captured(&ada, 1_000).await;
    app.client()
        .create_refund(helpers::authed(
            &app.admin().token,
            backroom_proto::payment::v1::CreateRefundRequest {
                parent: intent.name.clone(),
                amount: helpers::eur(300),
                request_id: helpers::request_id(),
                ..Default::default()
            },
        ))
        .await
        .expect("a refund through the service");
    assert_eq!(
        attempt_statement(&app.pool, "SELECT * FROM ledger_entries").await,
        Ok(())
    );

    // Privilege refusals ("permission denied for table …"), not the
    // trigger's "the ledger is append-only": the trigger could be dropped
    // by whoever owns the table, a privilege the service does not have.
    for statement in [
        "UPDATE ledger_entries SET amount = amount + 1",
        "DELETE FROM ledger_entries",
        "UPDATE journals SET created_at = now()",
        "DELETE FROM journals",
        "TRUNCATE ledger_entries",
        "TRUNCATE journals CASCADE",
    ] {
        let refused = attempt_statement(&app.pool, statement).await.unwrap_err();
        assert!(
            refused.starts_with("permission denied for table"),
            "{statement}: {refused}"
        );
    }
    // Nor can it take the guards away first.
    assert_refused_for_privilege(
        &app.pool,
        &[
            "DROP TRIGGER ledger_entries_append_only ON ledger_entries",
            "ALTER TABLE journals DISABLE TRIGGER journals_append_only",
            "ALTER TABLE ledger_entries DISABLE TRIGGER ledger_entries_balanced",
            "ALTER TABLE payment_intents DROP CONSTRAINT payment_intents_refunded_le_received",
            "CREATE OR REPLACE FUNCTION forbid_ledger_change() RETURNS trigger \
             LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$",
            "ALTER TABLE ledger_entries OWNER TO CURRENT_USER",
        ],
    )
    .await;
    assert!(app.audit().await.is_empty());
}
