//! Test support: start the real server in-process on `127.0.0.1:0`.
//!
//! Integration tests (and other crates' tests) use [`TestServer`] so that every test talks to the same code
//! the binary runs, over real sockets, with its own port, data directory, metrics and shutdown token.

use std::net::SocketAddr;
use std::path::Path;

use anyhow::Context as _;
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::server;
use crate::state::AppState;

/// A running in-process server. Dropping it cancels the server (without waiting); call
/// [`TestServer::shutdown`] to wait for the drain.
pub struct TestServer {
    /// The bound address (a real port on 127.0.0.1).
    pub addr: SocketAddr,
    /// Cancelling it starts the graceful shutdown.
    pub shutdown: CancellationToken,
    /// The state the server runs with: configuration, metrics, health registry, services.
    pub state: AppState,
    handle: Option<JoinHandle<anyhow::Result<()>>>,
    /// The temporary data directory, when the server created it (removed on drop).
    data_dir: Option<TempDir>,
}

impl std::fmt::Debug for TestServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestServer")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl TestServer {
    /// Starts with [`Config::for_test`] in a fresh temporary data directory.
    pub async fn start_default() -> anyhow::Result<TestServer> {
        Self::start_with(|_| {}).await
    }

    /// Starts with [`Config::for_test`] in a fresh temporary data directory, adjusted by `adjust`.
    pub async fn start_with(adjust: impl FnOnce(&mut Config)) -> anyhow::Result<TestServer> {
        let data_dir =
            tempfile::tempdir().context("failed to create a temporary data directory")?;
        let mut config = Config::for_test(data_dir.path());
        adjust(&mut config);
        let mut server = Self::start(config).await?;
        server.data_dir = Some(data_dir);
        Ok(server)
    }

    /// Starts with `config` as given (bind `config.http_addr`, normally `127.0.0.1:0`; use its data directory).
    pub async fn start(config: Config) -> anyhow::Result<TestServer> {
        let listener = TcpListener::bind(config.http_addr)
            .await
            .with_context(|| format!("failed to bind {}", config.http_addr))?;
        let addr = listener.local_addr()?;
        let shutdown = CancellationToken::new();
        let state = server::build_state(config, shutdown.clone(), TaskTracker::new()).await?;
        let handle = tokio::spawn(server::run_with_state(state.clone(), listener));
        Ok(TestServer {
            addr,
            shutdown,
            state,
            handle: Some(handle),
            data_dir: None,
        })
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn http_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// `ws://127.0.0.1:PORT{path}`.
    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.addr)
    }

    /// The data directory the server uses.
    pub fn data_dir(&self) -> &Path {
        &self.state.config.data_dir
    }

    /// Cancels the server and waits until it has drained and returned.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        self.stop().await
    }

    /// Like [`TestServer::shutdown`], but keeps the data directory, so a test can open what the server left.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        match self.handle.take() {
            Some(handle) => handle.await.context("server task panicked")?,
            None => Ok(()),
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A minimal one-page PDF whose page shows `lines` in Helvetica: used by tests to upload a real PDF.
/// Parentheses and backslashes in the lines are escaped as the PDF string syntax requires.
pub fn one_page_pdf(lines: &[&str]) -> Vec<u8> {
    let mut content = String::from("BT /F1 12 Tf 72 720 Td 14 TL\n");
    for line in lines {
        let escaped = line
            .replace('\\', "\\\\")
            .replace('(', "\\(")
            .replace(')', "\\)");
        content.push_str(&format!("({escaped}) Tj T*\n"));
    }
    content.push_str("ET\n");
    let objects = [
        "<< /Type /Catalog /Pages 2 0 R >>".to_owned(),
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_owned(),
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 5 0 R >> >> /Contents 4 0 R >>"
            .to_owned(),
        format!("<< /Length {} >>\nstream\n{content}endstream", content.len()),
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>".to_owned(),
    ];
    let mut pdf = b"%PDF-1.4\n".to_vec();
    let mut offsets = Vec::new();
    for (index, object) in objects.iter().enumerate() {
        offsets.push(pdf.len());
        pdf.extend_from_slice(format!("{} 0 obj\n{object}\nendobj\n", index + 1).as_bytes());
    }
    let xref = pdf.len();
    pdf.extend_from_slice(
        format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1).as_bytes(),
    );
    for offset in offsets {
        pdf.extend_from_slice(format!("{offset:010} 00000 n \n").as_bytes());
    }
    pdf.extend_from_slice(
        format!(
            "trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n",
            objects.len() + 1
        )
        .as_bytes(),
    );
    pdf
}
