//! Talking to the QEMU guest agent through libvirt's agent channel: is the
//! guest up, what is its address, has provisioning finished, which compose
//! services run.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use metrom_protocol::cloudinit::{FAILED_MARKER, PHASE_FILE, READY_MARKER};
use metrom_protocol::messages::env::ServiceStatus;
use serde_json::{Value, json};

use super::libvirt::{self, Libvirt, LibvirtError};

/// Timeout of one guest agent call, in seconds.
const AGENT_TIMEOUT: i32 = 5;

/// Where provisioning stands inside the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Provisioning {
    /// The guest agent does not answer yet.
    Booting,
    /// Provisioning runs; the current step, if the guest wrote one.
    InProgress(Option<String>),
    Ready,
    Failed(String),
}

/// One guest's agent.
pub struct Guest {
    lv: Arc<Libvirt>,
    domain: String,
}

impl Guest {
    pub fn new(lv: Arc<Libvirt>, domain: &str) -> Guest {
        Guest {
            lv,
            domain: domain.to_string(),
        }
    }

    async fn command(&self, cmd: Value) -> Result<Value, LibvirtError> {
        let domain = self.domain.clone();
        let text = cmd.to_string();
        let answer = self
            .lv
            .call(move |c| libvirt::agent_command(c, &domain, &text, AGENT_TIMEOUT))
            .await?;
        let v: Value = serde_json::from_str(&answer)
            .map_err(|e| LibvirtError::Call(format!("guest agent answer: {e}")))?;
        Ok(v["return"].clone())
    }

    pub async fn ping(&self) -> bool {
        self.command(json!({"execute": "guest-ping"})).await.is_ok()
    }

    /// Provisioning state from the markers the guest writes.
    pub async fn provisioning(&self) -> Provisioning {
        if !self.ping().await {
            return Provisioning::Booting;
        }
        if let Ok(Some(reason)) = self.read_file(FAILED_MARKER).await {
            return Provisioning::Failed(format!(
                "provisioning failed inside the VM: {}",
                reason.trim()
            ));
        }
        match self.read_file(READY_MARKER).await {
            Ok(Some(_)) => Provisioning::Ready,
            _ => {
                let phase = self
                    .read_file(PHASE_FILE)
                    .await
                    .ok()
                    .flatten()
                    .map(|p| p.trim().to_string());
                Provisioning::InProgress(phase.filter(|p| !p.is_empty()))
            }
        }
    }

    /// The guest's IPv4 addresses (loopback excluded).
    pub async fn addresses(&self) -> Vec<String> {
        let Ok(ifaces) = self
            .command(json!({"execute": "guest-network-get-interfaces"}))
            .await
        else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for iface in ifaces.as_array().into_iter().flatten() {
            if iface["name"] == "lo" {
                continue;
            }
            for a in iface["ip-addresses"].as_array().into_iter().flatten() {
                if a["ip-address-type"] == "ipv4"
                    && let Some(ip) = a["ip-address"].as_str()
                {
                    out.push(ip.to_string());
                }
            }
        }
        out
    }

    /// Reads a small file from the guest; None if it does not exist.
    pub async fn read_file(&self, path: &str) -> Result<Option<String>, LibvirtError> {
        let handle = match self
            .command(
                json!({"execute": "guest-file-open", "arguments": {"path": path, "mode": "r"}}),
            )
            .await
        {
            Ok(h) => h,
            Err(LibvirtError::Call(m))
                if m.contains("No such file") || m.contains("failed to open") =>
            {
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        let read = self.command(json!({"execute": "guest-file-read", "arguments": {"handle": handle, "count": 65536}})).await;
        let _ = self
            .command(json!({"execute": "guest-file-close", "arguments": {"handle": handle}}))
            .await;
        let data = read?["buf-b64"].as_str().unwrap_or_default().to_string();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(data)
            .unwrap_or_default();
        Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
    }

    /// Runs a program in the guest and returns (exit code, stdout), waiting up to `wait`.
    pub async fn exec(
        &self,
        path: &str,
        args: &[&str],
        wait: Duration,
    ) -> Result<(i64, String), LibvirtError> {
        let started = self
            .command(json!({"execute": "guest-exec", "arguments": {"path": path, "arg": args, "capture-output": true}}))
            .await?;
        let pid = started["pid"].clone();
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let status = self
                .command(json!({"execute": "guest-exec-status", "arguments": {"pid": pid}}))
                .await?;
            if status["exited"] == true {
                let out = status["out-data"].as_str().unwrap_or_default();
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(out)
                    .unwrap_or_default();
                return Ok((
                    status["exitcode"].as_i64().unwrap_or(-1),
                    String::from_utf8_lossy(&bytes).into_owned(),
                ));
            }
            if tokio::time::Instant::now() > deadline {
                return Err(LibvirtError::Call(format!(
                    "{path} did not finish in the guest within {wait:?}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The compose services of a project, from `docker ps` inside the guest.
    pub async fn services(&self, project: &str) -> Vec<ServiceStatus> {
        let filter = format!("label=com.docker.compose.project={project}");
        let format = "{{.Label \"com.docker.compose.service\"}}\t{{.State}}\t{{.Status}}";
        let args = ["ps", "-a", "--filter", filter.as_str(), "--format", format];
        match self
            .exec("/usr/bin/docker", &args, Duration::from_secs(10))
            .await
        {
            Ok((0, out)) => parse_services(&out),
            _ => Vec::new(),
        }
    }
}

/// Parses `service\tstate\tstatus` lines; health comes from the status text.
pub fn parse_services(out: &str) -> Vec<ServiceStatus> {
    let mut v: Vec<ServiceStatus> = out
        .lines()
        .filter_map(|l| {
            let mut parts = l.split('\t');
            let name = parts.next()?.trim().to_string();
            let state = parts.next()?.trim().to_string();
            let status = parts.next().unwrap_or_default();
            if name.is_empty() {
                return None;
            }
            let health = if status.contains("(healthy)") {
                "healthy"
            } else if status.contains("(unhealthy)") {
                "unhealthy"
            } else if status.contains("(health: starting)") {
                "starting"
            } else {
                ""
            };
            Some(ServiceStatus {
                name,
                state,
                health: health.to_string(),
            })
        })
        .collect();
    v.sort_by(|a, b| a.name.cmp(&b.name));
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_ps_lines_become_service_states() {
        let out = "web\trunning\tUp 3 minutes\ndb\trunning\tUp 4 minutes (healthy)\njob\texited\tExited (0) 1 minute ago\n";
        let s = parse_services(out);
        assert_eq!(s.len(), 3);
        assert_eq!(
            (s[0].name.as_str(), s[0].health.as_str()),
            ("db", "healthy")
        );
        assert_eq!((s[1].name.as_str(), s[1].state.as_str()), ("job", "exited"));
        assert_eq!(s[2].health, "");
    }
}
