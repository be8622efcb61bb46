//! `metrom image …`: import, list, delete VM base images.

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
    /// Upload a VM base image (qcow2 or raw) into the controller's image store.
    Import {
        /// The image file.
        file: PathBuf,
        /// The name templates use for it (`image = "…"` in metrom.toml).
        #[arg(long)]
        name: String,
        /// qcow2, raw, or auto (read the file's header).
        #[arg(long, default_value = "auto")]
        format: String,
    },
    /// List images, their digests and how many environments use them.
    List,
    /// Delete an image (refused while environments use it).
    Delete { name: String },
}

pub(super) async fn run(client: &Client, cmd: ImageCommand, fmt: Format) -> Result<(), CliError> {
    match cmd {
        ImageCommand::Import { file, name, format } => {
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
            let bar = if fmt == Format::Table {
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
            } else {
                None
            };
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
        ImageCommand::List => {
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
        ImageCommand::Delete { name } => done(client.call(Call::ImageDelete { name }).await?, fmt),
    }
}
