// @generated automatically by Diesel CLI.

pub mod payment {
    diesel::table! {
        payment.journals (id) {
            id -> Uuid,
            payment_intent_id -> Uuid,
            kind -> Text,
            refund_id -> Nullable<Uuid>,
            created_at -> Timestamptz,
        }
    }

    diesel::table! {
        payment.ledger_accounts (code) {
            code -> Text,
            display_name -> Text,
            kind -> Text,
        }
    }

    diesel::table! {
        payment.ledger_entries (id) {
            id -> Int8,
            journal_id -> Uuid,
            ledger_account -> Text,
            direction -> Text,
            currency -> Text,
            amount -> Int8,
            created_at -> Timestamptz,
        }
    }

    diesel::table! {
        payment.order_lines (order_id, position) {
            order_id -> Uuid,
            position -> Int4,
            sku -> Text,
            quantity -> Int8,
            display_name -> Text,
            unit_price_minor -> Nullable<Int8>,
            line_total_minor -> Nullable<Int8>,
            shipped -> Int8,
            canceled -> Int8,
            returned -> Int8,
            discount_minor -> Nullable<Int8>,
        }
    }

    diesel::table! {
        payment.cancellation_lines (cancellation_id, position) {
            cancellation_id -> Uuid,
            position -> Int4,
            sku -> Text,
            quantity -> Int8,
        }
    }

    diesel::table! {
        payment.cancellations (id) {
            id -> Uuid,
            order_id -> Uuid,
            request_id -> Uuid,
            fingerprint -> Bytea,
            state -> Text,
            reason -> Text,
            refund_minor -> Int8,
            refunds_shipping -> Bool,
            created_at -> Timestamptz,
            updated_at -> Timestamptz,
            steps_done -> Array<Text>,
            attempted_at -> Nullable<Timestamptz>,
        }
    }

    diesel::table! {
        payment.order_refunds (id) {
            id -> Uuid,
            order_id -> Uuid,
            request_id -> Uuid,
            fingerprint -> Bytea,
            state -> Text,
            reason -> Text,
            amount_minor -> Int8,
            created_at -> Timestamptz,
            updated_at -> Timestamptz,
            steps_done -> Array<Text>,
            attempted_at -> Nullable<Timestamptz>,
        }
    }

    diesel::table! {
        payment.return_lines (return_id, position) {
            return_id -> Uuid,
            position -> Int4,
            sku -> Text,
            quantity -> Int8,
            restocked -> Int8,
            written_off -> Int8,
        }
    }

    diesel::table! {
        payment.returns (id) {
            id -> Uuid,
            order_id -> Uuid,
            request_id -> Uuid,
            fingerprint -> Bytea,
            state -> Text,
            reason -> Text,
            note -> Text,
            refund_minor -> Nullable<Int8>,
            created_at -> Timestamptz,
            updated_at -> Timestamptz,
            received_at -> Nullable<Timestamptz>,
            steps_done -> Array<Text>,
            attempted_at -> Nullable<Timestamptz>,
        }
    }

    diesel::table! {
        payment.shipment_lines (shipment_id, position) {
            shipment_id -> Uuid,
            position -> Int4,
            sku -> Text,
            quantity -> Int8,
        }
    }

    diesel::table! {
        payment.shipments (id) {
            id -> Uuid,
            order_id -> Uuid,
            request_id -> Uuid,
            fingerprint -> Bytea,
            state -> Text,
            carrier -> Text,
            tracking_number -> Text,
            failure_reason -> Nullable<Text>,
            created_at -> Timestamptz,
            updated_at -> Timestamptz,
            attempted_at -> Nullable<Timestamptz>,
        }
    }

    diesel::table! {
        payment.orders (id) {
            id -> Uuid,
            customer_id -> Uuid,
            request_id -> Uuid,
            fingerprint -> Bytea,
            shipping_address -> Text,
            shipping_address_snapshot -> Nullable<Bytea>,
            payment_method -> Text,
            currency_code -> Text,
            subtotal_minor -> Nullable<Int8>,
            shipping_minor -> Nullable<Int8>,
            total_minor -> Nullable<Int8>,
            shipping_zone -> Text,
            state -> Text,
            failure_reason -> Nullable<Text>,
            failure_message -> Nullable<Text>,
            failure_metadata -> Nullable<Text>,
            failed_at_state -> Nullable<Text>,
            payment_intent -> Nullable<Text>,
            reservation -> Nullable<Text>,
            attempts -> Int4,
            lease_owner -> Nullable<Uuid>,
            lease_until -> Nullable<Timestamptz>,
            next_attempt_at -> Timestamptz,
            created_at -> Timestamptz,
            updated_at -> Timestamptz,
            refunded_minor -> Int8,
            refund_claimed_minor -> Int8,
            cancel_request_id -> Nullable<Uuid>,
            cancel_fingerprint -> Nullable<Bytea>,
            cancel_reason -> Nullable<Text>,
            discount_codes -> Array<Text>,
            discount_minor -> Nullable<Int8>,
            tax_minor -> Nullable<Int8>,
            quote_snapshot -> Nullable<Bytea>,
        }
    }

    diesel::table! {
        payment.payment_intents (id) {
            id -> Uuid,
            customer_id -> Uuid,
            currency -> Text,
            amount -> Int8,
            amount_authorized -> Int8,
            amount_capturable -> Int8,
            amount_received -> Int8,
            amount_refunded -> Int8,
            status -> Text,
            capture_method -> Text,
            payment_method_id -> Nullable<Uuid>,
            description -> Text,
            metadata -> Text,
            last_error_code -> Nullable<Text>,
            last_error_decline_code -> Nullable<Text>,
            last_error_message -> Nullable<Text>,
            last_error_payment_method -> Nullable<Uuid>,
            cancellation_reason -> Nullable<Text>,
            authorization_id -> Nullable<Text>,
            authorization_expires_at -> Nullable<Timestamptz>,
            authorization_attempt -> Int4,
            created_at -> Timestamptz,
            updated_at -> Timestamptz,
            order_id -> Nullable<Uuid>,
            tax -> Int8,
            tax_received -> Int8,
            tax_refunded -> Int8,
        }
    }

    diesel::table! {
        payment.payment_methods (id) {
            id -> Uuid,
            customer_id -> Uuid,
            brand -> Text,
            last4 -> Text,
            exp_month -> Int4,
            exp_year -> Int4,
            fingerprint -> Text,
            holder_name -> Text,
            processor_token -> Text,
            created_at -> Timestamptz,
            detached_at -> Nullable<Timestamptz>,
        }
    }

    diesel::table! {
        payment.refunds (id) {
            id -> Uuid,
            payment_intent_id -> Uuid,
            currency -> Text,
            amount -> Int8,
            status -> Text,
            reason -> Text,
            processor_refund_id -> Text,
            created_at -> Timestamptz,
            tax -> Int8,
        }
    }

    diesel::joinable!(journals -> payment_intents (payment_intent_id));
    diesel::joinable!(journals -> refunds (refund_id));
    diesel::joinable!(ledger_entries -> journals (journal_id));
    diesel::joinable!(ledger_entries -> ledger_accounts (ledger_account));
    diesel::joinable!(order_lines -> orders (order_id));
    diesel::joinable!(shipment_lines -> shipments (shipment_id));
    diesel::joinable!(shipments -> orders (order_id));
    diesel::joinable!(cancellation_lines -> cancellations (cancellation_id));
    diesel::joinable!(cancellations -> orders (order_id));
    diesel::joinable!(order_refunds -> orders (order_id));
    diesel::joinable!(return_lines -> returns (return_id));
    diesel::joinable!(returns -> orders (order_id));
    diesel::joinable!(payment_intents -> orders (order_id));
    diesel::joinable!(payment_intents -> payment_methods (payment_method_id));
    diesel::joinable!(refunds -> payment_intents (payment_intent_id));

    diesel::allow_tables_to_appear_in_same_query!(
        cancellation_lines,
        cancellations,
        journals,
        ledger_accounts,
        ledger_entries,
        order_lines,
        order_refunds,
        orders,
        payment_intents,
        payment_methods,
        refunds,
        return_lines,
        returns,
        shipment_lines,
        shipments,
    );
}
