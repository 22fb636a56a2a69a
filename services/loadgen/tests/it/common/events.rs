//! [`EventsRig`]: the event plumbing beside a world — a `nats-server -js`
//! of the test's own that every service relays to, each service's
//! Prometheus `/metrics` (the relay lag gauges), a webhook receiver
//! registered for every payment event, and the reference consumer
//! (`backroom-loadgen consume`) as a process of its own — and the checks
//! after the load: every committed event once in its stream (by id), all
//! published (lag 0), each applied once by the consumer, every payment
//! event at the receiver in order per subject.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    process::{Command, Stdio},
};

use backroom_loadgen::stack::{ChildGuard, free_port};
use backroom_proto::events::v1::{self as ev, webhook_service_client::WebhookServiceClient};
use backroom_shared::testing::{NatsServer, WebhookReceiver, stream_contents};

use super::*;

/// The consumer's schema, in the world's database.
const CONSUMER_SCHEMA: &str = "consumer";
/// How long the consumer waits between a batch's commit and its
/// acknowledgement: the window its kill -9 lands in.
const CONSUMER_ACK_DELAY_MS: u64 = 300;
/// How long the checks wait for the relays, the consumer and the
/// webhooks to catch up after the load.
const CATCH_UP: Duration = Duration::from_secs(60);

pub struct EventsRig {
    pub nats: NatsServer,
    pub receiver: WebhookReceiver,
    metrics: Vec<(Service, String)>,
    consumer: Option<ChildGuard>,
    logs: PathBuf,
    webhook_secret: String,
}

impl EventsRig {
    /// Starts NATS and the receiver, and adds to `options` what makes the
    /// services relay to it, serve metrics and allow webhooks to 127.0.0.1.
    pub async fn start(mut options: StackOptions) -> (Self, StackOptions) {
        let nats = NatsServer::start().await;
        let receiver = WebhookReceiver::start().await;
        let mut metrics = Vec::new();
        for service in Service::ALL {
            let addr = format!("127.0.0.1:{}", free_port().expect("a free port"));
            options = options
                .with_env(service, "BACKROOM_NATS_URL", nats.url())
                .with_env(service, "BACKROOM_METRICS_ADDR", addr.clone());
            metrics.push((service, addr));
        }
        options = options.with_env(
            Service::Payment,
            "BACKROOM_WEBHOOK_ALLOWED_HOSTS",
            "127.0.0.1",
        );
        let rig = Self {
            nats,
            receiver,
            metrics,
            consumer: None,
            logs: log_dir("consumer"),
            webhook_secret: String::new(),
        };
        (rig, options)
    }

    /// Registers the receiver for every payment event from now on, and
    /// starts the consumer.
    pub async fn attach(&mut self, world: &World, admin: &str) {
        let endpoint =
            WebhookServiceClient::new(lazy_channel(&world.stack.endpoint(Service::Payment)))
                .create_webhook_endpoint(call(
                    admin,
                    ev::CreateWebhookEndpointRequest {
                        url: self.receiver.url.clone(),
                        ..Default::default()
                    },
                ))
                .await
                .expect("register the webhook endpoint")
                .into_inner();
        self.webhook_secret = endpoint.secret;
        std::fs::create_dir_all(&self.logs).expect("the consumer's log directory");
        self.start_consumer(&world.admin_url);
        println!(
            "events: NATS JetStream on {}, every service relaying to it; webhook endpoint {} for every payment event; the reference consumer (`backroom-loadgen consume`, ack {CONSUMER_ACK_DELAY_MS} ms after each batch's commit) on all three streams",
            self.nats.url(),
            endpoint.name
        );
    }

    fn start_consumer(&mut self, admin_url: &str) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.logs.join("consumer.log"))
            .expect("the consumer's log");
        let child = Command::new(env!("CARGO_BIN_EXE_backroom-loadgen"))
            .args(["consume", "--nats-url", &self.nats.url(), "--database-url"])
            .arg(admin_url)
            .args(["--schema", CONSUMER_SCHEMA, "--batch", "50"])
            .args(["--ack-wait-secs", "2", "--ack-delay-ms"])
            .arg(CONSUMER_ACK_DELAY_MS.to_string())
            .stdout(log.try_clone().expect("the log"))
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("start backroom-loadgen consume");
        self.consumer = Some(ChildGuard::new(child));
    }

    /// kill -9 of the consumer just after one of its batches committed
    /// (so before that batch was acknowledged), then a restart.
    pub async fn kill_consumer_mid_batch(&mut self, admin_url: &str, started: Instant) {
        let applied = format!("SELECT '' AS label, count(*) AS n FROM {CONSUMER_SCHEMA}.applied");
        let before = count(admin_url, &applied).await;
        let deadline = Instant::now() + Duration::from_secs(30);
        let committed = loop {
            let now = count(admin_url, &applied).await;
            if now > before {
                break now;
            }
            assert!(Instant::now() < deadline, "the consumer applies nothing");
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        let consumer = self.consumer.take().expect("the consumer runs");
        let pid = consumer.id();
        consumer.kill9().expect("kill -9 of the consumer");
        println!(
            "injected at {:.1} s: kill -9 of the consumer (pid {pid}) right after a batch committed ({committed} events applied), within its {CONSUMER_ACK_DELAY_MS} ms before the acknowledgement",
            started.elapsed().as_secs_f64()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        self.start_consumer(admin_url);
        println!(
            "injected at {:.1} s: consumer restarted",
            started.elapsed().as_secs_f64()
        );
    }

    /// The relay lag gauges of `service` (`backroom_events_relay_lag`), or
    /// `None` while its metrics cannot be read.
    pub async fn relay_lag(&self, service: Service) -> Option<f64> {
        let (_, addr) = self.metrics.iter().find(|(s, _)| *s == service)?;
        let body = reqwest::get(format!("http://{addr}/metrics"))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        body.lines()
            .filter(|line| line.starts_with("backroom_events_relay_lag{"))
            .find_map(|line| line.rsplit(' ').next()?.parse().ok())
    }

    /// Waits until every service's lag gauge reads 0; returns how long.
    async fn lag_back_to_zero(&self) -> Duration {
        let begun = Instant::now();
        for service in Service::ALL {
            loop {
                let lag = self.relay_lag(service).await;
                if lag == Some(0.0) {
                    break;
                }
                assert!(
                    begun.elapsed() < CATCH_UP,
                    "{}'s relay lag is still {lag:?}",
                    service.name()
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        begun.elapsed()
    }

    /// After the load: the checks of the module docs.
    pub async fn verify(&self, admin_url: &str) {
        let took = self.lag_back_to_zero().await;
        let mut total = 0;
        for service in Service::ALL {
            let schema = service.name();
            let unpublished = count(
                admin_url,
                &format!(
                    "SELECT '' AS label, count(*) AS n FROM {schema}.events WHERE published_at IS NULL"
                ),
            )
            .await;
            assert_eq!(unpublished, 0, "{schema}: events left unpublished");
            let stored = counts(
                admin_url,
                &format!("SELECT id::text AS label, sequence AS n FROM {schema}.events"),
            )
            .await;
            let streamed = stream_contents(&self.nats.url(), schema).await;
            let ids: HashSet<&str> = streamed.iter().map(|(id, _)| id.as_str()).collect();
            assert_eq!(
                ids.len(),
                streamed.len(),
                "{schema}: an event is in the stream twice"
            );
            let stored_ids: HashSet<&str> = stored.iter().map(|(id, _)| id.as_str()).collect();
            assert_eq!(
                ids, stored_ids,
                "{schema}: the stream holds exactly the committed events"
            );
            for (id, event) in &streamed {
                assert_eq!(id, &event.id, "{schema}: the message id is the event id");
            }
            let sequences: Vec<i64> = streamed.iter().map(|(_, e)| e.sequence).collect();
            let gap_free: Vec<i64> = (1..=i64::try_from(stored.len()).unwrap()).collect();
            assert_eq!(
                sequences, gap_free,
                "{schema}: the stream is in sequence order, gap-free"
            );
            println!(
                "checked: {schema}: all {} committed events in stream BACKROOM_{} once each (by id), in sequence order; none unpublished",
                stored.len(),
                schema.to_uppercase()
            );
            total += stored.len();
        }
        println!(
            "checked: every relay's lag gauge (backroom_events_relay_lag, from /metrics) back at 0 {} ms after the load",
            took.as_millis()
        );

        // The consumer: each event applied once.
        let applied_sql =
            format!("SELECT '' AS label, count(*) AS n FROM {CONSUMER_SCHEMA}.applied");
        let begun = Instant::now();
        while usize::try_from(count(admin_url, &applied_sql).await).unwrap_or_default() < total {
            assert!(begun.elapsed() < CATCH_UP, "the consumer did not catch up");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let applied = count(admin_url, &applied_sql).await;
        let matched = count(
            admin_url,
            &format!(
                "SELECT '' AS label, count(*) AS n FROM {CONSUMER_SCHEMA}.applied a WHERE EXISTS (SELECT 1 FROM account.events e WHERE e.id = a.event_id) OR EXISTS (SELECT 1 FROM inventory.events e WHERE e.id = a.event_id) OR EXISTS (SELECT 1 FROM payment.events e WHERE e.id = a.event_id)"
            ),
        )
        .await;
        let tallied = count(
            admin_url,
            &format!(
                "SELECT '' AS label, coalesce(sum(count), 0)::bigint AS n FROM {CONSUMER_SCHEMA}.tallies"
            ),
        )
        .await;
        let duplicates = counts(
            admin_url,
            &format!("SELECT source AS label, count AS n FROM {CONSUMER_SCHEMA}.duplicates"),
        )
        .await;
        let skipped: i64 = duplicates.iter().map(|(_, n)| n).sum();
        assert_eq!(
            (applied, matched, tallied),
            (i64::try_from(total).unwrap(), applied, applied),
            "the consumer applied each committed event exactly once"
        );
        assert!(
            skipped > 0,
            "no redelivery reached the consumer: its kill missed the commit-to-ack window"
        );
        println!(
            "checked: the consumer applied all {total} events exactly once (applied rows = events = sum of its tallies) and skipped {skipped} redeliveries as duplicates {duplicates:?}"
        );

        // The webhook receiver: every payment event, in order per subject.
        let payment: Vec<(String, i64)> = counts(
            admin_url,
            "SELECT id::text AS label, sequence AS n FROM payment.events WHERE sequence IS NOT NULL ORDER BY sequence",
        )
        .await;
        let begun = Instant::now();
        let registered_after = loop {
            let got: HashSet<String> = self
                .receiver
                .accepted()
                .iter()
                .map(|r| r.header("webhook-id").to_owned())
                .collect();
            // The endpoint delivers what was sequenced after it was
            // registered: every payment event from the first delivered one.
            let first = self
                .receiver
                .accepted()
                .first()
                .map(|r| r.verified(&self.webhook_secret).sequence)
                .unwrap_or(i64::MAX);
            let expected: HashSet<String> = payment
                .iter()
                .filter(|(_, sequence)| *sequence >= first)
                .map(|(id, _)| id.clone())
                .collect();
            if !expected.is_empty() && expected.is_subset(&got) {
                break expected;
            }
            assert!(
                begun.elapsed() < CATCH_UP,
                "webhook deliveries missing: {} delivered, {} payment events",
                got.len(),
                payment.len()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let mut per_subject: HashMap<String, i64> = HashMap::new();
        let mut seen = HashSet::new();
        let mut by_type: BTreeMap<String, usize> = BTreeMap::new();
        let mut redelivered = 0;
        for received in self.receiver.accepted() {
            let event = received.verified(&self.webhook_secret);
            if !seen.insert(event.id.clone()) {
                redelivered += 1;
                continue;
            }
            let last = per_subject.entry(event.subject.clone()).or_default();
            assert!(
                event.sequence > *last,
                "{}: {} arrived after sequence {last}",
                event.subject,
                event.sequence
            );
            *last = event.sequence;
            let short = event.r#type.rsplit('.').next().unwrap_or_default();
            *by_type.entry(short.to_owned()).or_default() += 1;
        }
        let refused = self.receiver.received().len() - self.receiver.accepted().len();
        println!(
            "checked: the webhook receiver got all {} payment events sequenced after its registration, signed, in order per subject ({} subjects; {redelivered} redelivered, {refused} requests not answered 2xx); by type {by_type:?}",
            registered_after.len(),
            per_subject.len()
        );
    }
}
