// @generated automatically by Diesel CLI.

pub mod inventory {
    diesel::table! {
        inventory.discount_codes (code) {
            code -> Text,
            percent_bp -> Nullable<Int4>,
            amount_minor -> Nullable<Int8>,
            currency_code -> Nullable<Text>,
            minimum_subtotal_minor -> Nullable<Int8>,
            start_at -> Timestamptz,
            end_at -> Nullable<Timestamptz>,
            usage_limit -> Nullable<Int8>,
            per_customer_limit -> Nullable<Int8>,
            stackable -> Bool,
            active -> Bool,
            uses -> Int8,
            created_at -> Timestamptz,
            updated_at -> Timestamptz,
        }
    }

    diesel::table! {
        inventory.discount_redemptions (order_id, code) {
            order_id -> Uuid,
            code -> Text,
            customer -> Uuid,
            returned -> Bool,
            created_at -> Timestamptz,
        }
    }

    diesel::table! {
        inventory.products (sku) {
            sku -> Text,
            display_name -> Text,
            description -> Text,
            currency_code -> Text,
            price_minor -> Int8,
            weight_grams -> Int8,
            active -> Bool,
            version -> Int8,
            created_at -> Timestamptz,
            updated_at -> Timestamptz,
            tax_category -> Text,
            other_currencies -> Array<Text>,
            other_prices -> Array<Int8>,
        }
    }

    diesel::table! {
        inventory.reservation_lines (order_id, sku) {
            order_id -> Uuid,
            position -> Int4,
            sku -> Text,
            location -> Text,
            quantity -> Int8,
            shipped -> Int8,
            uncommitted -> Int8,
            restocked -> Int8,
            written_off -> Int8,
        }
    }

    diesel::table! {
        inventory.reservations (order_id) {
            order_id -> Uuid,
            state -> Text,
            expire_at -> Timestamptz,
            created_at -> Timestamptz,
            updated_at -> Timestamptz,
        }
    }

    diesel::table! {
        inventory.shipping_rates (zone, currency_code, max_weight_grams) {
            zone -> Text,
            currency_code -> Text,
            max_weight_grams -> Int8,
            price_minor -> Int8,
        }
    }

    diesel::table! {
        inventory.shipping_zone_countries (country_code) {
            country_code -> Text,
            zone -> Text,
        }
    }

    diesel::table! {
        inventory.shipping_zones (zone) {
            zone -> Text,
            display_name -> Text,
        }
    }

    diesel::table! {
        inventory.tax_rates (id) {
            id -> Uuid,
            country_code -> Text,
            category -> Text,
            rate_bp -> Int4,
            start_at -> Timestamptz,
            created_at -> Timestamptz,
        }
    }

    diesel::table! {
        inventory.stock_levels (sku, location) {
            sku -> Text,
            location -> Text,
            available -> Int8,
            reserved -> Int8,
            committed -> Int8,
            on_hand -> Int8,
            version -> Int8,
            updated_at -> Timestamptz,
        }
    }

    diesel::table! {
        inventory.stock_movements (sku, location, sequence) {
            sku -> Text,
            location -> Text,
            sequence -> Int8,
            kind -> Text,
            delta_on_hand -> Int8,
            delta_available -> Int8,
            delta_reserved -> Int8,
            delta_committed -> Int8,
            reason -> Int2,
            note -> Text,
            order_id -> Nullable<Uuid>,
            created_at -> Timestamptz,
        }
    }

    diesel::joinable!(discount_redemptions -> discount_codes (code));
    diesel::joinable!(discount_redemptions -> reservations (order_id));
    diesel::joinable!(reservation_lines -> reservations (order_id));
    diesel::joinable!(shipping_rates -> shipping_zones (zone));
    diesel::joinable!(shipping_zone_countries -> shipping_zones (zone));
    diesel::joinable!(stock_levels -> products (sku));

    diesel::allow_tables_to_appear_in_same_query!(
        discount_codes,
        discount_redemptions,
        products,
        reservation_lines,
        reservations,
        shipping_rates,
        shipping_zone_countries,
        shipping_zones,
        stock_levels,
        stock_movements,
        tax_rates,
    );
}
