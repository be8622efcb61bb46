//! `metrom image …`: import, list, delete VM base images, and (`--docker`)
//! `docker save` archives for Docker hosts without a registry.

use std::io::Read;
use std::path::PathBuf;

use clap::Subcommand;
use metrom_protocol::messages::api::{Call, Reply};

use super::client::Client;
use super::output::{self, Format, Table, bytes, when};
use super::templates::short;
use super::{CliError, done, unexpected};

#[derive(Subcommand, Debug)]
pub enum ImageCommand {
    /// Upload a VM base image (qcow2 or raw), or with --docker a `docker save`
    /// archive, into the controller's image store.
    Import {
        /// The image file (with --docker: the archive from `docker save -o FILE repo:tag…`).
        file: PathBuf,
        /// The name templates use for it (`image = "…"` in metrom.toml); with
        /// --docker, a name for the archive [default: the file name without extension].
        #[arg(long, required_unless_present = "docker")]
        name: Option<String>,
        /// qcow2, raw, or auto (read the file's header).
        #[arg(long, default_value = "auto", conflicts_with = "docker")]
        format: String,
        /// The file is a `docker save` archive: Docker hosts that lack one of its
        /// images load it from the controller instead of pulling.
        #[arg(long)]
        docker: bool,
    },
    /// List images, their digests and how many environments use them
    /// (with --docker: the Docker image archives and the images they hold).
    List {
        #[arg(long)]
        docker: bool,
    },
    /// Delete an image (refused while environments use it), or with --docker an archive.
    Delete {
        name: String,
        #[arg(long)]
        docker: bool,
    },
}

pub(super) async fn run(client: &Client, cmd: ImageCommand, fmt: Format) -> Result<(), CliError> {
    match cmd {
        ImageCommand::Import {
            file, name, docker, ..
        } if docker => import_docker(client, &file, name, fmt).await,
        ImageCommand::Import {
            file, name, format, ..
        } => {
            let name = name.unwrap_or_default();
            let other =
                |e: std::io::Error| CliError::Other(anyhow::anyhow!("{}: {e}", file.display()));
            let size = std::fs::metadata(&file).map_err(other)?.len();
            let format = match format.as_str() {
                "auto" => {
                    let mut head = [0u8; 4];
                    let n = std::fs::File::open(&file)
                        .map_err(other)?
                        .read(&mut head)
                        .map_err(other)?;
                    if n == 4 && &head == b"QFI\xfb" {
                        "qcow2"
                    } else {
                        "raw"
                    }
                    .to_string()
                }
                "qcow2" | "raw" => format,
                f => {
                    return Err(CliError::Other(anyhow::anyhow!(
                        "--format {f}: use auto, qcow2 or raw"
                    )));
                }
            };
            let bar = upload_bar(size, &name, fmt);
            let progress = |n: u64| {
                if let Some(b) = &bar {
                    b.set_position(n);
                }
            };
            let reply = client
                .upload(
                    Call::ImageImport { name, size, format },
                    &file,
                    size,
                    progress,
                )
                .await;
            if let Some(b) = &bar {
                b.finish_and_clear();
            }
            let Reply::Image(i) = reply? else {
                return Err(CliError::Other(anyhow::anyhow!("unexpected answer")));
            };
            match fmt {
                Format::Json => output::print_json(&i),
                Format::Table => println!(
                    "imported {} ({}, {}, {})",
                    i.name,
                    i.format,
                    bytes(i.size),
                    short(&i.digest)
                ),
            }
            Ok(())
        }
        ImageCommand::List { docker: true } => {
            let reply = client.call(Call::DockerArchiveList).await?;
            let Reply::DockerArchives(archives) = reply else {
                return Err(unexpected(reply));
            };
            match fmt {
                Format::Json => output::print_json(&archives),
                Format::Table => {
                    let mut t = Table::new(&["NAME", "IMAGES", "SIZE", "DIGEST", "IMPORTED"]);
                    for a in &archives {
                        t.row(vec![
                            a.name.clone(),
                            a.images.join(" "),
                            bytes(a.size),
                            short(&a.digest),
                            format!("{} by {}", when(a.imported_at), a.imported_by),
                        ]);
                    }
                    t.print();
                }
            }
            Ok(())
        }
        ImageCommand::List { docker: false } => {
            let reply = client.call(Call::ImageList).await?;
            let Reply::Images(images) = reply else {
                return Err(unexpected(reply));
            };
            match fmt {
                Format::Json => output::print_json(&images),
                Format::Table => {
                    let mut t =
                        Table::new(&["NAME", "FORMAT", "SIZE", "DIGEST", "USED BY", "IMPORTED"]);
                    for i in &images {
                        t.row(vec![
                            i.name.clone(),
                            i.format.clone(),
                            bytes(i.size),
                            short(&i.digest),
                            i.used_by.to_string(),
                            format!("{} by {}", when(i.imported_at), i.imported_by),
                        ]);
                    }
                    t.print();
                }
            }
            Ok(())
        }
        ImageCommand::Delete { name, docker } => {
            let call = if docker {
                Call::DockerArchiveDelete { name }
            } else {
                Call::ImageDelete { name }
            };
            done(client.call(call).await?, fmt)
        }
    }
}

async fn import_docker(
    client: &Client,
    file: &std::path::Path,
    name: Option<String>,
    fmt: Format,
) -> Result<(), CliError> {
    let other = |e: std::io::Error| CliError::Other(anyhow::anyhow!("{}: {e}", file.display()));
    let size = std::fs::metadata(file).map_err(other)?.len();
    let name = name.unwrap_or_else(|| archive_name(file));
    let bar = upload_bar(size, &name, fmt);
    let progress = |n: u64| {
        if let Some(b) = &bar {
            b.set_position(n);
        }
    };
    let reply = client
        .upload(
            Call::DockerArchiveImport {
                name: name.clone(),
                size,
            },
            file,
            size,
            progress,
        )
        .await;
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    let reply = reply?;
    let Reply::DockerArchive(a) = reply else {
        return Err(unexpected(reply));
    };
    match fmt {
        Format::Json => output::print_json(&a),
        Format::Table => println!(
            "imported docker archive {} ({}, {}): {}",
            a.name,
            bytes(a.size),
            short(&a.digest),
            a.images.join(", ")
        ),
    }
    Ok(())
}

/// The default name of an archive: its file name without extensions,
/// lowercased, other characters made '-'.
fn archive_name(file: &std::path::Path) -> String {
    let stem = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = stem.split('.').next().unwrap_or_default();
    let name: String = stem
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_alphanumeric() || "-_".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    let name = name.trim_start_matches(|c: char| !c.is_ascii_alphanumeric());
    if name.is_empty() {
        "archive".into()
    } else {
        name.chars().take(64).collect()
    }
}

fn upload_bar(size: u64, name: &str, fmt: Format) -> Option<indicatif::ProgressBar> {
    if fmt != Format::Table {
        return None;
    }
    let b = indicatif::ProgressBar::new(size);
    b.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .expect("style")
        .progress_chars("=> "),
    );
    b.set_message(format!("importing {name}"));
    Some(b)
}
