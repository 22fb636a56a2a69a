//! The Kubernetes manifests give the payment binary exactly what it reads,
//! on the port it listens on, probing the service it reports.

use backroom_payment::Cli;
use backroom_proto::payment::v1::payment_service_server::PaymentServiceServer;
use clap::CommandFactory as _;
use tonic::server::NamedService as _;

#[test]
fn manifests_match_the_binary() {
    type Server = PaymentServiceServer<backroom_payment::api::PaymentApi>;
    backroom_shared::testing::check_deploy_contract("payment", Cli::command(), Server::NAME);
}
