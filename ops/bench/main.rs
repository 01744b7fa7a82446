//! `bench`: throughput of the event store against raw sqlx baselines, measured in the same run.
//!
//! It creates a scratch database `bench_<random>` next to the one in `DATABASE_URL`, applies
//! the migrations, runs
//!
//! 1. catch-up reads: `EventStore::read_page` over the whole log vs. a plain keyset loop;
//! 2. appends: `EventStore::append` vs. a plain `INSERT INTO events … VALUES …` of the same
//!    rows, at {1, 10} events per command x {1, 8} concurrent writers;
//!
//! alternating baseline and store in short slices (raw, store, store, raw, …) and reporting
//! the median of the per-pair ratios. Then, on a second scratch database `<name>_gw` with a
//! real gateway started in this process (see `e2e.rs`),
//!
//! 3. landing: `POST /v1/leads` submissions per second end to end vs. a raw `INSERT` of the
//!    same row, at 32 concurrent clients, alternating the same way;
//! 4. live: commit-to-delivery latency of `NEW_LEAD` on 100 authenticated `/ws/admin` sockets;
//! 5. verify: `POST /v1/licenses/verify` vs. a bare axum handler in the same process at 64
//!    connections, and resident memory with 10 000 licenses and 30 000 devices (`verify.rs`).
//!
//! `--only read,append,peer,landing,live,verify` picks phases. The scratch databases are dropped at the
//! end, also on error or Ctrl-C. See `ops/bench/README.md` for what each figure means.

mod append;
mod e2e;
mod harness;
mod peer;
mod read;
mod verify;

use append::*;
use harness::*;
use read::*;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use chrono::{DateTime, Utc};
use clap::Parser;
use eventstore::{Cursor, EventStore, Metadata, NewEvent, StreamId};
use serde_json::{Value, json};
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::types::Json;
use sqlx::{ConnectOptions, Connection, PgPool};
use uuid::Uuid;

/// The parts of the bench (`--only`).
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Catch-up read: `EventStore::read_page` vs. a plain keyset loop.
    Read,
    /// Appends: `EventStore::append` vs. a plain INSERT (and `--diagnose`).
    Append,
    /// Creating a lead through our command path vs. `postgres-es` + `cqrs-es` vs. raw.
    Peer,
    /// `POST /v1/leads` end to end vs. a raw INSERT, on an in-process gateway.
    Landing,
    /// `NEW_LEAD` commit-to-delivery latency on many `/ws/admin` sockets.
    Live,
    /// `POST /v1/licenses/verify` vs. a bare axum handler, and resident memory with many
    /// licenses and devices loaded.
    Verify,
}

#[derive(Parser, Debug, Clone)]
#[command(
    about = "Event store and gateway throughput vs. raw sqlx baselines (scratch databases per run)"
)]
struct Args {
    /// Server to use; the bench creates (and drops) its own database next to this one.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    database_url: String,
    /// Name of the scratch database (default: bench_<random>). Must start with "bench_".
    #[arg(long)]
    db_name: Option<String>,
    /// Keep the scratch database at the end (for poking at it with psql).
    #[arg(long)]
    keep_db: bool,
    /// Measured seconds per append case and variant (split into alternating slices).
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Length of one slice: raw and store alternate every slice (ABBA order).
    #[arg(long, default_value_t = 0.5)]
    slice: f64,
    /// Warm-up seconds per append case and variant before the slices (not counted).
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Timed passes over the whole log per read variant (alternating, ABBA order).
    #[arg(long, default_value_t = 3)]
    read_rounds: usize,
    /// Concurrent writers (comma-separated).
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 8])]
    writers: Vec<usize>,
    /// Events per command (comma-separated).
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 10])]
    batch: Vec<usize>,
    /// Events in the table for the catch-up read measurement.
    #[arg(long, default_value_t = 200_000)]
    read_events: i64,
    /// Page size of the catch-up read.
    #[arg(long, default_value_t = 500)]
    page_size: i64,
    /// Skip the catch-up read measurement.
    #[arg(long)]
    skip_read: bool,
    /// Skip the append measurement.
    #[arg(long)]
    skip_append: bool,
    /// Also run diagnostic variants that take the store's append apart (see README).
    #[arg(long)]
    diagnose: bool,
    /// Only these append variants (comma-separated keys: raw, store, and with --diagnose
    /// raw-returning, raw-unnest, no-streams, store-sql, proposed, proposed-ordered, store-new,
    /// proposed-new).
    #[arg(long, value_delimiter = ',')]
    variants: Option<Vec<String>>,
    /// Rounds (1 s per variant each) of the --diagnose CPU-per-append table.
    #[arg(long, default_value_t = 4)]
    profile_rounds: usize,
    /// Phases to run (comma-separated); default: all.
    #[arg(long, value_enum, value_delimiter = ',',
          default_values_t = [Phase::Read, Phase::Append, Phase::Peer, Phase::Landing, Phase::Live, Phase::Verify])]
    only: Vec<Phase>,
    /// A short run of every phase, for a smoke check (figures are noisier): 1 s per append
    /// case, 20 000 events to read once, 2 s of landing, 60 live leads.
    #[arg(long)]
    quick: bool,
    /// Concurrent clients of the landing measurement (HTTP and raw alike).
    #[arg(long, default_value_t = 32)]
    landing_clients: usize,
    /// Measured seconds per landing variant (split into alternating slices).
    #[arg(long, default_value_t = 6.0)]
    landing_seconds: f64,
    /// Length of one landing slice: raw and landing alternate every slice (ABBA order).
    #[arg(long, default_value_t = 1.0)]
    landing_slice: f64,
    /// Per cent of landing submissions that repeat an earlier contact (resubmissions, max 50).
    #[arg(long, default_value_t = 0)]
    landing_duplicates: u64,
    /// Authenticated /ws/admin sockets of the live measurement.
    #[arg(long, default_value_t = 100)]
    live_sockets: usize,
    /// Leads created during the live measurement.
    #[arg(long, default_value_t = 300)]
    live_leads: usize,
    /// Leads per second during the live measurement.
    #[arg(long, default_value_t = 30.0)]
    live_rate: f64,
    /// Licenses seeded for the verify and memory measurements.
    #[arg(long, default_value_t = 10_000)]
    verify_licenses: usize,
    /// Approved devices per seeded license.
    #[arg(long, default_value_t = 3)]
    verify_devices: usize,
    /// Concurrent keep-alive connections of the verify measurement (verify and bare alike).
    #[arg(long, default_value_t = 64)]
    verify_connections: usize,
    /// Measured seconds per verify variant (split into alternating slices).
    #[arg(long, default_value_t = 6.0)]
    verify_seconds: f64,
    /// Length of one verify slice: bare and verify alternate every slice (ABBA order).
    #[arg(long, default_value_t = 1.0)]
    verify_slice: f64,
}

impl Args {
    fn selected(&self, phase: Phase) -> bool {
        self.only.contains(&phase)
            && match phase {
                Phase::Read => !self.skip_read,
                Phase::Append => !self.skip_append,
                Phase::Peer | Phase::Landing | Phase::Live | Phase::Verify => true,
            }
    }

    /// The event-store part (its own scratch database).
    fn wants_foundation(&self) -> bool {
        self.selected(Phase::Read) || self.selected(Phase::Append) || self.selected(Phase::Peer)
    }

    /// `--quick`: shorter everything.
    fn quickened(mut self) -> Self {
        if self.quick {
            self.seconds = self.seconds.min(1.0);
            self.warmup = self.warmup.min(0.3);
            self.read_events = self.read_events.min(20_000);
            self.read_rounds = 1;
            self.landing_seconds = self.landing_seconds.min(2.0);
            self.live_leads = self.live_leads.min(60);
            self.live_sockets = self.live_sockets.min(20);
            self.verify_seconds = self.verify_seconds.min(2.0);
            self.verify_licenses = self.verify_licenses.min(2_000);
        }
        self
    }

    /// The gateway part (a second scratch database, `<name>_gw`).
    fn wants_gateway(&self) -> bool {
        self.selected(Phase::Landing) || self.selected(Phase::Live) || self.selected(Phase::Verify)
    }
}

#[tokio::main]
async fn main() {
    let args = Args::parse().quickened();
    match real_main(args).await {
        Ok(()) => {}
        Err(e) => {
            eprintln!("bench failed: {e:#}");
            std::process::exit(1);
        }
    }
}

async fn real_main(args: Args) -> Result<()> {
    let admin_opts = PgConnectOptions::from_str(&args.database_url)
        .context("DATABASE_URL is not a valid Postgres URL")?;
    let db_name = match &args.db_name {
        Some(name) => name.clone(),
        None => format!("bench_{}", &Uuid::new_v4().simple().to_string()[..12]),
    };
    if !db_name.starts_with("bench_")
        || !db_name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        bail!("scratch database name must match bench_[a-z0-9_]*, got {db_name:?}");
    }

    let gw_name = format!("{db_name}_gw");
    let gw_url = if args.wants_gateway() {
        Some(e2e::database_url_for(&args.database_url, &gw_name)?)
    } else {
        None
    };
    let mut admin = admin_opts
        .connect()
        .await
        .context("connecting to DATABASE_URL")?;
    let mut wanted = Vec::new();
    if args.wants_foundation() {
        wanted.push(db_name.clone());
    }
    if args.wants_gateway() {
        wanted.push(gw_name.clone());
    }
    if wanted.is_empty() {
        bail!("nothing to run (see --only, --skip-read, --skip-append)");
    }
    let mut created = Vec::new();
    let mut outcome = Ok(());
    for name in &wanted {
        match sqlx::raw_sql(&format!("CREATE DATABASE \"{name}\""))
            .execute(&mut admin)
            .await
        {
            Ok(_) => {
                eprintln!("scratch database {name} created");
                created.push(name.clone());
            }
            Err(e) => {
                outcome = Err(anyhow!(e).context(format!("creating scratch database {name}")));
                break;
            }
        }
    }

    if outcome.is_ok() {
        let foundation = args
            .wants_foundation()
            .then(|| admin_opts.clone().database(&db_name));
        let gateway = gw_url
            .clone()
            .map(|url| (admin_opts.clone().database(&gw_name), url));
        // Run the bench in its own task so that a panic, an error or Ctrl-C still reaches the
        // DROP DATABASE below.
        let task = tokio::spawn(run(args.clone(), foundation, gateway));
        let abort = task.abort_handle();
        outcome = tokio::select! {
            joined = task => match joined {
                Ok(result) => result,
                Err(e) if e.is_panic() => Err(anyhow!("bench panicked")),
                Err(e) => Err(anyhow!("bench task failed: {e}")),
            },
            _ = tokio::signal::ctrl_c() => {
                abort.abort();
                Err(anyhow!("interrupted"))
            }
        };
    }

    for name in &created {
        if args.keep_db {
            eprintln!("keeping scratch database {name} (--keep-db)");
            continue;
        }
        let dropped = sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
            .execute(&mut admin)
            .await;
        match dropped {
            Ok(_) => eprintln!("scratch database {name} dropped"),
            Err(e) => {
                eprintln!("could not drop scratch database {name}: {e}");
                if outcome.is_ok() {
                    outcome = Err(e.into());
                }
            }
        }
    }
    let _ = admin.close().await;
    outcome
}

// ---------------------------------------------------------------------------------------------
// Setup

struct Ctx {
    args: Args,
    store: EventStore,
    /// The store's pool; the raw baselines use the very same pool (same options, same sslmode).
    pool: PgPool,
    /// A separate connection for WAL position probes, so that they never wait for the pool.
    probe: tokio::sync::Mutex<PgConnection>,
    /// Appended to every stream id so that runs never collide.
    run_tag: String,
    /// How to reach the scratch database.
    db_opts: PgConnectOptions,
    /// The peer phase's two command paths (set up when that phase runs).
    peer: Option<Arc<peer::Peer>>,
}

async fn run(
    args: Args,
    foundation: Option<PgConnectOptions>,
    gateway: Option<(PgConnectOptions, String)>,
) -> Result<()> {
    let run_tag = Uuid::new_v4().simple().to_string()[..6].to_string();
    let mut rows = Vec::new();
    if let Some(db_opts) = foundation {
        rows.extend(foundation_bench(args.clone(), db_opts, &run_tag).await?);
    } else if let Some((db_opts, _)) = &gateway {
        let pool = eventstore::connect(db_opts.clone(), 1).await?;
        print_server(&pool).await?;
        pool.close().await;
    }
    if let Some((db_opts, url)) = gateway {
        rows.extend(e2e::run(&args, db_opts, &url, &run_tag).await?);
    }
    print_table(&rows);
    Ok(())
}

/// Catch-up read, appends and the peer on their own scratch database; their table rows.
async fn foundation_bench(
    args: Args,
    db_opts: PgConnectOptions,
    run_tag: &str,
) -> Result<Vec<Row>> {
    let max_writers = args.writers.iter().copied().max().unwrap_or(1).max(1);
    // The gateway's own constructor: eventstore::pool_options (no ping before acquire,
    // min 1 connection) plus its statement/idle timeouts. Baseline and store share it.
    let pool = eventstore::connect(db_opts.clone(), max_writers as u32)
        .await
        .context("connecting to the scratch database")?;
    sqlx::migrate!("../../migrations")
        .run(&pool)
        .await
        .context("applying migrations")?;
    let probe = db_opts.connect().await?;
    let db_opts_for_ctx = db_opts.clone();
    let store = EventStore::new(pool.clone());
    let peer = if args.selected(Phase::Peer) {
        Some(peer::Peer::new(&pool, &db_opts, &store).await?)
    } else {
        None
    };
    let ctx = Arc::new(Ctx {
        peer,
        args,
        store,
        pool: pool.clone(),
        probe: tokio::sync::Mutex::new(probe),
        run_tag: run_tag.to_string(),
        db_opts: db_opts_for_ctx,
    });

    print_server(&ctx.pool).await?;
    print_header(&ctx).await?;

    let mut rows = Vec::new();
    if ctx.args.selected(Phase::Read) {
        rows.push(read_bench(&ctx).await?);
    }
    if ctx.args.selected(Phase::Append) {
        rows.extend(append_bench(&ctx).await?);
    }
    if ctx.args.selected(Phase::Peer) {
        rows.extend(peer_bench(&ctx).await?);
    }
    if ctx.args.diagnose && ctx.args.selected(Phase::Append) {
        cpu_profile(&ctx).await?;
    }
    if let Ok(ctx) = Arc::try_unwrap(ctx) {
        ctx.probe.into_inner().close().await.ok();
    }
    pool.close().await;
    Ok(rows)
}

/// `bench: PostgreSQL …, N cores, synchronous_commit=…, shared_buffers=…, TLS …`
async fn print_server(pool: &PgPool) -> Result<()> {
    let (version, ssl, sync_commit, shared_buffers): (String, Option<bool>, String, String) =
        sqlx::query_as(
            "SELECT current_setting('server_version'),
                    (SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()),
                    current_setting('synchronous_commit'),
                    current_setting('shared_buffers')",
        )
        .fetch_one(pool)
        .await?;
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "bench: PostgreSQL {version}, {cores} cores, synchronous_commit={sync_commit}, \
         shared_buffers={shared_buffers}, TLS on pool connections: {}",
        match ssl {
            Some(true) => "yes",
            Some(false) => "no",
            None => "?",
        }
    );
    Ok(())
}

async fn print_header(ctx: &Ctx) -> Result<()> {
    let sample = lead_events(1, &Uuid::new_v4().to_string());
    let payload_len = serde_json::to_string(&sample[0].payload)?.len();
    let meta_len = serde_json::to_string(&sample[0].metadata)?.len();
    println!(
        "pool: eventstore::connect (pool_options: max {} conns, test_before_acquire=false), \
         shared by store and raw; payload {payload_len} B, metadata {meta_len} B per event",
        ctx.args.writers.iter().max().unwrap_or(&1)
    );
    Ok(())
}
