//! The Kubernetes manifests give the payment binary exactly what it reads,
//! on the port it listens on, probing the service it reports; and they name
//! the card processor, which the binary requires without a default.

use backroom_payment::{Cli, processor::ProcessorChoice};
use backroom_proto::payment::v1::payment_service_server::PaymentServiceServer;
use clap::{CommandFactory as _, ValueEnum as _};
use tonic::server::NamedService as _;

#[test]
fn manifests_match_the_binary() {
    type Server = PaymentServiceServer<backroom_payment::api::PaymentApi>;
    backroom_shared::testing::check_deploy_contract("payment", Cli::command(), Server::NAME);
}

#[test]
fn the_base_config_names_a_processor_the_binary_knows() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/k8s/base/payment/config.env"
    );
    let config = std::fs::read_to_string(path).expect("read config.env");
    let chosen: Vec<&str> = config
        .lines()
        .filter_map(|line| line.trim().strip_prefix("BACKROOM_PAYMENT_PROCESSOR="))
        .collect();
    assert_eq!(chosen.len(), 1, "one explicit choice in {path}");
    assert!(
        ProcessorChoice::from_str(chosen[0], false).is_ok(),
        "{} is not a processor backroom-payment knows",
        chosen[0]
    );
}
