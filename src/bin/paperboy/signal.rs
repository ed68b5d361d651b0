//! SIGINT and SIGTERM for the commands, through the library's [`Shutdown`]: the first
//! asks for a clean stop, the second exits at once.

use std::sync::Arc;

use paperboy::Shutdown;

/// The commands' stop request.
pub(crate) struct StopSignal {
    shutdown: Shutdown,
}

impl StopSignal {
    pub(crate) fn install() -> Result<Arc<StopSignal>, String> {
        let shutdown = Shutdown::new();
        shutdown
            .on_signals_exit_on_second()
            .map_err(|e| format!("signal handlers: {e}"))?;
        Ok(Arc::new(StopSignal { shutdown }))
    }

    pub(crate) fn is_set(&self) -> bool {
        self.shutdown.is_shutdown()
    }

    /// Resolves once a signal came (at once if one already did).
    pub(crate) async fn wait(&self) {
        self.shutdown.wait().await
    }
}
