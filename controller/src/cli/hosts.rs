//! `metrom status`, `metrom host …`, `metrom token …`.

use metrom_protocol::ids::HostId;
use metrom_protocol::messages::api::{ApiError, Call, HostView, Reply};

use super::client::Client;
use super::output::{self, Format, Table, ago, bytes, labels, when};
use super::{CliError, HostCommand, TokenCommand, done, label_map, unexpected};

pub(super) fn status(reply: Reply, fmt: Format) -> Result<(), CliError> {
    let Reply::Status(s) = reply else {
        return Err(unexpected(reply));
    };
    match fmt {
        Format::Json => output::print_json(&s),
        Format::Table => {
            println!(
                "controller  metrom {} (protocol {})",
                s.controller_version, s.protocol_version
            );
            println!(
                "uptime      {} (since {})",
                output::span(s.uptime_secs as i64),
                when(s.started_at)
            );
            println!(
                "hosts       {} ready, {} unreachable, {} cordoned, {} revoked",
                s.hosts_ready, s.hosts_unreachable, s.hosts_cordoned, s.hosts_revoked
            );
            println!("you         {}", s.you);
        }
    }
    Ok(())
}

pub(super) async fn host(client: &Client, cmd: HostCommand, fmt: Format) -> Result<(), CliError> {
    match cmd {
        HostCommand::List => {
            let reply = client.call(Call::HostList).await?;
            let Reply::Hosts(hosts) = reply else {
                return Err(unexpected(reply));
            };
            match fmt {
                Format::Json => output::print_json(&hosts),
                Format::Table => host_table(&hosts),
            }
            Ok(())
        }
        HostCommand::Show { id } => {
            let reply = client.call(Call::HostShow { id: host_id(&id)? }).await?;
            let Reply::Host(h) = reply else {
                return Err(unexpected(reply));
            };
            match fmt {
                Format::Json => output::print_json(&h),
                Format::Table => host_detail(&h),
            }
            Ok(())
        }
        HostCommand::Cordon { id } => done(
            client
                .call(Call::HostCordon {
                    id: host_id(&id)?,
                    cordon: true,
                })
                .await?,
            fmt,
        ),
        HostCommand::Uncordon { id } => done(
            client
                .call(Call::HostCordon {
                    id: host_id(&id)?,
                    cordon: false,
                })
                .await?,
            fmt,
        ),
        HostCommand::Revoke { id } => done(
            client.call(Call::HostRevoke { id: host_id(&id)? }).await?,
            fmt,
        ),
        HostCommand::JoinCommand(args) => super::join_command::run(client, args, fmt).await,
    }
}

pub(super) async fn token(client: &Client, cmd: TokenCommand, fmt: Format) -> Result<(), CliError> {
    match cmd {
        TokenCommand::Create(args) => {
            let call = Call::TokenCreate {
                ttl_secs: args.ttl.as_secs(),
                uses: args.uses,
                labels: label_map(args.labels),
            };
            let reply = client.call(call).await?;
            let Reply::TokenCreated(t) = reply else {
                return Err(unexpected(reply));
            };
            match fmt {
                Format::Json => output::print_json(&t),
                Format::Table => {
                    // The token alone on stdout, so `$(metrom token create)` works;
                    // the explanation on stderr.
                    println!("{}", t.token);
                    eprintln!(
                        "token {} valid until {} for {} join(s); on the new box run:\n  metrom-agent join --controller {} --token {}",
                        t.id,
                        when(t.expires_at),
                        t.uses,
                        t.controller,
                        t.token
                    );
                }
            }
            Ok(())
        }
        TokenCommand::List => {
            let reply = client.call(Call::TokenList).await?;
            let Reply::Tokens(tokens) = reply else {
                return Err(unexpected(reply));
            };
            match fmt {
                Format::Json => output::print_json(&tokens),
                Format::Table => {
                    let mut t =
                        Table::new(&["ID", "STATE", "USED", "EXPIRES", "LABELS", "CREATED BY"]);
                    for tok in &tokens {
                        t.row(vec![
                            tok.id.clone(),
                            tok.state.clone(),
                            format!("{}/{}", tok.used, tok.uses),
                            when(tok.expires_at),
                            labels(&tok.labels),
                            tok.created_by.clone(),
                        ]);
                    }
                    t.print();
                }
            }
            Ok(())
        }
        TokenCommand::Revoke { id } => done(client.call(Call::TokenRevoke { id }).await?, fmt),
    }
}

fn host_id(s: &str) -> Result<HostId, CliError> {
    HostId::parse(s).map_err(|e| CliError::from(ApiError::invalid(e.to_string())))
}

fn state_text(h: &HostView) -> String {
    if h.cordoned {
        format!("{},Cordoned", h.state)
    } else {
        h.state.to_string()
    }
}

fn capabilities(h: &HostView) -> String {
    let c = &h.facts.capabilities;
    let mut v = Vec::new();
    if c.kvm.available {
        v.push("kvm");
    }
    if c.libvirt.available {
        v.push("libvirt");
    }
    if c.docker.available {
        v.push("docker");
    }
    if v.is_empty() {
        "-".into()
    } else {
        v.join(",")
    }
}

fn host_table(hosts: &[HostView]) {
    let mut t = Table::new(&[
        "ID",
        "NAME",
        "STATE",
        "CPUS",
        "MEMORY",
        "STORAGE",
        "CAPABILITIES",
        "ENVS",
        "LABELS",
        "LAST SEEN",
    ]);
    for h in hosts {
        t.row(vec![
            h.id.to_string(),
            h.name.clone(),
            state_text(h),
            h.facts.cpus.to_string(),
            bytes(h.facts.memory_bytes),
            bytes(h.facts.storage.total_bytes),
            capabilities(h),
            h.environments.to_string(),
            labels(&h.labels),
            ago(h.last_seen),
        ]);
    }
    t.print();
}

fn host_detail(h: &HostView) {
    let f = &h.facts;
    println!("id            {}", h.id);
    println!("name          {}", h.name);
    println!("state         {}", state_text(h));
    println!("labels        {}", labels(&h.labels));
    println!("address       {}", h.address.as_deref().unwrap_or("-"));
    println!("joined        {}", when(h.joined_at));
    println!("last seen     {}", ago(h.last_seen));
    println!("certificate   expires {}", when(h.cert_expires_at));
    println!("os            {} (kernel {}, {})", f.os, f.kernel, f.arch);
    println!("agent         {}", f.agent_version);
    println!("cpu           {} x {}", f.cpus, f.cpu_model);
    println!("memory        {}", bytes(f.memory_bytes));
    println!(
        "storage       {} free of {} on {} ({})",
        bytes(f.storage.available_bytes),
        bytes(f.storage.total_bytes),
        f.storage.mount,
        f.storage.filesystem
    );
    println!(
        "allocated     {} vCPUs, {} MiB memory, {} GiB disk in {} environment(s)",
        h.allocated.vcpus, h.allocated.memory_mb, h.allocated.disk_gb, h.environments
    );
    if let Some(l) = &h.load {
        println!(
            "load          {:.2} (cpu {:.0}%), {} memory free, {} storage free",
            l.load1,
            l.cpu_percent,
            bytes(l.memory_available_bytes),
            bytes(l.storage_available_bytes)
        );
    }
    println!("capabilities");
    for (name, p) in [
        ("kvm", &f.capabilities.kvm),
        ("libvirt", &f.capabilities.libvirt),
        ("docker", &f.capabilities.docker),
    ] {
        println!(
            "  {name:<8}    {} ({})",
            if p.available { "yes" } else { "no" },
            p.detail
        );
    }
    println!("disks");
    for d in &f.disks {
        println!(
            "  {:<12}  {} free of {} ({}, {})",
            d.mount,
            bytes(d.available_bytes),
            bytes(d.total_bytes),
            d.filesystem,
            d.device
        );
    }
}
