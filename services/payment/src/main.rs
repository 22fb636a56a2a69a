//! `backroom-payment`: serve the payment service (and checkout), or apply
//! its migrations. Thin on purpose: the shared service main does it all.

fn main() -> anyhow::Result<()> {
    backroom_shared::service::main::<backroom_payment::PaymentService>()
}
