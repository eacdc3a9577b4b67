//! Metric names, and the few places that record them.
//!
//! Everything goes through the [`metrics`](https://docs.rs/metrics) facade (cargo feature
//! `metrics`, on by default), so the application chooses the exporter (Prometheus, StatsD,
//! OpenTelemetry...) by installing a recorder; with none installed, recording costs a few
//! label allocations and nothing else. Without the feature, the recording functions are empty
//! and the names below stay for reference.
//!
//! The guide's "Metrics" table (`docs/production.md`) lists every name with its labels; this module is its source.
//! Recording happens in few places only: the end of an acquire, waiting or single-round
//! (`lock.rs`), the round's
//! decision (`round.rs`), extend and release (`guard.rs`), the watchdog (`lease.rs`), the
//! wake-up wait (`notify.rs`) and the cache.

use std::time::Duration;

use crate::error::{Error, MasterReply, Replies};

/// Histogram, seconds: how long an acquire call took (all rounds and waits), by `outcome`.
pub const ACQUIRE_DURATION: &str = "redquorum_acquire_duration_seconds";
/// Histogram: rounds one acquire call ran, by `outcome`.
pub const ACQUIRE_ATTEMPTS: &str = "redquorum_acquire_attempts";
/// Counter: acquire calls, every path: those that wait (`acquire`, `acquire_many`, the
/// primitives' `acquire`, `campaign`) and the single-round ones (`try_acquire` and its
/// variants, the cache's fill lock), by `outcome`: `acquired`, `contended` (a `try_acquire`
/// that found the lock held included), `timed_out`, `unavailable`.
pub const ACQUIRES: &str = "redquorum_acquires_total";
/// Counter: acquire rounds (also those of `try_acquire` and of the cache's fill lock), by
/// `outcome`: `acquired`, `contended`, `unavailable`, `expired` (a quorum granted, but too late
/// to leave any validity).
pub const ROUNDS: &str = "redquorum_rounds_total";
/// Counter: what each master answered in an acquire round, by `master` (its index) and `reply`:
/// `granted`, `refused`, `timed_out`, `unavailable`, `server_error`, `busy`, `quarantined`,
/// `unsealed`, `no_script`, `no_answer` (the round was decided first).
pub const MASTER_REPLIES: &str = "redquorum_master_replies_total";
/// Gauge: masters whose votes the last acquire round did not count because they are inside
/// their restart quarantine.
pub const MASTERS_QUARANTINED: &str = "redquorum_masters_quarantined";
/// Counter: extends that failed (by hand or by a watchdog), by `reason`: `not_held`,
/// `unavailable`, `timed_out`.
pub const EXTEND_FAILURES: &str = "redquorum_extend_failures_total";
/// Counter: releases, by `outcome`: `released`, `not_held` (it had expired), `unavailable`.
pub const RELEASES: &str = "redquorum_releases_total";
/// Counter: locks a watchdog ([`with_lock`](crate::Redlock::with_lock),
/// [`with_watchdog`](crate::LockGuard::with_watchdog)) found lost.
pub const LOCKS_LOST: &str = "redquorum_locks_lost_total";
/// Counter: waiting acquires woken by a release message (instead of their retry delay).
pub const WAKEUPS: &str = "redquorum_wakeups_total";
/// Counter: cache keys read and found.
pub const CACHE_HITS: &str = "redquorum_cache_hits_total";
/// Counter: cache keys read and not found (node down or failed included).
pub const CACHE_MISSES: &str = "redquorum_cache_misses_total";
/// Counter: values `get_or_compute` computed and wrote to the cache.
pub const CACHE_FILLS: &str = "redquorum_cache_fills_total";
/// Counter: `get_or_compute` calls that missed but did not compute, by `how`: `shared` (took
/// the value another call of this process computed), `filled_elsewhere` (found it written by
/// another process), `parked` (found it parked with the fill lock by another process while the
/// key's node did not answer).
pub const CACHE_STAMPEDES_AVOIDED: &str = "redquorum_cache_stampedes_avoided_total";

/// The label value of an acquire's result.
#[cfg_attr(not(feature = "metrics"), allow(dead_code))]
pub(crate) fn outcome_of<T>(result: &Result<T, Error>) -> &'static str {
    match result {
        Ok(_) => "acquired",
        Err(e) => error_kind(e),
    }
}

/// The label value of a single-round acquire's result: `Ok(None)` found the lock held.
#[cfg_attr(not(feature = "metrics"), allow(dead_code))]
pub(crate) fn try_outcome_of<T>(result: &Result<Option<T>, Error>) -> &'static str {
    match result {
        Ok(Some(_)) => "acquired",
        Ok(None) => "contended",
        Err(e) => error_kind(e),
    }
}

/// The label value of a failed acquire or extend.
#[cfg_attr(not(feature = "metrics"), allow(dead_code))]
pub(crate) fn error_kind(error: &Error) -> &'static str {
    match error {
        Error::Contended { .. } => "contended",
        Error::Timeout { .. } => "timed_out",
        Error::Unavailable { .. } => "unavailable",
        Error::NotHeld { .. } => "not_held",
        _ => "error",
    }
}

/// The label value of one master's reply.
#[cfg_attr(not(feature = "metrics"), allow(dead_code))]
pub(crate) fn reply_kind(reply: &MasterReply) -> &'static str {
    match reply {
        MasterReply::Granted => "granted",
        MasterReply::Refused => "refused",
        MasterReply::TimedOut => "timed_out",
        MasterReply::Unavailable(_) => "unavailable",
        MasterReply::ServerError(_) => "server_error",
        MasterReply::Busy(_) => "busy",
        MasterReply::Quarantined => "quarantined",
        MasterReply::NoAnswer => "no_answer",
        MasterReply::Unsealed => "unsealed",
        MasterReply::NoScript => "no_script",
        MasterReply::Tls(_) => "tls",
        MasterReply::Denied(_) => "denied",
    }
}

#[cfg(feature = "metrics")]
mod record {
    use super::*;

    pub(crate) fn acquire_finished<T>(result: &Result<T, Error>, attempts: u32, took: Duration) {
        let outcome = outcome_of(result);
        ::metrics::counter!(ACQUIRES, "outcome" => outcome).increment(1);
        ::metrics::histogram!(ACQUIRE_DURATION, "outcome" => outcome).record(took.as_secs_f64());
        ::metrics::histogram!(ACQUIRE_ATTEMPTS, "outcome" => outcome).record(attempts as f64);
    }

    pub(crate) fn try_acquire_finished<T>(result: &Result<Option<T>, Error>, took: Duration) {
        let outcome = try_outcome_of(result);
        ::metrics::counter!(ACQUIRES, "outcome" => outcome).increment(1);
        ::metrics::histogram!(ACQUIRE_DURATION, "outcome" => outcome).record(took.as_secs_f64());
        ::metrics::histogram!(ACQUIRE_ATTEMPTS, "outcome" => outcome).record(1.0);
    }

    pub(crate) fn master_replies(replies: &Replies) {
        let mut quarantined = 0;
        for (i, reply) in replies.as_slice().iter().enumerate() {
            quarantined += usize::from(*reply == MasterReply::Quarantined);
            let reply = reply_kind(reply);
            ::metrics::counter!(MASTER_REPLIES, "master" => i.to_string(), "reply" => reply)
                .increment(1);
        }
        ::metrics::gauge!(MASTERS_QUARANTINED).set(quarantined as f64);
    }

    pub(crate) fn round_decided(outcome: &'static str) {
        ::metrics::counter!(ROUNDS, "outcome" => outcome).increment(1);
    }

    pub(crate) fn extend_failed(error: &Error) {
        ::metrics::counter!(EXTEND_FAILURES, "reason" => error_kind(error)).increment(1);
    }

    pub(crate) fn released(result: &Result<bool, Error>) {
        let outcome = match result {
            Ok(true) => "released",
            Ok(false) => "not_held",
            Err(_) => "unavailable",
        };
        ::metrics::counter!(RELEASES, "outcome" => outcome).increment(1);
    }

    pub(crate) fn lock_lost() {
        ::metrics::counter!(LOCKS_LOST).increment(1);
    }

    pub(crate) fn woken() {
        ::metrics::counter!(WAKEUPS).increment(1);
    }

    pub(crate) fn cache_reads(hits: u64, misses: u64) {
        if hits > 0 {
            ::metrics::counter!(CACHE_HITS).increment(hits);
        }
        if misses > 0 {
            ::metrics::counter!(CACHE_MISSES).increment(misses);
        }
    }

    pub(crate) fn cache_filled() {
        ::metrics::counter!(CACHE_FILLS).increment(1);
    }

    pub(crate) fn cache_stampede_avoided(how: &'static str) {
        ::metrics::counter!(CACHE_STAMPEDES_AVOIDED, "how" => how).increment(1);
    }
}

#[cfg(not(feature = "metrics"))]
mod record {
    use super::*;

    pub(crate) fn acquire_finished<T>(_: &Result<T, Error>, _: u32, _: Duration) {}
    pub(crate) fn try_acquire_finished<T>(_: &Result<Option<T>, Error>, _: Duration) {}
    pub(crate) fn master_replies(_: &Replies) {}
    pub(crate) fn round_decided(_: &'static str) {}
    pub(crate) fn extend_failed(_: &Error) {}
    pub(crate) fn released(_: &Result<bool, Error>) {}
    pub(crate) fn lock_lost() {}
    pub(crate) fn woken() {}
    pub(crate) fn cache_reads(_: u64, _: u64) {}
    pub(crate) fn cache_filled() {}
    pub(crate) fn cache_stampede_avoided(_: &'static str) {}
}

pub(crate) use record::*;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reply_has_a_distinct_label() {
        let replies = [
            MasterReply::Granted,
            MasterReply::Refused,
            MasterReply::TimedOut,
            MasterReply::Unavailable(String::new()),
            MasterReply::ServerError(String::new()),
            MasterReply::Busy(String::new()),
            MasterReply::Quarantined,
            MasterReply::NoAnswer,
            MasterReply::Unsealed,
            MasterReply::NoScript,
        ];
        let mut labels: Vec<&str> = replies.iter().map(reply_kind).collect();
        labels.sort();
        labels.dedup();
        assert_eq!(labels.len(), replies.len());
    }
}
