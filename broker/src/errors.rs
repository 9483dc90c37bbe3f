//! Kafka error codes, and the one place where storage errors become them.
//!
//! **Architecture invariant:** storage never sees a Kafka error code; handlers never match on `LogError`.

use sluice_storage::{BatchError, LogError};

/// A Kafka protocol error code (`error_code` fields on the wire).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ErrorCode(pub i16);

impl ErrorCode {
    pub const NONE: ErrorCode = ErrorCode(0);
    pub const UNKNOWN_SERVER_ERROR: ErrorCode = ErrorCode(-1);
    pub const OFFSET_OUT_OF_RANGE: ErrorCode = ErrorCode(1);
    pub const CORRUPT_MESSAGE: ErrorCode = ErrorCode(2);
    pub const UNKNOWN_TOPIC_OR_PARTITION: ErrorCode = ErrorCode(3);
    pub const LEADER_NOT_AVAILABLE: ErrorCode = ErrorCode(5);
    pub const NOT_LEADER_OR_FOLLOWER: ErrorCode = ErrorCode(6);
    pub const REQUEST_TIMED_OUT: ErrorCode = ErrorCode(7);
    pub const MESSAGE_TOO_LARGE: ErrorCode = ErrorCode(10);
    pub const COORDINATOR_NOT_AVAILABLE: ErrorCode = ErrorCode(15);
    pub const INVALID_TOPIC_EXCEPTION: ErrorCode = ErrorCode(17);
    pub const RECORD_LIST_TOO_LARGE: ErrorCode = ErrorCode(18);
    pub const INVALID_REQUIRED_ACKS: ErrorCode = ErrorCode(21);
    pub const UNSUPPORTED_VERSION: ErrorCode = ErrorCode(35);
    pub const TOPIC_ALREADY_EXISTS: ErrorCode = ErrorCode(36);
    pub const INVALID_PARTITIONS: ErrorCode = ErrorCode(37);
    pub const INVALID_REPLICATION_FACTOR: ErrorCode = ErrorCode(38);
    pub const INVALID_REQUEST: ErrorCode = ErrorCode(42);
    pub const INVALID_CONFIG: ErrorCode = ErrorCode(40);
    pub const POLICY_VIOLATION: ErrorCode = ErrorCode(44);
    pub const OUT_OF_ORDER_SEQUENCE_NUMBER: ErrorCode = ErrorCode(45);
    pub const INVALID_PRODUCER_EPOCH: ErrorCode = ErrorCode(47);
    pub const KAFKA_STORAGE_ERROR: ErrorCode = ErrorCode(56);
    pub const UNKNOWN_PRODUCER_ID: ErrorCode = ErrorCode(59);
    pub const INVALID_RECORD: ErrorCode = ErrorCode(87);
    pub const UNKNOWN_TOPIC_ID: ErrorCode = ErrorCode(100);
    pub const RESOURCE_NOT_FOUND: ErrorCode = ErrorCode(91);
    // Group coordination.
    pub const COORDINATOR_LOAD_IN_PROGRESS: ErrorCode = ErrorCode(14);
    pub const NOT_COORDINATOR: ErrorCode = ErrorCode(16);
    pub const ILLEGAL_GENERATION: ErrorCode = ErrorCode(22);
    pub const INCONSISTENT_GROUP_PROTOCOL: ErrorCode = ErrorCode(23);
    pub const INVALID_GROUP_ID: ErrorCode = ErrorCode(24);
    pub const UNKNOWN_MEMBER_ID: ErrorCode = ErrorCode(25);
    pub const INVALID_SESSION_TIMEOUT: ErrorCode = ErrorCode(26);
    pub const REBALANCE_IN_PROGRESS: ErrorCode = ErrorCode(27);
    pub const OFFSET_METADATA_TOO_LARGE: ErrorCode = ErrorCode(12);
    pub const NON_EMPTY_GROUP: ErrorCode = ErrorCode(68);
    pub const GROUP_ID_NOT_FOUND: ErrorCode = ErrorCode(69);
    pub const FENCED_LEADER_EPOCH: ErrorCode = ErrorCode(74);
    pub const UNKNOWN_LEADER_EPOCH: ErrorCode = ErrorCode(75);
    pub const MEMBER_ID_REQUIRED: ErrorCode = ErrorCode(79);
    pub const FENCED_INSTANCE_ID: ErrorCode = ErrorCode(82);
    pub const GROUP_MAX_SIZE_REACHED: ErrorCode = ErrorCode(81);
    pub const GROUP_SUBSCRIBED_TO_TOPIC: ErrorCode = ErrorCode(86);
    pub const INVALID_REPLICA_ASSIGNMENT: ErrorCode = ErrorCode(39);

    pub fn code(self) -> i16 {
        self.0
    }

    pub fn is_error(self) -> bool {
        self.0 != 0
    }
}

/// A Kafka error code with the message some responses carry (`error_message` fields).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KafkaError {
    pub code: ErrorCode,
    pub message: Option<String>,
}

impl KafkaError {
    pub fn new(code: ErrorCode) -> KafkaError {
        KafkaError { code, message: None }
    }

    pub fn with_message(code: ErrorCode, message: impl Into<String>) -> KafkaError {
        KafkaError { code, message: Some(message.into()) }
    }
}

impl From<ErrorCode> for KafkaError {
    fn from(code: ErrorCode) -> Self {
        KafkaError::new(code)
    }
}

/// The mapping from storage's errors to the codes clients act on.
pub fn from_log_error(error: &LogError) -> KafkaError {
    let code = match error {
        LogError::InvalidBatch(BatchError::BadCrc { .. }) => ErrorCode::CORRUPT_MESSAGE,
        LogError::InvalidBatch(BatchError::Empty) => ErrorCode::INVALID_RECORD,
        LogError::InvalidBatch(_) => ErrorCode::CORRUPT_MESSAGE,
        LogError::BatchTooLarge { .. } => ErrorCode::MESSAGE_TOO_LARGE,
        LogError::OffsetOutOfRange { .. } => ErrorCode::OFFSET_OUT_OF_RANGE,
        // A poisoned or failing log is Kafka's "storage error": clients retry elsewhere or later.
        LogError::Poisoned(_) | LogError::Io { .. } => ErrorCode::KAFKA_STORAGE_ERROR,
        // A closed log is a partition that is going away (shutdown or deletion).
        LogError::Closed => ErrorCode::NOT_LEADER_OR_FOLLOWER,
        LogError::InvalidConfig(_) => ErrorCode::INVALID_CONFIG,
        // A follower append that does not continue its log: the replica fetcher's bug, never a client's.
        LogError::UnexpectedOffset { .. } => ErrorCode::UNKNOWN_SERVER_ERROR,
    };
    KafkaError::with_message(code, error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_storage::Offset;

    #[test]
    fn storage_errors_map_to_kafka_codes() {
        let cases = [
            (
                LogError::InvalidBatch(BatchError::BadCrc { stored: 1, computed: 2 }),
                ErrorCode::CORRUPT_MESSAGE,
            ),
            (LogError::InvalidBatch(BatchError::BadMagic { magic: 1 }), ErrorCode::CORRUPT_MESSAGE),
            (LogError::BatchTooLarge { size: 10, max: 5 }, ErrorCode::MESSAGE_TOO_LARGE),
            (
                LogError::OffsetOutOfRange { offset: Offset(9), log_start: Offset(0), log_end: Offset(1) },
                ErrorCode::OFFSET_OUT_OF_RANGE,
            ),
            (LogError::Poisoned("x".into()), ErrorCode::KAFKA_STORAGE_ERROR),
            (LogError::Closed, ErrorCode::NOT_LEADER_OR_FOLLOWER),
        ];
        for (error, expected) in cases {
            assert_eq!(from_log_error(&error).code, expected, "{error}");
        }
    }
}
