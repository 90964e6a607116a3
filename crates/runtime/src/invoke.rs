//! One invocation: a fresh store and instance, the handler call, and its [`Outcome`].

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http_body::Body;
use http_body_util::BodyExt;
use runway_cap_config::ConfigHost;
use runway_cap_kv::KvHost;
use runway_cap_outbound::OutboundHooks;
use runway_cap_sql::SqlHost;
use wasmtime::component::ResourceTable;
use wasmtime::{Store, UpdateDeadline};
use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi_http::p2::bindings::http::types::ErrorCode;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpView};

pub use runway_meter::InvocationStatus as Status;

use crate::Runtime;
use crate::artifact::Prepared;
use crate::cpu::{CpuShare, CpuThrottle};
use crate::limits::MemoryLimiter;
use crate::output::CapturedOutput;
use crate::state::InstanceState;

/// The body of a function's response, streamed from the guest as it writes.
pub type ResponseBody = HyperOutgoingBody;

/// What one invocation may use.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Total linear memory, in bytes.
    pub memory_bytes: u64,
    /// Wall-clock time from the start of instantiation to the end of the handler.
    pub timeout: Duration,
    /// The only environment variables the guest sees.
    pub env: Arc<[(String, String)]>,
    /// What the release's policy lets it reach beyond HTTP.
    pub capabilities: Arc<Capabilities>,
    /// Its share of one core ([`CpuShare::for_memory`], or unthrottled).
    pub cpu: CpuShare,
}

/// A release's host capabilities, each already bound to the release's policy guard. A
/// missing capability refuses every call with a clear error.
#[derive(Clone, Default)]
pub struct Capabilities {
    /// `runway:platform/sql` on the environment's database.
    pub sql: Option<Arc<runway_cap_sql::FunctionSql>>,
    /// `wasi:keyvalue` on the environment's store.
    pub kv: Option<Arc<runway_cap_kv::FunctionKv>>,
    /// `wasi:config`: the function's configuration and granted secrets.
    pub config: Option<Arc<runway_cap_config::FunctionConfigAccess>>,
    /// `wasi:http/outgoing-handler` to granted origins.
    pub outbound: Option<Arc<runway_cap_outbound::FunctionOutbound>>,
}

impl std::fmt::Debug for Capabilities {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Capabilities")
            .field("sql", &self.sql.is_some())
            .field("kv", &self.kv.is_some())
            .field("config", &self.config.is_some())
            .field("outbound", &self.outbound.is_some())
            .finish()
    }
}

/// Everything measured about one invocation, returned exactly once per call.
#[derive(Debug)]
pub struct Outcome {
    /// Wall-clock time the invocation started.
    pub started_at: SystemTime,
    /// From the start of instantiation until the handler returned (or was stopped).
    pub duration: Duration,
    /// Store creation plus instantiation.
    pub instantiate: Duration,
    /// The instance's linear-memory high-water mark, in bytes.
    pub max_memory_bytes: u64,
    /// How it ended.
    pub status: Status,
    /// The status the caller saw (the guest's, or 500/504 when it produced none).
    pub http_status: u16,
    /// Why it failed, for the function's logs; never shown to the HTTP caller.
    pub error: Option<String>,
    /// Captured guest stdout.
    pub stdout: Vec<u8>,
    /// Captured guest stderr.
    pub stderr: Vec<u8>,
    /// Output bytes dropped past the capture limit.
    pub output_dropped: u64,
    /// Time the guest was paused for having used its CPU share.
    pub cpu_throttled: Duration,
}

/// An invocation that produced no response; its [`Outcome`] was still reported.
#[derive(Debug, Clone, Copy)]
pub struct FailedInvocation {
    /// How it ended.
    pub status: Status,
    /// The HTTP status to answer with: 504 after a timeout, 500 otherwise.
    pub http_status: u16,
}

/// The guest answered through `response-outparam.set` with an error code.
const GUEST_ERROR_CODE: u16 = u16::MAX;

/// The status recorded when the caller went away (nginx's "client closed request").
const CLIENT_GONE_STATUS: u16 = 499;

/// What the request side and the guest tell each other, in the one allocation per request.
struct Signals {
    /// The status the guest answered with (0 until it answers).
    answered: AtomicU16,
    /// Raised when the caller went away before the response was complete.
    client_gone: tokio::sync::Notify,
}

#[derive(Debug)]
struct TimedOut;

impl std::fmt::Display for TimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the function ran past its timeout")
    }
}

impl std::error::Error for TimedOut {}

impl Runtime {
    /// Runs one request in a fresh instance of `prepared`.
    ///
    /// Returns as soon as the guest has sent its response head; the body then streams while
    /// the guest keeps running. `on_done` receives the [`Outcome`] once the guest has
    /// finished, whether it succeeded or not, exactly once.
    pub async fn invoke<B>(
        &self,
        prepared: Arc<Prepared>,
        limits: Limits,
        request: hyper::Request<B>,
        on_done: impl FnOnce(Outcome) + Send + 'static,
    ) -> Result<hyper::Response<ResponseBody>, FailedInvocation>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<wasmtime_wasi_http::Error>,
    {
        let (response_tx, response_rx) = tokio::sync::oneshot::channel();
        let signals = Arc::new(Signals {
            answered: AtomicU16::new(0),
            client_gone: tokio::sync::Notify::new(),
        });
        let is_head = request.method() == hyper::Method::HEAD;
        let capture_limit = self.config.output_capture_bytes;
        // The guest runs inside the caller's task, not a spawned one: the connection task
        // drives it until the response head exists, then the response body drives it while
        // it streams. No cross-thread hand-off per request, and back-pressure is natural.
        let guest: GuestFuture = Box::pin({
            let signals = signals.clone();
            async move {
                let started_at = SystemTime::now();
                let start = Instant::now();
                let deadline = start + limits.timeout;
                let stdout = CapturedOutput::new(capture_limit);
                let stderr = CapturedOutput::new(capture_limit);
                let mut wasi = WasiCtxBuilder::new();
                wasi.stdout(stdout.clone())
                    .stderr(stderr.clone())
                    .allow_tcp(false)
                    .allow_udp(false)
                    .allow_ip_name_lookup(false);
                for (key, value) in limits.env.iter() {
                    wasi.env(key, value);
                }
                let capabilities = &limits.capabilities;
                let state = InstanceState {
                    wasi: wasi.build(),
                    http: WasiHttpCtx::new(),
                    table: ResourceTable::new(),
                    limiter: MemoryLimiter::new(limits.memory_bytes),
                    hooks: OutboundHooks::new(capabilities.outbound.clone()),
                    sql: SqlHost::new(capabilities.sql.clone(), deadline),
                    kv: KvHost::new(capabilities.kv.clone()),
                    config: ConfigHost::new(capabilities.config.clone()),
                    cpu: CpuThrottle::new(limits.cpu, start),
                };
                let mut store = Store::new(prepared.pre.engine(), state);
                store.limiter(|state| &mut state.limiter);
                store.set_epoch_deadline(1);
                store.epoch_deadline_callback(move |mut context| {
                    let now = Instant::now();
                    if now >= deadline {
                        Err(wasmtime::Error::new(TimedOut))
                    } else {
                        // Yield to the executor every tick so a busy guest never holds a
                        // worker thread away from other requests for more than ~1 ms.
                        // tokio's `yield_now` (unlike a bare self-wake) lets the worker poll
                        // for I/O first, so other connections are served while guests spin.
                        // A guest past its CPU quota sleeps to the end of the period instead.
                        let pause = context.data_mut().cpu.tick(now, deadline);
                        Ok(UpdateDeadline::YieldCustom(1, pause))
                    }
                });
                let mut instantiate = Duration::ZERO;
                let answered_by_guest = signals.clone();
                let run = async {
                    let proxy = prepared.pre.instantiate_async(&mut store).await?;
                    instantiate = start.elapsed();
                    let http = &mut store.data_mut().http();
                    let request = http.new_incoming_request(Scheme::Http, request)?;
                    let outparam = http.new_response_outparam_from_callback(move |result| {
                        let code = match &result {
                            Ok(response) => response.status().as_u16(),
                            Err(_) => GUEST_ERROR_CODE,
                        };
                        answered_by_guest.answered.store(code, Ordering::Release);
                        _ = response_tx.send(result);
                    })?;
                    proxy
                        .wasi_http_incoming_handler()
                        .call_handle(&mut store, request, outparam)
                        .await
                };
                // A caller that went away stops the guest: nobody reads what it computes,
                // and a flood of abandoned requests must not keep burning CPU.
                let result = tokio::select! {
                    result = tokio::time::timeout_at(deadline.into(), run) => Some(result),
                    () = signals.client_gone.notified() => None,
                };
                let duration = start.elapsed();
                let limiter = &store.data().limiter;
                let (mut status, mut error) = match result {
                    None => (
                        Status::ClientGone,
                        Some(
                            "the caller went away before the response was complete; the \
                             function was stopped"
                                .to_owned(),
                        ),
                    ),
                    Some(result) => ended(result, limiter, limits.memory_bytes),
                };
                let http_status = match signals.answered.load(Ordering::Acquire) {
                    _ if status == Status::ClientGone => CLIENT_GONE_STATUS,
                    0 => {
                        if status == Status::Ok {
                            status = Status::Error;
                            error = Some("the handler returned without sending a response".into());
                        }
                        if status == Status::Timeout { 504 } else { 500 }
                    }
                    GUEST_ERROR_CODE => {
                        if status == Status::Ok {
                            status = Status::Error;
                            error = Some("the handler answered with an error code".into());
                        }
                        500
                    }
                    code => code,
                };
                let max_memory_bytes = limiter.peak();
                let cpu_throttled = store.data().cpu.throttled();
                let (mut stdout, dropped_out) = stdout.take();
                let (mut stderr, dropped_err) = stderr.take();
                let revealed = store.data().config.revealed();
                if !revealed.is_empty() {
                    runway_cap_config::redact(&mut stdout, revealed);
                    runway_cap_config::redact(&mut stderr, revealed);
                    if let Some(text) = error.take() {
                        let mut bytes = text.into_bytes();
                        runway_cap_config::redact(&mut bytes, revealed);
                        error = Some(String::from_utf8_lossy(&bytes).into_owned());
                    }
                }
                on_done(Outcome {
                    started_at,
                    duration,
                    instantiate,
                    max_memory_bytes,
                    status,
                    http_status,
                    error,
                    stdout,
                    stderr,
                    output_dropped: dropped_out + dropped_err,
                    cpu_throttled,
                });
                FailedInvocation {
                    status,
                    http_status,
                }
            }
        });
        let mut response_rx = response_rx;
        let mut pending = PendingGuest {
            guest: Some(guest),
            signals: signals.clone(),
        };
        let mut outparam_dropped = false;
        let head = std::future::poll_fn(|cx| {
            if !outparam_dropped {
                match Pin::new(&mut response_rx).poll(cx) {
                    Poll::Ready(Ok(answer)) => return Poll::Ready(Head::Answered(answer)),
                    Poll::Ready(Err(_)) => outparam_dropped = true,
                    Poll::Pending => {}
                }
            }
            let running = pending.guest.as_mut().expect("polled until it finishes");
            match running.as_mut().poll(cx) {
                Poll::Ready(failed) => {
                    pending.guest = None;
                    Poll::Ready(match response_rx.try_recv() {
                        Ok(answer) => Head::Answered(answer),
                        Err(_) => Head::Finished(failed),
                    })
                }
                Poll::Pending => Poll::Pending,
            }
        })
        .await;
        let guest = pending.guest.take();
        match head {
            Head::Answered(Ok(response)) => Ok(response.map(|body| {
                DrivenBody {
                    body,
                    guest,
                    signals,
                    watch_client: !is_head,
                    finished: false,
                }
                .boxed_unsync()
            })),
            Head::Answered(Err(_guest_error_code)) => {
                if let Some(guest) = guest {
                    spawn_to_finish(guest);
                }
                Err(FailedInvocation {
                    status: Status::Error,
                    http_status: 500,
                })
            }
            Head::Finished(failed) => Err(failed),
        }
    }
}

/// How a guest that ran to its end (or its deadline) ended, and why it failed.
fn ended(
    result: Result<wasmtime::Result<()>, tokio::time::error::Elapsed>,
    limiter: &MemoryLimiter,
    memory_bytes: u64,
) -> (Status, Option<String>) {
    match result {
        Err(_elapsed) => (Status::Timeout, Some(TimedOut.to_string())),
        Ok(Err(err)) if err.downcast_ref::<TimedOut>().is_some() => {
            (Status::Timeout, Some(TimedOut.to_string()))
        }
        Ok(Err(err)) if limiter.refused() => (
            Status::OutOfMemory,
            Some(format!(
                "memory growth past the function's memory size ({memory_bytes} bytes) was \
                 refused, then: {err:#}"
            )),
        ),
        Ok(Err(err)) => (Status::Error, Some(format!("{err:#}"))),
        Ok(Ok(())) => (Status::Ok, None),
    }
}

type GuestFuture = Pin<Box<dyn Future<Output = FailedInvocation> + Send>>;

/// A guest that has not sent its response head yet, owned by the request's future.
///
/// If that future is dropped first (the caller disconnected while waiting), the guest is
/// told the caller is gone and moved to a task of its own, where it stops at once and
/// reports its outcome: every invocation that started is recorded and billed.
struct PendingGuest {
    guest: Option<GuestFuture>,
    signals: Arc<Signals>,
}

impl Drop for PendingGuest {
    fn drop(&mut self) {
        if let Some(guest) = self.guest.take() {
            self.signals.client_gone.notify_one();
            spawn_to_finish(guest);
        }
    }
}

/// Lets a guest run to its end on a task of its own (so its outcome is reported).
fn spawn_to_finish(guest: GuestFuture) {
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(guest);
    }
}

enum Head {
    Answered(Result<hyper::Response<ResponseBody>, ErrorCode>),
    Finished(FailedInvocation),
}

/// A response body that keeps running the guest that writes it.
///
/// If the body is dropped before the guest finishes, the guest moves to a task of its own so
/// its outcome is still reported. Dropped before its end (the caller went away mid-stream),
/// the guest is stopped as a gone caller's; dropped after it (a guest still working after
/// `finish`) or for a HEAD request (whose body is never sent), it runs on to its end.
struct DrivenBody {
    body: ResponseBody,
    guest: Option<GuestFuture>,
    signals: Arc<Signals>,
    /// False for HEAD, whose body hyper drops unread.
    watch_client: bool,
    /// The body reached its end.
    finished: bool,
}

impl http_body::Body for DrivenBody {
    type Data = Bytes;
    type Error = wasmtime_wasi_http::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        if let Some(guest) = self.guest.as_mut()
            && guest.as_mut().poll(cx).is_ready()
        {
            self.guest = None;
        }
        let frame = Pin::new(&mut self.body).poll_frame(cx);
        if let Poll::Ready(None | Some(Err(_))) = frame {
            self.finished = true;
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

impl Drop for DrivenBody {
    fn drop(&mut self) {
        if let Some(guest) = self.guest.take() {
            if self.watch_client && !self.finished && !self.body.is_end_stream() {
                self.signals.client_gone.notify_one();
            }
            spawn_to_finish(guest);
        }
    }
}
