//! The Kubernetes manifests give the inventory binary exactly what it reads,
//! on the port it listens on, probing the service it reports.

use backroom_inventory::Cli;
use backroom_proto::inventory::v1::inventory_service_server::InventoryServiceServer;
use clap::CommandFactory as _;
use tonic::server::NamedService as _;

#[test]
fn manifests_match_the_binary() {
    type Server = InventoryServiceServer<backroom_inventory::api::InventoryApi>;
    backroom_shared::testing::check_deploy_contract("inventory", Cli::command(), Server::NAME);
}
