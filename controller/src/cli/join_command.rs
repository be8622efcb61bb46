//! `metrom host join-command`: a join token and the one line that turns an
//! idle box into a host — `curl` with the controller's pinned key fetching
//! `install.sh` from the controller's HTTPS endpoint, piped into `sudo sh`.

use clap::{Args, ValueEnum};
use metrom_protocol::messages::api::{Call, InstallerInfo, Reply};
use serde::Serialize;

use super::client::Client;
use super::output::{self, Format, when};
use super::{CliError, label_map, parse_duration, parse_label, unexpected};

#[derive(Args, Debug)]
pub struct JoinCommandArgs {
    /// How long the line (its join token) stays valid (e.g. 30m, 1h, 7d).
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    pub ttl: std::time::Duration,
    /// How many boxes may join with it.
    #[arg(long, default_value_t = 1)]
    pub uses: u32,
    /// A label every host joining with it gets (repeatable), e.g. --label rack=b2.
    /// Labels travel in the token: the box cannot change them.
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
    /// What the installer sets up: kvm (KVM/libvirt), docker (Docker Engine),
    /// or auto (kvm where the box can run it, else docker).
    #[arg(long, value_enum, default_value = "auto")]
    pub runtime: RuntimeChoice,
}

/// `--runtime` of the installer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RuntimeChoice {
    Auto,
    Kvm,
    Docker,
}

impl RuntimeChoice {
    fn as_str(self) -> &'static str {
        match self {
            RuntimeChoice::Auto => "auto",
            RuntimeChoice::Kvm => "kvm",
            RuntimeChoice::Docker => "docker",
        }
    }
}

/// `-o json` of `host join-command`: the line and its parts.
#[derive(Debug, Serialize)]
pub struct JoinCommand {
    pub command: String,
    pub url: String,
    pub pin: String,
    pub controller: String,
    pub token: String,
    pub token_id: String,
    pub expires_at: jiff::Timestamp,
    pub uses: u32,
    pub runtime: RuntimeChoice,
}

pub(super) async fn run(
    client: &Client,
    args: JoinCommandArgs,
    fmt: Format,
) -> Result<(), CliError> {
    // First where the endpoint is, so a failure there wastes no token.
    let reply = client.call(Call::InstallerInfo).await?;
    let Reply::Installer(info) = reply else {
        return Err(unexpected(reply));
    };
    let reply = client
        .call(Call::TokenCreate {
            ttl_secs: args.ttl.as_secs(),
            uses: args.uses,
            labels: label_map(args.labels),
        })
        .await?;
    let Reply::TokenCreated(t) = reply else {
        return Err(unexpected(reply));
    };
    let command = join_line(&info, &t.token, args.runtime);
    match fmt {
        Format::Json => output::print_json(&JoinCommand {
            command,
            url: info.url,
            pin: info.pin,
            controller: info.controller,
            token: t.token,
            token_id: t.id,
            expires_at: t.expires_at,
            uses: t.uses,
            runtime: args.runtime,
        }),
        Format::Table => {
            // The line alone on stdout, so `$(metrom host join-command)` works.
            eprintln!(
                "Run this on each new box (Debian/Ubuntu or RHEL family, as root or with sudo); \
                 valid until {} for {} box(es) (token {}):",
                when(t.expires_at),
                t.uses,
                t.id
            );
            println!("{command}");
        }
    }
    Ok(())
}

/// The line: fetch `install.sh` with the endpoint's key pinned (curl checks
/// the pin even with `-k`, which only skips the name check) and run it.
pub fn join_line(info: &InstallerInfo, token: &str, runtime: RuntimeChoice) -> String {
    let mut line = format!(
        "curl -fsSL --pinnedpubkey {} -k {} | sudo sh -s - --token {}",
        shell_word(&info.pin),
        shell_word(&format!("{}/install.sh", info.url)),
        shell_word(token)
    );
    if runtime != RuntimeChoice::Auto {
        line.push_str(" --runtime ");
        line.push_str(runtime.as_str());
    }
    line
}

/// A word as it can be pasted into sh: bare when it is plain, else quoted.
/// The pin is always quoted (base64 may hold `+`, `/` and `=`).
fn shell_word(s: &str) -> String {
    let plain = !s.is_empty()
        && !s.starts_with("sha256//")
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:/@%+=,".contains(&b));
    if plain {
        s.to_string()
    } else {
        crate::http::sh_quote(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> InstallerInfo {
        InstallerInfo {
            url: "https://ctl.example.lan:7444".into(),
            pin: "sha256//n4bQgYhMfWWaL+qgxVrQFaO/TxsrC4Is0V1sFbDwCgg=".into(),
            controller: "ctl.example.lan:7443".into(),
        }
    }

    #[test]
    fn the_line_pins_the_key_and_passes_the_token() {
        let token = "mtj1.abcdefgh.0123456789abcdefghijklmnopqrstuv.00ff";
        assert_eq!(
            join_line(&info(), token, RuntimeChoice::Auto),
            "curl -fsSL --pinnedpubkey 'sha256//n4bQgYhMfWWaL+qgxVrQFaO/TxsrC4Is0V1sFbDwCgg=' -k \
             https://ctl.example.lan:7444/install.sh | sudo sh -s - --token \
             mtj1.abcdefgh.0123456789abcdefghijklmnopqrstuv.00ff"
        );
        assert!(join_line(&info(), token, RuntimeChoice::Kvm).ends_with(" --runtime kvm"));
        assert!(join_line(&info(), token, RuntimeChoice::Docker).ends_with(" --runtime docker"));
    }

    #[test]
    fn odd_urls_are_quoted() {
        let mut i = info();
        i.url = "https://ctl lan:7444".into();
        assert!(
            join_line(&i, "t", RuntimeChoice::Auto)
                .contains(" -k 'https://ctl lan:7444/install.sh' |")
        );
        i.url = "https://[fd00::5]:7444".into();
        assert!(
            join_line(&i, "t", RuntimeChoice::Auto)
                .contains(" -k 'https://[fd00::5]:7444/install.sh' |")
        );
    }
}
