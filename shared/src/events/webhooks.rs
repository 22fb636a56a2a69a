//! Webhook deliveries (being written).

use super::Events;

/// Delivers to the registered endpoints while this process leads.
pub async fn run(events: Events) {
    let _ = events;
}
