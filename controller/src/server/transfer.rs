//! Agent-initiated requests: streaming VM images and Docker image archives to
//! agents, each on its own stream, from any offset (so a broken transfer
//! resumes), optionally rate-limited.

use std::io::SeekFrom;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use metrom_protocol::codec;
use metrom_protocol::ids::HostId;
use metrom_protocol::messages::agent::{AgentRequest, ImageStreamHeader};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tracing::{debug, info, warn};

use crate::state::Controller;

const CHUNK: usize = 256 * 1024;
const MAX_REQUEST_FRAME: usize = 64 * 1024;

/// Accepts the agent's request streams until the connection ends.
pub(super) async fn serve(ctrl: std::sync::Arc<Controller>, conn: quinn::Connection, host: HostId) {
    while let Ok((send, recv)) = conn.accept_bi().await {
        let ctrl = ctrl.clone();
        let host = host.clone();
        tokio::spawn(async move { handle(&ctrl, &host, send, recv).await });
    }
}

async fn handle(
    ctrl: &Controller,
    host: &HostId,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) {
    let req = match codec::read_message::<AgentRequest, _>(&mut recv, MAX_REQUEST_FRAME).await {
        Ok(Some(r)) => r,
        Ok(None) => return,
        Err(e) => {
            warn!(host_id = %host, "bad request from the agent: {e}");
            let _ = send.reset(metrom_protocol::close::PROTOCOL);
            return;
        }
    };
    let (digest, offset, what) = match &req {
        AgentRequest::FetchImage { digest, offset } => (digest.clone(), *offset, "image"),
        AgentRequest::FetchDockerArchive { digest, offset } => {
            (digest.clone(), *offset, "docker archive")
        }
    };
    let found = match locate(ctrl, &req) {
        Some(p) => p,
        None => {
            let header = ImageStreamHeader::NotFound {
                reason: format!("the controller has no {what} with digest {digest}"),
            };
            let _ = codec::write_message(&mut send, &header, MAX_REQUEST_FRAME).await;
            let _ = send.finish();
            return;
        }
    };
    let started = Instant::now();
    match stream_file(ctrl, &mut send, &found, &digest, offset).await {
        Ok(sent) => {
            let _ = send.finish();
            info!(
                host_id = %host,
                "sent {what} {} ({} bytes from offset {offset}) in {:.1}s",
                short(&digest),
                sent,
                started.elapsed().as_secs_f64()
            );
        }
        Err(e) => debug!(host_id = %host, "{what} transfer ended: {e}"),
    }
}

/// The file behind a request, only if the digest is one the store knows.
fn locate(ctrl: &Controller, req: &AgentRequest) -> Option<PathBuf> {
    let digest = match req {
        AgentRequest::FetchImage { digest, .. } => {
            let images = ctrl.store.images.list().ok()?;
            images
                .iter()
                .find(|(_, i)| &i.digest == digest)?
                .1
                .digest
                .clone()
        }
        AgentRequest::FetchDockerArchive { digest, .. } => {
            let archives = ctrl.store.docker_archives.list().ok()?;
            archives
                .iter()
                .find(|(_, a)| &a.digest == digest)?
                .1
                .digest
                .clone()
        }
    };
    let path = crate::api::images::path_of(ctrl, &digest);
    path.exists().then_some(path)
}

async fn stream_file(
    ctrl: &Controller,
    send: &mut quinn::SendStream,
    path: &PathBuf,
    digest: &str,
    offset: u64,
) -> Result<u64, String> {
    let mut file = tokio::fs::File::open(path)
        .await
        .map_err(|e| e.to_string())?;
    let size = file.metadata().await.map_err(|e| e.to_string())?.len();
    let offset = offset.min(size);
    let header = ImageStreamHeader::Found {
        size,
        digest: digest.to_string(),
        offset,
    };
    codec::write_message(send, &header, MAX_REQUEST_FRAME)
        .await
        .map_err(|e| e.to_string())?;
    file.seek(SeekFrom::Start(offset))
        .await
        .map_err(|e| e.to_string())?;
    let rate = ctrl.config.transfer_rate_mib * 1024 * 1024;
    let started = Instant::now();
    let mut buf = vec![0u8; CHUNK];
    let mut sent = 0u64;
    loop {
        let n = file.read(&mut buf).await.map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        send.write_all(&buf[..n]).await.map_err(|e| e.to_string())?;
        sent += n as u64;
        if rate > 0 {
            // Hold the average at the configured rate.
            let due = Duration::from_secs_f64(sent as f64 / rate as f64);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                tokio::time::sleep(wait).await;
            }
        }
    }
    Ok(sent)
}

fn short(digest: &str) -> &str {
    &digest[..digest.len().min(19)]
}
