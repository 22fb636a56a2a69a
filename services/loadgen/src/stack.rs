//! The three service binaries (`backroom-account`, `backroom-inventory`,
//! `backroom-payment`, each `serve`) as child processes against one
//! database, as deployed: each with its own schema, served as its runtime
//! role and migrated as the schema's owner, its own port,
//! talking to the others over gRPC. The bench measures them; fault tests
//! kill them with SIGKILL and start them again on the same port with the
//! same environment.
//!
//! Layout: [`Service`] names a process; [`StackOptions`] says where logs go
//! and what extra environment each service gets; [`Stack`] starts, kills,
//! restarts and measures them; [`ChildGuard`] and [`memory_mib`] serve any
//! child process (the bench's baselines too).

use std::{
    fs::OpenOptions,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::fixtures::Suite;

/// Longest wait for a (re)started process to answer SERVING: a debug build
/// runs its migrations first.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// One of the three service processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Service {
    /// `backroom-account`.
    Account,
    /// `backroom-inventory`.
    Inventory,
    /// `backroom-payment` (also runs the checkout saga).
    Payment,
}

impl Service {
    /// Every service, in start order (account first: the others fetch its
    /// JWKS and service tokens).
    pub const ALL: [Service; 3] = [Service::Account, Service::Inventory, Service::Payment];

    /// `account`, `inventory` or `payment`: the schema and role suffix.
    pub fn name(self) -> &'static str {
        match self {
            Service::Account => "account",
            Service::Inventory => "inventory",
            Service::Payment => "payment",
        }
    }

    /// The binary's file name.
    pub fn binary(self) -> String {
        format!("backroom-{}", self.name())
    }

    fn index(self) -> usize {
        match self {
            Service::Account => 0,
            Service::Inventory => 1,
            Service::Payment => 2,
        }
    }
}

/// How to run the stack.
#[derive(Debug, Clone)]
pub struct StackOptions {
    /// Where each process's stdout and stderr go: appended (across
    /// restarts) to `<log_dir>/<service>.log`. `None`: discarded.
    pub log_dir: Option<PathBuf>,
    /// `RUST_LOG` of every process.
    pub rust_log: String,
    /// Extra environment, applied after the defaults (so it overrides them).
    pub env: Vec<(Service, String, String)>,
}

impl Default for StackOptions {
    fn default() -> Self {
        Self {
            log_dir: None,
            rust_log: "warn".into(),
            env: Vec::new(),
        }
    }
}

impl StackOptions {
    /// Turns the per-client limits off (account's rate limits, every
    /// service's per-client share of its concurrency limit): load from one address
    /// measures capacity (the bench) or exercises recovery (the fault
    /// tests), not the limiter.
    pub fn without_rate_limits(self) -> Self {
        Service::ALL.iter().fold(
            self.with_env(Service::Account, "BACKROOM_RATE_LIMIT_PER_SEC", "0"),
            |options, service| {
                options.with_env(*service, "BACKROOM_CONCURRENCY_LIMIT_PER_CLIENT", "0")
            },
        )
    }

    /// Adds `key=value` to `service`'s environment.
    pub fn with_env(mut self, service: Service, key: &str, value: impl Into<String>) -> Self {
        self.env.push((service, key.to_owned(), value.into()));
        self
    }
}

/// A child process, stopped on drop: SIGINT (a graceful shutdown), then
/// SIGKILL after 10 s.
#[derive(Debug)]
pub struct ChildGuard(Child);

impl ChildGuard {
    /// Takes ownership of a spawned child.
    pub fn new(child: Child) -> Self {
        Self(child)
    }

    /// Its process id.
    pub fn id(&self) -> u32 {
        self.0.id()
    }

    /// SIGKILL, and reaps it.
    pub fn kill9(mut self) -> std::io::Result<()> {
        self.0.kill()?;
        self.0.wait().map(drop)
    }

    /// Whether it has exited (and how).
    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.0.try_wait().ok().flatten()
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        // Reaped already (killed, or exited): its pid may belong to someone
        // else by now, so signal nothing.
        if self.exited().is_some() {
            return;
        }
        let _ = Command::new("kill")
            .arg("-INT")
            .arg(self.0.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.exited().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A free TCP port on 127.0.0.1 (free when probed).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Resident and peak memory of a process, in MiB, from /proc (0 when it is
/// gone).
pub fn memory_mib(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Waits until `endpoint` answers health SERVING; returns how long it took
/// from `since`.
pub async fn wait_serving(
    endpoint: &str,
    since: Instant,
    timeout: Duration,
) -> anyhow::Result<Duration> {
    let deadline = Instant::now() + timeout;
    loop {
        if serving(endpoint).await {
            return Ok(since.elapsed());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{endpoint} not SERVING within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn serving(endpoint: &str) -> bool {
    let Ok(endpoint) = tonic::transport::Endpoint::from_shared(endpoint.to_owned()) else {
        return false;
    };
    let Ok(channel) = endpoint
        .connect_timeout(Duration::from_secs(1))
        .timeout(Duration::from_secs(2))
        .connect()
        .await
    else {
        return false;
    };
    HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .is_ok_and(|reply| reply.into_inner().status == ServingStatus::Serving as i32)
}

/// The three services running as child processes.
#[derive(Debug)]
pub struct Stack {
    bin_dir: PathBuf,
    ports: [u16; 3],
    /// Each service's whole environment (defaults + options), kept for
    /// restarts.
    env: [Vec<(String, String)>; 3],
    log_dir: Option<PathBuf>,
    children: [Option<ChildGuard>; 3],
    suite: Suite,
    card_fingerprint_key: String,
    signing_keys_pem: String,
    to_serving: [Duration; 3],
}

impl Stack {
    /// Provisions each service's two roles and schema in the database of
    /// `admin_url` (a superuser URL), starts the binaries found in
    /// `bin_dir` on free ports, and waits until each answers SERVING.
    pub async fn start(
        admin_url: &str,
        bin_dir: &Path,
        options: StackOptions,
    ) -> anyhow::Result<Self> {
        for service in Service::ALL {
            let binary = bin_dir.join(service.binary());
            anyhow::ensure!(binary.is_file(), "{} does not exist", binary.display());
        }
        let admin_db = admin_url.to_owned();
        let configs = tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<_>> {
            Service::ALL
                .iter()
                .map(|service| {
                    backroom_shared::db::provision(
                        &admin_db,
                        service.name(),
                        &backroom_shared::db::RolePasswords::default(),
                    )
                })
                .collect()
        })
        .await??;
        let ports = [free_port()?, free_port()?, free_port()?];
        let endpoint = |service: Service| format!("http://127.0.0.1:{}", ports[service.index()]);

        let admin_password = uuid::Uuid::new_v4().simple().to_string();
        let payment_client_secret = uuid::Uuid::new_v4().simple().to_string();
        let inventory_client_secret = uuid::Uuid::new_v4().simple().to_string();
        let card_fingerprint_key = uuid::Uuid::new_v4().simple().to_string().repeat(2);
        let signing_keys_pem = backroom_account::domain::tokens::SigningKeys::generate_pem();
        let mut env: [Vec<(String, String)>; 3] = Default::default();
        for service in Service::ALL {
            let vars = &mut env[service.index()];
            let mut set = |key: &str, value: String| vars.push((key.to_owned(), value));
            // Served as the runtime role; migrated at start-up
            // (RUN_MIGRATIONS defaults to true) as the schema's owner.
            let db = &configs[service.index()];
            set("DATABASE_URL", db.database_url.expose().to_owned());
            if let Some(migration_url) = &db.migration_database_url {
                set(
                    "BACKROOM_MIGRATION_DATABASE_URL",
                    migration_url.expose().to_owned(),
                );
            }
            set(
                "BACKROOM_LISTEN_ADDR",
                format!("127.0.0.1:{}", ports[service.index()]),
            );
            set("BACKROOM_ACCOUNT_ENDPOINT", endpoint(Service::Account));
            set("RUST_LOG", options.rust_log.clone());
            set("BACKROOM_LOG_FORMAT", "json".into());
            match service {
                Service::Account => {
                    set("BACKROOM_JWT_SIGNING_KEYS", signing_keys_pem.clone());
                    set(
                        "BACKROOM_BOOTSTRAP_ADMIN_EMAIL",
                        "admin@backroom.local".into(),
                    );
                    set("BACKROOM_BOOTSTRAP_ADMIN_PASSWORD", admin_password.clone());
                    set(
                        "BACKROOM_SERVICE_CLIENTS",
                        format!(
                            "payment:{payment_client_secret},inventory:{inventory_client_secret}"
                        ),
                    );
                    set(
                        "BACKROOM_SERVICE_CLIENT_AUDIENCES",
                        "payment=backroom.account|backroom.inventory|backroom.payment,inventory=backroom.account".into(),
                    );
                }
                Service::Inventory => {
                    set("BACKROOM_SERVICE_CLIENT_ID", "inventory".into());
                    set(
                        "BACKROOM_SERVICE_CLIENT_SECRET",
                        inventory_client_secret.clone(),
                    );
                }
                Service::Payment => {
                    // A test and benchmark stack: the simulator, named
                    // explicitly (the binary has no default).
                    set("BACKROOM_PAYMENT_PROCESSOR", "simulator".into());
                    set("BACKROOM_INVENTORY_ENDPOINT", endpoint(Service::Inventory));
                    set("BACKROOM_SERVICE_CLIENT_ID", "payment".into());
                    set(
                        "BACKROOM_SERVICE_CLIENT_SECRET",
                        payment_client_secret.clone(),
                    );
                    set(
                        "BACKROOM_CARD_FINGERPRINT_KEY",
                        card_fingerprint_key.clone(),
                    );
                }
            }
        }
        for (service, key, value) in options.env {
            env[service.index()].push((key, value));
        }
        if let Some(dir) = &options.log_dir {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }

        let mut stack = Self {
            bin_dir: bin_dir.to_owned(),
            ports,
            env,
            log_dir: options.log_dir,
            children: [None, None, None],
            suite: Suite {
                account: endpoint(Service::Account),
                inventory: endpoint(Service::Inventory),
                payment: endpoint(Service::Payment),
                admin_password,
                payment_client_secret,
            },
            card_fingerprint_key,
            signing_keys_pem,
            to_serving: [Duration::ZERO; 3],
        };
        let started = Instant::now();
        for service in Service::ALL {
            stack.spawn(service)?;
        }
        for service in Service::ALL {
            stack.to_serving[service.index()] = stack.wait_serving(service, started).await?;
        }
        Ok(stack)
    }

    fn spawn(&mut self, service: Service) -> anyhow::Result<()> {
        let binary = self.bin_dir.join(service.binary());
        let mut command = Command::new(&binary);
        command.arg("serve").stdin(Stdio::null());
        for (key, value) in &self.env[service.index()] {
            command.env(key, value);
        }
        match self.log_path(service) {
            Some(path) => {
                let log = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .with_context(|| format!("cannot open {}", path.display()))?;
                command.stdout(log.try_clone()?).stderr(log);
            }
            None => {
                command.stdout(Stdio::null()).stderr(Stdio::null());
            }
        }
        let child = command
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))?;
        self.children[service.index()] = Some(ChildGuard::new(child));
        Ok(())
    }

    /// Waits until `service` answers SERVING (time from `since`); fails at
    /// once if its process exits meanwhile.
    pub async fn wait_serving(
        &mut self,
        service: Service,
        since: Instant,
    ) -> anyhow::Result<Duration> {
        let endpoint = self.endpoint(service);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if serving(&endpoint).await {
                return Ok(since.elapsed());
            }
            if let Some(status) = self.children[service.index()]
                .as_mut()
                .and_then(ChildGuard::exited)
            {
                anyhow::bail!(
                    "{} exited ({status}) before SERVING{}",
                    service.binary(),
                    self.log_path(service)
                        .map(|p| format!("; its log: {}", p.display()))
                        .unwrap_or_default()
                );
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "{} not SERVING within {START_TIMEOUT:?}",
                service.binary()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILL of `service`'s process (no shutdown of any kind), reaped.
    pub fn kill9(&mut self, service: Service) -> anyhow::Result<()> {
        let child = self.children[service.index()]
            .take()
            .with_context(|| format!("{} is not running", service.binary()))?;
        child
            .kill9()
            .with_context(|| format!("cannot kill {}", service.binary()))
    }

    /// Starts `service` again on the same port with the same environment
    /// (after [`Self::kill9`]; a running process is killed first) and waits
    /// until it answers SERVING; returns how long that took.
    pub async fn restart(&mut self, service: Service) -> anyhow::Result<Duration> {
        if self.children[service.index()].is_some() {
            self.kill9(service)?;
        }
        let started = Instant::now();
        self.spawn(service)?;
        self.wait_serving(service, started).await
    }

    /// `http://127.0.0.1:<port>` of `service`.
    pub fn endpoint(&self, service: Service) -> String {
        format!("http://127.0.0.1:{}", self.ports[service.index()])
    }

    /// The process id of `service`, if it runs.
    pub fn pid(&self, service: Service) -> Option<u32> {
        self.children[service.index()].as_ref().map(ChildGuard::id)
    }

    /// Resident and peak memory of `service`'s process, MiB (0 if it is not
    /// running).
    pub fn rss_mib(&self, service: Service) -> (f64, f64) {
        self.pid(service).map_or((0.0, 0.0), memory_mib)
    }

    /// Time from the first start to SERVING of each service (migrations
    /// included), in [`Service::ALL`] order.
    pub fn to_serving(&self) -> [Duration; 3] {
        self.to_serving
    }

    /// The endpoints and credentials the fixtures need.
    pub fn suite(&self) -> Suite {
        self.suite.clone()
    }

    /// The value of `key` in `service`'s environment as its process sees it:
    /// the last one the stack set, else the one it inherits from this
    /// process; `None` if neither (the service's default applies).
    pub fn env_value(&self, service: Service, key: &str) -> Option<String> {
        self.env[service.index()]
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, value)| value.clone())
            .or_else(|| std::env::var(key).ok())
    }

    /// The log file of `service`, if logs are kept.
    pub fn log_path(&self, service: Service) -> Option<PathBuf> {
        self.log_dir
            .as_ref()
            .map(|dir| dir.join(format!("{}.log", service.name())))
    }

    /// Every secret the stack was started with, labelled: the admin
    /// password, the payment principal's secret, the card fingerprint key and
    /// the Ed25519 signing key (the whole PEM and each line of its body). A
    /// secret scan looks for each of them.
    pub fn secrets(&self) -> Vec<(String, String)> {
        let mut secrets = vec![
            (
                "bootstrap admin password".to_owned(),
                self.suite.admin_password.clone(),
            ),
            (
                "payment client secret".to_owned(),
                self.suite.payment_client_secret.clone(),
            ),
            (
                "card fingerprint key".to_owned(),
                self.card_fingerprint_key.clone(),
            ),
            (
                "JWT signing key (PEM)".to_owned(),
                self.signing_keys_pem.clone(),
            ),
        ];
        secrets.extend(
            self.signing_keys_pem
                .lines()
                .map(str::trim)
                .filter(|line| !line.is_empty() && !line.starts_with("-----"))
                .map(|line| ("JWT signing key (PEM body)".to_owned(), line.to_owned())),
        );
        secrets
    }
}
