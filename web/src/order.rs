//! Results shown in the order the photos were given, whichever worker finishes first.

use std::collections::BTreeMap;

/// Takes out of `held` (results by job number) those that may be shown now: every one
/// numbered below `first_open`, the earliest job still waiting or in a worker (all of
/// them when none is), in job order.
pub fn release_in_order<T>(held: &mut BTreeMap<u32, T>, first_open: Option<u32>) -> Vec<T> {
    let kept = match first_open {
        Some(first) => held.split_off(&first),
        None => BTreeMap::new(),
    };
    std::mem::replace(held, kept).into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::release_in_order;
    use std::collections::BTreeMap;

    #[test]
    fn a_later_result_waits_for_the_earlier_photos() {
        let mut held = BTreeMap::new();
        // Photos 1 and 2 in two workers; 2 finishes first.
        held.insert(2, "two");
        assert!(release_in_order(&mut held, Some(1)).is_empty());
        // 1 finishes while 3 is in a worker: 1 and 2 go out, in order.
        held.insert(1, "one");
        assert_eq!(release_in_order(&mut held, Some(3)), ["one", "two"]);
        assert!(held.is_empty());
        // 4 finishes before 3, and 5 is waiting: 4 is held.
        held.insert(4, "four");
        assert!(release_in_order(&mut held, Some(3)).is_empty());
        // 3 failed (no result): with 5 still open, 4 goes out.
        assert_eq!(release_in_order(&mut held, Some(5)), ["four"]);
        // Nothing open: everything held goes out.
        held.insert(7, "seven");
        held.insert(6, "six");
        assert_eq!(release_in_order(&mut held, None), ["six", "seven"]);
    }
}
