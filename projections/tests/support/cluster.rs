//! A private, throwaway Postgres cluster for tests that need a second cluster (a restore
//! into a cluster with a lower transaction id counter) or settings the shared server does
//! not have (`max_prepared_transactions`), or a standby to promote. Made with the machine's own binaries under a
//! temporary directory, on a free loopback port, no unix socket; as root it runs as the
//! `postgres` system user (Postgres refuses root), like `src/embedded.rs`. Dropping it stops
//! the postmaster and removes the directory.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

pub struct PrivateCluster {
    dir: PathBuf,
    bin: PathBuf,
    run_as: Option<(u32, u32)>,
    pub port: u16,
    /// `postgres` command-line options (port, listen address, settings).
    options: String,
}

impl PrivateCluster {
    /// initdb, optionally with the 64-bit transaction id counter starting at
    /// `xid_epoch << 32` (what a long-lived cluster looks like), then start it with
    /// `settings` (`name=value`).
    pub fn start(xid_epoch: Option<u32>, settings: &[&str]) -> Self {
        let cluster = Self::empty(settings);
        let data = cluster.data();
        cluster.run(
            "initdb",
            &[
                "-D",
                &data,
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ],
        );
        if let Some(epoch) = xid_epoch {
            cluster.run("pg_resetwal", &["-e", &epoch.to_string(), "-D", &data]);
        }
        cluster.start_again();
        cluster
    }

    /// A streaming standby of `primary` (`pg_basebackup -R`), started.
    pub fn standby_of(primary: &PrivateCluster) -> Self {
        let standby = Self::empty(&[]);
        let port = primary.port.to_string();
        let data = standby.data();
        standby.run(
            "pg_basebackup",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                "postgres",
                "-D",
                &data,
                "-R",
                "-X",
                "stream",
                "--checkpoint=fast",
                "--no-sync",
            ],
        );
        standby.start_again();
        standby
    }

    /// A directory and a port, no cluster yet.
    fn empty(settings: &[&str]) -> Self {
        let bin = binaries();
        let run_as = if is_root() {
            Some(postgres_account())
        } else {
            None
        };
        let dir = std::env::temp_dir().join(format!(
            "gateway-test-cluster-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir(&dir).unwrap();
        if let Some((uid, gid)) = run_as {
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).unwrap();
        }
        let port = free_port();
        let mut options = format!(
            "-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories='' -c fsync=off"
        );
        for setting in settings {
            options.push_str(&format!(" -c {setting}"));
        }
        PrivateCluster {
            dir,
            bin,
            run_as,
            port,
            options,
        }
    }

    /// Starts the postmaster and waits until it accepts connections.
    pub fn start_again(&self) {
        let log = self.dir.join("log").display().to_string();
        let data = self.data();
        self.run(
            "pg_ctl",
            &[
                "-D",
                &data,
                "-l",
                &log,
                "-w",
                "-t",
                "60",
                "-o",
                &self.options,
                "start",
            ],
        );
    }

    /// Fast shutdown.
    pub fn stop(&self) {
        self.run("pg_ctl", &["-D", &self.data(), "-m", "fast", "-w", "stop"]);
    }

    /// Ends recovery: the standby becomes a primary on a new timeline.
    pub fn promote(&self) {
        self.run("pg_ctl", &["-D", &self.data(), "-w", "promote"]);
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    pub fn bin(&self, program: &str) -> PathBuf {
        self.bin.join(program)
    }

    fn data(&self) -> String {
        self.dir.join("data").display().to_string()
    }

    fn run(&self, program: &str, args: &[&str]) {
        let mut command = Command::new(self.bin.join(program));
        command.args(args).current_dir("/");
        if let Some((uid, gid)) = self.run_as {
            command.uid(uid).gid(gid);
        }
        let out = command.output().unwrap();
        assert!(
            out.status.success(),
            "{program} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        let data = self.data();
        if Path::new(&data).join("postmaster.pid").exists() {
            let mut command = Command::new(self.bin.join("pg_ctl"));
            command
                .args(["-D", &data, "-m", "immediate", "-w", "stop"])
                .current_dir("/");
            if let Some((uid, gid)) = self.run_as {
                command.uid(uid).gid(gid);
            }
            let _ = command.output();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The newest `/usr/lib/postgresql/<version>/bin` (or `PG_BIN_DIR`).
fn binaries() -> PathBuf {
    if let Some(dir) = std::env::var_os("PG_BIN_DIR") {
        return dir.into();
    }
    let mut versions: Vec<u32> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("these tests need the Postgres server binaries under /usr/lib/postgresql")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    versions.sort();
    let version = versions.last().expect("a Postgres version is installed");
    PathBuf::from(format!("/usr/lib/postgresql/{version}/bin"))
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("Uid:"))?
                .split_whitespace()
                .nth(1)?
                .parse::<u32>()
                .ok()
        })
        == Some(0)
}

fn postgres_account() -> (u32, u32) {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    passwd
        .lines()
        .find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            (fields.first() == Some(&"postgres"))
                .then(|| (fields[2].parse().unwrap(), fields[3].parse().unwrap()))
        })
        .expect("a `postgres` system user to run the cluster as")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
