//! Accepting connections for the gateway and the admin API alike: a cap on open connections
//! per listener, a timeout on connections that send no complete request, back-off on
//! accept errors with rate-limited warnings, and a graceful drain at shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// How a listener treats its connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Connections open at once; further clients wait in the kernel's backlog.
    pub max_connections: usize,
    /// How long a connection may go without a complete request head: a keep-alive
    /// connection idle between requests, or a client sending its headers slowly. (hyper
    /// runs one timer for both, from the moment it waits for a request.)
    pub idle_timeout: Duration,
}

/// The first pause after an accept error that means the node is out of a resource.
const FIRST_BACKOFF: Duration = Duration::from_millis(10);
/// The longest pause between accept attempts while out of a resource.
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// At most one warning per listener this often; the ones between are counted in it.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// Back-off and rate-limited warnings for a listener's accept errors.
struct AcceptErrors {
    what: &'static str,
    backoff: Duration,
    last_warning: Option<Instant>,
    unreported: u64,
}

impl AcceptErrors {
    fn new(what: &'static str) -> AcceptErrors {
        AcceptErrors {
            what,
            backoff: FIRST_BACKOFF,
            last_warning: None,
            unreported: 0,
        }
    }

    /// Records a failed accept and returns how long to wait before the next one.
    fn failed(&mut self, err: &std::io::Error) -> Duration {
        self.unreported += 1;
        let now = Instant::now();
        if self
            .last_warning
            .is_none_or(|at| now.duration_since(at) >= WARN_EVERY)
        {
            tracing::warn!(
                listener = self.what,
                error = %err,
                failures = self.unreported,
                "accepting connections is failing; backing off (raise the descriptor limit or \
                 lower --max-connections)"
            );
            self.last_warning = Some(now);
            self.unreported = 0;
        }
        // Out of descriptors or memory: retrying at once would spin. A connection that
        // failed on its own (reset before accept) is no reason to wait.
        let resource = matches!(
            err.raw_os_error(),
            Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
        );
        if !resource {
            return Duration::ZERO;
        }
        let wait = self.backoff;
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        wait
    }

    fn succeeded(&mut self) {
        self.backoff = FIRST_BACKOFF;
    }
}

/// Serves HTTP/1 connections from `listener` with the service `make(peer)` builds for each,
/// until `stop` is cancelled; then waits (up to the drain timeout) for open connections to
/// finish their requests.
pub(crate) async fn serve<S, M>(
    listener: TcpListener,
    what: &'static str,
    limits: ConnectionLimits,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
    make: M,
) where
    M: Fn(SocketAddr) -> S,
    S: hyper::service::HttpService<Incoming> + Send + 'static,
    S::Future: Send + 'static,
    S::ResBody: Send + 'static,
    <S::ResBody as http_body::Body>::Data: Send,
    <S::ResBody as http_body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.idle_timeout);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let open = metrics.open_connections.with_label_values(&[what]);
    let accept_errors = metrics.accept_errors.with_label_values(&[what]);
    let mut errors = AcceptErrors::new(what);
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
            () = stop.cancelled() => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => {
                    errors.succeeded();
                    accepted
                }
                Err(err) => {
                    accept_errors.inc();
                    let wait = errors.failed(&err);
                    if !wait.is_zero() {
                        tokio::select! {
                            () = tokio::time::sleep(wait) => {}
                            () = stop.cancelled() => break,
                        }
                    }
                    continue;
                }
            },
            () = stop.cancelled() => break,
        };
        _ = stream.set_nodelay(true);
        let connection = http.serve_connection(TokioIo::new(stream), make(peer));
        let connection = graceful.watch(connection);
        let open = open.clone();
        open.inc();
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(error = %err, "connection ended with an error");
            }
            open.dec();
            drop(slot);
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(crate::DRAIN_TIMEOUT) => {
            tracing::warn!(listener = what, "connections still open after the drain timeout; closing them");
        }
    }
}

/// Raises this process's soft limit on open files to its hard limit, so the connection caps
/// are what bounds connections; returns the limit now in force.
pub fn raise_descriptor_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed by reference.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 1024;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                return raised.rlim_cur;
            }
        }
    }
    limit.rlim_cur
}

/// Descriptors kept back from the connection caps for databases, artifacts, compiled code
/// and outbound requests.
const RESERVED_DESCRIPTORS: u64 = 128;

/// The caps to use under a descriptor limit: as configured when they fit, else shared out
/// in proportion so the listeners together leave [`RESERVED_DESCRIPTORS`] free.
pub fn fit_to_descriptors(gateway: usize, admin: usize, descriptors: u64) -> (usize, usize) {
    let available = descriptors.saturating_sub(RESERVED_DESCRIPTORS).max(16) as usize;
    let wanted = gateway + admin;
    if wanted <= available {
        return (gateway, admin);
    }
    let admin_share = (admin * available / wanted).max(4);
    (available.saturating_sub(admin_share).max(8), admin_share)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backs_off_only_when_out_of_a_resource_and_warns_rarely() {
        let mut errors = AcceptErrors::new("gateway");
        let emfile = std::io::Error::from_raw_os_error(libc::EMFILE);
        let waits: Vec<Duration> = (0..10).map(|_| errors.failed(&emfile)).collect();
        assert_eq!(waits[0], FIRST_BACKOFF);
        assert_eq!(waits[1], FIRST_BACKOFF * 2);
        assert_eq!(*waits.last().unwrap(), MAX_BACKOFF);
        // One warning went out; the nine failures after it wait for the next one.
        assert_eq!(errors.unreported, 9);
        errors.succeeded();
        assert_eq!(errors.backoff, FIRST_BACKOFF);
        let reset = std::io::Error::from_raw_os_error(libc::ECONNABORTED);
        assert_eq!(errors.failed(&reset), Duration::ZERO);
    }

    #[test]
    fn caps_fit_under_the_descriptor_limit() {
        assert_eq!(fit_to_descriptors(10_000, 256, 1 << 20), (10_000, 256));
        let (gateway, admin) = fit_to_descriptors(10_000, 256, 1024);
        assert!(gateway + admin <= 1024 - 128, "{gateway} + {admin}");
        assert!(admin >= 4 && gateway > admin);
    }
}
