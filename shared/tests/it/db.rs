//! The shared database plumbing against a real Postgres: role isolation,
//! what the runtime role may and may not do in its own schema, migrations in
//! the service's schema, and pool exhaustion through a real server.

use std::time::{Duration, Instant};

use backroom_proto::testing::v1::{
    EchoRequest, EchoResponse,
    echo_service_client::EchoServiceClient,
    echo_service_server::{EchoService, EchoServiceServer},
};
use backroom_shared::{
    config::{DbConfig, ServerConfig},
    db::{self, DbError, Pool},
    errors,
    server::GrpcServer,
    testing::{
        PostgresCluster, TestDb, TestServer, assert_accepted, assert_refused_for_privilege,
        attempt_statement,
    },
};
use diesel::{RunQueryDsl as _, connection::SimpleConnection as _, sql_query};
use diesel_migrations::{EmbeddedMigrations, embed_migrations};
use tonic::{Code, Request, Response, Status};

const ALPHA: EmbeddedMigrations = embed_migrations!("tests/migrations/alpha");
const BETA: EmbeddedMigrations = embed_migrations!("tests/migrations/beta");

#[tokio::test]
async fn migrations_land_in_the_service_schema_and_another_role_cannot_read_them() {
    let test_db = TestDb::create().await;
    let alpha = test_db.service_config("alpha", ALPHA).await;
    let beta = test_db.service_config("beta", BETA).await;

    let alpha_pool = Pool::new(&alpha, "alpha");
    let beta_pool = Pool::new(&beta, "beta");
    alpha_pool
        .run(|conn| {
            conn.batch_execute("INSERT INTO alpha.widgets (label) VALUES ('mine')")?;
            Ok::<_, DbError>(())
        })
        .await
        .unwrap();
    // The unqualified name resolves inside the role's own schema.
    let count = alpha_pool
        .run(|conn| {
            #[derive(diesel::QueryableByName)]
            struct Count {
                #[diesel(sql_type = diesel::sql_types::BigInt)]
                n: i64,
            }
            let rows: Vec<Count> = sql_query("SELECT count(*) AS n FROM widgets").load(conn)?;
            Ok::<_, DbError>(rows[0].n)
        })
        .await
        .unwrap();
    assert_eq!(count, 1);

    for statement in [
        "SELECT * FROM alpha.widgets",
        "INSERT INTO alpha.widgets (label) VALUES ('theirs')",
        "CREATE TABLE alpha.intruder (id int)",
    ] {
        let err = beta_pool
            .run(move |conn| Ok::<_, DbError>(conn.batch_execute(statement)?))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, DbError::Other(e) if e.to_string().contains("permission denied")),
            "{statement}: {err:?}"
        );
    }
}

#[tokio::test]
async fn the_runtime_role_uses_its_rows_but_cannot_change_its_schema_or_touch_another() {
    let test_db = TestDb::create().await;
    let alpha = test_db.service_config("alpha", ALPHA).await;
    let _beta = test_db.service_config("beta", BETA).await;
    let runtime = Pool::new(&alpha, "alpha");

    // What serving needs: rows in and out, sequences.
    assert_accepted(
        &runtime,
        &[
            "INSERT INTO widgets (label) VALUES ('w')",
            "SELECT * FROM widgets",
            "UPDATE widgets SET label = 'v'",
            "DELETE FROM widgets",
            "INSERT INTO ledger (amount) VALUES (5)",
            "SELECT * FROM ledger",
        ],
    )
    .await;

    // What a compromised service must not be able to do.
    assert_refused_for_privilege(
        &runtime,
        &[
            // drop or change the guards
            "DROP TABLE widgets",
            "DROP TRIGGER ledger_append_only ON ledger",
            "ALTER TABLE ledger DISABLE TRIGGER ledger_append_only",
            "ALTER TABLE ledger DISABLE TRIGGER ALL",
            "ALTER TABLE ledger DROP CONSTRAINT ledger_amount_positive",
            "ALTER TABLE widgets ADD COLUMN extra int",
            "CREATE OR REPLACE FUNCTION ledger_forbid_change() RETURNS trigger \
         LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$",
            "DROP FUNCTION ledger_forbid_change() CASCADE",
            "SET session_replication_role = replica",
            "TRUNCATE ledger",
            "TRUNCATE widgets",
            "COMMENT ON TABLE widgets IS 'mine now'",
            // create objects in its schema (qualified or through search_path)
            "CREATE TABLE intruder (id int)",
            "CREATE TABLE alpha.intruder (id int)",
            "CREATE VIEW alpha.intruder AS SELECT 1 AS one",
            "CREATE FUNCTION alpha.intruder() RETURNS int LANGUAGE sql AS 'SELECT 1'",
            "CREATE INDEX widgets_label ON widgets (label)",
            "ALTER SCHEMA alpha RENAME TO omega",
            "DROP SCHEMA alpha CASCADE",
            // rewrite which migrations count as applied
            "DELETE FROM __diesel_schema_migrations",
            "INSERT INTO __diesel_schema_migrations (version) VALUES ('99999999999999')",
            // become the owner
            "SET ROLE backroom_alpha_migrator",
            // anything outside its schema
            "CREATE SCHEMA intruder",
            "CREATE TABLE public.intruder (id int)",
            "SELECT * FROM beta.gadgets",
            "INSERT INTO beta.gadgets DEFAULT VALUES",
        ],
    )
    .await;

    // The guards are all still there.
    runtime
        .run(|conn| Ok::<_, DbError>(conn.batch_execute("INSERT INTO ledger (amount) VALUES (7)")?))
        .await
        .unwrap();
    let refused = attempt_statement(&runtime, "UPDATE ledger SET amount = amount + 1")
        .await
        .unwrap_err();
    assert!(refused.contains("append-only"), "{refused}");
    let refused = attempt_statement(&runtime, "INSERT INTO ledger (amount) VALUES (0)")
        .await
        .unwrap_err();
    assert!(refused.contains("ledger_amount_positive"), "{refused}");

    // The refusals are about the role: the schema's owner may.
    let owner_url = alpha.migration_database_url.as_ref().unwrap().expose();
    let owner = Pool::new(&DbConfig::for_url(owner_url), "alpha");
    assert_accepted(
        &owner,
        &[
            "DROP TRIGGER ledger_append_only ON ledger",
            "ALTER TABLE ledger DROP CONSTRAINT ledger_amount_positive",
            "TRUNCATE ledger",
        ],
    )
    .await;
}

#[tokio::test]
async fn provisioning_hands_a_schema_owned_by_its_runtime_role_to_the_migrator() {
    use diesel_migrations::MigrationHarness as _;
    let test_db = TestDb::create().await;
    let admin_url = test_db.admin_url();
    // The former layout: role backroom_legacy owns schema legacy and ran
    // its migrations itself.
    let admin = admin_url.clone();
    tokio::task::spawn_blocking(move || {
        let mut conn = db::connect(&admin).unwrap();
        conn.batch_execute(
            "DO $$ BEGIN CREATE ROLE backroom_legacy LOGIN; \
             EXCEPTION WHEN duplicate_object THEN NULL; END $$; \
             CREATE SCHEMA legacy AUTHORIZATION backroom_legacy; \
             SET ROLE backroom_legacy; SET search_path TO legacy;",
        )
        .unwrap();
        conn.run_pending_migrations(backroom_shared::idempotency::MIGRATIONS)
            .unwrap();
        conn.run_pending_migrations(ALPHA).unwrap();
        // The new code refuses to migrate it as it is, saying why.
        conn.batch_execute("RESET ROLE").unwrap();
        let err = db::run_migrations(&mut conn, "legacy", ALPHA).unwrap_err();
        assert!(
            err.to_string()
                .contains("owned by its runtime role backroom_legacy"),
            "{err}"
        );
    })
    .await
    .unwrap();

    let admin = admin_url.clone();
    let config = tokio::task::spawn_blocking(move || {
        db::provision(&admin, "legacy", &db::RolePasswords::default())
    })
    .await
    .unwrap()
    .unwrap();
    assert!(
        db::migrate(&config, "legacy", ALPHA)
            .await
            .unwrap()
            .is_empty(),
        "every migration was applied before"
    );

    let runtime = Pool::new(&config, "legacy");
    assert_accepted(
        &runtime,
        &[
            "INSERT INTO widgets (label) VALUES ('kept')",
            "UPDATE widgets SET label = 'still kept'",
            "INSERT INTO ledger (amount) VALUES (1)",
            "DELETE FROM idempotency_keys",
        ],
    )
    .await;
    assert_refused_for_privilege(
        &runtime,
        &[
            "DROP TABLE widgets",
            "DROP TRIGGER ledger_append_only ON ledger",
            "CREATE TABLE intruder (id int)",
            "DELETE FROM __diesel_schema_migrations",
        ],
    )
    .await;
}

#[tokio::test]
async fn running_migrations_twice_and_concurrently_is_harmless() {
    let test_db = TestDb::create().await;
    let config = test_db.service_config("alpha", ALPHA).await;
    let runs = (0..4).map(|_| db::migrate(&config, "alpha", ALPHA));
    for run in futures_util::future::join_all(runs).await {
        assert!(run.unwrap().is_empty(), "nothing left to apply");
    }
}

#[tokio::test]
async fn migrations_run_only_as_the_schema_owner_and_say_which_url_that_is() {
    let test_db = TestDb::create().await;
    let config = test_db.service_config("alpha", ALPHA).await;

    // Without the migrator's URL: what to set, or how to start without it.
    let err = db::migrate(
        &DbConfig::for_url(config.database_url.expose()),
        "alpha",
        ALPHA,
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("BACKROOM_MIGRATION_DATABASE_URL")
            && err.contains("backroom_alpha_migrator")
            && err.contains("RUN_MIGRATIONS=false"),
        "{err}"
    );
    // The runtime role's URL in its place, or a superuser's (whose tables
    // the runtime role would get no privileges on): refused, naming the owner.
    for url in [config.database_url.expose().to_owned(), test_db.admin_url()] {
        let err = db::migrate(
            &DbConfig::for_url("unused").with_migration_url(url),
            "alpha",
            ALPHA,
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("run as its owner backroom_alpha_migrator"),
            "{err}"
        );
    }
}

/// Echo whose every call holds a pooled connection for `delay` (pg_sleep).
#[derive(Debug, Clone)]
struct SlowQuery {
    pool: Pool,
}

#[tonic::async_trait]
impl EchoService for SlowQuery {
    async fn echo(&self, request: Request<EchoRequest>) -> Result<Response<EchoResponse>, Status> {
        let request = request.into_inner();
        let delay = backroom_shared::testing::echo_delay(request.delay)?;
        self.pool
            .run(move |conn| {
                Ok::<_, DbError>(
                    conn.batch_execute(&format!("SELECT pg_sleep({})", delay.as_secs_f64()))?,
                )
            })
            .await
            .map_err(|err| err.into_status("backroom.testing"))?;
        Ok(Response::new(EchoResponse {
            message: request.message,
        }))
    }
}

#[tokio::test]
async fn an_exhausted_pool_answers_unavailable_within_the_checkout_timeout() {
    let test_db = TestDb::create().await;
    let config = DbConfig {
        pool_size: 1,
        pool_min_idle: 1,
        checkout_timeout_ms: 300,
        ..test_db.service_config("alpha", ALPHA).await
    };
    let pool = Pool::new(&config, "alpha");
    assert!(pool.is_healthy().await);
    let server = TestServer::spawn(
        GrpcServer::new(ServerConfig::default())
            .add_service(EchoServiceServer::new(SlowQuery { pool })),
    )
    .await;
    let mut client = EchoServiceClient::new(server.channel.clone());

    let mut holder = client.clone();
    let held = tokio::spawn(async move {
        holder
            .echo(EchoRequest {
                message: "holds the only connection".into(),
                delay: Some(Duration::from_secs(3).try_into().unwrap()),
            })
            .await
    });
    // Wait until the holder really has the connection: a second quick call
    // then has to queue for it.
    let started = loop {
        let started = Instant::now();
        let result = client
            .echo(EchoRequest {
                message: "probe".into(),
                delay: None,
            })
            .await;
        match result {
            Ok(_) => tokio::task::yield_now().await,
            Err(status) => break (started, status),
        }
    };
    let (started, status) = started;
    let waited = started.elapsed();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(
        errors::reason_of(&status).as_deref(),
        Some("SERVICE_UNAVAILABLE")
    );
    // Bounded by the 300 ms checkout timeout, far below the 3 s the holder
    // keeps the connection: the call did not hang waiting for it.
    assert!(waited < Duration::from_secs(2), "waited {waited:?}");
    assert!(held.await.unwrap().is_ok());
}

#[tokio::test]
async fn a_short_caller_deadline_cancels_the_database_statement() {
    let test_db = TestDb::create().await;
    let pool = Pool::new(&test_db.service_config("alpha", ALPHA).await, "alpha");
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + Duration::from_millis(300);
    let result = backroom_shared::deadline::scope(
        Some(deadline),
        pool.run(|conn| Ok::<_, DbError>(conn.batch_execute("SELECT pg_sleep(5)")?)),
    )
    .await;
    assert!(matches!(result, Err(DbError::Timeout(_))), "{result:?}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "Postgres cancelled it: {:?}",
        started.elapsed()
    );
    // The connection went back with the pool's own statement timeout.
    let timeout: String = pool
        .run(|conn| {
            #[derive(diesel::QueryableByName)]
            struct Setting {
                #[diesel(sql_type = diesel::sql_types::Text)]
                statement_timeout: String,
            }
            let rows: Vec<Setting> = sql_query("SHOW statement_timeout").load(conn)?;
            Ok::<_, DbError>(rows[0].statement_timeout.clone())
        })
        .await
        .unwrap();
    assert_eq!(timeout, "10s");
}

#[tokio::test]
async fn text_postgres_cannot_store_is_the_callers_invalid_argument_not_internal() {
    let test_db = TestDb::create().await;
    let alpha = test_db.service_config("alpha", ALPHA).await;
    let pool = Pool::new(&alpha, "alpha");
    // A bound parameter with NUL, as a request field would arrive.
    let err = pool
        .run(|conn| {
            sql_query("INSERT INTO widgets (label) VALUES ($1)")
                .bind::<diesel::sql_types::Text, _>("nul \0 here")
                .execute(conn)?;
            Ok::<_, DbError>(())
        })
        .await
        .unwrap_err();
    assert!(matches!(err, DbError::UnstorableText(_)), "{err:?}");
    assert_eq!(
        err.into_status("backroom.test").code(),
        Code::InvalidArgument
    );
    let err = pool
        .run(|conn| {
            sql_query("SELECT $1::jsonb")
                .bind::<diesel::sql_types::Text, _>(r#"{"k": "\u0000"}"#)
                .execute(conn)?;
            Ok::<_, DbError>(())
        })
        .await
        .unwrap_err();
    assert!(matches!(err, DbError::UnstorableText(_)), "{err:?}");
}

/// Who owns each service schema and what everyone may do there, the default
/// privileges migrations will inherit, and each role's settings in the
/// database `conn` is connected to: one line each, sorted.
fn privilege_layout(conn: &mut diesel::PgConnection) -> Vec<String> {
    #[derive(diesel::QueryableByName)]
    struct Line {
        #[diesel(sql_type = diesel::sql_types::Text)]
        line: String,
    }
    let lines: Vec<Line> = sql_query(
        "SELECT 'schema ' || nspname || ' owner ' || nspowner::regrole::text \
                || ' acl ' || coalesce(nspacl::text, '') AS line \
         FROM pg_namespace WHERE nspname IN ('account', 'inventory', 'payment') \
         UNION ALL \
         SELECT 'default ' || defaclrole::regrole::text || ' in ' \
                || coalesce(nullif(defaclnamespace, 0)::regnamespace::text, '*') \
                || ' ' || defaclobjtype::text || ' ' || defaclacl::text \
         FROM pg_default_acl \
         UNION ALL \
         SELECT 'setting ' || setrole::regrole::text || ' ' || array_to_string(setconfig, ',') \
         FROM pg_db_role_setting \
         WHERE setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database()) \
         UNION ALL \
         SELECT 'may create in public: ' || rolname FROM pg_roles \
         WHERE rolname ~ '^backroom_(account|inventory|payment)(_migrator)?$' \
           AND has_schema_privilege(rolname, 'public', 'CREATE') \
         ORDER BY 1",
    )
    .load(conn)
    .expect("read the privilege layout");
    lines.into_iter().map(|l| l.line).collect()
}

/// Provisions the three services with [`db::provision_service`] into a new
/// database `reference` of the cluster and returns its layout.
fn reference_layout(cluster: &PostgresCluster) -> Vec<String> {
    db::connect(&cluster.url("postgres"))
        .unwrap()
        .batch_execute("CREATE DATABASE reference")
        .unwrap();
    let mut reference = db::connect(&cluster.url("reference")).unwrap();
    for service in ["account", "inventory", "payment"] {
        db::provision_service(&mut reference, service, &db::RolePasswords::default()).unwrap();
    }
    privilege_layout(&mut reference)
}

fn repo_file(path: &str) -> String {
    let path = format!("{}/../{path}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[tokio::test]
async fn the_dev_overlays_init_sql_sets_up_the_roles_provisioning_does() {
    // Its own cluster: init.sql creates cluster-wide roles.
    tokio::task::spawn_blocking(|| {
        let cluster = PostgresCluster::start().unwrap();
        let init = repo_file("deploy/k8s/overlays/dev/postgres/init.sql");
        let (server, database) = init
            .split_once("\\connect backroom")
            .expect("init.sql connects to backroom");
        // One statement at a time: CREATE DATABASE refuses to share one.
        let mut postgres = db::connect(&cluster.url("postgres")).unwrap();
        let server: String = server
            .lines()
            .filter(|l| !l.trim_start().starts_with("--"))
            .collect::<Vec<_>>()
            .join("\n");
        for statement in server.split(';').map(str::trim).filter(|s| !s.is_empty()) {
            postgres
                .batch_execute(statement)
                .unwrap_or_else(|e| panic!("{statement}: {e}"));
        }
        let mut backroom = db::connect(&cluster.url("backroom")).unwrap();
        backroom.batch_execute(database).unwrap();
        assert_eq!(privilege_layout(&mut backroom), reference_layout(&cluster));
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn the_cloudnative_pg_cluster_sets_up_the_roles_provisioning_does() {
    tokio::task::spawn_blocking(|| {
        let cluster = PostgresCluster::start().unwrap();
        let manifest: serde_norway::Value = serde_norway::from_str(&repo_file(
            "deploy/k8s/overlays/prod/cloudnative-pg/cluster.yaml",
        ))
        .unwrap();
        let initdb = &manifest["spec"]["bootstrap"]["initdb"];
        // What the operator does before postInitApplicationSQL: the
        // application database and its owner.
        let (owner, database) = (
            initdb["owner"].as_str().unwrap(),
            initdb["database"].as_str().unwrap(),
        );
        let mut postgres = db::connect(&cluster.url("postgres")).unwrap();
        postgres
            .batch_execute(&format!("CREATE ROLE {owner} LOGIN"))
            .unwrap();
        postgres
            .batch_execute(&format!("CREATE DATABASE {database} OWNER {owner}"))
            .unwrap();
        let mut backroom = db::connect(&cluster.url(database)).unwrap();
        for statement in initdb["postInitApplicationSQL"].as_sequence().unwrap() {
            let statement = statement.as_str().unwrap();
            backroom
                .batch_execute(statement)
                .unwrap_or_else(|e| panic!("{statement}: {e}"));
        }
        assert_eq!(privilege_layout(&mut backroom), reference_layout(&cluster));
    })
    .await
    .unwrap();
}

const TWINS: EmbeddedMigrations = embed_migrations!("tests/migrations/twins");

#[tokio::test]
async fn two_migrations_with_one_version_are_refused_not_silently_skipped() {
    let test_db = TestDb::create().await;
    let admin = test_db.admin_url();
    let err = tokio::task::spawn_blocking(move || {
        let config = db::provision(&admin, "twins", &db::RolePasswords::default()).unwrap();
        let migrator = config.migration_database_url.unwrap();
        let mut conn = db::connect(migrator.expose()).unwrap();
        db::run_migrations(&mut conn, "twins", TWINS).unwrap_err()
    })
    .await
    .unwrap();
    assert!(
        err.to_string().contains("share version 20260101000000"),
        "{err}"
    );
}

#[tokio::test]
async fn databases_cloned_from_a_template_are_migrated_and_independent() {
    let first = TestDb::with_services([("alpha", ALPHA)]).await;
    let second = TestDb::with_services([("alpha", ALPHA)]).await;
    assert_ne!(first.name, second.name);
    let mut pools = Vec::new();
    for db in [&first, &second] {
        let config = db.service_config("alpha", ALPHA).await;
        pools.push(Pool::new(&config, "alpha"));
    }
    pools[0]
        .run(|conn| {
            conn.batch_execute("INSERT INTO alpha.widgets (label) VALUES ('only in the first')")?;
            Ok::<_, DbError>(())
        })
        .await
        .unwrap();
    for (pool, expected) in pools.iter().zip([1_i64, 0]) {
        let count = pool
            .run(|conn| {
                #[derive(diesel::QueryableByName)]
                struct Count {
                    #[diesel(sql_type = diesel::sql_types::BigInt)]
                    n: i64,
                }
                Ok::<_, DbError>(
                    sql_query("SELECT count(*) AS n FROM alpha.widgets")
                        .get_result::<Count>(conn)?
                        .n,
                )
            })
            .await
            .unwrap();
        assert_eq!(count, expected, "each clone is its own database");
    }
}
