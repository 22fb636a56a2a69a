//! Lasting admin power: an admin disabled with DisableAccount called
//! EnableAccount on herself with the access token she still held, and it
//! worked; ListAccounts kept working; a demotion was undone the same way,
//! because roles were read from the token's claims. Now account authorizes
//! from its database, and every other service refuses a token whose
//! account's security version moved on (the revocation list, polled every
//! 2 s): admin tokens within seconds, everyone's within a minute. If the list
//! cannot be refreshed, admin tokens are refused after 10 s, others after
//! 60 s (fail closed).

use std::time::{Duration, Instant};

use backroom_loadgen::{
    fixtures::{self, authed},
    stack::{Service, StackOptions},
};
use backroom_proto::{
    account::v1::{self as account_pb, account_service_client::AccountServiceClient},
    inventory::v1::{self as inventory_pb, inventory_service_client::InventoryServiceClient},
    payment::v1::{self as payment_pb, payment_service_client::PaymentServiceClient},
};
use backroom_shared::errors::reason_of;
use tonic::{Code, transport::Channel};

use crate::common::{World, lazy_channel};

const PASSWORD: &str = "a good long password";
/// Within this, a revoked admin token must stop working everywhere.
const ADMIN_BOUND: Duration = Duration::from_secs(10);
/// Within this, any revoked token must stop working everywhere.
const ANY_BOUND: Duration = Duration::from_secs(60);

struct Clients {
    account: AccountServiceClient<Channel>,
    inventory: InventoryServiceClient<Channel>,
    payment: PaymentServiceClient<Channel>,
}

impl Clients {
    fn new(world: &World) -> Self {
        Self {
            account: AccountServiceClient::new(lazy_channel(
                &world.stack.endpoint(Service::Account),
            )),
            inventory: InventoryServiceClient::new(lazy_channel(
                &world.stack.endpoint(Service::Inventory),
            )),
            payment: PaymentServiceClient::new(lazy_channel(
                &world.stack.endpoint(Service::Payment),
            )),
        }
    }

    async fn login(&mut self, email: &str, password: &str) -> String {
        self.account
            .login(account_pb::LoginRequest {
                email: email.into(),
                password: password.into(),
            })
            .await
            .expect("login")
            .into_inner()
            .access_token
    }

    async fn customer(&mut self, email: &str) -> String {
        let account = self
            .account
            .register(account_pb::RegisterRequest {
                email: email.into(),
                password: PASSWORD.into(),
                display_name: "Staff".into(),
                request_id: String::new(),
            })
            .await
            .expect("register")
            .into_inner();
        account.name
    }

    async fn set_roles(&mut self, admin: &str, name: &str, roles: &[&str]) {
        self.account
            .update_account(authed(
                admin,
                account_pb::UpdateAccountRequest {
                    account: Some(account_pb::Account {
                        name: name.into(),
                        roles: roles.iter().map(|r| (*r).to_owned()).collect(),
                        ..Default::default()
                    }),
                    update_mask: Some(prost_types::FieldMask {
                        paths: vec!["roles".into()],
                    }),
                    request_id: String::new(),
                },
            ))
            .await
            .expect("set roles");
    }

    async fn inventory_admin(&self, token: &str) -> Result<(), tonic::Status> {
        inventory_admin(self.inventory.clone(), token.to_owned()).await
    }

    async fn payment_admin(&self, token: &str) -> Result<(), tonic::Status> {
        payment_admin(self.payment.clone(), token.to_owned()).await
    }

    async fn inventory_any(&self, token: &str) -> Result<(), tonic::Status> {
        inventory_any(self.inventory.clone(), token.to_owned()).await
    }
}

/// An admin-only call on inventory.
async fn inventory_admin(
    mut inventory: InventoryServiceClient<Channel>,
    token: String,
) -> Result<(), tonic::Status> {
    inventory
        .list_stock_movements(authed(
            &token,
            inventory_pb::ListStockMovementsRequest {
                parent: "products/-/stockLevels/-".into(),
                ..Default::default()
            },
        ))
        .await
        .map(|_| ())
}

/// An admin-only call on payment.
async fn payment_admin(
    mut payment: PaymentServiceClient<Channel>,
    token: String,
) -> Result<(), tonic::Status> {
    payment
        .list_ledger_accounts(authed(
            &token,
            payment_pb::ListLedgerAccountsRequest::default(),
        ))
        .await
        .map(|_| ())
}

/// A call any customer may make, on inventory.
async fn inventory_any(
    mut inventory: InventoryServiceClient<Channel>,
    token: String,
) -> Result<(), tonic::Status> {
    inventory
        .list_products(authed(&token, inventory_pb::ListProductsRequest::default()))
        .await
        .map(|_| ())
}

fn describe(result: &Result<(), tonic::Status>) -> String {
    match result {
        Ok(()) => "OK".into(),
        Err(status) => format!(
            "{:?} {}",
            status.code(),
            reason_of(status).unwrap_or_default()
        ),
    }
}

/// Calls `check` until it is refused with UNAUTHENTICATED (or `bound`
/// passes); returns how long that took and the refusal.
async fn until_refused<F, Fut>(bound: Duration, mut check: F) -> (Duration, String)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), tonic::Status>>,
{
    let started = Instant::now();
    let mut interval = tokio::time::interval(Duration::from_millis(100));
    loop {
        interval.tick().await;
        let result = check().await;
        if let Err(status) = &result
            && status.code() == Code::Unauthenticated
        {
            return (started.elapsed(), describe(&result));
        }
        assert!(
            started.elapsed() < bound,
            "still {} after {:?}",
            describe(&result),
            started.elapsed()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_or_demoted_admin_loses_power_everywhere_within_the_bound() {
    let mut world = World::start("admin-power", false, StackOptions::default()).await;
    let suite = world.stack.suite();
    let root = fixtures::admin_token(&suite).await.expect("admin login");
    let mut c = Clients::new(&world);

    // Bea is made an admin and logs in: her token works everywhere.
    let bea = c.customer("bea@example.com").await;
    c.set_roles(&root, &bea, &["admin", "customer"]).await;
    let bea_token = c.login("bea@example.com", PASSWORD).await;
    c.inventory_admin(&bea_token)
        .await
        .expect("bea is admin on inventory");
    c.payment_admin(&bea_token)
        .await
        .expect("bea is admin on payment");

    // Disabled. With the token she still holds she tries to enable herself.
    c.account
        .disable_account(authed(
            &root,
            account_pb::DisableAccountRequest {
                name: bea.clone(),
                reason: "left".into(),
                request_id: String::new(),
            },
        ))
        .await
        .expect("disable");
    let self_enable = c
        .account
        .enable_account(authed(
            &bea_token,
            account_pb::EnableAccountRequest {
                name: "accounts/me".into(),
                request_id: String::new(),
            },
        ))
        .await
        .map(|_| ());
    let listing = c
        .account
        .list_accounts(authed(
            &bea_token,
            account_pb::ListAccountsRequest::default(),
        ))
        .await
        .map(|_| ());
    assert_eq!(describe(&self_enable), "Unauthenticated TOKEN_REVOKED");
    assert_eq!(describe(&listing), "Unauthenticated TOKEN_REVOKED");
    let state = c
        .account
        .get_account(authed(
            &root,
            account_pb::GetAccountRequest { name: bea.clone() },
        ))
        .await
        .expect("get")
        .into_inner()
        .state;
    assert_eq!(
        state,
        account_pb::AccountState::Disabled as i32,
        "she stays disabled"
    );
    let (inventory_took, inventory_refusal) = until_refused(ADMIN_BOUND, || {
        inventory_admin(c.inventory.clone(), bea_token.clone())
    })
    .await;
    let (payment_took, payment_refusal) = until_refused(ADMIN_BOUND, || {
        payment_admin(c.payment.clone(), bea_token.clone())
    })
    .await;
    println!(
        "injected: admin bea disabled; her token: EnableAccount(self) {}, ListAccounts {}, inventory admin RPC refused after {inventory_took:?} ({inventory_refusal}), payment admin RPC after {payment_took:?} ({payment_refusal})",
        describe(&self_enable),
        describe(&listing)
    );

    // Demoted: the token with role admin in its claims stops counting; a new
    // one carries no admin role.
    let carl = c.customer("carl@example.com").await;
    c.set_roles(&root, &carl, &["admin", "customer"]).await;
    let carl_admin = c.login("carl@example.com", PASSWORD).await;
    c.inventory_admin(&carl_admin).await.expect("carl is admin");
    c.set_roles(&root, &carl, &["customer"]).await;
    let (demoted_took, demoted_refusal) = until_refused(ADMIN_BOUND, || {
        inventory_admin(c.inventory.clone(), carl_admin.clone())
    })
    .await;
    let carl_customer = c.login("carl@example.com", PASSWORD).await;
    let status = c.inventory_admin(&carl_customer).await.unwrap_err();
    assert_eq!(reason_of(&status).as_deref(), Some("ACCESS_DENIED"));

    // A customer disabled: every RPC refuses her token within a minute.
    let dana = c.customer("dana@example.com").await;
    let dana_token = c.login("dana@example.com", PASSWORD).await;
    c.inventory_any(&dana_token).await.expect("dana browses");
    c.account
        .disable_account(authed(
            &root,
            account_pb::DisableAccountRequest {
                name: dana,
                reason: "fraud".into(),
                request_id: String::new(),
            },
        ))
        .await
        .expect("disable dana");
    let (customer_took, customer_refusal) = until_refused(ANY_BOUND, || {
        inventory_any(c.inventory.clone(), dana_token.clone())
    })
    .await;
    println!(
        "checked: demoted carl's admin token refused on inventory after {demoted_took:?} ({demoted_refusal}), his new token gets ACCESS_DENIED; disabled customer dana's token refused on inventory after {customer_took:?} ({customer_refusal})"
    );

    // Fail closed: with the account service gone the list goes stale; admin
    // tokens are refused after 10 s, a customer's still work until 60 s.
    let customer = fixtures::shopper(&suite, "erin@example.com")
        .await
        .expect("shopper");
    world.stack.kill9(Service::Account).expect("kill account");
    let killed = Instant::now();
    let mut interval = tokio::time::interval(Duration::from_millis(250));
    let admin_refused = loop {
        interval.tick().await;
        let result = c.inventory_admin(&root).await;
        if let Err(status) = &result {
            assert_eq!(status.code(), Code::Unavailable, "{status:?}");
            break killed.elapsed();
        }
        assert!(
            killed.elapsed() < Duration::from_secs(20),
            "admin still admitted after {:?}",
            killed.elapsed()
        );
    };
    let customer_still = c.inventory_any(&customer.token).await;
    println!(
        "checked: account killed; inventory refused the admin token after {admin_refused:?} (UNAVAILABLE: the list is stale), a customer token then: {}",
        describe(&customer_still)
    );
    assert!(
        admin_refused >= Duration::from_secs(8),
        "not before the list is stale: {admin_refused:?}"
    );
    customer_still.expect("a customer's token still works while the list is under a minute old");
    world
        .stack
        .restart(Service::Account)
        .await
        .expect("restart account");
    let root = fixtures::admin_token(&suite)
        .await
        .expect("admin login after restart");
    let back = Instant::now();
    let mut interval = tokio::time::interval(Duration::from_millis(100));
    loop {
        interval.tick().await;
        if c.inventory_admin(&root).await.is_ok() {
            break;
        }
        assert!(
            back.elapsed() < Duration::from_secs(10),
            "admin not admitted again"
        );
    }
    println!(
        "checked: account back; admin admitted again after {:?}",
        back.elapsed()
    );
    world.stop().await;
}
