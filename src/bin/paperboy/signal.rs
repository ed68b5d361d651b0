//! SIGINT and SIGTERM for the commands: the first asks for a clean stop, the second
//! exits at once.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;

/// Set by the first SIGINT/SIGTERM; the second exits the process at once.
pub(crate) struct StopSignal {
    stopped: AtomicBool,
    notify: Notify,
}

impl StopSignal {
    pub(crate) fn install() -> Result<Arc<StopSignal>, String> {
        let stop = Arc::new(StopSignal {
            stopped: AtomicBool::new(false),
            notify: Notify::new(),
        });
        let mut signals = Signals::new()?;
        let s = stop.clone();
        tokio::spawn(async move {
            signals.next().await;
            s.stopped.store(true, Ordering::Release);
            s.notify.notify_waiters();
            signals.next().await;
            eprintln!("paperboy: second signal: exiting without cleaning up");
            std::process::exit(130);
        });
        Ok(stop)
    }

    pub(crate) fn is_set(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }

    /// Resolves once a signal came (at once if one already did).
    pub(crate) async fn wait(&self) {
        let notified = self.notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if self.is_set() {
            return;
        }
        notified.await;
    }
}

/// SIGINT and SIGTERM (Ctrl-C elsewhere).
struct Signals {
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> Result<Signals, String> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(Signals {
                int: signal(SignalKind::interrupt()).map_err(|e| format!("SIGINT: {e}"))?,
                term: signal(SignalKind::terminate()).map_err(|e| format!("SIGTERM: {e}"))?,
            })
        }
        #[cfg(not(unix))]
        Ok(Signals {})
    }

    async fn next(&mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.int.recv() => {}
            _ = self.term.recv() => {}
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}
