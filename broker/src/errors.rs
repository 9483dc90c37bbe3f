//! Kafka error codes, and the one place where storage errors become them.
//!
//! **Architecture invariant:** storage never sees a Kafka error code; handlers never match on `LogError`.

pub use kafka_protocol::error::ResponseError;
use sluice_storage::{BatchError, LogError};

/// A Kafka protocol error code as it goes on the wire (`error_code` fields): 0 or one of the codec's
/// [`ResponseError`]s, which is where every code's number and meaning come from (no table of our own).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ErrorCode(pub i16);

impl ErrorCode {
    pub const NONE: ErrorCode = ErrorCode(0);

    pub const fn code(self) -> i16 {
        self.0
    }

    pub const fn is_error(self) -> bool {
        self.0 != 0
    }
}

impl From<ResponseError> for ErrorCode {
    fn from(error: ResponseError) -> Self {
        ErrorCode(error.code())
    }
}

impl PartialEq<ResponseError> for ErrorCode {
    fn eq(&self, other: &ResponseError) -> bool {
        self.0 == other.code()
    }
}

/// A Kafka error code with the message some responses carry (`error_message` fields).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KafkaError {
    pub code: ErrorCode,
    pub message: Option<String>,
}

impl KafkaError {
    pub fn new(code: impl Into<ErrorCode>) -> KafkaError {
        KafkaError { code: code.into(), message: None }
    }

    pub fn with_message(code: impl Into<ErrorCode>, message: impl Into<String>) -> KafkaError {
        KafkaError { code: code.into(), message: Some(message.into()) }
    }
}

impl From<ErrorCode> for KafkaError {
    fn from(code: ErrorCode) -> Self {
        KafkaError::new(code)
    }
}

impl From<ResponseError> for KafkaError {
    fn from(error: ResponseError) -> Self {
        KafkaError::new(error)
    }
}

/// The mapping from storage's errors to the codes clients act on.
pub fn from_log_error(error: &LogError) -> KafkaError {
    let code = match error {
        LogError::InvalidBatch(BatchError::BadCrc { .. }) => ResponseError::CorruptMessage,
        LogError::InvalidBatch(BatchError::Empty) => ResponseError::InvalidRecord,
        LogError::InvalidBatch(_) => ResponseError::CorruptMessage,
        LogError::BatchTooLarge { .. } => ResponseError::MessageTooLarge,
        LogError::OffsetOutOfRange { .. } => ResponseError::OffsetOutOfRange,
        // A poisoned or failing log is Kafka's "storage error": clients retry elsewhere or later.
        LogError::Poisoned(_) | LogError::Stalled(_) | LogError::Io { .. } => {
            ResponseError::KafkaStorageError
        }
        LogError::Corrupt(_) => ResponseError::KafkaStorageError,
        // A closed log is a partition that is going away (shutdown or deletion).
        LogError::Closed => ResponseError::NotLeaderOrFollower,
        LogError::InvalidConfig(_) => ResponseError::InvalidConfig,
        // A follower append that does not continue its log: the replica fetcher's bug, never a client's.
        LogError::UnexpectedOffset { .. } => ResponseError::UnknownServerError,
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
                ResponseError::CorruptMessage,
            ),
            (LogError::InvalidBatch(BatchError::BadMagic { magic: 1 }), ResponseError::CorruptMessage),
            (LogError::BatchTooLarge { size: 10, max: 5 }, ResponseError::MessageTooLarge),
            (
                LogError::OffsetOutOfRange { offset: Offset(9), log_start: Offset(0), log_end: Offset(1) },
                ResponseError::OffsetOutOfRange,
            ),
            (LogError::Poisoned("x".into()), ResponseError::KafkaStorageError),
            (LogError::Stalled("x".into()), ResponseError::KafkaStorageError),
            (LogError::Closed, ResponseError::NotLeaderOrFollower),
        ];
        for (error, expected) in cases {
            assert_eq!(from_log_error(&error).code, expected, "{error}");
        }
    }
}
