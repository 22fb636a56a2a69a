// @generated automatically by Diesel CLI.

pub mod account {
    diesel::table! {
        account.accounts (id) {
            id -> Uuid,
            email -> Text,
            display_name -> Text,
            password_hash -> Text,
            roles -> Array<Nullable<Text>>,
            disabled -> Bool,
            disable_reason -> Text,
            failed_logins -> Int4,
            first_failed_at -> Nullable<Timestamptz>,
            locked_until -> Nullable<Timestamptz>,
            lock_count -> Int4,
            version -> Int8,
            created_at -> Timestamptz,
            updated_at -> Timestamptz,
        }
    }

    diesel::table! {
        account.addresses (id) {
            id -> Uuid,
            account_id -> Uuid,
            recipient -> Text,
            line1 -> Text,
            line2 -> Text,
            city -> Text,
            region -> Text,
            postal_code -> Text,
            country_code -> Text,
            created_at -> Timestamptz,
        }
    }

    diesel::table! {
        account.refresh_tokens (token_hash) {
            token_hash -> Bytea,
            family_id -> Uuid,
            account_id -> Uuid,
            created_at -> Timestamptz,
            expires_at -> Timestamptz,
            rotated_at -> Nullable<Timestamptz>,
            revoked_at -> Nullable<Timestamptz>,
        }
    }

    diesel::joinable!(addresses -> accounts (account_id));
    diesel::joinable!(refresh_tokens -> accounts (account_id));

    diesel::allow_tables_to_appear_in_same_query!(accounts, addresses, refresh_tokens,);
}
