//! Reassignment plans, computed from a `ClusterView` without I/O.
//!
//! `plan_move_to_broker` moves replicas onto one broker, the way a cluster grows onto a new machine: every selected
//! partition that gains the broker has exactly one of its replicas replaced by it, in place, so the replication
//! factor and the order of the other replicas (the first is the preferred leader) stay as they were.
//!
//! - With a source broker (`--from-broker M`), every selected partition on M moves M's replica to the new broker:
//!   the way a broker is emptied before it is retired.
//! - Without one, the new broker takes its fair share, `total replicas / broker count` (rounded down) of the
//!   selected partitions, one replica at a time from whichever broker then holds the most (ties: the lowest id). It
//!   takes a preferred-leader slot (the first replica) while it has fewer than `partitions / broker count` of them
//!   and a follower slot otherwise, so that preferred leadership spreads onto it too and an election of preferred
//!   leaders afterwards moves only its share of leaders.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use sluice_storage::Invariant;

use super::view::ClusterView;

/// A partition and the replicas it should have, the unit of Kafka's reassignment JSON.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionTarget {
    pub topic: String,
    pub partition: i32,
    pub replicas: Vec<i32>,
}

/// One partition a plan changes: its replicas now and its target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Move {
    pub topic: String,
    pub partition: i32,
    pub current: Vec<i32>,
    pub target: Vec<i32>,
}

impl Move {
    pub fn current_target(&self) -> PartitionTarget {
        PartitionTarget {
            topic: self.topic.clone(),
            partition: self.partition,
            replicas: self.current.clone(),
        }
    }

    pub fn new_target(&self) -> PartitionTarget {
        PartitionTarget {
            topic: self.topic.clone(),
            partition: self.partition,
            replicas: self.target.clone(),
        }
    }
}

/// The partitions a plan changes, in (topic, partition) order, and remarks for the operator (partitions left
/// alone and why).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub moves: Vec<Move>,
    pub notes: Vec<String>,
}

/// What `plan_move_to_broker` is asked: the broker that gains replicas, the broker that gives them up (if one is
/// named) and the topics to consider (empty: every topic but the internal ones).
#[derive(Clone, Debug, Default)]
pub struct MoveRequest {
    pub to_broker: i32,
    pub from_broker: Option<i32>,
    pub topics: Vec<String>,
}

/// The names of the topics `topics` selects, sorted: each must exist; none given means every non-internal topic.
pub fn select_topics<'a>(view: &'a ClusterView, topics: &[String]) -> Result<Vec<&'a str>, String> {
    if topics.is_empty() {
        return Ok(view
            .topics
            .iter()
            .filter(|(_, topic)| !topic.internal)
            .map(|(name, _)| name.as_str())
            .collect());
    }
    let mut selected = BTreeSet::new();
    for name in topics {
        let Some((known, _)) = view.topics.get_key_value(name) else {
            return Err(format!("unknown topic \"{name}\" ({})", known_topics(view)));
        };
        selected.insert(known.as_str());
    }
    Ok(selected.into_iter().collect())
}

fn known_topics(view: &ClusterView) -> String {
    const SHOWN_MAX: usize = 10;
    let names: Vec<&str> = view.topics.keys().map(String::as_str).take(SHOWN_MAX).collect();
    match view.topics.len() {
        0 => "the cluster has no topics".to_owned(),
        count if count > SHOWN_MAX => format!("the cluster has {count} topics: {}, ...", names.join(", ")),
        _ => format!("the cluster has: {}", names.join(", ")),
    }
}

/// The plan that moves replicas of the selected topics onto `request.to_broker` (see the module comment).
pub fn plan_move_to_broker(view: &ClusterView, request: &MoveRequest) -> Result<Plan, String> {
    let to_broker = request.to_broker;
    if !view.brokers.contains_key(&to_broker) {
        return Err(format!("broker {to_broker} is not in the cluster (brokers: {:?})", view.broker_ids()));
    }
    let topics = select_topics(view, &request.topics)?;
    let partitions: Vec<Move> = topics
        .iter()
        .flat_map(|&topic| {
            view.topics[topic].partitions.iter().map(move |(&partition, state)| Move {
                topic: topic.to_owned(),
                partition,
                current: state.replicas.clone(),
                target: state.replicas.clone(),
            })
        })
        .collect();
    if partitions.is_empty() {
        let note = "no partitions to move (internal topics are left alone unless named with --topic)";
        return Ok(Plan { moves: Vec::new(), notes: vec![note.to_owned()] });
    }
    match request.from_broker {
        Some(from_broker) => plan_move_from(view, partitions, from_broker, to_broker),
        None => Ok(plan_move_balanced(view, partitions, to_broker)),
    }
}

/// Every partition on `from_broker` gets `to_broker` in that replica's place.
fn plan_move_from(
    view: &ClusterView,
    partitions: Vec<Move>,
    from_broker: i32,
    to_broker: i32,
) -> Result<Plan, String> {
    if from_broker == to_broker {
        return Err(format!("--from-broker and --to-broker are both {to_broker}"));
    }
    let holding = partitions.iter().filter(|candidate| candidate.current.contains(&from_broker)).count();
    if holding == 0 && !view.brokers.contains_key(&from_broker) {
        return Err(format!(
            "broker {from_broker} is not in the cluster (brokers: {:?}) and holds no replica of the selected topics",
            view.broker_ids()
        ));
    }
    let mut plan = Plan::default();
    for mut candidate in partitions {
        let Some(position) = candidate.current.iter().position(|&id| id == from_broker) else { continue };
        if candidate.current.contains(&to_broker) {
            plan.notes.push(format!(
                "{}-{}: broker {to_broker} already holds a replica, so broker {from_broker}'s stays",
                candidate.topic, candidate.partition
            ));
            continue;
        }
        candidate.target[position] = to_broker;
        plan.moves.push(candidate);
    }
    if holding == 0 {
        plan.notes.push(format!("broker {from_broker} holds no replica of the selected topics"));
    }
    Ok(plan)
}

/// Counts per broker of replicas and of preferred-leader slots (first replicas).
#[derive(Clone, Debug, Default)]
struct Holdings {
    replicas: BTreeMap<i32, usize>,
    leaders: BTreeMap<i32, usize>,
}

impl Holdings {
    fn of(partitions: &[Move]) -> Holdings {
        let mut holdings = Holdings::default();
        for each in partitions {
            for (position, &id) in each.current.iter().enumerate() {
                *holdings.replicas.entry(id).or_default() += 1;
                if position == 0 {
                    *holdings.leaders.entry(id).or_default() += 1;
                }
            }
        }
        holdings
    }

    fn replicas_of(&self, id: i32) -> usize {
        self.replicas.get(&id).copied().unwrap_or(0)
    }

    fn leaders_of(&self, id: i32) -> usize {
        self.leaders.get(&id).copied().unwrap_or(0)
    }

    /// `to` takes `from`'s replica at `position`.
    fn hand_over(&mut self, from: i32, to: i32, position: usize) {
        *self.replicas.entry(from).or_default() -= 1;
        *self.replicas.entry(to).or_default() += 1;
        if position == 0 {
            *self.leaders.entry(from).or_default() -= 1;
            *self.leaders.entry(to).or_default() += 1;
        }
    }
}

/// `to_broker` takes its fair share of replicas and of preferred-leader slots. Topics are taken in turn, each
/// against the goal of everything taken so far (`replicas so far / broker count`, rounded down), so that every
/// topic is spread within one replica of even and the whole selection exactly, and many small topics still add up
/// to the share. A broker holding replicas but missing from Metadata (down or fenced) counts as a holder, and is
/// the first to give them up when it holds the most.
fn plan_move_balanced(view: &ClusterView, mut partitions: Vec<Move>, to_broker: i32) -> Plan {
    let broker_count = view.brokers.len().max(1);
    let mut overall = Holdings::of(&partitions);
    let (mut replicas_so_far, mut partitions_so_far) = (0, 0);
    let (mut held, mut held_leaders) = (0, 0);
    let mut moved = vec![false; partitions.len()];
    let mut start = 0;
    while start < partitions.len() {
        let topic = partitions[start].topic.clone();
        let end = start + partitions[start..].iter().take_while(|each| each.topic == topic).count();
        let group = &mut partitions[start..end];
        let before = Holdings::of(group);
        replicas_so_far += group.iter().map(|each| each.current.len()).sum::<usize>();
        partitions_so_far += group.len();
        held += before.replicas_of(to_broker);
        held_leaders += before.leaders_of(to_broker);
        let quota = Quota {
            replicas: (replicas_so_far / broker_count).saturating_sub(held),
            leaders: (partitions_so_far / broker_count).saturating_sub(held_leaders),
        };
        let taken =
            plan_move_balanced_topic(group, before, &mut overall, quota, to_broker, &mut moved[start..end]);
        held += taken.replicas;
        held_leaders += taken.leaders;
        start = end;
    }
    let total: usize = overall.replicas.values().sum();
    let mut plan = Plan::default();
    plan.notes.push(format!(
        "broker {to_broker} ends with {} of {total} replicas (fair share {} over {broker_count} brokers) and {} of \
         {} preferred-leader slots",
        overall.replicas_of(to_broker),
        total / broker_count,
        overall.leaders_of(to_broker),
        partitions.len()
    ));
    plan.moves =
        partitions.into_iter().zip(moved).filter(|(_, moved)| *moved).map(|(each, _)| each).collect();
    plan
}

/// How many replicas, and of them preferred-leader slots, a broker is to take.
#[derive(Clone, Copy, Debug, Default)]
struct Quota {
    replicas: usize,
    leaders: usize,
}

/// Within one topic's partitions: `to_broker` takes up to `quota.replicas` replicas, one at a time from the broker
/// holding the most of this topic (ties: the most overall, then the lowest id), a preferred-leader slot while it
/// has taken fewer than `quota.leaders` and a follower slot otherwise. Marks the partitions changed in `moved`.
fn plan_move_balanced_topic(
    group: &mut [Move],
    mut topic_holdings: Holdings,
    overall: &mut Holdings,
    quota: Quota,
    to_broker: i32,
    moved: &mut [bool],
) -> Quota {
    // Per donor broker, the partitions it could give, in partition order: where it is the preferred leader, and
    // where it is a follower. A partition that already has `to_broker` gives nothing.
    let mut leader_slots: BTreeMap<i32, VecDeque<usize>> = BTreeMap::new();
    let mut follower_slots: BTreeMap<i32, VecDeque<usize>> = BTreeMap::new();
    for (index, each) in group.iter().enumerate().filter(|(_, each)| !each.current.contains(&to_broker)) {
        for (position, &id) in each.current.iter().enumerate() {
            let slots = if position == 0 { &mut leader_slots } else { &mut follower_slots };
            slots.entry(id).or_default().push_back(index);
        }
    }
    let mut taken = Quota::default();
    while taken.replicas < quota.replicas {
        let Some(donor) = plan_move_balanced_donor(
            &topic_holdings,
            overall,
            &mut leader_slots,
            &mut follower_slots,
            moved,
            to_broker,
        ) else {
            break;
        };
        let wants_leader = taken.leaders < quota.leaders;
        let (first, second) = if wants_leader {
            (&mut leader_slots, &mut follower_slots)
        } else {
            (&mut follower_slots, &mut leader_slots)
        };
        let Some(index) = first
            .get_mut(&donor)
            .and_then(VecDeque::pop_front)
            .or_else(|| second.get_mut(&donor).and_then(VecDeque::pop_front))
        else {
            break;
        };
        let each = &mut group[index];
        let position = each
            .current
            .iter()
            .position(|&id| id == donor)
            .invariant("a donor's slot names a partition the donor holds a replica of");
        each.target[position] = to_broker;
        moved[index] = true;
        topic_holdings.hand_over(donor, to_broker, position);
        overall.hand_over(donor, to_broker, position);
        taken.replicas += 1;
        taken.leaders += usize::from(position == 0);
    }
    taken
}

/// The broker holding the most replicas of the topic (ties: the most overall, then the lowest id) that can still
/// give one: it has a replica in a partition not yet moved. Drops the moved partitions from the front of every
/// queue first.
fn plan_move_balanced_donor(
    topic_holdings: &Holdings,
    overall: &Holdings,
    leader_slots: &mut BTreeMap<i32, VecDeque<usize>>,
    follower_slots: &mut BTreeMap<i32, VecDeque<usize>>,
    moved: &[bool],
    to_broker: i32,
) -> Option<i32> {
    for slots in leader_slots.values_mut().chain(follower_slots.values_mut()) {
        while slots.front().is_some_and(|&index| moved[index]) {
            slots.pop_front();
        }
    }
    let has_slot = |id: &i32| {
        leader_slots.get(id).is_some_and(|slots| !slots.is_empty())
            || follower_slots.get(id).is_some_and(|slots| !slots.is_empty())
    };
    topic_holdings
        .replicas
        .keys()
        .copied()
        .filter(|id| *id != to_broker && has_slot(id))
        .max_by_key(|&id| (topic_holdings.replicas_of(id), overall.replicas_of(id), std::cmp::Reverse(id)))
}

/// The moves a reassignment file asks for, checked against the cluster: every partition exists and every
/// replica is a broker of the cluster. `topics`, if not empty, keeps only those topics' entries (each must appear).
pub fn moves_from_targets(
    view: &ClusterView,
    targets: &[PartitionTarget],
    topics: &[String],
) -> Result<Vec<Move>, String> {
    for topic in topics {
        if !targets.iter().any(|target| &target.topic == topic) {
            return Err(format!("topic \"{topic}\" is not in the plan"));
        }
    }
    let mut moves = Vec::with_capacity(targets.len());
    for target in targets.iter().filter(|target| topics.is_empty() || topics.contains(&target.topic)) {
        let name = format!("{}-{}", target.topic, target.partition);
        let Some(topic) = view.topics.get(&target.topic) else {
            return Err(format!("{name}: unknown topic \"{}\" ({})", target.topic, known_topics(view)));
        };
        let Some(partition) = topic.partitions.get(&target.partition) else {
            return Err(format!(
                "{name}: topic \"{}\" has {} partitions",
                target.topic,
                topic.partitions.len()
            ));
        };
        if let Some(unknown) = target.replicas.iter().find(|id| !view.brokers.contains_key(id)) {
            return Err(format!(
                "{name}: broker {unknown} is not in the cluster (brokers: {:?})",
                view.broker_ids()
            ));
        }
        moves.push(Move {
            topic: target.topic.clone(),
            partition: target.partition,
            current: partition.replicas.clone(),
            target: target.replicas.clone(),
        });
    }
    Ok(moves)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin_cli::view::{PartitionView, TopicView};

    /// A cluster of `brokers` with topics given as (name, internal, [replicas of each partition]).
    fn cluster(brokers: &[i32], topics: &[(&str, bool, &[&[i32]])]) -> ClusterView {
        let mut view = ClusterView {
            brokers: brokers.iter().map(|&id| (id, format!("127.0.0.1:{}", 9000 + id))).collect(),
            controller_id: brokers[0],
            topics: BTreeMap::new(),
        };
        for &(name, internal, partitions) in topics {
            let partitions = partitions
                .iter()
                .enumerate()
                .map(|(index, replicas)| {
                    let state = PartitionView {
                        leader: replicas[0],
                        replicas: replicas.to_vec(),
                        isr: replicas.to_vec(),
                    };
                    (index as i32, state)
                })
                .collect();
            view.topics.insert(name.to_owned(), TopicView { internal, error_code: 0, partitions });
        }
        view
    }

    fn request(to_broker: i32, from_broker: Option<i32>, topics: &[&str]) -> MoveRequest {
        MoveRequest { to_broker, from_broker, topics: topics.iter().map(|&name| name.to_owned()).collect() }
    }

    /// Replica and preferred-leader counts per broker after applying `plan` to `view`'s selected topics.
    fn counts_after(
        view: &ClusterView,
        plan: &Plan,
        topics: &[&str],
    ) -> (BTreeMap<i32, usize>, BTreeMap<i32, usize>) {
        let mut replicas = BTreeMap::new();
        let mut leaders = BTreeMap::new();
        for &topic in topics {
            for (&partition, state) in &view.topics[topic].partitions {
                let moved = plan.moves.iter().find(|each| each.topic == topic && each.partition == partition);
                let assignment = moved.map_or(&state.replicas, |each| &each.target);
                for &id in assignment {
                    *replicas.entry(id).or_insert(0) += 1;
                }
                *leaders.entry(assignment[0]).or_insert(0) += 1;
            }
        }
        (replicas, leaders)
    }

    /// Each move replaces exactly one replica by `to_broker` in place and keeps the others in order.
    fn check_moves_replace_one(plan: &Plan, to_broker: i32) {
        for each in &plan.moves {
            assert!(!each.current.contains(&to_broker), "{each:?}");
            assert_eq!(each.current.len(), each.target.len(), "{each:?}");
            let changed: Vec<usize> =
                (0..each.current.len()).filter(|&i| each.current[i] != each.target[i]).collect();
            assert_eq!(changed.len(), 1, "{each:?}");
            assert_eq!(each.target[changed[0]], to_broker, "{each:?}");
        }
    }

    #[test]
    fn a_new_broker_takes_its_fair_share_of_replicas_and_leaders() {
        // (replicas of the topic's 6 partitions, expected replicas and preferred leaders of broker 4 after).
        let rf2: &[&[i32]] = &[&[1, 2], &[2, 3], &[3, 1], &[1, 3], &[2, 1], &[3, 2]];
        let rf3: &[&[i32]] = &[&[1, 2, 3], &[2, 3, 1], &[3, 1, 2], &[1, 3, 2], &[2, 1, 3], &[3, 2, 1]];
        let rf1: &[&[i32]] = &[&[1], &[2], &[3], &[1], &[2], &[3], &[1], &[2]];
        for (partitions, replicas_on_4, leaders_on_4) in [(rf2, 3, 1), (rf3, 4, 1), (rf1, 2, 2)] {
            let view = cluster(&[1, 2, 3, 4], &[("t", false, partitions)]);
            let plan = plan_move_to_broker(&view, &request(4, None, &[])).expect("plan");
            check_moves_replace_one(&plan, 4);
            let (replicas, leaders) = counts_after(&view, &plan, &["t"]);
            assert_eq!(replicas[&4], replicas_on_4, "{partitions:?}: {replicas:?}");
            assert_eq!(leaders.get(&4).copied().unwrap_or(0), leaders_on_4, "{partitions:?}: {leaders:?}");
            let most = replicas.values().max().copied().unwrap_or(0);
            let least = replicas.values().min().copied().unwrap_or(0);
            assert!(most - least <= 1, "{partitions:?}: unbalanced {replicas:?}");
            assert_eq!(plan.moves.len(), replicas_on_4, "one replica per moved partition");
        }
    }

    #[test]
    fn every_topic_is_spread_and_small_topics_add_up() {
        // Two topics of 6 partitions at replication factor 2: broker 4 takes 3 replicas of each, not 6 of the first,
        // and 3 of the 12 preferred-leader slots (12 / 4), one or two in each topic.
        let rf2: &[&[i32]] = &[&[1, 2], &[2, 3], &[3, 1], &[1, 3], &[2, 1], &[3, 2]];
        let view = cluster(&[1, 2, 3, 4], &[("a", false, rf2), ("b", false, rf2)]);
        let plan = plan_move_to_broker(&view, &request(4, None, &[])).expect("plan");
        check_moves_replace_one(&plan, 4);
        for topic in ["a", "b"] {
            let (replicas, leaders) = counts_after(&view, &plan, &[topic]);
            assert_eq!(replicas, BTreeMap::from([(1, 3), (2, 3), (3, 3), (4, 3)]), "topic {topic}");
            assert!((1..=2).contains(&leaders[&4]), "topic {topic}: {leaders:?}");
        }
        let (_, leaders) = counts_after(&view, &plan, &["a", "b"]);
        assert_eq!(leaders[&4], 3, "{leaders:?}");
        // Eight topics of one partition each on brokers 1-3: broker 4's share (8 / 4 = 2) comes from them.
        let single: [(&str, bool, &[&[i32]]); 8] = [
            ("s0", false, &[&[1]]),
            ("s1", false, &[&[2]]),
            ("s2", false, &[&[3]]),
            ("s3", false, &[&[1]]),
            ("s4", false, &[&[2]]),
            ("s5", false, &[&[3]]),
            ("s6", false, &[&[1]]),
            ("s7", false, &[&[2]]),
        ];
        let view = cluster(&[1, 2, 3, 4], &single);
        let plan = plan_move_to_broker(&view, &request(4, None, &[])).expect("plan");
        let moved: Vec<&str> = plan.moves.iter().map(|each| each.topic.as_str()).collect();
        assert_eq!(moved, vec!["s3", "s7"], "every fourth topic's partition moves");
    }

    #[test]
    fn the_fullest_broker_gives_first() {
        // Broker 1 holds 4 replicas, 2 and 3 hold 2 each: broker 4's share (8 / 4 = 2) comes from broker 1.
        let view = cluster(&[1, 2, 3, 4], &[("t", false, &[&[1, 2], &[1, 3], &[2, 1], &[3, 1]])]);
        let plan = plan_move_to_broker(&view, &request(4, None, &[])).expect("plan");
        check_moves_replace_one(&plan, 4);
        let (replicas, leaders) = counts_after(&view, &plan, &["t"]);
        assert_eq!(replicas, BTreeMap::from([(1, 2), (2, 2), (3, 2), (4, 2)]));
        // Broker 4 takes one preferred-leader slot (4 partitions / 4 brokers), broker 1's.
        assert_eq!(leaders, BTreeMap::from([(1, 1), (2, 1), (3, 1), (4, 1)]));
    }

    #[test]
    fn a_broker_that_already_has_its_share_moves_nothing() {
        let view = cluster(&[1, 2, 3, 4], &[("t", false, &[&[1, 4], &[2, 4], &[3, 1], &[4, 2]])]);
        let plan = plan_move_to_broker(&view, &request(4, None, &[])).expect("plan");
        assert!(plan.moves.is_empty(), "{plan:?}");
        assert!(plan.notes[0].contains("broker 4 ends with 3 of 8 replicas"), "{:?}", plan.notes);
        let empty = cluster(&[1, 2], &[("__consumer_offsets", true, &[&[1]])]);
        let plan = plan_move_to_broker(&empty, &request(2, None, &[])).expect("plan");
        assert!(plan.moves.is_empty() && plan.notes[0].starts_with("no partitions to move"), "{plan:?}");
    }

    #[test]
    fn internal_topics_are_left_unless_named() {
        let view =
            cluster(&[1, 2], &[("__consumer_offsets", true, &[&[1], &[1]]), ("t", false, &[&[1], &[1]])]);
        let plan = plan_move_to_broker(&view, &request(2, None, &[])).expect("plan");
        assert!(plan.moves.iter().all(|each| each.topic == "t"), "{plan:?}");
        assert_eq!(plan.moves.len(), 1);
        let named = plan_move_to_broker(&view, &request(2, None, &["__consumer_offsets"])).expect("plan");
        assert_eq!(named.moves.len(), 1);
        assert_eq!(named.moves[0].topic, "__consumer_offsets");
    }

    #[test]
    fn topics_narrow_the_selection() {
        let view =
            cluster(&[1, 2, 3], &[("a", false, &[&[1], &[1], &[1]]), ("b", false, &[&[1], &[1], &[1]])]);
        let plan = plan_move_to_broker(&view, &request(3, None, &["b"])).expect("plan");
        assert!(plan.moves.iter().all(|each| each.topic == "b"), "{plan:?}");
        assert_eq!(plan.moves.len(), 1, "3 replicas over 3 brokers: broker 3's share is 1");
    }

    #[test]
    fn from_broker_moves_all_its_replicas_in_place() {
        let view = cluster(&[1, 2, 3, 4], &[("t", false, &[&[1, 2], &[2, 3], &[3, 1], &[4, 2], &[2, 4]])]);
        let plan = plan_move_to_broker(&view, &request(4, Some(2), &[])).expect("plan");
        let targets: Vec<(i32, Vec<i32>)> =
            plan.moves.iter().map(|each| (each.partition, each.target.clone())).collect();
        assert_eq!(targets, vec![(0, vec![1, 4]), (1, vec![4, 3])]);
        assert_eq!(plan.notes.len(), 2, "{:?}", plan.notes);
        assert!(plan.notes[0].starts_with("t-3: broker 4 already holds a replica"), "{:?}", plan.notes);
    }

    #[test]
    fn from_broker_may_be_a_broker_that_is_gone() {
        // Broker 3 is down (not in Metadata) but still named as a replica: its replicas move to broker 4.
        let view = cluster(&[1, 2, 4], &[("t", false, &[&[3, 1], &[2, 3]])]);
        let plan = plan_move_to_broker(&view, &request(4, Some(3), &[])).expect("plan");
        let targets: Vec<Vec<i32>> = plan.moves.iter().map(|each| each.target.clone()).collect();
        assert_eq!(targets, vec![vec![4, 1], vec![2, 4]]);
    }

    #[test]
    fn unknown_brokers_and_topics_are_refused_by_name() {
        let view = cluster(&[1, 2, 3], &[("t", false, &[&[1, 2]])]);
        for (asked, reason) in [
            (request(9, None, &[]), "broker 9 is not in the cluster (brokers: [1, 2, 3])"),
            (request(3, None, &["nope"]), "unknown topic \"nope\" (the cluster has: t)"),
            (
                request(3, Some(8), &[]),
                "broker 8 is not in the cluster (brokers: [1, 2, 3]) and holds no replica",
            ),
            (request(3, Some(3), &[]), "--from-broker and --to-broker are both 3"),
        ] {
            let error = plan_move_to_broker(&view, &asked).expect_err("refused");
            assert!(error.contains(reason), "{asked:?}: {error}");
        }
    }

    #[test]
    fn large_clusters_plan_in_linear_time() {
        // 20,000 partitions at replication factor 3 over 30 brokers: the plan finishes quickly and is fair.
        let brokers: Vec<i32> = (1..=30).collect();
        let assignments: Vec<Vec<i32>> =
            (0..20_000).map(|index: i32| (0..3).map(|offset| 1 + (index + offset) % 29).collect()).collect();
        let slices: Vec<&[i32]> = assignments.iter().map(Vec::as_slice).collect();
        let view = cluster(&brokers, &[("big", false, &slices)]);
        let plan = plan_move_to_broker(&view, &request(30, None, &[])).expect("plan");
        let (replicas, leaders) = counts_after(&view, &plan, &["big"]);
        assert_eq!(replicas[&30], 60_000 / 30);
        assert_eq!(leaders[&30], 20_000 / 30);
        check_moves_replace_one(&plan, 30);
    }

    #[test]
    fn files_are_checked_against_the_cluster() {
        let view = cluster(&[1, 2, 3], &[("t", false, &[&[1, 2], &[2, 3]])]);
        let target = |topic: &str, partition, replicas: &[i32]| PartitionTarget {
            topic: topic.into(),
            partition,
            replicas: replicas.to_vec(),
        };
        let moves = moves_from_targets(&view, &[target("t", 1, &[3, 1])], &[]).expect("valid");
        assert_eq!(
            moves,
            vec![Move { topic: "t".into(), partition: 1, current: vec![2, 3], target: vec![3, 1] }]
        );
        for (targets, topics, reason) in [
            (vec![target("u", 0, &[1])], vec![], "u-0: unknown topic \"u\" (the cluster has: t)"),
            (vec![target("t", 2, &[1])], vec![], "t-2: topic \"t\" has 2 partitions"),
            (
                vec![target("t", 0, &[1, 7])],
                vec![],
                "t-0: broker 7 is not in the cluster (brokers: [1, 2, 3])",
            ),
            (vec![target("t", 0, &[1])], vec!["x".to_owned()], "topic \"x\" is not in the plan"),
        ] {
            let error = moves_from_targets(&view, &targets, &topics).expect_err("refused");
            assert!(error.contains(reason), "{targets:?}: {error}");
        }
        let kept = moves_from_targets(&view, &[target("t", 0, &[3, 2])], &["t".to_owned()]).expect("valid");
        assert_eq!(kept.len(), 1);
    }
}
