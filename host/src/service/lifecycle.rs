//! What keeps a [`CascadeService`] current while it runs, apart from any transport: reload on
//! SIGHUP, reload when the config or a plugin file changes (`[server] watch`, cargo feature
//! `watch`), and the alert clock (every second: evaluate the fallback-rate alerts, deliver
//! transitions to the webhook with cargo feature `webhooks`). Plus the shutdown signal.
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use super::CascadeService;
use crate::error::ServiceError;

/// The service's background work; dropping it stops the work.
pub struct Background {
    tasks: Vec<JoinHandle<()>>,
    #[cfg(feature = "watch")]
    _watcher: Option<notify::RecommendedWatcher>,
}

impl Drop for Background {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl CascadeService {
    /// Starts the background work: SIGHUP reloads, the alert clock, and (with `[server]
    /// watch`, the default) reloads on file changes. A config made in code has no file to
    /// watch or re-read: no watcher then, and SIGHUP reloads are rejected (use
    /// [`CascadeService::reload_with`]). Must run inside a tokio runtime.
    pub fn run_background(self: &Arc<Self>) -> Result<Background, ServiceError> {
        let watch = self.current().config.server.watch && self.config_path().is_file();
        let mut tasks = vec![tokio::spawn(alert_loop(self.clone()))];
        // Registered before returning, so a SIGHUP sent once this returns reloads instead of
        // taking the default action (terminating the process).
        #[cfg(unix)]
        {
            let hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
            tasks.push(tokio::spawn(sighup_loop(self.clone(), hup)));
        }
        #[cfg(feature = "watch")]
        let _watcher = if watch {
            Some(watch::watch_files(self.clone()).map_err(|e| ServiceError::Watch(e.to_string()))?)
        } else {
            None
        };
        #[cfg(not(feature = "watch"))]
        if watch {
            tracing::warn!(
                "[server] watch is set but this build has no file watching (cargo feature `watch`); reload with SIGHUP"
            );
        }
        Ok(Background {
            tasks,
            #[cfg(feature = "watch")]
            _watcher,
        })
    }
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutdown requested: no new connections, finishing in-flight requests");
}

#[cfg(unix)]
async fn sighup_loop(service: Arc<CascadeService>, mut hup: tokio::signal::unix::Signal) {
    while hup.recv().await.is_some() {
        service.reload("sighup").await;
    }
}

async fn alert_loop(service: Arc<CascadeService>) {
    let webhook = service.alerts().config().webhook.clone();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        for event in service.evaluate_alerts() {
            if let Some(url) = &webhook {
                crate::alerts::deliver(url.clone(), event);
            }
        }
    }
}

#[cfg(feature = "watch")]
mod watch {
    use std::collections::BTreeSet;
    use std::path::{Path, PathBuf};
    use std::sync::Arc;
    use std::time::Duration;

    use super::CascadeService;

    /// Debounce for file-change reloads: editors and `cp` produce bursts of events.
    const WATCH_DEBOUNCE: Duration = Duration::from_millis(300);

    /// Paths whose change triggers a reload: the config, every tier's `.wasm` file and, for
    /// tiers with `signed_by`, the `.sig` of the plugin and of the model (a pipeline that
    /// writes the signature after the file gets a reload that sees both).
    fn watched_files(service: &CascadeService) -> BTreeSet<PathBuf> {
        let live = service.current();
        let mut files = BTreeSet::new();
        files.insert(absolute(service.config_path()));
        for tier in &live.config.tiers {
            let plugin = tier.plugin.file(&live.config.base_dir);
            if let Some(file) = &plugin {
                files.insert(absolute(file));
            }
            if !tier.signed_by.is_empty() {
                let model = tier.model.as_ref().map(|m| live.config.resolve(m));
                for file in plugin.iter().chain(&model) {
                    files.insert(absolute(&crate::signing::signature_path(file)));
                }
            }
        }
        files
    }

    fn absolute(path: &Path) -> PathBuf {
        std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
    }

    /// Watches the directories holding the config and plugins (editors and deploy tools replace
    /// files by rename, which a watch on the file itself would miss) and reloads on changes to
    /// the files of interest, debounced.
    pub(super) fn watch_files(
        service: Arc<CascadeService>,
    ) -> notify::Result<notify::RecommendedWatcher> {
        use notify::{RecursiveMode, Watcher};
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Vec<PathBuf>>();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                if let Ok(event) = event
                    && !matches!(event.kind, notify::EventKind::Access(_))
                {
                    let _ = tx.send(event.paths);
                }
            })?;
        let dirs: BTreeSet<PathBuf> = watched_files(&service)
            .iter()
            .filter_map(|f| f.parent().map(Path::to_path_buf))
            .collect();
        for dir in &dirs {
            watcher.watch(dir, RecursiveMode::NonRecursive)?;
        }
        tokio::spawn(async move {
            while let Some(paths) = rx.recv().await {
                let files = watched_files(&service);
                if !paths.iter().any(|p| files.contains(&absolute(p))) {
                    continue;
                }
                // Let the burst of events of one change settle, then reload once.
                tokio::time::sleep(WATCH_DEBOUNCE).await;
                while rx.try_recv().is_ok() {}
                service.reload("file-change").await;
            }
        });
        Ok(watcher)
    }
}
