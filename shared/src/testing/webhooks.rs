//! [`WebhookReceiver`]: a real HTTP/1.1 receiver on 127.0.0.1 (keep-alive,
//! Content-Length bodies: what the dispatcher's reqwest sends) that records
//! every request and answers with the status set, or is down (refuses
//! connections) for a while; [`Received::verified`] checks a delivery's
//! Standard Webhooks signature and decodes its envelope.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU16, Ordering},
    },
    time::Duration,
};

use backroom_proto::events::v1 as pb;
use base64::{Engine as _, engine::general_purpose::STANDARD};
use hmac::{Hmac, Mac as _};
use prost::Name as _;
use sha2::Sha256;
use tokio::{
    io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader},
    net::{TcpListener, TcpStream},
    task::JoinHandle,
};

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
    /// The status it was answered with.
    pub answered: u16,
}

impl Received {
    /// A header's value ("" when absent); names are lower case.
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).map_or("", String::as_str)
    }

    /// Checks the Standard Webhooks headers against `secret` (`whsec_…`)
    /// and the body's shape (canonical proto3 JSON of the envelope, the
    /// payload expanded with its `@type`), and returns the envelope.
    pub fn verified(&self, secret: &str) -> pb::Event {
        let (id, timestamp) = (self.header("webhook-id"), self.header("webhook-timestamp"));
        let key = STANDARD
            .decode(secret.strip_prefix("whsec_").expect("a whsec_ secret"))
            .expect("a base64 secret");
        let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("any key length");
        mac.update(format!("{id}.{timestamp}.").as_bytes());
        mac.update(&self.body);
        let expected = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
        // The header may list several signatures, space-separated.
        assert!(
            self.header("webhook-signature")
                .split(' ')
                .any(|s| s == expected),
            "bad signature {:?}",
            self.header("webhook-signature")
        );
        let sent_at: i64 = timestamp.parse().expect("unix seconds");
        assert!(
            (chrono::Utc::now().timestamp() - sent_at).abs() < 60,
            "webhook-timestamp {sent_at} is not now"
        );
        assert_eq!(self.header("content-type"), "application/json");
        let json: serde_json::Value = serde_json::from_slice(&self.body).expect("a JSON body");
        let payload_type = json["payload"]["@type"].as_str().unwrap_or_default();
        assert_eq!(
            payload_type,
            format!(
                "type.googleapis.com/{}",
                json["type"].as_str().unwrap_or_default()
            )
        );
        assert!(json["sequence"].is_string(), "int64 as a string: {json}");
        let descriptor = crate::events::api::descriptors()
            .get_message_by_name(&pb::Event::full_name())
            .expect("the envelope's descriptor");
        let mut deserializer = serde_json::Deserializer::from_slice(&self.body);
        let event = prost_reflect::DynamicMessage::deserialize(descriptor, &mut deserializer)
            .expect("the body decodes as an Event")
            .transcode_to::<pb::Event>()
            .expect("an Event");
        assert_eq!(event.id, id, "webhook-id is the event id");
        event
    }
}

/// The receiver; clones share it.
#[derive(Debug, Clone)]
pub struct WebhookReceiver {
    /// `http://127.0.0.1:<port>/hooks/in`.
    pub url: String,
    addr: SocketAddr,
    answer: Arc<AtomicU16>,
    down: Arc<AtomicBool>,
    received: Arc<Mutex<Vec<Received>>>,
    accepting: Arc<Mutex<Option<JoinHandle<()>>>>,
}

impl WebhookReceiver {
    /// Listening before it returns, answering 200.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("the bound address");
        let receiver = Self {
            url: format!("http://{addr}/hooks/in"),
            addr,
            answer: Arc::new(AtomicU16::new(200)),
            down: Arc::default(),
            received: Arc::default(),
            accepting: Arc::default(),
        };
        receiver.accept(listener);
        receiver
    }

    fn accept(&self, listener: TcpListener) {
        let serving = self.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serving.clone().serve(stream));
            }
        });
        *self.accepting.lock().unwrap() = Some(task);
    }

    /// Answers every later request with `status`.
    pub fn answer(&self, status: u16) {
        self.answer.store(status, Ordering::SeqCst);
    }

    /// Goes down: stops listening (connections are refused) and drops open
    /// connections at their next request, unanswered.
    pub fn down(&self) {
        self.down.store(true, Ordering::SeqCst);
        if let Some(task) = self.accepting.lock().unwrap().take() {
            task.abort();
        }
    }

    /// Listens again on the same port.
    pub async fn up(&self) {
        let mut tries = 0;
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(listener) => break listener,
                Err(err) => {
                    tries += 1;
                    assert!(tries < 100, "cannot listen on {} again: {err}", self.addr);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        };
        self.down.store(false, Ordering::SeqCst);
        self.accept(listener);
    }

    /// Every request it got, in arrival order.
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// The deliveries it took (answered 2xx).
    pub fn accepted(&self) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| (200..300).contains(&r.answered))
            .collect()
    }

    async fn serve(self, stream: TcpStream) {
        let mut stream = BufReader::new(stream);
        loop {
            let mut line = String::new();
            if stream.read_line(&mut line).await.unwrap_or(0) == 0 {
                return;
            }
            let path = line.split(' ').nth(1).unwrap_or_default().to_owned();
            let mut headers = HashMap::new();
            loop {
                line.clear();
                if stream.read_line(&mut line).await.unwrap_or(0) == 0 {
                    return;
                }
                let Some((name, value)) = line.trim_end().split_once(':') else {
                    break; // the empty line ending the head
                };
                headers.insert(name.to_ascii_lowercase(), value.trim().to_owned());
            }
            let length = headers
                .get("content-length")
                .and_then(|l| l.parse().ok())
                .unwrap_or(0);
            let mut body = vec![0; length];
            if stream.read_exact(&mut body).await.is_err() || self.down.load(Ordering::SeqCst) {
                return;
            }
            let answered = self.answer.load(Ordering::SeqCst);
            self.received.lock().unwrap().push(Received {
                path,
                headers,
                body,
                answered,
            });
            let head = format!("HTTP/1.1 {answered} Test\r\ncontent-length: 0\r\n\r\n");
            if stream.get_mut().write_all(head.as_bytes()).await.is_err() {
                return;
            }
        }
    }
}
