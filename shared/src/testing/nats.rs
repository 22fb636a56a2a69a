//! [`NatsServer`]: a `nats-server` with JetStream of the test's own, on a
//! free port of 127.0.0.1 with its store in a temporary directory, stopped
//! (killed) when dropped. The binary must be on PATH (Debian package
//! `nats-server`); no test uses a NATS it did not start. [`stream_contents`]
//! reads back every message of a service's stream.

use std::{
    io::{BufRead as _, BufReader},
    process::{Child, Command, Stdio},
    time::Duration,
};

use async_nats::jetstream;
use backroom_proto::events::v1 as pb;
use futures_util::StreamExt as _;
use prost::Message as _;

use crate::events::relay;

/// A running `nats-server -js`.
#[derive(Debug)]
pub struct NatsServer {
    child: Option<Child>,
    port: u16,
    store: tempfile::TempDir,
}

impl NatsServer {
    /// Starts one on a free port (`-p -1`), waiting until it listens.
    pub async fn start() -> Self {
        let store = tempfile::Builder::new()
            .prefix("backroom-nats-")
            .tempdir()
            .expect("a temporary directory for JetStream");
        let (child, port) = spawn(store.path(), None).await;
        Self {
            child: Some(child),
            port,
            store,
        }
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kills the server (as a crash or an outage would); its store stays.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port with the same store.
    pub async fn restart(&mut self) {
        self.stop();
        let (child, _) = spawn(self.store.path(), Some(self.port)).await;
        self.child = Some(child);
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Runs `nats-server` and reads its log until it says where it listens.
async fn spawn(store: &std::path::Path, port: Option<u16>) -> (Child, u16) {
    let store = store.to_owned();
    tokio::task::spawn_blocking(move || {
        let port_arg = port.map_or_else(|| "-1".to_owned(), |p| p.to_string());
        let mut last_error = String::new();
        for _ in 0..50 {
            let mut child = Command::new("nats-server")
                .args(["-a", "127.0.0.1", "-p", &port_arg, "-js", "-sd"])
                .arg(&store)
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("nats-server on PATH (Debian package nats-server)");
            let stderr = child.stderr.take().expect("piped stderr");
            let mut lines = BufReader::new(stderr).lines();
            let marker = "Listening for client connections on 127.0.0.1:";
            let mut found = None;
            for line in lines.by_ref() {
                let Ok(line) = line else { break };
                if let Some(at) = line.find(marker) {
                    found = line[at + marker.len()..].trim().parse::<u16>().ok();
                    break;
                }
                last_error = line;
            }
            match found {
                Some(port) => {
                    // Keep draining the log so the server never blocks on it.
                    std::thread::spawn(move || for _ in lines {});
                    return (child, port);
                }
                None => {
                    // The port of a restart may not be free yet.
                    let _ = child.kill();
                    let _ = child.wait();
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
        panic!("nats-server did not start: {last_error}");
    })
    .await
    .expect("starting nats-server")
}

/// Every message of service `source`'s stream on the NATS at `url`, in
/// stream order: its `Nats-Msg-Id` and the envelope. Asserts that each was
/// published on its type's subject.
pub async fn stream_contents(url: &str, source: &str) -> Vec<(String, pb::Event)> {
    let client = async_nats::connect(url).await.expect("connect to NATS");
    let context = jetstream::new(client);
    let mut stream = context
        .get_stream(relay::stream_name(source))
        .await
        .expect("the service's stream");
    let total = stream.info().await.expect("stream info").state.messages;
    let total = usize::try_from(total).expect("a count");
    let consumer = stream
        .create_consumer(jetstream::consumer::pull::Config::default())
        .await
        .expect("an ephemeral consumer");
    let mut found = Vec::with_capacity(total);
    while found.len() < total {
        let mut messages = consumer
            .fetch()
            .max_messages((total - found.len()).min(1000))
            .expires(Duration::from_secs(2))
            .messages()
            .await
            .expect("fetch");
        let before = found.len();
        while let Some(message) = messages.next().await {
            let message = message.expect("a message");
            let id = message
                .headers
                .as_ref()
                .and_then(|h| h.get("Nats-Msg-Id"))
                .map(|v| v.as_str().to_owned())
                .unwrap_or_default();
            let event = pb::Event::decode(message.payload.clone()).expect("an encoded Event");
            assert_eq!(
                message.subject.as_str(),
                relay::subject(source, &event.r#type),
                "published on its type's subject"
            );
            found.push((id, event));
        }
        assert!(found.len() > before, "the stream stopped giving messages");
    }
    found
}
