//! The optional Prometheus exporter: an HTTP endpoint while the command runs, and/or a file
//! with the text exposition when it ends.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// What [`install`] set up.
pub(crate) struct Exporter {
    handle: Option<PrometheusHandle>,
    file: Option<PathBuf>,
}

/// Installs the Prometheus recorder when either option is given. Must run inside the runtime.
pub(crate) fn install(
    listen: Option<SocketAddr>,
    file: Option<PathBuf>,
) -> anyhow::Result<Exporter> {
    if listen.is_none() && file.is_none() {
        return Ok(Exporter {
            handle: None,
            file: None,
        });
    }
    let mut builder = PrometheusBuilder::new();
    if let Some(addr) = listen {
        builder = builder.with_http_listener(addr);
    }
    let handle = if listen.is_some() {
        let (recorder, server) = builder
            .build()
            .context("building the Prometheus exporter")?;
        let handle = recorder.handle();
        tokio::spawn(async move {
            if let Err(e) = server.await {
                tracing::error!(error = ?e, "Prometheus listener stopped");
            }
        });
        metrics::set_global_recorder(recorder).context("installing the metrics recorder")?;
        eprintln!(
            "sealkit: serving metrics at http://{}/metrics",
            listen.unwrap_or_else(|| ([127, 0, 0, 1], 0).into())
        );
        handle
    } else {
        builder
            .install_recorder()
            .context("installing the metrics recorder")?
    };
    Ok(Exporter {
        handle: Some(handle),
        file,
    })
}

impl Exporter {
    /// Writes the exposition file, if one was asked for.
    pub(crate) fn finish(self) -> anyhow::Result<()> {
        if let (Some(handle), Some(path)) = (self.handle, self.file) {
            std::fs::write(&path, handle.render())
                .with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(())
    }
}
