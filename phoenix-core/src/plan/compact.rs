//! The JSON of a step's slot lists, in runs.
//!
//! A plan for 10,000 servers names every slot in several steps; written one
//! number (or one object) per slot, the refresh plan of the benchmark was a
//! megabyte of JSON, kept in the store with the operation and encoded again
//! on every export. Consecutive slots are written as one run instead:
//!
//! - a slot list: `[0, 1, 2, 3, 7]` is written `[[0, 3], 7]` (runs of three
//!   or more as `[first, last]`);
//! - new slots and slot references: an object with `"count": n` stands for
//!   `n` objects whose indices (and replaced indices) go up by one, so
//!   `{"index": 10, "replaces": 0, "count": 500}` is 500 new slots.
//!
//! The order of the list is kept exactly. Lists written one per slot, by
//! earlier versions, read as before (an object without `count` is one).

use serde::de::{Error as _, SeqAccess, Visitor};
use serde::ser::SerializeSeq;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{NewSlot, SlotRef};
use crate::id::PoolId;

/// The most slots one list may expand to: a run of a few bytes must not
/// make a plan read from a file allocate without bound.
const MAX_SLOTS: u64 = 1 << 22;

/// Splits `items` into maximal runs where `next(previous, item)` holds
/// between neighbours; yields (first item, run length).
fn runs<T>(items: &[T], next: impl Fn(&T, &T) -> bool) -> impl Iterator<Item = (&T, u32)> {
    let mut i = 0;
    std::iter::from_fn(move || {
        let first = items.get(i)?;
        let mut len = 1;
        while items
            .get(i + len)
            .is_some_and(|b| len < u32::MAX as usize && next(&items[i + len - 1], b))
        {
            len += 1;
        }
        i += len;
        Some((first, len as u32))
    })
}

/// Checks a run's length against what the list may still hold.
fn take<E: serde::de::Error>(total: &mut u64, count: u64) -> Result<(), E> {
    *total += count;
    if *total > MAX_SLOTS {
        return Err(E::custom(format!(
            "a slot list of more than {MAX_SLOTS} slots"
        )));
    }
    Ok(())
}

/// `#[serde(with)]` for `Vec<u32>` slot lists.
pub(super) mod slots {
    use super::*;

    /// One element: a slot, or an inclusive run `[first, last]`.
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Item {
        One(u32),
        Run([u32; 2]),
    }

    pub(crate) fn serialize<S: Serializer>(slots: &[u32], s: S) -> Result<S::Ok, S::Error> {
        let all: Vec<(&u32, u32)> = runs(slots, |a, b| a.checked_add(1) == Some(*b)).collect();
        let elements = all
            .iter()
            .map(|&(_, len)| if len >= 3 { 1 } else { len as usize })
            .sum();
        let mut seq = s.serialize_seq(Some(elements))?;
        for (first, len) in all {
            if len >= 3 {
                seq.serialize_element(&[*first, first + (len - 1)])?;
            } else {
                for k in 0..len {
                    seq.serialize_element(&(first + k))?;
                }
            }
        }
        seq.end()
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u32>, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Vec<u32>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a list of slot indices and [first, last] runs")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u32>, A::Error> {
                let mut out = Vec::new();
                let mut total = 0;
                while let Some(item) = seq.next_element::<Item>()? {
                    match item {
                        Item::One(i) => {
                            take::<A::Error>(&mut total, 1)?;
                            out.push(i);
                        }
                        Item::Run([first, last]) => {
                            if last < first {
                                return Err(A::Error::custom(format!(
                                    "slot run [{first}, {last}] ends before it starts"
                                )));
                            }
                            take::<A::Error>(&mut total, u64::from(last - first) + 1)?;
                            out.extend(first..=last);
                        }
                    }
                }
                Ok(out)
            }
        }
        d.deserialize_seq(V)
    }
}

fn one() -> u32 {
    1
}

/// `#[serde(with)]` for `Vec<NewSlot>`.
pub(super) mod new_slots {
    use super::*;

    #[derive(Serialize, Deserialize)]
    struct Run {
        index: u32,
        replaces: Option<u32>,
        #[serde(default = "one", skip_serializing_if = "is_one")]
        count: u32,
    }

    fn is_one(n: &u32) -> bool {
        *n == 1
    }

    fn follows(a: &NewSlot, b: &NewSlot) -> bool {
        a.index.checked_add(1) == Some(b.index)
            && match (a.replaces, b.replaces) {
                (None, None) => true,
                (Some(x), Some(y)) => x.checked_add(1) == Some(y),
                _ => false,
            }
    }

    pub(crate) fn serialize<S: Serializer>(slots: &[NewSlot], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(runs(slots, follows).map(|(first, count)| Run {
            index: first.index,
            replaces: first.replaces,
            count,
        }))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<NewSlot>, D::Error> {
        let mut out = Vec::new();
        let mut total = 0;
        for run in Vec::<Run>::deserialize(d)? {
            take::<D::Error>(&mut total, u64::from(run.count))?;
            for k in 0..run.count {
                let shifted = |i: u32| {
                    i.checked_add(k)
                        .ok_or_else(|| D::Error::custom("slot index overflows"))
                };
                out.push(NewSlot {
                    index: shifted(run.index)?,
                    replaces: run.replaces.map(shifted).transpose()?,
                });
            }
        }
        Ok(out)
    }
}

/// `#[serde(with)]` for `Vec<SlotRef>`.
pub(super) mod slot_refs {
    use super::*;

    #[derive(Serialize, Deserialize)]
    struct Run {
        pool: PoolId,
        slot: u32,
        #[serde(default = "one", skip_serializing_if = "is_one")]
        count: u32,
    }

    fn is_one(n: &u32) -> bool {
        *n == 1
    }

    pub(crate) fn serialize<S: Serializer>(refs: &[SlotRef], s: S) -> Result<S::Ok, S::Error> {
        let follows =
            |a: &SlotRef, b: &SlotRef| a.pool == b.pool && a.slot.checked_add(1) == Some(b.slot);
        s.collect_seq(runs(refs, follows).map(|(first, count)| Run {
            pool: first.pool.clone(),
            slot: first.slot,
            count,
        }))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<SlotRef>, D::Error> {
        let mut out = Vec::new();
        let mut total = 0;
        for run in Vec::<Run>::deserialize(d)? {
            take::<D::Error>(&mut total, u64::from(run.count))?;
            for k in 0..run.count {
                out.push(SlotRef {
                    pool: run.pool.clone(),
                    slot: run
                        .slot
                        .checked_add(k)
                        .ok_or_else(|| D::Error::custom("slot index overflows"))?,
                });
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::plan::Step;

    fn pool(id: &str) -> PoolId {
        PoolId::new(id).unwrap()
    }

    fn round_trip(step: &Step) -> serde_json::Value {
        let json = serde_json::to_value(step).unwrap();
        let back: Step = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(&back, step);
        json
    }

    #[test]
    fn slot_lists_are_written_in_runs_and_keep_their_order() {
        let slots = vec![0, 1, 2, 3, 7, 9, 10, 4, 5, 6, u32::MAX - 1, u32::MAX];
        let json = round_trip(&Step::Launch {
            pool: pool("p"),
            slots,
        });
        assert_eq!(
            json["slots"],
            json!([[0, 3], 7, 9, 10, [4, 6], u32::MAX - 1, u32::MAX])
        );
        let empty = round_trip(&Step::Launch {
            pool: pool("p"),
            slots: vec![],
        });
        assert_eq!(empty["slots"], json!([]));
    }

    #[test]
    fn new_slots_and_references_are_written_in_runs() {
        let slots: Vec<NewSlot> = (10..20)
            .map(|i| NewSlot {
                index: i,
                replaces: Some(i - 10),
            })
            .chain([
                NewSlot {
                    index: 20,
                    replaces: None,
                },
                NewSlot {
                    index: 21,
                    replaces: None,
                },
                NewSlot {
                    index: 22,
                    replaces: Some(3),
                },
            ])
            .collect();
        let json = round_trip(&Step::AddSlots {
            pool: pool("p"),
            slots,
        });
        assert_eq!(
            json["slots"],
            json!([
                {"index": 10, "replaces": 0, "count": 10},
                {"index": 20, "replaces": null, "count": 2},
                {"index": 22, "replaces": 3}
            ])
        );
        let replacements: Vec<SlotRef> = (5..9)
            .map(|slot| SlotRef {
                pool: pool("a"),
                slot,
            })
            .chain((9..11).map(|slot| SlotRef {
                pool: pool("b"),
                slot,
            }))
            .collect();
        let json = round_trip(&Step::Detach {
            pool: pool("a"),
            slots: vec![1],
            replacements,
        });
        assert_eq!(
            json["replacements"],
            json!([{"pool": "a", "slot": 5, "count": 4}, {"pool": "b", "slot": 9, "count": 2}])
        );
    }

    #[test]
    fn steps_written_one_per_slot_still_read() {
        let old = json!({
            "step": "switch",
            "pool": "p",
            "slots": [0, 1, 2],
            "away": [{"pool": "q", "slot": 0}, {"pool": "q", "slot": 1}]
        });
        let step: Step = serde_json::from_value(old).unwrap();
        assert_eq!(
            step,
            Step::Switch {
                pool: pool("p"),
                slots: vec![0, 1, 2],
                away: vec![
                    SlotRef {
                        pool: pool("q"),
                        slot: 0
                    },
                    SlotRef {
                        pool: pool("q"),
                        slot: 1
                    }
                ],
                standby: false,
            }
        );
        let old = json!({"step": "add_slots", "pool": "p", "slots": [{"index": 4, "replaces": 1}]});
        let step: Step = serde_json::from_value(old).unwrap();
        assert_eq!(
            step,
            Step::AddSlots {
                pool: pool("p"),
                slots: vec![NewSlot {
                    index: 4,
                    replaces: Some(1)
                }],
            }
        );
    }

    #[test]
    fn runs_that_would_expand_without_bound_are_refused() {
        for bad in [
            json!({"step": "launch", "pool": "p", "slots": [[0, 4000000000u32]]}),
            json!({"step": "launch", "pool": "p", "slots": [[5, 4]]}),
            json!({"step": "add_slots", "pool": "p", "slots": [{"index": 0, "replaces": null, "count": 4000000000u32}]}),
            json!({"step": "add_slots", "pool": "p", "slots": [{"index": 4294967295u32, "replaces": null, "count": 2}]}),
            json!({"step": "detach", "pool": "p", "slots": [], "replacements": [{"pool": "p", "slot": 0, "count": 4000000000u32}]}),
        ] {
            assert!(
                serde_json::from_value::<Step>(bad.clone()).is_err(),
                "{bad}"
            );
        }
    }
}
