//! Issue 12's measurements on the in-process gateway (`e2e.rs` starts it):
//!
//! * `verify`: `POST /v1/licenses/verify` (approved devices, the hot path of every desktop
//!   start) at `--verify-connections` keep-alive connections, against a bare axum handler
//!   served by the gateway's own server loop (`gateway::http::server::serve`) in this process,
//!   alternating slices in ABBA order; the ratio of requests per second and verify's p99;
//! * `memory`: the resident memory of this process (the gateway and the bench client) with
//!   `--verify-licenses` licenses of `--verify-devices` approved devices each loaded, beside
//!   the same process with the gateway just started.
//!
//! The licenses are seeded as the aggregate decides them: `License::handle` runs Create,
//! RegisterDevice per device and SetDevice(approved) for the pending ones in memory, and the
//! resulting events of one license go into its stream in one append (several appenders at
//! once). The gateway's projections then build the read model verify answers from.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use aggregates::license::{
    DeviceDetails, DeviceStatus, License, LicenseCommand, Owner, SealedText,
};
use anyhow::{Context, Result, anyhow, bail};
use axum::Router;
use axum::routing::post;
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use eventstore::sealing::Sealer;
use eventstore::{Metadata, NewEvent, StreamId};
use serde_json::json;
use tokio::sync::oneshot;
use tokio::task::JoinSet;
use uuid::Uuid;

use super::e2e::{ENCRYPTION_KEY, Gateway, drain_within};
use super::{Ctx, Row, cores, fmt_rate, probe, quartiles, verdict};

/// Licenses appended at once while seeding.
const SEEDERS: usize = 8;
/// The projections get this long to build the read model of the seeded licenses.
const SEED_PATIENCE: Duration = Duration::from_secs(600);
const BARE_PATH: &str = "/bench/bare";
const DEVICE_NAME: &str = "DESKTOP-BENCH";
const OS_TYPE: &str = "windows";
const OS_VERSION: &str = "Windows 11 Pro 23H2";
const APP_VERSION: &str = "1.1.0";

/// A seeded license the verify slices use: its key and its devices' fingerprints.
struct Seeded {
    key: String,
    fingerprints: Vec<String>,
}

/// The fingerprint of device `d` of license `i`: 64 hex characters, distinct per pair.
fn fingerprint(i: usize, d: usize) -> String {
    format!("{i:032x}{d:032x}")
}

/// The body and headers of a verify as the desktop sends it; the bare handler gets the same.
fn request(client: &reqwest::Client, url: &str, key: &str, print: &str) -> reqwest::RequestBuilder {
    client
        .post(url)
        .header("X-License-Key", key)
        .header("X-Device-Fingerprint", print)
        .header("X-App-Version", APP_VERSION)
        .json(&json!({
            "fingerprint": print,
            "deviceName": DEVICE_NAME,
            "osType": OS_TYPE,
            "osVersion": OS_VERSION,
            "appVersion": APP_VERSION,
        }))
}

/// `VmRSS` of this process in MiB.
fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// The events of license `i`: created, `devices` registered (the first approved master, the
/// others pending), the pending ones approved. Decided by the real aggregate.
async fn license_events(
    sealer: &Sealer,
    i: usize,
    devices: usize,
    metadata: &Metadata,
) -> Result<(Uuid, String, Vec<NewEvent>)> {
    let id = Uuid::now_v7();
    let key = gateway::licenses::keys::new_license_key("pro", devices as u32);
    let now = chrono::Utc::now();
    let mut license = License::default();
    let sink = EventSink::default();
    let decide = |e| anyhow!("the license aggregate refused a seed command: {e:?}");
    license
        .handle(
            LicenseCommand::Create {
                key: SealedText(sealer.encrypt_with_master(key.as_bytes())),
                key_digest: sealer.digest(&format!(
                    "license-key:{}",
                    gateway::licenses::keys::normalise_key(&key)
                )),
                owner: Owner {
                    name: format!("Müşteri {i}"),
                    email: format!("musteri.{i}@example.com.tr"),
                    phone: None,
                    company_name: format!("Müşteri {i} SMMM"),
                    company_vkn: None,
                },
                package: "pro".into(),
                max_devices: devices as u32,
                monthly_token_limit: 500_000,
                duration_months: 12,
                gemini: None,
                telegram: None,
                lead_id: None,
                now,
            },
            &(),
            &sink,
        )
        .await
        .map_err(decide)?;
    let mut device_ids = Vec::with_capacity(devices);
    for d in 0..devices {
        let device_id = Uuid::now_v7();
        device_ids.push(device_id);
        license
            .handle(
                LicenseCommand::RegisterDevice {
                    device_id,
                    fingerprint: fingerprint(i, d),
                    details: DeviceDetails {
                        name: DEVICE_NAME.into(),
                        os_type: OS_TYPE.into(),
                        os_version: OS_VERSION.into(),
                        app_version: APP_VERSION.into(),
                        // What the gateway records for a client on loopback.
                        ip_address: Some("127.0.0.1".into()),
                    },
                    now,
                },
                &(),
                &sink,
            )
            .await
            .map_err(decide)?;
    }
    for &device_id in device_ids.iter().skip(1) {
        license
            .handle(
                LicenseCommand::SetDevice {
                    device_id,
                    status: Some(DeviceStatus::Approved),
                    master: None,
                    now,
                },
                &(),
                &sink,
            )
            .await
            .map_err(decide)?;
    }
    let events = sink
        .collect()
        .await
        .into_iter()
        .map(|e| {
            Ok(NewEvent::new(
                e.event_type(),
                e.event_version(),
                serde_json::to_value(&e)?,
                metadata.clone(),
            ))
        })
        .collect::<Result<Vec<_>, serde_json::Error>>()?;
    Ok((id, key, events))
}

/// Appends `licenses` licenses of `devices` devices each, `SEEDERS` at a time: the keys and
/// fingerprints, and how many events that was.
async fn seed(ctx: &Arc<Ctx>, licenses: usize, devices: usize) -> Result<(Vec<Seeded>, usize)> {
    let sealer = Sealer::new(
        ctx.pool.clone(),
        gateway::config::parse_key(ENCRYPTION_KEY)
            .ok_or_else(|| anyhow!("the bench encryption key is malformed"))?,
    );
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = JoinSet::new();
    for _ in 0..SEEDERS {
        let (ctx, sealer, next) = (Arc::clone(ctx), sealer.clone(), Arc::clone(&next));
        tasks.spawn(async move {
            let metadata = Metadata::actor("bench");
            let mut seeded = Vec::new();
            let mut events = 0;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= licenses {
                    break;
                }
                let (id, key, new) = license_events(&sealer, i, devices, &metadata).await?;
                events += new.len();
                ctx.store
                    .append(
                        &StreamId::new(aggregates::license::AGGREGATE_TYPE, id.to_string()),
                        0,
                        &new,
                    )
                    .await
                    .context("appending a seeded license")?;
                seeded.push((
                    i,
                    Seeded {
                        key,
                        fingerprints: (0..devices).map(|d| fingerprint(i, d)).collect(),
                    },
                ));
            }
            anyhow::Ok((seeded, events))
        });
    }
    let mut all = Vec::with_capacity(licenses);
    let mut events = 0;
    while let Some(joined) = tasks.join_next().await {
        let (seeded, n) = joined??;
        all.extend(seeded);
        events += n;
    }
    all.sort_by_key(|(i, _)| *i);
    Ok((all.into_iter().map(|(_, s)| s).collect(), events))
}

/// The bare handler's server: the gateway's own server loop on its own listener, with a
/// router of one route and no layers.
struct Bare {
    url: String,
    shutdown: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Bare {
    async fn start() -> Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}{BARE_PATH}", listener.local_addr()?);
        let router = Router::new().route(
            BARE_PATH,
            post(|| async { axum::Json(json!({"success": true, "data": {"valid": true}})) }),
        );
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(gateway::http::server::serve(
            listener,
            router,
            Duration::from_secs(60),
            async move {
                let _ = rx.await;
            },
        ));
        Ok(Self {
            url,
            shutdown: Some(tx),
            task,
        })
    }

    async fn stop(mut self) -> Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .context("the bare server did not stop")???;
        Ok(())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Bare,
    Verify,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Bare => "bare axum",
            Kind::Verify => "verify",
        }
    }
}

struct Slice {
    kind: Kind,
    counted: u64,
    secs: f64,
    lat_us: Vec<u32>,
    self_cpu: f64,
    pg_cpu: f64,
    host_busy: f64,
}

impl Slice {
    fn rate(&self) -> f64 {
        self.counted as f64 / self.secs
    }
}

/// One request of `kind`; fails on anything but a 200 (and, for verify, a valid approved
/// answer with a certificate).
async fn one(
    client: &reqwest::Client,
    url: &str,
    seeded: &Seeded,
    d: usize,
    kind: Kind,
) -> Result<()> {
    let print = &seeded.fingerprints[d % seeded.fingerprints.len()];
    let response = request(client, url, &seeded.key, print).send().await?;
    let status = response.status();
    let body = response.bytes().await?;
    if status != reqwest::StatusCode::OK {
        bail!(
            "{} answered {status}: {}",
            kind.name(),
            String::from_utf8_lossy(&body)
        );
    }
    // Checked by bytes, not parsed: a JSON parse of every answer here would be client work
    // charged to verify alone (the bare answer is never parsed).
    if kind == Kind::Verify
        && !(contains(&body, br#""valid":true"#)
            && contains(&body, br#""status":"approved""#)
            && contains(&body, br#""certificate":"ey"#))
    {
        bail!(
            "verify of an approved device answered {}",
            String::from_utf8_lossy(&body)
        );
    }
    Ok(())
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

async fn slice(
    ctx: &Arc<Ctx>,
    client: &reqwest::Client,
    urls: &Arc<(String, String)>,
    seeded: &Arc<Vec<Seeded>>,
    next: &Arc<AtomicUsize>,
    kind: Kind,
    measured: Duration,
) -> Result<Slice> {
    let connections = ctx.args.verify_connections.max(1);
    let p0 = probe(ctx).await?;
    let t_end = Instant::now() + measured;
    let mut tasks = JoinSet::new();
    for _ in 0..connections {
        let (client, urls, seeded, next) = (
            client.clone(),
            Arc::clone(urls),
            Arc::clone(seeded),
            Arc::clone(next),
        );
        tasks.spawn(async move {
            let url = match kind {
                Kind::Bare => &urls.0,
                Kind::Verify => &urls.1,
            };
            let mut counted = 0u64;
            let mut lat = Vec::with_capacity(4096);
            loop {
                let began = Instant::now();
                if began >= t_end {
                    break;
                }
                // Spread over every seeded license and device (a stride coprime to most
                // sizes), so the read model's indexes are used as by many desktops.
                let n = next.fetch_add(1, Ordering::Relaxed);
                let license = &seeded[n.wrapping_mul(7919) % seeded.len()];
                one(&client, url, license, n, kind).await?;
                let done = Instant::now();
                if done <= t_end {
                    counted += 1;
                    lat.push((done - began).as_micros().min(u32::MAX as u128) as u32);
                }
            }
            anyhow::Ok((counted, lat))
        });
    }
    let (mut counted, mut lat_us) = (0, Vec::new());
    while let Some(joined) = tasks.join_next().await {
        let (c, l) = joined??;
        counted += c;
        lat_us.extend(l);
    }
    let p1 = probe(ctx).await?;
    Ok(Slice {
        kind,
        counted,
        secs: measured.as_secs_f64(),
        lat_us,
        self_cpu: p1.self_cpu - p0.self_cpu,
        pg_cpu: p1.pg_since(&p0),
        host_busy: p1.host_busy - p0.host_busy,
    })
}

/// Percentile `p` of sorted microseconds, in milliseconds.
fn pct_ms(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize] as f64 / 1000.0
}

/// Events in the log after the seeding (verify of a known device should append none).
async fn event_count(ctx: &Ctx) -> Result<i64> {
    Ok(sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&ctx.pool)
        .await?)
}

pub(crate) async fn verify_bench(ctx: &Arc<Ctx>, gateway: &Gateway) -> Result<Vec<Row>> {
    let args = &ctx.args;
    let licenses = args.verify_licenses.max(1);
    let devices = args.verify_devices.clamp(1, 100);
    let connections = args.verify_connections.max(1);
    let slice_len = Duration::from_secs_f64(args.verify_slice.max(0.1));
    let rounds = (args.verify_seconds / slice_len.as_secs_f64())
        .ceil()
        .max(1.0) as usize;
    let warmup = Duration::from_secs_f64(args.warmup.max(0.2));

    drain_within(ctx, gateway, SEED_PATIENCE).await?;
    let rss_idle = rss_mib();
    let t_seed = Instant::now();
    let (seeded, seeded_events) = seed(ctx, licenses, devices).await?;
    let seed_secs = t_seed.elapsed().as_secs_f64();
    let t_drain = Instant::now();
    drain_within(ctx, gateway, SEED_PATIENCE).await?;
    let drain_secs = t_drain.elapsed().as_secs_f64();
    let (read_licenses, read_devices): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM licenses),
                (SELECT count(*) FROM devices WHERE status = 'approved')",
    )
    .fetch_one(&ctx.pool)
    .await?;
    if read_licenses < licenses as i64 || read_devices < (licenses * devices) as i64 {
        bail!(
            "the read model holds {read_licenses} licenses and {read_devices} approved devices \
             after seeding {licenses} x {devices}"
        );
    }
    let rss_seeded = rss_mib();

    let bare = Bare::start().await?;
    let outcome = async {
        let client = gateway.client.clone();
        let urls = Arc::new((bare.url.clone(), gateway.url("/v1/licenses/verify")));
        let seeded = Arc::new(seeded);
        let next = Arc::new(AtomicUsize::new(0));
        let before = event_count(ctx).await?;
        for kind in [Kind::Bare, Kind::Verify] {
            slice(ctx, &client, &urls, &seeded, &next, kind, warmup).await?;
        }
        let mut all: Vec<Vec<Slice>> = Vec::with_capacity(rounds);
        for r in 0..rounds {
            let order = if r % 2 == 0 {
                [Kind::Bare, Kind::Verify]
            } else {
                [Kind::Verify, Kind::Bare]
            };
            let mut round = Vec::with_capacity(2);
            for kind in order {
                round.push(slice(ctx, &client, &urls, &seeded, &next, kind, slice_len).await?);
            }
            all.push(round);
        }
        let appended = event_count(ctx).await? - before;
        let rss_serving = rss_mib();
        anyhow::Ok((all, appended, rss_serving, next.load(Ordering::Relaxed)))
    }
    .await;
    let stopped = bare.stop().await;
    let (all, appended, rss_serving, requests) = outcome?;
    stopped?;

    println!();
    println!(
        "VERIFY  ({licenses} licenses x {devices} approved devices seeded: {seeded_events} events \
         appended in {seed_secs:.1}s by {SEEDERS} appenders, read model built by the projections \
         in {drain_secs:.1}s more; {connections} keep-alive connections; {rounds} slices of \
         {:.2}s per variant in ABBA order after {:.1}s warm-up each)",
        slice_len.as_secs_f64(),
        warmup.as_secs_f64()
    );
    println!(
        "  verify: POST /v1/licenses/verify with X-License-Key, X-Device-Fingerprint, \
         X-App-Version and the desktop's JSON body, spread over every seeded license and device \
         (all approved: each answer carries a signed certificate). bare axum: the same request \
         to `POST {BARE_PATH}` on the gateway's server loop (gateway::http::server::serve) in \
         this process, a one-route router without layers answering a small JSON."
    );
    println!(
        "  {requests} requests in all; events appended while verifying: {appended} (known \
         devices with unchanged details append nothing; lastActiveAt is telemetry written in batches)."
    );
    println!(
        "{:<10} {:>8} {:>6} {:>6} {:>6} {:>6} {:>4} {:>6}  IQR",
        "variant", "req/s", "p50ms", "p99ms", "cli µs", "pg µs", "CPU%", "ratio"
    );
    let of = |round: &[Slice], k: Kind| round.iter().find(|s| s.kind == k).map(Slice::rate);
    let mut ratios: Vec<f64> = all
        .iter()
        .filter_map(|round| Some(of(round, Kind::Verify)? / of(round, Kind::Bare)?))
        .collect();
    let (ratio, q1, q3) = quartiles(&mut ratios);
    let mut summary = Vec::new();
    for k in [Kind::Bare, Kind::Verify] {
        let mine: Vec<&Slice> = all.iter().flatten().filter(|s| s.kind == k).collect();
        let counted: u64 = mine.iter().map(|s| s.counted).sum();
        let secs: f64 = mine.iter().map(|s| s.secs).sum();
        // The figure is the median slice, like the ratio (a median over rounds).
        let mut rates: Vec<f64> = mine.iter().map(|s| s.rate()).collect();
        let (median_rate, _, _) = quartiles(&mut rates);
        let mut lat: Vec<u32> = mine.iter().flat_map(|s| s.lat_us.iter().copied()).collect();
        lat.sort_unstable();
        let per = counted.max(1) as f64;
        let self_cpu: f64 = mine.iter().map(|s| s.self_cpu).sum();
        let pg_cpu: f64 = mine.iter().map(|s| s.pg_cpu).sum();
        let host: f64 = mine.iter().map(|s| s.host_busy).sum();
        println!(
            "{:<10} {:>8} {:>6.2} {:>6.2} {:>6.0} {:>6.0} {:>4.0} {}",
            k.name(),
            fmt_rate(median_rate),
            pct_ms(&lat, 0.5),
            pct_ms(&lat, 0.99),
            self_cpu / per * 1e6,
            pg_cpu / per * 1e6,
            host / (secs * cores()) * 100.0,
            if k == Kind::Verify {
                format!("{ratio:>5.2}x  [{q1:.2}-{q3:.2}]")
            } else {
                String::new()
            }
        );
        summary.push((median_rate, pct_ms(&lat, 0.5), pct_ms(&lat, 0.99)));
    }
    println!(
        "  per round verify/bare req/s: {}",
        all.iter()
            .map(|round| format!(
                "{}/{}",
                fmt_rate(of(round, Kind::Verify).unwrap_or(f64::NAN)),
                fmt_rate(of(round, Kind::Bare).unwrap_or(f64::NAN))
            ))
            .collect::<Vec<_>>()
            .join("  ")
    );
    println!(
        "MEMORY  VmRSS of this process (gateway + bench client): {rss_idle:.1} MiB with the \
         gateway started and idle, {rss_seeded:.1} MiB after seeding {licenses} licenses and \
         {} devices (read model built), {rss_serving:.1} MiB after serving the verify slices",
        licenses * devices
    );

    let ((bare_rate, bare_p50, bare_p99), (verify_rate, verify_p50, verify_p99)) =
        (summary[0], summary[1]);
    Ok(vec![
        verdict(
            &format!("POST /v1/licenses/verify, {connections} connections, vs bare axum"),
            format!("{} req/s", fmt_rate(verify_rate)),
            format!("bare axum {} req/s", fmt_rate(bare_rate)),
            ratio,
            0.7,
        ),
        Row {
            measurement: format!("verify latency, {connections} connections"),
            figure: format!("p50 {verify_p50:.2} ms, p99 {verify_p99:.2} ms"),
            baseline: format!("bare p50 {bare_p50:.2} ms, p99 {bare_p99:.2} ms"),
            ratio: None,
            target: "p99 < 5 ms".into(),
            pass: Some(verify_p99 < 5.0),
        },
        Row {
            measurement: format!(
                "resident memory, {licenses} licenses + {} devices loaded",
                licenses * devices
            ),
            figure: format!("{rss_serving:.1} MiB"),
            baseline: format!("idle gateway {rss_idle:.1} MiB"),
            ratio: None,
            target: "-".into(),
            pass: None,
        },
    ])
}
