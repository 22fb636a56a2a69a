//! `backroom-account`: serve the account service, or apply its migrations.
//! Thin on purpose: the shared service main does config → telemetry →
//! migrate or serve; [`backroom_account::AccountService`] builds the server.

fn main() -> anyhow::Result<()> {
    backroom_shared::service::main::<backroom_account::AccountService>()
}
