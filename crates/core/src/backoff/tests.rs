use super::*;
use proptest::prelude::*;

fn policy() -> BackoffPolicy {
    BackoffPolicy::default()
}

#[test]
fn ceilings_double_until_the_cap() {
    let p = policy();
    assert_eq!(p.ceiling(1), Duration::from_secs(2));
    assert_eq!(p.ceiling(2), Duration::from_secs(4));
    assert_eq!(p.ceiling(5), Duration::from_secs(32));
    assert_eq!(p.ceiling(20), Duration::from_secs(900));
    assert_eq!(p.ceiling(u32::MAX), Duration::from_secs(900));
}

#[test]
fn full_jitter_scales_the_ceiling() {
    let p = policy();
    assert_eq!(
        p.next_attempt(3, Duration::ZERO, None, 0.0),
        NextAttempt::After(Duration::ZERO)
    );
    assert_eq!(
        p.next_attempt(3, Duration::ZERO, None, 0.5),
        NextAttempt::After(Duration::from_secs(4))
    );
    assert_eq!(
        p.next_attempt(3, Duration::ZERO, None, 7.0),
        NextAttempt::After(Duration::from_secs(8))
    );
    assert_eq!(
        p.next_attempt(3, Duration::ZERO, None, f64::NAN),
        NextAttempt::After(Duration::ZERO)
    );
}

#[test]
fn retry_after_is_a_lower_bound_up_to_twelve_hours() {
    let p = policy();
    let ra = Some(Duration::from_secs(120));
    assert_eq!(
        p.next_attempt(1, Duration::ZERO, ra, 0.9),
        NextAttempt::After(Duration::from_secs(120))
    );
    let huge = Some(Duration::from_secs(100 * 3600));
    assert_eq!(
        p.next_attempt(1, Duration::ZERO, huge, 0.1),
        NextAttempt::After(Duration::from_secs(12 * 3600))
    );
}

#[test]
fn gives_up_when_the_next_attempt_would_leave_the_window() {
    let p = policy();
    let almost = Duration::from_secs(24 * 3600 - 10);
    assert_eq!(p.next_attempt(30, almost, None, 0.5), NextAttempt::GiveUp);
    assert_eq!(
        p.next_attempt(30, almost, None, 0.0),
        NextAttempt::After(Duration::ZERO)
    );
    assert_eq!(
        p.next_attempt(1, Duration::from_secs(25 * 3600), None, 0.0),
        NextAttempt::GiveUp
    );
}

proptest! {
    #[test]
    fn delay_never_exceeds_the_cap_without_retry_after(
        base_ms in 1u64..10_000, cap_ms in 1u64..3_600_000, attempts in 1u32..200,
        elapsed_ms in 0u64..100_000_000, jitter in 0.0f64..1.0,
    ) {
        let p = BackoffPolicy { base: Duration::from_millis(base_ms), cap: Duration::from_millis(cap_ms), ..policy() };
        if let NextAttempt::After(d) = p.next_attempt(attempts, Duration::from_millis(elapsed_ms), None, jitter) {
            prop_assert!(d <= p.cap);
            prop_assert!(d <= p.ceiling(attempts));
        }
    }

    #[test]
    fn never_schedules_past_the_window(
        window_s in 1u64..200_000, attempts in 1u32..100, elapsed_s in 0u64..300_000,
        retry_after_s in proptest::option::of(0u64..100_000), jitter in 0.0f64..1.0,
    ) {
        let p = BackoffPolicy { window: Duration::from_secs(window_s), ..policy() };
        let elapsed = Duration::from_secs(elapsed_s);
        match p.next_attempt(attempts, elapsed, retry_after_s.map(Duration::from_secs), jitter) {
            NextAttempt::After(d) => {
                prop_assert!(elapsed + d <= p.window);
                if let Some(ra) = retry_after_s {
                    prop_assert!(d >= Duration::from_secs(ra).min(p.max_retry_after));
                }
            }
            NextAttempt::GiveUp => {
                let min_delay = retry_after_s.map(|s| Duration::from_secs(s).min(p.max_retry_after)).unwrap_or_default();
                let max_delay = p.ceiling(attempts).mul_f64(jitter).max(min_delay);
                prop_assert!(elapsed + max_delay > p.window);
            }
        }
    }
}
