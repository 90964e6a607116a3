//! The batching writer: the request path hands records to a channel; one thread persists
//! them in batches, then observes them (metrics, REPORT lines).
//!
//! The thread runs at normal priority. At a lower one it fell behind whenever requests
//! kept both cores busy: records waited in memory (a SIGKILL lost 0.4 s of them at 20,000
//! requests a second) and, under sustained load, the queue had no bound. Persisting is
//! work every request causes; it gets its share of the CPU as it happens.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::InvocationRecord;

/// Why a batch was not written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SinkError {
    /// The store cannot be reached (down, restarting, network cut): the batch waits in
    /// memory and is written when it answers again.
    #[error("the store is unreachable: {0}")]
    Unavailable(String),
    /// The store refused the batch: it is retried a few times, then given up and logged.
    #[error("{0}")]
    Failed(String),
}

impl From<String> for SinkError {
    fn from(message: String) -> SinkError {
        SinkError::Failed(message)
    }
}

/// Where batches of records are persisted (the control-plane store implements this).
pub trait RecordSink: Send + 'static {
    /// Writes all records of one batch, atomically if the backend can. Writing a batch
    /// again after a failure must not count its records twice.
    fn write_batch(&mut self, records: &[InvocationRecord]) -> Result<(), SinkError>;
}

impl RecordSink for Box<dyn RecordSink> {
    fn write_batch(&mut self, records: &[InvocationRecord]) -> Result<(), SinkError> {
        (**self).write_batch(records)
    }
}

enum Message {
    Record(Box<InvocationRecord>),
    Flush(mpsc::SyncSender<()>),
    Shutdown,
}

/// Counters of records the store has not taken yet, readable from any thread.
#[derive(Debug, Default)]
pub struct MeterStats {
    /// Records waiting in memory for the store.
    pub backlog: AtomicU64,
    /// Records dropped because the backlog was full, or given up after repeated refusals.
    pub lost: AtomicU64,
}

/// The request path's side of the writer: cloning it is cheap, sending never blocks.
#[derive(Clone)]
pub struct MeterHandle {
    tx: Sender<Message>,
    stats: Arc<MeterStats>,
}

impl MeterHandle {
    /// Queues one record; it is observed and persisted on the writer thread.
    pub fn record(&self, record: InvocationRecord) {
        if self.tx.send(Message::Record(Box::new(record))).is_err() {
            tracing::error!("invocation record dropped: the meter writer has stopped");
        }
    }

    /// Blocks until every record queued before this call is persisted (or, while the store
    /// is unreachable, until one attempt to write them was made).
    pub fn flush(&self) {
        let (ack_tx, ack_rx) = mpsc::sync_channel(1);
        if self.tx.send(Message::Flush(ack_tx)).is_ok() {
            _ = ack_rx.recv();
        }
    }

    /// Records waiting for the store, and records lost.
    pub fn stats(&self) -> &MeterStats {
        &self.stats
    }
}

/// The writer thread and its handle.
pub struct MeterWriter {
    handle: MeterHandle,
    thread: JoinHandle<u64>,
}

/// Records written per batch at most.
const MAX_BATCH: usize = 1024;
/// How long a partial batch waits before it is written.
const FLUSH_INTERVAL: Duration = Duration::from_millis(50);
/// How often the writer looks for new records.
const POLL_INTERVAL: Duration = Duration::from_millis(5);
/// Attempts to write a batch the store refuses before it is given up (and logged).
const WRITE_ATTEMPTS: u32 = 5;
/// The first wait before a failed batch is tried again; it doubles up to the maximum.
const FIRST_RETRY: Duration = Duration::from_millis(50);
/// The longest wait between attempts while the store is unreachable.
const MAX_RETRY: Duration = Duration::from_secs(1);
/// Records kept in memory while the store is unreachable, at most (about 1 KiB each with
/// short output: some 200 MiB). Beyond it new records are dropped, counted and logged:
/// serving requests matters more than metering them, and memory must stay bounded.
pub const MAX_BACKLOG: usize = 200_000;
/// How long a shutdown keeps trying an unreachable store before it gives up the backlog.
const SHUTDOWN_PATIENCE: Duration = Duration::from_secs(10);

impl MeterWriter {
    /// Starts the writer thread. `observe` sees every record once, after it is persisted.
    pub fn spawn(
        sink: impl RecordSink,
        observe: impl FnMut(&InvocationRecord) + Send + 'static,
    ) -> MeterWriter {
        let (tx, rx) = mpsc::channel();
        let stats = Arc::new(MeterStats::default());
        let thread_stats = stats.clone();
        let thread = std::thread::Builder::new()
            .name("runway-meter".into())
            .spawn(move || {
                let mut backlog = Backlog::new(sink, observe, thread_stats);
                run(rx, &mut backlog)
            })
            .expect("spawning the meter writer thread");
        MeterWriter {
            handle: MeterHandle { tx, stats },
            thread,
        }
    }

    /// A handle for the request path.
    pub fn handle(&self) -> MeterHandle {
        self.handle.clone()
    }

    /// Writes everything queued so far, stops the thread and returns how many records it
    /// persisted in its lifetime. Call after the last request has finished.
    pub fn shutdown(self) -> u64 {
        _ = self.handle.tx.send(Message::Shutdown);
        self.thread.join().unwrap_or(0)
    }
}

/// Batches waiting for the store, oldest first, written in order.
struct Backlog<S, O> {
    sink: S,
    observe: O,
    stats: Arc<MeterStats>,
    batches: VecDeque<Vec<InvocationRecord>>,
    records: usize,
    /// Failed attempts at the oldest batch.
    attempts: u32,
    delay: Duration,
    retry_at: Option<Instant>,
    unreachable_since: Option<Instant>,
    written: u64,
    last_drop_warning: Option<Instant>,
}

impl<S: RecordSink, O: FnMut(&InvocationRecord)> Backlog<S, O> {
    fn new(sink: S, observe: O, stats: Arc<MeterStats>) -> Backlog<S, O> {
        Backlog {
            sink,
            observe,
            stats,
            batches: VecDeque::new(),
            records: 0,
            attempts: 0,
            delay: FIRST_RETRY,
            retry_at: None,
            unreachable_since: None,
            written: 0,
            last_drop_warning: None,
        }
    }

    /// Whether one more record fits in memory beside `pending` unqueued ones.
    fn has_room(&mut self, pending: usize) -> bool {
        if self.records + pending < MAX_BACKLOG {
            return true;
        }
        self.stats.lost.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        if self
            .last_drop_warning
            .is_none_or(|at| now.duration_since(at) >= Duration::from_secs(10))
        {
            self.last_drop_warning = Some(now);
            tracing::error!(
                backlog = self.records,
                lost = self.stats.lost.load(Ordering::Relaxed),
                "the store has been unreachable long enough to fill the meter's backlog; new \
                 invocation records are dropped until it answers"
            );
        }
        false
    }

    fn push(&mut self, batch: Vec<InvocationRecord>) {
        if batch.is_empty() {
            return;
        }
        self.records += batch.len();
        self.stats
            .backlog
            .store(self.records as u64, Ordering::Relaxed);
        self.batches.push_back(batch);
    }

    /// Writes waiting batches in order until one fails or none is left; `force` ignores the
    /// retry delay.
    fn write(&mut self, force: bool) {
        while let Some(batch) = self.batches.front() {
            if !force && self.retry_at.is_some_and(|at| Instant::now() < at) {
                return;
            }
            match self.sink.write_batch(batch) {
                Ok(()) => {
                    let batch = self.batches.pop_front().expect("front exists");
                    if let Some(since) = self.unreachable_since.take() {
                        tracing::info!(
                            after_ms = since.elapsed().as_millis() as u64,
                            backlog = self.records,
                            "the store answers again: writing the records that waited"
                        );
                    }
                    self.done(batch.len());
                    for record in &batch {
                        (self.observe)(record);
                    }
                }
                Err(SinkError::Unavailable(error)) => {
                    if self.unreachable_since.is_none() {
                        self.unreachable_since = Some(Instant::now());
                        tracing::warn!(%error, "the store is unreachable: invocation records wait in memory (at most {MAX_BACKLOG})");
                    }
                    self.wait_longer();
                    return;
                }
                Err(SinkError::Failed(error)) => {
                    self.attempts += 1;
                    if self.attempts < WRITE_ATTEMPTS {
                        tracing::warn!(%error, attempt = self.attempts, records = batch.len(), "writing invocation records failed; retrying");
                        self.wait_longer();
                        return;
                    }
                    tracing::error!(%error, records = batch.len(), "writing invocation records failed; these records are lost");
                    let batch = self.batches.pop_front().expect("front exists");
                    self.stats
                        .lost
                        .fetch_add(batch.len() as u64, Ordering::Relaxed);
                    self.done(0);
                    self.records -= batch.len();
                    self.stats
                        .backlog
                        .store(self.records as u64, Ordering::Relaxed);
                }
            }
        }
    }

    fn done(&mut self, written: usize) {
        self.written += written as u64;
        self.records -= written;
        self.stats
            .backlog
            .store(self.records as u64, Ordering::Relaxed);
        self.attempts = 0;
        self.delay = FIRST_RETRY;
        self.retry_at = None;
    }

    fn wait_longer(&mut self) {
        self.retry_at = Some(Instant::now() + self.delay);
        self.delay = (self.delay * 2).min(MAX_RETRY);
    }

    /// For a flush: writes every waiting batch now, retrying refusals as usual, but gives up
    /// at once while the store is unreachable (the backlog keeps the records).
    fn write_now(&mut self) {
        loop {
            self.write(true);
            if self.batches.is_empty() || self.unreachable_since.is_some() {
                return;
            }
            if let Some(at) = self.retry_at {
                std::thread::sleep(at.saturating_duration_since(Instant::now()));
            }
        }
    }

    /// At shutdown: keeps trying for a while, then reports what could not be written.
    fn drain(&mut self) {
        let deadline = Instant::now() + SHUTDOWN_PATIENCE;
        loop {
            self.write(false);
            if self.batches.is_empty() {
                return;
            }
            if Instant::now() >= deadline {
                tracing::error!(
                    records = self.records,
                    "the store did not take these invocation records before shutdown; they are lost"
                );
                self.stats
                    .lost
                    .fetch_add(self.records as u64, Ordering::Relaxed);
                return;
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }
}

fn run<S: RecordSink, O: FnMut(&InvocationRecord)>(
    rx: Receiver<Message>,
    backlog: &mut Backlog<S, O>,
) -> u64 {
    let mut batch: Vec<InvocationRecord> = Vec::with_capacity(MAX_BATCH);
    let mut oldest: Option<Instant> = None;
    // Records are persisted first and observed (metrics, REPORT lines) after: a slow log
    // consumer must never hold records in memory, where a SIGKILL would lose them.
    loop {
        // Drain without blocking: a sender only pays for a queue push, never for waking
        // this thread, so the request path makes no system call per record.
        loop {
            match rx.try_recv() {
                Ok(Message::Record(record)) => {
                    if !backlog.has_room(batch.len()) {
                        continue;
                    }
                    batch.push(*record);
                    oldest.get_or_insert_with(Instant::now);
                    if batch.len() >= MAX_BATCH {
                        backlog.push(std::mem::replace(&mut batch, Vec::with_capacity(MAX_BATCH)));
                        backlog.write(false);
                        oldest = None;
                    }
                }
                Ok(Message::Flush(ack)) => {
                    backlog.push(std::mem::take(&mut batch));
                    backlog.write_now();
                    oldest = None;
                    _ = ack.send(());
                }
                Ok(Message::Shutdown) | Err(TryRecvError::Disconnected) => {
                    // Records queued by requests that finished after the shutdown message.
                    while let Ok(message) = rx.try_recv() {
                        if let Message::Record(record) = message {
                            batch.push(*record);
                        }
                    }
                    backlog.push(std::mem::take(&mut batch));
                    backlog.drain();
                    return backlog.written;
                }
                Err(TryRecvError::Empty) => break,
            }
        }
        if oldest.is_some_and(|t| t.elapsed() >= FLUSH_INTERVAL) {
            backlog.push(std::mem::replace(&mut batch, Vec::with_capacity(MAX_BATCH)));
            oldest = None;
        }
        backlog.write(false);
        std::thread::sleep(POLL_INTERVAL);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::{InvocationStatus, PicoUsd};

    struct VecSink(Arc<Mutex<Vec<String>>>, u32);

    impl RecordSink for VecSink {
        fn write_batch(&mut self, records: &[InvocationRecord]) -> Result<(), SinkError> {
            if self.1 > 0 {
                self.1 -= 1;
                return Err(SinkError::Failed("disk full".into()));
            }
            let mut out = self.0.lock().unwrap();
            out.extend(records.iter().map(|r| r.request_id.clone()));
            Ok(())
        }
    }

    fn record(id: usize) -> InvocationRecord {
        InvocationRecord {
            cpu_throttled_us: 0,
            concurrency: 1,
            request_id: format!("r{id}"),
            environment: "prod".into(),
            function: "f".into(),
            release: 1,
            started_at_ms: 0,
            duration_us: 1,
            billed_ms: 1,
            memory_mb: 128,
            max_memory_bytes: 0,
            instantiate_us: 0,
            status: InvocationStatus::Ok,
            http_status: 200,
            gb_seconds: 0.0,
            cost: PicoUsd(0),
            stdout: Vec::new(),
            stderr: Vec::new(),
            error: None,
        }
    }

    #[test]
    fn shutdown_persists_every_queued_record_in_order() {
        let written = Arc::new(Mutex::new(Vec::new()));
        let observed = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = observed.clone();
        let writer = MeterWriter::spawn(VecSink(written.clone(), 0), move |_| {
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        });
        let handle = writer.handle();
        for i in 0..3000 {
            handle.record(record(i));
        }
        assert_eq!(writer.shutdown(), 3000);
        assert_eq!(observed.load(std::sync::atomic::Ordering::Relaxed), 3000);
        let written = written.lock().unwrap();
        assert_eq!(written.len(), 3000);
        assert_eq!(written[2999], "r2999");
    }

    #[test]
    fn persists_a_record_before_observing_it() {
        let written = Arc::new(Mutex::new(Vec::new()));
        let seen = written.clone();
        let unpersisted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = unpersisted.clone();
        // A slow log consumer (observe) must not keep records out of the store.
        let writer = MeterWriter::spawn(VecSink(written, 0), move |record| {
            if !seen.lock().unwrap().contains(&record.request_id) {
                count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        });
        for i in 0..100 {
            writer.handle().record(record(i));
        }
        assert_eq!(writer.shutdown(), 100);
        assert_eq!(unpersisted.load(std::sync::atomic::Ordering::Relaxed), 0);
    }

    #[test]
    fn retries_a_failing_batch() {
        let written = Arc::new(Mutex::new(Vec::new()));
        let writer = MeterWriter::spawn(VecSink(written.clone(), 2), |_| {});
        writer.handle().record(record(1));
        writer.handle().flush();
        assert_eq!(written.lock().unwrap().as_slice(), ["r1"]);
        writer.shutdown();
    }

    /// A store that is down for a number of attempts, then answers.
    struct DownSink(Arc<Mutex<Vec<String>>>, Arc<std::sync::atomic::AtomicU32>);

    impl RecordSink for DownSink {
        fn write_batch(&mut self, records: &[InvocationRecord]) -> Result<(), SinkError> {
            if self.1.load(Ordering::Relaxed) > 0 {
                self.1.fetch_sub(1, Ordering::Relaxed);
                return Err(SinkError::Unavailable("connection refused".into()));
            }
            self.0
                .lock()
                .unwrap()
                .extend(records.iter().map(|r| r.request_id.clone()));
            Ok(())
        }
    }

    #[test]
    fn records_wait_for_an_unreachable_store_and_are_written_once_in_order() {
        let written = Arc::new(Mutex::new(Vec::new()));
        let down = Arc::new(std::sync::atomic::AtomicU32::new(u32::MAX));
        let writer = MeterWriter::spawn(DownSink(written.clone(), down.clone()), |_| {});
        let handle = writer.handle();
        for i in 0..2500 {
            handle.record(record(i));
        }
        handle.flush();
        assert!(written.lock().unwrap().is_empty());
        assert_eq!(handle.stats().backlog.load(Ordering::Relaxed), 2500);
        // More than the five attempts a refused batch gets: waiting is not refusing.
        down.store(0, Ordering::Relaxed);
        handle.flush();
        let ids = written.lock().unwrap().clone();
        assert_eq!(ids.len(), 2500);
        assert_eq!(ids[0], "r0");
        assert_eq!(ids[2499], "r2499");
        assert_eq!(handle.stats().backlog.load(Ordering::Relaxed), 0);
        assert_eq!(handle.stats().lost.load(Ordering::Relaxed), 0);
        assert_eq!(writer.shutdown(), 2500);
    }

    #[test]
    fn a_batch_the_store_keeps_refusing_is_given_up_and_counted() {
        let written = Arc::new(Mutex::new(Vec::new()));
        let writer = MeterWriter::spawn(VecSink(written, 100), |_| {});
        writer.handle().record(record(1));
        for _ in 0..WRITE_ATTEMPTS {
            writer.handle().flush();
        }
        assert_eq!(writer.handle().stats().lost.load(Ordering::Relaxed), 1);
        writer.shutdown();
    }
}
