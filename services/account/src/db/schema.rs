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
            version -> Int8,
            created_at -> Timestamptz,
            updated_at -> Timestamptz,
            security_version -> Int8,
            security_changed_at -> Nullable<Timestamptz>,
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
        account.login_throttles (email_hash, client) {
            email_hash -> Bytea,
            client -> Text,
            attempts -> Int4,
            window_start -> Nullable<Timestamptz>,
            locked_until -> Nullable<Timestamptz>,
            lock_count -> Int4,
            updated_at -> Timestamptz,
            last_success_at -> Nullable<Timestamptz>,
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
            session_expires_at -> Timestamptz,
        }
    }

    diesel::joinable!(addresses -> accounts (account_id));
    diesel::joinable!(refresh_tokens -> accounts (account_id));

    diesel::allow_tables_to_appear_in_same_query!(
        accounts,
        addresses,
        login_throttles,
        refresh_tokens,
    );
}
