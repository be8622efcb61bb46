//! `metrom cloud …`: accounts, sync, instances, gc (admins).

use std::io::{BufRead, IsTerminal, Write};

use clap::{Args, Subcommand};
use metrom_protocol::messages::api::{
    Call, CloudAccountSpec, CloudAccountView, CloudInventoryView, Reply,
};

use super::client::Client;
use super::output::{self, Format, Table, ago, span};
use super::{CliError, done, parse_label, unexpected};

#[derive(Subcommand, Debug)]
pub enum CloudCommand {
    /// Add a cloud account: `metrom cloud add aws NAME --region R …`. Credentials
    /// come from the controller's environment or AWS profile, never from here.
    Add(AddArgs),
    /// The cloud accounts, their environments and last sync.
    List,
    /// Remove a cloud account (refused while environments live there).
    Remove { name: String },
    /// Sync every account now: reconcile cloud environments and list every instance.
    Sync,
    /// Every instance of the accounts' regions — Metrom's, orphans, others' —
    /// with state, type, uptime and estimated cost per hour.
    Instances {
        /// List the accounts now instead of showing the last sync.
        #[arg(long)]
        sync: bool,
    },
    /// Terminate orphans: instances tagged as this controller's that no
    /// environment owns. Lists them and asks first.
    Gc {
        /// Do not ask (for scripts).
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Args, Debug)]
pub struct AddArgs {
    /// The provider: aws.
    pub provider: String,
    /// A name for the account (lowercase letters, digits, '-').
    pub name: String,
    /// The region whose instances Metrom launches and lists, e.g. eu-central-1.
    #[arg(long)]
    pub region: String,
    /// A profile of the controller's ~/.aws/credentials and ~/.aws/config
    /// [default: AWS_ACCESS_KEY_ID/… from the controller's environment, then the default profile].
    #[arg(long)]
    pub profile: Option<String>,
    /// A private EC2 endpoint (air-gapped sites, EC2-compatible servers), e.g. https://ec2.internal.example.
    #[arg(long, value_name = "URL")]
    pub endpoint: Option<String>,
    /// The subnet instances are launched in [default: the region's default VPC].
    #[arg(long)]
    pub subnet: Option<String>,
    /// A security group for the instances.
    #[arg(long)]
    pub security_group: Option<String>,
    /// An EC2 key pair for the instances (owners' SSH keys are added by cloud-init anyway).
    #[arg(long)]
    pub key_name: Option<String>,
    /// A template image name and the machine image that stands for it here (repeatable).
    #[arg(long = "image-map", value_name = "IMAGE=AMI", value_parser = parse_label)]
    pub image_map: Vec<(String, String)>,
    /// Store the account without checking credentials and endpoint first.
    #[arg(long)]
    pub no_verify: bool,
}

pub(super) async fn run(client: &Client, cmd: CloudCommand, fmt: Format) -> Result<(), CliError> {
    match cmd {
        CloudCommand::Add(a) => {
            let spec = CloudAccountSpec {
                name: a.name,
                provider: a.provider,
                region: a.region,
                profile: a.profile,
                endpoint: a.endpoint,
                subnet: a.subnet,
                security_group: a.security_group,
                key_name: a.key_name,
                image_map: a.image_map.into_iter().collect(),
                verify: !a.no_verify,
            };
            let accounts = expect_accounts(client.call(Call::CloudAdd(spec)).await?)?;
            match fmt {
                Format::Json => output::print_json(&accounts),
                Format::Table => {
                    for a in &accounts {
                        println!(
                            "cloud account {} added: {} {}{}",
                            a.name,
                            a.provider,
                            a.region,
                            a.endpoint
                                .as_ref()
                                .map(|e| format!(" at {e}"))
                                .unwrap_or_default()
                        );
                    }
                }
            }
            Ok(())
        }
        CloudCommand::List => {
            let accounts = expect_accounts(client.call(Call::CloudList).await?)?;
            match fmt {
                Format::Json => output::print_json(&accounts),
                Format::Table => print_accounts(&accounts),
            }
            Ok(())
        }
        CloudCommand::Remove { name } => done(client.call(Call::CloudRemove { name }).await?, fmt),
        CloudCommand::Sync => {
            let inv = expect_inventory(client.call(Call::CloudSync).await?)?;
            match fmt {
                Format::Json => output::print_json(&inv),
                Format::Table => {
                    let count = |o: &str| inv.instances.iter().filter(|i| i.ownership == o).count();
                    println!(
                        "synced: {} instances ({} Metrom's, {} orphans, {} foreign), {:.4} {}/hour",
                        inv.instances.len(),
                        count("metrom"),
                        count("orphan"),
                        count("foreign"),
                        inv.total_per_hour,
                        inv.currency
                    );
                    print_errors(&inv);
                }
            }
            Ok(())
        }
        CloudCommand::Instances { sync } => {
            let call = if sync {
                Call::CloudSync
            } else {
                Call::CloudInstances
            };
            let inv = expect_inventory(client.call(call).await?)?;
            match fmt {
                Format::Json => output::print_json(&inv),
                Format::Table => print_instances(&inv),
            }
            Ok(())
        }
        CloudCommand::Gc { yes } => gc(client, yes, fmt).await,
    }
}

async fn gc(client: &Client, yes: bool, fmt: Format) -> Result<(), CliError> {
    let inv = expect_inventory(client.call(Call::CloudSync).await?)?;
    let orphans: Vec<_> = inv
        .instances
        .iter()
        .filter(|i| {
            i.ownership == "orphan" && i.state != "terminated" && i.state != "shutting-down"
        })
        .collect();
    print_errors(&inv);
    if orphans.is_empty() {
        match fmt {
            Format::Json => {
                output::print_json(&serde_json::json!({"terminated": [], "skipped": []}))
            }
            Format::Table => println!("no orphans"),
        }
        return Ok(());
    }
    let mut t = Table::new(&[
        "ACCOUNT", "INSTANCE", "STATE", "TYPE", "NAME", "ENV ID", "OWNER",
    ]);
    for i in &orphans {
        t.row(vec![
            i.account.clone(),
            i.instance_id.clone(),
            i.state.clone(),
            i.instance_type.clone(),
            i.name.clone().unwrap_or_else(|| "-".into()),
            i.env_id.clone().unwrap_or_else(|| "-".into()),
            i.owner.clone().unwrap_or_else(|| "-".into()),
        ]);
    }
    eprint!("{}", t.render());
    if !yes {
        if !std::io::stdin().is_terminal() {
            return Err(CliError::Other(anyhow::anyhow!(
                "{} orphan instance{} would be terminated; not asking without a terminal: run `metrom cloud gc --yes` to terminate them",
                orphans.len(),
                if orphans.len() == 1 { "" } else { "s" }
            )));
        }
        eprint!(
            "Terminate these {} instance{}? This cannot be undone. [y/N] ",
            orphans.len(),
            if orphans.len() == 1 { "" } else { "s" }
        );
        let _ = std::io::stderr().flush();
        let mut answer = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut answer)
            .map_err(|e| CliError::Other(e.into()))?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            eprintln!("nothing terminated");
            return Ok(());
        }
    }
    let ids = orphans.iter().map(|i| i.instance_id.clone()).collect();
    let reply = client.call(Call::CloudGc { instance_ids: ids }).await?;
    let Reply::CloudGc(gc) = reply else {
        return Err(unexpected(reply));
    };
    match fmt {
        Format::Json => output::print_json(&gc),
        Format::Table => {
            for id in &gc.terminated {
                println!("terminated {id}");
            }
            for (id, why) in &gc.skipped {
                println!("left {id}: {why}");
            }
        }
    }
    Ok(())
}

fn print_accounts(accounts: &[CloudAccountView]) {
    let mut t = Table::new(&[
        "NAME", "PROVIDER", "REGION", "ENDPOINT", "PROFILE", "IMAGES", "ENVS", "SYNCED", "ERROR",
    ]);
    for a in accounts {
        let images: Vec<String> = a
            .image_map
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        t.row(vec![
            a.name.clone(),
            a.provider.clone(),
            a.region.clone(),
            a.endpoint.clone().unwrap_or_else(|| "-".into()),
            a.profile.clone().unwrap_or_else(|| "-".into()),
            if images.is_empty() {
                "-".into()
            } else {
                images.join(",")
            },
            a.environments.to_string(),
            ago(a.last_sync),
            a.last_error.clone().unwrap_or_else(|| "-".into()),
        ]);
    }
    t.print();
}

fn print_instances(inv: &CloudInventoryView) {
    let mut t = Table::new(&[
        "ACCOUNT", "INSTANCE", "STATE", "TYPE", "UPTIME", "COST/H", "OWNER", "ENV",
    ]);
    for i in &inv.instances {
        let whose = match i.ownership.as_str() {
            "metrom" => i.env.clone().unwrap_or_default(),
            "orphan" => "orphan".to_string(),
            _ => match &i.controller {
                Some(c) => format!("foreign (Metrom {c})"),
                None => "foreign".to_string(),
            },
        };
        t.row(vec![
            i.account.clone(),
            i.instance_id.clone(),
            i.state.clone(),
            i.instance_type.clone(),
            i.uptime_secs
                .map(|s| span(s as i64))
                .unwrap_or_else(|| "-".into()),
            i.cost_per_hour
                .map(|c| format!("{c:.4}"))
                .unwrap_or_else(|| "?".into()),
            i.owner.clone().unwrap_or_else(|| "-".into()),
            whose,
        ]);
    }
    t.print();
    println!(
        "{} instances, {:.4} {}/hour estimated; synced {}",
        inv.instances.len(),
        inv.total_per_hour,
        inv.currency,
        ago(inv.synced_at)
    );
    print_errors(inv);
}

fn print_errors(inv: &CloudInventoryView) {
    for e in &inv.errors {
        eprintln!("warning: {e}");
    }
}

fn expect_accounts(reply: Reply) -> Result<Vec<CloudAccountView>, CliError> {
    match reply {
        Reply::CloudAccounts(a) => Ok(a),
        other => Err(unexpected(other)),
    }
}

fn expect_inventory(reply: Reply) -> Result<CloudInventoryView, CliError> {
    match reply {
        Reply::CloudInstances(i) => Ok(i),
        other => Err(unexpected(other)),
    }
}
