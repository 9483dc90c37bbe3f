//! The shard's side of cluster mode (see `controller`): shard 0 installs each new metadata image on every
//! shard, forwards topic changes to the active controller and answers once they are committed and installed
//! here, and takes producer ids from blocks the controller hands out.

use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_replication::metadata::{AdminRequest, BrokerEpoch, ConfigResource, TopicId};
use sluice_replication::{NodeId, ShardId};

use crate::cluster::topic_table::{self, apply_change, TopicChange, TopicTable};
use crate::controller::wire::{ControlRequest, ControlResponse};
use crate::controller::{view, Cluster};
use crate::errors::{KafkaError, ResponseError};
use crate::shard::{AdminResults, Shard, ShardRequest};

/// How long an admin write may wait for the active controller (a failover takes a few seconds).
const ADMIN_TIMEOUT: Duration = Duration::from_secs(15);
/// How long an admin answer waits for the committed change to be installed on this broker.
const INSTALL_WAIT: Duration = Duration::from_secs(10);

fn controller_refusal(code: i16, message: String) -> KafkaError {
    let code = ResponseError::try_from_code(code).unwrap_or(ResponseError::UnknownServerError);
    KafkaError::with_message(code, message)
}

fn unreachable_controller(message: String) -> KafkaError {
    KafkaError::with_message(ResponseError::RequestTimedOut, message)
}

impl Shard {
    /// Shard 0, for the life of the broker: installs every image the controller threads publish.
    pub async fn follow_cluster_metadata(self: Rc<Self>, cluster: Arc<Cluster>) {
        assert_eq!(self.id, ShardId(0), "shard 0 installs the metadata");
        loop {
            if self.is_shutting_down() {
                return;
            }
            let shutdown = self.shutdown.notified();
            let changed = futures_lite::future::or(async { cluster.cell.changed().await }, async {
                shutdown.await;
                false
            })
            .await;
            if !changed || self.is_shutting_down() {
                return;
            }
            let (image, controller) = cluster.cell.latest();
            let current = self.topics();
            let same_controller = current.cluster.as_ref().is_some_and(|view| view.controller == controller);
            if image.applied_index() > current.version || !same_controller {
                let table = Arc::new(view::table_from_image(&image, controller));
                self.install_cluster_table(table).await;
            }
            cluster.cell.set_installed(image.applied_index());
        }
    }

    /// Both phases of a topic change at once: the quorum already committed it, so a partition that does not open
    /// is logged and answered KAFKA_STORAGE_ERROR, as at start-up.
    async fn install_cluster_table(self: &Rc<Self>, table: Arc<TopicTable>) {
        let prepared = self.call_every_shard(|| ShardRequest::PrepareTopics(table.clone())).await;
        if let Err(error) = prepared {
            log::error!("metadata at index {}: {error}", table.version);
        }
        let installed = self.call_every_shard(|| ShardRequest::InstallTopics(table.clone())).await;
        if let Err(error) = installed {
            log::error!("installing metadata at index {}: {error}", table.version);
        }
    }

    /// Shard 0 in cluster mode: each change is checked as a single node checks it, sent to the active controller,
    /// and answered once committed and installed here (so the client's next request sees it).
    pub(crate) async fn admin_cluster(
        self: &Rc<Self>,
        cluster: &Arc<Cluster>,
        changes: Vec<TopicChange>,
        validate_only: bool,
    ) -> AdminResults {
        let mut results = Vec::with_capacity(changes.len());
        let mut committed = 0;
        for change in changes {
            let result = match self.admin_request(change) {
                Err(error) => Err(error),
                Ok(request) => {
                    match cluster.call(ControlRequest::Admin { request, validate_only }, ADMIN_TIMEOUT).await
                    {
                        Ok(ControlResponse::Done { index }) => {
                            committed = committed.max(index);
                            Ok(())
                        }
                        Ok(ControlResponse::Error { code, message }) => {
                            Err(controller_refusal(code, message))
                        }
                        Ok(other) => {
                            Err(unreachable_controller(format!("unexpected controller answer {other:?}")))
                        }
                        Err(message) => Err(unreachable_controller(message)),
                    }
                }
            };
            results.push(result);
        }
        self.wait_installed(committed).await;
        results
    }

    /// Waits (bounded) until the table installed here is at least at `index`.
    pub(crate) async fn wait_installed(&self, index: u64) {
        let deadline = Instant::now() + INSTALL_WAIT;
        while self.topics().version < index {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                log::warn!("metadata index {index} committed but not installed here within {INSTALL_WAIT:?}");
                return;
            }
            let installed = self.table_installed_notified();
            futures_lite::future::or(installed, glommio::timer::sleep(left.min(Duration::from_millis(100))))
                .await;
        }
    }

    /// The controller request for a topic change, after the table's own checks (names, counts, configs,
    /// internal topics) against a scratch copy, so refusals read as on a single node.
    fn admin_request(&self, change: TopicChange) -> Result<AdminRequest, KafkaError> {
        let node = NodeId(self.config.node_id);
        let mut scratch = (*self.topics()).clone();
        let check = match &change {
            // The replication factor is the controller's to check: it knows the live brokers.
            TopicChange::Create { name, partition_count, configs, .. } => TopicChange::Create {
                name: name.clone(),
                partition_count: *partition_count,
                replication_factor: -1,
                configs: configs.clone(),
                assignment: None,
            },
            other => other.clone(),
        };
        apply_change(&self.config, node, &mut scratch, check)
            .map_err(|error| topic_table::to_kafka_error(&error))?;
        Ok(match change {
            TopicChange::Create { name, partition_count, replication_factor, configs, assignment } => {
                AdminRequest::CreateTopic {
                    name,
                    id: TopicId(u128::from_str_radix(&topic_table::new_topic_id(), 16).unwrap_or(1)),
                    partition_count: if partition_count == -1 {
                        self.config.partition_count_default
                    } else {
                        partition_count
                    },
                    replication_factor: if replication_factor == -1 {
                        self.config.replication_factor_default
                    } else {
                        replication_factor
                    },
                    configs,
                    assignment: assignment.map(|lists| {
                        lists.into_iter().map(|replicas| replicas.into_iter().map(NodeId).collect()).collect()
                    }),
                }
            }
            TopicChange::Delete { name } => AdminRequest::DeleteTopic { name },
            TopicChange::AddPartitions { name, partition_count, assignment } => {
                AdminRequest::CreatePartitions {
                    name,
                    partition_count,
                    assignment: assignment.map(|lists| {
                        lists.into_iter().map(|replicas| replicas.into_iter().map(NodeId).collect()).collect()
                    }),
                }
            }
            TopicChange::AlterConfigs { name, configs, replace } => {
                let mut changes = Vec::new();
                if replace {
                    let current = self.topics();
                    let existing = current.get(&name).map(|entry| entry.configs.clone()).unwrap_or_default();
                    changes.extend(
                        existing
                            .into_keys()
                            .filter(|key| !configs.iter().any(|(set, _)| set == key))
                            .map(|key| (key, None)),
                    );
                }
                changes.extend(configs);
                AdminRequest::AlterConfigs { resource: ConfigResource::Topic(name), changes }
            }
        })
    }

    /// Shard 0 in cluster mode: the next id of this broker's block, a new block from the controller when it is
    /// used up. Blocks never overlap across brokers, so no two give the same id.
    pub(crate) async fn allocate_producer_id_cluster(
        &self,
        cluster: &Arc<Cluster>,
    ) -> Result<i64, KafkaError> {
        let (next, end) = self.producer_id_block.get();
        if next < end {
            self.producer_id_block.set((next + 1, end));
            return Ok(next);
        }
        let request = AdminRequest::AllocateProducerIds {
            broker: NodeId(self.config.node_id),
            broker_epoch: BrokerEpoch(cluster.broker_epoch()),
        };
        match cluster.call(ControlRequest::Admin { request, validate_only: false }, ADMIN_TIMEOUT).await {
            Ok(ControlResponse::ProducerIds { first, size }) if size > 0 => {
                // Another caller may have taken a block meanwhile; the newest wins, the rest is never used.
                self.producer_id_block.set((first + 1, first + i64::from(size)));
                Ok(first)
            }
            Ok(ControlResponse::Error { code, message }) => Err(controller_refusal(code, message)),
            Ok(other) => Err(unreachable_controller(format!("unexpected controller answer {other:?}"))),
            Err(message) => Err(unreachable_controller(message)),
        }
    }
}
