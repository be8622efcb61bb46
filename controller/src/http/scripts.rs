//! `install.sh` and `uninstall.sh`, embedded in the controller binary from
//! `installer/`. When served, the installer gets three lines filled in —
//! where it was fetched from, the pin, and the controller's QUIC address — so
//! the join line stays short and the script downloads the agent from the same
//! controller with the same pin.

/// `installer/install.sh` as built into this controller.
pub const INSTALL_SH: &str = include_str!("../../../installer/install.sh");
/// `installer/uninstall.sh` as built into this controller.
pub const UNINSTALL_SH: &str = include_str!("../../../installer/uninstall.sh");

/// The values a served script gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fill<'a> {
    /// `https://HOST:PORT` the box reached this endpoint at.
    pub url: &'a str,
    /// `sha256//…`.
    pub pin: &'a str,
    /// The QUIC address agents join (`HOST:PORT`).
    pub controller: &'a str,
}

/// The placeholder lines, exactly as they stand in the source tree.
const PLACEHOLDERS: [&str; 3] = ["METROM_URL=''", "METROM_PIN=''", "METROM_CONTROLLER=''"];

/// The script with its placeholder lines filled in (lines that are not
/// there are left alone: `uninstall.sh` has none).
pub fn fill(script: &str, f: &Fill) -> String {
    let values = [f.url, f.pin, f.controller];
    let mut out = String::with_capacity(script.len() + 256);
    for line in script.split_inclusive('\n') {
        let bare = line.trim_end_matches('\n');
        match PLACEHOLDERS.iter().position(|p| *p == bare) {
            Some(i) => {
                let name = &bare[..bare.len() - 3];
                out.push_str(&format!("{name}={}\n", sh_quote(values[i])));
            }
            None => out.push_str(line),
        }
    }
    out
}

/// Single-quotes a value for POSIX sh.
pub fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_installer_has_every_placeholder_once_and_gets_them_filled() {
        for p in PLACEHOLDERS {
            assert_eq!(
                INSTALL_SH.lines().filter(|l| *l == p).count(),
                1,
                "install.sh must hold the line {p} once"
            );
        }
        let f = Fill {
            url: "https://ctl.lan:7444",
            pin: "sha256//abc+/=",
            controller: "ctl.lan:7443",
        };
        let out = fill(INSTALL_SH, &f);
        assert!(out.contains("\nMETROM_URL='https://ctl.lan:7444'\n"));
        assert!(out.contains("\nMETROM_PIN='sha256//abc+/='\n"));
        assert!(out.contains("\nMETROM_CONTROLLER='ctl.lan:7443'\n"));
        assert!(!out.contains("METROM_URL=''"));
        // Nothing else moved.
        assert_eq!(out.lines().count(), INSTALL_SH.lines().count());
        assert!(out.starts_with("#!/bin/sh\n"));
        assert_eq!(fill(UNINSTALL_SH, &f), UNINSTALL_SH);
    }

    #[test]
    fn values_cannot_break_out_of_their_quotes() {
        let out = fill(
            "METROM_URL=''\n",
            &Fill {
                url: "https://x'; rm -rf /; '",
                pin: "",
                controller: "",
            },
        );
        assert_eq!(out, "METROM_URL='https://x'\\''; rm -rf /; '\\'''\n");
    }
}
