//! The request budget (`queued.max.request.bytes`) through a real broker on loopback: a frame holds its announced
//! size from its prefix until its response is written; while the budget is exhausted other connections wait (are
//! neither answered nor closed); once bytes are given back they are answered, and the count returns to zero — no
//! permit leaks on any path (a frame cut short, a response written, a connection closed).
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed step is the test failing

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use sluice_broker::config::{Config, ConfigOverrides};
use sluice_broker::server::{self, Broker};

const BUDGET_SIZE: usize = 2 << 20;

fn start(name: &str) -> Broker {
    let directory = std::env::temp_dir().join(format!("sluice-connections-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&directory);
    let overrides = ConfigOverrides {
        listen: Some("127.0.0.1:0".into()),
        data_dir: Some(directory),
        shard_count: Some(2),
        ..Default::default()
    };
    let text =
        format!("\"socket.request.max.bytes\" = {BUDGET_SIZE}\n\"queued.max.request.bytes\" = {BUDGET_SIZE}");
    server::start(Config::from_toml(&text, &overrides).unwrap()).unwrap()
}

/// ApiVersions v0 (api key 18, version 0, correlation id 7, client id "t"), framed.
fn api_versions_frame() -> Vec<u8> {
    let body: Vec<u8> =
        [&18i16.to_be_bytes()[..], &0i16.to_be_bytes(), &7i32.to_be_bytes(), &1i16.to_be_bytes(), b"t"]
            .concat();
    [&(body.len() as i32).to_be_bytes()[..], &body].concat()
}

/// Reads one response frame and returns its correlation id.
fn read_response(stream: &mut TcpStream) -> std::io::Result<i32> {
    let mut size = [0u8; 4];
    stream.read_exact(&mut size)?;
    let mut frame = vec![0u8; i32::from_be_bytes(size) as usize];
    stream.read_exact(&mut frame)?;
    Ok(i32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]))
}

fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn exhausted_budget_holds_requests_back_until_bytes_are_released() {
    let broker = start("budget");
    let limits = broker.connections.clone();
    // A frame the size of the whole budget, half sent: it holds all of it.
    let mut holder = TcpStream::connect(broker.address).unwrap();
    holder.write_all(&(BUDGET_SIZE as i32).to_be_bytes()).unwrap();
    holder.write_all(&vec![0u8; BUDGET_SIZE / 2]).unwrap();
    wait_for("the holder's reservation", || limits.request_bytes_in_flight() == BUDGET_SIZE);
    // Four connections, so that both shards have waiters: none is answered, none is closed.
    let mut waiting: Vec<TcpStream> = (0..4).map(|_| TcpStream::connect(broker.address).unwrap()).collect();
    for stream in &mut waiting {
        stream.write_all(&api_versions_frame()).unwrap();
        stream.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    }
    for stream in &mut waiting {
        let mut byte = [0u8; 1];
        let error = stream.read(&mut byte).expect_err("answered or closed while the budget was exhausted");
        assert!(matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut), "{error}");
    }
    assert_eq!(limits.request_bytes_in_flight(), BUDGET_SIZE);
    // The holder goes: its frame is cut short, its bytes come back, and every waiter is answered.
    drop(holder);
    for stream in &mut waiting {
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        assert_eq!(read_response(stream).unwrap(), 7);
        stream.write_all(&api_versions_frame()).unwrap();
        assert_eq!(read_response(stream).unwrap(), 7);
    }
    wait_for("every permit back", || limits.request_bytes_in_flight() == 0);
    assert_eq!(limits.connection_count(), 4);
    drop(waiting);
    wait_for("every connection slot back", || limits.connection_count() == 0);
    broker.stop();
    broker.join();
}
