//! A small keyed fixed-window rate limiter, in memory.
//!
//! It owns the counting behind every "N requests per window" rule of the SPEC: 100 admin
//! requests per minute per admin (per IP before login), 5 failed logins per e-mail and IP
//! in 15 minutes, and (reused by the landing endpoint) 10 lead submissions per minute per
//! IP. The counts live in this process only: with several gateway instances behind a load
//! balancer each instance counts on its own, so the effective limit is at most N times the
//! number of instances. That is acceptable for abuse protection; it is not a quota.
//!
//! A fixed window (not a sliding one) keeps the state to one counter per key; a client can
//! at worst send 2N requests around a window boundary. The clock is passed in, so tests
//! need no sleeping.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Keys whose window has ended are swept once the map grows past this many entries (and
/// past twice the live entries after the last sweep), so memory stays bounded by the keys
/// seen within one window.
const SWEEP_FLOOR: usize = 1024;

/// A hit counted by [`KeyedLimiter::attempt`], which [`KeyedLimiter::refund`] can take back.
#[derive(Clone, Copy, Debug)]
pub struct Attempt {
    window_started: Instant,
}

pub struct KeyedLimiter<K> {
    limit: u32,
    window: Duration,
    state: Mutex<State<K>>,
}

struct State<K> {
    windows: HashMap<K, Window>,
    sweep_at: usize,
}

#[derive(Clone, Copy)]
struct Window {
    started: Instant,
    count: u32,
}

impl<K: Hash + Eq + Clone> KeyedLimiter<K> {
    /// At most `limit` hits per key in each `window`.
    pub fn new(limit: u32, window: Duration) -> Self {
        Self {
            limit,
            window,
            state: Mutex::new(State {
                windows: HashMap::new(),
                sweep_at: SWEEP_FLOOR,
            }),
        }
    }

    pub fn limit(&self) -> u32 {
        self.limit
    }

    /// Counts one hit for `key` if it is allowed; otherwise `Err(retry_after_secs)` (at
    /// least 1) and the refused hit is not counted.
    pub fn check(&self, key: &K, now: Instant) -> Result<(), u64> {
        self.attempt(key, now).map(|_| ())
    }

    /// Whether a hit for `key` would be allowed now, without counting it.
    pub fn peek(&self, key: &K, now: Instant) -> Result<(), u64> {
        let state = self.lock();
        match state.windows.get(key) {
            Some(w) if now < w.started + self.window && w.count >= self.limit => {
                Err(self.retry_after(w, now))
            }
            _ => Ok(()),
        }
    }

    /// Counts one hit for `key` whether or not it is over the limit (a failed login counts
    /// even when the caller already decided to refuse it).
    pub fn record(&self, key: &K, now: Instant) {
        let mut state = self.lock();
        state.sweep(now, self.window);
        let window = self.current(&mut state, key, now);
        window.count = window.count.saturating_add(1);
    }

    /// [`KeyedLimiter::check`] for an attempt that may turn out not to be what the limit
    /// counts: the returned [`Attempt`] can be [`KeyedLimiter::refund`]ed.
    pub fn attempt(&self, key: &K, now: Instant) -> Result<Attempt, u64> {
        let mut state = self.lock();
        state.sweep(now, self.window);
        let window = self.current(&mut state, key, now);
        if window.count >= self.limit {
            return Err(self.retry_after(window, now));
        }
        window.count += 1;
        Ok(Attempt {
            window_started: window.started,
        })
    }

    /// Takes back an [`Attempt`]'s hit, if its window is still the current one (a refund
    /// must not lend the next window a place).
    pub fn refund(&self, key: &K, attempt: Attempt) {
        let mut state = self.lock();
        if let Some(window) = state.windows.get_mut(key)
            && window.started == attempt.window_started
        {
            window.count = window.count.saturating_sub(1);
        }
    }

    /// Forgets `key` (a successful login clears its failures).
    pub fn reset(&self, key: &K) {
        self.lock().windows.remove(key);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State<K>> {
        // A panic while holding this lock cannot leave the counters inconsistent in a way
        // that matters; keep limiting rather than failing every request.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The key's window, restarted if the old one has ended.
    fn current<'s>(&self, state: &'s mut State<K>, key: &K, now: Instant) -> &'s mut Window {
        let window = state.windows.entry(key.clone()).or_insert(Window {
            started: now,
            count: 0,
        });
        if now >= window.started + self.window {
            *window = Window {
                started: now,
                count: 0,
            };
        }
        window
    }

    fn retry_after(&self, window: &Window, now: Instant) -> u64 {
        let left = (window.started + self.window).saturating_duration_since(now);
        // Round up: "retry after 0 seconds" would invite an immediate, refused retry.
        (left.as_millis().div_ceil(1000) as u64).max(1)
    }
}

impl<K: Hash + Eq> State<K> {
    fn sweep(&mut self, now: Instant, window: Duration) {
        if self.windows.len() < self.sweep_at {
            return;
        }
        self.windows.retain(|_, w| now < w.started + window);
        self.sweep_at = (self.windows.len() * 2).max(SWEEP_FLOOR);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: Duration = Duration::from_secs(60);

    #[test]
    fn hits_within_the_limit_pass_and_the_next_one_is_told_when_to_retry() {
        let limiter = KeyedLimiter::new(3, MINUTE);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(limiter.check(&"a", t0), Ok(()));
        }
        assert_eq!(limiter.check(&"a", t0 + Duration::from_secs(20)), Err(40));
        assert_eq!(
            limiter.check(&"a", t0 + Duration::from_millis(59_500)),
            Err(1)
        );
    }

    #[test]
    fn a_refunded_hit_frees_its_place_in_the_current_window_only() {
        let limiter = KeyedLimiter::new(1, MINUTE);
        let t0 = Instant::now();
        let first = limiter.attempt(&"a", t0).unwrap();
        limiter.refund(&"a", first);
        let second = limiter.attempt(&"a", t0).unwrap();
        assert!(limiter.attempt(&"a", t0).is_err());
        // The window ends; a refund of the old window's attempt lends the new one nothing.
        assert!(limiter.attempt(&"a", t0 + MINUTE).is_ok());
        limiter.refund(&"a", second);
        assert!(limiter.attempt(&"a", t0 + MINUTE).is_err());
    }

    #[test]
    fn keys_are_counted_apart() {
        let limiter = KeyedLimiter::new(1, MINUTE);
        let t0 = Instant::now();
        assert_eq!(limiter.check(&"a", t0), Ok(()));
        assert_eq!(limiter.check(&"b", t0), Ok(()));
        assert!(limiter.check(&"a", t0).is_err());
    }

    #[test]
    fn a_new_window_starts_fresh() {
        let limiter = KeyedLimiter::new(1, MINUTE);
        let t0 = Instant::now();
        assert_eq!(limiter.check(&"a", t0), Ok(()));
        assert!(limiter.check(&"a", t0 + Duration::from_secs(59)).is_err());
        assert_eq!(limiter.check(&"a", t0 + MINUTE), Ok(()));
    }

    #[test]
    fn recorded_failures_block_peeks_until_reset() {
        let limiter = KeyedLimiter::new(2, MINUTE);
        let t0 = Instant::now();
        limiter.record(&"a", t0);
        assert_eq!(limiter.peek(&"a", t0), Ok(()));
        limiter.record(&"a", t0);
        assert_eq!(limiter.peek(&"a", t0 + Duration::from_secs(30)), Err(30));
        assert_eq!(limiter.peek(&"a", t0 + MINUTE), Ok(()));
        limiter.reset(&"a");
        assert_eq!(limiter.peek(&"a", t0), Ok(()));
    }

    #[test]
    fn expired_keys_are_swept_once_the_map_grows() {
        let limiter = KeyedLimiter::new(1, MINUTE);
        let t0 = Instant::now();
        for i in 0..SWEEP_FLOOR {
            limiter.check(&i, t0).unwrap();
        }
        limiter.check(&usize::MAX, t0 + MINUTE).unwrap();
        assert_eq!(limiter.lock().windows.len(), 1);
    }
}
