//! The batching writer: the request path hands records to a channel; one thread persists
//! them in batches, then observes them (metrics, REPORT lines).
//!
//! The thread runs at normal priority. At a lower one it fell behind whenever requests
//! kept both cores busy: records waited in memory (a SIGKILL lost 0.4 s of them at 20,000
//! requests a second) and, under sustained load, the queue had no bound. Persisting is
//! work every request causes; it gets its share of the CPU as it happens.

use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::InvocationRecord;

/// Where batches of records are persisted (the control-plane store implements this).
pub trait RecordSink: Send + 'static {
    /// Writes all records of one batch, atomically if the backend can.
    fn write_batch(&mut self, records: &[InvocationRecord]) -> Result<(), String>;
}

impl RecordSink for Box<dyn RecordSink> {
    fn write_batch(&mut self, records: &[InvocationRecord]) -> Result<(), String> {
        (**self).write_batch(records)
    }
}

enum Message {
    Record(Box<InvocationRecord>),
    Flush(mpsc::SyncSender<()>),
    Shutdown,
}

/// The request path's side of the writer: cloning it is cheap, sending never blocks.
#[derive(Clone)]
pub struct MeterHandle {
    tx: Sender<Message>,
}

impl MeterHandle {
    /// Queues one record; it is observed and persisted on the writer thread.
    pub fn record(&self, record: InvocationRecord) {
        if self.tx.send(Message::Record(Box::new(record))).is_err() {
            tracing::error!("invocation record dropped: the meter writer has stopped");
        }
    }

    /// Blocks until every record queued before this call is persisted.
    pub fn flush(&self) {
        let (ack_tx, ack_rx) = mpsc::sync_channel(1);
        if self.tx.send(Message::Flush(ack_tx)).is_ok() {
            _ = ack_rx.recv();
        }
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
/// Attempts to write one batch before it is given up (and logged).
const WRITE_ATTEMPTS: u32 = 5;

impl MeterWriter {
    /// Starts the writer thread. `observe` sees every record once, before it is persisted.
    pub fn spawn(
        sink: impl RecordSink,
        observe: impl FnMut(&InvocationRecord) + Send + 'static,
    ) -> MeterWriter {
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("runway-meter".into())
            .spawn(move || run(rx, sink, observe))
            .expect("spawning the meter writer thread");
        MeterWriter {
            handle: MeterHandle { tx },
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

fn run(
    rx: Receiver<Message>,
    mut sink: impl RecordSink,
    mut observe: impl FnMut(&InvocationRecord),
) -> u64 {
    let mut batch: Vec<InvocationRecord> = Vec::with_capacity(MAX_BATCH);
    let mut written = 0;
    let mut oldest: Option<Instant> = None;
    // Records are persisted first and observed (metrics, REPORT lines) after: a slow log
    // consumer must never hold records in memory, where a SIGKILL would lose them.
    let mut flush = |batch: &mut Vec<InvocationRecord>| {
        let count = persist(&mut sink, batch);
        for record in batch.drain(..) {
            observe(&record);
        }
        count
    };
    loop {
        // Drain without blocking: a sender only pays for a queue push, never for waking
        // this thread, so the request path makes no system call per record.
        loop {
            match rx.try_recv() {
                Ok(Message::Record(record)) => {
                    batch.push(*record);
                    oldest.get_or_insert_with(Instant::now);
                    if batch.len() >= MAX_BATCH {
                        written += flush(&mut batch);
                        oldest = None;
                    }
                }
                Ok(Message::Flush(ack)) => {
                    written += flush(&mut batch);
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
                    written += flush(&mut batch);
                    return written;
                }
                Err(TryRecvError::Empty) => break,
            }
        }
        if oldest.is_some_and(|t| t.elapsed() >= FLUSH_INTERVAL) {
            written += flush(&mut batch);
            oldest = None;
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// Writes a batch (retrying a few times); returns how many records were persisted. The
/// caller empties the batch.
fn persist(sink: &mut impl RecordSink, batch: &[InvocationRecord]) -> u64 {
    if batch.is_empty() {
        return 0;
    }
    let mut delay = Duration::from_millis(50);
    for attempt in 1..=WRITE_ATTEMPTS {
        match sink.write_batch(batch) {
            Ok(()) => return batch.len() as u64,
            Err(error) if attempt < WRITE_ATTEMPTS => {
                tracing::warn!(%error, attempt, records = batch.len(), "writing invocation records failed; retrying");
                std::thread::sleep(delay);
                delay *= 2;
            }
            Err(error) => {
                tracing::error!(%error, records = batch.len(), "writing invocation records failed; these records are lost");
            }
        }
    }
    0
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::{InvocationStatus, PicoUsd};

    struct VecSink(Arc<Mutex<Vec<String>>>, u32);

    impl RecordSink for VecSink {
        fn write_batch(&mut self, records: &[InvocationRecord]) -> Result<(), String> {
            if self.1 > 0 {
                self.1 -= 1;
                return Err("disk full".into());
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
}
