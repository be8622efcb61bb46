//! Lifecycle policies as templates and site configs write them: `ttl`,
//! `ttl_warning`, `idle` and a working-hours `schedule`.
//!
//! The types (de)serialize with serde in the same shape everywhere — TOML in
//! `metrom.toml` and the site config, JSON in the store — with durations as
//! strings (`"14d"`), weekdays as `"mon"`, hours as `"09:00-12:00"` and dates as
//! `"2026-12-25"`. Deserializing checks each field, so a bad value is reported
//! at its own line; [`PolicySpec::validate`] and [`ScheduleSpec::validate`]
//! check values built in code.

use std::time::Duration;

use jiff::Timestamp;
use jiff::civil::{Date, Time, Weekday};
use jiff::tz::TimeZone;
use serde::{Deserialize, Serialize};

use crate::duration::format_duration;

/// The policies of a template (its defaults) or of an environment.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySpec {
    /// Delete the environment this long after it was created.
    #[serde(
        default,
        with = "positive_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub ttl: Option<Duration>,
    /// Warn the owner this long before the ttl runs out.
    #[serde(
        default,
        with = "positive_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub ttl_warning: Option<Duration>,
    /// Stop the environment after this long without activity.
    #[serde(
        default,
        with = "positive_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub idle: Option<Duration>,
    /// Run only in working hours.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<ScheduleSpec>,
}

/// Working hours: the environment runs inside `hours` on `days` (except
/// `holidays`), in `timezone`, and is stopped outside them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleSpec {
    /// An IANA time zone name (`Asia/Seoul`, `Europe/Berlin`, `UTC`).
    #[serde(deserialize_with = "de_timezone")]
    pub timezone: String,
    /// The working days, each once.
    #[serde(with = "weekdays")]
    pub days: Vec<Weekday>,
    /// Windows `[start, end)` within one day: start before end, sorted, not
    /// overlapping, at least one. An end of `24:00` is stored as [`Time::MAX`].
    #[serde(with = "windows")]
    pub hours: Vec<(Time, Time)>,
    /// Days off, whatever their weekday.
    #[serde(default, with = "dates", skip_serializing_if = "Vec::is_empty")]
    pub holidays: Vec<Date>,
}

/// A policy that cannot work as written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("{key} must be longer than zero: remove it to turn the policy off")]
    Zero { key: &'static str },
    #[error("ttl_warning needs a ttl to warn about: set ttl, or remove ttl_warning")]
    WarningWithoutTtl,
    #[error("ttl_warning ({warning}) must be shorter than ttl ({ttl})")]
    WarningNotShorter { warning: String, ttl: String },
    #[error(transparent)]
    Schedule(#[from] ScheduleError),
}

/// A working-hours schedule that cannot work as written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("unknown time zone '{0}': use an IANA name such as Europe/Berlin, Asia/Seoul or UTC")]
    UnknownTimeZone(String),
    #[error("no days: list at least one of mon, tue, wed, thu, fri, sat, sun")]
    NoDays,
    #[error("unknown weekday '{0}' (use mon, tue, wed, thu, fri, sat, sun)")]
    UnknownWeekday(String),
    #[error("weekday '{0}' is listed twice")]
    DuplicateDay(String),
    #[error("no hours: list at least one window such as \"09:00-18:00\"")]
    NoHours,
    #[error("invalid hours '{window}': {why} (write HH:MM-HH:MM, such as 09:00-18:00)")]
    BadWindow { window: String, why: &'static str },
    #[error(
        "hours '{0}' end before they start: a window lies within one day; \
         split one that crosses midnight in two"
    )]
    EmptyWindow(String),
    #[error("hours '{later}' are listed before '{earlier}': list windows in order")]
    Unsorted { earlier: String, later: String },
    #[error("hours '{first}' and '{second}' overlap: merge them")]
    Overlap { first: String, second: String },
    #[error("invalid holiday '{date}': {why} (write dates as YYYY-MM-DD)")]
    BadHoliday { date: String, why: String },
    #[error("holiday '{0}' is listed twice")]
    DuplicateHoliday(String),
}

impl PolicySpec {
    /// One line per policy, for people: `ttl 14d (warning 1d before)`,
    /// `idle 60m`, `schedule mon,tue 09:00-19:00 Asia/Seoul (2 holidays)`.
    pub fn summary(&self) -> Vec<String> {
        use crate::duration::format_duration;
        let mut out = Vec::new();
        if let Some(ttl) = self.ttl {
            let warn = self
                .ttl_warning
                .map(|w| format!(" (warning {} before)", format_duration(w)))
                .unwrap_or_default();
            out.push(format!("ttl {}{warn}", format_duration(ttl)));
        }
        if let Some(idle) = self.idle {
            out.push(format!("idle {}", format_duration(idle)));
        }
        if let Some(s) = &self.schedule {
            let days: Vec<&str> = s.days.iter().map(|d| weekday_name(*d)).collect();
            let hours: Vec<String> = s.hours.iter().map(|w| format_window(*w)).collect();
            let holidays = match s.holidays.len() {
                0 => String::new(),
                1 => " (1 holiday)".to_string(),
                n => format!(" ({n} holidays)"),
            };
            out.push(format!(
                "schedule {} {} {}{holidays}",
                days.join(","),
                hours.join(","),
                s.timezone
            ));
        }
        out
    }

    /// Checks what deserializing checks, plus that `ttl_warning` is shorter
    /// than `ttl`.
    pub fn validate(&self) -> Result<(), PolicyError> {
        for (key, d) in [
            ("ttl", self.ttl),
            ("ttl_warning", self.ttl_warning),
            ("idle", self.idle),
        ] {
            if d.is_some_and(|d| d.is_zero()) {
                return Err(PolicyError::Zero { key });
            }
        }
        match (self.ttl, self.ttl_warning) {
            (None, Some(_)) => return Err(PolicyError::WarningWithoutTtl),
            (Some(ttl), Some(warning)) if warning >= ttl => {
                return Err(PolicyError::WarningNotShorter {
                    warning: format_duration(warning),
                    ttl: format_duration(ttl),
                });
            }
            _ => {}
        }
        if let Some(s) = &self.schedule {
            s.validate()?;
        }
        Ok(())
    }

    /// Whether no policy is set.
    pub fn is_empty(&self) -> bool {
        self == &PolicySpec::default()
    }
}

impl PolicyError {
    /// The key at fault, relative to the policies table (`ttl_warning`,
    /// `schedule.hours`).
    pub fn key(&self) -> &'static str {
        match self {
            PolicyError::Zero { key } => key,
            PolicyError::WarningWithoutTtl | PolicyError::WarningNotShorter { .. } => "ttl_warning",
            PolicyError::Schedule(e) => e.key(),
        }
    }
}

impl ScheduleSpec {
    /// Checks the time zone exists, days are unique and not empty, each window
    /// starts before it ends, windows are sorted and do not overlap, and
    /// holidays are unique.
    pub fn validate(&self) -> Result<(), ScheduleError> {
        self.time_zone()?;
        check_days(&self.days)?;
        check_windows(&self.hours)?;
        check_holidays(&self.holidays)
    }

    /// The schedule's time zone, from the bundled tz database.
    pub fn time_zone(&self) -> Result<TimeZone, ScheduleError> {
        TimeZone::get(&self.timezone)
            .map_err(|_| ScheduleError::UnknownTimeZone(self.timezone.clone()))
    }

    /// Whether `at` falls in working hours: a listed day that is not a holiday,
    /// inside one of the windows, in the schedule's time zone.
    pub fn is_on(&self, at: Timestamp) -> Result<bool, ScheduleError> {
        Ok(self.is_on_in(&self.time_zone()?, at))
    }

    /// [`ScheduleSpec::is_on`] with the time zone already looked up.
    pub fn is_on_in(&self, tz: &TimeZone, at: Timestamp) -> bool {
        let local = tz.to_datetime(at);
        let date = local.date();
        let time = local.time();
        self.days.contains(&date.weekday())
            && !self.holidays.contains(&date)
            && self
                .hours
                .iter()
                .any(|&(start, end)| start <= time && (time < end || end == Time::MAX))
    }
}

impl ScheduleError {
    /// The key at fault, relative to the schedule table.
    pub fn key(&self) -> &'static str {
        match self {
            ScheduleError::UnknownTimeZone(_) => "schedule.timezone",
            ScheduleError::NoDays
            | ScheduleError::UnknownWeekday(_)
            | ScheduleError::DuplicateDay(_) => "schedule.days",
            ScheduleError::BadHoliday { .. } | ScheduleError::DuplicateHoliday(_) => {
                "schedule.holidays"
            }
            _ => "schedule.hours",
        }
    }
}

/// Parses `mon` … `sun` or `monday` … `sunday`, in any case.
pub fn parse_weekday(s: &str) -> Result<Weekday, ScheduleError> {
    let day = match s.to_ascii_lowercase().as_str() {
        "mon" | "monday" => Weekday::Monday,
        "tue" | "tuesday" => Weekday::Tuesday,
        "wed" | "wednesday" => Weekday::Wednesday,
        "thu" | "thursday" => Weekday::Thursday,
        "fri" | "friday" => Weekday::Friday,
        "sat" | "saturday" => Weekday::Saturday,
        "sun" | "sunday" => Weekday::Sunday,
        _ => return Err(ScheduleError::UnknownWeekday(s.to_string())),
    };
    Ok(day)
}

/// `mon` … `sun`.
pub fn weekday_name(day: Weekday) -> &'static str {
    match day {
        Weekday::Monday => "mon",
        Weekday::Tuesday => "tue",
        Weekday::Wednesday => "wed",
        Weekday::Thursday => "thu",
        Weekday::Friday => "fri",
        Weekday::Saturday => "sat",
        Weekday::Sunday => "sun",
    }
}

/// Parses one window `HH:MM-HH:MM` (seconds allowed: `HH:MM:SS`); `24:00` as an
/// end means the end of the day. Checks that it starts before it ends.
pub fn parse_window(s: &str) -> Result<(Time, Time), ScheduleError> {
    let bad = |why| ScheduleError::BadWindow {
        window: s.to_string(),
        why,
    };
    let (start, end) = s
        .split_once('-')
        .ok_or_else(|| bad("no '-' between start and end"))?;
    let start = parse_clock(start.trim(), false).map_err(bad)?;
    let end = parse_clock(end.trim(), true).map_err(bad)?;
    if start >= end {
        return Err(ScheduleError::EmptyWindow(s.to_string()));
    }
    Ok((start, end))
}

/// Formats a window as [`parse_window`] reads it.
pub fn format_window((start, end): (Time, Time)) -> String {
    format!("{}-{}", format_clock(start), format_clock(end))
}

fn parse_clock(s: &str, is_end: bool) -> Result<Time, &'static str> {
    if is_end && (s == "24:00" || s == "24:00:00") {
        return Ok(Time::MAX);
    }
    let parts: Vec<&str> = s.split(':').collect();
    if !(2..=3).contains(&parts.len())
        || parts
            .iter()
            .any(|p| p.is_empty() || p.len() > 2 || !p.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err("times are HH:MM");
    }
    let num = |i: usize| parts.get(i).map_or(Ok(0), |p| p.parse::<i8>());
    let (h, m, sec) = (num(0), num(1), num(2));
    let (Ok(h), Ok(m), Ok(sec)) = (h, m, sec) else {
        return Err("times are HH:MM");
    };
    Time::new(h, m, sec, 0).map_err(|_| "hours are 00-23 and minutes 00-59")
}

fn format_clock(t: Time) -> String {
    if t == Time::MAX {
        "24:00".into()
    } else if t.second() == 0 && t.subsec_nanosecond() == 0 {
        format!("{:02}:{:02}", t.hour(), t.minute())
    } else {
        format!("{:02}:{:02}:{:02}", t.hour(), t.minute(), t.second())
    }
}

fn check_days(days: &[Weekday]) -> Result<(), ScheduleError> {
    if days.is_empty() {
        return Err(ScheduleError::NoDays);
    }
    for (i, d) in days.iter().enumerate() {
        if days[..i].contains(d) {
            return Err(ScheduleError::DuplicateDay(weekday_name(*d).into()));
        }
    }
    Ok(())
}

fn check_windows(hours: &[(Time, Time)]) -> Result<(), ScheduleError> {
    if hours.is_empty() {
        return Err(ScheduleError::NoHours);
    }
    for &(start, end) in hours {
        if start >= end {
            return Err(ScheduleError::EmptyWindow(format_window((start, end))));
        }
    }
    for pair in hours.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        if b.0 < a.0 {
            return Err(ScheduleError::Unsorted {
                earlier: format_window(b),
                later: format_window(a),
            });
        }
        if b.0 < a.1 {
            return Err(ScheduleError::Overlap {
                first: format_window(a),
                second: format_window(b),
            });
        }
    }
    Ok(())
}

fn check_holidays(dates: &[Date]) -> Result<(), ScheduleError> {
    for (i, d) in dates.iter().enumerate() {
        if dates[..i].contains(d) {
            return Err(ScheduleError::DuplicateHoliday(d.to_string()));
        }
    }
    Ok(())
}

/// Parses a holiday `YYYY-MM-DD`.
pub fn parse_holiday(s: &str) -> Result<Date, ScheduleError> {
    let shape = s.len() == 10
        && s.bytes().enumerate().all(|(i, b)| {
            if i == 4 || i == 7 {
                b == b'-'
            } else {
                b.is_ascii_digit()
            }
        });
    if !shape {
        return Err(ScheduleError::BadHoliday {
            date: s.to_string(),
            why: "not a date".into(),
        });
    }
    s.parse::<Date>().map_err(|e| ScheduleError::BadHoliday {
        date: s.to_string(),
        why: e.to_string(),
    })
}

fn de_timezone<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let name = String::deserialize(d)?;
    TimeZone::get(&name)
        .map_err(|_| serde::de::Error::custom(ScheduleError::UnknownTimeZone(name.clone())))?;
    Ok(name)
}

/// Deserializes a list of strings, parsing each and checking the whole.
fn parse_list<'de, D, T>(
    d: D,
    parse: fn(&str) -> Result<T, ScheduleError>,
    check: fn(&[T]) -> Result<(), ScheduleError>,
) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let texts = Vec::<String>::deserialize(d)?;
    let items = texts
        .iter()
        .map(|t| parse(t))
        .collect::<Result<Vec<_>, _>>()
        .map_err(serde::de::Error::custom)?;
    check(&items).map_err(serde::de::Error::custom)?;
    Ok(items)
}

mod positive_duration {
    use std::time::Duration;

    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        crate::duration::serde_opt_str::serialize(d, s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let v = crate::duration::serde_opt_str::deserialize(d)?;
        if v.is_some_and(|v| v.is_zero()) {
            return Err(serde::de::Error::custom(
                "a policy duration must be longer than zero: remove the key to turn the policy off",
            ));
        }
        Ok(v)
    }
}

mod weekdays {
    use jiff::civil::Weekday;
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(days: &[Weekday], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(days.iter().map(|d| super::weekday_name(*d)))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Weekday>, D::Error> {
        super::parse_list(d, super::parse_weekday, super::check_days)
    }
}

mod windows {
    use jiff::civil::Time;
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(hours: &[(Time, Time)], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(hours.iter().map(|w| super::format_window(*w)))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(Time, Time)>, D::Error> {
        super::parse_list(d, super::parse_window, super::check_windows)
    }
}

mod dates {
    use jiff::civil::Date;
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(dates: &[Date], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(dates.iter().map(|d| d.to_string()))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Date>, D::Error> {
        super::parse_list(d, super::parse_holiday, super::check_holidays)
    }
}

#[cfg(test)]
mod tests {
    use jiff::civil::{date, time};

    use super::*;

    const GOOD: &str = r#"
        ttl = "14d"
        ttl_warning = "1d"
        idle = "60m"
        [schedule]
        timezone = "Asia/Seoul"
        days = ["mon", "tue", "wed", "thu", "fri"]
        hours = ["09:00-12:00", "13:00-19:00"]
        holidays = ["2026-12-25"]
    "#;

    fn schedule(toml_text: &str) -> Result<ScheduleSpec, String> {
        toml::from_str(toml_text).map_err(|e: toml::de::Error| e.message().to_string())
    }

    fn base(extra: &str) -> String {
        format!("timezone = \"UTC\"\ndays = [\"mon\"]\nhours = [\"09:00-17:00\"]\n{extra}")
    }

    #[test]
    fn parses_the_documented_example() {
        let p: PolicySpec = toml::from_str(GOOD).unwrap();
        p.validate().unwrap();
        assert_eq!(p.ttl, Some(Duration::from_secs(14 * 86400)));
        assert_eq!(p.ttl_warning, Some(Duration::from_secs(86400)));
        assert_eq!(p.idle, Some(Duration::from_secs(3600)));
        let s = p.schedule.as_ref().unwrap();
        assert_eq!(s.timezone, "Asia/Seoul");
        assert_eq!(s.days.len(), 5);
        assert_eq!(s.days[0], Weekday::Monday);
        assert_eq!(
            s.hours,
            [
                (time(9, 0, 0, 0), time(12, 0, 0, 0)),
                (time(13, 0, 0, 0), time(19, 0, 0, 0))
            ]
        );
        assert_eq!(s.holidays, [date(2026, 12, 25)]);
    }

    #[test]
    fn round_trips_through_json_in_the_written_shape() {
        let p: PolicySpec = toml::from_str(GOOD).unwrap();
        let json = serde_json::to_string(&p).unwrap();
        assert!(json.contains("\"ttl\":\"14d\""), "{json}");
        assert!(
            json.contains("\"days\":[\"mon\",\"tue\",\"wed\",\"thu\",\"fri\"]"),
            "{json}"
        );
        assert!(
            json.contains("\"hours\":[\"09:00-12:00\",\"13:00-19:00\"]"),
            "{json}"
        );
        assert!(json.contains("\"holidays\":[\"2026-12-25\"]"), "{json}");
        let back: PolicySpec = serde_json::from_str(&json).unwrap();
        assert_eq!(back, p);
        assert!(PolicySpec::default().is_empty());
        assert_eq!(toml::to_string(&PolicySpec::default()).unwrap(), "");
    }

    #[test]
    fn refuses_bad_schedules_with_what_to_do() {
        for (text, want) in [
            (
                "timezone = \"Asia/Seol\"\ndays = [\"mon\"]\nhours = [\"09:00-17:00\"]",
                "unknown time zone 'Asia/Seol': use an IANA name",
            ),
            (
                &base("").replace("[\"mon\"]", "[\"mon\", \"fun\"]"),
                "unknown weekday 'fun'",
            ),
            (&base("").replace("[\"mon\"]", "[]"), "no days"),
            (
                &base("").replace("[\"mon\"]", "[\"mon\", \"Monday\"]"),
                "'mon' is listed twice",
            ),
            (&base("").replace("[\"09:00-17:00\"]", "[]"), "no hours"),
            (
                &base("").replace("09:00-17:00", "09:00-12:00\", \"11:00-13:00"),
                "hours '09:00-12:00' and '11:00-13:00' overlap",
            ),
            (
                &base("").replace("09:00-17:00", "13:00-14:00\", \"09:00-12:00"),
                "hours '13:00-14:00' are listed before '09:00-12:00'",
            ),
            (
                &base("").replace("09:00-17:00", "18:00-09:00"),
                "end before they start",
            ),
            (
                &base("").replace("09:00-17:00", "12:00-12:00"),
                "end before they start",
            ),
            (
                &base("").replace("09:00-17:00", "9-17"),
                "invalid hours '9-17': times are HH:MM",
            ),
            (
                &base("").replace("09:00-17:00", "09:00-25:00"),
                "hours are 00-23",
            ),
            (&base("").replace("09:00-17:00", "0900"), "no '-'"),
            (
                &base("holidays = [\"2026-13-01\"]"),
                "invalid holiday '2026-13-01'",
            ),
            (
                &base("holidays = [\"25.12.2026\"]"),
                "invalid holiday '25.12.2026': not a date",
            ),
            (
                &base("holidays = [\"2026-12-25\", \"2026-12-25\"]"),
                "listed twice",
            ),
            (&base("weekends = true"), "unknown field `weekends`"),
        ] {
            let e = schedule(text).unwrap_err();
            assert!(e.contains(want), "{text}\n→ {e}\nwanted: {want}");
        }
    }

    #[test]
    fn adjacent_windows_and_midnight_are_fine() {
        let s = schedule(&base("").replace("09:00-17:00", "09:00-12:00\", \"12:00-24:00")).unwrap();
        assert_eq!(s.hours[1].1, Time::MAX);
        assert_eq!(format_window(s.hours[1]), "12:00-24:00");
        s.validate().unwrap();
    }

    #[test]
    fn validate_checks_specs_built_in_code() {
        let mut s = schedule(&base("")).unwrap();
        s.hours.push((time(8, 0, 0, 0), time(9, 0, 0, 0)));
        assert!(matches!(s.validate(), Err(ScheduleError::Unsorted { .. })));
        s.hours = vec![];
        assert_eq!(s.validate(), Err(ScheduleError::NoHours));
        s.hours = vec![(time(9, 0, 0, 0), time(10, 0, 0, 0))];
        s.timezone = "Mars/Olympus".into();
        assert_eq!(s.validate().unwrap_err().key(), "schedule.timezone");

        let p = PolicySpec {
            ttl: Some(Duration::from_secs(3600)),
            ttl_warning: Some(Duration::from_secs(7200)),
            ..PolicySpec::default()
        };
        assert_eq!(
            p.validate().unwrap_err().to_string(),
            "ttl_warning (2h) must be shorter than ttl (1h)"
        );
        let p = PolicySpec {
            ttl_warning: Some(Duration::from_secs(60)),
            ..PolicySpec::default()
        };
        assert_eq!(p.validate().unwrap_err(), PolicyError::WarningWithoutTtl);
        let p = PolicySpec {
            idle: Some(Duration::ZERO),
            ..PolicySpec::default()
        };
        assert_eq!(p.validate().unwrap_err().key(), "idle");
    }

    #[test]
    fn zero_durations_are_refused_when_read() {
        let e = toml::from_str::<PolicySpec>("idle = \"0m\"").unwrap_err();
        assert!(e.message().contains("longer than zero"), "{e}");
        let e = toml::from_str::<PolicySpec>("ttl = \"14x\"").unwrap_err();
        assert!(e.message().contains("invalid duration '14x'"), "{e}");
    }

    #[test]
    fn is_on_inside_windows_on_working_days_in_the_zone() {
        let p: PolicySpec = toml::from_str(GOOD).unwrap();
        let s = p.schedule.unwrap();
        let at = |t: &str| t.parse::<Timestamp>().unwrap();
        // Monday 2026-03-02 10:00 in Seoul is 01:00 UTC.
        assert!(s.is_on(at("2026-03-02T01:00:00Z")).unwrap());
        // 12:30 Seoul: the lunch gap.
        assert!(!s.is_on(at("2026-03-02T03:30:00Z")).unwrap());
        // 19:00 Seoul: windows end exclusive.
        assert!(!s.is_on(at("2026-03-02T10:00:00Z")).unwrap());
        // Saturday.
        assert!(!s.is_on(at("2026-03-07T01:00:00Z")).unwrap());
        // Christmas 2026 is a Friday, and a holiday.
        assert!(!s.is_on(at("2026-12-25T01:00:00Z")).unwrap());
    }
}
