//! Fixtures the scenarios need, created through the public APIs: an admin
//! session, products with stock, customers with an address and a card, and
//! the payment service's service token (for reservations).

use backroom_proto::{
    account::v1::{self as account_pb, account_service_client::AccountServiceClient},
    common::v1::Money,
    inventory::v1::{self as inventory_pb, inventory_service_client::InventoryServiceClient},
    payment::v1::{self as pb, payment_service_client::PaymentServiceClient},
};
use tonic::{Request, transport::Channel};

/// Where the suite is and how to act as its admin and as a service.
#[derive(Debug, Clone)]
pub struct Suite {
    /// `http://…` of account.
    pub account: String,
    /// `http://…` of inventory.
    pub inventory: String,
    /// `http://…` of payment.
    pub payment: String,
    /// The bootstrap admin's password.
    pub admin_password: String,
    /// The payment service principal's secret (for service tokens).
    pub payment_client_secret: String,
}

/// `message` with a bearer token.
pub fn authed<T>(token: &str, message: T) -> Request<T> {
    let mut request = Request::new(message);
    if let Ok(value) = format!("Bearer {token}").parse() {
        request.metadata_mut().insert("authorization", value);
    }
    request
}

async fn connect(endpoint: &str) -> anyhow::Result<Channel> {
    Ok(
        tonic::transport::Endpoint::from_shared(endpoint.to_owned())?
            .tcp_nodelay(true)
            .connect()
            .await?,
    )
}

/// The admin's access token.
pub async fn admin_token(suite: &Suite) -> anyhow::Result<String> {
    Ok(AccountServiceClient::new(connect(&suite.account).await?)
        .login(account_pb::LoginRequest {
            email: "admin@backroom.local".into(),
            password: suite.admin_password.clone(),
        })
        .await?
        .into_inner()
        .access_token)
}

/// A service token of the payment principal for `audience`.
pub async fn service_token(suite: &Suite, audience: &str) -> anyhow::Result<String> {
    Ok(AccountServiceClient::new(connect(&suite.account).await?)
        .issue_service_token(account_pb::IssueServiceTokenRequest {
            client_id: "payment".into(),
            client_secret: suite.payment_client_secret.clone(),
            audience: audience.into(),
        })
        .await?
        .into_inner()
        .access_token)
}

/// Creates product `sku` (EUR 9.99, 300 g) with `units` at "main".
pub async fn product(suite: &Suite, admin: &str, sku: &str, units: i64) -> anyhow::Result<()> {
    let mut inventory = InventoryServiceClient::new(connect(&suite.inventory).await?);
    inventory
        .create_product(authed(
            admin,
            inventory_pb::CreateProductRequest {
                product: Some(inventory_pb::Product {
                    sku: sku.into(),
                    display_name: format!("Bench {sku}"),
                    unit_price: Some(Money {
                        currency_code: "EUR".into(),
                        amount_minor: 999,
                    }),
                    weight_grams: 300,
                    active: true,
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await?;
    inventory
        .adjust_stock(authed(
            admin,
            inventory_pb::AdjustStockRequest {
                name: format!("products/{sku}/stockLevels/main"),
                delta: units,
                reason: inventory_pb::StockAdjustmentReason::Received as i32,
                expected_version: 0,
                ..Default::default()
            },
        ))
        .await?;
    Ok(())
}

/// A logged-in customer with an address and a Visa test card.
#[derive(Debug, Clone)]
pub struct Shopper {
    /// Access token.
    pub token: String,
    /// `accounts/{a}/addresses/{b}`.
    pub address: String,
    /// `paymentMethods/{id}`.
    pub card: String,
}

/// Registers and equips a customer.
pub async fn shopper(suite: &Suite, email: &str) -> anyhow::Result<Shopper> {
    let mut accounts = AccountServiceClient::new(connect(&suite.account).await?);
    accounts
        .register(account_pb::RegisterRequest {
            email: email.into(),
            password: "loadgen password".into(),
            display_name: "Shopper".into(),
            request_id: String::new(),
        })
        .await?;
    let token = accounts
        .login(account_pb::LoginRequest {
            email: email.into(),
            password: "loadgen password".into(),
        })
        .await?
        .into_inner()
        .access_token;
    let address = accounts
        .create_address(authed(
            &token,
            account_pb::CreateAddressRequest {
                parent: "accounts/me".into(),
                address: Some(account_pb::Address {
                    recipient: "Load Gen".into(),
                    line1: "Hauptstrasse 1".into(),
                    city: "Berlin".into(),
                    postal_code: "10115".into(),
                    country_code: "DE".into(),
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await?
        .into_inner()
        .name;
    let card = PaymentServiceClient::new(connect(&suite.payment).await?)
        .attach_payment_method(authed(
            &token,
            pb::AttachPaymentMethodRequest {
                customer: "accounts/me".into(),
                card: Some(pb::Card {
                    number: "4242424242424242".into(),
                    exp_month: 12,
                    exp_year: 2099,
                    cvc: "123".into(),
                    holder_name: "Load Gen".into(),
                }),
                request_id: String::new(),
            },
        ))
        .await?
        .into_inner()
        .name;
    Ok(Shopper {
        token,
        address,
        card,
    })
}
