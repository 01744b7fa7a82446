//! Phase 1, catch-up read: `EventStore::read_page` over the whole log vs. a plain keyset
//! loop over the same rows.

use super::*;

/// The brief's baseline: keyset on global_position alone (needs an index on it; the bench
/// creates one for the duration of the read measurement, see README).
pub(crate) const RAW_READ_BY_POSITION: &str = r#"
SELECT global_position, transaction_id, event_id, aggregate_type, aggregate_id, sequence,
       event_type, event_version, payload, metadata, recorded_at
  FROM events
 WHERE global_position > $1
 ORDER BY global_position
 LIMIT $2
"#;

/// Diagnostic baseline: the store's order and index, without the xmin fence (a bench
/// database has only epoch 0).
pub(crate) const RAW_READ_BY_PAIR: &str = r#"
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
pub(crate) struct RawEventRow {
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
pub(crate) enum ReadVariant {
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

pub(crate) struct ReadSample {
    variant: ReadVariant,
    events: u64,
    pages: u64,
    secs: f64,
    self_cpu: f64,
    pg_cpu: f64,
    host_busy: f64,
}

pub(crate) async fn read_pass(ctx: &Ctx, variant: ReadVariant) -> Result<ReadSample> {
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
pub(crate) async fn seed(ctx: &Arc<Ctx>, n: i64) -> Result<()> {
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

pub(crate) async fn read_bench(ctx: &Arc<Ctx>) -> Result<Row> {
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
    let mut median_rate = HashMap::new();
    for &v in &variants {
        let mut passes: Vec<&ReadSample> = by_round
            .iter()
            .flatten()
            .filter(|x| x.variant == v)
            .collect();
        let listed: Vec<String> = passes.iter().map(|x| fmt_rate(rate(x))).collect();
        passes.sort_by(|a, b| rate(a).total_cmp(&rate(b)));
        let s = passes[passes.len() / 2];
        median_rate.insert(v.name(), rate(s));
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
    Ok(verdict(
        &format!("catch-up read, pages of {}", ctx.args.page_size),
        format!(
            "{} events/s",
            fmt_rate(median_rate[ReadVariant::Store.name()])
        ),
        format!(
            "raw SELECT {} events/s",
            fmt_rate(median_rate[ReadVariant::RawPosition.name()])
        ),
        store_ratio,
        0.5,
    ))
}
