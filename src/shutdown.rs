//! [`Shutdown`]: the one way to ask a long-running part of Paperboy to stop, shared by the
//! engine ([`Engine::shutdown_handle`](crate::engine::Engine::shutdown_handle)), the PHQ
//! consumer ([`phq::Consumer::stop_handle`](crate::phq::Consumer::stop_handle)) and the
//! `paperboy` CLI.

use std::sync::Arc;

use tokio::sync::watch;
use tracing::{info, warn};

/// A request to stop: cheap to clone (clones share it), and once asked for it stays
/// asked for. Whoever runs the work waits on [`Shutdown::wait`]; anyone holding a clone
/// calls [`Shutdown::shutdown`], or lets signals do it ([`Shutdown::on_signals`]).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let stop = paperboy::Shutdown::new();
/// let worker = {
///     let stop = stop.clone();
///     tokio::spawn(async move { stop.wait().await; "stopped" })
/// };
/// stop.shutdown();
/// assert!(stop.is_shutdown());
/// assert_eq!(worker.await.unwrap(), "stopped");
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Shutdown {
    tx: Arc<watch::Sender<bool>>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Shutdown::new()
    }
}

impl Shutdown {
    /// A request not yet made.
    pub fn new() -> Self {
        Shutdown {
            tx: Arc::new(watch::channel(false).0),
        }
    }

    /// Asks for the stop (again is harmless).
    pub fn shutdown(&self) {
        self.tx.send_replace(true);
    }

    /// Whether the stop was asked for.
    pub fn is_shutdown(&self) -> bool {
        *self.tx.borrow()
    }

    /// Resolves once the stop is asked for (at once if it was). Cancel-safe: dropping it
    /// loses nothing.
    pub async fn wait(&self) {
        let mut rx = self.tx.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }

    /// Asks for the stop on SIGINT, SIGTERM or SIGHUP (Ctrl-C off Unix). Later signals
    /// are logged, not obeyed (the work is already stopping). The listening task ends
    /// once every clone of this `Shutdown` is dropped; Tokio keeps its handlers installed
    /// for the life of the process, so from then on those signals no longer terminate it
    /// by default.
    ///
    /// # Errors
    /// When the signal handlers cannot be installed (a runtime without its I/O driver).
    ///
    /// # Panics
    /// Outside a Tokio runtime.
    pub fn on_signals(&self) -> std::io::Result<()> {
        self.listen(false)
    }

    /// As [`Shutdown::on_signals`], for command-line tools: a second signal exits the
    /// process at once (status 130) instead of waiting for the clean stop.
    ///
    /// # Errors
    /// As [`Shutdown::on_signals`].
    pub fn on_signals_exit_on_second(&self) -> std::io::Result<()> {
        self.listen(true)
    }

    fn listen(&self, exit_on_second: bool) -> std::io::Result<()> {
        let mut signals = Signals::new()?;
        let tx = Arc::downgrade(&self.tx);
        tokio::spawn(async move {
            loop {
                let name = signals.next().await;
                let Some(tx) = tx.upgrade() else { return };
                if !tx.send_replace(true) {
                    info!("{name} received: stopping");
                } else if exit_on_second {
                    eprintln!("paperboy: second signal: exiting without cleaning up");
                    std::process::exit(130);
                } else {
                    warn!("{name} received: already stopping");
                }
            }
        });
        Ok(())
    }
}

/// SIGINT, SIGTERM and SIGHUP (Ctrl-C elsewhere).
pub(crate) struct Signals {
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    pub(crate) fn new() -> std::io::Result<Signals> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(Signals {
                int: signal(SignalKind::interrupt())?,
                term: signal(SignalKind::terminate())?,
                hup: signal(SignalKind::hangup())?,
            })
        }
        #[cfg(not(unix))]
        Ok(Signals {})
    }

    /// The next signal's name.
    pub(crate) async fn next(&mut self) -> &'static str {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.int.recv() => "SIGINT",
                _ = self.term.recv() => "SIGTERM",
                _ = self.hup.recv() => "SIGHUP",
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            "Ctrl-C"
        }
    }
}
