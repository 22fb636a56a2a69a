//! The card processor is configuration without a default: the payment
//! process refuses to serve until `BACKROOM_PAYMENT_PROCESSOR` names one, says
//! why, and knows no processor but the ones built in (today the simulator).
//! Checkout is always served: a setting it cannot serve with stops the
//! process at start-up, naming the variable.

use std::process::Command;

use backroom_payment::{
    CheckoutConfig, Cli, Deps, PROCESSOR_REQUIRED, PaymentConfig, processor::ProcessorChoice,
};
use backroom_shared::{
    clock,
    config::{AuthConfig, DbConfig, Secret, ServerConfig},
    db::Pool,
};
use clap::Parser as _;

const KEY: &str = "config-test-fingerprint-key-0123456789";

fn parse(extra: &[&str]) -> Result<Cli, clap::Error> {
    let mut argv = vec![
        "backroom-payment".to_owned(),
        "--database-url=postgres://127.0.0.1:1/none".to_owned(),
        format!("--card-fingerprint-key={KEY}"),
    ];
    argv.extend(extra.iter().map(|s| (*s).to_owned()));
    Cli::try_parse_from(argv)
}

#[test]
fn the_processor_is_named_explicitly_and_unknown_ones_are_refused() {
    let cli = parse(&["--payment-processor=simulator"]).unwrap();
    assert_eq!(cli.payment.processor().unwrap(), ProcessorChoice::Simulator);
    let err = parse(&["--payment-processor=stripe"])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("simulator"),
        "the error lists the choices: {err}"
    );
    // No stubs of processors that do not exist.
    assert_eq!(
        <ProcessorChoice as clap::ValueEnum>::value_variants(),
        [ProcessorChoice::Simulator]
    );
}

#[tokio::test]
async fn without_a_processor_the_config_is_refused_naming_the_variable() {
    let mut config = PaymentConfig::new(ProcessorChoice::Simulator, KEY);
    config.payment_processor = None;
    let err = config.processor().unwrap_err().to_string();
    assert_eq!(err, PROCESSOR_REQUIRED);
    assert!(err.contains("BACKROOM_PAYMENT_PROCESSOR"), "{err}");
    let pool = Pool::new(
        &DbConfig::for_url("postgres://127.0.0.1:1/none"),
        backroom_payment::SERVICE,
    );
    let err = Deps::new(&AuthConfig::default(), &config, pool, clock::system())
        .unwrap_err()
        .to_string();
    assert!(err.contains("BACKROOM_PAYMENT_PROCESSOR"), "{err}");
}

#[test]
fn migrate_needs_the_database_url_only() {
    // The migrate initContainer and Job get the ConfigMap and DATABASE_URL.
    let cli = Cli::try_parse_from([
        "backroom-payment",
        "--database-url=postgres://127.0.0.1:1/none",
        "migrate",
    ])
    .unwrap();
    assert_eq!(cli.command, Some(backroom_payment::Command::Migrate));
    let err = cli.payment.fingerprint_key().unwrap_err().to_string();
    assert!(err.contains("BACKROOM_CARD_FINGERPRINT_KEY"), "{err}");
}

#[test]
fn the_binary_refuses_to_serve_without_a_processor_and_says_why() {
    // Everything else it needs is given (a database it never reaches: the
    // choice is checked before anything else).
    let output = Command::new(env!("CARGO_BIN_EXE_backroom-payment"))
        .arg("serve")
        .env_clear()
        .env(
            "DATABASE_URL",
            "postgres://backroom_payment@127.0.0.1:1/none",
        )
        .env("BACKROOM_CARD_FINGERPRINT_KEY", KEY)
        .env("BACKROOM_LOG_FORMAT", "json")
        .output()
        .expect("run backroom-payment");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!output.status.success(), "it served: {said}");
    assert!(said.contains("BACKROOM_PAYMENT_PROCESSOR"), "{said}");
    println!("backroom-payment without BACKROOM_PAYMENT_PROCESSOR: {said}");
}

#[test]
fn checkout_settings_that_cannot_serve_are_refused_naming_the_variable() {
    let mut payment = PaymentConfig::new(ProcessorChoice::Simulator, KEY);
    payment.service_client_id = Some("payment".into());
    payment.service_client_secret = Some(Secret::new("payment-secret-0123456789abcdefghij"));
    let server = ServerConfig::default();
    let good = CheckoutConfig::new("http://inventory:50052");
    good.validate(&payment, &server).unwrap();
    assert_eq!(
        good.concurrency_limit(&server).unwrap(),
        server.concurrency_limit / 4,
        "a quarter of the server's limit by default"
    );
    let refused = |checkout: &CheckoutConfig, payment: &PaymentConfig, server: &ServerConfig| {
        checkout.validate(payment, server).unwrap_err().to_string()
    };
    let err = refused(&CheckoutConfig::default(), &payment, &server);
    assert!(err.contains("BACKROOM_INVENTORY_ENDPOINT"), "{err}");
    let anonymous = PaymentConfig {
        service_client_secret: None,
        ..payment.clone()
    };
    let err = refused(&good, &anonymous, &server);
    assert!(err.contains("BACKROOM_SERVICE_CLIENT_SECRET"), "{err}");
    let no_lease = CheckoutConfig {
        checkout_lease_secs: 0,
        ..good.clone()
    };
    assert!(refused(&no_lease, &payment, &server).contains("BACKROOM_CHECKOUT_LEASE_SECS"));
    let no_rounds = CheckoutConfig {
        checkout_capture_max_rounds: 0,
        ..good.clone()
    };
    assert!(
        refused(&no_rounds, &payment, &server).contains("BACKROOM_CHECKOUT_CAPTURE_MAX_ROUNDS")
    );
    // Orders and their sagas' calls must leave PaymentService room.
    let greedy = CheckoutConfig {
        checkout_concurrency_limit: Some(128),
        ..good.clone()
    };
    let err = refused(&greedy, &payment, &server);
    assert!(err.contains("BACKROOM_CHECKOUT_CONCURRENCY_LIMIT"), "{err}");
    let fitting = CheckoutConfig {
        checkout_concurrency_limit: Some(127),
        ..good
    };
    fitting.validate(&payment, &server).unwrap();
}

#[test]
fn the_binary_refuses_to_serve_without_checkout_and_says_why() {
    // Everything PaymentService needs is given; checkout's inventory is not
    // (checked before migrations, so the database is never reached).
    let output = Command::new(env!("CARGO_BIN_EXE_backroom-payment"))
        .arg("serve")
        .env_clear()
        .env(
            "DATABASE_URL",
            "postgres://backroom_payment@127.0.0.1:1/none",
        )
        .env("BACKROOM_CARD_FINGERPRINT_KEY", KEY)
        .env("BACKROOM_PAYMENT_PROCESSOR", "simulator")
        .env("BACKROOM_SERVICE_CLIENT_ID", "payment")
        .env(
            "BACKROOM_SERVICE_CLIENT_SECRET",
            "payment-secret-0123456789abcdefghij",
        )
        .env("BACKROOM_LOG_FORMAT", "json")
        .output()
        .expect("run backroom-payment");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!output.status.success(), "it served: {said}");
    assert!(said.contains("BACKROOM_INVENTORY_ENDPOINT"), "{said}");
}
