//! `sluice-floor`: the latency floor. A Kafka-speaking server that does the least a durable broker must do for a
//! Produce with acks=all — append the request's record bytes to a file with direct I/O and fdatasync them before it
//! answers — and nothing else: no indexes, no validation (not even CRCs), no cache, no offsets beyond a counter, no
//! Fetch. Run `sluice-bench` against it and against Sluice under the same load, and Sluice's publish latency over
//! the floor's is what Sluice's own work costs (issue 17).
//!
//! Threads, not glommio: one writer thread per core owns that core's file (`<data-dir>/core-<i>.log`) and runs the
//! group commit (`journal`); each connection has a blocking reader thread that decodes requests (`answer`) and hands
//! them to its core's writer over a bounded channel, cores dealt round-robin. Blocking `pwrite` and `fdatasync` on a
//! thread of their own are what a group commit needs and nothing more; the cost over a thread-per-core reactor is a
//! futex wake per request and one per round, a few microseconds against an fdatasync's hundreds — and it keeps the
//! floor a few hundred lines with no runtime to configure. All replies, Produce or not, go out through the core's
//! writer after the round's sync, so a connection's answers keep their request order.

pub mod answer;
pub mod journal;

use std::io::{self, BufReader, Read};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use bytes::Bytes;

use answer::{answer, FloorState};
use journal::{run_committer, Journal, JournalStats, Reply, Submission};

/// Largest request frame accepted: sluice-bench's requests are at most `--request-size-max` (4 MiB by default) plus
/// headers; 64 MiB leaves room and still stops a garbage length from allocating gigabytes.
const FRAME_SIZE_MAX: usize = 64 << 20;
/// Submissions queued per core before connection readers block: a few per connection in flight is the normal case.
const QUEUE_COUNT_MAX: usize = 256;
/// Connections served at once; more are closed on accept.
const CONNECTION_COUNT_MAX: usize = 1024;
/// Every this often the floor prints each core's requests, syncs and bytes, when they moved.
const STATS_INTERVAL: Duration = Duration::from_secs(10);

pub struct FloorConfig {
    pub data_dir: PathBuf,
    pub core_count: usize,
}

/// One core: its writer's queue, its offset counter, its counters.
struct Core {
    submissions: SyncSender<Submission>,
    offsets: AtomicI64,
    stats: Arc<JournalStats>,
}

/// Creates each core's file and writer thread, then accepts connections on `listener` for as long as it lives.
pub fn serve(listener: &TcpListener, config: &FloorConfig) -> io::Result<()> {
    let local = listener.local_addr()?;
    let state = Arc::new(FloorState::new(local.ip().to_string(), i32::from(local.port())));
    std::fs::create_dir_all(&config.data_dir)?;
    let mut cores = Vec::new();
    for index in 0..config.core_count.max(1) {
        cores.push(Arc::new(start_core(&config.data_dir, index)?));
    }
    let stats: Vec<Arc<JournalStats>> = cores.iter().map(|core| Arc::clone(&core.stats)).collect();
    thread::Builder::new().name("floor-stats".into()).spawn(move || print_stats(&stats))?;
    let live = Arc::new(AtomicUsize::new(0));
    let mut next_core = 0usize;
    for stream in listener.incoming() {
        let stream = match stream {
            Ok(stream) => stream,
            Err(error) => {
                // Out of descriptors or a connection reset before accept: the listener itself is fine.
                eprintln!("sluice-floor: accept: {error}");
                thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        if live.load(Ordering::Relaxed) >= CONNECTION_COUNT_MAX {
            eprintln!("sluice-floor: {CONNECTION_COUNT_MAX} connections already; closing a new one");
            continue;
        }
        let core = Arc::clone(&cores[next_core % cores.len()]);
        next_core += 1;
        let state = Arc::clone(&state);
        let live_here = Arc::clone(&live);
        live.fetch_add(1, Ordering::Relaxed);
        thread::Builder::new().name("floor-connection".into()).spawn(move || {
            if let Err(error) = serve_connection(stream, &core, &state) {
                eprintln!("sluice-floor: connection closed: {error}");
            }
            live_here.fetch_sub(1, Ordering::Relaxed);
        })?;
    }
    Ok(())
}

fn start_core(data_dir: &Path, index: usize) -> io::Result<Core> {
    let journal = Journal::create(&data_dir.join(format!("core-{index}.log")))?;
    let (submissions, receiver) = sync_channel(QUEUE_COUNT_MAX);
    let stats = Arc::new(JournalStats::default());
    let writer_stats = Arc::clone(&stats);
    thread::Builder::new().name(format!("floor-core-{index}")).spawn(move || {
        if let Err(error) = run_committer(journal, &receiver, &writer_stats) {
            // Answering without writing would make the floor a lie: stop the process.
            eprintln!("sluice-floor: core {index}: write or sync failed: {error}");
            std::process::exit(1);
        }
    })?;
    Ok(Core { submissions, offsets: AtomicI64::new(0), stats })
}

/// Reads request frames until the client closes, answering each through the core's writer.
fn serve_connection(
    stream: TcpStream,
    core: &Core,
    state: &FloorState,
) -> Result<(), Box<dyn std::error::Error>> {
    // Replies are small and latency is the point, as on sluice-bench's own sockets.
    stream.set_nodelay(true)?;
    let write_half = Arc::new(stream.try_clone()?);
    let mut reader = BufReader::with_capacity(256 << 10, stream);
    loop {
        let mut size_bytes = [0u8; 4];
        match reader.read_exact(&mut size_bytes) {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(error) => return Err(error.into()),
        }
        let size = usize::try_from(i32::from_be_bytes(size_bytes)).unwrap_or(usize::MAX);
        if size > FRAME_SIZE_MAX {
            return Err(format!("request frame of {size} bytes exceeds {FRAME_SIZE_MAX}").into());
        }
        let mut frame = Vec::with_capacity(size);
        (&mut reader).take(size as u64).read_to_end(&mut frame)?;
        if frame.len() != size {
            return Ok(()); // closed mid-frame
        }
        let answer = answer(Bytes::from(frame), state, &core.offsets)?;
        let reply = answer.reply.map(|frame| Reply { stream: Arc::clone(&write_half), frame });
        core.submissions.send(Submission { records: answer.records, reply })?;
    }
}

fn print_stats(stats: &[Arc<JournalStats>]) {
    let mut previous = vec![(0u64, 0u64, 0u64); stats.len()];
    loop {
        thread::sleep(STATS_INTERVAL);
        for (index, (core, last)) in stats.iter().zip(previous.iter_mut()).enumerate() {
            let now = (
                core.submission_count.load(Ordering::Relaxed),
                core.sync_count.load(Ordering::Relaxed),
                core.record_size.load(Ordering::Relaxed),
            );
            if now != *last {
                let syncs = (now.1 - last.1).max(1);
                eprintln!(
                    "sluice-floor: core {index}: {} requests, {} fdatasyncs ({:.1} requests and {:.1} KB each), {:.1} MB/s",
                    now.0 - last.0,
                    now.1 - last.1,
                    (now.0 - last.0) as f64 / syncs as f64,
                    (now.2 - last.2) as f64 / syncs as f64 / 1e3,
                    (now.2 - last.2) as f64 / STATS_INTERVAL.as_secs_f64() / 1e6
                );
                *last = now;
            }
        }
    }
}
