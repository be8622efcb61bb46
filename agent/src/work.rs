//! The environments this agent runs (filled in by the environments layer).

use std::sync::Mutex;

use metrom_protocol::messages::agent::AgentMessage;
use metrom_protocol::messages::env::EnvReport;
use tokio::sync::mpsc;

/// The agent's environments and the channel to report on them.
#[derive(Default)]
pub struct Work {
    reporter: Mutex<Option<mpsc::Sender<AgentMessage>>>,
}

impl Work {
    /// Every environment, as reported in Hello.
    pub fn reports(&self) -> Vec<EnvReport> {
        Vec::new()
    }

    /// A session started: reports go to it.
    pub fn attach(&self, tx: mpsc::Sender<AgentMessage>) {
        *self.reporter.lock().expect("reporter lock") = Some(tx);
    }

    /// The session ended.
    pub fn detach(&self) {
        *self.reporter.lock().expect("reporter lock") = None;
    }

    /// Answers one command stream from the controller.
    pub async fn serve_command(&self, mut send: quinn::SendStream, _recv: quinn::RecvStream) {
        let _ = send.reset(metrom_protocol::close::PROTOCOL);
    }
}
