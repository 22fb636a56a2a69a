//! The Kubernetes manifests give the account binary exactly what it reads,
//! on the port it listens on, probing the service it reports.

use backroom_account::Cli;
use backroom_proto::account::v1::account_service_server::AccountServiceServer;
use clap::CommandFactory as _;
use tonic::server::NamedService as _;

#[test]
fn manifests_match_the_binary() {
    type Server = AccountServiceServer<backroom_account::api::AccountApi>;
    backroom_shared::testing::check_deploy_contract("account", Cli::command(), Server::NAME);
}
