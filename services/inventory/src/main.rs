//! `backroom-inventory`: serve the inventory service, or apply its
//! migrations — the shared service main (config → telemetry → migrate or
//! serve).

fn main() -> anyhow::Result<()> {
    backroom_shared::service::main::<backroom_inventory::InventoryService>()
}
