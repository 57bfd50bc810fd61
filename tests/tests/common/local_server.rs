//! `image-factory-local` run in-process on `127.0.0.1:0` for the HTTP-level tests, on a runtime
//! of its own in a background thread so the test thread can block on `curl` freely; stopped
//! gracefully on drop.

use std::sync::Arc;
use std::time::Duration;

use factory_local::{LocalServer, Options, RequestCounts};
use factory_pipeline::BuildStats;

/// What the server thread reports once it listens: its URL, its builder's counters and its
/// store and upstream request counters.
type Ready = Result<(String, Option<Arc<BuildStats>>, RequestCounts), String>;

#[derive(Debug)]
pub struct LocalServerThread {
    url: String,
    build_stats: Option<Arc<BuildStats>>,
    request_counts: RequestCounts,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl LocalServerThread {
    /// Starts the server with `options` on `127.0.0.1:0`; with `aws`, first checks that LocalStack
    /// answers (failing the test with instructions otherwise). Waits up to `ready_within` for it to
    /// listen.
    pub fn start(options: Options, aws: bool, ready_within: Duration) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        Self::start_on(listener, options, aws, ready_within)
    }

    /// As [`Self::start`], serving on `listener` (bound beforehand, e.g. to know the port for
    /// `options.external_url`).
    pub fn start_on(
        listener: std::net::TcpListener,
        options: Options,
        aws: bool,
        ready_within: Duration,
    ) -> Self {
        listener.set_nonblocking(true).expect("non-blocking listener");
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Ready>();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("tokio runtime");
            runtime.block_on(async move {
                if aws {
                    super::aws_config().await;
                }
                let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
                match LocalServer::prepare(options, listener).await {
                    Ok(server) => {
                        let _ = ready_tx.send(Ok((
                            server.url().to_owned(),
                            server.build_stats(),
                            server.request_counts(),
                        )));
                        let result = server.run(async {
                            let _ = stopped.await;
                        });
                        if let Err(e) = result.await {
                            panic!("server failed: {e}");
                        }
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.to_string()));
                    }
                }
            });
        });
        let (url, build_stats, request_counts) = match ready_rx.recv_timeout(ready_within) {
            Ok(Ok(ready)) => ready,
            Ok(Err(e)) => panic!("image-factory-local did not start: {e}"),
            // The thread panicked before reporting (e.g. LocalStack checks): show why.
            Err(_) => match thread.join() {
                Err(panic) => std::panic::resume_unwind(panic),
                Ok(()) => panic!("image-factory-local did not start within {ready_within:?}"),
            },
        };
        Self {
            url,
            build_stats,
            request_counts,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// The server's base URL (`http://127.0.0.1:PORT/`... as the server prints it).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The counters of the server's in-process builder (absent when the release catalog is off):
    /// `built()` is how many assets it assembled and published.
    pub fn build_stats(&self) -> Option<Arc<BuildStats>> {
        self.build_stats.clone()
    }

    /// How many requests the server made of its content store and of the upstream so far.
    #[allow(dead_code)] // Not every test binary looks.
    pub fn request_counts(&self) -> &RequestCounts {
        &self.request_counts
    }
}

impl Drop for LocalServerThread {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            // Don't turn a failing test's panic into an abort by panicking again.
            if thread.join().is_err() && !std::thread::panicking() {
                panic!("the server thread panicked");
            }
        }
    }
}
