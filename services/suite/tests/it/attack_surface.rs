//! The whole attack surface, enumerated: every RPC of every service, found
//! through server reflection (so an RPC added later is covered without
//! touching this test), called with no token, an expired token, a token for
//! another audience, and a forged one. Only the declared public RPCs may
//! answer anything but UNAUTHENTICATED — and never INTERNAL or UNKNOWN.
//!
//! Then, as a signed-in customer: every RPC that takes a customer's resource
//! is called on another customer's. Payment and checkout RPCs that look a
//! resource up answer NOT_FOUND with the reason of a missing one (no
//! existence oracle); RPCs that name the other account answer
//! PERMISSION_DENIED. Every other RPC reflection lists must refuse a customer
//! outright unless it is public or serves the shared catalogue — so an RPC
//! added later that a customer can reach fails the test until it gets an
//! ownership case.
//!
//! One file over 600 lines on purpose: it is one table of every RPC and
//! the ownership case each needs; splitting it would hide a missing row.

use crate::harness::{self, Suite};
use backroom_account::domain::tokens::{SigningKeys, TokenIssuer};
use backroom_shared::client::TracedChannel;
use tokio_stream::StreamExt as _;
use tonic::Code;
use tonic_reflection::pb::v1::{
    ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
    server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
};

/// Every `/pkg.Service/Method` a server advertises, health and reflection
/// excepted (public by design).
async fn methods(channel: TracedChannel) -> Vec<String> {
    let mut client = ServerReflectionClient::new(channel);
    let list = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = client
        .server_reflection_info(tokio_stream::iter([list]))
        .await
        .unwrap()
        .into_inner();
    let Some(MessageResponse::ListServicesResponse(services)) =
        stream.next().await.unwrap().unwrap().message_response
    else {
        panic!("no service list");
    };
    let mut paths = Vec::new();
    for service in services
        .service
        .into_iter()
        .map(|s| s.name)
        .filter(|n| n.starts_with("backroom."))
    {
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::FileContainingSymbol(service.clone())),
        };
        let mut stream = client
            .server_reflection_info(tokio_stream::iter([request]))
            .await
            .unwrap()
            .into_inner();
        let Some(MessageResponse::FileDescriptorResponse(files)) =
            stream.next().await.unwrap().unwrap().message_response
        else {
            panic!("no descriptor for {service}");
        };
        for bytes in files.file_descriptor_proto {
            let file =
                <prost_types::FileDescriptorProto as prost::Message>::decode(bytes.as_slice())
                    .unwrap();
            for svc in &file.service {
                let full = format!("{}.{}", file.package(), svc.name());
                if full == service {
                    paths.extend(svc.method.iter().map(|m| format!("/{full}/{}", m.name())));
                }
            }
        }
    }
    assert!(!paths.is_empty(), "reflection listed no methods");
    paths
}

/// Calls `path` with an empty request message and `token` (if any); the
/// status code of the answer.
async fn call(channel: TracedChannel, path: &str, token: Option<&str>) -> Code {
    let bearer = token.map(|t| format!("Bearer {t}"));
    let metadata: Vec<(&str, &str)> = bearer
        .iter()
        .map(|b| ("authorization", b.as_str()))
        .collect();
    harness::code_of(&harness::raw_call(channel, path, &metadata, Vec::new(), false).await)
}

#[tokio::test]
async fn every_rpc_refuses_missing_expired_misaddressed_and_forged_tokens() {
    let suite = Suite::spawn().await;
    let keys = SigningKeys::from_pem(&suite.keys_pem).unwrap();
    let issuer = TokenIssuer::new(keys, "backroom", chrono::Duration::minutes(15));
    let sub = "accounts/00000000-0000-7000-8000-000000000001".to_owned();
    let roles = vec!["customer".to_owned(), "admin".to_owned()];
    let all = |a: &[&str]| a.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    let (expired, _) = issuer
        .issue(
            sub.clone(),
            roles.clone(),
            all(&backroom_shared::auth::audience::ALL),
            chrono::Utc::now() - chrono::Duration::hours(1),
        )
        .unwrap();
    let stranger = TokenIssuer::new(
        SigningKeys::from_pem(&SigningKeys::generate_pem()).unwrap(),
        "backroom",
        chrono::Duration::minutes(15),
    );
    let (forged, _) = stranger
        .issue(
            sub.clone(),
            roles.clone(),
            all(&backroom_shared::auth::audience::ALL),
            chrono::Utc::now(),
        )
        .unwrap();

    let public = backroom_account::PUBLIC_METHODS;
    let mut checked = 0;
    for (service, server, audience) in [
        ("account", &suite.account, "backroom.account"),
        ("payment", &suite.payment, "backroom.payment"),
    ]
    .into_iter()
    .map(|(name, server, aud)| (name, server.channel.clone(), aud))
    .chain(std::iter::once((
        "inventory",
        {
            // The inventory server is behind a lock (the outage test stops it).
            suite
                .inventory
                .lock()
                .await
                .as_ref()
                .unwrap()
                .channel
                .clone()
        },
        "backroom.inventory",
    ))) {
        // A token every service would accept but this one: wrong audience.
        let other = if audience == "backroom.account" {
            "backroom.payment"
        } else {
            "backroom.account"
        };
        let (misaddressed, _) = issuer
            .issue(
                sub.clone(),
                roles.clone(),
                vec![other.to_owned()],
                chrono::Utc::now(),
            )
            .unwrap();
        for path in methods(server.clone()).await {
            let is_public = public.contains(&path.as_str());
            for (case, token) in [
                ("no token", None),
                ("expired", Some(expired.as_str())),
                ("wrong audience", Some(misaddressed.as_str())),
                ("forged", Some(forged.as_str())),
            ] {
                let code = call(server.clone(), &path, token).await;
                assert!(
                    !matches!(code, Code::Internal | Code::Unknown | Code::Unimplemented),
                    "{service} {path} ({case}): {code:?}"
                );
                if !is_public {
                    assert_eq!(code, Code::Unauthenticated, "{service} {path} ({case})");
                }
            }
            checked += 1;
        }
    }
    assert!(checked >= 50, "only {checked} RPCs found");
}

/// RPCs any signed-in customer may call on the shared catalogue (products,
/// stock levels, quotes, VAT rates): nothing in them belongs to one
/// customer. Discount codes are not among them: a customer learns a code
/// only by using it.
const SHARED_CATALOGUE: [&str; 8] = [
    "/backroom.inventory.v1.InventoryService/GetProduct",
    "/backroom.inventory.v1.InventoryService/ListProducts",
    "/backroom.inventory.v1.InventoryService/GetStockLevel",
    "/backroom.inventory.v1.InventoryService/ListStockLevels",
    "/backroom.inventory.v1.InventoryService/QuoteOrder",
    "/backroom.inventory.v1.InventoryService/ListShippingRules",
    "/backroom.inventory.v1.InventoryService/WatchStock",
    "/backroom.inventory.v1.InventoryService/ListTaxRates",
];

/// Payment and checkout RPCs that look up a resource by name, with the
/// reason a missing one gets: another customer's must get exactly that.
const NOT_FOUND_AS_IF_MISSING: [(&str, &str); 12] = [
    ("GetPaymentMethod", "PAYMENT_METHOD_NOT_FOUND"),
    ("DetachPaymentMethod", "PAYMENT_METHOD_NOT_FOUND"),
    ("GetPaymentIntent", "PAYMENT_INTENT_NOT_FOUND"),
    ("ConfirmPaymentIntent", "PAYMENT_INTENT_NOT_FOUND"),
    ("CancelPaymentIntent", "PAYMENT_INTENT_NOT_FOUND"),
    ("ListRefunds", "PAYMENT_INTENT_NOT_FOUND"),
    ("GetRefund", "REFUND_NOT_FOUND"),
    ("GetOrder", "ORDER_NOT_FOUND"),
    ("ListShipments", "ORDER_NOT_FOUND"),
    ("CancelOrder", "ORDER_NOT_FOUND"),
    ("RequestReturn", "ORDER_NOT_FOUND"),
    ("ListReturns", "ORDER_NOT_FOUND"),
];

/// Calls `path` as `token` with `message` (any prost message); the code and
/// the ErrorInfo reason.
async fn call_with<M: prost::Message>(
    channel: TracedChannel,
    path: &str,
    token: &str,
    message: M,
) -> (Code, String) {
    let bearer = format!("Bearer {token}");
    let outcome = harness::raw_call(
        channel,
        path,
        &[("authorization", &bearer)],
        message.encode_to_vec(),
        false,
    )
    .await;
    let reason = outcome
        .as_ref()
        .err()
        .and_then(backroom_shared::errors::reason_of)
        .unwrap_or_default();
    (harness::code_of(&outcome), reason)
}

#[tokio::test]
async fn a_customer_cannot_reach_another_customers_resources() {
    use backroom_proto::{account::v1 as account_pb, payment::v1 as pb};
    let suite = Suite::spawn().await;
    suite.product("MUG", 1000, 10).await;
    let victim = suite.customer("victim@example.com", harness::VISA).await;
    let attacker = suite.customer("attacker@example.com", harness::VISA).await;
    let order = suite
        .place(
            &victim,
            &victim.card,
            &[("MUG", 1)],
            &uuid::Uuid::new_v4().to_string(),
        )
        .await
        .unwrap();
    let intent = order.payment_intent.clone();
    let account = suite.account.channel.clone();
    let payment = suite.payment.channel.clone();
    let t = attacker.token.as_str();
    let mut checks: Vec<(&str, (Code, String))> = Vec::new();
    let a = "/backroom.account.v1.AccountService/";
    let p = "/backroom.payment.v1.PaymentService/";
    let c = "/backroom.payment.v1.CheckoutService/";
    checks.push((
        "GetAccount",
        call_with(
            account.clone(),
            &format!("{a}GetAccount"),
            t,
            account_pb::GetAccountRequest {
                name: victim.name.clone(),
            },
        )
        .await,
    ));
    checks.push((
        "UpdateAccount",
        call_with(
            account.clone(),
            &format!("{a}UpdateAccount"),
            t,
            account_pb::UpdateAccountRequest {
                account: Some(account_pb::Account {
                    name: victim.name.clone(),
                    display_name: "pwned".into(),
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["display_name".into()],
                }),
                request_id: String::new(),
            },
        )
        .await,
    ));
    checks.push((
        "ChangePassword",
        call_with(
            account.clone(),
            &format!("{a}ChangePassword"),
            t,
            account_pb::ChangePasswordRequest {
                name: victim.name.clone(),
                current_password: harness::PASSWORD.into(),
                new_password: "attacker chosen password".into(),
                request_id: String::new(),
            },
        )
        .await,
    ));
    checks.push((
        "GetAddress",
        call_with(
            account.clone(),
            &format!("{a}GetAddress"),
            t,
            account_pb::GetAddressRequest {
                name: victim.address.clone(),
            },
        )
        .await,
    ));
    checks.push((
        "ListAddresses",
        call_with(
            account.clone(),
            &format!("{a}ListAddresses"),
            t,
            account_pb::ListAddressesRequest {
                parent: victim.name.clone(),
                ..Default::default()
            },
        )
        .await,
    ));
    checks.push((
        "DeleteAddress",
        call_with(
            account.clone(),
            &format!("{a}DeleteAddress"),
            t,
            account_pb::DeleteAddressRequest {
                name: victim.address.clone(),
                request_id: String::new(),
            },
        )
        .await,
    ));
    checks.push((
        "CreateAddress",
        call_with(
            account.clone(),
            &format!("{a}CreateAddress"),
            t,
            account_pb::CreateAddressRequest {
                parent: victim.name.clone(),
                address: Some(account_pb::Address {
                    recipient: "Mallory".into(),
                    line1: "Elsewhere 1".into(),
                    city: "Berlin".into(),
                    country_code: "DE".into(),
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        )
        .await,
    ));
    checks.push((
        "GetPaymentMethod",
        call_with(
            payment.clone(),
            &format!("{p}GetPaymentMethod"),
            t,
            pb::GetPaymentMethodRequest {
                name: victim.card.clone(),
            },
        )
        .await,
    ));
    checks.push((
        "ListPaymentMethods",
        call_with(
            payment.clone(),
            &format!("{p}ListPaymentMethods"),
            t,
            pb::ListPaymentMethodsRequest {
                customer: victim.name.clone(),
                ..Default::default()
            },
        )
        .await,
    ));
    checks.push((
        "DetachPaymentMethod",
        call_with(
            payment.clone(),
            &format!("{p}DetachPaymentMethod"),
            t,
            pb::DetachPaymentMethodRequest {
                name: victim.card.clone(),
                request_id: String::new(),
            },
        )
        .await,
    ));
    checks.push((
        "GetPaymentIntent",
        call_with(
            payment.clone(),
            &format!("{p}GetPaymentIntent"),
            t,
            pb::GetPaymentIntentRequest {
                name: intent.clone(),
            },
        )
        .await,
    ));
    checks.push((
        "CancelPaymentIntent",
        call_with(
            payment.clone(),
            &format!("{p}CancelPaymentIntent"),
            t,
            pb::CancelPaymentIntentRequest {
                name: intent.clone(),
                cancellation_reason: pb::CancellationReason::Fraudulent as i32,
                request_id: String::new(),
            },
        )
        .await,
    ));
    checks.push((
        "CreateRefund",
        call_with(
            payment.clone(),
            &format!("{p}CreateRefund"),
            t,
            pb::CreateRefundRequest {
                parent: intent.clone(),
                ..Default::default()
            },
        )
        .await,
    ));
    checks.push((
        "ListRefunds",
        call_with(
            payment.clone(),
            &format!("{p}ListRefunds"),
            t,
            pb::ListRefundsRequest {
                parent: intent.clone(),
                ..Default::default()
            },
        )
        .await,
    ));
    checks.push((
        "GetOrder",
        call_with(
            payment.clone(),
            &format!("{c}GetOrder"),
            t,
            pb::GetOrderRequest {
                name: order.name.clone(),
            },
        )
        .await,
    ));
    checks.push((
        "CancelOrder",
        call_with(
            payment.clone(),
            &format!("{c}CancelOrder"),
            t,
            pb::CancelOrderRequest {
                name: order.name.clone(),
                reason: "not mine to cancel".into(),
                request_id: uuid::Uuid::new_v4().to_string(),
            },
        )
        .await,
    ));
    checks.push((
        "ListShipments",
        call_with(
            payment.clone(),
            &format!("{c}ListShipments"),
            t,
            pb::ListShipmentsRequest {
                parent: order.name.clone(),
                ..Default::default()
            },
        )
        .await,
    ));
    checks.push((
        "RequestReturn",
        call_with(
            payment.clone(),
            &format!("{c}RequestReturn"),
            t,
            pb::RequestReturnRequest {
                parent: order.name.clone(),
                reason: pb::ReturnReason::Other.into(),
                request_id: uuid::Uuid::new_v4().to_string(),
                ..Default::default()
            },
        )
        .await,
    ));
    checks.push((
        "ListReturns",
        call_with(
            payment.clone(),
            &format!("{c}ListReturns"),
            t,
            pb::ListReturnsRequest {
                parent: order.name.clone(),
                ..Default::default()
            },
        )
        .await,
    ));
    checks.push((
        "ListOrders",
        call_with(
            payment.clone(),
            &format!("{c}ListOrders"),
            t,
            pb::ListOrdersRequest {
                customer: victim.name.clone(),
                ..Default::default()
            },
        )
        .await,
    ));
    checks.push((
        "PlaceOrder",
        call_with(
            payment.clone(),
            &format!("{c}PlaceOrder"),
            t,
            pb::PlaceOrderRequest {
                customer: victim.name.clone(),
                lines: vec![pb::LineItem {
                    sku: "MUG".into(),
                    quantity: 1,
                }],
                payment_method: victim.card.clone(),
                shipping_address: victim.address.clone(),
                currency_code: "EUR".into(),
                request_id: uuid::Uuid::new_v4().to_string(),
                ..Default::default()
            },
        )
        .await,
    ));
    checks.push((
        "AttachPaymentMethod",
        call_with(
            payment.clone(),
            &format!("{p}AttachPaymentMethod"),
            t,
            pb::AttachPaymentMethodRequest {
                customer: victim.name.clone(),
                card: Some(pb::Card {
                    number: harness::VISA.into(),
                    exp_month: 12,
                    exp_year: 2099,
                    cvc: "123".into(),
                    holder_name: "Mallory".into(),
                }),
                request_id: uuid::Uuid::new_v4().to_string(),
            },
        )
        .await,
    ));
    let intent_for = |customer: &str, card: &str| pb::CreatePaymentIntentRequest {
        customer: customer.to_owned(),
        amount: harness::eur(100),
        capture_method: pb::CaptureMethod::Automatic as i32,
        payment_method: card.to_owned(),
        confirm: true,
        request_id: uuid::Uuid::new_v4().to_string(),
        ..Default::default()
    };
    checks.push((
        "CreatePaymentIntent",
        call_with(
            payment.clone(),
            &format!("{p}CreatePaymentIntent"),
            t,
            intent_for(&victim.name, &victim.card),
        )
        .await,
    ));
    // Charging the victim's card to the attacker's own account: the card is
    // not theirs, so it does not exist for them.
    checks.push((
        "CreatePaymentIntent (the victim's card)",
        call_with(
            payment.clone(),
            &format!("{p}CreatePaymentIntent"),
            t,
            intent_for("accounts/me", &victim.card),
        )
        .await,
    ));
    checks.push((
        "ListPaymentIntents",
        call_with(
            payment.clone(),
            &format!("{p}ListPaymentIntents"),
            t,
            pb::ListPaymentIntentsRequest {
                customer: victim.name.clone(),
                ..Default::default()
            },
        )
        .await,
    ));
    checks.push((
        "ConfirmPaymentIntent",
        call_with(
            payment.clone(),
            &format!("{p}ConfirmPaymentIntent"),
            t,
            pb::ConfirmPaymentIntentRequest {
                name: intent.clone(),
                payment_method: victim.card.clone(),
                request_id: uuid::Uuid::new_v4().to_string(),
            },
        )
        .await,
    ));
    // A refund of the victim's own (not order-owned) payment: an order's
    // payment is refunded through the order only.
    let paid = suite
        .payments
        .clone()
        .create_payment_intent(harness::authed(
            &victim.token,
            intent_for("accounts/me", &victim.card),
        ))
        .await
        .unwrap()
        .into_inner();
    let refund = suite
        .payments
        .clone()
        .create_refund(harness::authed(
            &suite.admin,
            pb::CreateRefundRequest {
                parent: paid.name.clone(),
                amount: harness::eur(100),
                reason: pb::RefundReason::RequestedByCustomer as i32,
                request_id: uuid::Uuid::new_v4().to_string(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    checks.push((
        "GetRefund",
        call_with(
            payment.clone(),
            &format!("{p}GetRefund"),
            t,
            pb::GetRefundRequest {
                name: refund.name.clone(),
            },
        )
        .await,
    ));
    for (rpc, (code, reason)) in &checks {
        match NOT_FOUND_AS_IF_MISSING.iter().find(|(name, _)| name == rpc) {
            Some((_, missing)) => assert_eq!(
                (*code, reason.as_str()),
                (Code::NotFound, *missing),
                "{rpc} on another customer's resource must answer as for a missing one"
            ),
            None if *rpc == "CreatePaymentIntent (the victim's card)" => assert_eq!(
                (*code, reason.as_str()),
                (Code::NotFound, "PAYMENT_METHOD_NOT_FOUND"),
                "{rpc}"
            ),
            None => assert!(
                matches!(code, Code::PermissionDenied | Code::NotFound),
                "{rpc} on another customer's resource answered {code:?}"
            ),
        }
    }
    for (rpc, _) in NOT_FOUND_AS_IF_MISSING {
        assert!(
            checks.iter().any(|(checked, _)| *checked == rpc),
            "{rpc} has no case"
        );
    }
    // Every other RPC, found through reflection: a customer must be refused
    // outright (role-gated: admin or service only), unless it is public or
    // serves the shared catalogue. A new RPC that a customer can reach fails
    // here until it gets an ownership case above.
    let inventory = suite
        .inventory
        .lock()
        .await
        .as_ref()
        .unwrap()
        .channel
        .clone();
    let mut role_gated = 0;
    let mut reachable = Vec::new();
    for server in [account.clone(), inventory, payment.clone()] {
        for path in methods(server.clone()).await {
            let rpc = path.rsplit('/').next().unwrap();
            if checks.iter().any(|(checked, _)| *checked == rpc)
                || backroom_account::PUBLIC_METHODS.contains(&path.as_str())
                || SHARED_CATALOGUE.contains(&path.as_str())
            {
                continue;
            }
            let code = call(server.clone(), &path, Some(t)).await;
            if code == Code::PermissionDenied {
                role_gated += 1;
            } else {
                reachable.push(format!("{path} ({code:?})"));
            }
        }
    }
    assert!(
        reachable.is_empty(),
        "a customer reaches these; add a case for another customer's resource or list them as shared: {reachable:#?}"
    );
    assert!(role_gated >= 15, "only {role_gated} role-gated RPCs found");
    // Nothing changed for the victim.
    let order_now = suite.order(&order.name).await;
    assert_eq!(order_now.state, pb::OrderState::Completed as i32);
    assert_eq!(
        suite.level("MUG").await.committed,
        1,
        "no order was placed for the victim"
    );
    println!(
        "checked: {} RPCs on another customer's resources: {} that look one up answer NOT_FOUND exactly as for a missing one, the rest PERMISSION_DENIED (naming the other account, or role-gated); {role_gated} more refuse a customer outright; {} public, {} shared catalogue",
        checks.len(),
        NOT_FOUND_AS_IF_MISSING.len(),
        backroom_account::PUBLIC_METHODS.len(),
        SHARED_CATALOGUE.len()
    );
}
