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
//! 4. live: commit-to-delivery latency of `NEW_LEAD` on 100 authenticated `/ws/admin` sockets.
//!
//! `--only read,append,landing,live` picks phases. The scratch databases are dropped at the
//! end, also on error or Ctrl-C. See `ops/bench/README.md` for what each figure means.

mod e2e;

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
    /// `POST /v1/leads` end to end vs. a raw INSERT, on an in-process gateway.
    Landing,
    /// `NEW_LEAD` commit-to-delivery latency on many `/ws/admin` sockets.
    Live,
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
          default_values_t = [Phase::Read, Phase::Append, Phase::Landing, Phase::Live])]
    only: Vec<Phase>,
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
}

impl Args {
    fn selected(&self, phase: Phase) -> bool {
        self.only.contains(&phase)
            && match phase {
                Phase::Read => !self.skip_read,
                Phase::Append => !self.skip_append,
                Phase::Landing | Phase::Live => true,
            }
    }

    /// The event-store part (its own scratch database).
    fn wants_foundation(&self) -> bool {
        self.selected(Phase::Read) || self.selected(Phase::Append)
    }

    /// The gateway part (a second scratch database, `<name>_gw`).
    fn wants_gateway(&self) -> bool {
        self.selected(Phase::Landing) || self.selected(Phase::Live)
    }
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
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
}

async fn run(
    args: Args,
    foundation: Option<PgConnectOptions>,
    gateway: Option<(PgConnectOptions, String)>,
) -> Result<()> {
    let run_tag = Uuid::new_v4().simple().to_string()[..6].to_string();
    let mut verdicts = Vec::new();
    if let Some(db_opts) = foundation {
        verdicts.extend(foundation_bench(args.clone(), db_opts, &run_tag).await?);
    } else if let Some((db_opts, _)) = &gateway {
        let pool = eventstore::connect(db_opts.clone(), 1).await?;
        print_server(&pool).await?;
        pool.close().await;
    }
    if let Some((db_opts, url)) = gateway {
        verdicts.extend(e2e::run(&args, db_opts, &url, &run_tag).await?);
    }
    println!();
    for line in &verdicts {
        println!("{line}");
    }
    Ok(())
}

/// Catch-up read and appends on their own scratch database; the verdict lines.
async fn foundation_bench(
    args: Args,
    db_opts: PgConnectOptions,
    run_tag: &str,
) -> Result<Vec<String>> {
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
    let ctx = Arc::new(Ctx {
        args,
        store,
        pool: pool.clone(),
        probe: tokio::sync::Mutex::new(probe),
        run_tag: run_tag.to_string(),
        db_opts: db_opts_for_ctx,
    });

    print_server(&ctx.pool).await?;
    print_header(&ctx).await?;

    let mut verdicts = Vec::new();
    if ctx.args.selected(Phase::Read) {
        verdicts.push(read_bench(&ctx).await?);
    }
    if ctx.args.selected(Phase::Append) {
        verdicts.extend(append_bench(&ctx).await?);
    }
    if ctx.args.diagnose && ctx.args.selected(Phase::Append) {
        cpu_profile(&ctx).await?;
    }
    if let Ok(ctx) = Arc::try_unwrap(ctx) {
        ctx.probe.into_inner().close().await.ok();
    }
    pool.close().await;
    Ok(verdicts.into_iter().flatten().collect())
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

// ---------------------------------------------------------------------------------------------
// Workload

/// `n` lead-like events (~300 B of JSON payload each) with request metadata, as the landing
/// page's "lead submitted" command would produce them.
fn lead_events(n: usize, correlation_id: &str) -> Vec<NewEvent> {
    let metadata = Metadata {
        actor: Some("landing".into()),
        ip: Some("203.0.113.42".into()),
        user_agent: Some(
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) \
             Chrome/124.0 Safari/537.36"
                .into(),
        ),
        correlation_id: Some(correlation_id.to_string()),
        causation_id: None,
    };
    (0..n)
        .map(|i| {
            let payload = json!({
                "leadId": Uuid::new_v4(),
                "name": "Ayşe Yılmaz",
                "email": "ayse.yilmaz@example.com.tr",
                "phone": "+90 532 555 01 23",
                "company": "Yılmaz Muhasebe Ltd. Şti.",
                "plan": "pro",
                "seq": i,
                "source": "landing",
                "utm": { "source": "google", "medium": "cpc", "campaign": "spring-2026" },
                "message": "Merhaba, e-fatura ve e-defter entegrasyonu hakkında bilgi almak istiyorum.",
                "consent": true,
            });
            NewEvent::new("LeadSubmitted", "1", payload, metadata.clone())
        })
        .collect()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Variant {
    /// `INSERT INTO events (…) VALUES (…), (…)`: one statement, autocommit, no RETURNING.
    Raw,
    /// `EventStore::append`.
    Store,
    // Diagnostic variants (--diagnose):
    /// Raw, plus the store's `RETURNING global_position, transaction_id, event_id, sequence,
    /// recorded_at` (fetch_all).
    RawReturning,
    /// The store's insert shape without the streams CTE: unnest of uuid[]/text[]/jsonb[]
    /// WITH ORDINALITY, RETURNING.
    RawUnnest,
    /// The store's exact SQL run directly (no idempotency path, no result building).
    StoreSql,
    /// Proposed: the store's statement with scalar (not array) parameters for a 1-event
    /// append.
    Proposed,
    /// `Proposed` with `ORDER BY v.ord` (explicit insertion order).
    ProposedOrdered,
    /// `EventStore::append` to a new stream every command (a lead being created).
    StoreFresh,
    /// The proposed statement, new stream every command.
    ProposedFresh,
    /// Alternative: no `streams` row; the version check is an index probe for the previous
    /// event plus the primary key on (aggregate_type, aggregate_id, sequence).
    NoStreams,
}

impl Variant {
    /// Appends to a new stream every command.
    fn fresh_stream(self) -> bool {
        matches!(self, Variant::StoreFresh | Variant::ProposedFresh)
    }

    /// Name for --variants.
    fn key(self) -> &'static str {
        match self {
            Variant::Raw => "raw",
            Variant::Store => "store",
            Variant::RawReturning => "raw-returning",
            Variant::RawUnnest => "raw-unnest",
            Variant::StoreSql => "store-sql",
            Variant::Proposed => "proposed",
            Variant::ProposedOrdered => "proposed-ordered",
            Variant::StoreFresh => "store-new",
            Variant::ProposedFresh => "proposed-new",
            Variant::NoStreams => "no-streams",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Variant::Raw => "raw",
            Variant::Store => "store",
            Variant::RawReturning => "raw+returning",
            Variant::RawUnnest => "raw unnest[]",
            Variant::StoreSql => "store SQL direct",
            Variant::Proposed => "proposed VALUES",
            Variant::ProposedOrdered => "proposed ordered",
            Variant::StoreFresh => "store new stream",
            Variant::ProposedFresh => "proposed new str",
            Variant::NoStreams => "no streams row",
        }
    }
}

/// Multi-row VALUES for `n` events: 8 parameters per row.
fn raw_insert_sql(n: usize, returning: bool) -> String {
    let mut sql = String::from(
        "INSERT INTO events (event_id, aggregate_type, aggregate_id, sequence, \
         event_type, event_version, payload, metadata) VALUES ",
    );
    for row in 0..n {
        let b = row * 8;
        if row > 0 {
            sql.push_str(", ");
        }
        write!(
            sql,
            "(${}, ${}, ${}, ${}, ${}, ${}, ${}, ${})",
            b + 1,
            b + 2,
            b + 3,
            b + 4,
            b + 5,
            b + 6,
            b + 7,
            b + 8
        )
        .unwrap();
    }
    if returning {
        sql.push_str(" RETURNING global_position, transaction_id, event_id, sequence, recorded_at");
    }
    sql
}

const RAW_UNNEST: &str = r#"
INSERT INTO events (event_id, aggregate_type, aggregate_id, sequence,
                    event_type, event_version, payload, metadata)
SELECT e.event_id, $1, $2, $3 + e.ord, e.event_type, e.event_version, e.payload, e.metadata
  FROM unnest($4::uuid[], $5::text[], $6::text[], $7::jsonb[], $8::jsonb[]) WITH ORDINALITY
       AS e(event_id, event_type, event_version, payload, metadata, ord)
 ORDER BY e.ord
RETURNING global_position, transaction_id, event_id, sequence, recorded_at
"#;

const NO_STREAMS: &str = r#"
INSERT INTO events (event_id, aggregate_type, aggregate_id, sequence,
                    event_type, event_version, payload, metadata)
SELECT e.event_id, $1, $2, $3 + e.ord, e.event_type, e.event_version, e.payload, e.metadata
  FROM unnest($4::uuid[], $5::text[], $6::text[], $7::jsonb[], $8::jsonb[]) WITH ORDINALITY
       AS e(event_id, event_type, event_version, payload, metadata, ord)
 WHERE $3 = 0
    OR EXISTS (SELECT 1 FROM events
                WHERE aggregate_type = $1 AND aggregate_id = $2 AND sequence = $3)
 ORDER BY e.ord
RETURNING global_position, transaction_id, event_id, sequence, recorded_at
"#;

// Copies of eventstore/src/append.rs (private there), for the diagnostic "store SQL direct".
const STORE_NEW_STREAM: &str = r#"
WITH bump AS (
    INSERT INTO streams (aggregate_type, aggregate_id, version)
    VALUES ($1, $2, $4)
    ON CONFLICT (aggregate_type, aggregate_id) DO NOTHING
    RETURNING 1
)
INSERT INTO events (event_id, aggregate_type, aggregate_id, sequence,
                    event_type, event_version, payload, metadata)
SELECT e.event_id, $1, $2, $3 + e.ord, e.event_type, e.event_version, e.payload, e.metadata
  FROM unnest($5::uuid[], $6::text[], $7::text[], $8::jsonb[], $9::jsonb[]) WITH ORDINALITY
       AS e(event_id, event_type, event_version, payload, metadata, ord)
 WHERE EXISTS (SELECT 1 FROM bump)
 ORDER BY e.ord
RETURNING global_position, transaction_id, event_id, sequence, recorded_at
"#;

const STORE_EXISTING_STREAM: &str = r#"
WITH bump AS (
    UPDATE streams SET version = $4
     WHERE aggregate_type = $1 AND aggregate_id = $2 AND version = $3
    RETURNING 1
)
INSERT INTO events (event_id, aggregate_type, aggregate_id, sequence,
                    event_type, event_version, payload, metadata)
SELECT e.event_id, $1, $2, $3 + e.ord, e.event_type, e.event_version, e.payload, e.metadata
  FROM unnest($5::uuid[], $6::text[], $7::text[], $8::jsonb[], $9::jsonb[]) WITH ORDINALITY
       AS e(event_id, event_type, event_version, payload, metadata, ord)
 WHERE EXISTS (SELECT 1 FROM bump)
 ORDER BY e.ord
RETURNING global_position, transaction_id, event_id, sequence, recorded_at
"#;

/// Proposed append statement for `n` events: the same version check as the store (CTE on
/// `streams`), but the events as one multi-row VALUES list of scalar parameters instead of
/// five arrays through unnest(). Parameters: $1 aggregate_type, $2 aggregate_id, $3 expected
/// version, then per event (event_id, event_type, event_version, payload, metadata).
fn proposed_sql(n: usize, new_stream: bool, ordered: bool) -> String {
    let bump = if new_stream {
        format!(
            "INSERT INTO streams (aggregate_type, aggregate_id, version)
    VALUES ($1, $2, $3 + {n})
    ON CONFLICT (aggregate_type, aggregate_id) DO NOTHING
    RETURNING 1"
        )
    } else {
        format!(
            "UPDATE streams SET version = $3 + {n}
     WHERE aggregate_type = $1 AND aggregate_id = $2 AND version = $3
    RETURNING 1"
        )
    };
    let mut values = String::new();
    for i in 0..n {
        let b = 4 + i * 5;
        if i > 0 {
            values.push_str(",\n         ");
        }
        if i == 0 {
            write!(
                values,
                "(${}::uuid, {}::bigint, ${}::text, ${}::text, ${}::jsonb, ${}::jsonb)",
                b,
                i + 1,
                b + 1,
                b + 2,
                b + 3,
                b + 4
            )
            .unwrap();
        } else {
            write!(
                values,
                "(${}, {}, ${}, ${}, ${}, ${})",
                b,
                i + 1,
                b + 1,
                b + 2,
                b + 3,
                b + 4
            )
            .unwrap();
        }
    }
    format!(
        "WITH bump AS (
    {bump}
)
INSERT INTO events (event_id, aggregate_type, aggregate_id, sequence,
                    event_type, event_version, payload, metadata)
SELECT v.event_id, $1, $2, $3 + v.ord, v.event_type, v.event_version, v.payload, v.metadata
  FROM (VALUES {values})
       AS v(event_id, ord, event_type, event_version, payload, metadata)
 WHERE EXISTS (SELECT 1 FROM bump){}
RETURNING global_position, transaction_id, event_id, sequence, recorded_at",
        if ordered { "\n ORDER BY v.ord" } else { "" }
    )
}

type AppendedRow = (i64, i64, Uuid, i64, DateTime<Utc>);

/// One command of `variant`: append `events` to `stream` at `version`.
async fn one_command(
    ctx: &Ctx,
    variant: Variant,
    sql: &str,
    stream: &StreamId,
    version: i64,
    events: &[NewEvent],
) -> Result<()> {
    let n = events.len() as i64;
    match variant {
        Variant::Store | Variant::StoreFresh => {
            let outcome = ctx.store.append(stream, version as u64, events).await?;
            if outcome.events.len() != events.len() {
                bail!("store appended {} of {} events", outcome.events.len(), n);
            }
        }
        Variant::Raw | Variant::RawReturning => {
            let mut q = sqlx::query(sql);
            for (i, e) in events.iter().enumerate() {
                q = q
                    .bind(e.event_id)
                    .bind(&stream.aggregate_type)
                    .bind(&stream.aggregate_id)
                    .bind(version + 1 + i as i64)
                    .bind(&e.event_type)
                    .bind(&e.event_version)
                    .bind(&e.payload)
                    .bind(Json(&e.metadata));
            }
            if variant == Variant::Raw {
                let done = q.execute(&ctx.pool).await?;
                if done.rows_affected() != n as u64 {
                    bail!("raw insert wrote {} of {n} rows", done.rows_affected());
                }
            } else {
                let rows = q.fetch_all(&ctx.pool).await?;
                if rows.len() != events.len() {
                    bail!("raw insert returned {} of {n} rows", rows.len());
                }
            }
        }
        Variant::RawUnnest | Variant::StoreSql | Variant::NoStreams => {
            let ids: Vec<Uuid> = events.iter().map(|e| e.event_id).collect();
            let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
            let versions: Vec<&str> = events.iter().map(|e| e.event_version.as_str()).collect();
            let payloads: Vec<&Value> = events.iter().map(|e| &e.payload).collect();
            let metadata: Vec<Json<&Metadata>> = events.iter().map(|e| Json(&e.metadata)).collect();
            let q = sqlx::query_as::<_, AppendedRow>(sql)
                .bind(&stream.aggregate_type)
                .bind(&stream.aggregate_id)
                .bind(version);
            let q = if variant == Variant::StoreSql {
                q.bind(version + n)
            } else {
                q
            };
            let rows = q
                .bind(&ids)
                .bind(&types)
                .bind(&versions)
                .bind(&payloads)
                .bind(&metadata)
                .fetch_all(&ctx.pool)
                .await?;
            if rows.len() != events.len() {
                bail!("{} inserted {} of {n} rows", variant.name(), rows.len());
            }
        }
        Variant::Proposed | Variant::ProposedOrdered | Variant::ProposedFresh => {
            let mut q = sqlx::query_as::<_, AppendedRow>(sql)
                .bind(&stream.aggregate_type)
                .bind(&stream.aggregate_id)
                .bind(version);
            for e in events {
                q = q
                    .bind(e.event_id)
                    .bind(&e.event_type)
                    .bind(&e.event_version)
                    .bind(&e.payload)
                    .bind(Json(&e.metadata));
            }
            let rows = q.fetch_all(&ctx.pool).await?;
            if rows.len() != events.len() {
                bail!("proposed inserted {} of {n} rows", rows.len());
            }
        }
    }
    Ok(())
}

fn sql_for(variant: Variant, batch: usize, first: bool) -> Arc<str> {
    Arc::from(match variant {
        Variant::Store | Variant::StoreFresh => String::new(),
        Variant::Raw => raw_insert_sql(batch, false),
        Variant::RawReturning => raw_insert_sql(batch, true),
        Variant::RawUnnest => RAW_UNNEST.to_string(),
        Variant::NoStreams => NO_STREAMS.to_string(),
        Variant::StoreSql if first => STORE_NEW_STREAM.to_string(),
        Variant::StoreSql => STORE_EXISTING_STREAM.to_string(),
        Variant::Proposed => proposed_sql(batch, first, false),
        Variant::ProposedOrdered => proposed_sql(batch, first, true),
        Variant::ProposedFresh => proposed_sql(batch, true, false),
    })
}

// ---------------------------------------------------------------------------------------------
// Resource probes: client CPU (this process), host CPU, WAL bytes.

#[derive(Clone, Debug, Default)]
struct Probe {
    /// CPU seconds used by this process (all threads).
    self_cpu: f64,
    /// CPU seconds used so far by each server process that serves the scratch database, and
    /// by the WAL writer, checkpointer and background writer.
    pg: HashMap<i32, f64>,
    /// Busy CPU seconds of the whole host (all cores), from /proc/stat.
    host_busy: f64,
    /// WAL insert position in bytes.
    wal: i64,
}

impl Probe {
    /// Server CPU seconds spent between `earlier` and `self`.
    fn pg_since(&self, earlier: &Probe) -> f64 {
        self.pg
            .iter()
            .map(|(pid, t)| t - earlier.pg.get(pid).copied().unwrap_or(0.0))
            .sum()
    }
}

/// On-CPU time of one thread or single-threaded process, from `/proc/…/schedstat`
/// (nanoseconds, exact, unlike the tick-sampled utime/stime).
fn schedstat_seconds(path: &std::path::Path) -> Option<f64> {
    let text = std::fs::read_to_string(path).ok()?;
    let ns: f64 = text.split_whitespace().next()?.parse().ok()?;
    Some(ns / 1e9)
}

fn self_cpu_seconds() -> f64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return f64::NAN;
    };
    tasks
        .flatten()
        .filter_map(|t| schedstat_seconds(&t.path().join("schedstat")))
        .sum()
}

fn pid_cpu_seconds(pid: i32) -> Option<f64> {
    schedstat_seconds(&std::path::PathBuf::from(format!("/proc/{pid}/schedstat")))
}

fn host_busy_seconds() -> f64 {
    const USER_HZ: f64 = 100.0; // /proc/stat counts in USER_HZ, fixed at 100 on Linux.
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else {
        return f64::NAN;
    };
    let Some(line) = stat.lines().next() else {
        return f64::NAN;
    };
    let v: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|s| s.parse().ok())
        .collect();
    if v.len() < 5 {
        return f64::NAN;
    }
    // user nice system idle iowait irq softirq steal …; guest time is already in user.
    let total: f64 = v.iter().take(8).sum();
    (total - v[3] - v[4]) / USER_HZ
}

async fn probe(ctx: &Ctx) -> Result<Probe> {
    let (wal, pids): (i64, Vec<i32>) = sqlx::query_as(
        "SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), '0/0')::bigint,
                ARRAY(SELECT pid FROM pg_stat_activity
                       WHERE (datname = current_database() AND pid <> pg_backend_pid())
                          OR backend_type IN ('walwriter', 'checkpointer', 'background writer'))",
    )
    .fetch_one(&mut *ctx.probe.lock().await)
    .await?;
    Ok(Probe {
        self_cpu: self_cpu_seconds(),
        pg: pids
            .into_iter()
            .filter_map(|pid| Some((pid, pid_cpu_seconds(pid)?)))
            .collect(),
        host_busy: host_busy_seconds(),
        wal,
    })
}

// ---------------------------------------------------------------------------------------------
// Appends

#[derive(Clone, Debug)]
struct AppendSample {
    variant: Variant,
    commands: u64,
    events: u64,
    secs: f64,
    lat_us: Vec<u32>,
    self_cpu: f64,
    pg_cpu: f64,
    host_busy: f64,
    wal: i64,
}

impl AppendSample {
    fn events_per_s(&self) -> f64 {
        self.events as f64 / self.secs
    }
    fn commands_per_s(&self) -> f64 {
        self.commands as f64 / self.secs
    }
    fn pct(&self, p: f64) -> f64 {
        if self.lat_us.is_empty() {
            return f64::NAN;
        }
        let i = ((self.lat_us.len() - 1) as f64 * p).round() as usize;
        self.lat_us[i] as f64 / 1000.0
    }
}

async fn append_run(
    ctx: &Arc<Ctx>,
    variant: Variant,
    writers: usize,
    batch: usize,
    tag: &str,
    measured: Duration,
) -> Result<AppendSample> {
    let t_start = Instant::now();
    let t_end = t_start + measured;
    let p0 = probe(ctx).await?;

    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..writers {
        let ctx = Arc::clone(ctx);
        // One stream per writer per slice; successive versions of it.
        let stream = StreamId::new(
            "lead",
            format!(
                "{}-{}-w{writers}x{batch}-{tag}-{w}",
                ctx.run_tag,
                variant.name().replace(' ', "_")
            ),
        );
        tasks.spawn(async move {
            let sql_first = sql_for(variant, batch, true);
            let sql_next = sql_for(variant, batch, false);
            let mut version = 0i64;
            let mut commands = 0u64;
            let mut issued = 0u64;
            let mut lat = Vec::with_capacity(4096);
            loop {
                let began = Instant::now();
                if began >= t_end {
                    break;
                }
                let correlation = Uuid::new_v4().to_string();
                let events = lead_events(batch, &correlation);
                let fresh;
                let stream = if variant.fresh_stream() {
                    issued += 1;
                    fresh = StreamId::new("lead", format!("{}-{issued}", stream.aggregate_id));
                    version = 0;
                    &fresh
                } else {
                    &stream
                };
                let sql = if version == 0 { &sql_first } else { &sql_next };
                one_command(&ctx, variant, sql, stream, version, &events)
                    .await
                    .with_context(|| {
                        format!("{} append to {stream} at {version}", variant.name())
                    })?;
                version += batch as i64;
                let done = Instant::now();
                if done <= t_end {
                    commands += 1;
                    lat.push((done - began).as_micros().min(u32::MAX as u128) as u32);
                }
            }
            anyhow::Ok((commands, lat))
        });
    }

    tokio::time::sleep_until(t_end.into()).await;
    let p1 = probe(ctx).await?;

    let mut commands = 0;
    let mut lat_us = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let (c, l) = joined??;
        commands += c;
        lat_us.extend(l);
    }
    Ok(AppendSample {
        variant,
        commands,
        events: commands * batch as u64,
        secs: measured.as_secs_f64(),
        lat_us,
        self_cpu: p1.self_cpu - p0.self_cpu,
        pg_cpu: p1.pg_since(&p0),
        host_busy: p1.host_busy - p0.host_busy,
        wal: p1.wal - p0.wal,
    })
}

/// All slices of one variant pooled into one sample.
fn pooled(slices: &[&AppendSample]) -> AppendSample {
    let mut total = AppendSample {
        variant: slices[0].variant,
        commands: 0,
        events: 0,
        secs: 0.0,
        lat_us: Vec::new(),
        self_cpu: 0.0,
        pg_cpu: 0.0,
        host_busy: 0.0,
        wal: 0,
    };
    for s in slices {
        total.commands += s.commands;
        total.events += s.events;
        total.secs += s.secs;
        total.lat_us.extend_from_slice(&s.lat_us);
        total.self_cpu += s.self_cpu;
        total.pg_cpu += s.pg_cpu;
        total.host_busy += s.host_busy;
        total.wal += s.wal;
    }
    total.lat_us.sort_unstable();
    total
}

/// (median, first quartile, third quartile) of `xs`.
fn quartiles(xs: &mut [f64]) -> (f64, f64, f64) {
    if xs.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    xs.sort_by(f64::total_cmp);
    let at = |q: f64| {
        let pos = (xs.len() - 1) as f64 * q;
        let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
        xs[lo] + (xs[hi] - xs[lo]) * (pos - lo as f64)
    };
    (at(0.5), at(0.25), at(0.75))
}

/// `append@8 writers x10: 0.93x raw (target >= 0.8) PASS`; three decimals when two would
/// round across the target.
fn verdict(what: &str, ratio: f64, target: f64) -> String {
    let pass = ratio >= target;
    let shown = if ((ratio * 100.0).round() / 100.0 >= target) != pass {
        format!("{ratio:.3}")
    } else {
        format!("{ratio:.2}")
    };
    format!(
        "{what}: {shown}x raw (target >= {target}) {}",
        if pass { "PASS" } else { "FAIL" }
    )
}

fn fmt_rate(x: f64) -> String {
    if !x.is_finite() {
        "-".into()
    } else if x >= 100_000.0 {
        format!("{:.0}k", x / 1000.0)
    } else if x >= 10_000.0 {
        format!("{:.1}k", x / 1000.0)
    } else {
        format!("{x:.0}")
    }
}

fn cores() -> f64 {
    std::thread::available_parallelism().map_or(1, |n| n.get()) as f64
}

async fn append_bench(ctx: &Arc<Ctx>) -> Result<Vec<Option<String>>> {
    let slice = Duration::from_secs_f64(ctx.args.slice.max(0.05));
    let slices = (ctx.args.seconds / slice.as_secs_f64()).ceil().max(1.0) as usize;
    let warmup = Duration::from_secs_f64(ctx.args.warmup);
    println!();
    println!(
        "APPEND  ({} slices of {:.2}s per variant and case, alternating raw/store in ABBA order, \
         after {:.1}s warm-up each)",
        slices,
        slice.as_secs_f64(),
        warmup.as_secs_f64()
    );
    println!(
        "  events/s, cmds/s: all slices pooled. vs raw: median over slice pairs of store/raw \
         [interquartile range]."
    );
    println!(
        "  p50/p99: command latency. cli/pg µs: CPU per command of this process / of the scratch \
         database's server processes + WAL writer, checkpointer. CPU%: whole host. WAL: bytes per event."
    );
    println!(
        "{:<9} {:<16} {:>8} {:>7} {:>6} {:>6} {:>6} {:>6} {:>4} {:>6} {:>6}  IQR",
        "case",
        "variant",
        "events/s",
        "cmds/s",
        "p50ms",
        "p99ms",
        "cli µs",
        "pg µs",
        "CPU%",
        "WAL B",
        "vs raw"
    );
    let mut verdicts = Vec::new();
    for &batch in &ctx.args.batch {
        for &writers in &ctx.args.writers {
            let mut variants = vec![Variant::Raw, Variant::Store];
            if ctx.args.diagnose {
                variants.extend(diagnostic_variants());
            }
            if let Some(only) = &ctx.args.variants {
                variants.retain(|v| only.iter().any(|o| o == v.key()));
            }
            // Start every case from a fresh checkpoint, so that full-page writes and background
            // flushing fall on both variants alike (needs superuser or pg_checkpoint; optional).
            let _ = sqlx::raw_sql("CHECKPOINT").execute(&ctx.pool).await;
            if !warmup.is_zero() {
                for &v in &variants {
                    append_run(ctx, v, writers, batch, "warm", warmup).await?;
                }
            }
            // rounds[r] holds one slice of every variant, run back to back.
            let mut rounds: Vec<Vec<AppendSample>> = Vec::new();
            for r in 0..slices {
                let mut order = variants.clone();
                if r % 2 == 1 {
                    order.reverse();
                }
                let mut round = Vec::new();
                for &v in &order {
                    round.push(append_run(ctx, v, writers, batch, &format!("s{r}"), slice).await?);
                }
                rounds.push(round);
            }
            let of = |round: &[AppendSample], v: Variant| {
                round
                    .iter()
                    .find(|s| s.variant == v)
                    .map(|s| s.events_per_s())
            };
            let case = format!("{writers}w x{batch}");
            let mut store_ratio = f64::NAN;
            for &v in &variants {
                let mine: Vec<&AppendSample> =
                    rounds.iter().flatten().filter(|s| s.variant == v).collect();
                let s = pooled(&mine);
                let mut ratios: Vec<f64> = rounds
                    .iter()
                    .filter_map(|round| Some(of(round, v)? / of(round, Variant::Raw)?))
                    .collect();
                let (median, q1, q3) = quartiles(&mut ratios);
                if v == Variant::Store {
                    store_ratio = median;
                }
                let cmds = s.commands.max(1) as f64;
                println!(
                    "{:<9} {:<16} {:>8} {:>7} {:>6.2} {:>6.2} {:>6.0} {:>6.0} {:>4.0} {:>6.0} {:>5.2}x  [{:.2}-{:.2}]",
                    case,
                    v.name(),
                    fmt_rate(s.events_per_s()),
                    fmt_rate(s.commands_per_s()),
                    s.pct(0.5),
                    s.pct(0.99),
                    s.self_cpu / cmds * 1e6,
                    s.pg_cpu / cmds * 1e6,
                    s.host_busy / (s.secs * cores()) * 100.0,
                    s.wal as f64 / s.events.max(1) as f64,
                    median,
                    q1,
                    q3,
                );
            }
            if writers >= 8 && store_ratio.is_finite() {
                verdicts.push(Some(verdict(
                    &format!("append@{writers} writers x{batch}"),
                    store_ratio,
                    0.8,
                )));
            }
        }
    }
    Ok(verdicts)
}

// ---------------------------------------------------------------------------------------------
// Catch-up reads

/// The brief's baseline: keyset on global_position alone (needs an index on it; the bench
/// creates one for the duration of the read measurement, see README).
const RAW_READ_BY_POSITION: &str = r#"
SELECT global_position, transaction_id, event_id, aggregate_type, aggregate_id, sequence,
       event_type, event_version, payload, metadata, recorded_at
  FROM events
 WHERE global_position > $1
 ORDER BY global_position
 LIMIT $2
"#;

/// Diagnostic baseline: the store's order and index, without the xmin fence (a bench
/// database has only epoch 0).
const RAW_READ_BY_PAIR: &str = r#"
SELECT global_position, transaction_id, event_id, aggregate_type, aggregate_id, sequence,
       event_type, event_version, payload, metadata, recorded_at
  FROM events
 WHERE (epoch, transaction_id, global_position) > (0, $1, $2)
 ORDER BY epoch, transaction_id, global_position
 LIMIT $3
"#;

/// The same columns decoded into the same Rust types as the store's row type.
#[derive(sqlx::FromRow)]
#[allow(dead_code)]
struct RawEventRow {
    global_position: i64,
    transaction_id: i64,
    event_id: Uuid,
    aggregate_type: String,
    aggregate_id: String,
    sequence: i64,
    event_type: String,
    event_version: String,
    payload: Value,
    metadata: Json<Metadata>,
    recorded_at: DateTime<Utc>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ReadVariant {
    RawPosition,
    Store,
    RawPair,
}

impl ReadVariant {
    fn name(self) -> &'static str {
        match self {
            ReadVariant::RawPosition => "raw",
            ReadVariant::Store => "store",
            ReadVariant::RawPair => "raw (tx,pos) no fence",
        }
    }
}

struct ReadSample {
    variant: ReadVariant,
    events: u64,
    pages: u64,
    secs: f64,
    self_cpu: f64,
    pg_cpu: f64,
    host_busy: f64,
}

async fn read_pass(ctx: &Ctx, variant: ReadVariant) -> Result<ReadSample> {
    let limit = ctx.args.page_size.max(1);
    let p0 = probe(ctx).await?;
    let t0 = Instant::now();
    let mut events = 0u64;
    let mut pages = 0u64;
    match variant {
        ReadVariant::Store => {
            let mut cursor = Cursor::START;
            loop {
                let page = ctx.store.read_page(cursor, limit).await?;
                pages += 1;
                let Some(last) = page.last() else { break };
                cursor = last.cursor;
                events += page.len() as u64;
            }
        }
        ReadVariant::RawPosition => {
            let mut after = 0i64;
            loop {
                let page: Vec<RawEventRow> = sqlx::query_as(RAW_READ_BY_POSITION)
                    .bind(after)
                    .bind(limit)
                    .fetch_all(&ctx.pool)
                    .await?;
                pages += 1;
                let Some(last) = page.last() else { break };
                after = last.global_position;
                events += page.len() as u64;
            }
        }
        ReadVariant::RawPair => {
            let (mut tx, mut pos) = (0i64, 0i64);
            loop {
                let page: Vec<RawEventRow> = sqlx::query_as(RAW_READ_BY_PAIR)
                    .bind(tx)
                    .bind(pos)
                    .bind(limit)
                    .fetch_all(&ctx.pool)
                    .await?;
                pages += 1;
                let Some(last) = page.last() else { break };
                (tx, pos) = (last.transaction_id, last.global_position);
                events += page.len() as u64;
            }
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    let p1 = probe(ctx).await?;
    Ok(ReadSample {
        variant,
        events,
        pages,
        secs,
        self_cpu: p1.self_cpu - p0.self_cpu,
        pg_cpu: p1.pg_since(&p0),
        host_busy: p1.host_busy - p0.host_busy,
    })
}

/// Fills the log with `n` lead events: streams of 10 events, 1000 events per statement.
async fn seed(ctx: &Arc<Ctx>, n: i64) -> Result<()> {
    const CHUNK: i64 = 1000;
    let chunks = (n + CHUNK - 1) / CHUNK;
    let next = Arc::new(std::sync::atomic::AtomicI64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..2 {
        let ctx = Arc::clone(ctx);
        let next = Arc::clone(&next);
        tasks.spawn(async move {
            loop {
                let c = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if c >= chunks {
                    break;
                }
                let len = CHUNK.min(n - c * CHUNK) as usize;
                let events = lead_events(len, &Uuid::new_v4().to_string());
                let ids: Vec<Uuid> = events.iter().map(|e| e.event_id).collect();
                let aggs: Vec<String> = (0..len)
                    .map(|i| format!("seed-{}", (c * CHUNK + i as i64) / 10))
                    .collect();
                let seqs: Vec<i64> = (0..len).map(|i| (c * CHUNK + i as i64) % 10 + 1).collect();
                let payloads: Vec<&Value> = events.iter().map(|e| &e.payload).collect();
                let metadata: Vec<Json<&Metadata>> =
                    events.iter().map(|e| Json(&e.metadata)).collect();
                sqlx::query(
                    "INSERT INTO events (event_id, aggregate_type, aggregate_id, sequence,
                                         event_type, event_version, payload, metadata)
                     SELECT id, 'lead', agg, seq, 'LeadSubmitted', '1', p, m
                       FROM unnest($1::uuid[], $2::text[], $3::bigint[], $4::jsonb[], $5::jsonb[])
                            AS t(id, agg, seq, p, m)",
                )
                .bind(&ids)
                .bind(&aggs)
                .bind(&seqs)
                .bind(&payloads)
                .bind(&metadata)
                .execute(&ctx.pool)
                .await?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined??;
    }
    Ok(())
}

async fn read_bench(ctx: &Arc<Ctx>) -> Result<Option<String>> {
    let n = ctx.args.read_events.max(1);
    let t0 = Instant::now();
    seed(ctx, n).await.context("seeding the log")?;
    sqlx::raw_sql("VACUUM ANALYZE events")
        .execute(&ctx.pool)
        .await?;
    // The brief's baseline keyset needs an index on global_position, which the schema does
    // not have (without it every page is a full scan and sort). Build it for this phase only.
    sqlx::raw_sql("CREATE INDEX bench_events_global_position ON events (global_position)")
        .execute(&ctx.pool)
        .await?;
    // Settle dirty buffers so that the passes do not pay for the seed's checkpoint.
    let _ = sqlx::raw_sql("CHECKPOINT").execute(&ctx.pool).await;
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&ctx.pool)
        .await?;
    let (table_mb,): (f64,) =
        sqlx::query_as("SELECT pg_total_relation_size('events')::float8 / 1048576")
            .fetch_one(&ctx.pool)
            .await?;
    let rounds = ctx.args.read_rounds.max(1);
    println!();
    println!(
        "CATCH-UP READ  ({total} events, {table_mb:.0} MB with indexes, seeded in {:.1}s; pages of {}; \
         one untimed warm-up pass each, then {rounds} timed passes each in ABBA order)",
        t0.elapsed().as_secs_f64(),
        ctx.args.page_size,
    );
    println!(
        "  events/s: median pass. vs raw: median over rounds of variant/raw. cli/pg µs: CPU per \
         event of this process / of the server."
    );
    println!(
        "{:<22} {:>9} {:>7} {:>8} {:>9} {:>8} {:>5} {:>7}  passes (events/s)",
        "variant", "events/s", "pass s", "ms/page", "cli µs/ev", "pg µs/ev", "CPU%", "vs raw"
    );
    let variants = [
        ReadVariant::RawPosition,
        ReadVariant::Store,
        ReadVariant::RawPair,
    ];
    for &v in &variants {
        read_pass(ctx, v).await?;
    }
    let mut by_round: Vec<Vec<ReadSample>> = Vec::new();
    for r in 0..rounds {
        let mut order = variants.to_vec();
        if r % 2 == 1 {
            order.reverse();
        }
        let mut round = Vec::new();
        for v in order {
            let s = read_pass(ctx, v).await?;
            if s.events != total as u64 {
                bail!(
                    "{} read {} events, the table has {total}",
                    v.name(),
                    s.events
                );
            }
            round.push(s);
        }
        by_round.push(round);
    }
    let rate = |s: &ReadSample| s.events as f64 / s.secs;
    let of = |round: &[ReadSample], v: ReadVariant| round.iter().find(|s| s.variant == v).map(rate);
    let mut store_ratio = f64::NAN;
    for &v in &variants {
        let mut passes: Vec<&ReadSample> = by_round
            .iter()
            .flatten()
            .filter(|x| x.variant == v)
            .collect();
        let listed: Vec<String> = passes.iter().map(|x| fmt_rate(rate(x))).collect();
        passes.sort_by(|a, b| rate(a).total_cmp(&rate(b)));
        let s = passes[passes.len() / 2];
        let mut ratios: Vec<f64> = by_round
            .iter()
            .filter_map(|round| Some(of(round, v)? / of(round, ReadVariant::RawPosition)?))
            .collect();
        let (ratio, _, _) = quartiles(&mut ratios);
        if v == ReadVariant::Store {
            store_ratio = ratio;
        }
        println!(
            "{:<22} {:>9} {:>7.2} {:>8.2} {:>9.1} {:>8.1} {:>5.0} {:>6.2}x  {}",
            v.name(),
            fmt_rate(rate(s)),
            s.secs,
            s.secs / s.pages as f64 * 1000.0,
            s.self_cpu / s.events.max(1) as f64 * 1e6,
            s.pg_cpu / s.events.max(1) as f64 * 1e6,
            s.host_busy / (s.secs * cores()) * 100.0,
            ratio,
            listed.join(" "),
        );
    }
    sqlx::raw_sql("DROP INDEX bench_events_global_position")
        .execute(&ctx.pool)
        .await?;
    Ok(Some(verdict(
        &format!("catch-up read (pages of {})", ctx.args.page_size),
        store_ratio,
        0.5,
    )))
}

// ---------------------------------------------------------------------------------------------
// Diagnostics: CPU per append, one connection, no fsync wait

fn diagnostic_variants() -> Vec<Variant> {
    vec![
        Variant::RawReturning,
        Variant::RawUnnest,
        Variant::NoStreams,
        Variant::StoreSql,
        Variant::Proposed,
        Variant::ProposedOrdered,
        Variant::StoreFresh,
        Variant::ProposedFresh,
    ]
}

/// Every variant on one connection with `synchronous_commit=off`, serially: what each costs in
/// CPU (the server backend and this process), without group-commit or scheduling effects.
/// With 2 cores and 8 writers the append cases are CPU-bound, so these costs predict the
/// throughput ratios.
async fn cpu_profile(ctx: &Arc<Ctx>) -> Result<()> {
    let opts = ctx.db_opts.clone().options([("synchronous_commit", "off")]);
    let pool = eventstore::connect(opts, 1).await?;
    let backend: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&pool)
        .await?;
    let pctx = Arc::new(Ctx {
        args: ctx.args.clone(),
        store: EventStore::new(pool.clone()),
        pool: pool.clone(),
        probe: tokio::sync::Mutex::new(ctx.db_opts.connect().await?),
        run_tag: format!("{}p", ctx.run_tag),
        db_opts: ctx.db_opts.clone(),
    });
    println!();
    println!(
        "CPU PER APPEND  (1 connection, synchronous_commit=off, serial; {} rounds x 1s per variant, \
         ABBA; backend = that connection's server process)",
        ctx.args.profile_rounds.max(1)
    );
    println!(
        "{:<5} {:<16} {:>8} {:>11} {:>10} {:>9} {:>9}",
        "batch", "variant", "cmds/s", "backend µs", "client µs", "total µs", "raw/this"
    );
    for &batch in &ctx.args.batch {
        let mut variants = vec![Variant::Raw, Variant::Store];
        variants.extend(diagnostic_variants());
        if let Some(only) = &ctx.args.variants {
            variants.retain(|v| only.iter().any(|o| o == v.key()));
        }
        if !variants.contains(&Variant::Raw) {
            variants.insert(0, Variant::Raw);
        }
        for &v in &variants {
            append_run(&pctx, v, 1, batch, "pwarm", Duration::from_millis(300)).await?;
        }
        let mut acc: HashMap<&'static str, (u64, f64, f64, f64)> = HashMap::new();
        for r in 0..ctx.args.profile_rounds.max(1) {
            let mut order = variants.clone();
            if r % 2 == 1 {
                order.reverse();
            }
            for &v in &order {
                let b0 = pid_cpu_seconds(backend).unwrap_or(f64::NAN);
                let s = append_run(&pctx, v, 1, batch, &format!("p{r}"), Duration::from_secs(1))
                    .await?;
                let b1 = pid_cpu_seconds(backend).unwrap_or(f64::NAN);
                let e = acc.entry(v.name()).or_default();
                e.0 += s.commands;
                e.1 += b1 - b0;
                e.2 += s.self_cpu;
                e.3 += s.secs;
            }
        }
        let total = |v: Variant| {
            let (c, b, s, _) = acc[v.name()];
            (b + s) / c.max(1) as f64
        };
        for &v in &variants {
            let (c, b, s, secs) = acc[v.name()];
            let c = c.max(1) as f64;
            println!(
                "{:<5} {:<16} {:>8} {:>11.0} {:>10.0} {:>9.0} {:>8.2}x",
                format!("x{batch}"),
                v.name(),
                fmt_rate(c / secs),
                b / c * 1e6,
                s / c * 1e6,
                (b + s) / c * 1e6,
                total(Variant::Raw) / total(v),
            );
        }
    }
    if let Ok(pctx) = Arc::try_unwrap(pctx) {
        pctx.probe.into_inner().close().await.ok();
    }
    pool.close().await;
    Ok(())
}
