//! The test kit (feature `testing`): a throwaway Postgres cluster, a fresh
//! database per test, and servers on `127.0.0.1:0` with connected channels.
//!
//! Layout:
//! - [`PostgresCluster`]: `initdb` + `pg_ctl` from the machine's PostgreSQL
//!   binaries in a temp dir, on a free loopback port, as user `postgres` when
//!   running as root (Postgres refuses root). A reaper process removes the
//!   cluster when the owning process exits, however it exits. `backroom up`
//!   uses the same type.
//! - [`shared_cluster`]: one cluster per test process, started on first use,
//!   unless `BACKROOM_TEST_DATABASE_URL` points at a server to use instead.
//! - [`TestDb`]: a fresh database per test, so tests run in parallel;
//!   [`attempt_statement`], [`assert_accepted`] and
//!   [`assert_refused_for_privilege`] for what a role may do.
//! - [`TestServer`]: serves a [`GrpcServer`] on `127.0.0.1:0`.

use std::{
    net::SocketAddr,
    os::unix::{fs::MetadataExt as _, process::CommandExt as _},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, Stdio},
    sync::{Mutex, OnceLock},
};

use anyhow::{Context as _, bail};
use diesel::connection::SimpleConnection as _;
use diesel_migrations::EmbeddedMigrations;

use crate::{
    client::{self, ClientConfig, TracedChannel},
    config::DbConfig,
    db,
    server::{GrpcServer, Health},
};

/// Where PostgreSQL's server binaries are, or why none were found.
fn find_bindir() -> anyhow::Result<PathBuf> {
    let has_initdb = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    if let Some(dir) = std::env::var_os("BACKROOM_PG_BINDIR") {
        let dir = PathBuf::from(dir);
        if has_initdb(&dir) {
            return Ok(dir);
        }
        bail!("BACKROOM_PG_BINDIR={} has no initdb/pg_ctl", dir.display());
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if has_initdb(&dir) {
            return Ok(dir);
        }
    }
    // Debian/Ubuntu keep server binaries off PATH, one dir per major version.
    if let Ok(entries) = std::fs::read_dir("/usr/lib/postgresql") {
        let mut versions: Vec<(u32, PathBuf)> = entries
            .filter_map(Result::ok)
            .filter_map(|e| {
                let major = e.file_name().to_str()?.parse::<u32>().ok()?;
                Some((major, e.path().join("bin")))
            })
            .filter(|(_, dir)| has_initdb(dir))
            .collect();
        versions.sort();
        if let Some((_, dir)) = versions.pop() {
            return Ok(dir);
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            if has_initdb(&dir) {
                return Ok(dir);
            }
        }
    }
    bail!(
        "PostgreSQL server binaries (initdb, pg_ctl) not found. Install the PostgreSQL \
         server (Debian/Ubuntu: `apt-get install postgresql`; macOS: `brew install postgresql`), \
         or set BACKROOM_PG_BINDIR to their directory, or set DATABASE_URL \
         (BACKROOM_TEST_DATABASE_URL for tests) to use a running server"
    )
}

/// Runs commands as `postgres` when we are root, as ourselves otherwise.
#[derive(Debug, Clone)]
struct RunAs {
    as_postgres: bool,
}

impl RunAs {
    fn detect() -> Self {
        // /proc/self is owned by the effective uid.
        let euid = std::fs::metadata("/proc/self")
            .map(|m| m.uid())
            .unwrap_or(1);
        Self {
            as_postgres: euid == 0,
        }
    }

    fn command(&self, program: &Path) -> Command {
        if self.as_postgres {
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", "postgres", "--"]).arg(program);
            cmd
        } else {
            Command::new(program)
        }
    }

    fn shell_prefix(&self) -> &'static str {
        if self.as_postgres {
            "runuser -u postgres -- "
        } else {
            ""
        }
    }

    fn give_dir(&self, dir: &Path) -> anyhow::Result<()> {
        if self.as_postgres {
            let id = |flag: &str| -> anyhow::Result<u32> {
                let out = Command::new("id").args([flag, "postgres"]).output()?;
                String::from_utf8_lossy(&out.stdout)
                    .trim()
                    .parse()
                    .context("running as root, but there is no `postgres` user to run Postgres as")
            };
            std::os::unix::fs::chown(dir, Some(id("-u")?), Some(id("-g")?))?;
        }
        Ok(())
    }
}

fn run(mut cmd: Command, what: &str) -> anyhow::Result<()> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A throwaway Postgres cluster in a temp dir. Stopped and removed on
/// [`PostgresCluster::stop`], on drop, or — through the reaper — when the
/// process exits in any way, including a panic or SIGKILL.
#[derive(Debug)]
pub struct PostgresCluster {
    dir: PathBuf,
    bindir: PathBuf,
    run_as: RunAs,
    /// fsync and synchronous commit on.
    durable: bool,
    port: u16,
    /// Closing this pipe (our exit) tells the reaper to stop the cluster.
    reaper_pipe: Option<ChildStdin>,
    reaper: Option<Child>,
}

impl PostgresCluster {
    /// initdb + start. Takes a second or two. Commits are not durable
    /// (fsync and synchronous commit off: fast tests); see
    /// [`Self::start_durable`].
    pub fn start() -> anyhow::Result<Self> {
        Self::start_with(false)
    }

    /// A cluster that keeps every acknowledged commit across a crash, as
    /// production does: for tests that kill Postgres and count writes.
    pub fn start_durable() -> anyhow::Result<Self> {
        Self::start_with(true)
    }

    fn start_with(durable: bool) -> anyhow::Result<Self> {
        let bindir = find_bindir()?;
        let run_as = RunAs::detect();
        let dir = tempfile::Builder::new()
            .prefix("backroom-pg-")
            .tempdir()?
            .keep();
        run_as.give_dir(&dir)?;
        let data = dir.join("data");

        // The reaper first, so even a failed start is cleaned up.
        let script = format!(
            "cat >/dev/null; {prefix}'{pg_ctl}' -D '{data}' -m immediate stop >/dev/null 2>&1; rm -rf '{dir}'",
            prefix = run_as.shell_prefix(),
            pg_ctl = bindir.join("pg_ctl").display(),
            data = data.display(),
            dir = dir.display(),
        );
        let mut reaper = Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own process group: a ctrl-c aimed at us must not kill it.
            .process_group(0)
            .spawn()
            .context("cannot spawn the cluster reaper")?;
        let reaper_pipe = reaper.stdin.take();

        let mut initdb = run_as.command(&bindir.join("initdb"));
        initdb.arg("-D").arg(&data).args([
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        ]);
        let mut cluster = Self {
            dir,
            bindir,
            run_as,
            durable,
            port: 0,
            reaper_pipe,
            reaper: Some(reaper),
        };
        run(initdb, "initdb")?;

        let mut last_error = None;
        for _ in 0..3 {
            let port = free_port()?;
            match cluster.pg_ctl_start(port) {
                Ok(()) => {
                    cluster.port = port;
                    return Ok(cluster);
                }
                // Most likely the port was taken between probe and bind.
                Err(err) => last_error = Some(err),
            }
        }
        let log = std::fs::read_to_string(cluster.dir.join("postgres.log")).unwrap_or_default();
        Err(last_error
            .unwrap_or_else(|| anyhow::anyhow!("pg_ctl start failed"))
            .context(log))
    }

    fn pg_ctl_start(&self, port: u16) -> anyhow::Result<()> {
        let speed = if self.durable {
            ""
        } else {
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        };
        let options = format!(
            "-c listen_addresses=127.0.0.1 -p {port} -k '{sock}' {speed} -c max_connections=500 \
             -c lc_messages=C -c shared_buffers=128MB",
            sock = self.dir.display()
        );
        let mut pg_ctl = self.run_as.command(&self.bindir.join("pg_ctl"));
        pg_ctl
            .arg("-D")
            .arg(self.dir.join("data"))
            .arg("-l")
            .arg(self.dir.join("postgres.log"))
            .args(["-w", "-t", "60", "-o", &options, "start"]);
        run(pg_ctl, "pg_ctl start")
    }

    /// Stops the server abruptly (`-m immediate`, like a crash or an
    /// outage), keeping its data: fault tests call this, then [`Self::resume`].
    pub fn pause(&self) -> anyhow::Result<()> {
        let mut pg_ctl = self.run_as.command(&self.bindir.join("pg_ctl"));
        pg_ctl
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-m", "immediate", "-w", "stop"]);
        run(pg_ctl, "pg_ctl stop")
    }

    /// Starts the server again on the same port after [`Self::pause`].
    pub fn resume(&self) -> anyhow::Result<()> {
        self.pg_ctl_start(self.port)
    }

    /// Superuser URL of database `name`.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops the cluster and removes its directory now.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if self.port != 0 {
            let mut pg_ctl = self.run_as.command(&self.bindir.join("pg_ctl"));
            pg_ctl
                .arg("-D")
                .arg(self.dir.join("data"))
                .args(["-m", "fast", "-w", "stop"]);
            if let Err(err) = run(pg_ctl, "pg_ctl stop") {
                eprintln!("{err:#}");
            }
            self.port = 0;
        }
        // Closing the pipe lets the reaper remove the directory; wait for it
        // so nothing is left behind when we return.
        drop(self.reaper_pipe.take());
        if let Some(mut reaper) = self.reaper.take() {
            let _ = reaper.wait();
        }
    }
}

impl Drop for PostgresCluster {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The admin (superuser) URL of the server tests use: the one named by
/// `BACKROOM_TEST_DATABASE_URL`, or a cluster this process starts on first
/// use. Statics are never dropped, so the reaper stops that cluster when the
/// test process exits.
pub fn admin_url(database: &str) -> String {
    static CLUSTER: OnceLock<Result<Mutex<PostgresCluster>, String>> = OnceLock::new();
    if let Ok(url) = std::env::var("BACKROOM_TEST_DATABASE_URL") {
        let mut url = url::Url::parse(&url).expect("BACKROOM_TEST_DATABASE_URL is not a URL");
        url.set_path(database);
        return url.into();
    }
    let cluster = CLUSTER.get_or_init(|| {
        PostgresCluster::start()
            .map(Mutex::new)
            .map_err(|err| format!("{err:#}"))
    });
    match cluster {
        // The lock guards nothing but the read of the port.
        Ok(cluster) => cluster
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .url(database),
        Err(err) => panic!("cannot start the test Postgres cluster: {err}"),
    }
}

/// A fresh, empty database on the test server, named `t_<uuid>`.
#[derive(Debug, Clone)]
pub struct TestDb {
    /// Database name.
    pub name: String,
}

impl TestDb {
    /// Creates the database (on the blocking pool).
    pub async fn create() -> Self {
        tokio::task::spawn_blocking(|| {
            let name = format!("t_{}", uuid::Uuid::new_v4().simple());
            let mut admin = db::connect(&admin_url("postgres")).expect("connect to test Postgres");
            admin
                .batch_execute(&format!("CREATE DATABASE {name}"))
                .expect("create test database");
            Self { name }
        })
        .await
        .expect("create test database task")
    }

    /// Superuser URL of this database.
    pub fn admin_url(&self) -> String {
        admin_url(&self.name)
    }

    /// Provisions `service`'s two roles and its schema in this database
    /// ([`db::provision`]), runs its migrations as the migrator, and returns
    /// the config the service runs with (a small pool): `database_url` as
    /// its runtime role, `migration_database_url` as its migrator.
    pub async fn service_config(
        &self,
        service: &'static str,
        migrations: EmbeddedMigrations,
    ) -> DbConfig {
        // Provisioning ALTERs the cluster-wide roles: run concurrently from
        // parallel tests it fails with "tuple concurrently updated".
        static PROVISION: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
        let _one_at_a_time = PROVISION.lock().await;
        let admin = self.admin_url();
        let mut config = tokio::task::spawn_blocking(move || {
            let config = db::provision(&admin, service, &db::RolePasswords::default())
                .expect("provision service");
            let migrator = config
                .migration_database_url
                .as_ref()
                .expect("provision returns the migrator's URL");
            // run_migrations, not db::migrate: that one logs the versions
            // applied, and tests that scan their own logs for Luhn-valid
            // digit runs would find a 14-digit version among them.
            let mut conn = db::connect(migrator.expose()).expect("connect as the migrator");
            db::run_migrations(&mut conn, service, migrations).expect("run migrations");
            config
        })
        .await
        .expect("provision task");
        config.pool_size = 4;
        config.pool_min_idle = 1;
        config
    }
}

/// Runs `statement` as `pool`'s role in a transaction that is always rolled
/// back, so a statement that does get through cannot affect the next one:
/// `Ok` if Postgres accepted it, `Err(message)` if it refused. For tests of
/// what a role may do.
pub async fn attempt_statement(pool: &db::Pool, statement: &'static str) -> Result<(), String> {
    use diesel::{Connection as _, result::Error};
    pool.run(move |conn| {
        let outcome = conn.transaction::<(), Error, _>(|conn| {
            conn.batch_execute(statement)?;
            Err(Error::RollbackTransaction)
        });
        Ok::<_, db::DbError>(match outcome {
            Ok(()) | Err(Error::RollbackTransaction) => Ok(()),
            Err(refused) => Err(refused.to_string()),
        })
    })
    .await
    .expect("a pooled connection")
}

/// Whether `message` is Postgres refusing on privilege grounds (SQLSTATE
/// 42501: "permission denied …", "must be owner of …"), as opposed to a
/// trigger or constraint saying no. The test clusters run with
/// `lc_messages=C`.
pub fn is_privilege_refusal(message: &str) -> bool {
    message.starts_with("permission denied") || message.starts_with("must be owner of")
}

/// Asserts that `pool`'s role may run every one of `statements` (each
/// rolled back), listing every refusal.
pub async fn assert_accepted(pool: &db::Pool, statements: &[&'static str]) {
    let mut refused = Vec::new();
    for statement in statements {
        if let Err(message) = attempt_statement(pool, statement).await {
            refused.push(format!("{statement}: {message}"));
        }
    }
    assert!(refused.is_empty(), "refused:\n{}", refused.join("\n"));
}

/// Asserts that Postgres refuses every one of `statements` to `pool`'s role
/// on privilege grounds ([`is_privilege_refusal`]), listing every statement
/// that got through or was refused for another reason.
pub async fn assert_refused_for_privilege(pool: &db::Pool, statements: &[&'static str]) {
    let mut not_refused = Vec::new();
    for statement in statements {
        match attempt_statement(pool, statement).await {
            Err(message) if is_privilege_refusal(&message) => {}
            other => not_refused.push(format!("{statement}: {other:?}")),
        }
    }
    assert!(
        not_refused.is_empty(),
        "not refused on privilege grounds:\n{}",
        not_refused.join("\n")
    );
}

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

/// The repository root (the directory holding `deploy/`), found from the
/// calling crate's manifest directory.
fn repo_root() -> PathBuf {
    let mut dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    while !dir.join("deploy").is_dir() {
        assert!(
            dir.pop(),
            "no deploy/ directory above {}",
            env!("CARGO_MANIFEST_DIR")
        );
    }
    dir
}

/// Asserts that the Kubernetes manifests and the binary agree, so neither
/// can drift from the other:
/// - every variable `deploy/env-contract.yaml` gives the service (serving,
///   and its `migrate` containers) is one the binary reads, and every
///   variable the binary requires is given to both;
/// - the serving container does not get the migration URL (the schema
///   owner's credentials), and the `migrate` containers do;
/// - every value in the base ConfigMap (`deploy/k8s/base/<svc>/config.env`)
///   parses with the binary's own parser;
/// - the listen port in that ConfigMap is the Deployment's `grpc`
///   containerPort and the port of its gRPC probes, and the probes ask for
///   `health_service` (or the whole server).
pub fn check_deploy_contract(service: &str, command: clap::Command, health_service: &str) {
    use serde_norway::Value;
    let root = repo_root();
    let read = |path: PathBuf| {
        std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
    };

    // 1. Variable names, both ways.
    let contract: Value = serde_norway::from_str(&read(root.join("deploy/env-contract.yaml")))
        .expect("contract YAML");
    let names = |list: &Value, what: &str| -> Vec<String> {
        list.as_sequence()
            .unwrap_or_else(|| panic!("env-contract.yaml has no {service}.{what}"))
            .iter()
            .map(|v| v.as_str().expect("variable names are strings").to_owned())
            .collect()
    };
    let configmap = names(&contract[service]["configmap"], "configmap");
    let provided: Vec<String> = configmap
        .iter()
        .cloned()
        .chain(names(&contract[service]["secret"], "secret"))
        .collect();
    let migrate_provided: Vec<String> = configmap
        .iter()
        .cloned()
        .chain(names(
            &contract[service]["migrate"]["secret"],
            "migrate.secret",
        ))
        .collect();
    let args: Vec<(String, clap::Arg)> = command
        .get_arguments()
        .filter_map(|arg| Some((arg.get_env()?.to_str()?.to_owned(), arg.clone())))
        .collect();
    for (container, given) in [("serve", &provided), ("migrate", &migrate_provided)] {
        for name in given {
            assert!(
                args.iter().any(|(env, _)| env == name),
                "deploy gives {service} ({container}) {name}, which the binary does not read"
            );
        }
        for (env, arg) in &args {
            if arg.is_required_set() {
                assert!(
                    given.contains(env),
                    "the binary requires {env}, which deploy does not give {service} ({container})"
                );
            }
        }
    }
    const MIGRATION_URL: &str = "BACKROOM_MIGRATION_DATABASE_URL";
    assert!(
        !provided.iter().any(|name| name == MIGRATION_URL),
        "{service} would serve holding {MIGRATION_URL}, the schema owner's credentials"
    );
    assert!(
        migrate_provided.iter().any(|name| name == MIGRATION_URL),
        "{service}'s migrate containers do not get {MIGRATION_URL}"
    );

    // 2. Every ConfigMap value parses with the binary's parser.
    let config_env = read(root.join(format!("deploy/k8s/base/{service}/config.env")));
    let mut argv = vec![service.to_owned()];
    let mut listen_port = None;
    for line in config_env
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (name, value) = line.split_once('=').expect("NAME=value lines");
        let (_, arg) = args
            .iter()
            .find(|(env, _)| env == name)
            .unwrap_or_else(|| panic!("config.env sets {name}, which {service} does not read"));
        let long = arg
            .get_long()
            .expect("every env-backed flag has a long name");
        argv.push(format!("--{long}={value}"));
        if name == "BACKROOM_LISTEN_ADDR" {
            listen_port = value.rsplit(':').next().and_then(|p| p.parse::<u64>().ok());
        }
    }
    // Required secrets get placeholders: only the ConfigMap values are checked.
    for (env, arg) in &args {
        if arg.is_required_set() && !config_env.contains(&format!("{env}=")) {
            argv.push(format!(
                "--{}=placeholder",
                arg.get_long().expect("long name")
            ));
        }
    }
    if let Err(err) = command.clone().try_get_matches_from(&argv) {
        panic!("the base ConfigMap of {service} does not parse: {err}");
    }

    // 3. Ports and probes.
    let listen_port = listen_port.expect("config.env sets BACKROOM_LISTEN_ADDR");
    let deployment: Value = serde_norway::from_str(&read(
        root.join(format!("deploy/k8s/base/{service}/deployment.yaml")),
    ))
    .expect("deployment YAML");
    let containers = deployment["spec"]["template"]["spec"]["containers"]
        .as_sequence()
        .expect("containers");
    let container = containers
        .iter()
        .find(|c| c["name"].as_str() == Some(service))
        .unwrap_or_else(|| panic!("no container named {service}"));
    let grpc_port = container["ports"]
        .as_sequence()
        .expect("ports")
        .iter()
        .find(|p| p["name"].as_str() == Some("grpc"))
        .and_then(|p| p["containerPort"].as_u64())
        .expect("a containerPort named grpc");
    assert_eq!(
        grpc_port, listen_port,
        "containerPort grpc vs BACKROOM_LISTEN_ADDR"
    );
    let mut grpc_probes = 0;
    for probe in ["startupProbe", "readinessProbe", "livenessProbe"] {
        let grpc = &container[probe]["grpc"];
        if grpc.is_null() {
            continue;
        }
        grpc_probes += 1;
        assert_eq!(grpc["port"].as_u64(), Some(listen_port), "{probe} port");
        let asked = grpc["service"].as_str().unwrap_or("");
        assert!(
            asked.is_empty() || asked == health_service,
            "{probe} asks for {asked:?}, the server reports {health_service:?}"
        );
    }
    assert!(
        grpc_probes >= 2,
        "readiness and startup use native gRPC probes"
    );
}

/// An in-process OTLP/gRPC trace receiver: point `OTEL_EXPORTER_OTLP_ENDPOINT`
/// (or [`crate::config::TelemetryConfig::otlp_endpoint`]) at
/// [`SpanCollector::serve`]'s server and read what was exported.
#[derive(Debug, Clone, Default)]
pub struct SpanCollector {
    spans: std::sync::Arc<Mutex<Vec<opentelemetry_proto::tonic::trace::v1::Span>>>,
}

#[tonic::async_trait]
impl opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceService
    for SpanCollector
{
    async fn export(
        &self,
        request: tonic::Request<
            opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest,
        >,
    ) -> Result<
        tonic::Response<
            opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse,
        >,
        tonic::Status,
    > {
        let mut spans = self.spans.lock().unwrap_or_else(|e| e.into_inner());
        for resource in request.into_inner().resource_spans {
            for scope in resource.scope_spans {
                spans.extend(scope.spans);
            }
        }
        Ok(tonic::Response::new(
            opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse {
                partial_success: None,
            },
        ))
    }
}

impl SpanCollector {
    /// Serves a collector on 127.0.0.1:0.
    pub async fn serve() -> (Self, TestServer) {
        let collector = Self::default();
        let server = TestServer::spawn(GrpcServer::new(crate::config::ServerConfig::default()).add_service(
            opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceServiceServer::new(
                collector.clone(),
            ),
        ))
        .await;
        (collector, server)
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<opentelemetry_proto::tonic::trace::v1::Span> {
        self.spans.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// A string or integer attribute of an exported span.
pub fn span_attribute(
    span: &opentelemetry_proto::tonic::trace::v1::Span,
    key: &str,
) -> Option<String> {
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref()?.value.as_ref())
        .map(|value| match value {
            Value::StringValue(s) => s.clone(),
            Value::IntValue(i) => i.to_string(),
            other => format!("{other:?}"),
        })
}

/// Lower-case hex of an id.
pub fn hex_id(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Captures every log line of the process (trace level, JSON, with span
/// fields and span events) so a test can search it for secrets. Installs the
/// global subscriber: one per test binary.
#[derive(Debug, Clone, Default)]
pub struct LogCapture(std::sync::Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogCapture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogCapture {
    type Writer = LogCapture;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

impl LogCapture {
    /// Installs the capturing global subscriber.
    pub fn install() -> Self {
        let capture = Self::default();
        tracing_subscriber::fmt()
            .json()
            .with_span_list(true)
            .with_span_events(tracing_subscriber::fmt::format::FmtSpan::FULL)
            .with_env_filter("trace")
            .with_writer(capture.clone())
            .init();
        capture
    }

    /// Everything logged so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    }
}
