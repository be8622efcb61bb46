//! `metrom env …`: create, list, show, start, stop, rebuild, delete, events.

use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use metrom_protocol::ids::HostId;
use metrom_protocol::messages::api::{
    ApiError, Call, EnvCreate, EnvPolicyView, EnvView, PolicyOverrides, Reply,
};

use super::client::Client;
use super::output::{self, Format, Table, ago, when};
use super::templates::{short, split_ref};
use super::{CliError, label_map, parse_duration, parse_label, unexpected};

#[derive(Subcommand, Debug)]
pub enum EnvCommand {
    /// Create an environment from a template and place it on the best host.
    Create(CreateArgs),
    /// List environments (yours, or all for admins and viewers).
    List {
        /// Include deleted environments.
        #[arg(long)]
        all: bool,
    },
    /// State, placement, addresses, ports, services, phase timings and recent events.
    Show { name: String },
    /// Start a stopped environment.
    Start(PowerArgs),
    /// Stop an environment (its disks and volumes stay).
    Stop(PowerArgs),
    /// Recreate an environment from its template (current or another version), keeping its data.
    Rebuild(RebuildArgs),
    /// Delete an environment and, unless --keep-data, its data.
    Delete(DeleteArgs),
    /// Push its ttl deletion later (within the site's max_extension).
    Extend {
        name: String,
        /// How much later, e.g. 3d.
        #[arg(long, value_parser = parse_duration)]
        by: Duration,
    },
    /// The environment's history.
    Events {
        name: String,
        /// Only the last N events (0 for all).
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
}

#[derive(Args, Debug)]
pub struct WaitArgs {
    /// Wait until the change is done, showing progress.
    #[arg(long)]
    pub wait: bool,
    /// How long --wait waits.
    #[arg(long, default_value = "15m", value_parser = parse_duration)]
    pub timeout: Duration,
}

#[derive(Args, Debug)]
pub struct CreateArgs {
    pub name: String,
    /// TEMPLATE or TEMPLATE@VERSION.
    #[arg(long, short = 't')]
    pub template: String,
    /// A template parameter (repeatable).
    #[arg(long = "param", short = 'p', value_name = "KEY=VALUE", value_parser = parse_label)]
    pub params: Vec<(String, String)>,
    /// Place it on this host.
    #[arg(long, conflicts_with = "labels")]
    pub host: Option<String>,
    /// Place it only on a host with this label (repeatable).
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
    /// Delete it this long after creation, e.g. 7d ('off': no ttl) [default: the template's or site's].
    #[arg(long, value_name = "DURATION")]
    pub ttl: Option<String>,
    /// Warn this long before the ttl deletes it, e.g. 1d.
    #[arg(long, value_name = "DURATION")]
    pub ttl_warning: Option<String>,
    /// Stop it after this long without CPU or network activity, e.g. 30m ('off': never).
    #[arg(long, value_name = "DURATION")]
    pub idle: Option<String>,
    /// Working hours: "DAYS HOURS TIMEZONE [except YYYY-MM-DD,…]",
    /// e.g. "mon-fri 09:00-12:00,13:00-19:00 Asia/Seoul except 2026-12-25" ('off': always on).
    #[arg(long, value_name = "SCHEDULE")]
    pub schedule: Option<String>,
    #[command(flatten)]
    pub wait: WaitArgs,
}

#[derive(Args, Debug)]
pub struct PowerArgs {
    pub name: String,
    #[command(flatten)]
    pub wait: WaitArgs,
}

#[derive(Args, Debug)]
pub struct RebuildArgs {
    pub name: String,
    /// Template version to rebuild from [default: the latest].
    #[arg(long)]
    pub version: Option<String>,
    /// Recreate it on another host (when its host is lost); its data stays behind.
    #[arg(long)]
    pub elsewhere: bool,
    #[command(flatten)]
    pub wait: WaitArgs,
}

#[derive(Args, Debug)]
pub struct DeleteArgs {
    pub name: String,
    /// Keep the environment's data (data disk, named volumes) on its host.
    #[arg(long)]
    pub keep_data: bool,
    #[command(flatten)]
    pub wait: WaitArgs,
}

pub(super) async fn run(client: &Client, cmd: EnvCommand, fmt: Format) -> Result<(), CliError> {
    match cmd {
        EnvCommand::Create(a) => {
            let (template, version) = split_ref(&a.template);
            let host = match a.host {
                Some(h) => Some(
                    HostId::parse(&h)
                        .map_err(|e| CliError::from(ApiError::invalid(e.to_string())))?,
                ),
                None => None,
            };
            let create = EnvCreate {
                name: a.name,
                template,
                version,
                params: label_map(a.params),
                host,
                labels: label_map(a.labels),
            };
            let policies = PolicyOverrides {
                ttl: a.ttl,
                ttl_warning: a.ttl_warning,
                idle: a.idle,
                schedule: a.schedule,
            };
            // The original call when no policy flag is given, so an older
            // controller still understands it.
            let call = if policies.is_empty() {
                Call::EnvCreate(create)
            } else {
                Call::EnvCreateWithPolicies { create, policies }
            };
            let env = expect_env(client.call(call).await?)?;
            if fmt == Format::Table {
                eprintln!(
                    "{} ({}) scheduled on {} with the {} runtime",
                    env.name,
                    env.id,
                    host_text(&env),
                    env.runtime
                );
            }
            finish(client, env, a.wait, "Running", fmt).await
        }
        EnvCommand::List { all } => {
            let reply = client.call(Call::EnvList { all }).await?;
            let Reply::Envs(envs) = reply else {
                return Err(unexpected(reply));
            };
            match fmt {
                Format::Json => output::print_json(&envs),
                Format::Table => {
                    let mut t = Table::new(&[
                        "NAME", "STATE", "TEMPLATE", "HOST", "RUNTIME", "OWNER", "AGE", "ADDRESS",
                    ]);
                    for e in &envs {
                        t.row(vec![
                            e.name.clone(),
                            state_text(e),
                            format!(
                                "{}@{}",
                                e.template,
                                short(&e.version).trim_start_matches("sha256:")
                            ),
                            e.host_name
                                .clone()
                                .or(e.host.as_ref().map(|h| h.to_string()))
                                .unwrap_or_else(|| "-".into()),
                            e.runtime.clone(),
                            e.owner.clone(),
                            ago(Some(e.created_at)).trim_end_matches(" ago").to_string(),
                            e.detail
                                .addresses
                                .first()
                                .cloned()
                                .unwrap_or_else(|| "-".into()),
                        ]);
                    }
                    t.print();
                }
            }
            Ok(())
        }
        EnvCommand::Show { name } => {
            let env = expect_env(client.call(Call::EnvShow { name }).await?)?;
            let policies = match client
                .call(Call::EnvPolicies {
                    name: env.id.to_string(),
                })
                .await?
            {
                Reply::EnvPolicies(p) => p,
                other => return Err(unexpected(other)),
            };
            match fmt {
                Format::Json => {
                    let mut v = serde_json::to_value(&env).expect("views serialize");
                    v["policies"] = serde_json::to_value(&policies).expect("views serialize");
                    output::print_json(&v)
                }
                Format::Table => {
                    print_env(&env);
                    print_policies(&policies);
                }
            }
            Ok(())
        }
        EnvCommand::Extend { name, by } => {
            let env = expect_env(
                client
                    .call(Call::EnvExtend {
                        name,
                        by_secs: by.as_secs(),
                    })
                    .await?,
            )?;
            match fmt {
                Format::Json => output::print_json(&env),
                Format::Table => {
                    let p = client
                        .call(Call::EnvPolicies {
                            name: env.id.to_string(),
                        })
                        .await?;
                    let Reply::EnvPolicies(p) = p else {
                        return Err(unexpected(p));
                    };
                    println!(
                        "{}: deleted at {} (extended by {} in total)",
                        env.name,
                        p.delete_at.map(when).unwrap_or_else(|| "-".into()),
                        metrom_protocol::duration::format_duration(Duration::from_secs(
                            p.extended_secs
                        ))
                    );
                }
            }
            Ok(())
        }
        EnvCommand::Start(a) => {
            let env = expect_env(
                client
                    .call(Call::EnvPower {
                        name: a.name,
                        running: true,
                    })
                    .await?,
            )?;
            finish(client, env, a.wait, "Running", fmt).await
        }
        EnvCommand::Stop(a) => {
            let env = expect_env(
                client
                    .call(Call::EnvPower {
                        name: a.name,
                        running: false,
                    })
                    .await?,
            )?;
            finish(client, env, a.wait, "Stopped", fmt).await
        }
        EnvCommand::Rebuild(a) => {
            let call = Call::EnvRebuild {
                name: a.name,
                version: a.version,
                elsewhere: a.elsewhere,
            };
            let env = expect_env(client.call(call).await?)?;
            let target = if env.desired == "stopped" {
                "Stopped"
            } else {
                "Running"
            };
            finish(client, env, a.wait, target, fmt).await
        }
        EnvCommand::Delete(a) => {
            let env = expect_env(
                client
                    .call(Call::EnvDelete {
                        name: a.name,
                        keep_data: a.keep_data,
                    })
                    .await?,
            )?;
            finish(client, env, a.wait, "Deleted", fmt).await
        }
        EnvCommand::Events { name, limit } => {
            let reply = client.call(Call::EnvEvents { name, limit }).await?;
            let Reply::Events(events) = reply else {
                return Err(unexpected(reply));
            };
            match fmt {
                Format::Json => output::print_json(&events),
                Format::Table => {
                    let mut t = Table::new(&["TIME", "KIND", "MESSAGE"]);
                    for e in &events {
                        t.row(vec![when(e.at), e.kind.clone(), e.message.clone()]);
                    }
                    t.print();
                }
            }
            Ok(())
        }
    }
}

fn expect_env(reply: Reply) -> Result<EnvView, CliError> {
    match reply {
        Reply::Env(e) => Ok(e),
        other => Err(unexpected(other)),
    }
}

/// Prints the result of a change, after waiting for it if asked to.
async fn finish(
    client: &Client,
    env: EnvView,
    wait: WaitArgs,
    target: &str,
    fmt: Format,
) -> Result<(), CliError> {
    let env = if wait.wait {
        wait_for(client, env, target, wait.timeout).await?
    } else {
        env
    };
    match fmt {
        Format::Json => output::print_json(&env),
        Format::Table if wait.wait => print_env(&env),
        Format::Table => println!(
            "{}: {} (desired {}); follow it with `metrom env show {}`",
            env.name,
            state_text(&env),
            env.desired,
            env.name
        ),
    }
    Ok(())
}

/// Polls until the environment reaches `target`, with a spinner; fails on Failed.
async fn wait_for(
    client: &Client,
    env: EnvView,
    target: &str,
    timeout: Duration,
) -> Result<EnvView, CliError> {
    let bar = indicatif::ProgressBar::new_spinner();
    bar.enable_steady_tick(Duration::from_millis(120));
    let start = Instant::now();
    let id = env.id.to_string();
    let initial = env.state.clone();
    let mut moved = initial != "Failed";
    let mut env = env;
    loop {
        let msg = match &env.reason {
            Some(r) => format!("{}: {} — {r}", env.name, env.state),
            None => format!("{}: {}", env.name, env.state),
        };
        bar.set_message(format!("{msg} ({}s)", start.elapsed().as_secs()));
        if env.state == target {
            bar.finish_and_clear();
            eprintln!(
                "{}: {target} after {:.1}s",
                env.name,
                start.elapsed().as_secs_f64()
            );
            return Ok(env);
        }
        // A Failed state from before the request is not this change's failure;
        // a deletion goes on whatever state the environment was in.
        if env.state != initial {
            moved = true;
        }
        if env.state == "Failed" && target != "Deleted" && moved {
            bar.finish_and_clear();
            return Err(CliError::Other(anyhow::anyhow!(
                "{} failed: {} (see `metrom env events {}`)",
                env.name,
                env.reason.clone().unwrap_or_default(),
                env.name
            )));
        }
        if start.elapsed() > timeout {
            bar.finish_and_clear();
            return Err(CliError::Other(anyhow::anyhow!(
                "{} is still {} after {}s; it keeps going — follow it with `metrom env show {}`",
                env.name,
                env.state,
                timeout.as_secs(),
                env.name
            )));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        env = expect_env(client.call(Call::EnvShow { name: id.clone() }).await?)?;
    }
}

fn state_text(e: &EnvView) -> String {
    match e.state.as_str() {
        "Running" if e.desired == "stopped" => "Running (stopping)".into(),
        "Stopped" if e.desired == "running" => "Stopped (starting)".into(),
        s => s.to_string(),
    }
}

fn host_text(e: &EnvView) -> String {
    match (&e.host, &e.host_name) {
        (Some(h), Some(n)) => format!("{h} ({n})"),
        (Some(h), None) => h.to_string(),
        // A cloud environment: `aws:ACCOUNT/REGION`.
        (None, Some(n)) => n.clone(),
        (None, None) => "-".into(),
    }
}

fn print_policies(p: &EnvPolicyView) {
    if p.policies.is_empty() {
        return;
    }
    println!("policies");
    for l in &p.policies {
        println!("  {:<12} {} ({})", l.key, l.value, l.source);
    }
    if let Some(d) = p.delete_at {
        let ext = if p.extended_secs > 0 {
            format!(
                ", extended by {}",
                metrom_protocol::duration::format_duration(Duration::from_secs(p.extended_secs))
            )
        } else {
            String::new()
        };
        println!("  {:<12} {}{ext}", "deleted at", when(d));
    }
    if p.policies.iter().any(|l| l.key == "idle") {
        println!("  {:<12} {}", "activity", p.activity);
    }
}

fn print_env(e: &EnvView) {
    println!("name       {} ({})", e.name, e.id);
    println!("owner      {}", e.owner);
    println!("state      {} (desired {})", state_text(e), e.desired);
    if let Some(r) = &e.reason {
        println!("reason     {r}");
    }
    if let Some(n) = &e.next_action {
        println!("next       {n}");
    }
    println!("template   {}@{}", e.template, short(&e.version));
    println!("host       {} · runtime {}", host_text(e), e.runtime);
    println!(
        "resources  {} vCPUs, {} MiB memory, {} GiB disk",
        e.resources.vcpus, e.resources.memory_mb, e.resources.disk_gb
    );
    if !e.params.is_empty() {
        let p: Vec<String> = e.params.iter().map(|(k, v)| format!("{k}={v}")).collect();
        println!("params     {}", p.join(" "));
    }
    if !e.detail.instance.is_empty() {
        println!("instance   {}", e.detail.instance);
    }
    if !e.detail.addresses.is_empty() {
        println!("addresses  {}", e.detail.addresses.join(", "));
    }
    for p in &e.detail.ports {
        println!(
            "port       {} {}/{} → host port {}",
            p.name, p.guest_port, p.protocol, p.host_port
        );
    }
    if !e.detail.services.is_empty() {
        println!("services");
        for s in &e.detail.services {
            let health = if s.health.is_empty() {
                String::new()
            } else {
                format!(" ({})", s.health)
            };
            println!("  {:<16} {}{health}", s.name, s.state);
        }
    }
    println!(
        "created    {} ({})",
        when(e.created_at),
        ago(Some(e.created_at))
    );
    if !e.phases.is_empty() {
        let p: Vec<String> = e
            .phases
            .iter()
            .map(|p| format!("{} +{:.1}s", p.phase, p.after_secs))
            .collect();
        println!("phases     build {}: {}", e.build, p.join(" · "));
    }
    if !e.events.is_empty() {
        println!("events");
        for ev in &e.events {
            println!("  {}  {:<10} {}", when(ev.at), ev.kind, ev.message);
        }
    }
}
