//! Calls to the active controller from any node: blocking, on the controller threads (never on a shard). Each call
//! opens a connection to the voter believed to lead, follows NOT_CONTROLLER redirections, tries the other voters
//! when one does not answer, and gives up at its deadline with a sentence saying so.

use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicI32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use super::wire::{read_frame, write_frame, ControlRequest, ControlResponse, Frame};
use super::MetadataCell;

/// The voters' controller addresses, and which one leads as far as this node knows.
#[derive(Debug)]
pub struct ControllerClient {
    voters: Vec<(i32, String)>,
    /// The voter that last answered as controller (-1: unknown).
    leader_hint: AtomicI32,
    correlation: AtomicU64,
    /// Where the next call without a hint starts, kept across calls: a voter that just failed is not asked first
    /// again (a hung voter costs each call its whole timeout).
    cursor: AtomicUsize,
    /// A voter's own view of the quorum's leader (its `MetadataCell`): fresher than any answer when the last
    /// controller stopped answering.
    local: OnceLock<Arc<MetadataCell>>,
}

/// How long one connection attempt may take: loopback or a LAN answers in far less.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// How long one voter may take to answer, at most (and never past the call's deadline).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);
/// The least time a voter is given, even close to the deadline.
const ATTEMPT_TIME_MIN: Duration = Duration::from_millis(50);
/// Pause after every voter failed to answer, before trying them all again.
const ROUND_PAUSE: Duration = Duration::from_millis(100);

impl ControllerClient {
    pub fn new(voters: Vec<(i32, String)>) -> ControllerClient {
        ControllerClient {
            voters,
            leader_hint: AtomicI32::new(-1),
            correlation: AtomicU64::new(1),
            cursor: AtomicUsize::new(0),
            local: OnceLock::new(),
        }
    }

    /// A voter: calls without a hint go first to the leader its own quorum node knows.
    pub fn use_local_view(&self, cell: Arc<MetadataCell>) {
        let _ = self.local.set(cell);
    }

    /// The next voter to try without a hint: the local quorum's leader (unless it just failed), else the next in
    /// turn.
    fn next_target(&self, failed: Option<i32>) -> Option<i32> {
        let local =
            self.local.get().and_then(|cell| cell.latest().1).filter(|leader| Some(*leader) != failed);
        if let Some(leader) = local.filter(|leader| self.voters.iter().any(|(id, _)| id == leader)) {
            return Some(leader);
        }
        let count = self.voters.len();
        for _ in 0..count {
            let index = self.cursor.fetch_add(1, Ordering::Relaxed) % count;
            let id = self.voters[index].0;
            if Some(id) != failed || count == 1 {
                return Some(id);
            }
        }
        None
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
        let mut failed: Option<i32> = None;
        // The voter that last did not answer at all: a redirection to it (the others may not have noticed yet
        // that it hangs) is not followed within this call.
        let mut silent: Option<i32> = None;
        let mut attempts = 0usize;
        let mut last_error;
        loop {
            let target = match self.leader_hint() {
                Some(leader) => leader,
                None => match self.next_target(silent.or(failed)) {
                    Some(target) => target,
                    None => return Err("controller.quorum.voters is empty".into()),
                },
            };
            attempts += 1;
            match self.call_one(target, request, deadline, extra_wait) {
                Ok(ControlResponse::NotController { leader }) => {
                    last_error = format!("node {target} is not the active controller");
                    self.set_leader_hint(
                        leader.filter(|leader| *leader != target && Some(*leader) != silent),
                    );
                    failed = Some(target);
                }
                Ok(response) => {
                    self.set_leader_hint(Some(target));
                    return Ok(response);
                }
                Err(error) => {
                    last_error = format!("controller {target}: {error}");
                    self.set_leader_hint(None);
                    failed = Some(target);
                    silent = Some(target);
                }
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "no active controller answered within {} ms ({last_error})",
                    timeout.as_millis()
                ));
            }
            if self.leader_hint().is_none() && attempts.is_multiple_of(self.voters.len().max(1)) {
                std::thread::sleep(ROUND_PAUSE.min(deadline.saturating_duration_since(Instant::now())));
            }
        }
    }

    /// One attempt at `target`, bounded by the call's `deadline` (plus the responder's own `extra_wait`).
    fn call_one(
        &self,
        target: i32,
        request: &ControlRequest,
        deadline: Instant,
        extra_wait: Duration,
    ) -> Result<ControlResponse, String> {
        let Some((_, address)) = self.voters.iter().find(|(id, _)| *id == target) else {
            return Err(format!("node {target} is not in controller.quorum.voters"));
        };
        // With other voters to try, one attempt takes at most half of what is left: a hung voter (SIGSTOP: the
        // kernel still accepts) leaves time for the next one within the same call.
        let left = deadline.saturating_duration_since(Instant::now());
        let left = if self.voters.len() > 1 { left / 2 } else { left }.max(ATTEMPT_TIME_MIN);
        let socket = resolve(address)?;
        let mut stream = TcpStream::connect_timeout(&socket, CONNECT_TIMEOUT.min(left))
            .map_err(|error| error.to_string())?;
        let _ = stream.set_nodelay(true);
        stream
            .set_read_timeout(Some(ANSWER_TIMEOUT.min(left) + extra_wait))
            .and_then(|()| stream.set_write_timeout(Some(ANSWER_TIMEOUT.min(left))))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::wire::QuorumState;
    use std::net::TcpListener;

    /// A voter that accepts connections and never answers (a SIGSTOPped process: the kernel still accepts).
    fn hung_voter() -> (TcpListener, String) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        (listener, address)
    }

    /// A voter that answers every request as the active controller.
    fn answering_voter() -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            for stream in listener.incoming().take(16) {
                let mut stream = stream.unwrap();
                if let Ok(Some(Frame::Request { correlation, .. })) = read_frame(&mut stream) {
                    let state = QuorumState { leader: 2, term: 1, commit_index: 1, voters: Vec::new() };
                    let response = ControlResponse::Quorum(state);
                    write_frame(&mut stream, &Frame::Response { correlation, response }).unwrap();
                }
            }
        });
        address
    }

    // A hung voter costs a call no more than its deadline, and the next voter answers within it; the next call
    // goes straight to the voter that answered. (Before, every attempt waited 5 s whatever the deadline, and every
    // call without a hint began with the first voter again: heartbeats missed a new controller's sessions.)
    #[test]
    fn a_hung_voter_costs_no_more_than_the_deadline() {
        let (_hung, hung_address) = hung_voter();
        let client = ControllerClient::new(vec![(1, hung_address), (2, answering_voter())]);
        let started = Instant::now();
        let answer = client.call(&ControlRequest::DescribeQuorum, Duration::from_secs(3), Duration::ZERO);
        assert!(matches!(answer, Ok(ControlResponse::Quorum(_))), "{answer:?}");
        assert_eq!(client.leader_hint(), Some(2));
        let only_hung = ControllerClient::new(vec![(1, hung_voter().1)]);
        let started_alone = Instant::now();
        let refused =
            only_hung.call(&ControlRequest::DescribeQuorum, Duration::from_millis(500), Duration::ZERO);
        assert!(refused.is_err());
        // Bounds far above the deadlines (a loaded machine), far below the old 5 s per attempt.
        assert!(started_alone.elapsed() < Duration::from_millis(4_000), "{:?}", started_alone.elapsed());
        assert!(started.elapsed() < Duration::from_secs(20));
    }
}
