//! Bounded polling: every test that waits for the mesh to converge waits
//! through here, so no loop is unbounded and every wait says how long it took.

use std::time::{Duration, Instant};

/// How often a condition is tried again.
const EVERY: Duration = Duration::from_millis(25);

/// Tries `check` every 25 ms until it yields a value or `limit` passes; the
/// value and how long it took. `check` runs at least once, and once more at
/// the limit, so a condition that holds by then is never missed.
pub fn eventually<T>(limit: Duration, check: impl FnMut() -> Option<T>) -> Option<(T, Duration)> {
    eventually_every(limit, EVERY, check)
}

/// [`eventually`], trying every `every` (for checks that cost more, such as
/// a Prometheus query).
pub fn eventually_every<T>(
    limit: Duration,
    every: Duration,
    mut check: impl FnMut() -> Option<T>,
) -> Option<(T, Duration)> {
    let start = Instant::now();
    loop {
        let tried_at = start.elapsed();
        if let Some(v) = check() {
            return Some((v, start.elapsed()));
        }
        if tried_at >= limit {
            return None;
        }
        std::thread::sleep(every.min(limit.saturating_sub(start.elapsed())));
    }
}

/// [`eventually`] for a yes/no condition: how long it took to hold, or
/// `None` when it did not hold within `limit`.
pub fn within(limit: Duration, mut holds: impl FnMut() -> bool) -> Option<Duration> {
    eventually(limit, || holds().then_some(())).map(|((), took)| took)
}

/// [`eventually`] for async tests: `check` is awaited, and the pauses are
/// tokio's, so the runtime's workers stay free for the code under test.
pub async fn eventually_async<T, F>(
    limit: Duration,
    mut check: impl FnMut() -> F,
) -> Option<(T, Duration)>
where
    F: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        let tried_at = start.elapsed();
        if let Some(v) = check().await {
            return Some((v, start.elapsed()));
        }
        if tried_at >= limit {
            return None;
        }
        tokio::time::sleep(EVERY.min(limit.saturating_sub(start.elapsed()))).await;
    }
}

/// [`within`] for async tests (see [`eventually_async`]).
pub async fn within_async(limit: Duration, mut holds: impl FnMut() -> bool) -> Option<Duration> {
    eventually_async(limit, || std::future::ready(holds().then_some(())))
        .await
        .map(|((), took)| took)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_the_first_value_and_when() {
        let mut n = 0;
        let (v, took) = eventually(Duration::from_secs(5), || {
            n += 1;
            (n == 3).then_some(n * 10)
        })
        .expect("holds on the third try");
        assert_eq!(v, 30);
        assert!(took >= 2 * EVERY, "{took:?}");
    }

    #[test]
    fn gives_up_at_the_limit_after_a_last_try() {
        let start = Instant::now();
        let mut tries = 0;
        assert!(within(Duration::from_millis(120), || {
            tries += 1;
            false
        })
        .is_none());
        let spent = start.elapsed();
        assert!(spent >= Duration::from_millis(120), "{spent:?}");
        assert!(spent < Duration::from_secs(2), "{spent:?}");
        assert!(tries >= 2, "{tries}");
    }

    #[tokio::test]
    async fn the_async_poll_awaits_its_check_and_gives_up_at_the_limit() {
        let mut n = 0;
        let (v, _) = eventually_async(Duration::from_secs(5), || {
            n += 1;
            let now = n;
            async move { (now == 3).then_some(now) }
        })
        .await
        .expect("holds on the third try");
        assert_eq!(v, 3);
        let start = Instant::now();
        assert!(within_async(Duration::from_millis(80), || false)
            .await
            .is_none());
        assert!(start.elapsed() >= Duration::from_millis(80));
    }

    #[test]
    fn a_zero_limit_still_tries_once() {
        assert!(within(Duration::ZERO, || true).is_some());
        assert!(within(Duration::ZERO, || false).is_none());
    }
}
