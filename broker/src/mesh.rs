//! The shard mesh: the transport between the shards of one broker. Generic over the message types, so that it
//! knows nothing of partitions, topics or groups (those are [`crate::shard`]'s messages). Requests go out on one
//! glommio channel mesh and replies come back on a second, so that a full request channel can never block a
//! reply. Both are bounded (`shard.channel.capacity`). Messages carry `Bytes` for record data: only a reference
//! count crosses cores.
//!
//! One `Mesh` lives on every shard (created once both channel meshes are joined, dropped at shutdown). A request
//! gets an id; its sender keeps a oneshot for the reply in `pending` until the reply arrives or the caller gives
//! up (a reply for a caller that gave up is dropped).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::rc::Rc;

use glommio::channels::channel_mesh::{Receivers, Senders};
use glommio::channels::shared_channel::ConnectedReceiver;
use sluice_replication::ShardId;

use crate::sync::{oneshot, OneshotReceiver, OneshotSender};

/// A request or reply with the id the sender waits on.
#[derive(Debug)]
pub struct Envelope<T> {
    pub id: u64,
    pub from: ShardId,
    pub body: T,
}

/// Why a message could not travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MeshError {
    /// The channel to the target is closed (it is stopping).
    Closed,
    /// The target dropped the request without replying (its task ended).
    NoReply,
}

/// Where a served request's reply goes.
#[derive(Debug, Clone, Copy)]
pub struct ReplyTo {
    pub to: ShardId,
    pub id: u64,
}

pub struct Mesh<Request: Send + 'static, Reply: Send + 'static> {
    shard: ShardId,
    shard_count: usize,
    request_senders: Senders<Envelope<Request>>,
    reply_senders: Senders<Envelope<Reply>>,
    pending: RefCell<HashMap<u64, OneshotSender<Reply>>>,
    next_request_id: Cell<u64>,
}

impl<Request: Send + 'static, Reply: Send + 'static> Mesh<Request, Reply> {
    pub fn new(
        request_senders: Senders<Envelope<Request>>,
        reply_senders: Senders<Envelope<Reply>>,
    ) -> Mesh<Request, Reply> {
        let shard = ShardId(request_senders.peer_id());
        assert_eq!(shard.0, reply_senders.peer_id(), "both meshes joined by the same shard");
        Mesh {
            shard,
            shard_count: request_senders.nr_consumers(),
            request_senders,
            reply_senders,
            pending: RefCell::new(HashMap::new()),
            next_request_id: Cell::new(1),
        }
    }

    pub fn shard(&self) -> ShardId {
        self.shard
    }

    pub fn shard_count(&self) -> usize {
        self.shard_count
    }

    /// Sends `request` to shard `target`; returns, once it is queued, the receiver of its reply.
    pub async fn send(&self, target: ShardId, request: Request) -> Result<OneshotReceiver<Reply>, MeshError> {
        assert_ne!(target, self.shard, "local requests do not cross the mesh");
        assert!(target.0 < self.shard_count, "shard {target} of {}", self.shard_count);
        let id = self.next_request_id.get();
        self.next_request_id.set(id + 1);
        let (sender, receiver) = oneshot();
        self.pending.borrow_mut().insert(id, sender);
        let envelope = Envelope { id, from: self.shard, body: request };
        if self.request_senders.send_to(target.0, envelope).await.is_err() {
            self.pending.borrow_mut().remove(&id);
            return Err(MeshError::Closed);
        }
        Ok(receiver)
    }

    /// Sends `request` to shard `target` and waits for its reply.
    pub async fn call(&self, target: ShardId, request: Request) -> Result<Reply, MeshError> {
        let receiver = self.send(target, request).await?;
        receiver.await.ok_or(MeshError::NoReply)
    }

    pub async fn reply(&self, reply_to: ReplyTo, body: Reply) {
        let envelope = Envelope { id: reply_to.id, from: self.shard, body };
        if self.reply_senders.send_to(reply_to.to.0, envelope).await.is_err() {
            log::warn!("shard {}: reply to shard {} dropped (mesh closed)", self.shard, reply_to.to);
        }
    }

    /// Starts serving the mesh: one task per peer for requests and one for replies. `serve_one` is awaited for
    /// each request in channel order before the next is taken from that peer (so what it does before its first
    /// spawn — sequencing an append — keeps the peer's order); it replies through [`Mesh::reply`].
    pub fn serve<Serve, Served>(
        self: &Rc<Self>,
        mut request_receivers: Receivers<Envelope<Request>>,
        mut reply_receivers: Receivers<Envelope<Reply>>,
        queue: glommio::TaskQueueHandle,
        serve_one: Serve,
    ) where
        Serve: Fn(ReplyTo, Request) -> Served + Clone + 'static,
        Served: Future<Output = ()> + 'static,
    {
        for (_, receiver) in request_receivers.streams() {
            let serve_one = serve_one.clone();
            let task = async move {
                while let Some(envelope) = receiver.recv().await {
                    let Envelope { id, from, body } = envelope;
                    serve_one(ReplyTo { to: from, id }, body).await;
                    glommio::yield_if_needed().await;
                }
            };
            if let Err(error) = glommio::spawn_local_into(task, queue).map(|task| task.detach()) {
                log::error!("shard {}: cannot serve the mesh: {error}", self.shard);
            }
        }
        for (_, receiver) in reply_receivers.streams() {
            let mesh = self.clone();
            if let Err(error) =
                glommio::spawn_local_into(mesh.serve_replies(receiver), queue).map(|task| task.detach())
            {
                log::error!("shard {}: cannot serve mesh replies: {error}", self.shard);
            }
        }
    }

    async fn serve_replies(self: Rc<Self>, receiver: ConnectedReceiver<Envelope<Reply>>) {
        while let Some(envelope) = receiver.recv().await {
            let waiter = self.pending.borrow_mut().remove(&envelope.id);
            // A missing waiter gave up (its request was cancelled); the reply is dropped.
            if let Some(waiter) = waiter {
                let _ = waiter.send(envelope.body);
            }
            glommio::yield_if_needed().await;
        }
    }
}
