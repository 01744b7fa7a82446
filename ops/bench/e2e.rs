//! Issue 4's measurements on a real gateway started in this process (`startup::run` on
//! 127.0.0.1:0, its own scratch database), and the place issue 12's `verify` phase
//! (`verify.rs`) runs on the same gateway:
//!
//! * `landing`: `POST /v1/leads` end to end (HTTP → lead event appended → 201) at
//!   `--landing-clients` concurrent clients, against a raw `INSERT INTO events` of the same
//!   row at the same concurrency, alternating slices in ABBA order;
//! * `live`: commit-to-delivery latency of `NEW_LEAD` on `--live-sockets` authenticated
//!   `/ws/admin` sockets while leads are created at a modest rate.
//!
//! All traffic goes to 127.0.0.1 (the gateway) and to the database server. The
//! `X-Forwarded-For` addresses (10.0.0.0/8) are header values only: the gateway trusts
//! 127.0.0.1 as a proxy, so each synthetic address is its own client for the landing
//! endpoint's per-IP rate limit. Nothing is ever sent to them.

use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use aggregates::lead::{Lead, LeadSource};
use anyhow::{Context, Result, anyhow, bail};
use eventstore::sealing::Sealer;
use eventstore::{CommandHandler, Cursor, EventStore, Metadata, NewEvent, StreamId};
use futures_util::{SinkExt, StreamExt};
use gateway::config::Config;
use gateway::leads::{LeadService, Submission};
use projections::leads::Personal;
use serde_json::{Value, json};
use sqlx::postgres::PgConnectOptions;
use sqlx::types::Json;
use sqlx::{ConnectOptions, Connection, PgPool};
use tokio::sync::{oneshot, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

use super::{Args, Ctx, Phase, Row, cores, fmt_rate, probe, quartiles, verdict};

/// Fixed test secrets (like `tests/api/helpers.rs`); the gateway runs in development mode
/// against a scratch database that is dropped afterwards.
const ADMIN_SECRET: &str = "bench-admin-secret-0123456789abcdefXYZ";
const JWT_SECRET: &str = "bench-jwt-secret-0123456789abcdefghijklmnop";
pub(crate) const ENCRYPTION_KEY: &str =
    "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
const LICENSE_SIGNING_KEY: &str = "3Ua8RcFnUnHNA4HIPKfI5vli0hSTD1/cPjBdn/MJgEE=";
const LANDING_KEY: &str = "lk_bench_0123456789abcdefghij";
const ROOT_EMAIL: &str = "root@example.com";
const ROOT_PASSWORD: &str = "Root-Password-123";
/// The gateway's pool size (`startup::Database::open` connects with 16); the raw baseline
/// gets a pool of the same size from the same constructor.
const GATEWAY_POOL: u32 = 16;
/// Aggregate type of the raw baseline's rows: every projection and the live feed skip
/// aggregates other than their own, so the raw rows are read (like every event) but not
/// handled.
const RAW_AGGREGATE: &str = "bench-lead";
/// Upper bound for every wait on the gateway (start, drain, stop, a request).
const PATIENCE: Duration = Duration::from_secs(30);
const USER_AGENT: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 \
                          (KHTML, like Gecko) Chrome/124.0 Safari/537.36";

/// How to talk to the gateway: its address and a keep-alive HTTP client. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Gateway {
    pub(crate) addr: SocketAddr,
    pub(crate) client: reqwest::Client,
}

/// The gateway's server task in this process; stopped by [`Server::stop`] or on drop.
struct Server {
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<()>>>,
}

impl Gateway {
    async fn start(database_url: &str) -> Result<(Self, Server)> {
        let vars: HashMap<&str, String> = [
            ("DATABASE_URL", database_url.to_string()),
            ("BIND", "127.0.0.1:0".into()),
            ("ADMIN_SECRET", ADMIN_SECRET.into()),
            ("JWT_SECRET", JWT_SECRET.into()),
            ("ENCRYPTION_KEY", ENCRYPTION_KEY.into()),
            ("LANDING_API_KEYS", LANDING_KEY.into()),
            ("LICENSE_SIGNING_KEY", LICENSE_SIGNING_KEY.into()),
            ("BOOTSTRAP_ADMIN_EMAIL", ROOT_EMAIL.into()),
            ("BOOTSTRAP_ADMIN_PASSWORD", ROOT_PASSWORD.into()),
            // The bench client is the "proxy": X-Forwarded-For names the client.
            ("TRUSTED_PROXIES", "127.0.0.1/32".into()),
        ]
        .into_iter()
        .collect();
        let config = Config::from_vars(|name| vars.get(name).cloned())?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(gateway::startup::run(config, listener, async move {
            let _ = rx.await;
        }));
        let client = reqwest::Client::builder()
            .no_proxy()
            .tcp_nodelay(true)
            .user_agent(USER_AGENT)
            .connect_timeout(Duration::from_secs(5))
            .timeout(PATIENCE)
            .build()?;
        let gateway = Gateway { addr, client };
        let mut server = Server {
            shutdown: Some(tx),
            task: Some(task),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if server.task.as_ref().is_some_and(|t| t.is_finished()) {
                let task = server.task.take().expect("checked above");
                return Err(match task.await {
                    Ok(Ok(())) => anyhow!("the gateway stopped during start-up"),
                    Ok(Err(e)) => e.context("starting the gateway"),
                    Err(e) => anyhow!("the gateway task failed: {e}"),
                });
            }
            if let Ok(r) = gateway.client.get(gateway.url("/ready")).send().await
                && r.status().is_success()
            {
                return Ok((gateway, server));
            }
            if Instant::now() >= deadline {
                bail!("the gateway was not ready within 60 s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The live feed's position and socket count, from `/ready`.
    async fn live_status(&self) -> Result<(Cursor, u64)> {
        let ready: Value = self
            .client
            .get(self.url("/ready"))
            .send()
            .await?
            .json()
            .await?;
        let live = &ready["data"]["liveFeed"];
        let cursor = live["cursor"]
            .as_str()
            .ok_or_else(|| anyhow!("/ready has no liveFeed cursor: {ready}"))?
            .parse::<Cursor>()
            .map_err(|e| anyhow!("/ready liveFeed cursor: {e}"))?;
        Ok((cursor, live["sockets"].as_u64().unwrap_or(0)))
    }
}

impl Server {
    /// Graceful shutdown (closes the admin sockets, stops the projections, closes the pool).
    async fn stop(mut self) -> Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let Some(task) = self.task.take() else {
            return Ok(());
        };
        match tokio::time::timeout(PATIENCE, task).await {
            Ok(Ok(result)) => result.context("the gateway's shutdown"),
            Ok(Err(e)) => Err(anyhow!("the gateway task failed: {e}")),
            Err(_) => Err(anyhow!("the gateway did not stop within {PATIENCE:?}")),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// The database URL of `db` on the server of `base` (same credentials and parameters).
pub(crate) fn database_url_for(base: &str, db: &str) -> Result<String> {
    let (head, query) = match base.split_once('?') {
        Some((head, query)) => (head, Some(query)),
        None => (base, None),
    };
    let scheme_end = head
        .find("://")
        .map(|i| i + 3)
        .ok_or_else(|| anyhow!("DATABASE_URL has no scheme"))?;
    let rest = &head[scheme_end..];
    let authority = rest.split('/').next().unwrap_or(rest);
    let mut url = format!("{}{authority}/{db}", &head[..scheme_end]);
    if let Some(query) = query {
        url.push('?');
        url.push_str(query);
    }
    Ok(url)
}

/// Runs the selected gateway phases against a fresh gateway on `db_opts` / `db_url`; the
/// table rows.
pub(crate) async fn run(
    args: &Args,
    db_opts: PgConnectOptions,
    db_url: &str,
    run_tag: &str,
) -> Result<Vec<Row>> {
    let t0 = Instant::now();
    let (gateway, server) = Gateway::start(db_url).await?;
    let started = t0.elapsed();
    let outcome = async {
        let pool = eventstore::connect(db_opts.clone(), GATEWAY_POOL)
            .await
            .context("connecting the raw baseline's pool")?;
        let ctx = Arc::new(Ctx {
            args: args.clone(),
            store: EventStore::new(pool.clone()),
            pool: pool.clone(),
            probe: tokio::sync::Mutex::new(db_opts.connect().await?),
            run_tag: run_tag.to_string(),
            db_opts: db_opts.clone(),
            peer: None,
        });
        println!();
        println!(
            "gateway: in-process `startup::run` on {} (started, migrated, bootstrap admin in {:.1}s), \
             pool 16 conns; no log subscriber installed",
            gateway.addr,
            started.as_secs_f64()
        );
        let shared = Arc::new(Shared {
            next: AtomicU64::new(0),
            dup_pct: args.landing_duplicates.min(50),
        });
        let mut verdicts = Vec::new();
        if args.selected(Phase::Landing) {
            verdicts.push(landing_bench(&ctx, &gateway, &shared).await?);
        }
        if args.selected(Phase::Live) {
            verdicts.push(live_bench(&ctx, &gateway, &shared).await?);
        }
        if args.selected(Phase::Verify) {
            verdicts.extend(super::verify::verify_bench(&ctx, &gateway).await?);
        }
        if let Ok(ctx) = Arc::try_unwrap(ctx) {
            ctx.probe.into_inner().close().await.ok();
        }
        pool.close().await;
        anyhow::Ok(verdicts)
    }
    .await;
    let stopped = server.stop().await;
    let verdicts = outcome?;
    stopped?;
    Ok(verdicts)
}

// ---------------------------------------------------------------------------------------------
// Submissions

/// Submission numbering, shared by both phases: each number is a distinct synthetic client
/// address and (unless it is a duplicate) a distinct e-mail and phone.
struct Shared {
    next: AtomicU64,
    /// Per cent of landing submissions that reuse an earlier submission's contact.
    dup_pct: u64,
}

impl Shared {
    /// (synthetic client address, contact number) of the next submission; `may_repeat`: it
    /// may be a duplicate (landing phase only; the live phase needs one lead per POST).
    fn next(&self, may_repeat: bool) -> Result<(Ipv4Addr, u64)> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        // 10.0.0.1 … 10.255.255.254: header values only, never contacted.
        if n >= (1 << 24) - 2 {
            bail!("out of synthetic client addresses");
        }
        let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 0, 0, 1)) + n as u32);
        // A duplicate repeats the contact of the submission 1000 before it (long finished,
        // so its lead exists and is open): a resubmission.
        let contact = if may_repeat && self.dup_pct > 0 && n >= 2000 && n % 100 < self.dup_pct {
            n - 1000
        } else {
            n
        };
        Ok((ip, contact))
    }
}

/// The landing form for contact number `c`: unique e-mail and phone per contact.
fn lead_form(c: u64) -> Value {
    json!({
        "name": "Ayşe Yılmaz",
        "email": format!("ayse.yilmaz.{c}@example.com.tr"),
        "phone": format!(
            "+90 5{:02} {:03} {:02} {:02}",
            (c / 10_000_000) % 100,
            (c / 10_000) % 1000,
            (c / 100) % 100,
            c % 100
        ),
        "company": "Yılmaz Muhasebe Ltd. Şti.",
        "message": "Merhaba, e-fatura ve e-defter entegrasyonu hakkında bilgi almak istiyorum.",
        "source": "landing_page",
        "utm_source": "google",
        "utm_campaign": "spring-2026",
    })
}

/// The same submission as [`lead_form`] after the gateway's validation (normalised phone), for
/// the diagnostic that calls `LeadService::submit` directly.
fn lead_submission(c: u64) -> Submission {
    Submission {
        id: uuid::Uuid::new_v4(),
        personal: Personal {
            name: "Ayşe Yılmaz".into(),
            email: format!("ayse.yilmaz.{c}@example.com.tr"),
            phone: format!("+905{:09}", c % 1_000_000_000),
            company: Some("Yılmaz Muhasebe Ltd. Şti.".into()),
            message: Some(
                "Merhaba, e-fatura ve e-defter entegrasyonu hakkında bilgi almak istiyorum.".into(),
            ),
            ip: Some("203.0.113.7".into()),
            user_agent: Some("bench".into()),
        },
        source: LeadSource::LandingPage,
        utm_source: Some("google".into()),
        utm_campaign: Some("spring-2026".into()),
    }
}

/// One landing submission, answered 201: the submitted e-mail. It is what ties the POST to the
/// lead's `NEW_LEAD` (the 201's id names the submission, never the lead).
async fn submit(gateway: &Gateway, shared: &Shared, may_repeat: bool) -> Result<String> {
    let (ip, contact) = shared.next(may_repeat)?;
    let response = gateway
        .client
        .post(gateway.url("/v1/leads"))
        .header("X-API-Key", LANDING_KEY)
        .header("X-Forwarded-For", ip.to_string())
        .json(&lead_form(contact))
        .send()
        .await
        .context("POST /v1/leads")?;
    let status = response.status();
    let body = response.bytes().await.context("reading the 201's body")?;
    if status != reqwest::StatusCode::CREATED {
        bail!(
            "POST /v1/leads answered {status}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    let body: Value = serde_json::from_slice(&body)?;
    if body["data"]["id"].as_str().is_none() {
        bail!("201 without data.id: {body}");
    }
    Ok(lead_form(contact)["email"]
        .as_str()
        .unwrap_or_default()
        .to_string())
}

/// The row the raw baseline inserts: a real `LeadCreated` event's type, version, payload and
/// metadata, copied from the log.
struct Template {
    event_type: String,
    event_version: String,
    payload: Value,
    metadata: Metadata,
}

async fn raw_insert(pool: &PgPool, sql: &str, t: &Template) -> Result<()> {
    let done = sqlx::query(sql)
        .bind(Uuid::now_v7())
        .bind(RAW_AGGREGATE)
        .bind(Uuid::now_v7().to_string())
        .bind(1i64)
        .bind(&t.event_type)
        .bind(&t.event_version)
        .bind(&t.payload)
        .bind(Json(&t.metadata))
        .execute(pool)
        .await?;
    if done.rows_affected() != 1 {
        bail!("raw insert wrote {} rows", done.rows_affected());
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Waiting for the gateway's background work

/// Waits until every projection and the live feed have dealt with every event in the log, so
/// that each slice starts with an idle gateway and the work a slice caused is charged to it.
async fn drain(ctx: &Ctx, gateway: &Gateway) -> Result<Duration> {
    drain_within(ctx, gateway, PATIENCE).await
}

/// [`drain`] with its own patience (a large seeded backlog takes longer than a slice's).
pub(crate) async fn drain_within(
    ctx: &Ctx,
    gateway: &Gateway,
    patience: Duration,
) -> Result<Duration> {
    let t0 = Instant::now();
    loop {
        // The true head: every writer has finished, so nothing is in flight.
        let head: Option<(i64, i64, i64)> = sqlx::query_as(
            "SELECT epoch, transaction_id, global_position FROM events
              ORDER BY epoch DESC, transaction_id DESC, global_position DESC LIMIT 1",
        )
        .fetch_optional(&ctx.pool)
        .await?;
        let head = head.map_or(Cursor::START, |(e, tx, pos)| Cursor::new(e, tx, pos));
        let rows: Vec<(String, i64, i64, i64, String, Option<String>)> = sqlx::query_as(
            "SELECT name, epoch, transaction_id, global_position, status, last_error
               FROM projection_checkpoints",
        )
        .fetch_all(&ctx.pool)
        .await?;
        if let Some((name, _, _, _, _, error)) = rows.iter().find(|r| r.4 == "failed") {
            bail!(
                "projection {name} failed: {}",
                error.as_deref().unwrap_or("?")
            );
        }
        if !rows.is_empty() && rows.iter().all(|r| Cursor::new(r.1, r.2, r.3) >= head) {
            let (feed, _) = gateway.live_status().await?;
            if feed >= head {
                return Ok(t0.elapsed());
            }
        }
        if t0.elapsed() > patience {
            bail!("the projections or the live feed did not catch up within {patience:?}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Landing throughput

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// One `INSERT INTO events` of the template row.
    Raw,
    /// `EventStore::append` of the template row to a new stream (diagnostic).
    Store,
    /// `LeadService::submit` called directly, on a pool of 16: the landing command path
    /// without HTTP (diagnostic).
    Service,
    /// `POST /v1/leads` to the gateway.
    Landing,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Raw => "raw INSERT",
            Kind::Store => "store append",
            Kind::Service => "LeadService",
            Kind::Landing => "POST /v1/leads",
        }
    }
}

/// What the slices need besides the gateway.
struct Workload {
    template: Option<Arc<Template>>,
    /// For [`Kind::Service`]: a `LeadService` of our own on the raw baseline's pool.
    service: Option<LeadService>,
    sql: String,
}

impl Workload {
    async fn one(&self, ctx: &Ctx, gateway: &Gateway, shared: &Shared, kind: Kind) -> Result<()> {
        let template = || {
            self.template
                .as_deref()
                .ok_or_else(|| anyhow!("no template row yet"))
        };
        match kind {
            Kind::Landing => {
                submit(gateway, shared, true).await?;
            }
            Kind::Raw => raw_insert(&ctx.pool, &self.sql, template()?).await?,
            Kind::Store => {
                let t = template()?;
                let stream = StreamId::new(RAW_AGGREGATE, Uuid::now_v7().to_string());
                let event = NewEvent::new(
                    t.event_type.clone(),
                    t.event_version.clone(),
                    t.payload.clone(),
                    t.metadata.clone(),
                );
                ctx.store.append(&stream, 0, &[event]).await?;
            }
            Kind::Service => {
                let service = self
                    .service
                    .as_ref()
                    .ok_or_else(|| anyhow!("no LeadService"))?;
                let (ip, contact) = shared.next(true)?;
                let metadata = Metadata {
                    actor: Some("landing".into()),
                    ip: Some(ip.to_string()),
                    user_agent: Some(USER_AGENT.into()),
                    correlation_id: Some(Uuid::new_v4().to_string()),
                    causation_id: None,
                };
                service
                    .submit(lead_submission(contact), &metadata)
                    .await
                    .map_err(|e| anyhow!("LeadService::submit: {e:?}"))?;
            }
        }
        Ok(())
    }
}

struct Slice {
    kind: Kind,
    /// Submissions completed within the slice (the rate).
    counted: u64,
    /// All submissions started in the slice, including the ones finishing after it (the
    /// divisor of CPU and WAL, which are measured until the gateway is idle again).
    completed: u64,
    secs: f64,
    lat_us: Vec<u32>,
    self_cpu: f64,
    pg_cpu: f64,
    host_busy: f64,
    wal: i64,
    drain: Duration,
    /// Events the slowest projection had not handled yet when the slice's requests were done.
    backlog: i64,
    /// CPU (this process, server) spent while draining that backlog.
    drain_cpu: (f64, f64),
}

impl Slice {
    fn rate(&self) -> f64 {
        self.counted as f64 / self.secs
    }
}

async fn landing_slice(
    ctx: &Arc<Ctx>,
    gateway: &Arc<Gateway>,
    shared: &Arc<Shared>,
    work: &Arc<Workload>,
    kind: Kind,
    measured: Duration,
) -> Result<Slice> {
    let clients = ctx.args.landing_clients.max(1);
    let t_start = Instant::now();
    let t_end = t_start + measured;
    let p0 = probe(ctx).await?;
    let mut tasks = JoinSet::new();
    for _ in 0..clients {
        let (ctx, gateway, shared, work) = (
            Arc::clone(ctx),
            Arc::clone(gateway),
            Arc::clone(shared),
            Arc::clone(work),
        );
        tasks.spawn(async move {
            let (mut counted, mut completed) = (0u64, 0u64);
            let mut lat = Vec::with_capacity(1024);
            loop {
                let began = Instant::now();
                if began >= t_end {
                    break;
                }
                work.one(&ctx, &gateway, &shared, kind)
                    .await
                    .with_context(|| kind.name())?;
                completed += 1;
                let done = Instant::now();
                if done <= t_end {
                    counted += 1;
                    lat.push((done - began).as_micros().min(u32::MAX as u128) as u32);
                }
            }
            anyhow::Ok((counted, completed, lat))
        });
    }
    let (mut counted, mut completed, mut lat_us) = (0, 0, Vec::new());
    while let Some(joined) = tasks.join_next().await {
        let (c, d, l) = joined??;
        counted += c;
        completed += d;
        lat_us.extend(l);
    }
    let p_mid = probe(ctx).await?;
    let backlog: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events
          WHERE (epoch, transaction_id, global_position) >
                (SELECT epoch, transaction_id, global_position FROM projection_checkpoints
                  ORDER BY epoch, transaction_id, global_position LIMIT 1)",
    )
    .fetch_one(&ctx.pool)
    .await?;
    let drained = drain(ctx, gateway).await?;
    let p1 = probe(ctx).await?;
    Ok(Slice {
        kind,
        counted,
        completed,
        secs: measured.as_secs_f64(),
        lat_us,
        self_cpu: p1.self_cpu - p0.self_cpu,
        pg_cpu: p1.pg_since(&p0),
        host_busy: p1.host_busy - p0.host_busy,
        wal: p1.wal - p0.wal,
        drain: drained,
        backlog,
        drain_cpu: (p1.self_cpu - p_mid.self_cpu, p1.pg_since(&p_mid)),
    })
}

async fn landing_bench(ctx: &Arc<Ctx>, gateway: &Gateway, shared: &Arc<Shared>) -> Result<Row> {
    let gw = Arc::new(gateway.clone());
    let args = &ctx.args;
    let clients = args.landing_clients.max(1);
    let slice = Duration::from_secs_f64(args.landing_slice.max(0.1));
    let slices = (args.landing_seconds / slice.as_secs_f64()).ceil().max(1.0) as usize;
    let warmup = Duration::from_secs_f64(args.warmup.max(0.2));

    let mut variants = vec![Kind::Raw];
    if args.diagnose {
        variants.extend([Kind::Store, Kind::Service]);
    }
    variants.push(Kind::Landing);
    let mut work = Workload {
        template: None,
        service: args.diagnose.then(|| {
            let sealer = Sealer::new(
                ctx.pool.clone(),
                gateway::config::parse_key(ENCRYPTION_KEY).expect("a valid test key"),
            );
            LeadService::new(
                ctx.pool.clone(),
                sealer,
                CommandHandler::<Lead>::new(ctx.store.clone(), ()),
            )
        }),
        sql: super::raw_insert_sql(1, false),
    };

    let _ = sqlx::raw_sql("CHECKPOINT").execute(&ctx.pool).await;
    drain(ctx, &gw).await?;
    // Warm up the gateway first: its first event is the raw baseline's template row.
    let unready = Arc::new(Workload {
        template: None,
        service: None,
        sql: String::new(),
    });
    landing_slice(ctx, &gw, shared, &unready, Kind::Landing, warmup).await?;
    let (event_type, event_version, payload, metadata, payload_len, meta_len): (
        String,
        String,
        Value,
        Json<Metadata>,
        i32,
        i32,
    ) = sqlx::query_as(
        "SELECT event_type, event_version, payload, metadata,
                octet_length(payload::text), octet_length(metadata::text)
           FROM events WHERE aggregate_type = 'lead' ORDER BY global_position DESC LIMIT 1",
    )
    .fetch_one(&ctx.pool)
    .await
    .context("reading a lead event as the raw baseline's template")?;
    work.template = Some(Arc::new(Template {
        event_type,
        event_version,
        payload,
        metadata: metadata.0,
    }));
    let work = Arc::new(work);
    for &kind in &variants {
        if kind != Kind::Landing {
            landing_slice(ctx, &gw, shared, &work, kind, warmup).await?;
        }
    }

    println!();
    println!(
        "LANDING  ({clients} concurrent clients; {slices} slices of {:.2}s per variant in ABBA order \
         after {:.1}s warm-up each; the gateway's projections and live feed are drained after \
         every slice)",
        slice.as_secs_f64(),
        warmup.as_secs_f64()
    );
    println!(
        "  POST /v1/leads: keep-alive reqwest client, X-API-Key, JSON form, own X-Forwarded-For per \
         request (10.x.y.z); {}.",
        if shared.dup_pct == 0 {
            "unique e-mail and phone per submission (every one creates a lead)".to_string()
        } else {
            format!(
                "{}% of submissions repeat an earlier contact (resubmissions), the rest unique",
                shared.dup_pct
            )
        }
    );
    println!(
        "  raw INSERT: one autocommit `INSERT INTO events … VALUES (8 params)` per submission through \
         eventstore::connect(.., 16), copying a real LeadCreated row ({payload_len} B payload, {meta_len} B \
         metadata; aggregate_type '{RAW_AGGREGATE}')"
    );
    println!(
        "  subs/s: all slices pooled. p50/p99: per submission. cli/pg µs: CPU per submission of this \
         process (gateway + client) / of the database's server processes, until the gateway is idle \
         again. drain: time for projections + feed to catch up after a slice (median)."
    );
    if args.diagnose {
        println!(
            "  --diagnose: store append = EventStore::append of that row to a new stream; \
             LeadService = LeadService::submit called directly on our pool of 16 (no HTTP; its \
             appends wake the gateway's subscribers only through their 100 ms poll). bg: CPU per \
             event of the projections + live feed, from draining the backlog left at slice ends."
        );
    }
    println!(
        "{:<15} {:>7} {:>6} {:>6} {:>6} {:>6} {:>4} {:>6} {:>6} {:>6}  IQR",
        "variant",
        "subs/s",
        "p50ms",
        "p99ms",
        "cli µs",
        "pg µs",
        "CPU%",
        "WAL B",
        "drain",
        "vs raw"
    );

    let mut rounds: Vec<Vec<Slice>> = Vec::new();
    for r in 0..slices {
        let mut order = variants.clone();
        if r % 2 == 1 {
            order.reverse();
        }
        let mut round = Vec::new();
        for kind in order {
            round.push(landing_slice(ctx, &gw, shared, &work, kind, slice).await?);
        }
        rounds.push(round);
    }
    let of = |round: &[Slice], k: Kind| round.iter().find(|s| s.kind == k).map(Slice::rate);
    let mut landing_ratio = f64::NAN;
    let mut per_round = Vec::new();
    let mut background = Vec::new();
    for &k in &variants {
        let mine: Vec<&Slice> = rounds.iter().flatten().filter(|s| s.kind == k).collect();
        let counted: u64 = mine.iter().map(|s| s.counted).sum();
        let completed: u64 = mine.iter().map(|s| s.completed).sum::<u64>().max(1);
        let secs: f64 = mine.iter().map(|s| s.secs).sum();
        let mut lat: Vec<u32> = mine.iter().flat_map(|s| s.lat_us.iter().copied()).collect();
        lat.sort_unstable();
        let pct = |p: f64| {
            if lat.is_empty() {
                f64::NAN
            } else {
                lat[((lat.len() - 1) as f64 * p).round() as usize] as f64 / 1000.0
            }
        };
        let self_cpu: f64 = mine.iter().map(|s| s.self_cpu).sum();
        let pg_cpu: f64 = mine.iter().map(|s| s.pg_cpu).sum();
        let host_busy: f64 = mine.iter().map(|s| s.host_busy).sum();
        let wall: f64 = mine
            .iter()
            .map(|s| s.secs + s.drain.as_secs_f64())
            .sum::<f64>();
        let wal: i64 = mine.iter().map(|s| s.wal).sum();
        let mut drains: Vec<f64> = mine.iter().map(|s| s.drain.as_secs_f64() * 1e3).collect();
        let (drain_ms, _, _) = quartiles(&mut drains);
        let mut ratios: Vec<f64> = rounds
            .iter()
            .filter_map(|round| Some(of(round, k)? / of(round, Kind::Raw)?))
            .collect();
        let (median, q1, q3) = quartiles(&mut ratios);
        if k == Kind::Landing {
            landing_ratio = median;
            per_round = rounds
                .iter()
                .map(|round| {
                    format!(
                        "{}/{}",
                        fmt_rate(of(round, Kind::Landing).unwrap_or(f64::NAN)),
                        fmt_rate(of(round, Kind::Raw).unwrap_or(f64::NAN))
                    )
                })
                .collect();
        }
        let backlog: i64 = mine.iter().map(|s| s.backlog).sum();
        // Too small a backlog and the drain's fixed costs (its own polling) dominate.
        if backlog >= 100 * mine.len() as i64 {
            let (cli, pg) = mine.iter().fold((0.0, 0.0), |(a, b), s| {
                (a + s.drain_cpu.0, b + s.drain_cpu.1)
            });
            background.push(format!(
                "{}: {:.0} events left per slice, bg ≈ {:.0} µs cli + {:.0} µs pg per event",
                k.name(),
                backlog as f64 / mine.len() as f64,
                cli / backlog as f64 * 1e6,
                pg / backlog as f64 * 1e6
            ));
        }
        println!(
            "{:<15} {:>7} {:>6.2} {:>6.2} {:>6.0} {:>6.0} {:>4.0} {:>6.0} {:>4.0}ms {:>5.2}x  [{:.2}-{:.2}]",
            k.name(),
            fmt_rate(counted as f64 / secs),
            pct(0.5),
            pct(0.99),
            self_cpu / completed as f64 * 1e6,
            pg_cpu / completed as f64 * 1e6,
            host_busy / (wall * cores()) * 100.0,
            wal as f64 / completed as f64,
            drain_ms,
            median,
            q1,
            q3,
        );
    }
    println!("  per round landing/raw subs/s: {}", per_round.join("  "));
    if args.diagnose {
        for line in &background {
            println!("  {line}");
        }
    }
    let pooled_rate = |k: Kind| {
        let mine: Vec<&Slice> = rounds.iter().flatten().filter(|s| s.kind == k).collect();
        let counted: u64 = mine.iter().map(|s| s.counted).sum();
        let secs: f64 = mine.iter().map(|s| s.secs).sum();
        counted as f64 / secs
    };
    Ok(verdict(
        &format!("POST /v1/leads end to end, {clients} clients (projections, feed)"),
        format!("{} subs/s", fmt_rate(pooled_rate(Kind::Landing))),
        format!("raw INSERT {}/s", fmt_rate(pooled_rate(Kind::Raw))),
        landing_ratio,
        0.5,
    ))
}

// ---------------------------------------------------------------------------------------------
// Live feed: commit-to-delivery

/// What one socket saw: (lead id, when it arrived) per `NEW_LEAD`, and how it ended.
struct SocketLog {
    received: Vec<(String, Instant)>,
    other_messages: u64,
    ended: Option<String>,
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens `/ws/admin`, authenticates, waits for `AUTH_OK`.
async fn open_socket(gateway: &Gateway, token: &str) -> Result<Socket> {
    let url = format!("ws://{}/ws/admin", gateway.addr);
    let (mut socket, _) = tokio::time::timeout(
        Duration::from_secs(5),
        tokio_tungstenite::connect_async(url),
    )
    .await
    .context("WebSocket upgrade timed out")??;
    socket
        .send(Message::text(
            json!({"type": "auth", "token": token}).to_string(),
        ))
        .await?;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let message = tokio::time::timeout(left, socket.next())
            .await
            .context("no AUTH_OK within 5 s")?
            .ok_or_else(|| anyhow!("socket closed before AUTH_OK"))??;
        match message {
            Message::Text(text) => {
                let value: Value = serde_json::from_str(&text)?;
                if value["type"] == "AUTH_OK" {
                    return Ok(socket);
                }
                bail!("expected AUTH_OK, got {value}");
            }
            Message::Ping(_) | Message::Pong(_) => {}
            other => bail!("expected AUTH_OK, got {other:?}"),
        }
    }
}

/// Reads `NEW_LEAD`s until `expected` of them arrived, the socket ends, or `stop`.
async fn read_socket(
    mut socket: Socket,
    expected: usize,
    mut stop: watch::Receiver<bool>,
) -> (SocketLog, Socket) {
    let mut log = SocketLog {
        received: Vec::with_capacity(expected),
        other_messages: 0,
        ended: None,
    };
    while log.received.len() < expected {
        let message = tokio::select! {
            m = socket.next() => m,
            _ = stop.wait_for(|s| *s) => break,
        };
        let at = Instant::now();
        match message {
            Some(Ok(Message::Text(text))) => {
                let value: Value = match serde_json::from_str(&text) {
                    Ok(v) => v,
                    Err(e) => {
                        log.ended = Some(format!("unreadable message: {e}"));
                        break;
                    }
                };
                // Keyed by e-mail: the POST's answer names the submission, not the lead.
                match (value["type"].as_str(), value["data"]["email"].as_str()) {
                    (Some("NEW_LEAD"), Some(email)) => log.received.push((email.to_string(), at)),
                    _ => log.other_messages += 1,
                }
            }
            Some(Ok(Message::Close(frame))) => {
                log.ended = Some(format!("closed by the server: {frame:?}"));
                break;
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => {
                log.ended = Some(format!("transport error: {e}"));
                break;
            }
            None => {
                log.ended = Some("ended".into());
                break;
            }
        }
    }
    (log, socket)
}

/// Signed milliseconds `later - earlier`.
fn signed_ms(later: Instant, earlier: Instant) -> f64 {
    if later >= earlier {
        (later - earlier).as_secs_f64() * 1e3
    } else {
        -((earlier - later).as_secs_f64() * 1e3)
    }
}

/// (p50, p99, max) of `xs`.
fn summary(xs: &mut [f64]) -> (f64, f64, f64) {
    if xs.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    xs.sort_by(f64::total_cmp);
    let at = |p: f64| xs[((xs.len() - 1) as f64 * p).round() as usize];
    (at(0.5), at(0.99), xs[xs.len() - 1])
}

async fn live_bench(ctx: &Arc<Ctx>, gateway: &Gateway, shared: &Arc<Shared>) -> Result<Row> {
    let args = &ctx.args;
    let sockets_wanted = args.live_sockets.max(1);
    let leads = args.live_leads.max(1);
    let rate = args.live_rate.clamp(0.1, 1000.0);
    drain(ctx, gateway).await?;

    let response = gateway
        .client
        .post(gateway.url("/v1/admin/auth/login"))
        .header("X-Admin-Secret", ADMIN_SECRET)
        .json(&json!({"email": ROOT_EMAIL, "password": ROOT_PASSWORD}))
        .send()
        .await?;
    let status = response.status();
    let body: Value = response.json().await?;
    if !status.is_success() {
        bail!("login as the bootstrap admin answered {status}: {body}");
    }
    let token = body["data"]["tokens"]["accessToken"]
        .as_str()
        .ok_or_else(|| anyhow!("login without an access token: {body}"))?
        .to_string();

    let t_connect = Instant::now();
    let mut sockets = Vec::with_capacity(sockets_wanted);
    for i in 0..sockets_wanted {
        sockets.push(
            open_socket(gateway, &token)
                .await
                .with_context(|| format!("opening admin socket {i}"))?,
        );
    }
    let connect_secs = t_connect.elapsed().as_secs_f64();
    let (_, reported) = gateway.live_status().await?;

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut readers = JoinSet::new();
    for socket in sockets {
        readers.spawn(read_socket(socket, leads, stop_rx.clone()));
    }

    // Leads at `rate` per second, each POST in its own task so that a slow answer does not
    // delay the schedule: (id, sent, 201 received).
    let gw = Arc::new(gateway.clone());
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut posts = JoinSet::new();
    let t_posting = Instant::now();
    for _ in 0..leads {
        ticker.tick().await;
        let (gw, shared) = (Arc::clone(&gw), Arc::clone(shared));
        posts.spawn(async move {
            let sent = Instant::now();
            let id = submit(&gw, &shared, false).await?;
            anyhow::Ok((id, sent, Instant::now()))
        });
    }
    let mut committed: HashMap<String, (Instant, Instant)> = HashMap::with_capacity(leads);
    let mut post_ms = Vec::with_capacity(leads);
    let mut post_error = None;
    while let Some(joined) = posts.join_next().await {
        match joined? {
            Ok((id, sent, ok)) => {
                post_ms.push((ok - sent).as_secs_f64() * 1e3);
                committed.insert(id, (sent, ok));
            }
            Err(e) => post_error = post_error.or(Some(e)),
        }
    }
    let posting_secs = t_posting.elapsed().as_secs_f64();

    // Every socket should have everything shortly after the last 201; wait at most 10 s.
    let wait_until = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut logs = Vec::with_capacity(sockets_wanted);
    let mut open = Vec::with_capacity(sockets_wanted);
    loop {
        let next = tokio::select! {
            joined = readers.join_next() => joined,
            _ = tokio::time::sleep_until(wait_until) => {
                stop_tx.send_replace(true);
                readers.join_next().await
            }
        };
        let Some(joined) = next else { break };
        let (log, socket) = joined?;
        logs.push(log);
        open.push(socket);
    }
    for mut socket in open {
        let _ = tokio::time::timeout(Duration::from_secs(1), socket.close(None)).await;
    }
    if let Some(e) = post_error {
        return Err(e.context("a lead POST of the live phase failed"));
    }

    let expected = sockets_wanted * leads;
    let mut from_201 = Vec::with_capacity(expected);
    let mut from_send = Vec::with_capacity(expected);
    let mut first_last: HashMap<&str, (Instant, Instant)> = HashMap::with_capacity(leads);
    let (mut delivered, mut duplicates, mut unknown, mut early) = (0usize, 0usize, 0usize, 0usize);
    let mut ended = Vec::new();
    let mut others = 0;
    for log in &logs {
        let mut seen = HashSet::with_capacity(leads);
        for (id, at) in &log.received {
            let Some((sent, ok)) = committed.get(id) else {
                unknown += 1;
                continue;
            };
            if !seen.insert(id.as_str()) {
                duplicates += 1;
                continue;
            }
            delivered += 1;
            let ms = signed_ms(*at, *ok);
            if ms < 0.0 {
                early += 1;
            }
            from_201.push(ms);
            from_send.push(signed_ms(*at, *sent));
            let e = first_last.entry(id.as_str()).or_insert((*at, *at));
            e.0 = e.0.min(*at);
            e.1 = e.1.max(*at);
        }
        others += log.other_messages;
        if let Some(why) = &log.ended {
            ended.push(why.clone());
        }
    }
    let mut spread: Vec<f64> = first_last
        .values()
        .map(|(a, b)| signed_ms(*b, *a))
        .collect();
    let (post50, post99, _) = summary(&mut post_ms);
    let (a50, a99, amax) = summary(&mut from_201);
    let (s50, s99, smax) = summary(&mut from_send);
    let (f50, f99, fmax) = summary(&mut spread);

    println!();
    println!(
        "LIVE FEED  ({sockets_wanted} /ws/admin sockets as the bootstrap admin, {leads} leads POSTed at \
         {rate}/s, unique contacts, own X-Forwarded-For each)"
    );
    println!(
        "  sockets opened and authenticated in {connect_secs:.2}s (/ready: {reported} sockets); \
         posting took {posting_secs:.1}s; POST latency p50 {post50:.1} ms, p99 {post99:.1} ms"
    );
    println!(
        "  deliveries: {delivered} of {expected} NEW_LEAD (missing {}, duplicates {duplicates}, \
         unknown ids {unknown}, other messages {others}, sockets ended early {})",
        expected - delivered,
        ended.len()
    );
    for why in ended.iter().take(3) {
        println!("    socket ended: {why}");
    }
    println!(
        "{:<34} {:>7} {:>7} {:>7}",
        "latency (ms)", "p50", "p99", "max"
    );
    println!(
        "{:<34} {:>7.1} {:>7.1} {:>7.1}",
        "201 received -> NEW_LEAD on socket", a50, a99, amax
    );
    println!(
        "{:<34} {:>7.1} {:>7.1} {:>7.1}",
        "POST sent -> NEW_LEAD on socket", s50, s99, smax
    );
    println!(
        "{:<34} {:>7.1} {:>7.1} {:>7.1}",
        "first -> last socket, per lead", f50, f99, fmax
    );
    println!(
        "  {early} of {delivered} deliveries arrived before the client had read the 201 (negative \
         201 latency: the commit precedes both)."
    );
    let complete = delivered == expected && ended.is_empty();
    Ok(Row {
        measurement: format!("live feed, 201 -> NEW_LEAD on {sockets_wanted} sockets"),
        figure: format!("p50 {a50:.1} ms, p99 {a99:.1} ms, max {amax:.1} ms"),
        baseline: format!("{delivered}/{expected} delivered"),
        ratio: None,
        target: "all delivered".into(),
        pass: Some(complete),
    })
}
