//! No card number or CVC ever reaches a log line or the database: every test
//! card is attached (and some bad ones refused) and confirmed with every log
//! level and span event captured, then the capture and every column of the
//! payment schema are searched. The capture is the binary's global
//! subscriber, so it sees every other test's log lines too: none may hold a
//! card number either.

use crate::helpers::*;
use backroom_proto::payment::v1 as pb;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_card_number_or_cvc_appears_in_any_log_line_or_table() {
    let capture = backroom_shared::testing::LogCapture::install();

    let app = TestApp::spawn().await;
    let ada = app.customer();
    let admin = app.admin();
    for number in ALL_TEST_CARDS {
        let mut request = attach_request(&ada.name, number);
        request.card.as_mut().unwrap().cvc = if number.len() == 15 { "7319" } else { "731" }.into();
        request.request_id = request_id();
        let method = app
            .client()
            .attach_payment_method(authed(&ada.token, request))
            .await
            .unwrap()
            .into_inner();
        let intent = app
            .create(
                &ada,
                pb::CreatePaymentIntentRequest {
                    customer: ada.name.clone(),
                    amount: eur(1234),
                    payment_method: method.name,
                    confirm: true,
                    request_id: request_id(),
                    ..Default::default()
                },
            )
            .await;
        if let Ok(intent) = intent {
            app.client()
                .create_refund(authed(
                    &admin.token,
                    pb::CreateRefundRequest {
                        parent: intent.name,
                        request_id: request_id(),
                        ..Default::default()
                    },
                ))
                .await
                .unwrap();
        }
    }
    // Refused cards: a Luhn failure, an expired card, a bad CVC.
    for (number, mutate) in [
        ("4242424242424241", None),
        ("5105105105105100", Some(2020)),
        ("4111111111111111", None),
    ] {
        let mut request = attach_request(&ada.name, number);
        if let Some(year) = mutate {
            request.card.as_mut().unwrap().exp_year = year;
        }
        if number == "4111111111111111" {
            request.card.as_mut().unwrap().cvc = "73".into();
        }
        let err = app
            .client()
            .attach_payment_method(authed(&ada.token, request))
            .await
            .unwrap_err();
        assert!(!err.message().contains(number));
    }
    let stored = app.stored_card_numbers().await;
    assert!(stored.is_empty(), "card numbers stored: {stored:?}");

    let logs = capture.text();
    assert!(logs.lines().count() > 50, "the capture saw the flow");
    assert!(logs.contains("payment method attached"));
    assert!(logs.contains("payment intent created"));
    let mut leaked = Vec::new();
    for number in ALL_TEST_CARDS.iter().copied().chain([
        "4242424242424241",
        "5105105105105100",
        "4111111111111111",
    ]) {
        if logs.contains(number) {
            leaked.push(number);
        }
    }
    assert!(leaked.is_empty(), "card numbers in the logs: {leaked:?}");
    let luhn_runs = card_numbers_in(&logs);
    assert!(
        luhn_runs.is_empty(),
        "Luhn-valid digit runs in the logs: {luhn_runs:?}"
    );
    for cvc in ["\"731\"", "\"7319\"", "cvc\":"] {
        assert!(!logs.contains(cvc), "{cvc} in the logs");
    }
}
