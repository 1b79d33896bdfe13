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
fn equal_jitter_keeps_half_the_ceiling() {
    let p = policy();
    assert_eq!(
        p.next_attempt(3, Duration::ZERO, None, 0.0),
        NextAttempt::After(Duration::from_secs(4))
    );
    assert_eq!(
        p.next_attempt(3, Duration::ZERO, None, 0.5),
        NextAttempt::After(Duration::from_secs(6))
    );
    assert_eq!(
        p.next_attempt(3, Duration::ZERO, None, 7.0),
        NextAttempt::After(Duration::from_secs(8))
    );
    assert_eq!(
        p.next_attempt(3, Duration::ZERO, None, f64::NAN),
        NextAttempt::After(Duration::from_secs(4))
    );
}

#[test]
fn retry_after_is_a_lower_bound_with_jitter_above_it_up_to_twelve_hours() {
    let p = policy();
    let ra = Some(Duration::from_secs(120));
    assert_eq!(
        p.next_attempt(1, Duration::ZERO, ra, 0.0),
        NextAttempt::After(Duration::from_secs(120))
    );
    assert_eq!(
        p.next_attempt(1, Duration::ZERO, ra, 0.5),
        NextAttempt::After(Duration::from_secs(135))
    );
    let huge = Some(Duration::from_secs(100 * 3600));
    assert_eq!(
        p.next_attempt(1, Duration::ZERO, huge, 0.0),
        NextAttempt::After(Duration::from_secs(12 * 3600))
    );
}

#[test]
fn gives_up_when_the_next_attempt_would_leave_the_window() {
    let p = policy();
    let almost = Duration::from_secs(24 * 3600 - 500);
    assert_eq!(p.next_attempt(30, almost, None, 0.5), NextAttempt::GiveUp);
    assert_eq!(
        p.next_attempt(30, almost, None, 0.0),
        NextAttempt::After(Duration::from_secs(450))
    );
    assert_eq!(
        p.next_attempt(1, Duration::from_secs(25 * 3600), None, 0.0),
        NextAttempt::GiveUp
    );
}

#[test]
fn the_default_policy_makes_at_most_two_hundred_attempts_in_a_day() {
    // 1 + 2 + … + 256 s (511 s) over the first nine retries, then 450 s each: 1 + 9 + 190 attempts
    assert_eq!(policy().max_attempts(), 200);
    let zero = BackoffPolicy {
        base: Duration::ZERO,
        ..policy()
    };
    assert_eq!(zero.max_attempts(), u32::MAX);
    let short = BackoffPolicy {
        window: Duration::from_secs(3),
        ..policy()
    };
    // attempts at 0, 1 s and 3 s
    assert_eq!(short.max_attempts(), 3);
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
                prop_assert!(elapsed + p.delay(attempts, retry_after_s.map(Duration::from_secs), jitter) > p.window);
            }
        }
    }

    #[test]
    fn no_schedule_fits_more_attempts_in_the_window_than_max_attempts(
        base_ms in 1u64..5_000, cap_ms in 1u64..600_000, window_s in 1u64..20_000,
        jitters in proptest::collection::vec(0.0f64..1.0, 1..64),
    ) {
        let p = BackoffPolicy { base: Duration::from_millis(base_ms), cap: Duration::from_millis(cap_ms),
            window: Duration::from_secs(window_s), ..policy() };
        let mut elapsed = Duration::ZERO;
        let mut attempts = 1u32;
        while let NextAttempt::After(d) = p.next_attempt(attempts, elapsed, None, jitters[attempts as usize % jitters.len()]) {
            elapsed += d;
            attempts += 1;
            prop_assert!(attempts <= p.max_attempts());
        }
    }
}
