//! `backroom-loadgen bench`: runs the three service binaries and the baselines as child
//! processes against one throwaway Postgres, drives every scenario several
//! times, and writes BENCHMARKS.md with medians and ratios to the limits
//! measured in the same run.

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use backroom_shared::local_postgres::PostgresCluster;
use diesel::connection::SimpleConnection as _;

use crate::{
    driver::{self, Mode, Plan},
    fixtures::Suite,
    scenarios::{
        self, Race, Target,
        watch_stock::{self, ADJUSTMENTS, IDLE_MARGIN, WATCHERS, WatchLatency},
    },
    stack::{ChildGuard, Service, Stack, StackOptions, free_port, memory_mib, wait_serving},
    stats::{ReportRow, RpcStats, report},
};

/// Inventory's variable for the WatchStock hub's coalescing interval.
const WATCH_INTERVAL_VAR: &str = "BACKROOM_WATCH_POLL_INTERVAL_MS";

/// Settings of a bench run.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// Where the service binaries (`backroom-account`, …) are, built in
    /// release mode.
    pub bin_dir: PathBuf,
    /// This binary (for the baseline children).
    pub loadgen_bin: PathBuf,
    /// Where to write the report.
    pub out: PathBuf,
    /// Repetitions per scenario (medians are reported).
    pub repetitions: usize,
    /// Measured seconds per repetition.
    pub duration: Duration,
    /// Warm-up per repetition.
    pub warmup: Duration,
}

/// One scenario's measurement: the median repetition's row of `rpc`.
#[derive(Debug, Clone)]
struct Measured {
    row: ReportRow,
    repetitions: Vec<f64>,
}

async fn measure(
    config: &BenchConfig,
    scenario: &str,
    target: &Target,
    rpc: &str,
    suite: Option<&Suite>,
) -> anyhow::Result<Measured> {
    let operation = scenarios::setup(scenario, target, suite).await?;
    let mut rows = Vec::new();
    for repetition in 0..config.repetitions {
        eprintln!(
            "{scenario} → {} (repetition {}/{})",
            target.endpoint,
            repetition + 1,
            config.repetitions
        );
        let plan = Plan {
            mode: Mode::Closed {
                concurrency: target.concurrency,
            },
            warmup: config.warmup,
            duration: config.duration,
            progress: true,
        };
        let (stats, elapsed) = driver::run(plan, operation.clone()).await;
        let row = report(&stats, elapsed)
            .into_iter()
            .find(|row| row.rpc == rpc)
            .with_context(|| format!("{scenario} recorded no {rpc}"))?;
        rows.push(row);
    }
    let repetitions: Vec<f64> = rows.iter().map(|r| r.throughput).collect();
    rows.sort_by(|a, b| a.throughput.total_cmp(&b.throughput));
    Ok(Measured {
        row: rows[rows.len() / 2].clone(),
        repetitions,
    })
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0 / 1024.0);
    format!("{cpu}, {cores} cores, {mem:.0} GiB RAM")
}

fn command_version(program: &str, arg: &str) -> String {
    Command::new(program)
        .arg(arg)
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| format!("{program}: unknown"))
}

/// A latency row of the WatchStock section: the repetition with the median
/// p50 (so a row's figures come from one repetition, as in [`measure`]).
fn latency_line(name: &str, repetitions: &[&RpcStats]) -> String {
    let mut sorted = repetitions.to_vec();
    sorted.sort_by(|a, b| a.quantile_ms(0.5).total_cmp(&b.quantile_ms(0.5)));
    let Some(median) = sorted.get(sorted.len() / 2) else {
        return format!("| {name} | — | — | — | — | 0 | — |\n");
    };
    let p50s: Vec<String> = repetitions
        .iter()
        .map(|r| format!("{:.2}", r.quantile_ms(0.5)))
        .collect();
    format!(
        "| {name} | {:.2} | {:.2} | {:.2} | {:.2} | {} | {} |\n",
        median.quantile_ms(0.5),
        median.quantile_ms(0.9),
        median.quantile_ms(0.99),
        median.max_ms(),
        median.successes(),
        p50s.join(" / ")
    )
}

/// The hub's coalescing interval the inventory process runs with, and
/// whether it was set or is the default.
fn watch_interval(stack: &Stack) -> anyhow::Result<(Duration, &'static str)> {
    match stack.env_value(Service::Inventory, WATCH_INTERVAL_VAR) {
        Some(value) => {
            let ms: u64 = value
                .trim()
                .parse()
                .with_context(|| format!("{WATCH_INTERVAL_VAR}={value:?} is not a number"))?;
            Ok((Duration::from_millis(ms), "set in its environment"))
        }
        None => Ok((
            Duration::from_millis(
                backroom_inventory::InventoryConfig::default().watch_poll_interval_ms,
            ),
            "the default",
        )),
    }
}

fn row_line(name: &str, m: &Measured, baseline: Option<&Measured>) -> String {
    let ratio = baseline.map_or("—".into(), |b| {
        format!(
            "{:.2}×",
            m.row.throughput / b.row.throughput.max(f64::EPSILON)
        )
    });
    let reps: Vec<String> = m.repetitions.iter().map(|r| format!("{r:.0}")).collect();
    format!(
        "| {name} | {:.0} | {ratio} | {:.2} | {:.2} | {:.2} | {:.2} | {} | {} |\n",
        m.row.throughput,
        m.row.p50_ms,
        m.row.p90_ms,
        m.row.p99_ms,
        m.row.max_ms,
        m.row.errors,
        reps.join(" / ")
    )
}

/// Runs the whole bench and writes the report.
pub async fn run(config: BenchConfig) -> anyhow::Result<()> {
    let cluster = tokio::task::spawn_blocking(PostgresCluster::start).await??;
    let admin = cluster.url("postgres");
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        let mut conn = backroom_shared::db::connect(&admin)?;
        // One statement per call: CREATE DATABASE refuses a transaction block.
        conn.batch_execute("CREATE DATABASE backroom")?;
        conn.batch_execute("CREATE DATABASE baseline")?;
        Ok(())
    })
    .await??;

    // Baselines, each its own process like the services.
    let echo_port = free_port()?;
    let pk_port = free_port()?;
    let echo = ChildGuard::new(
        Command::new(&config.loadgen_bin)
            .args([
                "baseline",
                "echo",
                "--listen",
                &format!("127.0.0.1:{echo_port}"),
            ])
            .stdout(Stdio::null())
            .spawn()?,
    );
    let pk = ChildGuard::new(
        Command::new(&config.loadgen_bin)
            .args([
                "baseline",
                "pk-select",
                "--listen",
                &format!("127.0.0.1:{pk_port}"),
                "--database-url",
            ])
            .arg(cluster.url("baseline"))
            .stdout(Stdio::null())
            .spawn()?,
    );

    // The suite: each service its own process, as deployed, each with its
    // own role and schema in one database.
    // WatchStock's stream caps lifted, like the other per-client limits: per
    // caller to the watchers one run's customer opens, per address to twice
    // that (the previous run's streams may hold their slots until the server
    // has seen them cancelled).
    let stack = Stack::start(
        &cluster.url("backroom"),
        &config.bin_dir,
        StackOptions {
            // The services' logs, kept where `BACKROOM_BENCH_LOG_DIR` says
            // (to look into a bad run); discarded otherwise.
            log_dir: std::env::var_os("BACKROOM_BENCH_LOG_DIR").map(PathBuf::from),
            ..StackOptions::default()
        }
        .without_rate_limits()
        .with_env(
            Service::Inventory,
            "BACKROOM_WATCH_STREAMS_PER_CALLER",
            WATCHERS.to_string(),
        )
        .with_env(
            Service::Inventory,
            "BACKROOM_WATCH_STREAMS_PER_ADDRESS",
            (2 * WATCHERS).to_string(),
        ),
    )
    .await
    .context("cannot start the services (build them with `just bench`)")?;
    let to_serving = stack.to_serving();
    wait_serving(
        &format!("http://127.0.0.1:{echo_port}"),
        Instant::now(),
        Duration::from_secs(30),
    )
    .await
    .ok();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle: Vec<f64> = Service::ALL.iter().map(|s| stack.rss_mib(*s).0).collect();
    let fixtures = stack.suite();
    let account = fixtures.account.clone();
    let target = |endpoint: String, concurrency| Target {
        endpoint,
        connections: 4,
        concurrency,
    };
    let echo_url = format!("http://127.0.0.1:{echo_port}");
    let pk_url = format!("http://127.0.0.1:{pk_port}");
    let echo_m = measure(
        &config,
        "echo",
        &target(echo_url, 64),
        "EchoService/Echo",
        None,
    )
    .await?;
    let pk_m = measure(
        &config,
        "pk-select",
        &target(pk_url, 64),
        "PkSelect/Echo",
        None,
    )
    .await?;
    let get_m = measure(
        &config,
        "get-product",
        &target(fixtures.inventory.clone(), 64),
        "InventoryService/GetProduct",
        Some(&fixtures),
    )
    .await?;
    // The same read through the JSON gateway, same port, same load.
    let get_json_m = measure(
        &config,
        "get-product-json",
        &target(fixtures.inventory.clone(), 64),
        "GET /v1/products/{sku} (JSON)",
        Some(&fixtures),
    )
    .await?;
    let hash_m = measure(
        &config,
        "raw-argon2id",
        &target(String::new(), 16),
        "raw-argon2id",
        None,
    )
    .await?;
    let login_m = measure(
        &config,
        "login",
        &target(account.clone(), 16),
        "AccountService/Login",
        None,
    )
    .await?;
    let order_m = measure(
        &config,
        "place-order",
        &target(fixtures.payment.clone(), 32),
        "CheckoutService/PlaceOrder",
        Some(&fixtures),
    )
    .await?;

    // GetProduct's p99 alone and during a login storm.
    let quiet = measure(
        &config,
        "get-product",
        &target(fixtures.inventory.clone(), 16),
        "InventoryService/GetProduct",
        Some(&fixtures),
    )
    .await?;
    let storm = {
        let login = scenarios::setup("login", &target(account.clone(), 32), None).await?;
        let plan = Plan {
            mode: Mode::Closed { concurrency: 32 },
            warmup: config.warmup,
            duration: config.duration * u32::try_from(config.repetitions).unwrap_or(1)
                + config.warmup,
            progress: false,
        };
        let storm = tokio::spawn(driver::run(plan, login));
        tokio::time::sleep(config.warmup).await;
        let during = measure(
            &config,
            "get-product",
            &target(fixtures.inventory.clone(), 16),
            "InventoryService/GetProduct",
            Some(&fixtures),
        )
        .await?;
        let (stats, elapsed) = storm.await?;
        let logins = report(&stats, elapsed)
            .into_iter()
            .find(|r| r.rpc == "AccountService/Login")
            .map_or(0.0, |r| r.throughput);
        (during, logins)
    };

    // Reservation race vs the raw conditional UPDATE, each on fresh stock.
    let mut reserve_runs = Vec::new();
    let mut raw_runs = Vec::new();
    for repetition in 0..config.repetitions {
        eprintln!(
            "reserve race (repetition {}/{})",
            repetition + 1,
            config.repetitions
        );
        reserve_runs.push(scenarios::reserve_race(&fixtures, 4, 200, 100).await?);
        raw_runs.push(scenarios::raw_update_race(&cluster.url("baseline"), 200, 100).await?);
    }
    let median_race = |runs: &mut Vec<Race>| {
        runs.sort_by(|a, b| a.rate().total_cmp(&b.rate()));
        runs[runs.len() / 2].clone()
    };
    let reserve = median_race(&mut reserve_runs);
    let raw = median_race(&mut raw_runs);
    let successes: Vec<String> = reserve_runs
        .iter()
        .map(|r| r.successes.to_string())
        .collect();
    let unexpected: usize = reserve_runs.iter().map(|r| r.unexpected.len()).sum();

    // WatchStock: AdjustStock to the stream, one watcher and many.
    let (interval, interval_source) = watch_interval(&stack)?;
    let mut one_watcher: Vec<WatchLatency> = Vec::new();
    let mut many_watchers: Vec<WatchLatency> = Vec::new();
    for repetition in 0..config.repetitions {
        for (watchers, runs) in [(1, &mut one_watcher), (WATCHERS, &mut many_watchers)] {
            eprintln!(
                "WatchStock, {watchers} watcher(s), {ADJUSTMENTS} adjustments (repetition {}/{})",
                repetition + 1,
                config.repetitions
            );
            runs.push(
                watch_stock::watch_latency(&fixtures, watchers, ADJUSTMENTS, interval).await?,
            );
        }
    }

    let loaded: Vec<(f64, f64)> = Service::ALL.iter().map(|s| stack.rss_mib(*s)).collect();
    let (_, echo_peak) = memory_mib(echo.id());
    let (_, pk_peak) = memory_mib(pk.id());
    drop((stack, echo, pk));
    tokio::task::spawn_blocking(move || cluster.stop()).await?;

    let mut md = String::new();
    let _ = writeln!(md, "# Benchmarks\n");
    let _ = writeln!(
        md,
        "Written by `just bench` (`backroom-loadgen bench`) on {}. The three services run as separate processes, as deployed. Every figure is the median of {} repetitions of {} s (after {} s warm-up), closed loop; ratios compare with baselines measured in the same run on the same machine.\n",
        chrono::Utc::now().format("%Y-%m-%d %H:%M UTC"),
        config.repetitions,
        config.duration.as_secs(),
        config.warmup.as_secs()
    );
    let _ = writeln!(md, "- Machine: {}", machine());
    let _ = writeln!(md, "- {}", command_version("rustc", "-V"));
    let _ = writeln!(
        md,
        "- tonic 0.14.9, diesel 2.3.14 + r2d2 0.8.10, argon2 0.6.0 (workspace pins)"
    );
    let _ = writeln!(
        md,
        "- Server, load generator and Postgres share the same cores.\n"
    );
    let _ = writeln!(md, "## Throughput and latency\n");
    let _ = writeln!(
        md,
        "| scenario | ok/s | vs baseline | p50 ms | p90 ms | p99 ms | max ms | errors | ok/s per repetition |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|---|---|---|");
    md.push_str(&row_line(
        "bare tonic echo (4 conn × 64 in flight)",
        &echo_m,
        None,
    ));
    md.push_str(&row_line(
        "bare diesel/r2d2 PK select (64 in flight)",
        &pk_m,
        None,
    ));
    md.push_str(&row_line(
        "GetProduct, authenticated + traced (64 in flight) vs PK select",
        &get_m,
        Some(&pk_m),
    ));
    md.push_str(&row_line("GetProduct vs bare echo", &get_m, Some(&echo_m)));
    md.push_str(&row_line(
        "GetProduct as REST JSON (`GET /v1/products/{sku}`, 64 in flight) vs gRPC GetProduct",
        &get_json_m,
        Some(&get_m),
    ));
    md.push_str(&row_line(
        "raw Argon2id hash, ≤ 1 per core (16 in flight)",
        &hash_m,
        None,
    ));
    md.push_str(&row_line(
        "Login (16 in flight) vs raw Argon2id",
        &login_m,
        Some(&hash_m),
    ));
    md.push_str(&row_line(
        "PlaceOrder end to end (32 in flight)",
        &order_m,
        None,
    ));
    let _ = writeln!(md, "\n## GetProduct during a login storm\n");
    let _ = writeln!(md, "| | p99 ms | ok/s |\n|---|---|---|");
    let _ = writeln!(
        md,
        "| GetProduct alone (16 in flight) | {:.2} | {:.0} |",
        quiet.row.p99_ms, quiet.row.throughput
    );
    let _ = writeln!(
        md,
        "| GetProduct during 32 concurrent logins ({:.0} logins/s) | {:.2} | {:.0} |",
        storm.1, storm.0.row.p99_ms, storm.0.row.throughput
    );
    let _ = writeln!(
        md,
        "\nRatio of p99 under storm to p99 alone: {:.2}×.",
        storm.0.row.p99_ms / quiet.row.p99_ms.max(f64::EPSILON)
    );
    let _ = writeln!(
        md,
        "\n## Reservation race: 200 concurrent single-unit reserves on 100 units\n"
    );
    let _ = writeln!(
        md,
        "| | attempts/s | successes | ratio |\n|---|---|---|---|"
    );
    let _ = writeln!(
        md,
        "| raw conditional UPDATE, diesel + r2d2 (pool 10) | {:.0} | {} | — |",
        raw.rate(),
        raw.successes
    );
    let _ = writeln!(
        md,
        "| ReserveStock through the service (4 connections) | {:.0} | {} (per repetition: {}) | {:.2}× |",
        reserve.rate(),
        reserve.successes,
        successes.join(" / "),
        reserve.rate() / raw.rate().max(f64::EPSILON)
    );
    let _ = writeln!(
        md,
        "\nFailures other than INSUFFICIENT_STOCK across all repetitions: {unexpected}."
    );
    let _ = writeln!(md, "\n## WatchStock: AdjustStock to the stream\n");
    let _ = writeln!(
        md,
        "| | p50 ms | p90 ms | p99 ms | max ms | adjustments per repetition | p50 ms per repetition |\n|---|---|---|---|---|---|---|"
    );
    let rows: [(String, Vec<&RpcStats>); 6] = [
        (
            "delivery, 1 watcher, back to back".into(),
            one_watcher.iter().map(|r| &r.back_to_back).collect(),
        ),
        (
            "delivery, 1 watcher, hub idle".into(),
            one_watcher.iter().map(|r| &r.after_idle).collect(),
        ),
        (
            format!("delivery, slowest of {WATCHERS} watchers, back to back"),
            many_watchers.iter().map(|r| &r.back_to_back).collect(),
        ),
        (
            format!("delivery, slowest of {WATCHERS} watchers, hub idle"),
            many_watchers.iter().map(|r| &r.after_idle).collect(),
        ),
        (
            "AdjustStock call alone, 1 watcher open".into(),
            one_watcher.iter().map(|r| &r.adjust).collect(),
        ),
        (
            format!("AdjustStock call alone, {WATCHERS} watchers open"),
            many_watchers.iter().map(|r| &r.adjust).collect(),
        ),
    ];
    for (name, runs) in &rows {
        md.push_str(&latency_line(name, runs));
    }
    let _ = writeln!(
        md,
        "\nPer repetition: a fresh SKU, its watchers' snapshots awaited, then {ADJUSTMENTS} sequential +1 AdjustStock calls (fresh request ids), half sent as soon as the previous one was delivered (back to back), half {} ms after (hub idle); a delivery runs from just before the call to the stream yielding the level at the version that call made. The hub does not poll: it reads the levels when inventory's event feed moves (every stock movement writes an outbox event, announced by Postgres NOTIFY) or a subscriber arrives, and its reads coalesce to at most one per {WATCH_INTERVAL_VAR}, {} ms in this run ({interval_source}), so a back-to-back change waits out the rest of the interval begun by the read that delivered the previous one.",
        (interval + IDLE_MARGIN).as_millis(),
        interval.as_millis()
    );
    let _ = writeln!(md, "\n## Memory and start-up\n");
    let _ = writeln!(
        md,
        "| process | RSS idle MiB | RSS after load MiB | peak RSS MiB |"
    );
    let _ = writeln!(md, "|---|---|---|---|");
    for (n, name) in ["backroom-account", "backroom-inventory", "backroom-payment"]
        .iter()
        .enumerate()
    {
        let _ = writeln!(
            md,
            "| `{name}` | {:.1} | {:.1} | {:.1} |",
            idle[n], loaded[n].0, loaded[n].1
        );
    }
    let _ = writeln!(md, "| bare echo baseline | — | — | {echo_peak:.1} |");
    let _ = writeln!(md, "| bare PK-select baseline | — | — | {pk_peak:.1} |");
    let _ = writeln!(
        md,
        "\nTime from process start to SERVING (Postgres already running, migrations included): account {:.0} ms, inventory {:.0} ms, payment {:.0} ms.",
        to_serving[0].as_secs_f64() * 1000.0,
        to_serving[1].as_secs_f64() * 1000.0,
        to_serving[2].as_secs_f64() * 1000.0
    );
    // Hand-written analysis of the shortfalls, kept with the tool.
    md.push('\n');
    md.push_str(include_str!("../BENCH_NOTES.md"));
    std::fs::write(&config.out, md)
        .with_context(|| format!("cannot write {}", config.out.display()))?;
    eprintln!("wrote {}", config.out.display());
    Ok(())
}

/// The directory of the running executable (to find sibling binaries).
pub fn sibling(name: &str) -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(Path::to_path_buf))
        .unwrap_or_default()
        .join(name)
}
