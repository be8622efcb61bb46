//! `metrom template …`: push, list, show, versions, pull.

use std::path::PathBuf;

use clap::Subcommand;
use metrom_protocol::messages::api::{Call, Reply};
use metrom_protocol::template;

use super::client::Client;
use super::output::{self, Format, Table, bytes, when};
use super::{CliError, unexpected};

#[derive(Subcommand, Debug)]
pub enum TemplateCommand {
    /// Validate a template folder (metrom.toml + compose.yaml + files) and store it as a new version.
    Push {
        /// The template folder.
        dir: PathBuf,
    },
    /// List templates with their latest version.
    List,
    /// Show a template version: resources, runtime, services, parameters, policies.
    Show {
        /// NAME or NAME@VERSION (a digest or a unique prefix of one).
        template: String,
    },
    /// List a template's versions, newest last.
    Versions { name: String },
    /// Download a template version into a folder, to edit it and push your own.
    Pull {
        /// NAME or NAME@VERSION.
        template: String,
        /// Folder to write to (must be empty or absent).
        dir: PathBuf,
        /// Write into a non-empty folder, overwriting files.
        #[arg(long)]
        force: bool,
    },
}

/// Splits `NAME@VERSION`.
pub fn split_ref(s: &str) -> (String, Option<String>) {
    match s.split_once('@') {
        Some((n, v)) => (n.to_string(), Some(v.to_string())),
        None => (s.to_string(), None),
    }
}

/// `sha256:` and 12 hex digits: enough to tell versions apart, and accepted back.
pub fn short(version: &str) -> String {
    version.chars().take("sha256:".len() + 12).collect()
}

pub(super) async fn run(
    client: &Client,
    cmd: TemplateCommand,
    fmt: Format,
) -> Result<(), CliError> {
    match cmd {
        TemplateCommand::Push { dir } => {
            let files =
                template::read_dir(&dir).map_err(|e| CliError::Other(anyhow::anyhow!("{e}")))?;
            // Validate here first: the same checks the controller makes, without a round trip.
            let t = template::parse(files.clone())
                .map_err(|e| CliError::Other(anyhow::anyhow!("{e}")))?;
            let reply = client.call(Call::TemplatePush { files }).await?;
            let Reply::TemplatePushed(p) = reply else {
                return Err(unexpected(reply));
            };
            match fmt {
                Format::Json => output::print_json(&p),
                Format::Table => {
                    let what = if p.created {
                        "new version"
                    } else {
                        "unchanged: this content was already stored"
                    };
                    println!(
                        "pushed {}@{} ({what}; {} files)",
                        p.name,
                        short(&p.version),
                        t.files.len()
                    );
                }
            }
        }
        TemplateCommand::List => {
            let reply = client.call(Call::TemplateList).await?;
            let Reply::Templates(list) = reply else {
                return Err(unexpected(reply));
            };
            match fmt {
                Format::Json => output::print_json(&list),
                Format::Table => {
                    let mut t = Table::new(&[
                        "NAME",
                        "LATEST",
                        "VERSIONS",
                        "OWNER",
                        "UPDATED",
                        "DESCRIPTION",
                    ]);
                    for tpl in &list {
                        t.row(vec![
                            tpl.name.clone(),
                            short(&tpl.latest),
                            tpl.versions.to_string(),
                            tpl.owner.clone(),
                            output::ago(Some(tpl.updated_at)),
                            tpl.description.clone(),
                        ]);
                    }
                    t.print();
                }
            }
        }
        TemplateCommand::Show { template } => {
            let (name, version) = split_ref(&template);
            let reply = client.call(Call::TemplateShow { name, version }).await?;
            let Reply::Template(d) = reply else {
                return Err(unexpected(reply));
            };
            match fmt {
                Format::Json => output::print_json(&d),
                Format::Table => {
                    println!(
                        "name         {}{}",
                        d.name,
                        if d.latest { " (latest)" } else { "" }
                    );
                    println!("version      {}", d.version);
                    println!("description  {}", d.description);
                    println!("pushed       {} by {}", when(d.pushed_at), d.pushed_by);
                    println!("runtime      {}", d.runtime.join(", "));
                    println!("image        {}", d.image.as_deref().unwrap_or("-"));
                    println!(
                        "resources    {} vCPUs, {} MiB memory, {} GiB disk",
                        d.resources.vcpus, d.resources.memory_mb, d.resources.disk_gb
                    );
                    list("ports", &d.ports);
                    list("packages", &d.packages);
                    list("repos", &d.repos);
                    list("services", &d.services);
                    list("policies", &d.policies);
                    if d.params.is_empty() {
                        println!("params       -");
                    } else {
                        println!("params");
                        for p in &d.params {
                            let default = match (&p.default, p.required) {
                                (_, true) => "required".to_string(),
                                (Some(v), _) => format!("default {v}"),
                                (None, _) => String::new(),
                            };
                            println!(
                                "  {:<20} {default}{}",
                                p.name,
                                if p.description.is_empty() {
                                    String::new()
                                } else {
                                    format!(" — {}", p.description)
                                }
                            );
                        }
                    }
                    println!("files");
                    for (path, size) in &d.files {
                        println!("  {path} ({})", bytes(*size));
                    }
                }
            }
        }
        TemplateCommand::Versions { name } => {
            let reply = client.call(Call::TemplateVersions { name }).await?;
            let Reply::TemplateVersions(vs) = reply else {
                return Err(unexpected(reply));
            };
            match fmt {
                Format::Json => output::print_json(&vs),
                Format::Table => {
                    let mut t = Table::new(&["VERSION", "PUSHED", "BY", ""]);
                    for v in &vs {
                        t.row(vec![
                            short(&v.version),
                            when(v.pushed_at),
                            v.pushed_by.clone(),
                            if v.latest {
                                "latest".into()
                            } else {
                                String::new()
                            },
                        ]);
                    }
                    t.print();
                }
            }
        }
        TemplateCommand::Pull {
            template,
            dir,
            force,
        } => {
            let (name, version) = split_ref(&template);
            let reply = client.call(Call::TemplatePull { name, version }).await?;
            let Reply::TemplateFiles {
                name,
                version,
                files,
            } = reply
            else {
                return Err(unexpected(reply));
            };
            template::write_dir(&files, &dir, force)
                .map_err(|e| CliError::Other(anyhow::anyhow!("{e}")))?;
            match fmt {
                Format::Json => output::print_json(
                    &serde_json::json!({"name": name, "version": version, "dir": dir, "files": files.len()}),
                ),
                Format::Table => println!(
                    "wrote {name}@{} ({} files) to {}; edit it, change `name` in metrom.toml, and `metrom template push {}`",
                    short(&version),
                    files.len(),
                    dir.display(),
                    dir.display()
                ),
            }
        }
    }
    Ok(())
}

fn list(label: &str, items: &[String]) {
    if items.is_empty() {
        println!("{label:<12} -");
    } else {
        println!("{label}");
        for i in items {
            println!("  {i}");
        }
    }
}
