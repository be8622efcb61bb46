//! The policy engine: a pure function of (environment, effective policies,
//! activity, now) → what to do now and what comes next. No clock, no store:
//! the periodic task ([`super::task`]) feeds it and applies its decisions.
//!
//! Rules, in order of precedence:
//! 1. **ttl**: at created + ttl + extensions the environment is deleted; a
//!    `ttl_warning` before that, a warning event (once per deadline).
//! 2. **schedule**: at an "on" time a stopped environment is started, at an
//!    "off" time a running one is stopped — but only for on/off times after
//!    the last change of its desired power. A manual start after hours (or a
//!    creation) is therefore undone at the next off time, not at once; a
//!    manual stop in working hours lasts until the next on time.
//! 3. **idle**: a Running environment without activity for `idle` is
//!    stopped. The idle clock starts at the latest of: the last activity, the
//!    first activity report, the last start. Without activity reports (a
//!    runtime that does not measure, a host that went silent) idle never fires.

use std::time::Duration;

use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use metrom_protocol::duration::format_duration;
use metrom_protocol::messages::env::EnvState;
use metrom_protocol::template::{PolicySpec, ScheduleSpec, format_window, weekday_name};

use super::schedule::{last_change, next_change_to};
use crate::store::{Desired, EnvRecord};

/// What the activity reports say about an environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activity {
    /// Its host sends no activity figures for it (now): idle stop is off.
    Unreported,
    /// Nothing above the thresholds since this instant (the last active
    /// interval's end, or the first report).
    IdleSince(Timestamp),
}

/// What a policy does to an environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    None,
    Start,
    Stop,
    Delete,
    /// Tell the owner the ttl runs out soon (an event; nothing changes).
    Warn,
}

impl Action {
    pub fn verb(&self) -> &'static str {
        match self {
            Action::None => "nothing",
            Action::Start => "start",
            Action::Stop => "stop",
            Action::Delete => "delete",
            Action::Warn => "warn",
        }
    }
}

/// A future action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    pub action: Action,
    pub at: Timestamp,
    pub reason: String,
}

/// The engine's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// What to do now.
    pub action: Action,
    /// Why (empty for None).
    pub reason: String,
    /// For a Warn: the deadline it announces.
    pub deadline: Option<Timestamp>,
    /// The earliest action due later, if any.
    pub next: Option<Planned>,
}

/// An action due now: what, why, and (for a warning) the deadline it announces.
type Due = (Action, String, Option<Timestamp>);

/// The ttl deadline: created + ttl + extensions.
pub fn deadline(env: &EnvRecord, p: &PolicySpec) -> Option<Timestamp> {
    let ttl = p.ttl?;
    let total = ttl.checked_add(Duration::from_secs(env.policy.extended_secs))?;
    env.created_at
        .checked_add(SignedDuration::try_from(total).ok()?)
        .ok()
}

/// Decides what the policies do to `env` at `now`.
pub fn decide(env: &EnvRecord, p: &PolicySpec, activity: Activity, now: Timestamp) -> Decision {
    let mut due: Vec<Due> = Vec::new();
    let mut later: Vec<Planned> = Vec::new();
    if env.desired == Desired::Deleted || env.state == EnvState::Deleted {
        return none(None);
    }

    // ttl
    if let (Some(ttl), Some(deadline)) = (p.ttl, deadline(env, p)) {
        let why = ttl_reason(env, ttl);
        if now >= deadline {
            return Decision {
                action: Action::Delete,
                reason: why,
                deadline: Some(deadline),
                next: None,
            };
        }
        later.push(Planned {
            action: Action::Delete,
            at: deadline,
            reason: why,
        });
        if let Some(warning) = p.ttl_warning {
            let warn_at = deadline
                .checked_sub(SignedDuration::try_from(warning).unwrap_or(SignedDuration::MAX))
                .unwrap_or(Timestamp::MIN);
            if env.policy.warned_for != Some(deadline) {
                let why = format!(
                    "deleted at {} by its ttl; extend it with `metrom env extend {} --by 3d`",
                    deadline, env.name
                );
                if now >= warn_at {
                    due.push((Action::Warn, why, Some(deadline)));
                } else {
                    later.push(Planned {
                        action: Action::Warn,
                        at: warn_at,
                        reason: why,
                    });
                }
            }
        }
    }

    let power_at = env.power_changed_at();

    if let Some(s) = &p.schedule {
        schedule(env, s, power_at, now, &mut due, &mut later);
    }
    if let (Some(idle), Activity::IdleSince(since)) = (p.idle, activity) {
        self::idle(env, idle, since, power_at, now, &mut due, &mut later);
    }

    // The most important due action: stop or start before a warning.
    due.sort_by_key(|(a, _, _)| match a {
        Action::Delete => 0,
        Action::Stop => 1,
        Action::Start => 2,
        Action::Warn => 3,
        Action::None => 4,
    });
    let next = later.into_iter().min_by_key(|p| p.at);
    match due.into_iter().next() {
        Some((action, reason, deadline)) => Decision {
            action,
            reason,
            deadline,
            next,
        },
        None => none(next),
    }
}

/// Working hours: act on the latest on/off time if it came after the last
/// change of power; plan the next one.
fn schedule(
    env: &EnvRecord,
    s: &ScheduleSpec,
    power_at: Timestamp,
    now: Timestamp,
    due: &mut Vec<Due>,
    later: &mut Vec<Planned>,
) {
    let Ok(tz) = s.time_zone() else { return };
    let text = schedule_text(s);
    if let Some(c) = last_change(s, &tz, now)
        && c.at > power_at
    {
        match (c.on, env.desired) {
            (true, Desired::Stopped) => due.push((
                Action::Start,
                format!("working hours began at {} ({text})", local_clock(&tz, c.at)),
                None,
            )),
            (false, Desired::Running) => due.push((
                Action::Stop,
                format!("working hours ended at {} ({text})", local_clock(&tz, c.at)),
                None,
            )),
            _ => {}
        }
    }
    let (want_on, action) = match env.desired {
        Desired::Running => (false, Action::Stop),
        _ => (true, Action::Start),
    };
    if let Some(at) = next_change_to(s, &tz, now, want_on) {
        let what = if want_on { "begin" } else { "end" };
        later.push(Planned {
            action,
            at,
            reason: format!("working hours {what} ({text})"),
        });
    }
}

/// Idle stop: only a Running environment, counted from the latest of its
/// last activity, its last start and when it came up.
fn idle(
    env: &EnvRecord,
    idle: Duration,
    since: Timestamp,
    power_at: Timestamp,
    now: Timestamp,
    due: &mut Vec<Due>,
    later: &mut Vec<Planned>,
) {
    if env.desired != Desired::Running || env.state != EnvState::Running {
        return;
    }
    let mut from = since.max(power_at);
    if let Some(r) = env.timings.running_at {
        from = from.max(r);
    }
    let stop_at = from
        .checked_add(SignedDuration::try_from(idle).unwrap_or(SignedDuration::MAX))
        .unwrap_or(Timestamp::MAX);
    let why = format!("no activity for {} (idle policy)", format_duration(idle));
    if now >= stop_at {
        due.push((Action::Stop, why, None));
    } else {
        later.push(Planned {
            action: Action::Stop,
            at: stop_at,
            reason: why,
        });
    }
}

fn none(next: Option<Planned>) -> Decision {
    Decision {
        action: Action::None,
        reason: String::new(),
        deadline: None,
        next,
    }
}

fn ttl_reason(env: &EnvRecord, ttl: Duration) -> String {
    let ext = match env.policy.extended_secs {
        0 => String::new(),
        s => format!(" extended by {}", format_duration(Duration::from_secs(s))),
    };
    format!("its ttl of {}{ext} ran out", format_duration(ttl))
}

/// `mon,tue,wed,thu,fri 09:00-19:00 Asia/Seoul`.
pub fn schedule_text(s: &ScheduleSpec) -> String {
    let days: Vec<&str> = s.days.iter().map(|d| weekday_name(*d)).collect();
    let hours: Vec<String> = s.hours.iter().map(|w| format_window(*w)).collect();
    format!("{} {} {}", days.join(","), hours.join(","), s.timezone)
}

fn local_clock(tz: &TimeZone, at: Timestamp) -> String {
    at.to_zoned_datetime(tz.clone())
        .strftime("%H:%M")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn env(created: &str, desired: Desired, state: EnvState) -> EnvRecord {
        EnvRecord {
            created_at: at(created),
            ..EnvRecord::sample(desired, state)
        }
    }

    fn policies(text: &str) -> PolicySpec {
        let p: PolicySpec = toml::from_str(text).unwrap();
        p.validate().unwrap();
        p
    }

    const SEOUL: &str = "[schedule]\ntimezone = \"Asia/Seoul\"\ndays = [\"mon\", \"tue\", \"wed\", \"thu\", \"fri\"]\nhours = [\"09:00-19:00\"]\nholidays = [\"2026-12-25\"]\n";

    #[test]
    fn ttl_warns_once_then_deletes_and_extensions_move_both() {
        let p = policies("ttl = \"14d\"\nttl_warning = \"1d\"\n");
        let mut e = env("2026-03-01T10:00:00Z", Desired::Running, EnvState::Running);
        let d = decide(&e, &p, Activity::Unreported, at("2026-03-14T09:59:59Z"));
        assert_eq!(d.action, Action::None);
        assert_eq!(
            d.next.as_ref().map(|n| (n.action, n.at)),
            Some((Action::Warn, at("2026-03-14T10:00:00Z")))
        );
        let d = decide(&e, &p, Activity::Unreported, at("2026-03-14T10:00:00Z"));
        assert_eq!(d.action, Action::Warn);
        assert_eq!(d.deadline, Some(at("2026-03-15T10:00:00Z")));
        assert!(d.reason.contains("metrom env extend dev"), "{}", d.reason);
        // Once warned for this deadline, no second warning.
        e.policy.warned_for = d.deadline;
        let d = decide(&e, &p, Activity::Unreported, at("2026-03-15T09:00:00Z"));
        assert_eq!(d.action, Action::None);
        assert_eq!(
            d.next.map(|n| (n.action, n.at)),
            Some((Action::Delete, at("2026-03-15T10:00:00Z")))
        );
        let d = decide(&e, &p, Activity::Unreported, at("2026-03-15T10:00:00Z"));
        assert_eq!(d.action, Action::Delete);
        assert_eq!(d.reason, "its ttl of 14d ran out");
        // Extended by 3 days: the old deadline passes, a new warning is due
        // a day before the new one.
        e.policy.extended_secs = 3 * 86_400;
        let d = decide(&e, &p, Activity::Unreported, at("2026-03-15T10:00:00Z"));
        assert_eq!(d.action, Action::None);
        let d = decide(&e, &p, Activity::Unreported, at("2026-03-17T10:00:00Z"));
        assert_eq!(
            (d.action, d.deadline),
            (Action::Warn, Some(at("2026-03-18T10:00:00Z")))
        );
        let d = decide(&e, &p, Activity::Unreported, at("2026-03-18T10:00:00Z"));
        assert_eq!(d.action, Action::Delete);
        assert_eq!(d.reason, "its ttl of 14d extended by 3d ran out");
        // Deleted already: nothing more.
        e.desired = Desired::Deleted;
        let d = decide(&e, &p, Activity::Unreported, at("2026-04-18T10:00:00Z"));
        assert_eq!(d, none(None));
    }

    #[test]
    fn schedule_stops_at_off_and_starts_at_on_exactly() {
        let p = policies(SEOUL);
        // Created Monday 2026-03-02 10:00 KST (01:00Z).
        let mut e = env("2026-03-02T01:00:00Z", Desired::Running, EnvState::Running);
        // 18:59:59 KST: nothing yet; next is the stop at 19:00 KST = 10:00Z.
        let d = decide(&e, &p, Activity::Unreported, at("2026-03-02T09:59:59Z"));
        assert_eq!(d.action, Action::None);
        let n = d.next.unwrap();
        assert_eq!((n.action, n.at), (Action::Stop, at("2026-03-02T10:00:00Z")));
        // Exactly 19:00 KST: stop.
        let d = decide(&e, &p, Activity::Unreported, at("2026-03-02T10:00:00Z"));
        assert_eq!(d.action, Action::Stop);
        assert_eq!(
            d.reason,
            "working hours ended at 19:00 (mon,tue,wed,thu,fri 09:00-19:00 Asia/Seoul)"
        );
        // The task applies it: desired Stopped, power changed now.
        e.desired = Desired::Stopped;
        e.policy.power_changed_at = Some(at("2026-03-02T10:00:05Z"));
        let d = decide(&e, &p, Activity::Unreported, at("2026-03-02T23:59:59Z"));
        assert_eq!(d.action, Action::None);
        assert_eq!(
            d.next.map(|n| (n.action, n.at)),
            Some((Action::Start, at("2026-03-03T00:00:00Z")))
        );
        // Exactly 09:00 KST Tuesday: start.
        let d = decide(&e, &p, Activity::Unreported, at("2026-03-03T00:00:00Z"));
        assert_eq!(d.action, Action::Start);
    }

    #[test]
    fn a_manual_start_after_hours_lasts_until_the_next_off_time() {
        let p = policies(SEOUL);
        let mut e = env("2026-03-02T01:00:00Z", Desired::Stopped, EnvState::Stopped);
        // Stopped by the schedule at 19:00 KST Monday, started by hand at 21:00 KST.
        e.policy.power_changed_at = Some(at("2026-03-02T12:00:00Z"));
        e.desired = Desired::Running;
        e.state = EnvState::Running;
        for t in [
            "2026-03-02T12:00:01Z",
            "2026-03-02T23:00:00Z",
            "2026-03-03T09:59:59Z",
        ] {
            let d = decide(&e, &p, Activity::Unreported, at(t));
            assert_eq!(d.action, Action::None, "at {t}");
        }
        let d = decide(&e, &p, Activity::Unreported, at("2026-03-02T23:00:00Z"));
        assert_eq!(
            d.next.map(|n| (n.action, n.at)),
            Some((Action::Stop, at("2026-03-03T10:00:00Z")))
        );
        // Tuesday 19:00 KST: the next off time stops it.
        let d = decide(&e, &p, Activity::Unreported, at("2026-03-03T10:00:00Z"));
        assert_eq!(d.action, Action::Stop);
        // A manual start on Saturday lasts until Monday's off time.
        e.policy.power_changed_at = Some(at("2026-03-07T02:00:00Z"));
        let d = decide(&e, &p, Activity::Unreported, at("2026-03-08T12:00:00Z"));
        assert_eq!(d.action, Action::None);
        assert_eq!(d.next.unwrap().at, at("2026-03-09T10:00:00Z"));
        // A manual stop in working hours lasts until the next on time.
        e.desired = Desired::Stopped;
        e.policy.power_changed_at = Some(at("2026-03-09T02:00:00Z"));
        let d = decide(&e, &p, Activity::Unreported, at("2026-03-09T05:00:00Z"));
        assert_eq!(d.action, Action::None);
        assert_eq!(
            d.next.map(|n| (n.action, n.at)),
            Some((Action::Start, at("2026-03-10T00:00:00Z")))
        );
    }

    #[test]
    fn holidays_keep_it_stopped_and_the_next_start_skips_them() {
        let p = policies(SEOUL);
        let mut e = env("2026-12-01T01:00:00Z", Desired::Stopped, EnvState::Stopped);
        e.policy.power_changed_at = Some(at("2026-12-24T10:00:00Z")); // stopped Thu 19:00 KST
        // Christmas Friday 10:00 KST: no start.
        let d = decide(&e, &p, Activity::Unreported, at("2026-12-25T01:00:00Z"));
        assert_eq!(d.action, Action::None);
        assert_eq!(
            d.next.map(|n| (n.action, n.at)),
            Some((Action::Start, at("2026-12-28T00:00:00Z")))
        );
    }

    #[test]
    fn berlin_and_new_york_schedules_act_at_local_time_across_dst() {
        let berlin = policies(
            "[schedule]\ntimezone = \"Europe/Berlin\"\ndays = [\"mon\", \"tue\", \"wed\", \"thu\", \"fri\", \"sat\", \"sun\"]\nhours = [\"08:00-18:00\"]\n",
        );
        let mut e = env("2026-03-27T09:00:00Z", Desired::Stopped, EnvState::Stopped);
        e.policy.power_changed_at = Some(at("2026-03-28T17:00:00Z")); // Saturday 18:00 CET
        // Sunday 2026-03-29 (DST began at 01:00Z): 08:00 CEST is 06:00Z, not 07:00Z.
        let d = decide(
            &e,
            &berlin,
            Activity::Unreported,
            at("2026-03-29T05:59:59Z"),
        );
        assert_eq!(d.action, Action::None);
        assert_eq!(d.next.unwrap().at, at("2026-03-29T06:00:00Z"));
        assert_eq!(
            decide(
                &e,
                &berlin,
                Activity::Unreported,
                at("2026-03-29T06:00:00Z")
            )
            .action,
            Action::Start
        );

        let ny = policies(
            "[schedule]\ntimezone = \"America/New_York\"\ndays = [\"mon\", \"tue\", \"wed\", \"thu\", \"fri\", \"sat\", \"sun\"]\nhours = [\"08:00-18:00\"]\n",
        );
        let mut e = env("2026-10-30T12:00:00Z", Desired::Running, EnvState::Running);
        // Sunday 2026-11-01 (DST ended at 06:00Z): 18:00 EST is 23:00Z.
        let d = decide(&e, &ny, Activity::Unreported, at("2026-11-01T22:00:00Z"));
        assert_eq!(d.action, Action::None);
        assert_eq!(d.next.unwrap().at, at("2026-11-01T23:00:00Z"));
        e.policy.power_changed_at = Some(at("2026-11-01T13:00:00Z"));
        assert_eq!(
            decide(&e, &ny, Activity::Unreported, at("2026-11-01T23:00:00Z")).action,
            Action::Stop
        );
    }

    #[test]
    fn idle_stops_after_the_quiet_period_only_with_activity_reports() {
        let p = policies("idle = \"30m\"\n");
        let mut e = env("2026-03-02T01:00:00Z", Desired::Running, EnvState::Running);
        e.timings.running_at = Some(at("2026-03-02T01:01:00Z"));
        let now = at("2026-03-02T05:00:00Z");
        // No reports: never idle.
        assert_eq!(
            decide(&e, &p, Activity::Unreported, now).action,
            Action::None
        );
        // Active 10 minutes ago: stop in 20 minutes.
        let d = decide(&e, &p, Activity::IdleSince(at("2026-03-02T04:50:00Z")), now);
        assert_eq!(d.action, Action::None);
        assert_eq!(
            d.next.map(|n| (n.action, n.at)),
            Some((Action::Stop, at("2026-03-02T05:20:00Z")))
        );
        // Quiet for 30 minutes exactly: stop.
        let d = decide(&e, &p, Activity::IdleSince(at("2026-03-02T04:30:00Z")), now);
        assert_eq!(d.action, Action::Stop);
        assert_eq!(d.reason, "no activity for 30m (idle policy)");
        // Started by hand 5 minutes ago: the idle clock restarts.
        e.policy.power_changed_at = Some(at("2026-03-02T04:55:00Z"));
        let d = decide(&e, &p, Activity::IdleSince(at("2026-03-02T01:00:00Z")), now);
        assert_eq!(d.action, Action::None);
        // Not Running (still provisioning, or already stopping): no idle stop.
        e.state = EnvState::Provisioning;
        let d = decide(&e, &p, Activity::IdleSince(at("2026-03-02T01:00:00Z")), now);
        assert_eq!((d.action, d.next), (Action::None, None));
    }

    #[test]
    fn the_most_urgent_action_comes_first() {
        let p = policies(&format!(
            "ttl = \"1d\"\nttl_warning = \"2h\"\nidle = \"10m\"\n{SEOUL}"
        ));
        // Monday 19:00 KST, 23h after creation: the warning, the schedule's
        // stop and the idle stop are all due; stop first.
        let e = env("2026-03-01T11:00:00Z", Desired::Running, EnvState::Running);
        let now = at("2026-03-02T10:00:00Z");
        let d = decide(&e, &p, Activity::IdleSince(at("2026-03-02T01:00:00Z")), now);
        assert_eq!(d.action, Action::Stop);
        assert!(d.reason.starts_with("working hours ended"), "{}", d.reason);
        // An hour later the ttl deletes it whatever else is due.
        let d = decide(&e, &p, Activity::Unreported, at("2026-03-02T11:00:00Z"));
        assert_eq!(d.action, Action::Delete);
    }
}
