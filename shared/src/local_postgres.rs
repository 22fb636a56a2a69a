//! A throwaway local Postgres cluster (feature `local-postgres`):
//! `initdb` + `pg_ctl` from the machine's PostgreSQL binaries in a temp dir,
//! on a free loopback port, as user `postgres` when running as root
//! (Postgres refuses root). A reaper process removes the cluster when the
//! owning process exits, however it exits. `backroom up` runs on one; the
//! test kit (feature `testing`) starts one per test process.

use std::{
    os::unix::{fs::MetadataExt as _, process::CommandExt as _},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, Stdio},
};

use anyhow::{Context as _, bail};

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
