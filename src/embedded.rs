//! The embedded default database: when no `DATABASE_URL` is configured the gateway runs
//! a private Postgres cluster of its own (SPEC §2).
//!
//! This module owns everything about that cluster and nothing else:
//! - `<DATA_DIR>/postgres`, the cluster directory (initdb on first run, reused afterwards),
//! - `<DATA_DIR>/postgres.log`, the server log,
//! - the postmaster's life: started on a free `127.0.0.1` port, stopped on shutdown
//!   (or, best effort, when the handle is dropped without `stop`),
//! - the `domizan` database inside it.
//!
//! Applying migrations is the caller's job; it gets a URL from [`EmbeddedPostgres::database_url`].
//!
//! The binaries are the machine's own: `PG_BIN_DIR` if set, otherwise the Debian layout
//! `/usr/lib/postgresql/<version>/bin` (the version that created an existing cluster, or the
//! highest one for a new cluster), otherwise whatever `pg_ctl` is on `PATH`.
//!
//! Postgres refuses to run as root, so when the gateway is root every Postgres command runs
//! as the `postgres` system user and the cluster directory and log file belong to that user.

use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Output, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use sqlx::Connection;

/// Subdirectory of `DATA_DIR` holding the cluster.
const CLUSTER_DIR: &str = "postgres";
/// initdb works here and the result is renamed to [`CLUSTER_DIR`] only when complete, so a
/// crash during initdb never leaves a half-made cluster that later runs would try to start.
const INITDB_DIR: &str = "postgres.initdb-in-progress";
const LOG_FILE: &str = "postgres.log";
const DATABASE: &str = "domizan";
/// Seconds `pg_ctl` waits for start/stop to finish.
const PG_CTL_TIMEOUT_SECS: &str = "60";
/// A free port can be taken by someone else between probing it and the postmaster binding it.
const START_ATTEMPTS: usize = 3;

/// A running private Postgres cluster. Call [`EmbeddedPostgres::stop`] on shutdown.
#[derive(Debug)]
pub struct EmbeddedPostgres {
    cluster_dir: PathBuf,
    log_file: PathBuf,
    bin_dir: PathBuf,
    port: u16,
    /// `Some` when the gateway is root and Postgres must run as the `postgres` user.
    run_as: Option<Account>,
    /// Cleared by `stop` so that `Drop` does not stop the cluster a second time.
    running: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Account {
    uid: u32,
    gid: u32,
}

/// What the blocking preparation found out, handed to the async part of `start`.
struct Prepared {
    data_dir: PathBuf,
    cluster_dir: PathBuf,
    log_file: PathBuf,
    bin_dir: PathBuf,
    run_as: Option<Account>,
    needs_initdb: bool,
}

impl EmbeddedPostgres {
    /// Initialises `<data_dir>/postgres` on first run (initdb with trust auth for local
    /// connections only, UTF8, locale C), otherwise reuses it; starts it on a free 127.0.0.1
    /// port (listening only on 127.0.0.1, unix sockets disabled), waits until it accepts
    /// connections, and creates the database `domizan` if missing.
    pub async fn start(data_dir: &Path) -> Result<Self> {
        let data_dir = data_dir.to_path_buf();
        // Directory walking, chown and chmod are blocking file-system work.
        let prepared = tokio::task::spawn_blocking(move || prepare(&data_dir))
            .await
            .context("embedded Postgres: preparation task failed")??;

        if prepared.needs_initdb {
            initdb(&prepared).await?;
        }

        let mut pg = EmbeddedPostgres {
            cluster_dir: prepared.cluster_dir,
            log_file: prepared.log_file,
            bin_dir: prepared.bin_dir,
            port: 0,
            run_as: prepared.run_as,
            running: false,
        };

        // A previous gateway that crashed (or was killed) leaves its postmaster running on a
        // port we no longer know; stop it so we start one we control. A stale postmaster.pid
        // without a live process is not "running" here, and pg_ctl start copes with it.
        if pg.status().await? {
            tracing::warn!(cluster_dir = %pg.cluster_dir.display(),
                "embedded Postgres: a postmaster from a previous run is still running; stopping it");
            pg.pg_ctl_stop().await?;
        }

        pg.start_on_free_port().await?;
        pg.running = true;
        // From here on, an error drops `pg`, and Drop stops the postmaster we just started.
        ensure_database(pg.port).await?;
        Ok(pg)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `postgres://postgres@127.0.0.1:<port>/domizan`
    pub fn database_url(&self) -> String {
        url(self.port, DATABASE)
    }

    /// Fast shutdown (`pg_ctl stop -m fast`), waits for it.
    pub async fn stop(mut self) -> Result<()> {
        // Whatever happens below, Drop must not try again.
        self.running = false;
        if !self.status().await? {
            tracing::warn!(cluster_dir = %self.cluster_dir.display(), port = self.port,
                "embedded Postgres: already stopped");
            return Ok(());
        }
        self.pg_ctl_stop().await?;
        tracing::info!(cluster_dir = %self.cluster_dir.display(), port = self.port,
            "embedded Postgres stopped");
        Ok(())
    }

    /// A command for one of the Postgres binaries, as the right user.
    fn command(&self, program: &str) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(self.bin_dir.join(program));
        // Paths are absolute; "/" is a working directory the postgres user can always enter
        // (a root-only cwd makes initdb/pg_ctl fail to identify their current directory).
        cmd.current_dir("/").stdin(Stdio::null());
        if let Some(account) = self.run_as {
            // std drops supplementary groups (setgroups(0)) when switching uid as root.
            cmd.uid(account.uid).gid(account.gid);
        }
        cmd
    }

    /// Whether a postmaster is running on the cluster (`pg_ctl status`: 0 running, 3 not).
    async fn status(&self) -> Result<bool> {
        let out = self
            .command("pg_ctl")
            .arg("status")
            .arg("-D")
            .arg(&self.cluster_dir)
            .output()
            .await
            .context("embedded Postgres: cannot run pg_ctl status")?;
        match out.status.code() {
            Some(0) => Ok(true),
            Some(3) => Ok(false),
            _ => Err(command_error("pg_ctl status", &out, None)),
        }
    }

    async fn pg_ctl_stop(&self) -> Result<()> {
        let out = self
            .command("pg_ctl")
            .args(["stop", "-m", "fast", "-w", "-t", PG_CTL_TIMEOUT_SECS, "-D"])
            .arg(&self.cluster_dir)
            .output()
            .await
            .context("embedded Postgres: cannot run pg_ctl stop")?;
        if !out.status.success() {
            return Err(command_error("pg_ctl stop", &out, Some(&self.log_file)));
        }
        Ok(())
    }

    async fn start_on_free_port(&mut self) -> Result<()> {
        let mut attempt = 1;
        loop {
            self.port = free_port()?;
            let out = self
                .command("pg_ctl")
                .args(["start", "-w", "-t", PG_CTL_TIMEOUT_SECS, "-D"])
                .arg(&self.cluster_dir)
                .arg("-l")
                .arg(&self.log_file)
                // pg_ctl hands -o to the postmaster through a shell, hence `''` for an
                // empty socket directory list (= no unix sockets: nothing but loopback TCP
                // reaches the trust-authenticated cluster, and no socket path length limits).
                .arg("-o")
                .arg(format!(
                    "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories=''",
                    self.port
                ))
                .output()
                .await
                .context("embedded Postgres: cannot run pg_ctl start")?;
            if out.status.success() {
                tracing::info!(cluster_dir = %self.cluster_dir.display(), port = self.port,
                    log = %self.log_file.display(), "embedded Postgres started");
                return Ok(());
            }
            let lost_port_race = log_tail(&self.log_file).contains("could not bind");
            if lost_port_race && attempt < START_ATTEMPTS {
                tracing::warn!(
                    port = self.port,
                    "embedded Postgres: port taken meanwhile, retrying"
                );
                attempt += 1;
                continue;
            }
            return Err(command_error("pg_ctl start", &out, Some(&self.log_file)));
        }
    }
}

impl Drop for EmbeddedPostgres {
    /// Best effort: a panic or early return must not leave a postmaster running.
    fn drop(&mut self) {
        if !self.running {
            return;
        }
        let mut cmd = std::process::Command::new(self.bin_dir.join("pg_ctl"));
        cmd.args(["stop", "-m", "fast", "-w", "-t", PG_CTL_TIMEOUT_SECS, "-D"])
            .arg(&self.cluster_dir)
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(account) = self.run_as {
            use std::os::unix::process::CommandExt;
            cmd.uid(account.uid).gid(account.gid);
        }
        match cmd.status() {
            Ok(status) if status.success() => tracing::info!(
                cluster_dir = %self.cluster_dir.display(), port = self.port,
                "embedded Postgres stopped (dropped without stop)"),
            Ok(status) => tracing::warn!(cluster_dir = %self.cluster_dir.display(),
                %status, "embedded Postgres: pg_ctl stop on drop failed"),
            Err(e) => tracing::warn!(cluster_dir = %self.cluster_dir.display(),
                error = %e, "embedded Postgres: cannot run pg_ctl stop on drop"),
        }
    }
}

/// Waits until the server accepts SQL connections, then creates `domizan` if missing.
async fn ensure_database(port: u16) -> Result<()> {
    let url = url(port, "postgres");
    let mut tries = 0;
    let mut conn = loop {
        // pg_ctl -w already waited for "ready"; the retries only cover slow first accepts.
        match sqlx::PgConnection::connect(&url).await {
            Ok(conn) => break conn,
            Err(e) if tries < 50 => {
                tries += 1;
                tracing::debug!(error = %e, "embedded Postgres: not accepting connections yet");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => {
                return Err(e).context(format!(
                    "embedded Postgres on port {port} does not accept connections"
                ));
            }
        }
    };
    let exists = sqlx::query("SELECT 1 FROM pg_database WHERE datname = $1")
        .bind(DATABASE)
        .fetch_optional(&mut conn)
        .await
        .context("embedded Postgres: cannot look up the domizan database")?
        .is_some();
    if !exists {
        // A plain &str runs over the simple-query protocol: CREATE DATABASE may not run
        // inside a transaction block. (Not `sqlx::raw_sql(..).execute(..)`: its generic
        // async fn makes `start`'s future fail to be Send, "Executor is not general
        // enough", rust-lang/rust#102211, and callers spawn `start`.)
        sqlx::Executor::execute(&mut conn, "CREATE DATABASE domizan")
            .await
            .context("embedded Postgres: cannot create the domizan database")?;
        tracing::info!(port, "embedded Postgres: created database domizan");
    }
    conn.close().await.ok();
    Ok(())
}

/// No password: see the trust authentication in `initdb`.
fn url(port: u16, database: &str) -> String {
    format!("postgres://postgres@127.0.0.1:{port}/{database}")
}

/// Blocking part of `start`: directories, ownership, binaries.
fn prepare(data_dir: &Path) -> Result<Prepared> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create DATA_DIR {}", data_dir.display()))?;
    // Absolute paths: the Postgres commands run with "/" as working directory.
    let data_dir = data_dir
        .canonicalize()
        .with_context(|| format!("cannot resolve DATA_DIR {}", data_dir.display()))?;
    let cluster_dir = data_dir.join(CLUSTER_DIR);
    let log_file = data_dir.join(LOG_FILE);

    let run_as = if effective_uid()? == 0 {
        let account = postgres_account()?;
        ensure_traversable(&data_dir, account)?;
        Some(account)
    } else {
        None
    };

    // The log is opened by pg_ctl as the user it runs as, which may not write DATA_DIR.
    let log = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(&log_file)
        .with_context(|| format!("cannot create {}", log_file.display()))?;
    drop(log);
    if let Some(account) = run_as {
        chown(&log_file, account)?;
    }

    let existing_version = match std::fs::read_to_string(cluster_dir.join("PG_VERSION")) {
        Ok(v) => Some(v.trim().to_owned()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            return Err(e)
                .with_context(|| format!("cannot read {}/PG_VERSION", cluster_dir.display()));
        }
    };

    if existing_version.is_some() {
        if let Some(account) = run_as {
            // A cluster made by an earlier non-root run: Postgres insists on owning its files.
            if std::fs::metadata(&cluster_dir)?.uid() != account.uid {
                tracing::info!(cluster_dir = %cluster_dir.display(),
                    "embedded Postgres: handing the cluster directory to the postgres user");
                chown_recursive(&cluster_dir, account)?;
            }
        }
    } else if cluster_dir.exists() {
        // Only an empty leftover is ours to replace; anything else we refuse to touch.
        let empty = std::fs::read_dir(&cluster_dir)
            .with_context(|| format!("cannot read {}", cluster_dir.display()))?
            .next()
            .is_none();
        if !empty {
            bail!(
                "{} exists but is not a Postgres cluster (no PG_VERSION); move it away or set DATABASE_URL",
                cluster_dir.display()
            );
        }
        std::fs::remove_dir(&cluster_dir)?;
    }

    let bin_dir = find_bin_dir(existing_version.as_deref())?;
    Ok(Prepared {
        data_dir,
        cluster_dir,
        log_file,
        bin_dir,
        run_as,
        needs_initdb: existing_version.is_none(),
    })
}

async fn initdb(p: &Prepared) -> Result<()> {
    let work_dir = p.data_dir.join(INITDB_DIR);
    if work_dir.exists() {
        // Left by an initdb that was interrupted; it never became the cluster.
        std::fs::remove_dir_all(&work_dir)
            .with_context(|| format!("cannot remove {}", work_dir.display()))?;
    }
    // Created here (mode 0700, as initdb demands) and handed over, because the postgres
    // user may not be allowed to create entries in a root-owned DATA_DIR.
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&work_dir)
        .with_context(|| format!("cannot create {}", work_dir.display()))?;
    if let Some(account) = p.run_as {
        chown(&work_dir, account)?;
    }

    tracing::info!(cluster_dir = %p.cluster_dir.display(), bin_dir = %p.bin_dir.display(),
        "embedded Postgres: initialising a new cluster");
    let mut cmd = tokio::process::Command::new(p.bin_dir.join("initdb"));
    cmd.current_dir("/").stdin(Stdio::null());
    if let Some(account) = p.run_as {
        cmd.uid(account.uid).gid(account.gid);
    }
    let out = cmd
        .arg("-D")
        .arg(&work_dir)
        // The superuser is `postgres` whoever runs the gateway, so the URL never changes.
        .args(["-U", "postgres"])
        // No password: the server only listens on 127.0.0.1 and has no unix socket.
        .arg("--auth=trust")
        .arg("--encoding=UTF8")
        // C: present on every system, and byte-order collation cannot change under us
        // with a libc upgrade (which would silently corrupt text indexes).
        .arg("--locale=C")
        .output()
        .await
        .context("embedded Postgres: cannot run initdb")?;
    if !out.status.success() {
        return Err(command_error("initdb", &out, None));
    }
    tracing::debug!(output = %String::from_utf8_lossy(&out.stdout), "initdb finished");
    std::fs::rename(&work_dir, &p.cluster_dir).with_context(|| {
        format!(
            "cannot move {} to {}",
            work_dir.display(),
            p.cluster_dir.display()
        )
    })?;
    Ok(())
}

/// Effective uid without libc: the second field of `Uid:` in /proc/self/status, else `id -u`.
fn effective_uid() -> Result<u32> {
    if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
        let euid = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1))
            .and_then(|euid| euid.parse().ok());
        if let Some(euid) = euid {
            return Ok(euid);
        }
    }
    let out = std::process::Command::new("id")
        .arg("-u")
        .output()
        .context("cannot determine the current user (no /proc/self/status, no `id`)")?;
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .context("cannot parse the output of `id -u`")
}

/// uid/gid of the `postgres` system user: /etc/passwd, else `getent` (LDAP, NIS, …).
fn postgres_account() -> Result<Account> {
    let from_passwd = std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|passwd| parse_passwd_entry(&passwd, "postgres"));
    let account = from_passwd.or_else(|| {
        let out = std::process::Command::new("getent")
            .args(["passwd", "postgres"])
            .output()
            .ok()?;
        parse_passwd_entry(&String::from_utf8_lossy(&out.stdout), "postgres")
    });
    account.ok_or_else(|| {
        anyhow!(
            "the gateway runs as root and Postgres refuses to, but there is no `postgres` \
             system user to run the embedded cluster as; install the Postgres server package, \
             run the gateway as another user, or set DATABASE_URL"
        )
    })
}

fn parse_passwd_entry(passwd: &str, user: &str) -> Option<Account> {
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        if fields.next()? != user {
            return None;
        }
        let _password = fields.next()?;
        let uid = fields.next()?.parse().ok()?;
        let gid = fields.next()?.parse().ok()?;
        Some(Account { uid, gid })
    })
}

/// The postgres user must be able to reach `<data_dir>/postgres` by path. DATA_DIR is ours,
/// so it gets the search bit for others if needed (search only: no listing); ancestors are
/// not ours to loosen (think `/root`), so a blocked one is an error saying what to do.
fn ensure_traversable(data_dir: &Path, account: Account) -> Result<()> {
    // Processes we start have uid/gid of `postgres` and no supplementary groups, so owner,
    // group and other bits decide exactly.
    let can_search = |meta: &std::fs::Metadata| {
        let mode = meta.mode();
        (meta.uid() == account.uid && mode & 0o100 != 0)
            || (meta.gid() == account.gid && mode & 0o010 != 0)
            || mode & 0o001 != 0
    };
    let meta = std::fs::metadata(data_dir)?;
    if !can_search(&meta) {
        let mut perms = meta.permissions();
        perms.set_mode(perms.mode() | 0o001);
        std::fs::set_permissions(data_dir, perms)
            .with_context(|| format!("cannot make {} traversable", data_dir.display()))?;
        tracing::info!(data_dir = %data_dir.display(),
            "embedded Postgres: made DATA_DIR traversable (o+x) for the postgres user");
    }
    for ancestor in data_dir.ancestors().skip(1) {
        let meta = std::fs::metadata(ancestor)?;
        if !can_search(&meta) {
            bail!(
                "the embedded Postgres runs as the `postgres` user (the gateway is root), which \
                 cannot reach DATA_DIR {} because {} is not traversable for it; choose a DATA_DIR \
                 elsewhere, run `chmod o+x {}`, or set DATABASE_URL",
                data_dir.display(),
                ancestor.display(),
                ancestor.display()
            );
        }
    }
    Ok(())
}

fn chown(path: &Path, account: Account) -> Result<()> {
    std::os::unix::fs::lchown(path, Some(account.uid), Some(account.gid))
        .with_context(|| format!("cannot chown {} to postgres", path.display()))
}

fn chown_recursive(path: &Path, account: Account) -> Result<()> {
    chown(path, account)?;
    // symlink_metadata: never follow a link out of the cluster.
    if std::fs::symlink_metadata(path)?.is_dir() {
        for entry in std::fs::read_dir(path)? {
            chown_recursive(&entry?.path(), account)?;
        }
    }
    Ok(())
}

/// The binaries: `PG_BIN_DIR`, else the Debian layout, else `PATH`.
fn find_bin_dir(cluster_version: Option<&str>) -> Result<PathBuf> {
    let usable = |dir: &Path| {
        ["initdb", "pg_ctl", "postgres"]
            .iter()
            .all(|b| dir.join(b).is_file())
    };

    if let Some(dir) = std::env::var_os("PG_BIN_DIR") {
        let dir = PathBuf::from(dir);
        if !usable(&dir) {
            bail!(
                "PG_BIN_DIR {} lacks initdb, pg_ctl or postgres",
                dir.display()
            );
        }
        return Ok(dir);
    }

    let mut installed: Vec<(Vec<u32>, String, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let version = name
                .split('.')
                .map(|part| part.parse().ok())
                .collect::<Option<Vec<u32>>>()?;
            let bin = entry.path().join("bin");
            usable(&bin).then_some((version, name, bin))
        })
        .collect();
    installed.sort();

    if let Some(wanted) = cluster_version {
        // A cluster only runs under the major version that created it; after a system upgrade
        // the old binaries are usually still installed next to the new ones.
        if let Some((_, _, bin)) = installed.iter().find(|(_, name, _)| name == wanted) {
            return Ok(bin.clone());
        }
        if !installed.is_empty() {
            let have: Vec<&str> = installed.iter().map(|(_, name, _)| name.as_str()).collect();
            bail!(
                "the embedded cluster was created by Postgres {wanted}, but only {} is installed \
                 under /usr/lib/postgresql; install Postgres {wanted}, upgrade the cluster \
                 (pg_upgrade), or set PG_BIN_DIR",
                have.join(", ")
            );
        }
    } else if let Some((_, _, bin)) = installed.pop() {
        return Ok(bin);
    }

    // Other layouts (Fedora, Homebrew, …) put the binaries on PATH.
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .find(|dir| usable(dir))
        .ok_or_else(|| {
            anyhow!(
                "no Postgres server binaries found (looked in PG_BIN_DIR, /usr/lib/postgresql/*/bin \
                 and PATH); install the Postgres server package or set DATABASE_URL"
            )
        })
}

/// A port nobody listens on right now; the OS picks it from the ephemeral range.
fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0))
        .context("cannot find a free local port for the embedded Postgres")?;
    Ok(listener.local_addr()?.port())
}

/// The last lines of the server log, for error messages (the log holds no secrets).
fn log_tail(log_file: &Path) -> String {
    const TAIL_BYTES: u64 = 4096;
    let Ok(mut file) = std::fs::File::open(log_file) else {
        return String::new();
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut buf = Vec::new();
    if file
        .seek(SeekFrom::Start(len.saturating_sub(TAIL_BYTES)))
        .is_err()
        || file.read_to_end(&mut buf).is_err()
    {
        return String::new();
    }
    let text = String::from_utf8_lossy(&buf);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

fn command_error(what: &str, out: &Output, log_file: Option<&Path>) -> anyhow::Error {
    let mut msg = format!(
        "embedded Postgres: {what} failed ({})",
        describe(out.status)
    );
    for stream in [&out.stdout, &out.stderr] {
        let text = String::from_utf8_lossy(stream);
        if !text.trim().is_empty() {
            msg.push('\n');
            msg.push_str(text.trim_end());
        }
    }
    if let Some(log_file) = log_file {
        let tail = log_tail(log_file);
        if !tail.is_empty() {
            msg.push_str(&format!("\n--- {} (tail) ---\n{tail}", log_file.display()));
        }
    }
    anyhow!(msg)
}

fn describe(status: ExitStatus) -> String {
    match status.code() {
        Some(code) => format!("exit code {code}"),
        None => status.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Removes the directory even when an assertion fails (declared before the cluster, so
    /// the cluster's Drop stops the postmaster first).
    struct TempDir(PathBuf);

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn start_and_stop_can_be_spawned() {
        fn is_send<T: Send + 'static>(_: T) {}
        let dir = std::env::temp_dir();
        // Never polled: this only has to compile.
        is_send(async move { EmbeddedPostgres::start(&dir).await?.stop().await });
    }

    #[tokio::test]
    async fn an_empty_data_dir_becomes_a_running_cluster_and_a_second_start_reuses_it() {
        // Under the temp dir: /tmp is world-traversable, which the postgres user needs
        // when the tests run as root.
        let dir = TempDir(std::env::temp_dir().join(format!(
            "gateway-embedded-test-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        )));

        let pg = EmbeddedPostgres::start(&dir.0).await.expect("first start");
        assert!(dir.0.join("postgres/PG_VERSION").is_file());
        assert!(!dir.0.join(INITDB_DIR).exists());
        assert_eq!(
            pg.database_url(),
            format!("postgres://postgres@127.0.0.1:{}/domizan", pg.port())
        );
        let mut conn = sqlx::PgConnection::connect(&pg.database_url())
            .await
            .unwrap();
        let one: i32 = sqlx::query_scalar("SELECT 1")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(one, 1);
        sqlx::raw_sql(
            "CREATE TABLE survives_restart (id int); INSERT INTO survives_restart VALUES (42)",
        )
        .execute(&mut conn)
        .await
        .unwrap();
        conn.close().await.unwrap();
        pg.stop().await.expect("first stop");

        let pg = EmbeddedPostgres::start(&dir.0).await.expect("second start");
        let mut conn = sqlx::PgConnection::connect(&pg.database_url())
            .await
            .unwrap();
        let id: i32 = sqlx::query_scalar("SELECT id FROM survives_restart")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(id, 42);
        conn.close().await.unwrap();
        pg.stop().await.expect("second stop");
    }

    #[tokio::test]
    async fn a_postmaster_left_by_a_crashed_run_is_replaced_and_drop_stops_it() {
        let dir = TempDir(std::env::temp_dir().join(format!(
            "gateway-embedded-test-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        )));

        // A gateway killed without shutdown: its postmaster keeps running.
        let crashed = EmbeddedPostgres::start(&dir.0).await.expect("first start");
        let (cluster_dir, bin_dir, run_as) = (
            crashed.cluster_dir.clone(),
            crashed.bin_dir.clone(),
            crashed.run_as,
        );
        std::mem::forget(crashed);

        let pg = EmbeddedPostgres::start(&dir.0)
            .await
            .expect("start over a live postmaster");
        let mut conn = sqlx::PgConnection::connect(&pg.database_url())
            .await
            .unwrap();
        let one: i32 = sqlx::query_scalar("SELECT 1")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(one, 1);
        conn.close().await.unwrap();

        // Dropped without stop (e.g. a panic): Drop stops the postmaster.
        drop(pg);
        let probe = EmbeddedPostgres {
            cluster_dir,
            log_file: dir.0.join(LOG_FILE),
            bin_dir,
            port: 0,
            run_as,
            running: false,
        };
        assert!(
            !probe.status().await.unwrap(),
            "postmaster still running after drop"
        );
    }
}
