//! The three levels of policies — site (controller.toml `[policies]`),
//! template (`[policies]` in metrom.toml), environment (`env create` flags) —
//! merged into an environment's effective policies, and the site caps that
//! no level may exceed.
//!
//! Each policy is taken from the lowest level that sets it: the environment,
//! else the template, else the site's default, else the site cap (`max_ttl`,
//! `max_idle`) when there is one. An environment flag `off` removes an
//! inherited policy (not below a cap). Without any `ttl_warning`, the warning
//! comes a tenth of the ttl before the deletion, at most a day.

use std::collections::BTreeMap;
use std::time::Duration;

use metrom_protocol::duration::{format_duration, parse_duration};
use metrom_protocol::messages::api::PolicyOverrides;
use metrom_protocol::template::{
    PolicySpec, ScheduleError, ScheduleSpec, parse_holiday, parse_weekday, parse_window,
};

use super::SitePolicies;

/// The longest default warning.
const MAX_DEFAULT_WARNING: Duration = Duration::from_secs(86_400);

/// Policies that cannot be used as given; nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LevelError {
    #[error("--{flag} '{value}': {message}")]
    Flag {
        flag: &'static str,
        value: String,
        message: String,
    },
    #[error(
        "{key} {value} (from the {level}) exceeds the site cap {cap} = {limit} \
         (controller.toml [policies]); {hint}"
    )]
    OverCap {
        key: &'static str,
        value: String,
        level: &'static str,
        cap: &'static str,
        limit: String,
        hint: String,
    },
    #[error(
        "{key} {value} (from the {level}) is shorter than the site floor min_idle = {limit} \
         (controller.toml [policies]); {hint}"
    )]
    UnderFloor {
        key: &'static str,
        value: String,
        level: &'static str,
        limit: String,
        hint: String,
    },
    #[error(
        "--{flag} off is not allowed: the site caps {cap} at {limit} (controller.toml [policies])"
    )]
    CannotTurnOff {
        flag: &'static str,
        cap: &'static str,
        limit: String,
    },
    #[error("--ttl-warning {warning} must be shorter than the ttl ({ttl})")]
    WarningNotShorter { warning: String, ttl: String },
    #[error("--ttl-warning needs a ttl to warn about: give --ttl, or use a template with one")]
    WarningWithoutTtl,
}

/// An environment's own setting of one policy.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Setting<T> {
    #[default]
    Inherit,
    Off,
    Set(T),
}

/// `env create` flags, parsed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Overrides {
    pub ttl: Setting<Duration>,
    pub ttl_warning: Setting<Duration>,
    pub idle: Setting<Duration>,
    pub schedule: Setting<ScheduleSpec>,
}

/// Effective policies and the level each came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Effective {
    pub spec: PolicySpec,
    pub sources: BTreeMap<String, String>,
}

/// Parses the flags as the CLI sent them.
pub fn parse_overrides(o: &PolicyOverrides) -> Result<Overrides, LevelError> {
    let duration =
        |flag: &'static str, v: &Option<String>| -> Result<Setting<Duration>, LevelError> {
            let Some(text) = v else {
                return Ok(Setting::Inherit);
            };
            if text.trim() == "off" {
                return Ok(Setting::Off);
            }
            let d = parse_duration(text).map_err(|e| LevelError::Flag {
                flag,
                value: text.clone(),
                message: e.to_string(),
            })?;
            if d.is_zero() {
                return Err(LevelError::Flag {
                    flag,
                    value: text.clone(),
                    message: "must be longer than zero; use 'off' to turn the policy off".into(),
                });
            }
            Ok(Setting::Set(d))
        };
    let schedule = match &o.schedule {
        None => Setting::Inherit,
        Some(t) if t.trim() == "off" => Setting::Off,
        Some(t) => Setting::Set(parse_schedule(t).map_err(|e| LevelError::Flag {
            flag: "schedule",
            value: t.clone(),
            message: e,
        })?),
    };
    Ok(Overrides {
        ttl: duration("ttl", &o.ttl)?,
        ttl_warning: duration("ttl-warning", &o.ttl_warning)?,
        idle: duration("idle", &o.idle)?,
        schedule,
    })
}

/// Parses `DAYS HOURS TIMEZONE [except DATE,…]`: days as `mon-fri`,
/// `mon,wed,fri` or `daily`; hours as `09:00-12:00,13:00-19:00`; an IANA
/// time zone; holidays as `YYYY-MM-DD` separated by commas.
pub fn parse_schedule(text: &str) -> Result<ScheduleSpec, String> {
    const SHAPE: &str = "write DAYS HOURS TIMEZONE [except YYYY-MM-DD,…], \
                         such as \"mon-fri 09:00-19:00 Asia/Seoul\"";
    let words: Vec<&str> = text.split_whitespace().collect();
    let (main, holidays) = match words.iter().position(|w| *w == "except") {
        Some(i) => (&words[..i], words[i + 1..].join(",")),
        None => (&words[..], String::new()),
    };
    let [days, hours, timezone] = main else {
        return Err(SHAPE.into());
    };
    let days = parse_days(days).map_err(|e| e.to_string())?;
    let hours = hours
        .split(',')
        .map(|w| parse_window(w.trim()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    let holidays = holidays
        .split(',')
        .filter(|d| !d.trim().is_empty())
        .map(|d| parse_holiday(d.trim()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    let s = ScheduleSpec {
        timezone: timezone.to_string(),
        days,
        hours,
        holidays,
    };
    s.validate().map_err(|e| e.to_string())?;
    Ok(s)
}

fn parse_days(text: &str) -> Result<Vec<jiff::civil::Weekday>, ScheduleError> {
    if text == "daily" {
        return parse_days("mon-sun");
    }
    let mut out = Vec::new();
    for part in text.split(',') {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (parse_weekday(a)?, parse_weekday(b)?);
                let mut d = a;
                loop {
                    out.push(d);
                    if d == b {
                        break;
                    }
                    d = d.next();
                }
            }
            None => out.push(parse_weekday(part)?),
        }
    }
    Ok(out)
}

/// Checks a template's policies against the site caps (at push and create).
pub fn check_template(site: &SitePolicies, template: &PolicySpec) -> Result<(), LevelError> {
    if let Some(ttl) = template.ttl {
        check_ttl(site, ttl, "template")?;
    }
    if let Some(idle) = template.idle {
        check_idle(site, idle, "template")?;
    }
    Ok(())
}

/// Merges the three levels into an environment's effective policies.
pub fn effective(
    site: &SitePolicies,
    template: &PolicySpec,
    env: &Overrides,
) -> Result<Effective, LevelError> {
    let mut sources = BTreeMap::new();
    let mut pick = |key: &str,
                    env: &Setting<Duration>,
                    template: Option<Duration>,
                    site_default: Option<Duration>,
                    cap: Option<Duration>|
     -> Option<(Duration, &'static str)> {
        let chosen = match env {
            Setting::Set(d) => Some((*d, "environment")),
            Setting::Off => None,
            Setting::Inherit => template
                .map(|d| (d, "template"))
                .or(site_default.map(|d| (d, "site")))
                .or(cap.map(|d| (d, "site"))),
        };
        if let Some((_, level)) = chosen {
            sources.insert(key.to_string(), level.to_string());
        }
        chosen
    };

    if env.ttl == Setting::Off
        && let Some(max) = site.max_ttl
    {
        return Err(LevelError::CannotTurnOff {
            flag: "ttl",
            cap: "max_ttl",
            limit: format_duration(max),
        });
    }
    if env.idle == Setting::Off
        && let Some(max) = site.max_idle
    {
        return Err(LevelError::CannotTurnOff {
            flag: "idle",
            cap: "max_idle",
            limit: format_duration(max),
        });
    }
    let ttl = pick("ttl", &env.ttl, template.ttl, site.ttl, site.max_ttl);
    if let Some((d, level)) = ttl {
        check_ttl(site, d, level)?;
    }
    let idle = pick("idle", &env.idle, template.idle, site.idle, site.max_idle);
    if let Some((d, level)) = idle {
        check_idle(site, d, level)?;
    }
    let schedule = match &env.schedule {
        Setting::Set(s) => Some((s.clone(), "environment")),
        Setting::Off => None,
        Setting::Inherit => template
            .schedule
            .clone()
            .map(|s| (s, "template"))
            .or(site.schedule.clone().map(|s| (s, "site"))),
    };
    if let Some((_, level)) = &schedule {
        sources.insert("schedule".into(), level.to_string());
    }

    let ttl_warning = match (ttl, &env.ttl_warning) {
        (None, Setting::Set(_)) => return Err(LevelError::WarningWithoutTtl),
        (None, _) => None,
        (Some(_), Setting::Off) => None,
        (Some((ttl, _)), Setting::Set(w)) => {
            if *w >= ttl {
                return Err(LevelError::WarningNotShorter {
                    warning: format_duration(*w),
                    ttl: format_duration(ttl),
                });
            }
            sources.insert("ttl_warning".into(), "environment".into());
            Some(*w)
        }
        (Some((ttl, _)), Setting::Inherit) => {
            let inherited = template
                .ttl_warning
                .map(|w| (w, "template"))
                .or(site.ttl_warning.map(|w| (w, "site")))
                .filter(|(w, _)| *w < ttl);
            let (w, level) = inherited.unwrap_or((default_warning(ttl), "default"));
            sources.insert("ttl_warning".into(), level.into());
            Some(w)
        }
    };

    Ok(Effective {
        spec: PolicySpec {
            ttl: ttl.map(|(d, _)| d),
            ttl_warning,
            idle: idle.map(|(d, _)| d),
            schedule: schedule.map(|(s, _)| s),
        },
        sources,
    })
}

/// A tenth of the ttl, at most a day.
pub fn default_warning(ttl: Duration) -> Duration {
    (ttl / 10).min(MAX_DEFAULT_WARNING)
}

fn check_ttl(site: &SitePolicies, ttl: Duration, level: &'static str) -> Result<(), LevelError> {
    match site.max_ttl {
        Some(max) if ttl > max => Err(LevelError::OverCap {
            key: "ttl",
            value: format_duration(ttl),
            level,
            cap: "max_ttl",
            limit: format_duration(max),
            hint: hint(level, "ttl", max),
        }),
        _ => Ok(()),
    }
}

fn check_idle(site: &SitePolicies, idle: Duration, level: &'static str) -> Result<(), LevelError> {
    if let Some(max) = site.max_idle.filter(|max| idle > *max) {
        return Err(LevelError::OverCap {
            key: "idle",
            value: format_duration(idle),
            level,
            cap: "max_idle",
            limit: format_duration(max),
            hint: hint(level, "idle", max),
        });
    }
    if let Some(min) = site.min_idle.filter(|min| idle < *min) {
        return Err(LevelError::UnderFloor {
            key: "idle",
            value: format_duration(idle),
            level,
            limit: format_duration(min),
            hint: match level {
                "environment" => format!("give --idle {} or more", format_duration(min)),
                _ => format!("set idle to {} or more", format_duration(min)),
            },
        });
    }
    Ok(())
}

fn hint(level: &str, key: &str, max: Duration) -> String {
    match level {
        "environment" => format!("give --{key} {} or less", format_duration(max)),
        "template" => format!(
            "lower {key} in the template's metrom.toml [policies] to {} or less, or override it with --{key}",
            format_duration(max)
        ),
        _ => format!("lower it to {} or less", format_duration(max)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Duration {
        parse_duration(s).unwrap()
    }

    fn flags(ttl: Option<&str>, idle: Option<&str>, schedule: Option<&str>) -> Overrides {
        parse_overrides(&PolicyOverrides {
            ttl: ttl.map(Into::into),
            ttl_warning: None,
            idle: idle.map(Into::into),
            schedule: schedule.map(Into::into),
        })
        .unwrap()
    }

    #[test]
    fn each_policy_comes_from_the_lowest_level_that_sets_it() {
        let site = SitePolicies {
            ttl: Some(d("30d")),
            idle: Some(d("2h")),
            ..SitePolicies::default()
        };
        let template: PolicySpec = toml::from_str("ttl = \"14d\"\nttl_warning = \"2d\"\n").unwrap();
        let e = effective(
            &site,
            &template,
            &flags(None, Some("30m"), Some("mon-fri 09:00-19:00 Asia/Seoul")),
        )
        .unwrap();
        assert_eq!(e.spec.ttl, Some(d("14d")));
        assert_eq!(e.spec.ttl_warning, Some(d("2d")));
        assert_eq!(e.spec.idle, Some(d("30m")));
        assert_eq!(e.spec.schedule.as_ref().unwrap().days.len(), 5);
        let src: Vec<(&str, &str)> = e
            .sources
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            src,
            [
                ("idle", "environment"),
                ("schedule", "environment"),
                ("ttl", "template"),
                ("ttl_warning", "template")
            ]
        );
        // `off` removes an inherited policy; a missing warning gets the default.
        let e = effective(&site, &template, &flags(Some("20s"), Some("off"), None)).unwrap();
        assert_eq!(e.spec.idle, None);
        assert_eq!(e.spec.ttl_warning, Some(d("2s")));
        assert_eq!(e.sources["ttl_warning"], "default");
    }

    #[test]
    fn caps_name_themselves_and_cannot_be_exceeded_or_turned_off() {
        let site = SitePolicies {
            max_ttl: Some(d("30d")),
            min_idle: Some(d("15m")),
            max_idle: Some(d("4h")),
            ..SitePolicies::default()
        };
        let none = PolicySpec::default();
        let e = effective(&site, &none, &flags(Some("60d"), None, None)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "ttl 60d (from the environment) exceeds the site cap max_ttl = 30d \
             (controller.toml [policies]); give --ttl 30d or less"
        );
        let e = effective(&site, &none, &flags(Some("off"), None, None)).unwrap_err();
        assert!(e.to_string().contains("--ttl off is not allowed"), "{e}");
        let e = effective(&site, &none, &flags(None, Some("1m"), None)).unwrap_err();
        assert!(e.to_string().contains("min_idle = 15m"), "{e}");
        let template: PolicySpec = toml::from_str("ttl = \"90d\"\n").unwrap();
        let e = check_template(&site, &template).unwrap_err();
        assert!(
            e.to_string()
                .contains("(from the template) exceeds the site cap max_ttl"),
            "{e}"
        );
        // The template's ttl can still be lowered by the environment.
        assert!(effective(&site, &template, &flags(Some("7d"), None, None)).is_ok());
        // Nothing set anywhere: the caps apply.
        let e = effective(&site, &none, &Overrides::default()).unwrap();
        assert_eq!((e.spec.ttl, e.spec.idle), (Some(d("30d")), Some(d("4h"))));
    }

    #[test]
    fn schedule_flags_parse_or_say_what_is_wrong() {
        let s = parse_schedule(
            "mon-fri 09:00-12:00,13:00-19:00 Asia/Seoul except 2026-12-25,2027-01-01",
        )
        .unwrap();
        assert_eq!(s.days.len(), 5);
        assert_eq!(s.hours.len(), 2);
        assert_eq!(s.holidays.len(), 2);
        assert_eq!(
            parse_schedule("fri-mon 08:00-09:00 UTC")
                .unwrap()
                .days
                .len(),
            4
        );
        assert_eq!(
            parse_schedule("daily 08:00-09:00 UTC").unwrap().days.len(),
            7
        );
        for (text, want) in [
            (
                "mon-fri 09:00-19:00 Asia/Seol",
                "unknown time zone 'Asia/Seol'",
            ),
            ("mon-fri 09:00-12:00,11:00-13:00 UTC", "overlap"),
            ("mon-fri 12:00-09:00 UTC", "end before they start"),
            ("mon-fri 09:00-09:00 UTC", "end before they start"),
            ("mon-fri UTC", "write DAYS HOURS TIMEZONE"),
            ("mon-fun 09:00-10:00 UTC", "unknown weekday 'fun'"),
            (
                "mon-fri 09:00-10:00 UTC except 2026-02-30",
                "invalid holiday",
            ),
        ] {
            let e = parse_schedule(text).unwrap_err();
            assert!(e.contains(want), "{text}: {e}");
        }
        let e = parse_overrides(&PolicyOverrides {
            schedule: Some("mon-fri 09:00-19:00 Mars/Base".into()),
            ..Default::default()
        })
        .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("--schedule 'mon-fri 09:00-19:00 Mars/Base': unknown time zone"),
            "{e}"
        );
        let e = parse_overrides(&PolicyOverrides {
            ttl: Some("0s".into()),
            ..Default::default()
        })
        .unwrap_err();
        assert!(e.to_string().contains("use 'off'"), "{e}");
    }

    #[test]
    fn warnings_must_fit_the_ttl() {
        let site = SitePolicies::default();
        let none = PolicySpec::default();
        let mut o = flags(Some("1h"), None, None);
        o.ttl_warning = Setting::Set(d("2h"));
        assert!(matches!(
            effective(&site, &none, &o),
            Err(LevelError::WarningNotShorter { .. })
        ));
        let o = Overrides {
            ttl_warning: Setting::Set(d("1h")),
            ..Default::default()
        };
        assert_eq!(
            effective(&site, &none, &o),
            Err(LevelError::WarningWithoutTtl)
        );
        // An inherited warning longer than the ttl falls back to the default.
        let site = SitePolicies {
            ttl_warning: Some(d("1d")),
            ..SitePolicies::default()
        };
        let e = effective(&site, &none, &flags(Some("1h"), None, None)).unwrap();
        assert_eq!(e.spec.ttl_warning, Some(d("6m")));
    }
}
