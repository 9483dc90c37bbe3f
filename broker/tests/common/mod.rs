//! What the process-level tests share: a raw Kafka client, one request at a time over a blocking socket, that
//! checks the correlation id and that the response decodes whole.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};

/// A broker of two shards on a free loopback port over a fresh data directory (`<temp>/sluice-<name>-<pid>`),
/// configured by `config` (TOML) over the defaults; the directory is the caller's to remove.
pub fn start_broker(name: &str, config: &str) -> (sluice_broker::server::Broker, std::path::PathBuf) {
    let directory = std::env::temp_dir().join(format!("sluice-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&directory);
    let overrides = sluice_broker::config::ConfigOverrides {
        listen: Some("127.0.0.1:0".into()),
        data_dir: Some(directory.clone()),
        shard_count: Some(2),
        ..Default::default()
    };
    let config = sluice_broker::config::Config::from_toml(config, &overrides).unwrap();
    (sluice_broker::server::start(config).unwrap(), directory)
}

pub struct Client {
    stream: TcpStream,
    correlation_id: i32,
}

impl Client {
    /// Connects to `address`; a response not read within `read_timeout` fails the test.
    pub fn connect(address: SocketAddr, read_timeout: Duration) -> Client {
        let stream = TcpStream::connect(address).unwrap();
        stream.set_read_timeout(Some(read_timeout)).unwrap();
        Client { stream, correlation_id: 0 }
    }

    pub fn call<R: Request + Encodable>(&mut self, request: &R, version: i16) -> R::Response {
        self.correlation_id += 1;
        let mut buffer = BytesMut::new();
        let mut header = RequestHeader::default();
        header.request_api_key = R::KEY;
        header.request_api_version = version;
        header.correlation_id = self.correlation_id;
        header.client_id = Some(StrBytes::from_static_str("sluice-test"));
        header.encode(&mut buffer, R::header_version(version)).unwrap();
        request.encode(&mut buffer, version).unwrap();
        let mut message = (buffer.len() as i32).to_be_bytes().to_vec();
        message.extend_from_slice(&buffer);
        self.stream.write_all(&message).unwrap();
        let mut size = [0u8; 4];
        self.stream
            .read_exact(&mut size)
            .unwrap_or_else(|error| panic!("API {} v{version}: {error}", R::KEY));
        let mut frame = vec![0u8; i32::from_be_bytes(size) as usize];
        self.stream.read_exact(&mut frame).unwrap();
        let mut frame = Bytes::from(frame);
        let header_version = <R::Response as HeaderVersion>::header_version(version);
        let response_header = ResponseHeader::decode(&mut frame, header_version).unwrap();
        assert_eq!(response_header.correlation_id, self.correlation_id);
        let response = R::Response::decode(&mut frame, version)
            .unwrap_or_else(|error| panic!("API {} v{version}: response does not decode: {error}", R::KEY));
        assert!(frame.is_empty(), "API {} v{version}: {} trailing bytes", R::KEY, frame.len());
        response
    }
}
