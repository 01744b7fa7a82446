//! When each desktop was last seen and from where (`lastActiveAt` of devices and licenses,
//! a device's `ipAddress`): telemetry that verify records in memory and a background writer puts into the read model in one
//! statement every [`FLUSH_INTERVAL`], so a verify never waits for a write.
//!
//! Throttled twice: a device is recorded at most once a minute per instance (the verify
//! view's entry decides), and the statement never moves a time backwards. Lost on a crash
//! at most [`FLUSH_INTERVAL`] of it, which a desktop's next verify brings back.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

/// How often recorded activity is written.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(2);
/// Devices recorded before the writer is woken early.
const FLUSH_AT: usize = 2_000;
/// Beyond this many devices waiting (the database is down), newer sightings are dropped.
const MAX_WAITING: usize = 500_000;

/// A device's latest sighting.
#[derive(Clone)]
struct Seen {
    license_id: Uuid,
    at: DateTime<Utc>,
    ip: Option<String>,
}

impl Seen {
    /// Keeps the later of the two sightings.
    fn merge(&mut self, other: Seen) {
        if other.at > self.at {
            *self = other;
        }
    }
}

#[derive(Default)]
pub struct Activity {
    /// device → (license, last seen, from where).
    waiting: Mutex<HashMap<Uuid, Seen>>,
    wakeup: tokio::sync::Notify,
    stop: tokio::sync::watch::Sender<bool>,
}

impl Activity {
    /// Device `device_id` of `license_id` was seen at `at`, from `ip`.
    pub fn record(&self, license_id: Uuid, device_id: Uuid, at: DateTime<Utc>, ip: Option<String>) {
        let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        if waiting.len() >= MAX_WAITING && !waiting.contains_key(&device_id) {
            return;
        }
        let seen = Seen { license_id, at, ip };
        match waiting.get_mut(&device_id) {
            Some(slot) => slot.merge(seen),
            None => {
                waiting.insert(device_id, seen);
            }
        }
        if waiting.len() == FLUSH_AT {
            self.wakeup.notify_one();
        }
    }

    /// Writes what is waiting; on a database error it waits for the next flush.
    pub async fn flush(&self, pool: &PgPool) {
        let taken = std::mem::take(&mut *self.waiting.lock().unwrap_or_else(|e| e.into_inner()));
        if taken.is_empty() {
            return;
        }
        let seen: Vec<projections::licenses::DeviceSeen> = taken
            .iter()
            .map(|(device, seen)| projections::licenses::DeviceSeen {
                license_id: seen.license_id,
                device_id: *device,
                at: seen.at,
                ip_address: seen.ip.clone(),
            })
            .collect();
        if let Err(e) = projections::licenses::touch_devices(pool, &seen).await {
            tracing::warn!(error = %e, devices = seen.len(), "writing device activity failed; will retry");
            let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
            for (device, seen) in taken {
                match waiting.get_mut(&device) {
                    Some(slot) => slot.merge(seen),
                    None => {
                        waiting.insert(device, seen);
                    }
                }
            }
        }
    }

    /// The background writer: flushes every [`FLUSH_INTERVAL`] (or when much is waiting)
    /// until [`Activity::stop`], then once more.
    pub async fn run_writer(&self, pool: &PgPool) {
        let mut stop = self.stop.subscribe();
        loop {
            tokio::select! {
                () = tokio::time::sleep(FLUSH_INTERVAL) => {}
                () = self.wakeup.notified() => {}
                _ = stop.wait_for(|stop| *stop) => break,
            }
            self.flush(pool).await;
        }
        self.flush(pool).await;
    }

    /// Ends [`Activity::run_writer`] after its last flush.
    pub fn stop(&self) {
        self.stop.send_replace(true);
    }
}
