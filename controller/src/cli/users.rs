//! `metrom user …` (add, list, remove, set-role) and `metrom quota …` (set, list, remove).

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use metrom_protocol::identity::IdentityBundle;
use metrom_protocol::messages::api::{
    Call, LimitChange, QuotaFigures, QuotaScope, QuotaSet, QuotaView, Reply, UserAdd,
};

use super::client::Client;
use super::output::{self, Format, Table, ago};
use super::{CliError, done, unexpected};

#[derive(Subcommand, Debug)]
pub enum UserCommand {
    /// Create a user and write their identity bundle (hand it to them).
    Add(UserAddArgs),
    /// List users, their roles, groups and environments.
    List,
    /// Remove a user: every certificate of theirs is revoked at once.
    Remove { name: String },
    /// Change a user's role (admin, developer, viewer); their identity stays valid.
    SetRole { name: String, role: String },
}

#[derive(Args, Debug)]
pub struct UserAddArgs {
    pub name: String,
    /// admin (everything), developer (their own environments and templates) or viewer (read only).
    #[arg(long)]
    pub role: String,
    /// The group whose quota they share.
    #[arg(long)]
    pub group: Option<String>,
    /// An OpenSSH public key file to put into their environments (repeatable).
    #[arg(long = "ssh-key", value_name = "FILE")]
    pub ssh_keys: Vec<PathBuf>,
    /// Where to write the identity bundle [default: ./NAME.identity].
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum QuotaCommand {
    /// Set limits for a user or a group (unnamed limits stay as they are; 'none' removes one).
    Set(QuotaSetArgs),
    /// Quotas and how much of each is in use.
    List,
    /// Remove every limit of a user or a group.
    Remove(QuotaWho),
}

#[derive(Args, Debug)]
#[group(required = true, multiple = false)]
pub struct QuotaWho {
    #[arg(long)]
    pub user: Option<String>,
    #[arg(long)]
    pub group: Option<String>,
}

#[derive(Args, Debug)]
pub struct QuotaSetArgs {
    #[command(flatten)]
    pub who: QuotaWho,
    /// Most environments at once (number or none).
    #[arg(long)]
    pub envs: Option<String>,
    /// Most vCPUs in total (number or none).
    #[arg(long)]
    pub vcpus: Option<String>,
    /// Most memory in total, e.g. 16GiB (or none).
    #[arg(long)]
    pub memory: Option<String>,
    /// Most disk in total, e.g. 200GiB (or none).
    #[arg(long)]
    pub disk: Option<String>,
}

pub(super) async fn user(client: &Client, cmd: UserCommand, fmt: Format) -> Result<(), CliError> {
    match cmd {
        UserCommand::Add(a) => {
            let out = a
                .out
                .clone()
                .unwrap_or_else(|| PathBuf::from(format!("{}.identity", a.name)));
            if out.exists() {
                return Err(CliError::Other(anyhow::anyhow!(
                    "{} already exists; remove it or choose another --out",
                    out.display()
                )));
            }
            let mut keys = Vec::new();
            for f in &a.ssh_keys {
                let text = std::fs::read_to_string(f)
                    .with_context(|| format!("reading ssh key {}", f.display()))?;
                keys.extend(
                    text.lines()
                        .map(str::trim)
                        .filter(|l| !l.is_empty() && !l.starts_with('#'))
                        .map(String::from),
                );
            }
            let reply = client
                .call(Call::UserAdd(UserAdd {
                    name: a.name.clone(),
                    role: a.role,
                    group: a.group,
                    ssh_keys: keys,
                }))
                .await?;
            let Reply::UserCreated(created) = reply else {
                return Err(unexpected(reply));
            };
            let bundle: IdentityBundle = toml::from_str(&created.identity)
                .context("the controller sent an unreadable identity bundle")?;
            bundle
                .save(&out)
                .with_context(|| format!("writing {}", out.display()))?;
            match fmt {
                Format::Json => output::print_json(&serde_json::json!({
                    "user": created.user,
                    "identity_file": out,
                })),
                Format::Table => println!(
                    "user {} ({}) created; identity written to {} (mode 0600).\n\
                     Hand it over securely; they use it with `metrom --identity {}` or put it at ~/.config/metrom/identity.",
                    created.user.name,
                    created.user.role,
                    out.display(),
                    out.display()
                ),
            }
            Ok(())
        }
        UserCommand::List => {
            let reply = client.call(Call::UserList).await?;
            let Reply::Users(users) = reply else {
                return Err(unexpected(reply));
            };
            match fmt {
                Format::Json => output::print_json(&users),
                Format::Table => {
                    let mut t =
                        Table::new(&["NAME", "ROLE", "GROUP", "ENVS", "SSH KEYS", "CREATED"]);
                    for u in &users {
                        t.row(vec![
                            u.name.clone(),
                            u.role.clone(),
                            u.group.clone().unwrap_or_else(|| "-".into()),
                            u.environments.to_string(),
                            u.ssh_keys.to_string(),
                            ago(Some(u.created_at)),
                        ]);
                    }
                    t.print();
                }
            }
            Ok(())
        }
        UserCommand::Remove { name } => done(client.call(Call::UserRemove { name }).await?, fmt),
        UserCommand::SetRole { name, role } => {
            done(client.call(Call::UserSetRole { name, role }).await?, fmt)
        }
    }
}

pub(super) async fn quota(client: &Client, cmd: QuotaCommand, fmt: Format) -> Result<(), CliError> {
    let req = match cmd {
        QuotaCommand::List => {
            let reply = client.call(Call::QuotaList).await?;
            let Reply::Quotas(q) = reply else {
                return Err(unexpected(reply));
            };
            print_quotas(&q, fmt);
            return Ok(());
        }
        QuotaCommand::Set(a) => QuotaSet {
            scope: scope(a.who),
            envs: limit("envs", a.envs.as_deref(), parse_count)?,
            vcpus: limit("vcpus", a.vcpus.as_deref(), parse_count)?,
            memory_mb: limit("memory", a.memory.as_deref(), |s| {
                metrom_protocol::template::parse_size_mib(s)
            })?,
            disk_gb: limit("disk", a.disk.as_deref(), parse_gib)?,
        },
        QuotaCommand::Remove(who) => QuotaSet {
            scope: scope(who),
            envs: LimitChange::Unlimited,
            vcpus: LimitChange::Unlimited,
            memory_mb: LimitChange::Unlimited,
            disk_gb: LimitChange::Unlimited,
        },
    };
    match client.call(Call::QuotaSet(req)).await? {
        Reply::Quotas(q) => {
            print_quotas(&q, fmt);
            Ok(())
        }
        other => done(other, fmt),
    }
}

fn scope(who: QuotaWho) -> QuotaScope {
    match (who.user, who.group) {
        (Some(u), _) => QuotaScope::User(u),
        (None, Some(g)) => QuotaScope::Group(g),
        (None, None) => unreachable!("clap requires --user or --group"),
    }
}

fn limit(
    flag: &str,
    v: Option<&str>,
    parse: impl Fn(&str) -> Result<u64, String>,
) -> Result<LimitChange, CliError> {
    match v {
        None => Ok(LimitChange::Keep),
        Some("none") | Some("unlimited") => Ok(LimitChange::Unlimited),
        Some(s) => parse(s)
            .map(LimitChange::Set)
            .map_err(|e| CliError::Other(anyhow::anyhow!("--{flag}: {e}"))),
    }
}

fn parse_count(s: &str) -> Result<u64, String> {
    s.parse()
        .map_err(|_| format!("'{s}' is not a whole number (or 'none')"))
}

fn parse_gib(s: &str) -> Result<u64, String> {
    let mib = metrom_protocol::template::parse_size_mib(s)?;
    if mib % 1024 != 0 {
        return Err(format!("'{s}': give a whole number of GiB"));
    }
    Ok(mib / 1024)
}

fn print_quotas(q: &[QuotaView], fmt: Format) {
    match fmt {
        Format::Json => output::print_json(&q),
        Format::Table => {
            let mut t = Table::new(&["SCOPE", "NAME", "ENVS", "VCPUS", "MEMORY", "DISK"]);
            for v in q {
                let cell = |used: Option<u64>, limit: Option<u64>, unit: &str| {
                    let used = used.unwrap_or(0);
                    match limit {
                        Some(l) => format!("{used}/{l}{unit}"),
                        None => format!("{used}{unit} (no limit)"),
                    }
                };
                let QuotaFigures {
                    envs,
                    vcpus,
                    memory_mb,
                    disk_gb,
                } = v.limits;
                t.row(vec![
                    v.scope.clone(),
                    v.name.clone(),
                    cell(v.usage.envs, envs, ""),
                    cell(v.usage.vcpus, vcpus, ""),
                    cell(v.usage.memory_mb, memory_mb, " MiB"),
                    cell(v.usage.disk_gb, disk_gb, " GiB"),
                ]);
            }
            t.print();
        }
    }
}
