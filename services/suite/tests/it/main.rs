//! The tests of the three services together — account, inventory and
//! payment with checkout, in process ([`harness::Suite`]) — and of the
//! `backroom` launcher and its invariant checker: one binary, a module per
//! area.

mod attack_surface;
mod audit;
mod browser;
mod cancellations;
mod checkout;
mod checkout_trace;
mod events;
mod harness;
mod hostile_input;
mod order_payments;
mod pricing;
mod protocols;
mod returns;
mod schemathesis;
mod shipments;
mod up;
