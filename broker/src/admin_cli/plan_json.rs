//! Kafka's reassignment JSON, as `kafka-reassign-partitions.sh` writes and reads it:
//! `{"version":1,"partitions":[{"topic":"t","partition":0,"replicas":[4,2]}]}`. A `log_dirs` list is accepted
//! when every entry is `"any"` (Sluice has one log directory per broker; moving a replica between directories is
//! not supported). Any other member is refused, so that a misspelt `"replica"` is not silently ignored.

use std::collections::BTreeSet;

use super::json::{self, Value};
use super::plan::PartitionTarget;

/// The only version of the format Kafka has.
const FORMAT_VERSION: i64 = 1;

/// The targets as one line of Kafka's reassignment JSON.
pub fn to_json(targets: &[PartitionTarget]) -> String {
    let entries: Vec<String> = targets
        .iter()
        .map(|target| {
            let replicas: Vec<String> = target.replicas.iter().map(i32::to_string).collect();
            format!(
                "{{\"topic\":{},\"partition\":{},\"replicas\":[{}]}}",
                json::quote(&target.topic),
                target.partition,
                replicas.join(",")
            )
        })
        .collect();
    format!("{{\"version\":{FORMAT_VERSION},\"partitions\":[{}]}}", entries.join(","))
}

/// The targets a reassignment JSON document names, in file order. Every partition appears once, with a non-empty
/// list of distinct broker ids.
pub fn from_json(text: &str) -> Result<Vec<PartitionTarget>, String> {
    let document = json::parse(text).map_err(|error| format!("not JSON: {error}"))?;
    let Value::Object(members) = document else {
        return Err(format!("expected an object at the top, found {}", document.kind()));
    };
    let mut version = None;
    let mut partitions = None;
    for (key, value) in members {
        match key.as_str() {
            "version" => version = Some(value),
            "partitions" => partitions = Some(value),
            other => {
                return Err(format!("unknown member \"{other}\" at the top (expected version, partitions)"))
            }
        }
    }
    match version {
        Some(Value::Integer(FORMAT_VERSION)) => {}
        Some(other) => return Err(format!("\"version\" must be {FORMAT_VERSION}, found {other:?}")),
        None => return Err("no \"version\" member".to_owned()),
    }
    let entries = match partitions {
        Some(Value::Array(entries)) => entries,
        Some(other) => return Err(format!("\"partitions\" must be an array, found {}", other.kind())),
        None => return Err("no \"partitions\" member".to_owned()),
    };
    if entries.is_empty() {
        return Err("\"partitions\" is empty: nothing to reassign".to_owned());
    }
    let mut seen = BTreeSet::new();
    let mut targets = Vec::with_capacity(entries.len());
    for (index, entry) in entries.into_iter().enumerate() {
        let target = from_json_entry(entry).map_err(|reason| format!("partitions[{index}]: {reason}"))?;
        if !seen.insert((target.topic.clone(), target.partition)) {
            return Err(format!(
                "partitions[{index}]: {}-{} is listed more than once",
                target.topic, target.partition
            ));
        }
        targets.push(target);
    }
    Ok(targets)
}

fn from_json_entry(entry: Value) -> Result<PartitionTarget, String> {
    let Value::Object(members) = entry else {
        return Err(format!("expected an object, found {}", entry.kind()));
    };
    let (mut topic, mut partition, mut replicas, mut log_dirs) = (None, None, None, None);
    for (key, value) in members {
        match key.as_str() {
            "topic" => topic = Some(value),
            "partition" => partition = Some(value),
            "replicas" => replicas = Some(value),
            "log_dirs" => log_dirs = Some(value),
            other => {
                return Err(format!(
                    "unknown member \"{other}\" (expected topic, partition, replicas, log_dirs)"
                ))
            }
        }
    }
    let topic = match topic {
        Some(Value::String(name)) if !name.is_empty() => name,
        Some(other) => return Err(format!("\"topic\" must be a non-empty string, found {other:?}")),
        None => return Err("no \"topic\" member".to_owned()),
    };
    let partition = match partition {
        Some(Value::Integer(index)) => non_negative_i32(index, "\"partition\"")?,
        Some(other) => return Err(format!("\"partition\" must be an integer, found {}", other.kind())),
        None => return Err("no \"partition\" member".to_owned()),
    };
    let replicas = from_json_replicas(replicas)?;
    if let Some(log_dirs) = log_dirs {
        from_json_log_dirs(log_dirs, replicas.len())?;
    }
    Ok(PartitionTarget { topic, partition, replicas })
}

fn from_json_replicas(replicas: Option<Value>) -> Result<Vec<i32>, String> {
    let items = match replicas {
        Some(Value::Array(items)) => items,
        Some(other) => return Err(format!("\"replicas\" must be an array, found {}", other.kind())),
        None => return Err("no \"replicas\" member".to_owned()),
    };
    if items.is_empty() {
        return Err("\"replicas\" is empty".to_owned());
    }
    let mut ids = Vec::with_capacity(items.len());
    for item in items {
        let Value::Integer(id) = item else {
            return Err(format!("\"replicas\" must hold broker ids, found {}", item.kind()));
        };
        let id = non_negative_i32(id, "a broker id")?;
        if ids.contains(&id) {
            return Err(format!("broker {id} appears twice in \"replicas\""));
        }
        ids.push(id);
    }
    Ok(ids)
}

fn from_json_log_dirs(log_dirs: Value, replica_count: usize) -> Result<(), String> {
    let Value::Array(items) = log_dirs else {
        return Err(format!("\"log_dirs\" must be an array, found {}", log_dirs.kind()));
    };
    if items.len() != replica_count {
        return Err(format!("\"log_dirs\" has {} entries for {replica_count} replicas", items.len()));
    }
    for item in items {
        match item {
            Value::String(dir) if dir == "any" => {}
            other => {
                return Err(format!(
                    "\"log_dirs\" entry {other:?}: only \"any\" is supported (one log dir per broker)"
                ))
            }
        }
    }
    Ok(())
}

fn non_negative_i32(value: i64, what: &str) -> Result<i32, String> {
    i32::try_from(value)
        .ok()
        .filter(|&value| value >= 0)
        .ok_or_else(|| format!("{what} {value} is out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(topic: &str, partition: i32, replicas: &[i32]) -> PartitionTarget {
        PartitionTarget { topic: topic.into(), partition, replicas: replicas.to_vec() }
    }

    #[test]
    fn prints_kafkas_format_and_reads_it_back() {
        let targets = vec![target("orders", 0, &[4, 2]), target("a \"quoted\" name", 11, &[1, 4, 3])];
        let text = to_json(&targets);
        assert_eq!(
            text,
            r#"{"version":1,"partitions":[{"topic":"orders","partition":0,"replicas":[4,2]},{"topic":"a \"quoted\" name","partition":11,"replicas":[1,4,3]}]}"#
        );
        assert_eq!(from_json(&text), Ok(targets));
    }

    #[test]
    fn reads_what_kafkas_tool_writes() {
        // kafka-reassign-partitions.sh --generate output, pretty-printed by hand, with log_dirs.
        let text = r#"{
          "version": 1,
          "partitions": [
            {"topic": "t", "partition": 1, "replicas": [2, 4], "log_dirs": ["any", "any"]},
            {"topic": "t", "partition": 0, "replicas": [4]}
          ]
        }"#;
        assert_eq!(from_json(text), Ok(vec![target("t", 1, &[2, 4]), target("t", 0, &[4])]));
    }

    #[test]
    fn refuses_what_it_cannot_carry_out() {
        let entry = |body: &str| format!(r#"{{"version":1,"partitions":[{body}]}}"#);
        for (text, reason) in [
            ("[]".to_owned(), "expected an object at the top"),
            (r#"{"partitions":[]}"#.to_owned(), "no \"version\""),
            (r#"{"version":2,"partitions":[]}"#.to_owned(), "\"version\" must be 1"),
            (r#"{"version":1}"#.to_owned(), "no \"partitions\""),
            (r#"{"version":1,"partitions":[]}"#.to_owned(), "nothing to reassign"),
            (r#"{"version":1,"partitions":[],"extra":1}"#.to_owned(), "unknown member \"extra\""),
            (entry(r#"{"topic":"t","partition":0,"replica":[1]}"#), "unknown member \"replica\""),
            (entry(r#"{"partition":0,"replicas":[1]}"#), "no \"topic\""),
            (entry(r#"{"topic":"","partition":0,"replicas":[1]}"#), "non-empty string"),
            (entry(r#"{"topic":"t","replicas":[1]}"#), "no \"partition\""),
            (entry(r#"{"topic":"t","partition":-1,"replicas":[1]}"#), "out of range"),
            (entry(r#"{"topic":"t","partition":"0","replicas":[1]}"#), "must be an integer"),
            (entry(r#"{"topic":"t","partition":0,"replicas":[]}"#), "\"replicas\" is empty"),
            (entry(r#"{"topic":"t","partition":0,"replicas":[1,1]}"#), "appears twice"),
            (entry(r#"{"topic":"t","partition":0,"replicas":[3000000000]}"#), "out of range"),
            (entry(r#"{"topic":"t","partition":0,"replicas":[1],"log_dirs":["/d"]}"#), "only \"any\""),
            (entry(r#"{"topic":"t","partition":0,"replicas":[1],"log_dirs":[]}"#), "0 entries for 1"),
            (
                entry(
                    r#"{"topic":"t","partition":0,"replicas":[1]},{"topic":"t","partition":0,"replicas":[2]}"#,
                ),
                "partitions[1]: t-0 is listed more than once",
            ),
            ("{".to_owned(), "not JSON: line 1 column 2"),
        ] {
            let error = from_json(&text).expect_err(&text);
            assert!(error.contains(reason), "{text}: {error}");
        }
    }
}
