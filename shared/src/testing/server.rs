//! Servers for tests: [`TestServer`] serves a [`GrpcServer`] on
//! `127.0.0.1:0` with a connected channel; [`Echo`] / [`echo_server`] is a
//! service to test the shared plumbing with.

use std::net::SocketAddr;

use crate::{
    client::{self, ClientConfig, TracedChannel},
    server::{GrpcServer, Health},
};

/// A server running on `127.0.0.1:<free port>` with a channel to it.
#[derive(Debug)]
pub struct TestServer {
    /// Where it listens.
    pub addr: SocketAddr,
    /// A traced channel to it; wrap it in a generated client.
    pub channel: TracedChannel,
    /// Its health handle.
    pub health: Health,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl TestServer {
    /// Binds first, then spawns `server`, so calls made right away queue on
    /// the listener instead of racing the start.
    pub async fn spawn(server: GrpcServer) -> Self {
        Self::spawn_on(Self::bind().await, server).await
    }

    /// A listener on `127.0.0.1:0`, for servers that must know their own
    /// address before they are built.
    pub async fn bind() -> tokio::net::TcpListener {
        tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0")
    }

    /// Serves `server` on an already bound `listener`.
    pub async fn spawn_on(listener: tokio::net::TcpListener, server: GrpcServer) -> Self {
        let addr = listener.local_addr().expect("local addr");
        let health = server.health();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(server.serve(listener, async {
            let _ = rx.await;
        }));
        let channel = client::channel(&ClientConfig::new(format!("http://{addr}")))
            .expect("channel to the test server");
        Self {
            addr,
            channel,
            health,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    /// `http://addr`, for building more channels.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Begins graceful shutdown without waiting for it.
    pub fn begin_shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    /// Shuts down gracefully and waits until the server has drained.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        self.begin_shutdown();
        match self.task.take() {
            Some(task) => task.await?,
            None => Ok(()),
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// The diagnostic `EchoService`: waits `delay`, answers with the message.
/// Used by the shared crate's tests and as the load generator's bare
/// transport baseline.
#[derive(Debug, Clone, Default)]
pub struct Echo;

/// Longest delay an echo call may ask for.
const MAX_ECHO_DELAY: std::time::Duration = std::time::Duration::from_secs(60);

#[tonic::async_trait]
impl backroom_proto::testing::v1::echo_service_server::EchoService for Echo {
    async fn echo(
        &self,
        request: tonic::Request<backroom_proto::testing::v1::EchoRequest>,
    ) -> Result<tonic::Response<backroom_proto::testing::v1::EchoResponse>, tonic::Status> {
        let request = request.into_inner();
        let delay = echo_delay(request.delay)?;
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        Ok(tonic::Response::new(
            backroom_proto::testing::v1::EchoResponse {
                message: request.message,
            },
        ))
    }
}

/// Parses an echo request's `delay`: unset is zero; negative or over a minute
/// is INVALID_ARGUMENT naming the field.
pub fn echo_delay(
    delay: Option<prost_types::Duration>,
) -> Result<std::time::Duration, tonic::Status> {
    let Some(delay) = delay else {
        return Ok(std::time::Duration::ZERO);
    };
    std::time::Duration::try_from(delay)
        .ok()
        .filter(|d| *d <= MAX_ECHO_DELAY)
        .ok_or_else(|| {
            crate::errors::invalid_argument(
                "backroom.testing",
                &[crate::errors::FieldViolation::new(
                    "delay",
                    "must be between 0 and 60 seconds",
                )],
            )
        })
}

/// A [`GrpcServer`] serving [`Echo`] with `config`.
pub fn echo_server(config: crate::config::ServerConfig) -> GrpcServer {
    let max = config.max_message_bytes;
    GrpcServer::new(config).add_service(
        backroom_proto::testing::v1::echo_service_server::EchoServiceServer::new(Echo)
            .max_decoding_message_size(max)
            .max_encoding_message_size(max),
    )
}
