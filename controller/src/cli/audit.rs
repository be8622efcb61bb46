//! `metrom audit` and `metrom report usage`.

use clap::{Args, Subcommand};
use jiff::{SignedDuration, Timestamp};
use metrom_protocol::messages::api::{Call, Reply, UsageRow};

use super::client::Client;
use super::output::{self, Format, Table, when};
use super::{CliError, unexpected};

#[derive(Args, Debug)]
pub struct AuditArgs {
    /// Only this user's requests ("policy" for the policy engine's actions).
    #[arg(long)]
    pub user: Option<String>,
    /// From this time on: a duration back from now (24h, 7d) or an RFC 3339 time.
    #[arg(long, value_parser = parse_since)]
    pub since: Option<Timestamp>,
    /// Only the latest N entries (0 for all).
    #[arg(long, default_value_t = 200)]
    pub limit: u32,
}

#[derive(Subcommand, Debug)]
pub enum ReportCommand {
    /// Environment-hours by user and template, hours stopped by policy, and estimated savings.
    Usage {
        /// From this time on: a duration back from now (24h, 7d) or an RFC 3339 time [default: 30d].
        #[arg(long, value_parser = parse_since)]
        since: Option<Timestamp>,
    },
}

/// `24h` (that long ago) or `2026-03-01T00:00:00Z`.
pub fn parse_since(s: &str) -> Result<Timestamp, String> {
    if let Ok(t) = s.parse::<Timestamp>() {
        return Ok(t);
    }
    match metrom_protocol::duration::parse_duration(s) {
        Ok(d) => SignedDuration::try_from(d)
            .ok()
            .and_then(|d| Timestamp::now().checked_sub(d).ok())
            .ok_or_else(|| format!("'{s}' reaches too far back")),
        Err(_) => Err(format!(
            "'{s}' is neither a duration (24h, 7d) nor an RFC 3339 time (2026-03-01T09:00:00Z)"
        )),
    }
}

pub(super) async fn audit(client: &Client, a: AuditArgs, fmt: Format) -> Result<(), CliError> {
    let reply = client
        .call(Call::AuditList {
            user: a.user,
            since: a.since,
            limit: a.limit,
        })
        .await?;
    let Reply::Audit(entries) = reply else {
        return Err(unexpected(reply));
    };
    match fmt {
        Format::Json => output::print_json(&entries),
        Format::Table => {
            let mut t = Table::new(&[
                "TIME", "USER", "ACTION", "TARGET", "RESULT", "DETAILS", "MESSAGE",
            ]);
            for e in &entries {
                t.row(vec![
                    when(e.at),
                    e.user.clone(),
                    e.action.clone(),
                    if e.target.is_empty() {
                        "-".into()
                    } else {
                        e.target.clone()
                    },
                    e.result.clone(),
                    e.details.clone(),
                    e.message.clone(),
                ]);
            }
            t.print();
        }
    }
    Ok(())
}

pub(super) async fn report(
    client: &Client,
    cmd: ReportCommand,
    fmt: Format,
) -> Result<(), CliError> {
    let ReportCommand::Usage { since } = cmd;
    let reply = client.call(Call::ReportUsage { since }).await?;
    let Reply::Usage(r) = reply else {
        return Err(unexpected(reply));
    };
    match fmt {
        Format::Json => output::print_json(&r),
        Format::Table => {
            println!("usage from {} to {}", when(r.since), when(r.until));
            let money = !r.currency.is_empty();
            let table = |title: &str, rows: &[UsageRow]| {
                let mut head = vec![
                    title,
                    "ENVS",
                    "RUNNING H",
                    "STOPPED BY POLICY H",
                    "DELETED BY POLICY",
                ];
                if money {
                    head.extend(["COST", "SAVED"]);
                }
                let mut t = Table::new(&head);
                for row in rows.iter().chain(std::iter::once(&r.total)) {
                    let mut cells = vec![
                        row.key.clone(),
                        row.environments.to_string(),
                        format!("{:.2}", row.running_hours),
                        format!("{:.2}", row.policy_stopped_hours),
                        row.deleted_by_policy.to_string(),
                    ];
                    if money {
                        cells.push(format!("{:.2} {}", row.cost, r.currency));
                        cells.push(format!("{:.2} {}", row.savings, r.currency));
                    }
                    t.row(cells);
                }
                println!();
                t.print();
            };
            table("USER", &r.by_user);
            table("TEMPLATE", &r.by_template);
            if !money {
                println!(
                    "\n(no prices configured: set [pricing] in controller.toml for cost and savings)"
                );
            }
        }
    }
    Ok(())
}
