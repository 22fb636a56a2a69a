//! The limits every figure is compared with, built from the same dependency
//! versions as the services but with nothing of ours in the path:
//! - [`serve_echo`]: a bare tonic server answering `EchoService/Echo`;
//! - [`serve_pk_select`]: a bare tonic server whose `Echo` reads one row by
//!   primary key through diesel + r2d2 on the blocking pool (the same shape
//!   as a service's point read: the same pool settings, checkout test off).

use std::time::Duration;

use backroom_proto::testing::v1::{
    EchoRequest, EchoResponse,
    echo_service_server::{EchoService, EchoServiceServer},
};
use diesel::{
    PgConnection, QueryableByName, RunQueryDsl as _,
    connection::SimpleConnection as _,
    r2d2::{ConnectionManager, Pool},
    sql_query,
    sql_types::{BigInt, Text},
};
use tokio::net::TcpListener;
use tonic::{Request, Response, Status, transport::server::TcpIncoming};

/// Rows in the point-read table.
pub const PK_ROWS: i64 = 10_000;

#[derive(Debug, Clone, Copy)]
struct BareEcho;

#[tonic::async_trait]
impl EchoService for BareEcho {
    async fn echo(&self, request: Request<EchoRequest>) -> Result<Response<EchoResponse>, Status> {
        Ok(Response::new(EchoResponse {
            message: request.into_inner().message,
        }))
    }
}

/// Serves the bare echo baseline until the process ends.
pub async fn serve_echo(listener: TcpListener) -> anyhow::Result<()> {
    tonic::transport::Server::builder()
        .add_service(EchoServiceServer::new(BareEcho))
        .serve_with_incoming(TcpIncoming::from(listener).with_nodelay(Some(true)))
        .await?;
    Ok(())
}

#[derive(QueryableByName)]
struct Row {
    #[diesel(sql_type = Text)]
    payload: String,
}

#[derive(Clone)]
struct PkSelect {
    pool: Pool<ConnectionManager<PgConnection>>,
}

#[tonic::async_trait]
impl EchoService for PkSelect {
    async fn echo(&self, request: Request<EchoRequest>) -> Result<Response<EchoResponse>, Status> {
        let id: i64 = request
            .into_inner()
            .message
            .parse()
            .map_err(|_| Status::invalid_argument("message must be a row id"))?;
        let pool = self.pool.clone();
        let row = tokio::task::spawn_blocking(move || -> Result<Row, Status> {
            let mut conn = pool.get().map_err(|e| Status::unavailable(e.to_string()))?;
            sql_query("SELECT payload FROM bench_items WHERE id = $1")
                .bind::<BigInt, _>(id)
                .get_result(&mut conn)
                .map_err(|e| Status::not_found(e.to_string()))
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))??;
        Ok(Response::new(EchoResponse {
            message: row.payload,
        }))
    }
}

/// Creates and fills the point-read table (idempotent).
pub fn prepare_pk_table(database_url: &str) -> anyhow::Result<()> {
    let mut conn = <PgConnection as diesel::Connection>::establish(database_url)?;
    conn.batch_execute(&format!(
        "CREATE TABLE IF NOT EXISTS bench_items (id bigint PRIMARY KEY, payload text NOT NULL);
         INSERT INTO bench_items SELECT g, 'item-' || g FROM generate_series(1, {PK_ROWS}) g
         ON CONFLICT DO NOTHING;
         ANALYZE bench_items;"
    ))?;
    Ok(())
}

/// Serves the diesel + r2d2 point-read baseline until the process ends.
pub async fn serve_pk_select(
    listener: TcpListener,
    database_url: &str,
    pool_size: u32,
) -> anyhow::Result<()> {
    let url = database_url.to_owned();
    tokio::task::spawn_blocking(move || prepare_pk_table(&url)).await??;
    let pool = Pool::builder()
        .max_size(pool_size)
        .test_on_check_out(false)
        .connection_timeout(Duration::from_secs(2))
        .build(ConnectionManager::<PgConnection>::new(database_url))?;
    tonic::transport::Server::builder()
        .add_service(EchoServiceServer::new(PkSelect { pool }))
        .serve_with_incoming(TcpIncoming::from(listener).with_nodelay(Some(true)))
        .await?;
    Ok(())
}
