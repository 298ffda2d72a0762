//! Retry with backoff (issue 16): how long a rejected message waits before it is delivered
//! again, and how many retries it gets before it is dead. One policy type for AMQP queue
//! arguments, RocketMQ consumer groups and share-style consumers; applied by
//! [`crate::QueueState::nack_later`].
//!
//! # Syntax (queue arguments)
//!
//! `x-retry-backoff` ([`Backoff::parse`]):
//!
//! | value                              | delay before retry *n* (after delivery *n*)          |
//! |------------------------------------|------------------------------------------------------|
//! | `fixed:5s`                         | 5 s every time                                       |
//! | `exponential:1s,2,60s`             | `min(1 s × 2^(n-1), 60 s)`; the factor may be fractional (`1.5`, at most 3 decimals, `>= 1`) |
//! | `ladder:1s,10s,1m`                 | the n-th step; past the last, the last               |
//! | `rocketmq`                         | RocketMQ's delay levels as a ladder: 1s 5s 10s 30s 1m 2m 3m 4m 5m 6m 7m 8m 9m 10m 20m 30m 1h 2h |
//! | `rocketmq-retry`                   | what a RocketMQ consumer's retries use: the same levels from the third (10s 30s 1m … 2h) |
//!
//! Durations are a non-negative integer with a unit `ms`, `s`, `m`, `h` or `d` (a bare number
//! is milliseconds), at most one year. `x-retry-max` ([`RetryPolicy::parse`]) is the number of
//! retries after the first delivery (a non-negative integer; absent: unlimited, RocketMQ's
//! `maxReconsumeTimes`): a message nacked after delivery `max + 1` is dead, reason
//! [`crate::DeadReason::DeliveryLimit`] (`x-death` reason `delivery_limit`, as a quorum
//! queue's `x-delivery-limit` gives).

use std::fmt;
use std::str::FromStr;

use common::TimestampMs;

/// RocketMQ's 18 delay levels ("1s 5s 10s 30s 1m 2m 3m 4m 5m 6m 7m 8m 9m 10m 20m 30m 1h 2h").
pub const ROCKETMQ_LEVELS_MS: [i64; 18] = [
    1_000, 5_000, 10_000, 30_000, 60_000, 120_000, 180_000, 240_000, 300_000, 360_000, 420_000,
    480_000, 540_000, 600_000, 1_200_000, 1_800_000, 3_600_000, 7_200_000,
];
/// A RocketMQ consumer's first retry uses level 3 (10 s).
const ROCKETMQ_RETRY_FIRST_LEVEL: usize = 2;
/// The longest delay a policy may name: one year (the scheduler's range, issue 16).
pub const MAX_BACKOFF_MS: i64 = 365 * 24 * 3_600_000;
/// Most steps a ladder may have.
pub const MAX_LADDER_STEPS: usize = 64;

/// How long to wait before each retry. Delays are milliseconds, `0..=MAX_BACKOFF_MS`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Backoff {
    /// The same delay every time.
    Fixed(i64),
    /// `initial × multiplier^(n-1)`, capped at `max`; the multiplier is in thousandths
    /// (`2000` doubles).
    Exponential {
        initial_ms: i64,
        multiplier_milli: u32,
        max_ms: i64,
    },
    /// Step `n-1` for retry `n`, the last step for every retry past the end.
    Ladder(Vec<i64>),
}

/// A backoff and the number of retries it allows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    pub backoff: Backoff,
    /// Retries after the first delivery; `None`: unlimited (the queue's `delivery_limit`, if
    /// any, still applies).
    pub max_retries: Option<u32>,
}

/// A policy string that does not parse: what was expected, and what came.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid retry policy '{input}': {why}")]
pub struct BackoffError {
    pub input: String,
    pub why: &'static str,
}

impl Backoff {
    /// RocketMQ's delay levels, from the first (1 s).
    pub fn rocketmq() -> Backoff {
        Backoff::Ladder(ROCKETMQ_LEVELS_MS.to_vec())
    }

    /// RocketMQ's consumer retry ladder: its delay levels from the third (10 s … 2 h).
    pub fn rocketmq_retry() -> Backoff {
        Backoff::Ladder(ROCKETMQ_LEVELS_MS[ROCKETMQ_RETRY_FIRST_LEVEL..].to_vec())
    }

    /// The delay before the retry that follows delivery number `delivery_count` (1 for the
    /// first delivery). Never negative, never above [`MAX_BACKOFF_MS`].
    pub fn delay_ms(&self, delivery_count: u32) -> i64 {
        let n = delivery_count.max(1);
        let delay = match self {
            Backoff::Fixed(d) => *d,
            Backoff::Exponential {
                initial_ms,
                multiplier_milli,
                max_ms,
            } => {
                let factor = f64::from(*multiplier_milli) / 1000.0;
                let exp = i32::try_from(n - 1).unwrap_or(i32::MAX);
                let d = (*initial_ms as f64) * factor.powi(exp);
                if d.is_finite() && d < *max_ms as f64 {
                    d as i64
                } else {
                    *max_ms
                }
            }
            Backoff::Ladder(steps) => {
                let i = (n as usize - 1).min(steps.len().saturating_sub(1));
                steps.get(i).copied().unwrap_or(0)
            }
        };
        delay.clamp(0, MAX_BACKOFF_MS)
    }

    /// When the retry after delivery `delivery_count` is due, nacked at `now_ms`.
    pub fn due_ms(&self, now_ms: TimestampMs, delivery_count: u32) -> TimestampMs {
        now_ms.saturating_add(self.delay_ms(delivery_count))
    }

    /// Parses an `x-retry-backoff` value (syntax in the module doc).
    pub fn parse(s: &str) -> Result<Backoff, BackoffError> {
        let err = |why| BackoffError {
            input: s.to_owned(),
            why,
        };
        let (kind, args) = match s.trim().split_once(':') {
            Some((kind, args)) => (kind.trim(), Some(args)),
            None => (s.trim(), None),
        };
        match (kind, args) {
            ("rocketmq", None) => Ok(Backoff::rocketmq()),
            ("rocketmq-retry", None) => Ok(Backoff::rocketmq_retry()),
            ("fixed", Some(args)) => Ok(Backoff::Fixed(
                parse_duration(args).ok_or_else(|| err("expected fixed:DURATION"))?,
            )),
            ("exponential", Some(args)) => {
                let parts: Vec<&str> = args.split(',').map(str::trim).collect();
                let [initial, factor, max] = parts[..] else {
                    return Err(err("expected exponential:INITIAL,FACTOR,MAX"));
                };
                let initial_ms =
                    parse_duration(initial).ok_or_else(|| err("bad initial duration"))?;
                let multiplier_milli =
                    parse_factor(factor).ok_or_else(|| err("factor must be 1 to 1000"))?;
                let max_ms = parse_duration(max).ok_or_else(|| err("bad max duration"))?;
                if max_ms < initial_ms {
                    return Err(err("max is below the initial delay"));
                }
                Ok(Backoff::Exponential {
                    initial_ms,
                    multiplier_milli,
                    max_ms,
                })
            }
            ("ladder", Some(args)) => {
                let steps = args
                    .split(',')
                    .map(|d| parse_duration(d.trim()))
                    .collect::<Option<Vec<i64>>>()
                    .ok_or_else(|| err("expected ladder:DURATION,DURATION,…"))?;
                if steps.is_empty() || steps.len() > MAX_LADDER_STEPS {
                    return Err(err("a ladder has 1 to 64 steps"));
                }
                Ok(Backoff::Ladder(steps))
            }
            _ => Err(err(
                "expected fixed:D, exponential:D,F,D, ladder:D,…, rocketmq or rocketmq-retry",
            )),
        }
    }
}

impl FromStr for Backoff {
    type Err = BackoffError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Backoff::parse(s)
    }
}

impl fmt::Display for Backoff {
    /// The canonical form [`Backoff::parse`] reads back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Backoff::Fixed(d) => write!(f, "fixed:{d}ms"),
            Backoff::Exponential {
                initial_ms,
                multiplier_milli,
                max_ms,
            } => write!(
                f,
                "exponential:{initial_ms}ms,{}.{:03},{max_ms}ms",
                multiplier_milli / 1000,
                multiplier_milli % 1000
            ),
            Backoff::Ladder(steps) => {
                f.write_str("ladder:")?;
                for (i, s) in steps.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{s}ms")?;
                }
                Ok(())
            }
        }
    }
}

impl RetryPolicy {
    /// The policy of `x-retry-backoff` and `x-retry-max`. Without `x-retry-backoff` there is
    /// no policy (`None`: a nack requeues at once, limited by `x-delivery-limit`), though a
    /// malformed `x-retry-max` is still an error.
    pub fn parse(
        backoff: Option<&str>,
        max_retries: Option<&str>,
    ) -> Result<Option<RetryPolicy>, BackoffError> {
        let max_retries = match max_retries {
            None => None,
            Some(v) => Some(v.trim().parse::<u32>().map_err(|_| BackoffError {
                input: v.to_owned(),
                why: "x-retry-max must be a non-negative integer",
            })?),
        };
        let Some(backoff) = backoff else {
            return Ok(None);
        };
        Ok(Some(RetryPolicy {
            backoff: Backoff::parse(backoff)?,
            max_retries,
        }))
    }

    /// Whether a message nacked after delivery number `delivery_count` has used up its
    /// retries.
    pub fn exhausted(&self, delivery_count: u32) -> bool {
        self.max_retries.is_some_and(|max| delivery_count > max)
    }
}

/// `5s`, `250ms`, `2m`, `1h`, `1d` or a bare number of milliseconds; `0..=MAX_BACKOFF_MS`.
fn parse_duration(s: &str) -> Option<i64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    if digits.is_empty() {
        return None;
    }
    let n: i64 = digits.parse().ok()?;
    let scale = match unit {
        "" | "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return None,
    };
    n.checked_mul(scale).filter(|&ms| ms <= MAX_BACKOFF_MS)
}

/// A factor `1` to `1000` with at most three decimals, in thousandths.
fn parse_factor(s: &str) -> Option<u32> {
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    if whole.is_empty()
        || frac.len() > 3
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let whole: u32 = whole.parse().ok()?;
    let frac_milli: u32 = format!("{frac:0<3}").parse().ok()?;
    let milli = whole.checked_mul(1000)?.checked_add(frac_milli)?;
    (1000..=1_000_000).contains(&milli).then_some(milli)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_three_shapes_parse() {
        assert_eq!(Backoff::parse("fixed:5s"), Ok(Backoff::Fixed(5_000)));
        assert_eq!(Backoff::parse(" fixed: 250ms "), Ok(Backoff::Fixed(250)));
        assert_eq!(Backoff::parse("fixed:1500"), Ok(Backoff::Fixed(1_500)));
        assert_eq!(
            Backoff::parse("exponential:1s,2,60s"),
            Ok(Backoff::Exponential {
                initial_ms: 1_000,
                multiplier_milli: 2_000,
                max_ms: 60_000
            })
        );
        assert_eq!(
            "exponential:100ms,1.5,1m".parse::<Backoff>(),
            Ok(Backoff::Exponential {
                initial_ms: 100,
                multiplier_milli: 1_500,
                max_ms: 60_000
            })
        );
        assert_eq!(
            Backoff::parse("ladder:1s, 10s,1h"),
            Ok(Backoff::Ladder(vec![1_000, 10_000, 3_600_000]))
        );
        assert_eq!(Backoff::parse("rocketmq"), Ok(Backoff::rocketmq()));
        assert_eq!(Backoff::parse("fixed:1d"), Ok(Backoff::Fixed(86_400_000)));
    }

    #[test]
    fn bad_policies_are_errors_not_panics() {
        for bad in [
            "",
            "fixed",
            "fixed:",
            "fixed:-1s",
            "fixed:5x",
            "fixed:s",
            "fixed:400d",
            "fixed:99999999999999999999",
            "exponential:1s,2",
            "exponential:1s,0.5,1m",
            "exponential:1s,2,500ms",
            "exponential:1s,1.0001,1m",
            "exponential:1s,.5,1m",
            "exponential:1s,2,60s,1",
            "ladder:",
            "ladder:1s,,2s",
            "rocketmq:1s",
            "linear:1s",
        ] {
            assert!(Backoff::parse(bad).is_err(), "{bad:?} parsed");
        }
        let many = format!("ladder:{}", vec!["1s"; 65].join(","));
        assert!(Backoff::parse(&many).is_err());
    }

    #[test]
    fn the_rocketmq_ladder_is_indexed_by_delivery_count_and_stays_on_its_last_step() {
        let b = Backoff::rocketmq();
        let secs: Vec<i64> = (1..=18).map(|n| b.delay_ms(n) / 1000).collect();
        assert_eq!(
            secs,
            [
                1, 5, 10, 30, 60, 120, 180, 240, 300, 360, 420, 480, 540, 600, 1200, 1800, 3600,
                7200
            ]
        );
        assert_eq!(b.delay_ms(19), 7_200_000);
        assert_eq!(b.delay_ms(u32::MAX), 7_200_000);
        assert_eq!(b.delay_ms(0), 1_000, "count 0 is treated as the first");
        let retry = Backoff::rocketmq_retry();
        assert_eq!(retry.delay_ms(1), 10_000);
        assert_eq!(retry.delay_ms(16), 7_200_000);
    }

    #[test]
    fn exponential_grows_and_caps_without_overflow() {
        let b = Backoff::parse("exponential:1s,2,60s").unwrap();
        let got: Vec<i64> = (1..=8).map(|n| b.delay_ms(n)).collect();
        assert_eq!(
            got,
            [1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 60_000, 60_000]
        );
        assert_eq!(b.delay_ms(u32::MAX), 60_000);
        let slow = Backoff::parse("exponential:100ms,1.5,1s").unwrap();
        assert_eq!(slow.delay_ms(2), 150);
        assert_eq!(slow.delay_ms(3), 225);
        let flat = Backoff::parse("exponential:5s,1,1h").unwrap();
        assert_eq!(flat.delay_ms(1000), 5_000);
        assert_eq!(Backoff::Fixed(5).due_ms(i64::MAX - 1, 1), i64::MAX);
    }

    #[test]
    fn display_reads_back() {
        for s in [
            "fixed:5s",
            "exponential:100ms,1.5,1m",
            "ladder:1s,2m",
            "rocketmq",
        ] {
            let b = Backoff::parse(s).unwrap();
            assert_eq!(Backoff::parse(&b.to_string()), Ok(b));
        }
    }

    #[test]
    fn retry_max_counts_retries_after_the_first_delivery() {
        let p = RetryPolicy::parse(Some("fixed:1s"), Some("2"))
            .unwrap()
            .unwrap();
        assert_eq!(p.max_retries, Some(2));
        assert!(!p.exhausted(1));
        assert!(!p.exhausted(2));
        assert!(p.exhausted(3), "third delivery nacked: two retries used");
        let unlimited = RetryPolicy::parse(Some("rocketmq"), None).unwrap().unwrap();
        assert!(!unlimited.exhausted(u32::MAX));
        assert_eq!(RetryPolicy::parse(None, None), Ok(None));
        assert!(RetryPolicy::parse(Some("fixed:1s"), Some("-1")).is_err());
        assert!(RetryPolicy::parse(None, Some("x")).is_err());
    }
}
