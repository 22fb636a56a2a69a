//! The card processor is configuration without a default: the payment
//! process refuses to serve until `BACKROOM_PAYMENT_PROCESSOR` names one, says
//! why, and knows no processor but the ones built in (today the simulator).

use std::process::Command;

use backroom_payment::{Cli, Deps, PROCESSOR_REQUIRED, PaymentConfig, processor::ProcessorChoice};
use backroom_shared::{
    clock,
    config::{AuthConfig, DbConfig},
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
