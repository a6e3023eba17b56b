//! Doubly linked lists threaded through an arena by index.
//!
//! The policy keeps every entry in one arena slot and links slots into its
//! queues (window, probation, protected) and the timer wheel's buckets. Links
//! are `u32` indices into a `[Links]` owned by the arena, so a list is three
//! words and moving an entry is a few stores: no pointers, no `unsafe`.

/// "No slot": the end of a list.
pub(crate) const NIL: u32 = u32::MAX;

/// The previous and next slot of one entry in one list.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Links {
    pub(crate) prev: u32,
    pub(crate) next: u32,
}

impl Links {
    pub(crate) const UNLINKED: Self = Self {
        prev: NIL,
        next: NIL,
    };
}

/// A list: its first and last slot and its length.
#[derive(Debug, Clone, Copy)]
pub(crate) struct List {
    head: u32,
    tail: u32,
    len: u32,
}

impl Default for List {
    fn default() -> Self {
        Self {
            head: NIL,
            tail: NIL,
            len: 0,
        }
    }
}

impl List {
    /// The oldest slot, or [`NIL`].
    pub(crate) fn front(&self) -> u32 {
        self.head
    }

    /// The newest slot, or [`NIL`].
    #[cfg(test)]
    pub(crate) fn back(&self) -> u32 {
        self.tail
    }

    pub(crate) fn len(&self) -> u32 {
        self.len
    }

    /// Appends `idx`, which must not be in any list of `links`.
    pub(crate) fn push_back(&mut self, links: &mut [Links], idx: u32) {
        links[idx as usize] = Links {
            prev: self.tail,
            next: NIL,
        };
        if self.tail == NIL {
            self.head = idx;
        } else {
            links[self.tail as usize].next = idx;
        }
        self.tail = idx;
        self.len += 1;
    }

    /// Unlinks `idx`, which must be in this list.
    pub(crate) fn remove(&mut self, links: &mut [Links], idx: u32) {
        let Links { prev, next } = links[idx as usize];
        if prev == NIL {
            self.head = next;
        } else {
            links[prev as usize].next = next;
        }
        if next == NIL {
            self.tail = prev;
        } else {
            links[next as usize].prev = prev;
        }
        links[idx as usize] = Links::UNLINKED;
        self.len -= 1;
    }

    /// Moves `idx`, which must be in this list, to the back.
    pub(crate) fn move_to_back(&mut self, links: &mut [Links], idx: u32) {
        if self.tail != idx {
            self.remove(links, idx);
            self.push_back(links, idx);
        }
    }

    /// Removes and returns the oldest slot.
    pub(crate) fn pop_front(&mut self, links: &mut [Links]) -> Option<u32> {
        let head = self.head;
        if head == NIL {
            return None;
        }
        self.remove(links, head);
        Some(head)
    }

    /// Empties the list and returns its slots in order; their links are left
    /// as they were, so the caller walks them with [`Links::next`] before
    /// relinking any of them elsewhere.
    pub(crate) fn take(&mut self) -> u32 {
        let head = self.head;
        *self = Self::default();
        head
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(list: &List, links: &[Links]) -> Vec<u32> {
        let mut out = Vec::new();
        let mut at = list.front();
        while at != NIL {
            out.push(at);
            at = links[at as usize].next;
        }
        out
    }

    #[test]
    fn push_remove_move_and_pop_keep_order_and_length() {
        let mut links = vec![Links::UNLINKED; 5];
        let mut list = List::default();
        for i in 0..5 {
            list.push_back(&mut links, i);
        }
        list.remove(&mut links, 2);
        list.move_to_back(&mut links, 0);
        assert_eq!(collect(&list, &links), vec![1, 3, 4, 0]);
        assert_eq!(list.len(), 4);
        assert_eq!(list.pop_front(&mut links), Some(1));
        list.remove(&mut links, 0);
        assert_eq!(collect(&list, &links), vec![3, 4]);
        assert_eq!((list.front(), list.back(), list.len()), (3, 4, 2));
        list.remove(&mut links, 3);
        list.remove(&mut links, 4);
        assert_eq!((list.front(), list.back(), list.len()), (NIL, NIL, 0));
        assert_eq!(list.pop_front(&mut links), None);
    }
}
