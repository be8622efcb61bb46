//! When working hours begin and end: the moments a schedule changes between
//! "on" and "off", in real time, across daylight-saving changes and holidays.
//!
//! [`ScheduleSpec::is_on_in`] says whether an instant is in working hours; it
//! is a step function of local date and time. It can only change at a local
//! midnight, at a window's start or end (a local time that may happen twice
//! in a fold, or never in a gap), or at a time-zone transition (where a local
//! time in a gap takes effect). Those instants are the candidates; between two
//! consecutive candidates the answer is constant, so the changes are the
//! candidates where it differs from the one before.

use jiff::civil::{Date, Time};
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};
use metrom_protocol::template::ScheduleSpec;

/// Working hours begin (`on`) or end at `at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change {
    pub at: Timestamp,
    pub on: bool,
}

/// Days scanned per step, and how far ahead or back a search goes (a schedule
/// whose days are all holidays for a year does not change in that year).
const CHUNK_DAYS: i32 = 8;
const MAX_CHUNKS: i32 = 50;

/// The first change strictly after `after`.
pub fn next_change(s: &ScheduleSpec, tz: &TimeZone, after: Timestamp) -> Option<Change> {
    let mut cur = s.is_on_in(tz, after);
    let mut from = after;
    let mut day = local_date(tz, after);
    for _ in 0..MAX_CHUNKS {
        let end_day = day.checked_add(CHUNK_DAYS.days()).ok()?;
        let limit = day_start(tz, end_day)?;
        for c in chunk(s, tz, day, end_day, |c| c > from && c <= limit) {
            let on = s.is_on_in(tz, c);
            if on != cur {
                return Some(Change { at: c, on });
            }
            cur = on;
        }
        from = limit;
        day = end_day;
    }
    None
}

/// The first change after `after` into `on` (working hours beginning when
/// `on`, ending otherwise).
pub fn next_change_to(
    s: &ScheduleSpec,
    tz: &TimeZone,
    after: Timestamp,
    on: bool,
) -> Option<Timestamp> {
    let mut t = after;
    // At most two changes away.
    for _ in 0..2 {
        let c = next_change(s, tz, t)?;
        if c.on == on {
            return Some(c.at);
        }
        t = c.at;
    }
    None
}

/// The latest change at or before `at`.
pub fn last_change(s: &ScheduleSpec, tz: &TimeZone, at: Timestamp) -> Option<Change> {
    let cur = s.is_on_in(tz, at);
    // The earliest candidate seen so far (going back in time) from which the
    // state was `cur` up to `at`.
    let mut later: Option<Timestamp> = None;
    let mut until = at;
    let mut day = local_date(tz, at);
    for _ in 0..MAX_CHUNKS {
        let start_day = day.checked_sub(CHUNK_DAYS.days()).ok()?;
        let limit = day_start(tz, start_day)?;
        let cands = chunk(s, tz, start_day, day, |c| c <= until && c >= limit);
        for c in cands.into_iter().rev() {
            if s.is_on_in(tz, c) == cur {
                later = Some(c);
            } else {
                // Different at c, `cur` from the next candidate on: that is the change.
                return later.map(|at| Change { at, on: cur });
            }
        }
        until = limit
            .checked_sub(jiff::SignedDuration::from_nanos(1))
            .ok()?;
        day = start_day;
    }
    None
}

/// The candidates of the local days `from..=to` (and one day either side,
/// for folds across midnight) that `keep` keeps, sorted.
fn chunk(
    s: &ScheduleSpec,
    tz: &TimeZone,
    from: Date,
    to: Date,
    keep: impl Fn(Timestamp) -> bool,
) -> Vec<Timestamp> {
    let first = from.checked_sub(1.day()).unwrap_or(from);
    let last = to.checked_add(1.day()).unwrap_or(to);
    let mut out: Vec<Timestamp> = days(first, last)
        .flat_map(|d| candidates(s, tz, d))
        .filter(|c| keep(*c))
        .collect();
    out.sort();
    out.dedup();
    out
}

fn local_date(tz: &TimeZone, at: Timestamp) -> Date {
    tz.to_datetime(at).date()
}

/// The first instant of a local day (the earlier one if midnight is repeated,
/// the end of the gap if midnight is skipped).
fn day_start(tz: &TimeZone, d: Date) -> Option<Timestamp> {
    tz.to_ambiguous_timestamp(d.to_datetime(Time::midnight()))
        .earlier()
        .ok()
}

/// Local dates from `from` to `to`, both included.
fn days(from: Date, to: Date) -> impl Iterator<Item = Date> {
    let mut d = Some(from);
    std::iter::from_fn(move || {
        let cur = d?;
        if cur > to {
            return None;
        }
        d = cur.checked_add(1.day()).ok();
        Some(cur)
    })
}

/// Instants of one local day where the schedule may change.
fn candidates(s: &ScheduleSpec, tz: &TimeZone, d: Date) -> Vec<Timestamp> {
    let mut times = vec![Time::midnight()];
    for &(start, end) in &s.hours {
        times.push(start);
        if end != Time::MAX {
            times.push(end);
        }
    }
    let mut out = Vec::with_capacity(times.len() * 2 + 2);
    for t in times {
        let amb = tz.to_ambiguous_timestamp(d.to_datetime(t));
        if let Ok(e) = amb.earlier() {
            out.push(e);
        }
        if let Ok(l) = amb.later() {
            out.push(l);
        }
    }
    // Time-zone transitions during the day: a window boundary inside a gap
    // takes effect there.
    if let (Some(start), Some(next)) = (
        day_start(tz, d),
        d.checked_add(1.day()).ok().and_then(|n| day_start(tz, n)),
    ) && let Ok(before) = start.checked_sub(jiff::SignedDuration::from_nanos(1))
    {
        for tr in tz.following(before) {
            let at = tr.timestamp();
            if at >= next {
                break;
            }
            out.push(at);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sched(tz: &str, days: &[&str], hours: &[&str], holidays: &[&str]) -> ScheduleSpec {
        let q = |v: &[&str]| {
            v.iter()
                .map(|s| format!("\"{s}\""))
                .collect::<Vec<_>>()
                .join(", ")
        };
        toml::from_str(&format!(
            "timezone = \"{tz}\"\ndays = [{}]\nhours = [{}]\nholidays = [{}]\n",
            q(days),
            q(hours),
            q(holidays)
        ))
        .unwrap()
    }

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn changes(s: &ScheduleSpec, from: &str, n: usize) -> Vec<(String, bool)> {
        let tz = s.time_zone().unwrap();
        let mut out = Vec::new();
        let mut t = at(from);
        for _ in 0..n {
            let c = next_change(s, &tz, t).unwrap();
            out.push((c.at.to_string(), c.on));
            t = c.at;
        }
        out
    }

    const WEEK: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
    const WORKDAYS: [&str; 5] = ["mon", "tue", "wed", "thu", "fri"];

    #[test]
    fn seoul_has_no_dst_and_skips_weekends_and_holidays() {
        let s = sched(
            "Asia/Seoul",
            &WORKDAYS,
            &["09:00-12:00", "13:00-19:00"],
            &["2026-12-25"],
        );
        // Thursday 2026-12-24 08:00 KST = 2026-12-23T23:00Z.
        assert_eq!(
            changes(&s, "2026-12-23T23:00:00Z", 5),
            [
                ("2026-12-24T00:00:00Z".into(), true),  // 09:00 KST
                ("2026-12-24T03:00:00Z".into(), false), // 12:00
                ("2026-12-24T04:00:00Z".into(), true),  // 13:00
                ("2026-12-24T10:00:00Z".into(), false), // 19:00
                // Friday is Christmas, then the weekend: Monday 09:00 KST.
                ("2026-12-28T00:00:00Z".into(), true),
            ]
        );
    }

    #[test]
    fn new_york_working_hours_follow_the_clock_across_both_dst_changes() {
        let s = sched("America/New_York", &WORKDAYS, &["09:00-17:00"], &[]);
        // Friday 2026-03-06 17:00 EST = 22:00Z; DST starts Sunday 2026-03-08.
        assert_eq!(
            changes(&s, "2026-03-06T21:00:00Z", 3),
            [
                ("2026-03-06T22:00:00Z".into(), false),
                ("2026-03-09T13:00:00Z".into(), true), // 09:00 EDT
                ("2026-03-09T21:00:00Z".into(), false),
            ]
        );
        // DST ends Sunday 2026-11-01: Monday 09:00 EST is 14:00Z.
        assert_eq!(
            changes(&s, "2026-10-30T20:00:00Z", 2),
            [
                ("2026-10-30T21:00:00Z".into(), false), // Friday 17:00 EDT
                ("2026-11-02T14:00:00Z".into(), true),
            ]
        );
    }

    #[test]
    fn berlin_window_inside_the_spring_gap_starts_when_the_clock_jumps() {
        // 2026-03-29: 02:00 CET jumps to 03:00 CEST (01:00Z). 02:30 never
        // happens; the window is on from the jump.
        let s = sched("Europe/Berlin", &WEEK, &["02:30-04:00"], &[]);
        assert_eq!(
            changes(&s, "2026-03-28T23:30:00Z", 2),
            [
                ("2026-03-29T01:00:00Z".into(), true),
                ("2026-03-29T02:00:00Z".into(), false), // 04:00 CEST
            ]
        );
    }

    #[test]
    fn berlin_window_inside_the_autumn_fold_is_on_twice() {
        // 2026-10-25: 03:00 CEST falls back to 02:00 CET (01:00Z). Local
        // 02:00-02:59 happens twice.
        let s = sched("Europe/Berlin", &WEEK, &["02:30-04:00"], &[]);
        assert_eq!(
            changes(&s, "2026-10-24T23:00:00Z", 4),
            [
                ("2026-10-25T00:30:00Z".into(), true),  // 02:30 CEST
                ("2026-10-25T01:00:00Z".into(), false), // back to 02:00 CET
                ("2026-10-25T01:30:00Z".into(), true),  // 02:30 CET
                ("2026-10-25T03:00:00Z".into(), false), // 04:00 CET
            ]
        );
        let tz = s.time_zone().unwrap();
        assert_eq!(
            last_change(&s, &tz, at("2026-10-25T01:10:00Z")),
            Some(Change {
                at: at("2026-10-25T01:00:00Z"),
                on: false
            })
        );
    }

    #[test]
    fn last_change_is_exact_at_the_boundaries() {
        let s = sched("Europe/Berlin", &WORKDAYS, &["09:00-17:00"], &[]);
        let tz = s.time_zone().unwrap();
        // Monday 2026-03-30 09:00 CEST = 07:00Z, the day after DST began.
        let on = at("2026-03-30T07:00:00Z");
        assert_eq!(last_change(&s, &tz, on), Some(Change { at: on, on: true }));
        let just_before = at("2026-03-30T06:59:59.999Z");
        assert_eq!(
            last_change(&s, &tz, just_before),
            Some(Change {
                at: at("2026-03-27T16:00:00Z"), // Friday 17:00 CET
                on: false
            })
        );
        let off = at("2026-03-30T15:00:00Z");
        assert_eq!(
            last_change(&s, &tz, off),
            Some(Change { at: off, on: false })
        );
        assert_eq!(
            next_change_to(&s, &tz, at("2026-03-30T08:00:00Z"), true),
            Some(at("2026-03-31T07:00:00Z"))
        );
    }

    #[test]
    fn midnight_windows_and_all_day_schedules() {
        // On from Friday 18:00 to Monday 00:00 across midnight windows.
        let s = sched("UTC", &["fri", "sat", "sun"], &["00:00-24:00"], &[]);
        let tz = s.time_zone().unwrap();
        let c = changes(&s, "2026-06-03T12:00:00Z", 2); // a Wednesday
        assert_eq!(
            c,
            [
                ("2026-06-05T00:00:00Z".into(), true),
                ("2026-06-08T00:00:00Z".into(), false),
            ]
        );
        assert_eq!(
            last_change(&s, &tz, at("2026-06-07T23:00:00Z")),
            Some(Change {
                at: at("2026-06-05T00:00:00Z"),
                on: true
            })
        );
        // Always on: no change at all.
        let always = sched("UTC", &WEEK, &["00:00-24:00"], &[]);
        assert_eq!(next_change(&always, &tz, at("2026-06-03T12:00:00Z")), None);
    }
}
