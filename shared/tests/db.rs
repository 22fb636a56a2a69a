//! The shared database plumbing against a real Postgres: role isolation,
//! migrations in the service's schema, and pool exhaustion through a real
//! server.

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
    testing::{TestDb, TestServer},
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
async fn running_migrations_twice_and_concurrently_is_harmless() {
    let test_db = TestDb::create().await;
    let config = test_db.service_config("alpha", ALPHA).await;
    let runs = (0..4).map(|_| {
        let url = config.database_url.expose().to_owned();
        tokio::task::spawn_blocking(move || {
            let mut conn = db::connect(&url)?;
            db::run_migrations(&mut conn, "alpha", ALPHA)
        })
    });
    for run in futures_util::future::join_all(runs).await {
        assert!(run.unwrap().unwrap().is_empty(), "nothing left to apply");
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
