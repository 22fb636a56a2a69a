//! A service's two database roles and its schema (see [`crate::db`]'s
//! "Roles"), and running its migrations as the schema's owner.
//!
//! Layout: [`provision_service`] / [`provision`] create the roles and the
//! schema (idempotently, and taking over the former one-role layout);
//! [`run_migrations`] / [`migrate`] apply the embedded migrations as the
//! owner, refusing any other role.

use diesel::connection::SimpleConnection;
use diesel::{PgConnection, RunQueryDsl};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness};

use super::{DbError, blocking, check_identifier, connect};
use crate::config::{DbConfig, Secret};

/// The role a service serves as: `backroom_<service>`. It reads and writes
/// rows of its schema and owns nothing.
pub fn runtime_role_name(service: &str) -> String {
    format!("backroom_{service}")
}

/// The role that owns schema `<service>` and runs its migrations:
/// `backroom_<service>_migrator`.
pub fn migrator_role_name(service: &str) -> String {
    format!("backroom_{service}_migrator")
}

/// The passwords of a service's two roles. `None` sets no password, for a
/// server that trusts the connection (the throwaway cluster).
#[derive(Debug, Clone, Default)]
pub struct RolePasswords {
    /// Password of [`runtime_role_name`].
    pub runtime: Option<Secret>,
    /// Password of [`migrator_role_name`].
    pub migrator: Option<Secret>,
}

impl RolePasswords {
    /// The config of `service` on the database of `admin_url` with these
    /// passwords: the runtime role's URL, and the migrator's as the
    /// migration URL (roles and schema as [`provision`] leaves them).
    pub fn urls(&self, admin_url: &str, service: &str) -> anyhow::Result<DbConfig> {
        let url = |role: String, password: &Option<Secret>| {
            url_with_credentials(admin_url, &role, password.as_ref().map(Secret::expose))
        };
        Ok(
            DbConfig::for_url(url(runtime_role_name(service), &self.runtime)?)
                .with_migration_url(url(migrator_role_name(service), &self.migrator)?),
        )
    }

    /// A fresh random password for each role (UUIDv4: 122 bits from the
    /// OS's CSPRNG).
    pub fn random() -> Self {
        let random = || Some(Secret::new(uuid::Uuid::new_v4().simple().to_string()));
        Self {
            runtime: random(),
            migrator: random(),
        }
    }
}

/// Creates or updates (idempotently) the two roles of `service` and its
/// schema in the database `admin` (a superuser) is connected to:
/// - role [`migrator_role_name`] owns schema `<service>`;
/// - role [`runtime_role_name`] gets USAGE on it, and the migrator's default
///   privileges give it SELECT/INSERT/UPDATE/DELETE on every table,
///   USAGE/SELECT on every sequence and EXECUTE on every function the
///   migrations create there (no TRUNCATE, REFERENCES or TRIGGER, and
///   nobody else gets EXECUTE);
/// - both may connect, start with `search_path` = `<service>`, and have no
///   privilege on any other schema (PUBLIC has none on `<service>`, and none
///   to create in `public`).
///
/// A schema left by the former layout, owned by the runtime role, is handed
/// to the migrator with everything in it, and the runtime role gets the row
/// privileges it served with back; migrations applied afterwards narrow them
/// where the service's schema says so.
///
/// Privileges granted on existing tables are left alone, so running this
/// again never undoes what a migration revoked. Provisioning the same
/// service concurrently is safe for the roles (a racing `CREATE ROLE` is
/// caught) but may fail with "tuple concurrently updated": serialise it.
pub fn provision_service(
    admin: &mut PgConnection,
    service: &str,
    passwords: &RolePasswords,
) -> Result<(), DbError> {
    check_identifier(service)?;
    let runtime = runtime_role_name(service);
    let migrator = migrator_role_name(service);
    let ensure_role = |role: &str, password: &Option<Secret>| {
        let password = password
            .as_ref()
            .map(|p| format!("PASSWORD {}", quote_literal(p.expose())))
            .unwrap_or_default();
        format!(
            r#"
            DO $$ BEGIN
                CREATE ROLE {role} LOGIN;
            EXCEPTION WHEN duplicate_object OR unique_violation THEN
                NULL;
            END $$;
            ALTER ROLE {role} LOGIN {password};
            "#
        )
    };
    admin.batch_execute(&format!(
        r#"
        {ensure_runtime}
        {ensure_migrator}
        DO $$ BEGIN
            IF EXISTS (SELECT FROM pg_namespace
                       WHERE nspname = '{service}' AND nspowner = '{runtime}'::regrole) THEN
                REASSIGN OWNED BY {runtime} TO {migrator};
                GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {service} TO {runtime};
                GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {service} TO {runtime};
            END IF;
        END $$;
        CREATE SCHEMA IF NOT EXISTS {service} AUTHORIZATION {migrator};
        ALTER SCHEMA {service} OWNER TO {migrator};
        REVOKE ALL ON SCHEMA {service} FROM PUBLIC, {runtime};
        GRANT USAGE ON SCHEMA {service} TO {runtime};
        ALTER DEFAULT PRIVILEGES FOR ROLE {migrator} IN SCHEMA {service}
            GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {runtime};
        ALTER DEFAULT PRIVILEGES FOR ROLE {migrator} IN SCHEMA {service}
            GRANT USAGE, SELECT ON SEQUENCES TO {runtime};
        -- Functions are executable by PUBLIC unless said otherwise, and a
        -- per-schema default can only add: revoke for all of the
        -- migrator's functions, grant in its schema. (Triggers fire
        -- without EXECUTE; this covers functions a service calls.)
        ALTER DEFAULT PRIVILEGES FOR ROLE {migrator} REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC;
        ALTER DEFAULT PRIVILEGES FOR ROLE {migrator} IN SCHEMA {service}
            GRANT EXECUTE ON FUNCTIONS TO {runtime};
        -- PostgreSQL before 15 lets every role create objects in `public`.
        DO $$ BEGIN
            IF EXISTS (SELECT FROM pg_namespace WHERE nspname = 'public') THEN
                REVOKE CREATE ON SCHEMA public FROM PUBLIC;
            END IF;
        END $$;
        "#,
        ensure_runtime = ensure_role(&runtime, &passwords.runtime),
        ensure_migrator = ensure_role(&migrator, &passwords.migrator),
    ))?;
    let database: String = diesel::select(diesel::dsl::sql::<diesel::sql_types::Text>(
        "current_database()",
    ))
    .get_result(admin)
    .map_err(DbError::from)?;
    let mut statement = String::new();
    for role in [&runtime, &migrator] {
        statement.push_str(&format!(
            "GRANT CONNECT ON DATABASE \"{database}\" TO {role}; \
             ALTER ROLE {role} IN DATABASE \"{database}\" SET search_path = {service};"
        ));
    }
    admin.batch_execute(&statement)?;
    Ok(())
}

/// Provisions `service` ([`provision_service`]) in the database of
/// `admin_url` (a superuser URL) and returns the config the service runs
/// with on the same server and database: `database_url` as its runtime
/// role, `migration_database_url` as its migrator. Blocking.
pub fn provision(
    admin_url: &str,
    service: &str,
    passwords: &RolePasswords,
) -> anyhow::Result<DbConfig> {
    let mut admin = connect(admin_url)?;
    provision_service(&mut admin, service, passwords)?;
    passwords.urls(admin_url, service)
}

/// Who a migration run is connected as, and who owns the schema.
#[derive(diesel::QueryableByName)]
struct MigrationRunner {
    #[diesel(sql_type = diesel::sql_types::Text)]
    connected: String,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    owner: Option<String>,
}

/// Refuses to migrate `schema` as anyone but its owner (objects created by
/// a superuser would get none of the runtime role's default privileges),
/// and a schema still owned by its runtime role (the former layout).
fn check_migration_runner(conn: &mut PgConnection, schema: &str) -> Result<(), DbError> {
    let runner: MigrationRunner = diesel::sql_query(
        "SELECT current_user::text AS connected, \
         (SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = $1) AS owner",
    )
    .bind::<diesel::sql_types::Text, _>(schema)
    .get_result(conn)?;
    let runtime = runtime_role_name(schema);
    let migrator = migrator_role_name(schema);
    let refuse = |why: String| Err(DbError::Other(anyhow::anyhow!(why)));
    match runner.owner {
        None => refuse(format!(
            "schema {schema} does not exist: provision it (owner {migrator}; deploy/README.md, \
             \"Database roles\") before migrating"
        )),
        Some(owner) if owner == runtime => refuse(format!(
            "schema {schema} is owned by its runtime role {runtime}: hand it to {migrator} \
             (deploy/README.md, \"Upgrading from one role per service\") before migrating"
        )),
        Some(owner) if owner != runner.connected => refuse(format!(
            "migrations of schema {schema} run as its owner {owner}, not as {connected}: \
             BACKROOM_MIGRATION_DATABASE_URL is that role's URL",
            connected = runner.connected
        )),
        Some(_) => Ok(()),
    }
}

/// Runs the shared migrations ([`crate::idempotency::MIGRATIONS`]) and then
/// the service's `migrations` inside schema `schema` (the diesel bookkeeping
/// table lives there too), holding an advisory lock so concurrent runners
/// wait for each other instead of racing. Returns the versions applied.
///
/// `conn` must be connected as the schema's owner (the migrator role); the
/// runtime role gets no privilege on the bookkeeping table, so it cannot
/// make migrations look applied or pending.
pub fn run_migrations(
    conn: &mut PgConnection,
    schema: &str,
    migrations: EmbeddedMigrations,
) -> Result<Vec<String>, DbError> {
    check_identifier(schema)?;
    check_migration_runner(conn, schema)?;
    conn.batch_execute(&format!(
        "SET search_path TO {schema}; SELECT pg_advisory_lock(hashtext('backroom-migrate-{schema}'));"
    ))?;
    let result = apply_migrations(conn, schema, migrations);
    conn.batch_execute(&format!(
        "SELECT pg_advisory_unlock(hashtext('backroom-migrate-{schema}'))"
    ))?;
    result
}

/// Two migrations with one version would be taken for one: diesel records
/// versions, so the second would silently never run. Refuse instead.
fn check_unique_versions(sets: &[&EmbeddedMigrations]) -> Result<(), DbError> {
    use diesel::migration::MigrationSource;
    let mut seen = std::collections::BTreeMap::<String, String>::new();
    for set in sets {
        let migrations = MigrationSource::<diesel::pg::Pg>::migrations(*set)
            .map_err(|err| DbError::Other(anyhow::anyhow!("cannot list migrations: {err}")))?;
        for migration in migrations {
            let name = migration.name().to_string();
            let version = migration.name().version().to_string();
            if let Some(other) = seen.insert(version.clone(), name.clone()) {
                return Err(DbError::Other(anyhow::anyhow!(
                    "migrations {other} and {name} share version {version}: rename one"
                )));
            }
        }
    }
    Ok(())
}

fn apply_migrations(
    conn: &mut PgConnection,
    schema: &str,
    migrations: EmbeddedMigrations,
) -> Result<Vec<String>, DbError> {
    check_unique_versions(&[&crate::idempotency::MIGRATIONS, &migrations])?;
    let mut applied = Vec::new();
    for set in [crate::idempotency::MIGRATIONS, migrations] {
        let versions = conn
            .run_pending_migrations(set)
            .map_err(|err| DbError::Other(anyhow::anyhow!("migration failed: {err}")))?;
        applied.extend(versions.iter().map(ToString::to_string));
    }
    // Created by the migrator in its schema, so the default privileges gave
    // the runtime role DML on it; take that back on every run.
    conn.batch_execute(&format!(
        "REVOKE ALL ON TABLE __diesel_schema_migrations FROM {}",
        runtime_role_name(schema)
    ))?;
    Ok(applied)
}

/// Applies `migrations` (after the shared ones) to `schema`, connecting with
/// `config`'s migration URL (the schema owner's): what every service's
/// `migrate` subcommand and `RUN_MIGRATIONS` do. Without that URL it fails
/// saying what to set. Returns the versions applied.
pub async fn migrate(
    config: &DbConfig,
    schema: &'static str,
    migrations: EmbeddedMigrations,
) -> Result<Vec<String>, DbError> {
    let Some(url) = config.migration_database_url.clone() else {
        return Err(DbError::Other(anyhow::anyhow!(
            "applying migrations (`migrate`, or RUN_MIGRATIONS=true at start-up) needs \
             BACKROOM_MIGRATION_DATABASE_URL (--migration-database-url), the URL of {migrator}, \
             the owner of schema {schema}; DATABASE_URL's role {runtime} may only read and write \
             rows. To start without migrating, set RUN_MIGRATIONS=false",
            migrator = migrator_role_name(schema),
            runtime = runtime_role_name(schema),
        )));
    };
    let applied = blocking(move || {
        let mut conn = connect(url.expose())?;
        run_migrations(&mut conn, schema, migrations)
    })
    .await?;
    tracing::info!(schema, ?applied, "migrations applied");
    Ok(applied)
}

/// `admin_url` with its user and password replaced: the URL of one of a
/// service's roles on the same server and database.
fn url_with_credentials(
    admin_url: &str,
    user: &str,
    password: Option<&str>,
) -> anyhow::Result<String> {
    let mut url = url::Url::parse(admin_url)?;
    url.set_username(user)
        .map_err(|()| anyhow::anyhow!("cannot set user on {url}"))?;
    url.set_password(password)
        .map_err(|()| anyhow::anyhow!("cannot set password on {url}"))?;
    Ok(url.into())
}

fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_url_swaps_credentials_and_keeps_the_rest() {
        let url = url_with_credentials(
            "postgres://postgres@127.0.0.1:5433/backroom?sslmode=disable",
            "backroom_account",
            Some("p@ss/word"),
        )
        .unwrap();
        assert_eq!(
            url,
            "postgres://backroom_account:p%40ss%2Fword@127.0.0.1:5433/backroom?sslmode=disable"
        );
    }

    #[test]
    fn quoting_doubles_single_quotes() {
        assert_eq!(quote_literal("it's"), "'it''s'");
    }
}
