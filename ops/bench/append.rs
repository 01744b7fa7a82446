//! Phase 2, appends: `EventStore::append` vs. a plain multi-row INSERT of the same rows,
//! the diagnostic variants that take the append apart (`--diagnose`), and the command
//! workload shared with the peer phase (`peer.rs`).

use super::*;

// Workload

/// `n` lead-like events (~300 B of JSON payload each) with request metadata, as the landing
/// page's "lead submitted" command would produce them.
pub(crate) fn lead_events(n: usize, correlation_id: &str) -> Vec<NewEvent> {
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
pub(crate) enum Variant {
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
    // The peer phase (see peer.rs):
    /// `CommandHandler<Lead>::execute_new` of a lead creation (decide, append).
    StoreCreate,
    /// `CommandHandler<Lead>::execute` of a lead creation (load, decide, append).
    StoreCmd,
    /// The same command through `postgres-es` + `cqrs-es`, on its documented pool.
    Peer,
    /// `Peer` on the bench's pool.
    PeerSamePool,
}

impl Variant {
    /// Appends to a new stream every command.
    fn fresh_stream(self) -> bool {
        matches!(
            self,
            Variant::StoreFresh
                | Variant::ProposedFresh
                | Variant::StoreCreate
                | Variant::StoreCmd
                | Variant::Peer
                | Variant::PeerSamePool
        )
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
            Variant::StoreCreate => "store-create",
            Variant::StoreCmd => "store-cmd",
            Variant::Peer => "peer",
            Variant::PeerSamePool => "peer-same-pool",
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
            Variant::StoreCreate => "store create",
            Variant::StoreCmd => "store cmd",
            Variant::Peer => "postgres-es",
            Variant::PeerSamePool => "pg-es our pool",
        }
    }
}

/// Multi-row VALUES for `n` events: 8 parameters per row.
pub(crate) fn raw_insert_sql(n: usize, returning: bool) -> String {
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

pub(crate) const RAW_UNNEST: &str = r#"
INSERT INTO events (event_id, aggregate_type, aggregate_id, sequence,
                    event_type, event_version, payload, metadata)
SELECT e.event_id, $1, $2, $3 + e.ord, e.event_type, e.event_version, e.payload, e.metadata
  FROM unnest($4::uuid[], $5::text[], $6::text[], $7::jsonb[], $8::jsonb[]) WITH ORDINALITY
       AS e(event_id, event_type, event_version, payload, metadata, ord)
 ORDER BY e.ord
RETURNING global_position, transaction_id, event_id, sequence, recorded_at
"#;

pub(crate) const NO_STREAMS: &str = r#"
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
pub(crate) const STORE_NEW_STREAM: &str = r#"
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

pub(crate) const STORE_EXISTING_STREAM: &str = r#"
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
pub(crate) fn proposed_sql(n: usize, new_stream: bool, ordered: bool) -> String {
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

pub(crate) type AppendedRow = (i64, i64, Uuid, i64, DateTime<Utc>);

/// One command of `variant`: append `events` to `stream` at `version`.
pub(crate) async fn one_command(
    ctx: &Ctx,
    variant: Variant,
    sql: &str,
    stream: &StreamId,
    version: i64,
    events: &[NewEvent],
) -> Result<()> {
    let n = events.len() as i64;
    match variant {
        Variant::StoreCreate | Variant::StoreCmd | Variant::Peer | Variant::PeerSamePool => {
            let peer = ctx
                .peer
                .as_ref()
                .ok_or_else(|| anyhow!("peer phase not set up"))?;
            let id = Uuid::new_v4().to_string();
            let metadata = &events[0].metadata;
            match variant {
                Variant::StoreCreate => peer.ours(&id, metadata, true).await?,
                Variant::StoreCmd => peer.ours(&id, metadata, false).await?,
                Variant::Peer => peer.theirs(&id, metadata, true).await?,
                _ => peer.theirs(&id, metadata, false).await?,
            }
        }
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

pub(crate) fn sql_for(variant: Variant, batch: usize, first: bool) -> Arc<str> {
    Arc::from(match variant {
        Variant::Store
        | Variant::StoreFresh
        | Variant::StoreCreate
        | Variant::StoreCmd
        | Variant::Peer
        | Variant::PeerSamePool => String::new(),
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
// Appends

#[derive(Clone, Debug)]
pub(crate) struct AppendSample {
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

pub(crate) async fn append_run(
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
pub(crate) fn pooled(slices: &[&AppendSample]) -> AppendSample {
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

fn print_append_columns() {
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
}

/// What one case measured per variant: pooled events/s and the median over rounds of its
/// ratio to `against`.
pub(crate) struct CaseResult {
    pub(crate) rate: HashMap<&'static str, f64>,
    pub(crate) ratio: HashMap<&'static str, f64>,
    /// events/s per round and variant.
    rounds: Vec<HashMap<&'static str, f64>>,
}

impl CaseResult {
    /// Median over rounds of `a`/`b`.
    pub(crate) fn pair_ratio(&self, a: &str, b: &str) -> f64 {
        let mut ratios: Vec<f64> = self
            .rounds
            .iter()
            .filter_map(|round| Some(round.get(a)? / round.get(b)?))
            .collect();
        quartiles(&mut ratios).0
    }
}

/// Runs one case (writers x batch) of `variants`: a warm-up of each, then `--seconds` /
/// `--slice` rounds of one slice per variant in ABBA order; prints a line per variant with
/// its ratio to the first variant (the baseline), and returns the ratios of every variant to
/// `against` per round (median).
pub(crate) async fn run_case(
    ctx: &Arc<Ctx>,
    variants: &[Variant],
    writers: usize,
    batch: usize,
    against: Variant,
    // Keeps the streams of one phase apart from another's.
    label: &str,
) -> Result<CaseResult> {
    let slice = Duration::from_secs_f64(ctx.args.slice.max(0.05));
    let slices = (ctx.args.seconds / slice.as_secs_f64()).ceil().max(1.0) as usize;
    let warmup = Duration::from_secs_f64(ctx.args.warmup);
    // Start every case from a fresh checkpoint, so that full-page writes and background
    // flushing fall on all variants alike (needs superuser or pg_checkpoint; optional).
    let _ = sqlx::raw_sql("CHECKPOINT").execute(&ctx.pool).await;
    if !warmup.is_zero() {
        for &v in variants {
            append_run(ctx, v, writers, batch, &format!("{label}warm"), warmup).await?;
        }
    }
    // rounds[r] holds one slice of every variant, run back to back.
    let mut rounds: Vec<Vec<AppendSample>> = Vec::new();
    for r in 0..slices {
        let mut order = variants.to_vec();
        if r % 2 == 1 {
            order.reverse();
        }
        let mut round = Vec::new();
        for &v in &order {
            round.push(append_run(ctx, v, writers, batch, &format!("{label}s{r}"), slice).await?);
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
    let baseline = variants[0];
    let mut result = CaseResult {
        rate: HashMap::new(),
        ratio: HashMap::new(),
        rounds: rounds
            .iter()
            .map(|round| {
                round
                    .iter()
                    .map(|s| (s.variant.key(), s.events_per_s()))
                    .collect()
            })
            .collect(),
    };
    for &v in variants {
        let mine: Vec<&AppendSample> = rounds.iter().flatten().filter(|s| s.variant == v).collect();
        let s = pooled(&mine);
        let ratios_to = |base: Variant| {
            let mut ratios: Vec<f64> = rounds
                .iter()
                .filter_map(|round| Some(of(round, v)? / of(round, base)?))
                .collect();
            quartiles(&mut ratios)
        };
        let (median, q1, q3) = ratios_to(baseline);
        result.rate.insert(v.key(), s.events_per_s());
        result.ratio.insert(v.key(), ratios_to(against).0);
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
    Ok(result)
}

pub(crate) async fn append_bench(ctx: &Arc<Ctx>) -> Result<Vec<Row>> {
    let slice = ctx.args.slice.max(0.05);
    let slices = (ctx.args.seconds / slice).ceil().max(1.0) as usize;
    println!();
    println!(
        "APPEND  ({} slices of {:.2}s per variant and case, alternating raw/store in ABBA order, \
         after {:.1}s warm-up each)",
        slices, slice, ctx.args.warmup
    );
    println!(
        "  events/s, cmds/s: all slices pooled. vs raw: median over slice pairs of store/raw \
         [interquartile range]."
    );
    print_append_columns();
    let mut rows = Vec::new();
    for &batch in &ctx.args.batch {
        for &writers in &ctx.args.writers {
            let mut variants = vec![Variant::Raw, Variant::Store];
            if ctx.args.diagnose {
                variants.extend(diagnostic_variants());
            }
            if let Some(only) = &ctx.args.variants {
                variants.retain(|v| only.iter().any(|o| o == v.key()));
            }
            if variants.first() != Some(&Variant::Raw) {
                bail!("--variants must include raw, the baseline");
            }
            let case = run_case(ctx, &variants, writers, batch, Variant::Raw, "").await?;
            if let (true, Some(&ratio)) = (writers >= 8, case.ratio.get("store")) {
                rows.push(verdict(
                    &format!("append, {writers} writers x {batch} event(s)"),
                    format!("{} events/s", fmt_rate(case.rate["store"])),
                    format!("raw INSERT {} events/s", fmt_rate(case.rate["raw"])),
                    ratio,
                    0.8,
                ));
            }
        }
    }
    Ok(rows)
}

/// The peer phase: creating a lead (one event) through our `CommandHandler` and through
/// `postgres-es` + `cqrs-es`, beside the raw INSERT, at each `--writers`.
pub(crate) async fn peer_bench(ctx: &Arc<Ctx>) -> Result<Vec<Row>> {
    let slice = ctx.args.slice.max(0.05);
    let slices = (ctx.args.seconds / slice).ceil().max(1.0) as usize;
    println!();
    println!(
        "PEER  (create a lead, 1 event per command, new aggregate each time; {slices} slices of \
         {slice:.2}s per variant, ABBA order, after {:.1}s warm-up each)",
        ctx.args.warmup
    );
    println!(
        "  store create = CommandHandler::execute_new (the product's creation path: decide, one \
         append statement); store cmd = CommandHandler::execute (load, decide, append); \
         postgres-es = CqrsFramework::execute_with_metadata (load, BEGIN, INSERT, COMMIT) on the \
         pool its docs build (ping before acquire); pg-es our pool = the same on the bench's pool; \
         raw = one autocommit INSERT of a lead row."
    );
    print_append_columns();
    let variants = [
        Variant::Raw,
        Variant::StoreCreate,
        Variant::StoreCmd,
        Variant::Peer,
        Variant::PeerSamePool,
    ];
    let mut rows = Vec::new();
    for &writers in &ctx.args.writers {
        let vs_peer = run_case(ctx, &variants, writers, 1, Variant::Peer, "peer-").await?;
        // The like-for-like pair needs its own per-round ratios (same rounds, other base).
        let cmd = vs_peer.pair_ratio("store-cmd", "peer-same-pool");
        let create = vs_peer.ratio["store-create"];
        println!(
            "  {writers} writers: store create / postgres-es = {create:.2}x; \
             store cmd / pg-es our pool = {cmd:.2}x (medians over rounds)"
        );
        if writers >= 8 {
            let rate = |k: &str| fmt_rate(vs_peer.rate[k]);
            rows.push(verdict(
                &format!("creating a lead, {writers} writers: store vs postgres-es"),
                format!("{} cmds/s", rate("store-create")),
                format!(
                    "postgres-es {} cmds/s (raw INSERT {})",
                    rate("peer"),
                    rate("raw")
                ),
                create,
                1.5,
            ));
            rows.push(Row {
                measurement:
                    "same, like for like: execute (load + append) vs postgres-es on our pool"
                        .to_string(),
                figure: format!("{} cmds/s", rate("store-cmd")),
                baseline: format!("pg-es our pool {} cmds/s", rate("peer-same-pool")),
                ratio: Some(cmd),
                target: "-".into(),
                pass: None,
            });
        }
    }
    Ok(rows)
}

// ---------------------------------------------------------------------------------------------
// Diagnostics: CPU per append, one connection, no fsync wait

pub(crate) fn diagnostic_variants() -> Vec<Variant> {
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
pub(crate) async fn cpu_profile(ctx: &Arc<Ctx>) -> Result<()> {
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
        peer: None,
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
