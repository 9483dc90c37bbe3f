//! Calls to the active controller from any node: blocking, on the controller threads (never on a shard). Each call
//! opens a connection to the voter believed to lead, follows NOT_CONTROLLER redirections, tries the other voters
//! when one does not answer, and gives up at its deadline with a sentence saying so.

use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::wire::{read_frame, write_frame, ControlRequest, ControlResponse, Frame};

/// The voters' controller addresses, and which one leads as far as this node knows.
#[derive(Debug)]
pub struct ControllerClient {
    voters: Vec<(i32, String)>,
    /// The voter that last answered as controller (-1: unknown).
    leader_hint: AtomicI32,
    correlation: AtomicU64,
}

/// How long one connection attempt may take: loopback or a LAN answers in far less.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// Pause after every voter failed to answer, before trying them all again.
const ROUND_PAUSE: Duration = Duration::from_millis(100);

impl ControllerClient {
    pub fn new(voters: Vec<(i32, String)>) -> ControllerClient {
        ControllerClient { voters, leader_hint: AtomicI32::new(-1), correlation: AtomicU64::new(1) }
    }

    /// The active controller, as last seen.
    pub fn leader_hint(&self) -> Option<i32> {
        let hint = self.leader_hint.load(Ordering::Relaxed);
        (hint >= 0).then_some(hint)
    }

    pub fn set_leader_hint(&self, leader: Option<i32>) {
        self.leader_hint.store(leader.unwrap_or(-1), Ordering::Relaxed);
    }

    /// Sends `request` to the active controller and returns its answer; `Err` says why none came by `timeout`.
    /// `extra_wait` is how long the responder may hold the request (a metadata fetch's long poll).
    pub fn call(
        &self,
        request: &ControlRequest,
        timeout: Duration,
        extra_wait: Duration,
    ) -> Result<ControlResponse, String> {
        let deadline = Instant::now() + timeout;
        let mut next_voter = 0usize;
        let mut last_error;
        loop {
            let target = match self.leader_hint() {
                Some(leader) => leader,
                None => {
                    let Some((id, _)) = self.voters.get(next_voter % self.voters.len().max(1)) else {
                        return Err("controller.quorum.voters is empty".into());
                    };
                    next_voter += 1;
                    *id
                }
            };
            match self.call_one(target, request, extra_wait) {
                Ok(ControlResponse::NotController { leader }) => {
                    last_error = format!("node {target} is not the active controller");
                    self.set_leader_hint(leader.filter(|leader| *leader != target));
                }
                Ok(response) => {
                    self.set_leader_hint(Some(target));
                    return Ok(response);
                }
                Err(error) => {
                    last_error = format!("controller {target}: {error}");
                    self.set_leader_hint(None);
                }
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "no active controller answered within {} ms ({last_error})",
                    timeout.as_millis()
                ));
            }
            if self.leader_hint().is_none() && next_voter.is_multiple_of(self.voters.len().max(1)) {
                std::thread::sleep(ROUND_PAUSE);
            }
        }
    }

    fn call_one(
        &self,
        target: i32,
        request: &ControlRequest,
        extra_wait: Duration,
    ) -> Result<ControlResponse, String> {
        let Some((_, address)) = self.voters.iter().find(|(id, _)| *id == target) else {
            return Err(format!("node {target} is not in controller.quorum.voters"));
        };
        let socket = resolve(address)?;
        let mut stream =
            TcpStream::connect_timeout(&socket, CONNECT_TIMEOUT).map_err(|error| error.to_string())?;
        let _ = stream.set_nodelay(true);
        stream
            .set_read_timeout(Some(Duration::from_secs(5) + extra_wait))
            .and_then(|()| stream.set_write_timeout(Some(Duration::from_secs(5))))
            .map_err(|error| error.to_string())?;
        let correlation = self.correlation.fetch_add(1, Ordering::Relaxed);
        write_frame(&mut stream, &Frame::Request { correlation, request: request.clone() })
            .map_err(|error| error.to_string())?;
        match read_frame(&mut stream).map_err(|error| error.to_string())? {
            Some(Frame::Response { correlation: answered, response }) if answered == correlation => {
                Ok(response)
            }
            Some(other) => Err(format!("unexpected answer {other:?}")),
            None => Err("connection closed before the answer".into()),
        }
    }
}

pub fn resolve(address: &str) -> Result<SocketAddr, String> {
    address
        .to_socket_addrs()
        .map_err(|error| format!("cannot resolve {address}: {error}"))?
        .next()
        .ok_or_else(|| format!("{address} resolves to no address"))
}
