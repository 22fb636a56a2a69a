//! `backroom-loadgen`: load generator and benchmark driver. Thin: parses
//! the command line and hands over to the library.

use std::{path::PathBuf, time::Duration};

use backroom_loadgen::{
    baselines, bench, consumer,
    driver::{self, Mode, Plan},
    flood::{self, FloodPlan, FloodRpc},
    scenarios::{self, Target},
    stats::{render_table, report},
};
use clap::{Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "backroom-loadgen",
    version,
    about = "Backroom load generator and benchmark driver"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LoopMode {
    /// Fixed concurrency.
    Closed,
    /// Fixed arrival rate.
    Open,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum BaselineKind {
    /// Bare tonic echo.
    Echo,
    /// Bare diesel + r2d2 point read.
    PkSelect,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Drive one scenario against a target and print a table per RPC.
    Run {
        /// Scenario: echo, pk-select, login, raw-argon2id.
        #[arg(long)]
        scenario: String,
        /// `http://host:port` of the service under test.
        #[arg(long, default_value = "http://127.0.0.1:50051")]
        target: String,
        /// Closed (fixed concurrency) or open (fixed rate) loop.
        #[arg(long, value_enum, default_value_t = LoopMode::Closed)]
        mode: LoopMode,
        /// Operations in flight (closed loop; also sizes fixtures).
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        /// Arrivals per second (open loop).
        #[arg(long, default_value_t = 1000.0)]
        rate: f64,
        /// HTTP/2 connections.
        #[arg(long, default_value_t = 4)]
        connections: usize,
        /// Measured seconds.
        #[arg(long, default_value_t = 10)]
        duration: u64,
        /// Warm-up seconds.
        #[arg(long, default_value_t = 2)]
        warmup: u64,
        /// Also write the report as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Password of admin@backroom.local (scenarios that create fixtures).
        #[arg(long, env = "BACKROOM_BOOTSTRAP_ADMIN_PASSWORD")]
        admin_password: Option<String>,
        /// The payment principal's secret (reservation fixtures).
        #[arg(long, env = "BACKROOM_PAYMENT_CLIENT_SECRET", default_value = "")]
        payment_client_secret: String,
        /// The account service (fixtures).
        #[arg(long, default_value = "http://127.0.0.1:50051")]
        account: String,
        /// The inventory service (fixtures).
        #[arg(long, default_value = "http://127.0.0.1:50052")]
        inventory: String,
        /// The payment service (fixtures).
        #[arg(long, default_value = "http://127.0.0.1:50053")]
        payment: String,
    },
    /// The reservation race: `attempts` concurrent single-unit ReserveStock
    /// calls on a fresh SKU with `units`, repeated; prints successes and rate.
    Race {
        /// Concurrent reserves per round.
        #[arg(long, default_value_t = 200)]
        attempts: usize,
        /// Units in stock per round.
        #[arg(long, default_value_t = 100)]
        units: i64,
        /// Rounds.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Password of admin@backroom.local.
        #[arg(long, env = "BACKROOM_BOOTSTRAP_ADMIN_PASSWORD")]
        admin_password: String,
        /// The payment principal's secret.
        #[arg(long, env = "BACKROOM_PAYMENT_CLIENT_SECRET")]
        payment_client_secret: String,
        /// The account service.
        #[arg(long, default_value = "http://127.0.0.1:50051")]
        account: String,
        /// The inventory service.
        #[arg(long, default_value = "http://127.0.0.1:50052")]
        inventory: String,
    },
    /// Flood the account service with calls that each cost a password hash,
    /// every one with a short deadline; print the outcomes as JSON.
    Flood {
        /// `http://host:port` of the account service.
        #[arg(long, default_value = "http://127.0.0.1:50051")]
        target: String,
        /// Which RPC.
        #[arg(long, value_enum, default_value_t = FloodRpc::Register)]
        rpc: FloodRpc,
        /// Deadline of each call, milliseconds.
        #[arg(long, default_value_t = 5)]
        deadline_ms: u64,
        /// Calls in flight.
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        /// HTTP/2 connections.
        #[arg(long, default_value_t = 4)]
        connections: usize,
        /// Seconds.
        #[arg(long, default_value_t = 10)]
        duration: u64,
    },
    /// Serve a bare baseline until killed.
    Baseline {
        /// Which baseline.
        #[arg(value_enum)]
        kind: BaselineKind,
        /// Listen address.
        #[arg(long, default_value = "127.0.0.1:50060")]
        listen: String,
        /// Postgres URL (pk-select).
        #[arg(long)]
        database_url: Option<String>,
    },
    /// Consume the services' JetStream streams, applying each event's effect
    /// exactly once (recorded by event id in Postgres), until SIGINT/SIGTERM.
    Consume {
        /// NATS URL.
        #[arg(
            long,
            env = "BACKROOM_NATS_URL",
            default_value = "nats://127.0.0.1:4222"
        )]
        nats_url: String,
        /// Postgres URL of the database for the consumer's schema.
        #[arg(long, env = "BACKROOM_CONSUMER_DATABASE_URL")]
        database_url: String,
        /// The consumer's schema (created when missing).
        #[arg(long, default_value = "consumer")]
        schema: String,
        /// Services whose streams are consumed.
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "account,inventory,payment"
        )]
        sources: Vec<String>,
        /// Durable consumer names are `<prefix>-<service>`.
        #[arg(long, default_value = "backroom-loadgen")]
        durable_prefix: String,
        /// Messages per batch (one transaction each).
        #[arg(long, default_value_t = 100)]
        batch: usize,
        /// Seconds JetStream waits for an acknowledgement before redelivering.
        #[arg(long, default_value_t = 2)]
        ack_wait_secs: u64,
        /// Pause between a batch's commit and its acknowledgement
        /// (milliseconds; widens the window the fault tests kill in).
        #[arg(long, default_value_t = 0)]
        ack_delay_ms: u64,
    },
    /// Run `backroom up` and the baselines, every scenario, write BENCHMARKS.md.
    Bench {
        /// Directory of the service binaries (default: this one's).
        #[arg(long)]
        bin_dir: Option<PathBuf>,
        /// Output file.
        #[arg(long, default_value = "BENCHMARKS.md")]
        out: PathBuf,
        /// Repetitions per scenario.
        #[arg(long, default_value_t = 3)]
        repetitions: usize,
        /// Measured seconds per repetition.
        #[arg(long, default_value_t = 10)]
        duration: u64,
        /// Warm-up seconds per repetition.
        #[arg(long, default_value_t = 2)]
        warmup: u64,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Run {
            scenario,
            target,
            mode,
            concurrency,
            rate,
            connections,
            duration,
            warmup,
            json,
            admin_password,
            payment_client_secret,
            account,
            inventory,
            payment,
        } => {
            let target = Target {
                endpoint: target,
                connections,
                concurrency,
            };
            let suite = admin_password.map(|admin_password| backroom_loadgen::fixtures::Suite {
                account,
                inventory,
                payment,
                admin_password,
                payment_client_secret,
            });
            let operation = scenarios::setup(&scenario, &target, suite.as_ref()).await?;
            let mode = match mode {
                LoopMode::Closed => Mode::Closed { concurrency },
                LoopMode::Open => Mode::Open {
                    rate,
                    max_in_flight: concurrency.max(1) * 16,
                },
            };
            let plan = Plan {
                mode,
                warmup: Duration::from_secs(warmup),
                duration: Duration::from_secs(duration),
                progress: true,
            };
            let (stats, elapsed) = driver::run(plan, operation).await;
            let rows = report(&stats, elapsed);
            print!("{}", render_table(&rows));
            if let Some(path) = json {
                std::fs::write(path, serde_json::to_string_pretty(&rows)?)?;
            }
            Ok(())
        }
        Command::Race {
            attempts,
            units,
            rounds,
            admin_password,
            payment_client_secret,
            account,
            inventory,
        } => {
            let suite = backroom_loadgen::fixtures::Suite {
                account,
                inventory,
                payment: String::new(),
                admin_password,
                payment_client_secret,
            };
            for round in 1..=rounds {
                let race = scenarios::reserve_race(&suite, 4, attempts, units).await?;
                let mut unexpected = std::collections::BTreeMap::<&str, usize>::new();
                for failure in &race.unexpected {
                    *unexpected.entry(failure.as_str()).or_default() += 1;
                }
                println!(
                    "round {round}: {} of {} reserved in {:?} ({:.0} attempts/s); other failures: {unexpected:?}",
                    race.successes,
                    race.attempts,
                    race.elapsed,
                    race.rate(),
                );
            }
            Ok(())
        }
        Command::Flood {
            target,
            rpc,
            deadline_ms,
            concurrency,
            connections,
            duration,
        } => {
            let counts = flood::run(FloodPlan {
                target,
                rpc,
                deadline: Duration::from_millis(deadline_ms),
                concurrency,
                connections,
                duration: Duration::from_secs(duration),
            })
            .await?;
            println!("{}", serde_json::to_string(&counts)?);
            Ok(())
        }
        Command::Baseline {
            kind,
            listen,
            database_url,
        } => {
            let listener = tokio::net::TcpListener::bind(&listen).await?;
            match kind {
                BaselineKind::Echo => baselines::serve_echo(listener).await,
                BaselineKind::PkSelect => {
                    let url = database_url
                        .ok_or_else(|| anyhow::anyhow!("pk-select needs --database-url"))?;
                    baselines::serve_pk_select(listener, &url, 10).await
                }
            }
        }
        Command::Consume {
            nats_url,
            database_url,
            schema,
            sources,
            durable_prefix,
            batch,
            ack_wait_secs,
            ack_delay_ms,
        } => {
            let totals = consumer::run(consumer::ConsumeConfig {
                nats_url,
                database_url,
                schema,
                sources,
                durable_prefix,
                batch,
                ack_wait: Duration::from_secs(ack_wait_secs.max(1)),
                ack_delay: Duration::from_millis(ack_delay_ms),
            })
            .await?;
            println!(
                "applied {} new events, skipped {} duplicates, rejected {}",
                totals.new, totals.duplicates, totals.rejected
            );
            Ok(())
        }
        Command::Bench {
            bin_dir,
            out,
            repetitions,
            duration,
            warmup,
        } => {
            bench::run(bench::BenchConfig {
                bin_dir: bin_dir.unwrap_or_else(|| bench::sibling("")),
                loadgen_bin: std::env::current_exe()?,
                out,
                repetitions: repetitions.max(1),
                duration: Duration::from_secs(duration),
                warmup: Duration::from_secs(warmup),
            })
            .await
        }
    }
}
