//! Databases for tests: the server tests use ([`admin_url`]), a fresh
//! database per test ([`TestDb`]; cloned from a per-process template when
//! the services are known up front), and checks of what a role may do.

use std::sync::{Mutex, OnceLock};

use diesel::connection::SimpleConnection as _;
use diesel_migrations::EmbeddedMigrations;

use crate::{config::DbConfig, db, local_postgres::PostgresCluster};

/// The admin (superuser) URL of the server tests use: the one named by
/// `BACKROOM_TEST_DATABASE_URL`, or a cluster this process starts on first
/// use. Statics are never dropped, so the reaper stops that cluster when the
/// test process exits.
pub fn admin_url(database: &str) -> String {
    static CLUSTER: OnceLock<Result<Mutex<PostgresCluster>, String>> = OnceLock::new();
    if let Ok(url) = std::env::var("BACKROOM_TEST_DATABASE_URL") {
        let mut url = url::Url::parse(&url).expect("BACKROOM_TEST_DATABASE_URL is not a URL");
        url.set_path(database);
        return url.into();
    }
    let cluster = CLUSTER.get_or_init(|| {
        PostgresCluster::start()
            .map(Mutex::new)
            .map_err(|err| format!("{err:#}"))
    });
    match cluster {
        // The lock guards nothing but the read of the port.
        Ok(cluster) => cluster
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .url(database),
        Err(err) => panic!("cannot start the test Postgres cluster: {err}"),
    }
}

/// A fresh, empty database on the test server, named `t_<uuid>`.
#[derive(Debug, Clone)]
pub struct TestDb {
    /// Database name.
    pub name: String,
}

impl TestDb {
    /// Creates the database (on the blocking pool).
    pub async fn create() -> Self {
        tokio::task::spawn_blocking(|| {
            let name = format!("t_{}", uuid::Uuid::new_v4().simple());
            let mut admin = db::connect(&admin_url("postgres")).expect("connect to test Postgres");
            admin
                .batch_execute(&format!("CREATE DATABASE {name}"))
                .expect("create test database");
            Self { name }
        })
        .await
        .expect("create test database task")
    }

    /// Superuser URL of this database.
    pub fn admin_url(&self) -> String {
        admin_url(&self.name)
    }

    /// A fresh database holding the schemas of `services`, provisioned and
    /// migrated: cloned (`CREATE DATABASE … TEMPLATE`, milliseconds) from a
    /// template database this process builds once per list of services —
    /// provisioning and migrating is the slow part of a test's setup, and
    /// it used to run per test behind a global lock. Then
    /// [`Self::service_config`] only hands out the configs.
    pub async fn with_services(
        services: impl IntoIterator<Item = (&'static str, EmbeddedMigrations)>,
    ) -> Self {
        let services: Vec<(&'static str, EmbeddedMigrations)> = services.into_iter().collect();
        static TEMPLATES: tokio::sync::Mutex<Vec<(String, String)>> =
            tokio::sync::Mutex::const_new(Vec::new());
        let key = services
            .iter()
            .map(|(service, _)| *service)
            .collect::<Vec<_>>()
            .join("+");
        let template = {
            let mut templates = TEMPLATES.lock().await;
            match templates.iter().find(|(k, _)| *k == key) {
                Some((_, template)) => template.clone(),
                None => {
                    let template = Self::create().await;
                    for (service, migrations) in services {
                        template.provision(service, migrations).await;
                    }
                    templates.push((key, template.name.clone()));
                    template.name
                }
            }
        };
        tokio::task::spawn_blocking(move || {
            let name = format!("t_{}", uuid::Uuid::new_v4().simple());
            let mut admin = db::connect(&admin_url("postgres")).expect("connect to test Postgres");
            admin
                .batch_execute(&format!("CREATE DATABASE {name} TEMPLATE {template}"))
                .expect("clone the template database");
            Self { name }
        })
        .await
        .expect("clone task")
    }

    /// Provisions `service`'s two roles and its schema in this database
    /// ([`db::provision`]) and runs its migrations as the migrator — unless
    /// the database was cloned with it ([`Self::with_services`]) — and returns
    /// the config the service runs with (a small pool): `database_url` as
    /// its runtime role, `migration_database_url` as its migrator.
    pub async fn service_config(
        &self,
        service: &'static str,
        migrations: EmbeddedMigrations,
    ) -> DbConfig {
        let present = {
            let (admin, schema) = (self.admin_url(), service);
            tokio::task::spawn_blocking(move || schema_exists(&admin, schema))
                .await
                .expect("schema check task")
        };
        let mut config = if present {
            db::RolePasswords::default()
                .urls(&self.admin_url(), service)
                .expect("the service's URLs")
        } else {
            self.provision(service, migrations).await
        };
        config.pool_size = 4;
        config.pool_min_idle = 1;
        config
    }

    async fn provision(&self, service: &'static str, migrations: EmbeddedMigrations) -> DbConfig {
        // Provisioning ALTERs the cluster-wide roles: run concurrently from
        // parallel tests it fails with "tuple concurrently updated".
        static PROVISION: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
        let _one_at_a_time = PROVISION.lock().await;
        let admin = self.admin_url();
        tokio::task::spawn_blocking(move || {
            let config = db::provision(&admin, service, &db::RolePasswords::default())
                .expect("provision service");
            let migrator = config
                .migration_database_url
                .as_ref()
                .expect("provision returns the migrator's URL");
            // run_migrations, not db::migrate: that one logs the versions
            // applied, and tests that scan their own logs for Luhn-valid
            // digit runs would find a 14-digit version among them.
            let mut conn = db::connect(migrator.expose()).expect("connect as the migrator");
            db::run_migrations(&mut conn, service, migrations).expect("run migrations");
            config
        })
        .await
        .expect("provision task")
    }
}

/// Whether `schema` exists in the database of `admin`.
fn schema_exists(admin: &str, schema: &str) -> bool {
    #[derive(diesel::QueryableByName)]
    struct Found {
        #[diesel(sql_type = diesel::sql_types::Bool)]
        found: bool,
    }
    use diesel::RunQueryDsl as _;
    let mut conn = db::connect(admin).expect("connect to the test database");
    diesel::sql_query("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1) AS found")
        .bind::<diesel::sql_types::Text, _>(schema)
        .get_result::<Found>(&mut conn)
        .expect("look the schema up")
        .found
}

/// Runs `statement` as `pool`'s role in a transaction that is always rolled
/// back, so a statement that does get through cannot affect the next one:
/// `Ok` if Postgres accepted it, `Err(message)` if it refused. For tests of
/// what a role may do.
pub async fn attempt_statement(pool: &db::Pool, statement: &'static str) -> Result<(), String> {
    use diesel::{Connection as _, result::Error};
    pool.run(move |conn| {
        let outcome = conn.transaction::<(), Error, _>(|conn| {
            conn.batch_execute(statement)?;
            Err(Error::RollbackTransaction)
        });
        Ok::<_, db::DbError>(match outcome {
            Ok(()) | Err(Error::RollbackTransaction) => Ok(()),
            Err(refused) => Err(refused.to_string()),
        })
    })
    .await
    .expect("a pooled connection")
}

/// Whether `message` is Postgres refusing on privilege grounds (SQLSTATE
/// 42501: "permission denied …", "must be owner of …"), as opposed to a
/// trigger or constraint saying no. The test clusters run with
/// `lc_messages=C`.
pub fn is_privilege_refusal(message: &str) -> bool {
    message.starts_with("permission denied") || message.starts_with("must be owner of")
}

/// Asserts that `pool`'s role may run every one of `statements` (each
/// rolled back), listing every refusal.
pub async fn assert_accepted(pool: &db::Pool, statements: &[&'static str]) {
    let mut refused = Vec::new();
    for statement in statements {
        if let Err(message) = attempt_statement(pool, statement).await {
            refused.push(format!("{statement}: {message}"));
        }
    }
    assert!(refused.is_empty(), "refused:\n{}", refused.join("\n"));
}

/// Asserts that Postgres refuses every one of `statements` to `pool`'s role
/// on privilege grounds ([`is_privilege_refusal`]), listing every statement
/// that got through or was refused for another reason.
pub async fn assert_refused_for_privilege(pool: &db::Pool, statements: &[&'static str]) {
    let mut not_refused = Vec::new();
    for statement in statements {
        match attempt_statement(pool, statement).await {
            Err(message) if is_privilege_refusal(&message) => {}
            other => not_refused.push(format!("{statement}: {other:?}")),
        }
    }
    assert!(
        not_refused.is_empty(),
        "not refused on privilege grounds:\n{}",
        not_refused.join("\n")
    );
}
