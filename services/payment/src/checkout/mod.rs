//! `CheckoutService`: the order saga across account, inventory and payment.
//!
//! Layout:
//! - [`order`]: the order aggregate (an order, its lines, the other
//!   services' names it holds), the commands, who may see an order;
//! - [`saga`]: the orchestrator. Each order's state is written to the
//!   `orders` table before the step it names; every remote call carries a
//!   request id derived from the order id and the step, so a step replayed
//!   after a crash has no second effect; a lease makes one worker drive an
//!   order at a time, across replicas; the [`saga::Saga::recover_due`]
//!   worker resumes whatever a crash left half-done;
//! - [`shipment`]: what of a completed order has shipped, and the rules of
//!   shipping it; [`cancellation`]: what will not ship, and the refund;
//!   [`returns`]: what comes back; [`refund`]: goodwill refunds;
//! - [`repo`]: the order tables and those of its shipments,
//!   cancellations, returns and refunds;
//! - [`api`]: the tonic `CheckoutService` impl.
//!
//! The saga calls PaymentService through its own gRPC API (with the
//! service's token), like it calls the other services: one client path, one
//! idempotency mechanism, one trace.

pub mod api;
pub mod cancellation;
pub mod order;
pub mod refund;
pub mod repo;
pub mod returns;
pub mod saga;
pub mod shipment;
