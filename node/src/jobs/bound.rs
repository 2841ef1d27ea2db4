//! Contribution bounds: what one person may put into a DP release, enforced at the node
//! before anything is computed.
//!
//! # Guarantee
//! The sensitivities of the DP kinds (`parley_jobs::kinds::{psi, psi_sum, dp_stats}`) assume
//! these bounds hold for the data the protocol sees:
//! * [`records`] keeps at most `m` records per identifier and per person (a PSI receiver,
//!   sum-mode P2 and dp_stats use it, the latter with no identifiers);
//! * [`sender_identifiers`] keeps at most `k` distinct identifiers per person (a PSI sender,
//!   sum-mode P1), `k` being the number of identifier columns the job names for it;
//! * [`labelled_identifiers`] keeps one identifier per person, in one group (lift and overlap
//!   P1).
//!
//! Records are taken in file order; the first ones that fit are kept. Which records are left
//! out depends on the data only through this order and the bounds, and only their number is
//! reported. Persons are the dataset's person codes (`Dataset::persons`), numbered densely
//! from 0, so per-person counters are plain vectors.

use std::collections::HashMap;

use parley_crypto::normalize::IdHash;

/// The records a bound keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Kept {
    /// Indices of the kept records, increasing.
    pub index: Vec<usize>,
    /// How many records were left out.
    pub dropped: u64,
}

impl Kept {
    /// The kept entries of `items` (one per record), in order.
    pub fn select<T>(&self, items: Vec<T>) -> Vec<T> {
        let mut next = self.index.iter().peekable();
        items
            .into_iter()
            .enumerate()
            .filter_map(|(i, x)| {
                (next.peek() == Some(&&i)).then(|| {
                    next.next();
                    x
                })
            })
            .collect()
    }
}

/// Keeps, in order, each record whose person and whose every identifier are still below `m`
/// kept records; a record with no identifier counts against its person only. `ids` is empty
/// or has one entry per record (`persons.len()`).
pub(crate) fn records(persons: &[u32], ids: &[Vec<IdHash>], m: u32) -> Kept {
    let m = m.max(1);
    let mut per_person = vec![0u32; dense_len(persons)];
    let mut per_id: HashMap<IdHash, u32> = HashMap::new();
    let mut index = Vec::with_capacity(persons.len());
    let mut dropped = 0u64;
    let no_ids: Vec<IdHash> = Vec::new();
    for (i, person) in persons.iter().enumerate() {
        let record = ids.get(i).unwrap_or(&no_ids);
        let full = per_person[*person as usize] >= m
            || record
                .iter()
                .any(|id| per_id.get(id).is_some_and(|n| *n >= m));
        if full {
            dropped += 1;
            continue;
        }
        per_person[*person as usize] += 1;
        for id in record {
            *per_id.entry(*id).or_insert(0) += 1;
        }
        index.push(i);
    }
    Kept { index, dropped }
}

/// The identifiers a sender contributes: per person, the first `k` distinct ones in file
/// order; also how many identifiers were left out. Duplicates across persons stay (the
/// protocol deduplicates them).
pub(crate) fn sender_identifiers(
    persons: &[u32],
    ids: Vec<Vec<IdHash>>,
    k: u32,
) -> (Vec<IdHash>, u64) {
    let k = k.max(1) as usize;
    // Most persons have one record; only the others need a set of what they gave so far.
    let mut records_of = vec![0u32; dense_len(persons)];
    for p in persons {
        records_of[*p as usize] = records_of[*p as usize].saturating_add(1);
    }
    let mut given: HashMap<u32, Vec<IdHash>> = HashMap::new();
    let mut out = Vec::with_capacity(ids.iter().map(Vec::len).sum());
    let mut dropped = 0u64;
    for (record, person) in ids.into_iter().zip(persons) {
        if records_of[*person as usize] <= 1 {
            // A record's identifiers are already distinct.
            dropped += record.len().saturating_sub(k) as u64;
            out.extend(record.into_iter().take(k));
            continue;
        }
        let set = given.entry(*person).or_default();
        for id in record {
            if set.contains(&id) {
                continue;
            }
            if set.len() >= k {
                dropped += 1;
                continue;
            }
            set.push(id);
            out.push(id);
        }
    }
    (out, dropped)
}

/// The length of a vector indexed by person code.
fn dense_len(persons: &[u32]) -> usize {
    persons.iter().max().map_or(0, |m| *m as usize + 1)
}

/// One identifier per person, each with its record's group (`groups`, one per record): the
/// person's first identifier in file order. An identifier that two records put in different
/// groups is left out (the grouped engine needs each identifier in one group). Also how many
/// identifiers were left out.
pub(crate) fn labelled_identifiers(
    persons: &[u32],
    ids: &[Vec<IdHash>],
    groups: &[u32],
) -> (Vec<(IdHash, u32)>, u64) {
    let mut first: HashMap<u32, IdHash> = HashMap::new();
    let mut cell: HashMap<IdHash, Option<u32>> = HashMap::new();
    let mut dropped = 0u64;
    for ((record, person), g) in ids.iter().zip(persons).zip(groups) {
        let Some(id) = record.first() else {
            continue;
        };
        dropped += record.len().saturating_sub(1) as u64;
        if *first.entry(*person).or_insert(*id) != *id {
            dropped += 1;
            continue;
        }
        let e = cell.entry(*id).or_insert(Some(*g));
        if *e != Some(*g) {
            *e = None;
        }
    }
    let mut out = Vec::with_capacity(cell.len());
    for (id, g) in cell {
        match g {
            Some(g) => out.push((id, g)),
            None => dropped += 1,
        }
    }
    (out, dropped)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::HashSet;

    use proptest::prelude::*;

    use super::*;

    fn id(n: u8) -> IdHash {
        IdHash([n; 32])
    }

    #[test]
    fn one_identifier_in_fifty_records_keeps_m() {
        let persons: Vec<u32> = (0..52).collect();
        let mut ids: Vec<Vec<IdHash>> = (0..50).map(|_| vec![id(7)]).collect();
        ids.push(vec![id(1)]);
        ids.push(vec![id(2), id(7)]);
        let kept = records(&persons, &ids, 5);
        assert_eq!(kept.index, [0, 1, 2, 3, 4, 50]);
        assert_eq!(kept.dropped, 46);
        let chosen = kept.select((0..52).collect::<Vec<usize>>());
        assert_eq!(chosen, kept.index);
    }

    #[test]
    fn a_person_keeps_at_most_m_records() {
        let persons = [3, 3, 3, 4, 3];
        let kept = records(&persons, &[], 2);
        assert_eq!(kept.index, [0, 1, 3]);
        assert_eq!(kept.dropped, 2);
    }

    #[test]
    fn a_sender_person_gives_at_most_k_identifiers() {
        // Person 0 has three records; person 1 one record with three identifiers.
        let persons = [0, 0, 1, 0];
        let ids = vec![
            vec![id(1), id(2)],
            vec![id(2), id(3)],
            vec![id(4), id(5), id(6)],
            vec![id(9)],
        ];
        let (out, dropped) = sender_identifiers(&persons, ids, 2);
        assert_eq!(out, [id(1), id(2), id(4), id(5)]);
        assert_eq!(dropped, 3);
    }

    proptest! {
        /// After the bound, no identifier and no person is in more than m kept records, and a
        /// record is dropped only when keeping it would break that.
        #[test]
        fn records_respect_the_bound(
            rows in proptest::collection::vec((0u32..6, proptest::collection::vec(0u8..8, 0..3)), 0..60),
            m in 1u32..4,
        ) {
            let persons: Vec<u32> = rows.iter().map(|r| r.0).collect();
            let ids: Vec<Vec<IdHash>> = rows
                .iter()
                .map(|r| r.1.iter().copied().collect::<HashSet<_>>().into_iter().map(id).collect())
                .collect();
            let kept = records(&persons, &ids, m);
            prop_assert_eq!(kept.index.len() as u64 + kept.dropped, rows.len() as u64);
            let mut per_person: HashMap<u32, u32> = HashMap::new();
            let mut per_id: HashMap<IdHash, u32> = HashMap::new();
            for &i in &kept.index {
                *per_person.entry(persons[i]).or_default() += 1;
                for x in &ids[i] {
                    *per_id.entry(*x).or_default() += 1;
                }
            }
            prop_assert!(per_person.values().all(|n| *n <= m));
            prop_assert!(per_id.values().all(|n| *n <= m));
        }

        /// A sender person never gives more than k distinct identifiers.
        #[test]
        fn sender_persons_respect_the_bound(
            rows in proptest::collection::vec((0u32..5, proptest::collection::vec(0u8..10, 0..4)), 0..40),
            k in 1u32..4,
        ) {
            let persons: Vec<u32> = rows.iter().map(|r| r.0).collect();
            let ids: Vec<Vec<IdHash>> = rows
                .iter()
                .map(|r| r.1.iter().copied().collect::<HashSet<_>>().into_iter().map(id).collect())
                .collect();
            let total: usize = ids.iter().map(Vec::len).sum();
            let mut per_person: HashMap<u32, HashSet<IdHash>> = HashMap::new();
            for (p, r) in persons.iter().zip(&ids) {
                per_person.entry(*p).or_default().extend(r.iter().copied());
            }
            let (out, dropped) = sender_identifiers(&persons, ids.clone(), k);
            prop_assert!(out.len() as u64 + dropped <= total as u64);
            // Each person gives exactly min(k, its distinct identifiers), all its own.
            let expected: usize = per_person.values().map(|all| all.len().min(k as usize)).sum();
            prop_assert_eq!(out.len(), expected);
            let everything: HashSet<IdHash> = per_person.values().flatten().copied().collect();
            prop_assert!(out.iter().all(|x| everything.contains(x)));
        }
    }
}
